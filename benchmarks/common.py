"""What every phase of the benchmark shares: the machine, timers, percentiles, /proc readings."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

KINDS = {"rsa": "RSA-2048", "ec": "ECDSA P-256"}
LIBRARIES = ("lxml", "signxml", "cryptography", "starlette", "uvicorn", "httpx", "httptools", "uvloop", "xmlschema")


def revision(repo: Path) -> str | None:
    """The commit measured (``+changes`` when the working tree differs from it), or None outside git."""
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return commit.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def machine() -> dict:
    """Cores, CPU model, memory, Python and library versions, and how busy the machine was."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        mem = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    versions: dict[str, str | None] = {}
    for lib in LIBRARIES:
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            versions[lib] = None
    from lxml import etree

    import sqlite3

    return {
        "cores": os.cpu_count(),
        "cpu_model": model or platform.processor(),
        "memory_bytes": mem,
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "libraries": versions,
        "libxml2": ".".join(map(str, etree.LIBXML_VERSION)),
        "libxslt": ".".join(map(str, etree.LIBXSLT_VERSION)),
        "sqlite": sqlite3.sqlite_version,
        "openssl": _openssl(),
    }


def _openssl() -> str:
    try:
        from cryptography.hazmat.backends.openssl.backend import backend

        return backend.openssl_version_text()
    except Exception:  # noqa: BLE001 (informational only)
        return ""


def cpu_busy(seconds: float = 0.5) -> float:
    """Share of all cores busy over ``seconds`` (from /proc/stat): what else runs on the machine."""
    def snap() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields), idle

    try:
        t0, i0 = snap()
        time.sleep(seconds)
        t1, i1 = snap()
    except OSError:
        return 0.0
    return round(1 - (i1 - i0) / max(1, t1 - t0), 3)


def wait_quiet(limit: float = 0.15, timeout: float = 0.0) -> float:
    """Waits (up to ``timeout`` s) until the machine is at most ``limit`` busy; returns the last reading."""
    deadline = time.monotonic() + timeout
    busy = cpu_busy()
    while busy > limit and time.monotonic() < deadline:
        busy = cpu_busy(1.0)
    return busy


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def latency_summary(seconds: list[float]) -> dict:
    """p50 / p95 / p99 / max and mean, in milliseconds."""
    if not seconds:
        return {"count": 0}
    return {
        "count": len(seconds),
        "mean_ms": round(statistics.fmean(seconds) * 1e3, 3),
        "p50_ms": round(percentile(seconds, 50) * 1e3, 3),
        "p95_ms": round(percentile(seconds, 95) * 1e3, 3),
        "p99_ms": round(percentile(seconds, 99) * 1e3, 3),
        "max_ms": round(max(seconds) * 1e3, 3),
    }


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (its threads included)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def proc_memory(pid: int) -> dict:
    """Current and peak resident memory of a process, in bytes (VmRSS, VmHWM)."""
    out = {"rss": 0, "peak_rss": 0}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                out["rss"] = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                out["peak_rss"] = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return out


def children(pid: int) -> list[int]:
    """Direct children of a process (for ``hub serve`` with several workers)."""
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            text = (task / "children").read_text().split()
            found.extend(int(x) for x in text)
    except OSError:
        pass
    return sorted(set(found))


def rss_now() -> int:
    return proc_memory(os.getpid())["rss"]


def timed(fn, *, min_time: float = 0.3, min_runs: int = 5, max_runs: int = 100_000, repeats: int = 3) -> float:  # type: ignore[no-untyped-def]
    """Seconds per call of ``fn``: the best of ``repeats`` rounds, each at least ``min_time`` long.
    The best round is the one least disturbed by other work on the machine."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        runs, start = 0, time.perf_counter()
        while True:
            fn()
            runs += 1
            elapsed = time.perf_counter() - start
            if (elapsed >= min_time and runs >= min_runs) or runs >= max_runs:
                break
        best = min(best, elapsed / runs)
    return best
