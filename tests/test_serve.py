"""The whole path through a real ``hub serve`` process on loopback."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from lxml import etree

from hub.envelope import read_errors
from hub.receiver import Receiver

from .support import HOSTILE, REPO, HubProcess, LockHolder, Sender, free_port, message_id_of, tampered, wait_until, write_config
from hub.config import load_config


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(port=free_port())
    yield r
    r.stop()


def hub_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hub.cli", *args, "--config", str(config)], capture_output=True, text=True, cwd=REPO, timeout=60)


def test_end_to_end_and_clean_shutdown(tmp_path: Path, receiver: Receiver) -> None:
    config = write_config(tmp_path, gateway_url=receiver.start().url)
    moit = Sender(load_config(config), "VN-MOIT")
    messages = [moit.message() for _ in range(20)]
    with HubProcess(config) as hub, httpx.Client(timeout=30) as client:
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda m: hub.post(m, client), messages))
        assert [a.status_code for a in answers] == [200] * 20
        assert receiver.wait_for(20, 30)
        mid = message_id_of(messages[0])
        assert wait_until(lambda: all(d["state"] == "delivered" for d in client.get(f"{hub.url}/messages/{mid}").json()["deliveries"]), 10)
        trace = client.get(f"{hub.url}/messages/{mid}").json()
        assert {d["destination"] for d in trace["deliveries"]} == {"TH-ASW", "VN-CUSTOMS"}
        assert client.get(f"{hub.url}/messages/00000000-0000-4000-8000-000000000000").status_code == 404
        assert hub.terminate() == 0
    assert "stopped cleanly" in hub.log.read_text()
    out = hub_cli(config, "trace", mid)
    assert out.returncode == 0 and "TH-ASW" in out.stdout and "DELIVERED" in out.stdout and "attempt 1" in out.stdout
    assert hub_cli(config, "audit", "verify").returncode == 0


def test_crash_loses_nothing_and_delivers_once(tmp_path: Path, receiver: Receiver) -> None:
    """SIGKILL while hundreds of messages are in flight; restart; every acknowledged message is
    delivered, and processed exactly once by the receiver (which deduplicates on sender + id)."""
    config = write_config(tmp_path, gateway_url=receiver.start().url, lease_seconds=2.0, initial_delay=0.05, max_attempts=100)
    moit = Sender(load_config(config), "VN-MOIT")
    total = 400
    messages = [moit.message() for _ in range(total)]
    acked: set[str] = set()
    lock = threading.Lock()
    hub = HubProcess(config).start()
    killed = threading.Event()

    def send(batch: list[bytes]) -> None:
        with httpx.Client(timeout=10) as client:
            for m in batch:
                if killed.is_set():
                    return
                try:
                    r = hub.post(m, client)
                except httpx.HTTPError:
                    continue
                if r.status_code == 200:
                    with lock:
                        acked.add(message_id_of(m))

    threads = [threading.Thread(target=send, args=(messages[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    assert wait_until(lambda: len(acked) >= total // 2, 60)
    hub.kill()
    killed.set()
    for t in threads:
        t.join()
    at_kill = len(acked)
    delivered_at_kill = receiver.unique
    # senders that got no answer send again with the same message id, as the protocol says
    hub = HubProcess(config).start()
    try:
        with httpx.Client(timeout=30) as client:
            for m in messages:
                if message_id_of(m) not in acked:
                    r = hub.post(m, client)
                    assert r.status_code == 200
                    acked.add(message_id_of(m))
        assert len(acked) == total
        customs = tmp_path / "customs-inbox"
        done = receiver.wait_for(total, 90) and wait_until(lambda: len(list(customs.glob("*.xml"))) == total, 60)
        assert done, _not_delivered(config, acked, {mid for _, mid in receiver.deliveries}, customs)
    finally:
        hub.terminate()
    received = {mid for _, mid in receiver.deliveries}
    assert received == acked  # nothing lost, nothing that was not acknowledged
    print(f"\ncrash test: {at_kill} acknowledged before SIGKILL ({delivered_at_kill} delivered), {total} in all; "
          f"receiver processed {receiver.unique} once each; {receiver.redeliveries} redelivered on the wire after the crash")
    assert receiver.redeliveries <= 8  # at most what was in flight at the kill (concurrency 4)
    assert hub_cli(config, "outbox", "list", "--state", "dead").stdout.strip().endswith("0 row(s)")


def _not_delivered(config: Path, acked: set[str], received: set[str], customs: Path) -> str:
    """What a failed crash test left undelivered, with the outbox rows of the first few."""
    in_folder = {p.stem.split("_", 1)[1] for p in customs.glob("*.xml")}
    missing = sorted((acked - received) | (acked - in_folder))
    lines = [f"{len(acked - received)} acknowledged not at the receiver, {len(acked - in_folder)} not in {customs.name}"]
    for mid in missing[:5]:
        lines.append(hub_cli(config, "trace", mid).stdout)
    return "\n".join(lines)


def test_down_then_up_and_dead_letter_resend_through_the_cli(tmp_path: Path, receiver: Receiver) -> None:
    receiver.status = 400
    config = write_config(tmp_path, gateway_url=receiver.start().url)
    moit = Sender(load_config(config), "VN-MOIT")
    with HubProcess(config) as hub:
        ids = [message_id_of(m) for m in (moit.message() for _ in range(5)) if hub.post(m).status_code == 200]
        assert len(ids) == 5
        assert wait_until(lambda: hub_cli(config, "outbox", "list", "--state", "dead").stdout.count("TH-ASW") == 5, 20)
        listing = hub_cli(config, "outbox", "list", "--state", "dead", "--destination", "TH-ASW").stdout
        assert "HTTP 400" in listing and "5 row(s)" in listing
        receiver.status = 200
        out = hub_cli(config, "outbox", "resend", "--state", "dead")
        assert out.returncode == 0 and out.stdout.count(": due now (message") == 5
        assert receiver.wait_for(5, 20)
        assert {mid for _, mid in receiver.deliveries} == set(ids)
        assert hub_cli(config, "outbox", "resend", "1").returncode == 1  # delivered rows need --force
        trace = hub_cli(config, "trace", ids[0]).stdout
        assert "dead-lettered" in trace and "resend (operator:" in trace and "DELIVERED" in trace


def test_bad_input_gets_its_own_nack_while_good_traffic_flows(tmp_path: Path, receiver: Receiver) -> None:
    config = write_config(tmp_path, gateway_url=receiver.start().url, max_bytes=200_000)
    moit = Sender(load_config(config), "VN-MOIT")
    good = [moit.message() for _ in range(40)]
    unsigned = moit.message(sign=False)
    bad = {
        "ERR02": b"<Envelope><unclosed></Envelope>",
        "ERR10": (HOSTILE / "xmlbomb.xml").read_bytes(),
        "ERR11": b"<a>" + b"x" * 300_000 + b"</a>",
        "ERR04": moit.message().replace(b"urn:sw-hub:envelope:1", b"urn:example:wrong"),
        "ERR01": moit.message(document_type="NO-SUCH"),
        "ERR21": unsigned,
        "ERR22": tampered(moit.message()),
    }
    with HubProcess(config) as hub:
        statuses: list[int] = []

        def stream() -> None:
            with httpx.Client(timeout=30) as client:
                statuses.extend(hub.post(m, client).status_code for m in good)

        t = threading.Thread(target=stream)
        t.start()
        with httpx.Client(timeout=30) as client:
            for _ in range(3):
                for code, data in bad.items():
                    r = hub.post(data, client)
                    assert r.status_code in (400, 413), (code, r.status_code)
                    errors = read_errors(etree.fromstring(r.content))
                    assert errors and errors[0][1], code
                    got = errors[0][0]
                    assert got == code, (code, errors)
        t.join()
        assert statuses == [200] * 40
        assert receiver.wait_for(40, 30)


def test_a_stalled_process_holding_the_store_gets_senders_a_503_not_a_hang(tmp_path: Path, receiver: Receiver) -> None:
    """Another process stops while it holds the SQLite store's write lock (a `hub` command stopped
    in the middle of its transaction): senders are told to retry within the store's lock_timeout,
    the hub keeps answering, and takes messages again once the process is gone."""
    config = write_config(tmp_path, gateway_url=receiver.start().url, store=f"sqlite:///{tmp_path}/hub.db?lock_timeout=1")
    moit = Sender(load_config(config), "VN-MOIT")
    first, second = moit.message(), moit.message()
    with HubProcess(config) as hub, httpx.Client(timeout=30) as client:
        with LockHolder(tmp_path / "hub.db").stall() as holder:
            answers = [hub.post(first, client), hub.post(second, client)]
            for r in answers:
                assert r.status_code == 503 and r.headers["Retry-After"] == "1"
                assert read_errors(etree.fromstring(r.content))[0][0] == "ERR50"
            assert client.get(hub.url + "/health").status_code == 200  # reads need no lock
            holder.end()
        # the sender's retry, same message id: accepted once the lock is free
        assert wait_until(lambda: hub.post(first, client).status_code == 200, 15)
        assert hub.post(second, client).status_code == 200
        assert receiver.wait_for(2, 30)
        trace = client.get(f"{hub.url}/messages/{message_id_of(first)}").json()
        assert {d["destination"] for d in trace["deliveries"]} == {"TH-ASW", "VN-CUSTOMS"}


def test_a_trickling_body_gets_a_408_and_connections_beyond_the_limit_a_503(tmp_path: Path) -> None:
    """A sender that sends its headers and then trickles (or stops) no longer holds its connection
    and its part of a body for ever (``body_timeout``), and connections beyond ``max_connections``
    are answered 503 at once instead of piling up (both real sockets against `hub serve`)."""
    import socket

    path = write_config(tmp_path)
    text = path.read_text()
    path.write_text(text.replace("[hub]\n", "[hub]\nbody_timeout = 0.5\nmax_connections = 3\n", 1))
    with HubProcess(path) as serving:
        host, port = serving.url.removeprefix("http://").rsplit(":", 1)

        def started() -> socket.socket:
            sock = socket.create_connection((host, int(port)), timeout=10)
            sock.sendall(b"POST /messages HTTP/1.1\r\nHost: hub\r\nContent-Type: application/xml\r\nContent-Length: 1000\r\n\r\n<Env")
            return sock

        slow = [started(), started()]
        try:
            time.sleep(0.2)  # both taken by the server, neither finished
            over = httpx.post(serving.url + "/messages", content=b"<x/>", timeout=10)
            assert over.status_code == 503
            for sock in slow:
                answer = b""
                for _ in range(20):  # headers and body may come in separate segments; until the server closes
                    chunk = sock.recv(4096)
                    answer += chunk
                    if not chunk or b"did not arrive" in answer:
                        break
                text = answer.decode("latin-1")
                assert text.startswith("HTTP/1.1 408") and "did not arrive within 0.5 s" in text, text
        finally:
            for sock in slow:
                sock.close()
        assert httpx.get(serving.url + "/health", timeout=10).status_code == 200  # the next ones are served


def _serve_briefly(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``hub serve`` expected to stop by itself at once; a hub that starts after all is stopped
    after a few seconds (the timeout kills the parent; its workers die with it)."""
    return subprocess.run([sys.executable, "-m", "hub.cli", "serve", "--config", str(config), *args],
                          capture_output=True, text=True, cwd=REPO, timeout=15)


def _refused_at_once(out: subprocess.CompletedProcess[str], port: int) -> None:
    said = (out.stdout + out.stderr).strip()
    assert out.returncode == 1, said
    assert said == f"error: cannot listen on 127.0.0.1:{port}: address already in use (another hub or program holds it)", said


@pytest.mark.parametrize(("holder", "workers"), [("plain", ()), ("plain", ("--workers", "2")), ("reuseport", ("--workers", "2"))])
def test_a_port_held_by_another_program_stops_serve_with_one_line_before_anything_starts(tmp_path: Path, holder: str, workers: tuple[str, ...]) -> None:
    """One line and exit status 1: no "listening", no dispatcher, no "stopped cleanly". A program
    whose socket has SO_REUSEPORT (which Linux would let the workers' sockets share) counts too."""
    import socket

    port = free_port()
    config = write_config(tmp_path, port=port)
    with socket.socket() as held:
        if holder == "reuseport":
            held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        held.bind(("127.0.0.1", port))
        held.listen()
        _refused_at_once(_serve_briefly(config, *workers), port)


def test_a_second_hub_with_workers_does_not_share_the_port_of_a_running_one(tmp_path: Path) -> None:
    """Workers' sockets have SO_REUSEPORT, and Linux lets a second process of the same user bind
    such a port and take part of its connections: a second `hub serve --workers 2` must refuse."""
    port = free_port()
    config = write_config(tmp_path, port=port)
    with HubProcess(config, "--workers", "2") as running:
        _refused_at_once(_serve_briefly(config, "--workers", "2"), port)
        _refused_at_once(_serve_briefly(config), port)  # nor a hub of one worker
        assert httpx.get(running.url + "/health", timeout=10).status_code == 200
        assert running.terminate() == 0
    with HubProcess(config) as again:  # once it stopped, the address is free at once
        assert again.terminate() == 0
