"""The hub in-process: ``Pipeline.submit`` from signed bytes to the outbox row committed and the
signed receipt built, exactly as ``hub serve`` runs it (same ``Runtime``, same store settings).

* single: one process, one thread, messages one after the other (best of three rounds, as the floor);
* processes_shared_db: one process per core, each with its own ``Runtime`` (pipeline, keys,
  store connection) on the SAME SQLite file: what ``hub serve --workers N`` does, production-like;
* processes_own_db: one process per core, each with its own SQLite file: an upper bound that
  production does not have (duplicates would not be caught across files);
* threads: one process, one pipeline, one thread per core x 4: what one ``hub serve`` worker
  does with concurrent requests (group commit has several callers to batch).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from pathlib import Path

from .common import proc_cpu_seconds


def _runtime(config_path: Path):  # type: ignore[no-untyped-def]
    from hub.runtime import Runtime

    return Runtime.load(config_path)


def single(config_path: Path, messages: list[bytes], warmup: int = 5, rounds: int = 3) -> dict:
    """The messages after the warm-up in ``rounds`` equal rounds; the figures are the best round's,
    the rule the floor's timings follow (``common.timed``): the round least disturbed by other work."""
    runtime = _runtime(config_path)
    try:
        submit = runtime.pipeline.submit
        for data in messages[:warmup]:
            _check(submit(data))
        todo = messages[warmup:]
        rounds = max(1, min(rounds, len(todo)))
        size = len(todo) // rounds
        measured = []
        for r in range(rounds):
            part = todo[r * size : (r + 1) * size if r < rounds - 1 else None]  # the last round takes the rest
            cpu0, start = time.process_time(), time.perf_counter()
            for data in part:
                _check(submit(data))
            measured.append((time.perf_counter() - start, time.process_time() - cpu0, len(part)))
    finally:
        runtime.close()
    wall, cpu, n = min(measured, key=lambda m: m[0] / m[2])
    return {"messages": sum(m[2] for m in measured), "rounds": rounds, "msgs_per_s": round(n / wall, 1),
            "ms_per_msg": round(wall / n * 1e3, 4), "cpu_ms_per_msg": round(cpu / n * 1e3, 4),
            "rounds_msgs_per_s": [round(m[2] / m[0], 1) for m in measured]}


def threads(config_path: Path, messages: list[bytes], count: int, warmup: int = 5) -> dict:
    runtime = _runtime(config_path)
    try:
        submit = runtime.pipeline.submit
        for data in messages[:warmup]:
            _check(submit(data))
        todo = messages[warmup:]
        errors: list[BaseException] = []

        def work(part: list[bytes]) -> None:
            try:
                for data in part:
                    _check(submit(data))
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        pool = [threading.Thread(target=work, args=(todo[i::count],)) for i in range(count)]
        cpu0, start = time.process_time(), time.perf_counter()
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        wall = time.perf_counter() - start
        cpu = time.process_time() - cpu0
        if errors:
            raise errors[0]
    finally:
        runtime.close()
    n = len(todo)
    return {"threads": count, "messages": n, "msgs_per_s": round(n / wall, 1), "ms_per_msg": round(wall / n * 1e3, 4),
            "cpu_ms_per_msg": round(cpu / n * 1e3, 4)}


def processes(config_paths: list[Path], messages: list[bytes], warmup: int = 5) -> dict:
    """One process per config path (the same path repeated = the same SQLite file)."""
    count = len(config_paths)
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Barrier(count + 1)
    results = ctx.Queue()
    parts = [messages[i::count] for i in range(count)]
    procs = [ctx.Process(target=_worker, args=(config_paths[i], parts[i], warmup, ready, results)) for i in range(count)]
    for p in procs:
        p.start()
    try:
        ready.wait(timeout=300)  # every worker loaded and warmed up
        start = time.perf_counter()
        ready.wait(timeout=300)  # ... and the workers start together
    except threading.BrokenBarrierError:
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
        errors = []
        while not results.empty():
            errors.append(results.get())
        raise RuntimeError(f"an in-process worker did not start: {errors}") from None
    outs = [results.get(timeout=3600) for _ in procs]
    wall = time.perf_counter() - start
    for p in procs:
        p.join(30)
    failed = [o for o in outs if "error" in o]
    if failed:
        raise RuntimeError(f"an in-process worker failed: {failed[0]['error']}")
    n = sum(o["messages"] for o in outs)
    cpu = sum(o["cpu"] for o in outs)
    last = max(o["end"] for o in outs) - min(o["start"] for o in outs)
    return {"processes": count, "messages": n, "msgs_per_s": round(n / last, 1), "ms_per_msg": round(last / n * 1e3, 4),
            "cpu_ms_per_msg": round(cpu / n * 1e3, 4), "wall_s": round(wall, 3)}


def _worker(config_path: Path, messages: list[bytes], warmup: int, ready, results) -> None:  # type: ignore[no-untyped-def]
    try:
        runtime = _runtime(config_path)
        submit = runtime.pipeline.submit
        for data in messages[:warmup]:
            _check(submit(data))
        todo = messages[warmup:]
        ready.wait(timeout=120)
        ready.wait(timeout=120)
        cpu0, start = time.process_time(), time.time()
        for data in todo:
            _check(submit(data))
        end = time.time()
        results.put({"messages": len(todo), "cpu": time.process_time() - cpu0, "start": start, "end": end, "pid": os.getpid()})
        runtime.close()
    except BaseException as exc:  # noqa: BLE001
        results.put({"error": f"{type(exc).__name__}: {exc}", "messages": 0})
        ready.abort()


def _check(ack) -> None:  # type: ignore[no-untyped-def]
    if not ack.accepted or ack.duplicate:
        raise RuntimeError(f"the hub did not accept a benchmark message: {ack.xml[:600]!r}")


_ = proc_cpu_seconds


def memory_per_message(config_path: Path, warm: list[bytes], message: bytes) -> dict:
    """Peak memory one message needs: a fresh process warmed up with small messages (schemas,
    stylesheets, keys, connections in place), then ``message`` alone; peak RSS (VmHWM, reset
    just before) minus RSS before it, also as a multiple of the message's size."""
    ctx = multiprocessing.get_context("spawn")  # a fresh heap: a fork would inherit the benchmark's free memory
    results = ctx.Queue()
    proc = ctx.Process(target=_memory_worker, args=(config_path, warm, message, results))
    proc.start()
    out = results.get(timeout=600)
    proc.join(30)
    if "error" in out:
        raise RuntimeError(f"memory measurement failed: {out['error']}")
    growth = max(0, out["peak"] - out["before"])
    return {"message_bytes": len(message), "rss_before_bytes": out["before"], "peak_rss_bytes": out["peak"],
            "peak_growth_bytes": growth, "copies_of_the_message": round(growth / len(message), 1)}


def _memory_worker(config_path: Path, warm: list[bytes], message: bytes, results) -> None:  # type: ignore[no-untyped-def]
    import gc

    from .common import proc_memory

    try:
        runtime = _runtime(config_path)
        for data in warm:
            _check(runtime.pipeline.submit(data))
        gc.collect()
        before = proc_memory(os.getpid())["rss"]
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        except OSError:
            pass
        _check(runtime.pipeline.submit(message))
        peak = proc_memory(os.getpid())["peak_rss"]
        runtime.close()
        results.put({"before": before, "peak": peak})
    except BaseException as exc:  # noqa: BLE001
        results.put({"error": f"{type(exc).__name__}: {exc}"})
