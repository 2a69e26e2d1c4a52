"""Three ``hub serve`` nodes on one PostgreSQL: concurrent senders spread over the nodes, one node
SIGKILLed and restarted, the receiver down for 2 s, PostgreSQL itself restarted once. Every acknowledged message is delivered
to the receiver (which deduplicates on sender + message id) exactly once, to both destinations,
and the audit log is still one valid chain; every tampered message gets a NACK. The test prints the counts."""

from __future__ import annotations

import os
import queue
import threading
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from hub.audit import verify_chain
from hub.config import load_config
from hub.receiver import Receiver
from hub.store import State, open_store

from .pg import Cluster, pg_cluster  # noqa: F401 (the fixture)
from .support import HubProcess, Sender, free_port, message_id_of, tampered, wait_until, write_config

TOTAL = int(os.environ.get("HUB_SCALE_OUT_MESSAGES", "20000"))  # about 3 minutes on 2 cores
PATIENCE = max(120.0, TOTAL / 25)  # seconds for each third of the stream: 25 msg/s is far below any machine's rate
SENDERS = 8


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(port=free_port())
    yield r
    r.stop()


def node_configs(base: Path, shared: Path, n: int) -> list[Path]:
    """Same hub (keys, store, destinations), one listen port per node."""
    text = shared.read_text(encoding="utf-8")
    listen = next(line for line in text.splitlines() if line.startswith("listen = "))
    paths = []
    for i in range(n):
        folder = base / f"node{i + 1}"
        folder.mkdir()
        path = folder / "hub.toml"
        path.write_text(text.replace(listen, f'listen = "127.0.0.1:{free_port()}"'), encoding="utf-8")
        paths.append(path)
    return paths


def test_three_nodes_survive_a_node_kill_and_a_database_restart(
    pg_cluster: Cluster, receiver: Receiver, tmp_path: Path  # noqa: F811
) -> None:
    started = time.monotonic()
    url = pg_cluster.new_database()
    shared = write_config(tmp_path, gateway_url=receiver.start().url, store=url, lease_seconds=3.0,
                          initial_delay=0.05, max_delay=0.5, max_attempts=1000)
    moit = Sender(load_config(shared), "VN-MOIT")
    messages = [moit.message() for _ in range(TOTAL)]
    bad = [tampered(moit.message()) for _ in range(TOTAL // 50)]  # each must get a NACK, never be delivered
    signed = time.monotonic()
    nodes = [HubProcess(p) for p in node_configs(tmp_path, shared, 3)]
    starters = [threading.Thread(target=n.start) for n in nodes]
    for t in starters:
        t.start()
    for t in starters:
        t.join()
    assert all(n.proc and n.proc.poll() is None for n in nodes)

    work: queue.Queue[bytes] = queue.Queue()
    for i, m in enumerate(messages):
        work.put(m)
        if i % 50 == 25 and i // 50 < len(bad):
            work.put(bad[i // 50])
    acked: set[str] = set()
    counts = {"accepted": 0, "duplicate answers": 0, "try again (503)": 0, "connection errors": 0, "NACK": 0,
              "unexpected answers": 0}
    lock = threading.Lock()
    stop = threading.Event()

    def send(k: int) -> None:
        with httpx.Client(timeout=10) as client:
            turn = k
            while True:
                try:
                    data = work.get_nowait()
                except queue.Empty:
                    return
                while not stop.is_set():  # until acknowledged, moving to the next node on any failure
                    node = nodes[turn % len(nodes)]
                    turn += 1
                    try:
                        answer = node.post(data, client)
                    except httpx.HTTPError:
                        with lock:
                            counts["connection errors"] += 1
                        time.sleep(0.05)
                        continue
                    if answer.status_code == 503:
                        with lock:
                            counts["try again (503)"] += 1
                        time.sleep(0.1)
                        continue
                    with lock:
                        if answer.status_code == 200:
                            mid = message_id_of(data)
                            counts["duplicate answers" if mid in acked else "accepted"] += 1
                            acked.add(mid)
                        elif answer.status_code == 400 and b"ERR22" in answer.content:
                            counts["NACK"] += 1
                        else:
                            counts["unexpected answers"] += 1
                    break

    try:
        senders = [threading.Thread(target=send, args=(k,), daemon=True) for k in range(SENDERS)]
        for t in senders:
            t.start()

        # a node dies hard a third of the way in, and comes back
        assert wait_until(lambda: len(acked) >= TOTAL // 3, PATIENCE)
        nodes[1].kill()
        killed_at = len(acked)
        time.sleep(0.5)
        nodes[1].start()
        # the receiver (TH-ASW) is down for a while halfway: the other destination keeps flowing
        assert wait_until(lambda: len(acked) >= TOTAL // 2, PATIENCE)
        receiver.stop()
        customs_before = len(list((tmp_path / "customs-inbox").glob("*.xml")))
        time.sleep(2)
        customs_during = len(list((tmp_path / "customs-inbox").glob("*.xml"))) - customs_before
        receiver.start()
        # the database restarts two thirds of the way in
        assert wait_until(lambda: len(acked) >= 2 * TOTAL // 3, PATIENCE)
        restart_at = len(acked)
        pg_cluster.restart("fast")
        deadline = time.monotonic() + PATIENCE
        for t in senders:
            t.join(max(0.0, deadline - time.monotonic()))
        sent = time.monotonic()

        assert counts["NACK"] == len(bad) and counts["unexpected answers"] == 0 and len(acked) == TOTAL
        delivered = receiver.wait_for(TOTAL, max(60.0, TOTAL / 50))
        drained = time.monotonic()
        store = open_store(url, tmp_path)
        try:
            assert wait_until(lambda: store.counts() == {("TH-ASW", State.DELIVERED): TOTAL, ("VN-CUSTOMS", State.DELIVERED): TOTAL}, 30), store.counts()
            chain = verify_chain(store.audit_entries())
        finally:
            store.close()
        got = {mid for (_, mid) in receiver.deliveries}
        customs = len(list((tmp_path / "customs-inbox").glob("*.xml")))
        print(
            f"\nscale-out: {TOTAL} messages, {SENDERS} senders, 3 nodes on PostgreSQL "
            f"(node 2 SIGKILLed at {killed_at} acked, PostgreSQL restarted at {restart_at} acked)\n"
            f"  senders: {counts}\n"
            f"  receiver: {receiver.unique} unique, {receiver.redeliveries} redeliveries (deduplicated); customs files: {customs} "
            f"({customs_during} written while the receiver was down for 2 s)\n"
            f"  audit chain: {chain.entries} entries ok={chain.ok}\n"
            f"  signing {signed - started:.1f}s, sending {sent - signed:.1f}s "
            f"({TOTAL / (sent - signed):.0f} msg/s acked), all delivered {drained - signed:.1f}s after the start"
        )
        assert delivered and got == acked
        assert customs == TOTAL and customs_during > 0
        assert chain.ok, chain.problem
    except BaseException:
        print(f"\nscale-out failed: {len(acked)} acked, {counts}, receiver {receiver.unique}")
        for n in nodes:
            print(f"--- {n.log}\n" + "\n".join(n.log.read_text(errors="replace").splitlines()[-15:]))
        raise
    finally:
        stop.set()
        for n in nodes:
            if n.proc and n.proc.poll() is None:
                n.terminate()
