"""A message's trace, as text for ``hub trace`` and as a dict for the HTTP API."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from .store import State, Trace


OUTCOME_WORDS = {
    State.DELIVERED: "delivered",
    State.PENDING: "failed, will retry",
    State.DEAD: "failed, dead-lettered",
    State.LEASED: "in flight",
}


def ts(t: float | None) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def trace_dict(trace: Trace) -> dict[str, Any]:
    m = trace.message
    return {
        "message": None
        if m is None
        else {
            "sender": m.sender,
            "message_id": m.message_id,
            "received_at": ts(m.received_at),
            "document_type": m.document_type,
            "function": m.function,
            "route": m.route,
            "receipt_bytes": len(m.receipt),  # the signed receipt given: GET /messages/{id}/receipt, `hub trace ID --receipt`
        },
        "deliveries": [
            {
                "row": r.id,
                "destination": r.destination,
                "state": r.state.value,
                "attempts": [
                    {
                        "number": a.number,
                        "started_at": ts(a.started_at),
                        "finished_at": ts(a.finished_at),
                        "outcome": a.outcome.value,
                        "detail": a.detail,
                    }
                    for a in trace.attempts
                    if a.row_id == r.id
                ],
                "last_error": r.last_error,
                "next_attempt_at": ts(r.next_attempt_at) if r.state.value == "pending" else None,
                "payload_purged_at": ts(r.purged_at) if r.purged_at is not None else None,  # retention dropped it
            }
            for r in trace.rows
        ],
        "audit": [
            {"seq": e.seq, "at": ts(e.at), "actor": e.actor, "event": e.event, "detail": e.detail} for e in trace.audit
        ],
    }


def trace_text(trace: Trace, message_id: str) -> str:
    lines = []
    m = trace.message
    if m is None and not trace.audit:
        return f"no message {message_id}"
    if m is not None:
        lines.append(f"message {m.message_id} from {m.sender}: {m.document_type}/{m.function}, route {m.route}")
        lines.append(f"  {ts(m.received_at)}  received and recorded")
        lines.append(f"  {ts(m.received_at)}  answered with a signed receipt ({len(m.receipt)} bytes; "
                     f"`hub trace {m.message_id} --receipt` prints it)")
    else:
        lines.append(f"message {message_id}: not accepted")
    for e in trace.audit:
        if e.event == "rejected":
            lines.append(f"  {ts(e.at)}  {'a copy was ' if m else ''}rejected: {e.detail}")
        elif e.event == "duplicate":
            lines.append(f"  {ts(e.at)}  sent again by {e.actor}: answered with the original receipt")
        elif e.event == "resend":
            lines.append(f"  {ts(e.at)}  resend ({e.actor}): {e.detail}")
    for r in trace.rows:
        lines.append(f"  -> {r.destination} (row {r.id}): {r.state.value.upper()}")
        for a in trace.attempts:
            if a.row_id == r.id:
                took = (a.finished_at - a.started_at) * 1000
                lines.append(f"       attempt {a.number} at {ts(a.started_at)} ({took:.0f} ms): {OUTCOME_WORDS[a.outcome]}: {a.detail}")
        if r.state.value == "pending" and r.attempts:
            lines.append(f"       next attempt at {ts(r.next_attempt_at)}")
        if r.purged_at is not None:
            lines.append(f"       payload purged by retention at {ts(r.purged_at)}")
    return "\n".join(lines)
