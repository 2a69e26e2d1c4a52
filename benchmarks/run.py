"""``python -m benchmarks`` / ``hub bench``: the whole benchmark in one run.

    python -m benchmarks                    # full run, results in benchmarks/results/
    python -m benchmarks --quick            # under a minute: tiny counts, every figure present
    python -m benchmarks --soak 100000      # adds the soak (in-process hub + dispatcher)
    python -m benchmarks --only scaleout    # one phase (or several, comma-separated) and nothing else
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from . import documents, e2e, floor, inprocess, report, scaleout, soak
from .common import KINDS, cpu_busy, machine, revision, wait_quiet
from .topology import REPO, Messages, write_config

RESULTS = Path(__file__).resolve().parent / "results"

# the targets set for the hub on this machine (10 KiB e-Form D, end to end)
TARGETS = {"rsa": {"msgs_per_s": 500, "p99_ms": 50}, "ec": {"msgs_per_s": 1000, "p99_ms": 50}}
PHASES = ("floor", "inprocess", "e2e", "scaleout")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hub bench", description="sw-hub benchmark: floor, in-process, end to end, soak")
    p.add_argument("--quick", action="store_true", help="a run under a minute (small counts, short windows)")
    p.add_argument("--sizes", default=",".join(documents.SIZES), help="comma-separated: " + ", ".join(documents.SIZES))
    p.add_argument("--keys", default="rsa,ec", help="comma-separated: rsa (RSA-2048), ec (ECDSA P-256)")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for results.json, results.md, chart.png (default: benchmarks/results; "
                        "with --quick var/bench-quick, so a quick run never replaces the committed figures)")
    p.add_argument("--workers", type=int, default=2 * (os.cpu_count() or 1),
                   help="hub serve worker processes (default: two per core; a worker waiting on the GIL or on its "
                        "commit leaves its core to the other: 10 KiB ECDSA 344 -> 396 msg/s from 2 to 4 on 2 cores)")
    p.add_argument("--senders", type=int, default=32, help="concurrent HTTP senders in the closed-loop run")
    p.add_argument("--duration", type=float, default=None, help="seconds of each end-to-end run (default 10; quick 1)")
    p.add_argument("--count", type=int, default=None, help="messages per in-process measurement at 10 KiB (scaled by size)")
    p.add_argument("--soak", type=int, default=0, metavar="N", help="also run a soak of N messages (the published figures use 100000)")
    p.add_argument("--soak-size", default="10KiB")
    p.add_argument("--soak-key", default="ec")
    p.add_argument("--skip", default="", help="comma-separated phases to skip: " + ", ".join(PHASES))
    p.add_argument("--only", default="", help="comma-separated phases to run, skipping the others (the soak still follows --soak)")
    p.add_argument("--scaleout-nodes", type=int, default=3, metavar="N",
                   help="scale-out phase: 1..N hub serve nodes on one PostgreSQL (default 3)")
    p.add_argument("--no-chart", action="store_true")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                   help="before each phase, wait up to S seconds for other work on the machine to stop")
    return p


def _scaled(base: int, size: str, minimum: int) -> int:
    factor = {"1KiB": 1.5, "10KiB": 1.0, "100KiB": 0.15, "1MiB": 0.02}[size]
    return max(minimum, int(base * factor))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # SIGTERM (e.g. a time-out) unwinds like ^C: hub nodes, receivers and PostgreSQL are stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sizes = [s for s in args.sizes.split(",") if s]
    kinds = [k for k in args.keys.split(",") if k]
    for s in sizes:
        if s not in documents.SIZES:
            raise SystemExit(f"unknown size {s!r}; use {', '.join(documents.SIZES)}")
    for k in kinds:
        if k not in KINDS:
            raise SystemExit(f"unknown key kind {k!r}; use rsa or ec")
    if args.out is None:
        args.out = REPO / "var" / "bench-quick" if args.quick else RESULTS
    skip = set(filter(None, args.skip.split(",")))
    only = set(filter(None, args.only.split(",")))
    for phase in skip | only:
        if phase not in PHASES:
            raise SystemExit(f"unknown phase {phase!r}; use {', '.join(PHASES)}")
    if only:
        skip |= set(PHASES) - only
    quick = args.quick
    duration = args.duration if args.duration is not None else (0.6 if quick else 10.0)
    count = args.count if args.count is not None else (12 if quick else 1500)
    cores = os.cpu_count() or 1

    started = time.time()
    work = Path(tempfile.mkdtemp(prefix="hub-bench-", dir=str(REPO / "var") if (REPO / "var").is_dir() else None))
    results: dict = {
        "command": "python -m benchmarks " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": revision(REPO),
        "quick": quick,
        "machine": machine(),
        "settings": {
            "sizes": sizes, "keys": [KINDS[k] for k in kinds], "workers": args.workers, "senders": args.senders,
            "e2e_seconds": duration, "inprocess_messages_10KiB": count,
            "hub": "hub.toml production settings: signatures required, outbound signed, SQLite WAL synchronous=FULL, "
                   "dispatcher concurrency 4, 5 MiB limit; one route VN-MOIT -> TH-ASW (co-to-formd, output validated "
                   "against formd.xsd), delivery by the http adapter to a receiver process",
        },
        "background_cpu_busy": {"start": cpu_busy()},
        "documents": {},
        "floor": [],
        "inprocess": [],
        "e2e": [],
        "soak": None,
        "scaleout": None,
        "targets": TARGETS,
    }
    certificates = {s: documents.certificate(documents.SIZES[s]) for s in sizes}
    for s, data in certificates.items():
        results["documents"][s] = {"certificate_bytes": len(data), "goods_items": data.count(b"<GoodsItem>")}

    def progress(text: str) -> None:
        print(f"[{time.time() - started:7.1f}s] {text}", file=sys.stderr, flush=True)

    def quiet(phase: str) -> None:
        if args.wait_quiet:
            busy = wait_quiet(timeout=args.wait_quiet)
        else:
            busy = cpu_busy(0.3)
        results["background_cpu_busy"][phase] = busy

    try:
        configs = {k: write_config(work / k, k, name="bench.toml") for k in kinds}
        makers = {k: Messages(configs[k]) for k in kinds}
        samples = {(k, s): makers[k].make(certificates[s], 1)[0] for k in kinds for s in sizes}
        for (k, s), data in samples.items():
            results["documents"][s].setdefault("envelope_bytes", {})[KINDS[k]] = len(data)

        floors: dict[tuple[str, str], dict] = {}
        if "floor" not in skip:
            quiet("floor")
            for k in kinds:
                for s in sizes:
                    progress(f"floor {KINDS[k]} {s}")
                    floors[(k, s)] = alone = floor.measure(configs[k], k, s, samples[(k, s)], quick=quick)
                    # the same primitives one message after another, over as many messages as the in-process run
                    warm = 2 if quick else 5
                    alone["chained"] = floor.chained(configs[k], makers[k].make(certificates[s], _scaled(count, s, 4 if quick else 40) + warm), warm)
                    results["floor"].append(alone)
                    progress(f"  {alone['floor_msgs_per_s']} msg/s alone, {alone['chained']['msgs_per_s']} msg/s chained")

        inproc: dict[tuple[str, str], dict] = {}
        if "inprocess" not in skip:
            quiet("inprocess")
            for k in kinds:
                for s in sizes:
                    n = _scaled(count, s, 4 if quick else 40)
                    warm = 2 if quick else 5
                    progress(f"in-process {KINDS[k]} {s}: signing {4 * n + 4 * warm * cores} messages")
                    messages = makers[k].make(certificates[s], 4 * n + 4 * warm * cores)
                    entry: dict = {"size": s, "key": k, "inbound_bytes": len(messages[0])}
                    own = [write_config(work / k, k, store=f"sqlite:///{work / k}/own-{s}-{i}.db", name=f"own-{s}-{i}.toml")
                           for i in range(cores)]
                    shared = write_config(work / k, k, store=f"sqlite:///{work / k}/shared-{s}.db", name=f"shared-{s}.toml")
                    single_cfg = write_config(work / k, k, store=f"sqlite:///{work / k}/single-{s}.db", name=f"single-{s}.toml")
                    threads_cfg = write_config(work / k, k, store=f"sqlite:///{work / k}/threads-{s}.db", name=f"threads-{s}.toml")
                    step = n + warm * cores
                    parts = [messages[i * step : (i + 1) * step] for i in range(4)]
                    entry["single"] = inprocess.single(single_cfg, parts[0], warm)
                    entry["processes_shared_db"] = inprocess.processes([shared] * cores, parts[1], warm)
                    entry["processes_own_db"] = inprocess.processes(own, parts[2], warm)
                    entry["threads"] = inprocess.threads(threads_cfg, parts[3], 4 * cores, warm)
                    small = makers[k].make(certificates.get("1KiB") or documents.certificate(documents.SIZES["1KiB"]), 3)
                    mem_cfg = write_config(work / k, k, store=f"sqlite:///{work / k}/memory-{s}.db", name=f"memory-{s}.toml")
                    entry["memory_one_message"] = inprocess.memory_per_message(mem_cfg, small, parts[3][-1])
                    del messages, parts
                    f = floors.get((k, s))
                    if f:
                        entry["single_vs_floor"] = round(entry["single"]["msgs_per_s"] / f["floor_msgs_per_s"], 3)
                        if f.get("chained"):
                            entry["single_vs_floor_chained"] = round(entry["single"]["msgs_per_s"] / f["chained"]["msgs_per_s"], 3)
                        entry["all_cores_vs_floor_all_cores"] = round(
                            entry["processes_shared_db"]["msgs_per_s"] / (f["floor_msgs_per_s"] * cores), 3
                        )
                    inproc[(k, s)] = entry
                    results["inprocess"].append(entry)
                    _cleanup(work / k, s)
                    progress(f"  single {entry['single']['msgs_per_s']} msg/s, {cores} processes {entry['processes_shared_db']['msgs_per_s']} msg/s")

        if "e2e" not in skip:
            quiet("e2e")
            for k in kinds:
                for s in sizes:
                    measured = inproc.get((k, s), {}).get("processes_shared_db", {}).get("msgs_per_s")
                    guess = 1.5 * measured if measured else {"1KiB": 800, "10KiB": 600, "100KiB": 150, "1MiB": 15}[s]
                    paced = TARGETS[k]["msgs_per_s"] if s == "10KiB" else None
                    progress(f"end to end {KINDS[k]} {s}")
                    entry = e2e.run(
                        work / k, k, s, lambda cfg, n: Messages(cfg).make(certificates[s], n),
                        workers=args.workers, concurrency=args.senders if not quick else min(args.senders, 4),
                        duration=duration, expected_rate=guess, paced_rate=paced,
                        paced_duration=(0.5 if quick else duration), warmup=3 if quick else 50,
                    )
                    results["e2e"].append(entry)
                    m = entry.get("max", {})
                    progress(f"  {m.get('accepted_per_s')} accepted/s, {m.get('delivered_per_s')} delivered/s, "
                             f"p99 receipt {m.get('receipt_latency', {}).get('p99_ms')} ms")
                    progress(f"end-to-end floor (benchmarks.bare) {KINDS[k]} {s}")
                    bare = e2e.run(
                        work / k, k, s, lambda cfg, n: Messages(cfg).make(certificates[s], n),
                        workers=args.workers, concurrency=args.senders if not quick else min(args.senders, 4),
                        duration=duration, expected_rate=2.5 * (m.get("accepted_per_s") or guess), warmup=3 if quick else 50, bare=True,
                    )
                    entry["floor_e2e"] = {"workers": args.workers, **bare.get("max", {})}
                    progress(f"  {entry['floor_e2e'].get('accepted_per_s')} accepted/s")

        if "scaleout" not in skip:
            quiet("scaleout")
            # 10 KiB, one node count after another; --quick: ECDSA only, 2 s per node count
            out_kinds = ([k for k in kinds if k == "ec"] or kinds[:1]) if quick else kinds
            seconds = args.duration if args.duration is not None else (2.0 if quick else 10.0)
            senders = min(args.senders, 6) if quick else args.senders
            document = certificates.get("10KiB") or documents.certificate(documents.SIZES["10KiB"])
            results["scaleout"] = {
                "postgresql": scaleout.postgres_version(),
                "settings": {"size": "10KiB", "keys": [KINDS[k] for k in out_kinds], "nodes": list(range(1, args.scaleout_nodes + 1)),
                             "workers_per_node": 1, "senders": senders, "seconds": seconds,
                             "postgres": "private cluster on loopback on this machine, fsync on, synchronous_commit on"},
                "runs": [],
            }
            for k in out_kinds:
                e: dict = next((r for r in results["e2e"] if r["key"] == k and r["size"] == "10KiB"), {})
                progress(f"scale-out {KINDS[k]} 10KiB: SQLite 1 node, PostgreSQL 1..{args.scaleout_nodes} nodes")
                found = scaleout.run(
                    work / k, k, lambda cfg, n: Messages(cfg).make(document, n), nodes=args.scaleout_nodes, senders=senders,
                    duration=seconds, warmup=6 if quick else 50, expected_rate=e.get("max", {}).get("accepted_per_s") or 350,
                    progress=progress,
                )
                if "skipped" in found:
                    results["scaleout"] = {"skipped": found["skipped"]}
                    progress(f"  skipped: {found['skipped']}")
                    break
                results["scaleout"]["runs"].extend(found["runs"])

        if args.soak:
            quiet("soak")
            progress(f"soak: {args.soak} messages ({KINDS[args.soak_key]}, {args.soak_size})")
            results["soak"] = soak.run(work / args.soak_key if args.soak_key in configs else work / "soak", args.soak_key,
                                       args.soak_size, documents.certificate(documents.SIZES[args.soak_size]), args.soak)
            progress(f"  rss {results['soak']['rss_start_bytes']} -> {results['soak']['rss_end_bytes']}")
        else:
            results["soak"] = {"skipped": True, "how": "python -m benchmarks --soak 100000"}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    results["background_cpu_busy"]["end"] = cpu_busy()
    results["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    results["seconds"] = round(time.time() - started, 1)
    results["summary"] = report.summary(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (args.out / "results.md").write_text(report.markdown(results), encoding="utf-8")
    chart = not args.no_chart
    if chart:
        try:
            report.chart(results, args.out / "chart.png")
        except ImportError:
            chart = False
            progress("no chart: matplotlib is not installed (pip install -e '.[bench]')")
    progress(f"wrote {args.out}/results.json, results.md" + (", chart.png" if chart else ""))
    print(report.markdown(results))
    return 0


def _cleanup(folder: Path, size: str) -> None:
    for pattern in (f"own-{size}-*", f"shared-{size}*", f"single-{size}*", f"threads-{size}*", f"memory-{size}*"):
        for p in folder.glob(pattern):
            if p.suffix != ".toml":
                p.unlink(missing_ok=True)
