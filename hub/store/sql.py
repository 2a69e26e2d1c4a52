"""What the two SQL backends share: column lists, row converters, and the checks and audit words
they apply the same way. Only what differs (placeholders, locking, notifications) stays in
``sqlite.py`` and ``postgres.py``."""

from __future__ import annotations

from ..audit import AuditEvent, AuditGap
from ..errors import TransitionError
from .base import MessageRecord, OutboxRow, State

MESSAGE_COLUMNS = "sender, message_id, received_at, document_type, function, route, receipt, reference, pre_reference, conversation"
ROW_COLUMNS = (
    "id, message_id, sender, destination, route, state, attempts, next_attempt_at, lease_owner, "
    "lease_until, last_error, created_at, updated_at, payload"
)

# the audit log's word for each outcome of an attempt (``Store.complete``)
OUTCOME_EVENTS = {State.DELIVERED: "delivered", State.PENDING: "retry", State.DEAD: "dead-lettered"}


def message_record(m: tuple) -> MessageRecord:
    """A ``messages`` row read with ``MESSAGE_COLUMNS``."""
    return MessageRecord(m[0], m[1], m[2], m[3], m[4], m[5], bytes(m[6]), m[7], m[8], m[9])


def outbox_row(r: tuple) -> OutboxRow:
    """An ``outbox`` row read with ``ROW_COLUMNS``."""
    return OutboxRow(
        id=r[0],
        message_id=r[1],
        sender=r[2],
        destination=r[3],
        route=r[4],
        state=State(r[5]),
        attempts=r[6],
        next_attempt_at=r[7],
        lease_owner=r[8],
        lease_until=r[9],
        last_error=r[10],
        created_at=r[11],
        updated_at=r[12],
        payload=bytes(r[13]),
    )


def row_order(newest: bool) -> str:
    """``Store.rows``' order: oldest first, or with ``newest`` the latest rows first."""
    return "ORDER BY id DESC" if newest else "ORDER BY id"


def row_filter(state: State | None, destination: str | None, mark: str) -> tuple[str, list]:
    """``Store.rows``' WHERE clause (empty for no filter) and its parameters; ``mark`` is the
    backend's placeholder."""
    clauses, params = [], []
    if state is not None:
        clauses.append(f"state = {mark}")
        params.append(state.value)
    if destination is not None:
        clauses.append(f"destination = {mark}")
        params.append(destination)
    return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), params


def resendable_row(current: tuple | None, row_id: int, force: bool) -> OutboxRow:
    """The row ``Store.resend`` may send again: a dead one, a pending one (waiting for its next
    attempt), or with ``force`` a delivered one; ``TransitionError`` naming why not otherwise."""
    if current is None:
        raise TransitionError(f"outbox row {row_id} does not exist")
    row = outbox_row(current)
    if not (row.state in (State.DEAD, State.PENDING) or (force and row.state is State.DELIVERED)):
        hint = " (use --force to send a delivered row again)" if row.state is State.DELIVERED else ""
        if row.state is State.LEASED:
            hint = " (it is being delivered now)"
        raise TransitionError(f"outbox row {row_id} is {row.state.value}; only a dead or pending row can be resent{hint}")
    return row


def resend_event(row: OutboxRow, actor: str) -> AuditEvent:
    return AuditEvent(row.message_id, actor, "resend", f"{row.destination}: row {row.id} was {row.state.value}")


def attempts_after_resend(row: OutboxRow) -> int:
    """A pending row sent now keeps its count (its retry budget goes on); a dead or delivered one
    starts a new count."""
    return row.attempts if row.state is State.PENDING else 0


# ``Store.audit_gaps``: records whose audit entry is missing (anti-joins on the index audit_message).
# A message's ``received`` entry is the sender's; an attempt's outcome entry is the one ``complete``
# writes with it: same message, owner, time, event and detail.
_OUTCOME_EVENT = "CASE t.outcome " + " ".join(f"WHEN '{s.value}' THEN '{e}'" for s, e in OUTCOME_EVENTS.items()) + " END"
_UNAUDITED_MESSAGES = (
    "FROM messages m WHERE NOT EXISTS (SELECT 1 FROM audit a WHERE a.message_id = m.message_id "
    "AND a.event = 'received' AND a.actor = m.sender)"
)
_UNAUDITED_ATTEMPTS = (
    "FROM attempts t JOIN outbox o ON o.id = t.row_id WHERE NOT EXISTS (SELECT 1 FROM audit a WHERE "
    f"a.message_id = o.message_id AND a.event = {_OUTCOME_EVENT} AND a.actor = t.owner AND a.at = t.finished_at "
    "AND a.detail = o.destination || ': ' || t.detail)"
)


def unaudited(cur) -> list[AuditGap]:  # type: ignore[no-untyped-def]
    """``Store.audit_gaps`` on an open cursor of either backend (the SQL is the same in both)."""
    gaps = []
    first = cur.execute(f"SELECT m.message_id {_UNAUDITED_MESSAGES} ORDER BY m.received_at, m.message_id LIMIT 1").fetchone()
    if first is not None:
        count = cur.execute(f"SELECT COUNT(*) {_UNAUDITED_MESSAGES}").fetchone()[0]
        gaps.append(AuditGap("message", count, first[0]))
    first = cur.execute(
        f"SELECT o.message_id, t.row_id, t.number {_UNAUDITED_ATTEMPTS} ORDER BY t.finished_at, t.row_id, t.number LIMIT 1"
    ).fetchone()
    if first is not None:
        count = cur.execute(f"SELECT COUNT(*) {_UNAUDITED_ATTEMPTS}").fetchone()[0]
        gaps.append(AuditGap("delivery attempt", count, f"message {first[0]}, outbox row {first[1]} attempt {first[2]}"))
    return gaps
