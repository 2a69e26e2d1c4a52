"""results.json -> the headline summary, the Markdown table and the PNG chart."""

from __future__ import annotations

from pathlib import Path

from .common import KINDS


def _find(rows: list[dict], key: str, size: str) -> dict:
    return next((r for r in rows if r.get("key") == key and r.get("size") == size), {})


def summary(results: dict) -> dict:
    """The figures the project's performance targets are about, and whether each is met."""
    out: dict = {}
    targets = results.get("targets", {})
    for key, target in targets.items():
        e = _find(results.get("e2e", []), key, "10KiB")
        if not e:
            continue
        m, p = e.get("max", {}), e.get("paced", {})
        out[f"e2e_10KiB_{key}"] = {
            "accepted_per_s": m.get("accepted_per_s"),
            "delivered_per_s": m.get("delivered_per_s"),
            "p99_receipt_ms_at_max": m.get("receipt_latency", {}).get("p99_ms"),
            "paced_rate": p.get("rate_asked"),
            "paced_accepted_per_s": p.get("accepted_per_s"),
            "p99_receipt_ms_at_paced_rate": p.get("receipt_latency", {}).get("p99_ms"),
            "target_msgs_per_s": target["msgs_per_s"],
            # what a server doing only the target's work reaches with these parts on these cores
            "floor_e2e_accepted_per_s": e.get("floor_e2e", {}).get("accepted_per_s"),
            "hub_share_of_floor_e2e": _share(m.get("accepted_per_s"), e.get("floor_e2e", {}).get("accepted_per_s")),
            "target_met": bool(
                (m.get("accepted_per_s") or 0) >= target["msgs_per_s"]
                and (p.get("receipt_latency", {}).get("p99_ms") or 1e9) < target["p99_ms"]
                and (p.get("accepted_per_s") or 0) >= 0.95 * target["msgs_per_s"]
            ),
        }
    ratios = {}
    for entry in results.get("inprocess", []):
        if "single_vs_floor" in entry:
            ratios[f"{entry['key']}_{entry['size']}"] = entry["single_vs_floor"]
    out["inprocess_single_vs_floor"] = ratios
    out["inprocess_at_least_half_the_floor"] = bool(ratios) and all(v >= 0.5 for v in ratios.values())
    chained = {f"{e['key']}_{e['size']}": e["single_vs_floor_chained"] for e in results.get("inprocess", []) if "single_vs_floor_chained" in e}
    if chained:  # against the same primitives one message after another (``floor.chained``)
        out["inprocess_single_vs_floor_chained"] = chained
        out["inprocess_at_least_half_the_floor_chained"] = all(v >= 0.5 for v in chained.values())
    scale = results.get("scaleout") or {}
    if scale.get("runs"):
        out["scaleout_10KiB_accepted_per_s"] = {
            f"{r['key']}_{r['store']}_{r['nodes']}_node{'s' if r['nodes'] > 1 else ''}": r["max"].get("accepted_per_s") for r in scale["runs"]
        }
    elif scale.get("skipped"):
        out["scaleout_10KiB_accepted_per_s"] = f"skipped: {scale['skipped']}"
    soak = results.get("soak") or {}
    if soak.get("messages"):
        out["soak"] = {"messages": soak["messages"], "rss_start_mib": round(soak["rss_start_bytes"] / 2**20, 1),
                       "rss_end_mib": round(soak["rss_end_bytes"] / 2**20, 1), "growth_percent": soak["rss_growth_percent"],
                       "msgs_per_s_first_tenth": soak.get("msgs_per_s_first_tenth"), "msgs_per_s_last_tenth": soak.get("msgs_per_s_last_tenth")}
    return out


def _share(part: float | None, whole: float | None) -> float | None:
    return round(part / whole, 3) if part and whole else None


def _f(value, digits: int = 0) -> str:  # type: ignore[no-untyped-def]
    if value is None:
        return "-"
    if isinstance(value, float) and digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [
        "# sw-hub benchmark",
        "",
        f"`{results['command']}` on {m['cores']} cores ({m['cpu_model']}), Python {m['python']}, "
        f"lxml {m['libraries'].get('lxml')} (libxml2 {m['libxml2']}), signxml {m['libraries'].get('signxml')}, "
        f"cryptography {m['libraries'].get('cryptography')}, SQLite {m['sqlite']}; {results['started']}"
        + (f", at {results['commit']}" if results.get("commit") else "")
        + (" (QUICK run: indicative only)" if results.get("quick") else "") + ".",
        "",
        f"Hub: {results['settings']['hub']}. End to end: `hub serve --workers {results['settings']['workers']}`, "
        f"{results['settings']['senders']} concurrent HTTP senders, {results['settings']['e2e_seconds']} s per run. "
        f"Other load on the machine (share of all cores busy before each phase): {results['background_cpu_busy']}.",
        "",
        "## Throughput (messages/s) and latency",
        "",
        "| key | size | floor 1 core: alone / chained | in-process 1 thread | % of floor: alone / chained | in-process all cores "
        "| end to end accepted/s | delivered/s "
        "| receipt p50 / p95 / p99 ms | delivery p99 ms | hub CPU ms/msg | hub peak RSS MiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    sizes = results["settings"]["sizes"]
    for key in KINDS:
        for size in sizes:
            f = _find(results["floor"], key, size)
            i = _find(results["inprocess"], key, size)
            e = _find(results["e2e"], key, size)
            if not (f or i or e):
                continue
            mx = e.get("max", {})
            r = mx.get("receipt_latency", {})
            d = mx.get("delivery_latency", {})
            mem = e.get("hub_memory", {})
            lines.append(
                f"| {KINDS[key]} | {size} | {_f(f.get('floor_msgs_per_s'))} / {_f(f.get('chained', {}).get('msgs_per_s'))} "
                f"| {_f(i.get('single', {}).get('msgs_per_s'))} "
                f"| {_percent(i.get('single_vs_floor'))} / {_percent(i.get('single_vs_floor_chained'))} "
                f"| {_f(i.get('processes_shared_db', {}).get('msgs_per_s'))} | {_f(mx.get('accepted_per_s'))} "
                f"| {_f(mx.get('delivered_per_s'))} | {_f(r.get('p50_ms'), 1)} / {_f(r.get('p95_ms'), 1)} / {_f(r.get('p99_ms'), 1)} "
                f"| {_f(d.get('p99_ms'), 1)} | {_f(mx.get('hub_cpu', {}).get('cpu_ms_per_msg'), 2)} "
                f"| {_f(mem.get('peak_rss_bytes_max', 0) / 2**20, 0) if mem else '-'} |"
            )
    paced = [e for e in results["e2e"] if e.get("paced")]
    if paced:
        lines += ["", "## Latency at a fixed rate (open loop)", "",
                  "| key | size | rate asked | accepted/s | receipt p50 / p95 / p99 ms | delivery p50 / p99 ms | hub cores busy |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for e in paced:
            p = e["paced"]
            r, d = p.get("receipt_latency", {}), p.get("delivery_latency", {})
            lines.append(
                f"| {KINDS[e['key']]} | {e['size']} | {_f(p.get('rate_asked'))} | {_f(p.get('accepted_per_s'))} "
                f"| {_f(r.get('p50_ms'), 1)} / {_f(r.get('p95_ms'), 1)} / {_f(r.get('p99_ms'), 1)} "
                f"| {_f(d.get('p50_ms'), 1)} / {_f(d.get('p99_ms'), 1)} | {_f(p.get('hub_cpu', {}).get('cores_busy_while_sending'), 2)} |"
            )
    bare = [e for e in results["e2e"] if e.get("floor_e2e")]
    if bare:
        lines += ["", "## The end-to-end floor: a bare server doing only the target's work", "",
                  "| key | size | bare accepted/s | bare delivered/s | bare CPU ms/msg | hub accepted/s | hub % of bare | hub CPU ms/msg |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]
        for e in bare:
            b, mx = e["floor_e2e"], e.get("max", {})
            share = _share(mx.get("accepted_per_s"), b.get("accepted_per_s"))
            lines.append(
                f"| {KINDS[e['key']]} | {e['size']} | {_f(b.get('accepted_per_s'))} | {_f(b.get('delivered_per_s'))} "
                f"| {_f(b.get('hub_cpu', {}).get('cpu_ms_per_msg'), 2)} | {_f(mx.get('accepted_per_s'))} "
                f"| {_f(share * 100) if share else '-'} | {_f(mx.get('hub_cpu', {}).get('cpu_ms_per_msg'), 2)} |"
            )
        lines += ["", "Bare (`benchmarks/bare.py`): the same senders, receiver, HTTP stack (uvicorn, httptools, uvloop), "
                  f"{bare[0]['floor_e2e'].get('workers')} processes on one port, libraries, keys and signxml calls as the hub, "
                  "doing per message on the event loop only: parse, envelope and payload schemas, verify, XSLT, sign, a "
                  "receipt signed, one commit (WAL, synchronous=FULL, a file per process), the answer, then one POST to "
                  "the partner and one commit. No routing, header, duplicate check, audit, output validation, trust "
                  "policy, retries, leases or threads: not a hub, but the most one could reach with these parts on "
                  "these cores."]
    if results["floor"]:
        lines += ["", "## The floor per message (ms, one core)", "",
                  "| key | size | parse | XSD validate | XSLT | verify | sign | durable commit | floor | verify raw | sign raw "
                  "| verify, stock signxml | sign, stock signxml |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for f in results["floor"]:
            ms = f["ms"]
            lines.append(
                f"| {KINDS[f['key']]} | {f['size']} | {ms['parse']:.3f} | {ms['validate']:.3f} | {ms['xslt']:.3f} | {ms['verify']:.3f} "
                f"| {ms['sign']:.3f} | {ms['commit']:.3f} | **{f['floor_ms']:.3f}** | {ms['verify_raw']:.3f} | {ms['sign_raw']:.3f} "
                f"| {ms.get('verify_signxml', float('nan')):.3f} | {ms.get('sign_signxml', float('nan')):.3f} |"
            )
        chained = [f for f in results["floor"] if f.get("chained")]
        if chained:
            lines += ["", "The same primitives chained, one message after another (ms a message, best of three rounds; "
                      "*alone*: the sum above):", "",
                      "| key | size | messages | parse | XSD validate | verify | XSLT | sign | durable commit | chained | alone |",
                      "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
            for f in chained:
                c, ms = f["chained"], f["chained"]["ms"]
                lines.append(
                    f"| {KINDS[f['key']]} | {f['size']} | {_f(c['messages'])} | {ms['parse']:.3f} | {ms['validate']:.3f} | {ms['verify']:.3f} "
                    f"| {ms['xslt']:.3f} | {ms['sign']:.3f} | {ms['commit']:.3f} | **{c['ms_per_msg']:.3f}** | {f['floor_ms']:.3f} |"
                )
        lines += ["", "verify and sign: signxml as the hub calls it (`hub.trust.Verifier`, `hub.trust.Signer`: signxml's classes "
                  "with `hub.trust.RootCopies`, which deep-copies a document root instead of serialising and re-parsing it); "
                  "*stock signxml*: signxml's own classes, same settings, verifying from bytes; "
                  "*raw*: exclusive c14n + SHA-256 + the key operation alone.",
                  "XSD validate: envelope.xsd + co.xsd. Durable commit: one row of the outbound message's size, WAL, synchronous=FULL.",
                  "*Alone*: each primitive timed in a loop over one message, its code and data kept in the CPU's caches from "
                  "call to call and its commits back to back: the least each can cost. *Chained*: each message through all of "
                  "them in turn, on the signed copy, over distinct messages, as a message path pays for them (`benchmarks.floor.chained`): "
                  "the floor of a message path without anything of a hub around it."]
    if results["inprocess"]:
        lines += ["", "## In-process variants (messages/s)", "",
                  "| key | size | 1 thread | threads (1 process) | processes, one SQLite file (production-like) | processes, own files "
                  "| CPU ms/msg (1 thread) | memory for one message: peak growth MiB (x its size) |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]
        for i in results["inprocess"]:
            mem = i.get("memory_one_message") or {}
            lines.append(
                f"| {KINDS[i['key']]} | {i['size']} | {_f(i['single']['msgs_per_s'])} | {_f((i.get('threads') or {}).get('msgs_per_s'))} "
                f"| {_f(i['processes_shared_db']['msgs_per_s'])} | {_f(i['processes_own_db']['msgs_per_s'])} | {_f(i['single']['cpu_ms_per_msg'], 3)} "
                f"| {_f(mem.get('peak_growth_bytes', 0) / 2**20, 1) if mem else '-'} ({_f(mem.get('copies_of_the_message'), 1)}) |"
            )
        lines += ["", "1 thread: the best of three rounds, as the floor's timings. Threads: one process, one pipeline, "
                  "4 callers per core, of which `[hub] pipeline_threads` (2) are in the pipeline at once, as in one `hub serve` "
                  "worker. Memory for one message: a fresh process warmed up with 1 KiB messages, then one message of the size; "
                  "peak RSS growth (libxml2 trees are several times the size of the text they hold)."]
    lines += _scaleout(results.get("scaleout"))
    soak = results.get("soak") or {}
    lines += ["", "## Soak", ""]
    if soak.get("messages"):
        lines.append(
            f"{soak['messages']:,} messages ({KINDS[soak['key']]}, {soak['size']}) through an in-process hub with its dispatcher "
            f"delivering over HTTP: RSS {soak['rss_start_bytes'] / 2**20:.1f} MiB after warm-up, {soak['rss_end_bytes'] / 2**20:.1f} MiB "
            f"at the end ({soak['rss_growth_percent']:+.1f} %), {_f(soak.get('msgs_per_s_after_warmup'))} msg/s "
            f"({_f(soak.get('msgs_per_s_first_tenth'))} in the first tenth of the run, {_f(soak.get('msgs_per_s_last_tenth'))} in the last), "
            f"all delivered: {soak['all_delivered']}."
        )
        curve = soak.get("rss_curve") or []
        half = [c for c in curve[:-1] if c["messages"] >= soak["messages"] // 2]
        if len(curve) > 2 and half:
            along = ", ".join(f"{c['rss_bytes'] / 2**20:.1f} at {c['messages'] // 1000}k" for c in curve[:-1])
            lines += [
                "",
                f"RSS along the run (MiB at thousands of messages): {along}; over the second half "
                f"{half[0]['rss_bytes'] / 2**20:.1f} -> {half[-1]['rss_bytes'] / 2**20:.1f}; "
                "the last figure is after the deliveries drained and a garbage collection.",
            ]
    else:
        lines.append("Not run (`--soak 100000`).")
    s = results.get("summary", {})
    lines += ["", "## Against the targets", ""]
    for key in ("rsa", "ec"):
        t = s.get(f"e2e_10KiB_{key}")
        if t:
            lines.append(
                f"- 10 KiB {KINDS[key]}: {_f(t['accepted_per_s'])} msg/s at most (target {t['target_msgs_per_s']}), "
                f"p99 receipt {_f(t['p99_receipt_ms_at_paced_rate'], 1)} ms at {_f(t['paced_rate'])} msg/s asked "
                f"({_f(t['paced_accepted_per_s'])} accepted/s): {'met' if t['target_met'] else 'NOT met'}."
                + (f" The bare server's ceiling with these parts on these cores: {_f(t['floor_e2e_accepted_per_s'])} msg/s"
                   + (", below the target." if t["floor_e2e_accepted_per_s"] < t["target_msgs_per_s"] else ".")
                   if t.get("floor_e2e_accepted_per_s") else "")
            )
    if s.get("inprocess_single_vs_floor"):
        lines.append(f"- In-process >= 50 % of the floor (its primitives alone) for every size: "
                     f"{'yes' if s['inprocess_at_least_half_the_floor'] else 'no'} "
                     f"({', '.join(f'{k} {v * 100:.0f} %' for k, v in s['inprocess_single_vs_floor'].items())}).")
    if s.get("inprocess_single_vs_floor_chained"):
        lines.append(f"- In-process >= 50 % of the floor chained (the same primitives one message after another) for every size: "
                     f"{'yes' if s['inprocess_at_least_half_the_floor_chained'] else 'no'} "
                     f"({', '.join(f'{k} {v * 100:.0f} %' for k, v in s['inprocess_single_vs_floor_chained'].items())}).")
    return "\n".join(lines) + "\n"


def _percent(ratio: float | None) -> str:
    return _f(ratio * 100) if ratio else "-"


def _scaleout(scale: dict | None) -> list[str]:
    lines = ["", "## Scale-out: `hub serve` nodes on one PostgreSQL, beside one SQLite node", ""]
    if not scale:
        return lines + ["Not run (`--skip scaleout`)."]
    if scale.get("skipped"):
        return lines + [f"skipped: {scale['skipped']}"]
    st = scale["settings"]
    lines += [
        f"{st['size']}, closed loop, {st['senders']} HTTP senders spread over the nodes, {st['seconds']} s per run; each node "
        f"`hub serve --workers {st['workers_per_node']}` on a port of its own. PostgreSQL {scale.get('postgresql') or '?'}: {st['postgres']}; "
        "nodes join one database one at a time. Every node, PostgreSQL, the senders and the receiver share this machine's cores.",
        "",
        "| key | store | nodes | accepted/s | delivered/s | receipt p50 / p99 ms | hub CPU ms/msg | PostgreSQL CPU ms/msg | all delivered |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in scale.get("runs", []):
        m = r.get("max", {})
        rl = m.get("receipt_latency", {})
        lines.append(
            f"| {KINDS[r['key']]} | {'PostgreSQL' if r['store'] == 'postgresql' else 'SQLite'} | {r['nodes']} | {_f(m.get('accepted_per_s'))} "
            f"| {_f(m.get('delivered_per_s'))} | {_f(rl.get('p50_ms'), 1)} / {_f(rl.get('p99_ms'), 1)} "
            f"| {_f(m.get('hub_cpu', {}).get('cpu_ms_per_msg'), 2)} | {_f(m.get('postgres_cpu', {}).get('cpu_ms_per_msg'), 2)} "
            f"| {'yes' if m.get('all_delivered') else 'NO'} |"
        )
    return lines


def chart(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = results["settings"]["sizes"]
    keys = [k for k in KINDS if any(r.get("key") == k for r in results["floor"] + results["inprocess"] + results["e2e"])]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    series = [
        ("floor (1 core, primitives alone)", lambda k, s: _find(results["floor"], k, s).get("floor_msgs_per_s")),
        ("floor (1 core, chained)", lambda k, s: _find(results["floor"], k, s).get("chained", {}).get("msgs_per_s")),
        ("in-process, 1 thread", lambda k, s: _find(results["inprocess"], k, s).get("single", {}).get("msgs_per_s")),
        ("in-process, all cores", lambda k, s: _find(results["inprocess"], k, s).get("processes_shared_db", {}).get("msgs_per_s")),
        ("end to end (HTTP)", lambda k, s: _find(results["e2e"], k, s).get("max", {}).get("accepted_per_s")),
    ]
    groups = [(k, s) for k in keys for s in sizes]
    width = 0.8 / len(series)
    ax = axes[0]
    for n, (label, get) in enumerate(series):
        values = [get(k, s) or 0 for k, s in groups]
        ax.bar([g + n * width for g in range(len(groups))], values, width, label=label)
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))])
    ax.set_xticklabels([f"{s}\n{'RSA' if k == 'rsa' else 'ECDSA'}" for k, s in groups], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("messages / s (log)")
    ax.set_title("Throughput by size: floor beside hub")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax = axes[1]
    lat = [
        ("receipt p99", lambda k, s: _find(results["e2e"], k, s).get("max", {}).get("receipt_latency", {}).get("p99_ms")),
        ("delivery p99", lambda k, s: _find(results["e2e"], k, s).get("max", {}).get("delivery_latency", {}).get("p99_ms")),
        ("floor (1 message)", lambda k, s: _find(results["floor"], k, s).get("floor_ms")),
    ]
    width = 0.8 / len(lat)
    for n, (label, get) in enumerate(lat):
        values = [get(k, s) or 0 for k, s in groups]
        ax.bar([g + n * width for g in range(len(groups))], values, width, label=label)
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))])
    ax.set_xticklabels([f"{s}\n{'RSA' if k == 'rsa' else 'ECDSA'}" for k, s in groups], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("ms (log)")
    ax.set_title("End to end p99 latency at the maximum rate")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    m = results["machine"]
    fig.suptitle(f"sw-hub {'(quick) ' if results.get('quick') else ''}on {m['cores']} cores, {m['cpu_model']}, Python {m['python']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
