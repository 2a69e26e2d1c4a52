"""A message's trace, as text for ``hub trace`` and as a dict for the HTTP API.

Each row's attempts are listed by number (``hub.store.base.Attempt``), with the attempts that
recorded no outcome among them: a number missing between two recorded attempts, or a row's count
ahead of its last recorded attempt, is an attempt cut short (the node stopped or lost its lease
during the delivery), after which the message was, or will be, sent again under the same message
id; the partner may have taken it already and discards the copy by its message id. The count of a
row leased now is its delivery under way. Leases given back uncounted take no number, and a resend
that starts a new count goes on numbering after the last attempt (``Store.resend``).
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any, NamedTuple

from .store import Attempt, OutboxRow, State, Trace


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


class Unrecorded(NamedTuple):
    """An attempt of ``row`` without an outcome: under way (the row is leased now, ``under_way``)
    or interrupted; ``last`` when no later attempt followed it."""

    row: OutboxRow
    number: int
    under_way: bool
    last: bool

    def words(self) -> str:
        """What became of it, in a sentence for an operator."""
        r = self.row
        if self.under_way:
            return f"under way (leased by {r.lease_owner} until {ts(r.lease_until)})"
        said = "interrupted: no outcome was recorded (the node stopped or lost its lease during the delivery)"
        if not self.last:
            return f"{said}; the message was sent again with the same message id"
        if r.state is State.LEASED:
            return (f"{said}; the lease of {r.lease_owner} ran out at {ts(r.lease_until)}, and the message is sent again with "
                    "the same message id once the row is leased again")
        if r.state is State.PENDING:
            return f"{said}; the message is sent again with the same message id at the next attempt"
        return said


def history(trace: Trace, row: OutboxRow, now: float) -> list[Attempt | Unrecorded]:
    """The attempts of ``row`` by number, recorded or not (the module's docstring says how)."""
    steps: list[Attempt | Unrecorded] = []
    expected = 1
    for a in sorted((a for a in trace.attempts if a.row_id == row.id), key=lambda a: a.number):
        steps += [Unrecorded(row, n, False, False) for n in range(expected, a.number)]
        steps.append(a)
        expected = a.number + 1
    current = row.attempt_base + row.attempts
    live = row.state is State.LEASED and row.lease_until is not None and row.lease_until > now
    if live:  # a row numbered before schema 5 may count less than its numbers: its lease is the next one
        current = max(current, expected)
    steps += [Unrecorded(row, n, live and n == current, n == current) for n in range(expected, current + 1)]
    return steps


def _attempt_dict(step: Attempt | Unrecorded) -> dict[str, Any]:
    if isinstance(step, Attempt):
        return {"number": step.number, "started_at": ts(step.started_at), "finished_at": ts(step.finished_at),
                "outcome": step.outcome.value, "detail": step.detail}
    said: dict[str, Any] = {"number": step.number, "started_at": None, "finished_at": None,
                            "outcome": State.LEASED.value if step.under_way else "interrupted", "detail": step.words()}
    if step.under_way:
        said |= {"lease_owner": step.row.lease_owner, "lease_until": ts(step.row.lease_until)}
    return said


def _attempt_line(step: Attempt | Unrecorded) -> str:
    if isinstance(step, Attempt):
        took = (step.finished_at - step.started_at) * 1000
        return f"attempt {step.number} at {ts(step.started_at)} ({took:.0f} ms): {OUTCOME_WORDS[step.outcome]}: {step.detail}"
    return f"attempt {step.number}: {step.words()}"


def trace_dict(trace: Trace, now: float | None = None) -> dict[str, Any]:
    """The trace for ``GET /messages/{id}``; ``now`` (default: the clock) tells a lease under way
    from one that ran out."""
    now = time.time() if now is None else now
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
                "attempts": [_attempt_dict(step) for step in history(trace, r, now)],
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


def trace_text(trace: Trace, message_id: str, now: float | None = None) -> str:
    """The trace for ``hub trace``; ``now`` as in ``trace_dict``."""
    now = time.time() if now is None else now
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
        lines += [f"       {_attempt_line(step)}" for step in history(trace, r, now)]
        if r.state.value == "pending" and r.attempts:
            lines.append(f"       next attempt at {ts(r.next_attempt_at)}")
        if r.purged_at is not None:
            lines.append(f"       payload purged by retention at {ts(r.purged_at)}")
    return "\n".join(lines)
