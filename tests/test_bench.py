"""The benchmark itself: a --quick run on tiny counts writes every figure the results quote."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIZES = ["1KiB", "10KiB"]
KEYS = ["rsa", "ec"]


def test_quick_run_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "results"
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--count", "4", "--duration", "0.5", "--senders", "4",
         "--sizes", ",".join(SIZES), "--keys", ",".join(KEYS), "--soak", "30", "--out", str(out)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())

    machine = results["machine"]
    assert machine["cores"] >= 1 and machine["cpu_model"] and machine["python"]
    for lib in ("lxml", "signxml", "cryptography", "uvicorn"):
        assert machine["libraries"][lib]
    assert machine["libxml2"] and machine["sqlite"]
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:  # the figures name the commit they measured
        assert results["commit"].split("+")[0] == head.stdout.strip()
        assert f"at {results['commit']}" in (out / "results.md").read_text()

    def one(rows: list[dict], key: str, size: str) -> dict:
        found = [r for r in rows if r["key"] == key and r["size"] == size]
        assert len(found) == 1, (key, size)
        return found[0]

    for key in KEYS:
        for size in SIZES:
            floor = one(results["floor"], key, size)
            for primitive in ("parse", "validate", "xslt", "verify", "sign", "commit", "verify_raw", "sign_raw"):
                assert floor["ms"][primitive] > 0, (key, size, primitive)
            assert floor["floor_msgs_per_s"] > 0
            chained = floor["chained"]  # the same primitives one message after another
            assert chained["messages"] >= 4 and chained["msgs_per_s"] > 0
            assert all(chained["ms"][p] > 0 for p in ("parse", "validate", "verify", "xslt", "sign", "commit"))
            assert sum(chained["ms"].values()) <= chained["ms_per_msg"] * 1.01  # its parts, timed inside the message's time

            inproc = one(results["inprocess"], key, size)
            for variant in ("single", "processes_shared_db", "processes_own_db", "threads"):
                assert inproc[variant]["msgs_per_s"] > 0 and inproc[variant]["cpu_ms_per_msg"] > 0, (key, size, variant)
            assert inproc["single_vs_floor"] > 0 and inproc["single_vs_floor_chained"] > 0
            assert inproc["memory_one_message"]["peak_rss_bytes"] > 0 and "copies_of_the_message" in inproc["memory_one_message"]

            e2e = one(results["e2e"], key, size)
            top = e2e["max"]
            assert top["accepted"] > 0 and top["accepted_per_s"] > 0 and top["delivered_per_s"] > 0
            assert top["refused_or_failed"] == 0 and top["all_delivered"]
            for kind in ("receipt_latency", "delivery_latency"):
                for p in ("p50_ms", "p95_ms", "p99_ms"):
                    assert top[kind][p] > 0, (key, size, kind, p)
            assert top["hub_cpu"]["cpu_ms_per_msg"] > 0 and top["hub_cpu"]["cores_busy_while_sending"] > 0
            assert e2e["hub_memory"]["peak_rss_bytes_max"] > 0
            assert e2e["clean_stop"]
            bare = e2e["floor_e2e"]  # the same run against benchmarks.bare: the end-to-end floor
            assert bare["accepted"] > 0 and bare["refused_or_failed"] == 0 and bare["all_delivered"], (key, size)
            assert bare["hub_cpu"]["cpu_ms_per_msg"] > 0 and bare["workers"] > 0
            if size == "10KiB":
                assert e2e["paced"]["rate_asked"] > 0 and e2e["paced"]["receipt_latency"]["p99_ms"] > 0

    soak = results["soak"]
    assert soak["messages"] == 30 and soak["refused"] == 0 and soak["all_delivered"]
    assert soak["rss_start_bytes"] > 0 and soak["rss_end_bytes"] > 0 and soak["rss_curve"]

    scale = results["scaleout"]  # 1, 2 and 3 nodes on PostgreSQL beside one SQLite node, ECDSA in a quick run
    if "skipped" in scale:
        assert scale["skipped"] == "no postgresql"
    else:
        runs = {(r["store"], r["nodes"]): r["max"] for r in scale["runs"]}
        assert set(runs) == {("sqlite", 1), ("postgresql", 1), ("postgresql", 2), ("postgresql", 3)}
        for run in runs.values():
            assert run["accepted_per_s"] > 0 and run["delivered_per_s"] > 0 and run["all_delivered"]
            assert run["refused_or_failed"] == 0 and run["receipt_latency"]["p99_ms"] > 0

    summary = results["summary"]
    assert {"e2e_10KiB_rsa", "e2e_10KiB_ec", "inprocess_single_vs_floor", "inprocess_single_vs_floor_chained"} <= set(summary)
    assert summary["e2e_10KiB_ec"]["floor_e2e_accepted_per_s"] > 0 and summary["e2e_10KiB_ec"]["hub_share_of_floor_e2e"] > 0

    table = (out / "results.md").read_text()
    assert "| RSA-2048 | 10KiB |" in table and "| ECDSA P-256 | 1KiB |" in table and "## Soak" in table
    assert "## The end-to-end floor" in table and "The bare server's ceiling" in table
    assert "The same primitives chained" in table and "50 % of the floor chained" in table
    assert "## Scale-out" in table and ("| ECDSA P-256 | PostgreSQL | 3 |" in table or "skipped: no postgresql" in table)
    if importlib.util.find_spec("matplotlib") is not None:  # the optional extra `bench`
        assert (out / "chart.png").stat().st_size > 10_000
