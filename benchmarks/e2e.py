"""End to end: ``hub serve`` on loopback, senders posting signed envelopes over HTTP, a partner
gateway (``hub.receiver.Receiver``, in a process of its own) taking the deliveries.

Every figure counts only answers the hub gave after recording the message durably and signing
its receipt (HTTP 200 with the receipt): that is what ``hub serve`` does in production.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from .bare import BareServe
from .common import children, latency_summary, proc_cpu_seconds, proc_memory
from .loadgen import Sample, message_id, run_closed, run_open
from .topology import REPO, write_config


class ReceiverProcess:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.receiver"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        self.port = int(self._read())

    def _read(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the benchmark receiver exited")
        return line.strip()

    def ask(self, command: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._read()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/inbox"

    def count(self) -> int:
        return int(self.ask("count"))

    def cpu(self) -> float:
        return float(self.ask("cpu"))

    def arrivals(self) -> dict[str, float]:
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
            path = fh.name
        try:
            self.ask(f"dump {path}")
            return json.loads(Path(path).read_text())
        finally:
            os.unlink(path)

    def wait_for(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count() >= count:
                return True
            time.sleep(0.05)
        return self.count() >= count

    def stop(self) -> None:
        try:
            self.ask("quit") if self.proc.poll() is None else None
        except (RuntimeError, BrokenPipeError, OSError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class HubServe:
    """``hub serve`` as production runs it (``--workers N`` when N > 1)."""

    def __init__(self, config_path: Path, workers: int) -> None:
        from hub.config import load_config

        config = load_config(config_path)
        self.host, self.port = config.hub.listen_host, config.hub.listen_port
        self.url = f"http://{self.host}:{self.port}"
        self.log = config_path.parent / f"serve-{config_path.stem}.log"
        command = [sys.executable, "-m", "hub.cli", "serve", "--config", str(config_path)]
        if workers != 1:
            command += ["--workers", str(workers)]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hub serve exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            raise RuntimeError(f"hub serve did not come up: {self.log.read_text()[-2000:]}")
        time.sleep(0.5 if workers > 1 else 0.1)  # every worker listening

    def pids(self) -> list[int]:
        return [self.proc.pid, *children(self.proc.pid)]

    def cpu(self) -> float:
        return sum(proc_cpu_seconds(pid) for pid in self.pids())

    def memory(self) -> dict:
        per = {pid: proc_memory(pid) for pid in self.pids()}
        return {
            "processes": len(per),
            "peak_rss_bytes_max": max(m["peak_rss"] for m in per.values()),
            "peak_rss_bytes_sum": sum(m["peak_rss"] for m in per.values()),
            "rss_bytes_sum": sum(m["rss"] for m in per.values()),
        }

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def _window(samples: list[Sample], arrivals: dict[str, float], sender: str = "VN-MOIT") -> dict:
    accepted = [s for s in samples if s.status == 200]
    refused = len(samples) - len(accepted)
    if not accepted:
        return {"accepted": 0, "refused": refused}
    start = min(s.sent for s in samples)
    answered = max(s.answered for s in accepted)
    delivered = [(s, arrivals.get(f"{sender} {s.message_id}")) for s in accepted]
    arrived = [(s, t) for s, t in delivered if t is not None]
    last_arrival = max((t for _, t in arrived), default=answered)
    return {
        "sent": len(samples),
        "accepted": len(accepted),
        "refused_or_failed": refused,
        "delivered": len(arrived),
        "seconds": round(answered - start, 3),
        "accepted_per_s": round(len(accepted) / (answered - start), 1),
        "delivered_per_s": round(len(arrived) / (last_arrival - start), 1) if arrived else 0.0,
        "receipt_latency": latency_summary([s.answered - s.sent for s in accepted]),
        "delivery_latency": latency_summary([t - s.sent for s, t in arrived]),
    }


def run(folder: Path, kind: str, size: str, make_messages, *, workers: int, concurrency: int, duration: float,  # type: ignore[no-untyped-def]
        expected_rate: float, paced_rate: float | None = None, paced_duration: float = 0.0, warmup: int = 50,
        bare: bool = False) -> dict:
    """One size and key: a closed-loop run at the hub's maximum, then (optionally) a paced run.
    ``bare``: the same run against ``benchmarks.bare`` instead of ``hub serve`` (the end-to-end floor)."""
    receiver = ReceiverProcess()
    run_dir = Path(tempfile.mkdtemp(prefix=f"e2e-{kind}-{size}-", dir=folder))
    config = write_config(folder, kind, gateway_url=receiver.url, store=f"sqlite:///{run_dir}/hub.db", workers=workers,
                          name=f"e2e-{kind}-{size}.toml")
    count = int(max(expected_rate, 1) * duration * 1.3) + 20
    paced_count = int(paced_rate * paced_duration) + 10 if paced_rate else 0
    messages = make_messages(config, warmup + count + paced_count)
    hub: HubServe | BareServe
    if bare:
        from hub.config import load_config

        hub = BareServe(config, load_config(config).hub.listen_port, receiver.url, run_dir, workers)
    else:
        hub = HubServe(config, workers)
    out: dict = {"size": size, "key": kind, "workers": workers, "senders": concurrency, "inbound_bytes": len(messages[0])}
    try:
        # warm-up: every worker compiled, connected and delivering
        warm = run_closed(hub.host, hub.port, messages[:warmup], concurrency, 60)
        receiver.wait_for(sum(1 for s in warm if s.status == 200), 60)
        before = receiver.count()
        cpu0, rcpu0, lcpu0, t0 = hub.cpu(), receiver.cpu(), time.process_time(), time.time()
        samples = run_closed(hub.host, hub.port, messages[warmup : warmup + count], concurrency, duration)
        t1 = time.time()
        cpu1, lcpu1 = hub.cpu(), time.process_time()
        accepted = sum(1 for s in samples if s.status == 200)
        drained = receiver.wait_for(before + accepted, 120)
        t2 = time.time()
        cpu2, rcpu2 = hub.cpu(), receiver.cpu()
        result = _window(samples, receiver.arrivals())
        result["all_delivered"] = drained
        result["hub_cpu"] = {
            "cores_busy_while_sending": round((cpu1 - cpu0) / (t1 - t0), 3),
            "cpu_ms_per_msg": round((cpu2 - cpu0) / max(1, accepted) * 1e3, 3),
            "cpu_seconds": round(cpu2 - cpu0, 3),
        }
        result["receiver_cpu_ms_per_msg"] = round((rcpu2 - rcpu0) / max(1, accepted) * 1e3, 3)
        result["senders_cpu_ms_per_msg"] = round((lcpu1 - lcpu0) / max(1, len(samples)) * 1e3, 3)
        result["drain_seconds"] = round(t2 - t1, 3)
        out["max"] = result
        if paced_rate:
            # the target rate if the hub sustains it (accepts AND delivers it), else 70 % of what it
            # sustained just now (above the maximum, latency only measures the queue that builds up)
            target = paced_rate
            sustained = min(result.get("accepted_per_s", 0), result.get("delivered_per_s", 0))
            if sustained < target:
                paced_rate = max(1.0, round(0.7 * sustained, 1))
            start = warmup + count
            paced_messages = messages[start : start + int(paced_rate * paced_duration) + 10]
            cpu0, t0 = hub.cpu(), time.time()
            before = receiver.count()
            samples = run_open(hub.host, hub.port, paced_messages, paced_rate, paced_duration, connections=max(64, concurrency))
            t1 = time.time()
            accepted = sum(1 for s in samples if s.status == 200)
            drained = receiver.wait_for(before + accepted, 120)
            paced = _window(samples, receiver.arrivals())
            paced["rate_asked"] = paced_rate
            paced["target_rate"] = target
            paced["rate_is"] = "the target" if paced_rate == target else "70 % of the sustained maximum (the target is above it)"
            paced["all_delivered"] = drained
            paced["hub_cpu"] = {"cores_busy_while_sending": round((hub.cpu() - cpu0) / (t1 - t0), 3)}
            out["paced"] = paced
        out["hub_memory"] = hub.memory()
    finally:
        code = hub.stop()
        receiver.stop()
    out["clean_stop"] = code == 0
    _ = message_id
    return out
