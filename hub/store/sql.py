"""What the two SQL backends share: column lists, row converters, and the checks and audit words
they apply the same way. Only what differs (placeholders, locking, notifications) stays in
``sqlite.py`` and ``postgres.py``."""

from __future__ import annotations

from ..audit import AuditEvent
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
    """The row ``Store.resend`` may make pending again: a dead one, or with ``force`` a delivered
    one; ``TransitionError`` naming why not otherwise."""
    if current is None:
        raise TransitionError(f"outbox row {row_id} does not exist")
    row = outbox_row(current)
    if not (row.state is State.DEAD or (force and row.state is State.DELIVERED)):
        hint = " (use --force to send a delivered row again)" if row.state is State.DELIVERED else ""
        raise TransitionError(f"outbox row {row_id} is {row.state.value}; only a dead row can be resent{hint}")
    return row


def resend_event(row: OutboxRow, actor: str) -> AuditEvent:
    return AuditEvent(row.message_id, actor, "resend", f"{row.destination}: row {row.id} was {row.state.value}")
