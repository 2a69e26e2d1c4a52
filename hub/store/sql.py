"""What the two SQL backends share: column lists, row converters, and the checks and audit words
they apply the same way. Only what differs (placeholders, locking, notifications) stays in
``sqlite.py`` and ``postgres.py``."""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from typing import Any, Callable

from ..audit import AuditEvent, AuditGap
from ..errors import TransitionError
from .base import MessageRecord, OutboxRow, PurgeReport, State

MESSAGE_COLUMNS = "sender, message_id, received_at, document_type, function, route, receipt, reference, pre_reference, conversation"
ROW_COLUMNS = (
    "id, message_id, sender, destination, route, state, attempts, next_attempt_at, lease_owner, "
    "lease_until, last_error, created_at, updated_at, payload, purged_at, attempt_base"
)
# the number of a row's last recorded attempt (0: none), as a column of a query on ``outbox``
LAST_NUMBER = "(SELECT COALESCE(MAX(a.number), 0) FROM attempts a WHERE a.row_id = outbox.id)"

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
        purged_at=r[14],
        attempt_base=r[15],
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
    if row.purged_at is not None:
        raise TransitionError(f"outbox row {row_id} cannot be resent: its payload was purged by retention on {_utc(row.purged_at)}")
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


def base_after_resend(row: OutboxRow, last_number: int) -> int:
    """``OutboxRow.attempt_base`` once ``row`` is resent, ``last_number`` being the number of its
    last recorded attempt: a count that goes on keeps it; a new count starts after every attempt
    numbered so far (its last attempt recorded an outcome, as every dead or delivered row's did;
    the larger of the two covers rows numbered before schema 5 too), so attempt numbers never
    repeat and a resend leaves no gap that could be taken for an interrupted attempt."""
    if row.state is State.PENDING:
        return row.attempt_base
    return max(row.attempt_base + row.attempts, last_number)


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


# ``Store.purge``: rows looked at per transaction. A purge of millions of rows never holds the
# store's writer (SQLite's lock file) for more than one batch; writers go on between batches.
PURGE_BATCH = 1000
# The rows of one batch that are purged: delivered, not purged yet, of a message received before the
# cut-off none of whose rows is anything but delivered (sender and message id: outbox_message, the
# messages key). The third column says whether the row is the lowest of its message's delivered rows
# not purged before this run (``purged_at`` NULL, or this run's own stamp): a message whose rows fall
# in several batches is counted once, in a dry run too.
_PURGEABLE = (
    "SELECT o.id, length(o.payload), NOT EXISTS (SELECT 1 FROM outbox p WHERE p.message_id = o.message_id "
    "AND p.sender = o.sender AND p.state = 'delivered' AND p.id < o.id AND (p.purged_at IS NULL OR p.purged_at = {m})) "
    "FROM outbox o JOIN messages m ON m.sender = o.sender AND m.message_id = o.message_id "
    "WHERE o.id IN ({ids}) AND o.state = 'delivered' AND o.purged_at IS NULL AND m.received_at < {m} "
    "AND NOT EXISTS (SELECT 1 FROM outbox s WHERE s.message_id = o.message_id AND s.sender = o.sender AND s.state <> 'delivered')"
)


def purge_rows(transaction: Callable[[], AbstractContextManager[Any]], mark: str, before: float, stamp: float,
               dry_run: bool, stop: threading.Event | None, audit: Callable[[Any, AuditEvent], None], actor: str,
               lock: str = "") -> PurgeReport:
    """``Store.purge``'s batches on either backend: ``transaction`` opens one (a cursor), ``mark``
    is the placeholder, ``stamp`` the ``purged_at`` written, ``audit`` appends an entry in the open
    transaction, ``lock`` what the selection of rows to purge ends with (PostgreSQL: ``FOR UPDATE
    OF o``, against a concurrent resend or purge). Each batch that purges rows records its own
    ``purged`` entry in its own transaction, so a run cut short (a crash, a kill) leaves no purged
    row unaccounted for in the audit log. The candidates are walked by id through the partial index
    outbox_unpurged, which holds only delivered rows not purged yet, so a run reads the outbox
    kept, not its purged history."""
    report = PurgeReport(before, dry_run)
    after = 0
    while stop is None or not stop.is_set():
        with transaction() as cur:
            ids = [r[0] for r in cur.execute(
                f"SELECT id FROM outbox WHERE state = 'delivered' AND purged_at IS NULL AND id > {mark} ORDER BY id LIMIT {mark}",
                (after, PURGE_BATCH),
            ).fetchall()]
            if not ids:
                break
            after = ids[-1]
            query = _PURGEABLE.format(m=mark, ids=", ".join([mark] * len(ids))) + ("" if dry_run else lock)
            found = cur.execute(query, (stamp, *ids, before)).fetchall()
            batch = PurgeReport(before, dry_run, len(found), sum(r[1] for r in found), sum(1 for r in found if r[2]))
            if found and not dry_run:
                purged = [r[0] for r in found]
                cur.execute(f"UPDATE outbox SET payload = {mark}, purged_at = {mark} WHERE id IN ({', '.join([mark] * len(purged))})",
                            (b"", stamp, *purged))
                audit(cur, _purge_event(batch, actor, min(purged), max(purged)))
        report = PurgeReport(before, dry_run, report.rows + batch.rows, report.freed + batch.freed, report.messages + batch.messages)
    return report


def _purge_event(batch: PurgeReport, actor: str, first: int, last: int) -> AuditEvent:
    """The audit entry of one batch of a purge run."""
    return AuditEvent(None, actor, "purged", f"retention: payloads of {batch.rows} delivered outbox row(s) (ids {first}-{last}) of "
                                             f"{batch.messages} message(s) received before {_utc(batch.before, '%Y-%m-%dT%H:%M:%SZ')} "
                                             f"dropped ({batch.freed} bytes)")


def _utc(t: float, form: str = "%Y-%m-%d") -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime(form)
