"""Scale-out: the end-to-end closed loop against 1, 2 and 3 ``hub serve`` nodes (``--workers 1``
each, ports of their own) sharing one PostgreSQL, beside one SQLite node under the same load in the
same run.

PostgreSQL is a private cluster (``benchmarks.pgcluster``) on loopback in a temporary folder, on
this machine, with fsync on: its commits are as durable as SQLite's ``synchronous=FULL``. Nodes
join one database one at a time (1 node, then 2, then 3, each run after the previous one has
drained), and sender k posts to node k mod n. Figures are those of ``benchmarks.e2e``: accepted/s
and delivered/s counted from the first send, receipt latency of the answered messages, CPU of the
hub nodes and of PostgreSQL per accepted message. Without PostgreSQL binaries the phase is
reported as ``skipped: no postgresql``.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

from .common import children, proc_cpu_seconds
from .e2e import HubServe, ReceiverProcess, _window
from .loadgen import Sample, run_closed
from .pgcluster import Cluster, find_bindir
from .topology import write_config

# PostgreSQL as durable as SQLite's synchronous=FULL (the shared helper turns fsync off for tests)
DURABLE = "fsync = on\nfull_page_writes = on\nsynchronous_commit = on\n"


def postgres_version() -> str | None:
    bindir = find_bindir()
    if bindir is None:
        return None
    try:
        out = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return None
    found = re.search(r"\d+(\.\d+)+", out)
    return found.group(0) if found else None


def _postgres_pids(cluster: Cluster) -> list[int]:
    try:
        postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    return [postmaster, *children(postmaster)]


def _measure(nodes: list[HubServe], receiver: ReceiverProcess, warm: list[bytes], messages: list[bytes],
             senders: int, duration: float, database: Callable[[], float]) -> dict:
    """One closed-loop window over every node, then the wait until all it accepted is delivered."""
    targets = [(n.host, n.port) for n in nodes]
    first = nodes[0]
    before = receiver.count()
    warmed = run_closed(first.host, first.port, warm, senders, 60, targets)  # the new node compiled, connected, delivering
    receiver.wait_for(before + sum(1 for s in warmed if s.status == 200), 60)
    before = receiver.count()
    cpu0, db0, t0 = sum(n.cpu() for n in nodes), database(), time.time()
    samples: list[Sample] = run_closed(first.host, first.port, messages, senders, duration, targets)
    t1 = time.time()
    cpu1, db1 = sum(n.cpu() for n in nodes), database()
    accepted = sum(1 for s in samples if s.status == 200)
    drained = receiver.wait_for(before + accepted, 120)
    cpu2, db2 = sum(n.cpu() for n in nodes), database()
    result = _window(samples, receiver.arrivals())
    result["all_delivered"] = drained
    result["hub_cpu"] = {
        "cores_busy_while_sending": round((cpu1 - cpu0) / (t1 - t0), 3),
        "cpu_ms_per_msg": round((cpu2 - cpu0) / max(1, accepted) * 1e3, 3),
    }
    if db2:
        result["postgres_cpu"] = {
            "cores_busy_while_sending": round((db1 - db0) / (t1 - t0), 3),
            "cpu_ms_per_msg": round((db2 - db0) / max(1, accepted) * 1e3, 3),
        }
    return result


def run(folder: Path, kind: str, make_messages: Callable[[Path, int], list[bytes]], *, nodes: int = 3, senders: int,
        duration: float, warmup: int, expected_rate: float, progress: Callable[[str], None] = lambda _: None) -> dict:
    """SQLite with one node, then PostgreSQL with 1..``nodes`` nodes; one entry per run."""
    bindir = find_bindir()
    if bindir is None:
        return {"skipped": "no postgresql"}
    receiver = ReceiverProcess()
    run_dir = Path(tempfile.mkdtemp(prefix=f"scaleout-{kind}-", dir=folder))
    count = int(max(expected_rate, 1) * duration * 1.3) + 20
    runs: list[dict] = []
    cluster: Cluster | None = None
    started: list[HubServe] = []
    try:
        sqlite = write_config(folder, kind, gateway_url=receiver.url, store=f"sqlite:///{run_dir}/hub.db", name="scaleout-sqlite.toml")

        def batch() -> tuple[list[bytes], list[bytes]]:  # signed before each run (not all at once: memory)
            made = make_messages(sqlite, warmup + count)
            return made[:warmup], made[warmup:]

        progress(f"  scale-out {kind}: SQLite, 1 node")
        warm, messages = batch()
        node = HubServe(sqlite, 1)
        try:
            entry = _measure([node], receiver, warm, messages, senders, duration, lambda: 0.0)
        finally:
            clean = node.stop() == 0
        runs.append({"key": kind, "store": "sqlite", "nodes": 1, "max": entry, "clean_stop": clean})
        progress(f"    {entry.get('accepted_per_s')} accepted/s, {entry.get('delivered_per_s')} delivered/s, "
                 f"p99 receipt {entry.get('receipt_latency', {}).get('p99_ms')} ms")

        cluster = Cluster(bindir, prefix="hub-bench-pg-").init(DURABLE)
        cluster.start()
        url = cluster.new_database("hub_bench")
        pg = cluster

        def database_cpu() -> float:
            return sum(proc_cpu_seconds(pid) for pid in _postgres_pids(pg))

        for n in range(1, nodes + 1):
            progress(f"  scale-out {kind}: PostgreSQL, {n} node{'s' if n > 1 else ''}")
            config = write_config(folder, kind, gateway_url=receiver.url, store=url, name=f"scaleout-pg-{n}.toml")
            warm, messages = batch()
            started.append(HubServe(config, 1))
            entry = _measure(started, receiver, warm, messages, senders, duration, database_cpu)
            runs.append({"key": kind, "store": "postgresql", "nodes": n, "max": entry})
            progress(f"    {entry.get('accepted_per_s')} accepted/s, {entry.get('delivered_per_s')} delivered/s, "
                     f"p99 receipt {entry.get('receipt_latency', {}).get('p99_ms')} ms")
        codes = [node.stop() for node in started]
        started.clear()
        clean = all(code == 0 for code in codes)
        for r in runs:
            r.setdefault("clean_stop", clean)
    finally:
        for node in started:
            node.stop()
        receiver.stop()
        if cluster is not None:
            cluster.destroy()
    return {"runs": runs}
