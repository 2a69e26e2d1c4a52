"""``hub serve`` on PostgreSQL when the database is down at start-up: the node starts, answers
"try again" (HTTP 503, ERR50; never a receipt) and reports not ready until the database can be
reached, then connects and migrates by itself and takes and delivers the message."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from hub.config import load_config
from hub.receiver import Receiver
from hub.serve import EXIT_UNUSABLE

from .pg import Cluster, find_bindir, pg_cluster  # noqa: F401 (the fixture)
from .support import REPO, HubProcess, Sender, free_port, message_id_of, write_config


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


def _newer_schema(cluster: Cluster, database: str = "postgres") -> int:
    """What a newer sw-hub would leave behind: a schema version this code has no migration for."""
    from hub.store.postgres import MIGRATIONS

    version = MIGRATIONS[-1][0] + 97
    cluster.sql("CREATE TABLE schema_version (version INTEGER NOT NULL)", database)
    cluster.sql(f"INSERT INTO schema_version (version) VALUES ({version})", database)
    return version


def test_serve_exits_non_zero_on_a_schema_newer_than_the_code(pg_cluster: Cluster, tmp_path: Path) -> None:  # noqa: F811
    url = pg_cluster.new_database()
    version = _newer_schema(pg_cluster, url.rsplit("/", 1)[1])
    config = write_config(tmp_path, store=url + "?pool_timeout=1")
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "hub.cli", "serve", "--config", str(config)],
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 1, out.stderr[-2000:]
    assert f"the database schema is at version {version}, newer than this hub knows" in out.stderr
    assert time.monotonic() - started < 30


def test_serve_exits_non_zero_when_the_database_comes_up_with_a_schema_it_cannot_use(stopped_cluster: Cluster, tmp_path: Path) -> None:
    stopped_cluster.start()
    version = _newer_schema(stopped_cluster)
    stopped_cluster.stop()
    config = write_config(tmp_path, store=stopped_cluster.url() + "?pool_timeout=1")
    hub = HubProcess(config)
    try:
        hub.start(healthy=False)
        assert httpx.get(hub.url + "/health", timeout=5).status_code == 503  # down: waited out, "try again"
        stopped_cluster.start()
        assert hub.proc is not None
        code = hub.proc.wait(30)  # up, but never usable: the node stops instead of answering ERR50 for ever
        log = hub.log.read_text()
        assert code == EXIT_UNUSABLE, log[-3000:]
        assert f"the database schema is at version {version}, newer than this hub knows" in log
        assert "hub VN-NSW stopped: the PostgreSQL store" in log
    finally:
        if hub.proc and hub.proc.poll() is None:
            hub.proc.kill()


def test_workers_that_cannot_use_the_store_stop_the_hub_instead_of_restarting(pg_cluster: Cluster, tmp_path: Path) -> None:  # noqa: F811
    url = pg_cluster.new_database()
    version = _newer_schema(pg_cluster, url.rsplit("/", 1)[1])
    config = write_config(tmp_path, store=url + "?pool_timeout=1")
    out = subprocess.run([sys.executable, "-m", "hub.cli", "serve", "--config", str(config), "--workers", "2"],
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == EXIT_UNUSABLE, out.stderr[-3000:]
    assert f"the database schema is at version {version}, newer than this hub knows" in out.stderr
    assert "cannot run with this configuration or store; stopping every worker" in out.stderr
    assert "starting it again" not in out.stderr
