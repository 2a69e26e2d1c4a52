"""Where a message's time goes in the pipeline, stage by stage (cProfile), beside the floor.

    python -m benchmarks.profile --key ec --size 10KiB --count 400

Stages are the cumulative times of the functions that do them; cProfile slows Python code down
more than C code, so the shares matter more than the absolute figures (the benchmark's own
figures are measured without a profiler).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
from pathlib import Path

from . import documents
from .topology import REPO, Messages, write_config

# (label, file suffix, function name): cumulative time of these functions
STAGES = [
    ("hardened parse", "hub/xml.py", "parse"),
    ("envelope validation (envelope.xsd)", "hub/pipeline.py", "_validate_envelope"),
    ("header read (twice: received, signed)", "hub/envelope.py", "read_header"),
    ("signature verification (signxml)", "hub/trust.py", "Verifier.verify"),
    ("duplicate check (read connection)", "hub/store/sqlite.py", "original"),
    ("payload validation (co.xsd)", "hub/catalogue.py", "validate"),
    ("mapping: XSLT + output validation (formd.xsd)", "hub/catalogue.py", "apply"),
    ("envelope building (outbound, receipt)", "hub/envelope.py", "build"),
    ("signing (outbound, receipt)", "hub/trust.py", "Signer.sign"),
    ("durable commit (group commit, fsync)", "hub/store/sqlite.py", "accept"),
]
SIGNXML = [
    ("  signxml: copies of a root (deep copy, hub.trust.RootCopies)", "hub/trust.py", "_fromstring"),
    ("  signxml: parses (its signed output, small copies)", "signxml/processor.py", "_fromstring"),
    ("  signxml: serialised copies (non-root elements)", "signxml/processor.py", "_tostring"),
    ("  signxml: c14n", "signxml/processor.py", "_c14n"),
    ("  signxml: dsig schema check", "signxml/verifier.py", "validate_schema"),
    ("  signxml: public key operation", "signxml/verifier.py", "_verify_signature_with_pubkey"),
]
MAPPING = [
    ("  XSLT (with its copy of the payload)", "hub/xml.py", "apply"),
]


def _cumulative(stats: pstats.Stats, suffix: str, name: str) -> float:
    """Cumulative seconds of the functions called ``name`` in files ending with ``suffix``; a
    ``Class.method`` name picks that method alone (cProfile keeps a function's name, not its class)."""
    line = None
    if "." in name:
        import hub.trust

        owner, name = name.split(".")
        line = getattr(getattr(hub.trust, owner), name).__code__.co_firstlineno
    total = 0.0
    for (filename, first, func), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if func == name and filename.endswith(suffix) and line in (None, first):
            total += ct
    return total


def profile(kind: str, size: str, count: int) -> dict:
    from hub.runtime import Runtime

    with tempfile.TemporaryDirectory(dir=str(REPO / "var") if (REPO / "var").is_dir() else None) as tmp:
        config = write_config(Path(tmp), kind)
        messages = Messages(config).make(documents.certificate(documents.SIZES[size]), count + 5)
        runtime = Runtime.load(config)
        try:
            submit = runtime.pipeline.submit
            for data in messages[:5]:
                submit(data)
            profiler = cProfile.Profile()
            profiler.enable()
            for data in messages[5:]:
                submit(data)
            profiler.disable()
        finally:
            runtime.close()
    stats = pstats.Stats(profiler)
    total = _cumulative(stats, "hub/pipeline.py", "submit")
    rows = []
    for label, suffix, name in STAGES + SIGNXML + MAPPING:
        t = _cumulative(stats, suffix, name)
        rows.append((label, t / count * 1e3, t / total * 100 if total else 0.0))
    accounted = sum(ms for label, ms, _ in rows[: len(STAGES)])
    per = total / count * 1e3
    rows.append(("everything else (Python glue, Ack, audit events, ...)", per - accounted, (per - accounted) / per * 100))
    return {"key": kind, "size": size, "count": count, "ms_per_msg_profiled": per, "stages": rows}


def render(result: dict) -> str:
    lines = [f"{result['key']} {result['size']}: {result['ms_per_msg_profiled']:.3f} ms per message under cProfile ({result['count']} messages)",
             "", "| stage | ms / msg | share |", "|---|---:|---:|"]
    for label, ms, share in result["stages"]:
        lines.append(f"| {label} | {ms:.3f} | {share:.0f} % |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile")
    p.add_argument("--key", default="ec", choices=["rsa", "ec"])
    p.add_argument("--size", default="10KiB", choices=list(documents.SIZES))
    p.add_argument("--count", type=int, default=300)
    args = p.parse_args(argv)
    print(render(profile(args.key, args.size, args.count)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
