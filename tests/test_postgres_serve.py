"""``hub serve`` on PostgreSQL when the database is down at start-up: the node starts, answers
"try again" (HTTP 503, ERR50; never a receipt) and reports not ready until the database can be
reached, then connects and migrates by itself and takes and delivers the message."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from hub.config import load_config
from hub.receiver import Receiver

from .pg import Cluster, find_bindir
from .support import HubProcess, Sender, free_port, message_id_of, write_config


@pytest.fixture
def stopped_cluster() -> Iterator[Cluster]:
    """A cluster of its own (the session's one stays up for the other tests), initialised, not started."""
    bindir = find_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL binaries not found")
    cluster = Cluster(bindir).init()
    yield cluster
    cluster.destroy()


def test_serve_starts_with_the_database_down_and_connects_when_it_comes_up(stopped_cluster: Cluster, tmp_path: Path) -> None:
    receiver = Receiver(port=free_port()).start()
    config = write_config(tmp_path, gateway_url=receiver.url, store=stopped_cluster.url() + "?pool_timeout=1")
    data = Sender(load_config(config), "VN-MOIT").message()
    hub = HubProcess(config)
    try:
        hub.start(healthy=False)
        # down: the node is up, says it is not ready, and refuses with "try again" (no receipt)
        health = httpx.get(hub.url + "/health", timeout=5)
        assert health.status_code == 503 and health.json()["status"] == "not ready"
        answer = hub.post(data)
        assert answer.status_code == 503 and b"ERR50" in answer.content and answer.headers["Retry-After"]
        assert hub.proc is not None and hub.proc.poll() is None

        stopped_cluster.start()
        started = time.monotonic()
        statuses = []
        while time.monotonic() - started < 30:
            answer = hub.post(data)
            statuses.append(answer.status_code)
            if answer.status_code != 503:
                break
            time.sleep(0.2)
        took = time.monotonic() - started
        print(f"\naccepted {took:.1f}s after PostgreSQL started ({len(statuses)} tries: {statuses[0]} .. {statuses[-1]})")
        assert answer.status_code == 200 and b"ERR" not in answer.content, answer.text[:500]
        assert httpx.get(hub.url + "/health", timeout=5).status_code == 200
        assert receiver.wait_for(1, 30) and ("VN-MOIT", message_id_of(data)) in receiver.deliveries
        assert hub.terminate() == 0
    finally:
        if hub.proc and hub.proc.poll() is None:
            hub.proc.kill()
        receiver.stop()
