"""The soak: many messages through one in-process hub (pipeline + dispatcher delivering to the
partner gateway over HTTP), memory read at the start, along the way and at the end.

It runs in a fresh interpreter (spawned, not forked), so the memory it reports is the hub's own and
not what the benchmark's earlier phases left in the benchmark's process.

Messages are signed by a producer process while the hub works (a bounded queue keeps both in
step), so the soak needs no memory for 100,000 messages made in advance.
"""

from __future__ import annotations

import gc
import multiprocessing
import shutil
import tempfile
import time
from pathlib import Path

from .common import rss_now
from .e2e import ReceiverProcess
from .topology import _make_chunk, write_config


def _producer(config_path: str, document: bytes, count: int, queue) -> None:  # type: ignore[no-untyped-def]
    made = 0
    while made < count:
        n = min(200, count - made)
        queue.put(_make_chunk((config_path, document, n)))
        made += n
    queue.put(None)


def run(folder: Path, kind: str, size: str, document: bytes, count: int, samples: int = 20) -> dict:
    import queue as queues

    ctx = multiprocessing.get_context("spawn")
    answer = ctx.Queue()
    child = ctx.Process(target=_in_child, args=((folder, kind, size, document, count, samples), answer), name="soak")
    child.start()
    try:
        while True:
            try:
                ok, value = answer.get(timeout=5)
                break
            except queues.Empty:
                if not child.is_alive():
                    raise RuntimeError(f"the soak's process ended without an answer (exit status {child.exitcode})") from None
    finally:
        child.join(30)
        if child.is_alive():
            child.terminate()
    if not ok:
        raise RuntimeError(f"the soak failed: {value}")
    return value


def _in_child(args: tuple, answer) -> None:  # type: ignore[no-untyped-def]
    try:
        answer.put((True, _soak(*args)))
    except BaseException as exc:
        answer.put((False, f"{type(exc).__name__}: {exc}"))
        raise


def _soak(folder: Path, kind: str, size: str, document: bytes, count: int, samples: int) -> dict:
    from hub.runtime import Runtime

    receiver = ReceiverProcess()
    run_dir = Path(tempfile.mkdtemp(prefix=f"soak-{kind}-{size}-", dir=folder))
    config = write_config(folder, kind, gateway_url=receiver.url, store=f"sqlite:///{run_dir}/hub.db", name=f"soak-{kind}.toml")
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue(maxsize=8)
    producer = ctx.Process(target=_producer, args=(str(config), document, count, queue), daemon=True)
    producer.start()
    runtime = Runtime.load(config)
    dispatcher = runtime.dispatcher()
    dispatcher.start()
    submit = runtime.pipeline.submit
    curve: list[tuple[int, int, float]] = []  # messages, RSS, seconds since the warm-up
    every = max(1, count // samples)
    done = refused = 0
    start_rss = 0
    t_start = time.perf_counter()
    warm = min(1000, max(1, count // 20))
    try:
        while True:
            chunk = queue.get(timeout=600)
            if chunk is None:
                break
            for data in chunk:
                ack = submit(data)
                done += 1
                refused += 0 if ack.accepted else 1
                if done == warm:
                    gc.collect()
                    start_rss = rss_now()
                    t_start = time.perf_counter()
                    curve.append((done, start_rss, 0.0))
                elif done % every == 0:
                    curve.append((done, rss_now(), time.perf_counter() - t_start))
        elapsed = time.perf_counter() - t_start
        delivered = receiver.wait_for(done - refused, 300)
        gc.collect()
        end_rss = rss_now()
        curve.append((done, end_rss, elapsed))
    finally:
        dispatcher.stop()
        runtime.close()
        receiver.stop()
        producer.join(5)
        db_bytes = sum(p.stat().st_size for p in run_dir.glob("hub.db*"))
        shutil.rmtree(run_dir, ignore_errors=True)
    growth = end_rss - start_rss
    # accepted per second in each interval between samples: flat when nothing slows down as the
    # store fills (the first and the last tenth of the run, side by side)
    rates = [round((n - n0) / (t - t0), 1) for (n0, _, t0), (n, _, t) in zip(curve, curve[1:]) if t > t0 and n > n0]
    tenth = max(1, len(rates) // 10)
    return {
        "size": size,
        "key": kind,
        "messages": done,
        "refused": refused,
        "all_delivered": delivered,
        "msgs_per_s_after_warmup": round((done - warm) / elapsed, 1) if elapsed > 0 else None,
        "rss_start_bytes": start_rss,
        "rss_end_bytes": end_rss,
        "rss_growth_bytes": growth,
        "rss_growth_percent": round(100 * growth / start_rss, 2) if start_rss else None,
        "rss_curve": [{"messages": n, "rss_bytes": r, "seconds": round(t, 2)} for n, r, t in curve],
        "msgs_per_s_first_tenth": round(sum(rates[:tenth]) / tenth, 1) if rates else None,
        "msgs_per_s_last_tenth": round(sum(rates[-tenth:]) / tenth, 1) if rates else None,
        "store_bytes_at_end": db_bytes,
        "note": "a process of its own; start = after the first warm-up messages (caches, compiled schemas, connections in place)",
    }
