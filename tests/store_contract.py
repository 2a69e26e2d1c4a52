"""The contract every store backend passes. A backend's test module subclasses ``StoreContract``
and provides a ``store`` fixture (a fresh, migrated store)."""

from __future__ import annotations

import re
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from typing import Iterator

import pytest

from hub.audit import AuditEvent, AuditGap, verify_chain
from hub.errors import TransitionError, TryAgain
from hub.store import Acceptance, Hold, OutboxItem, State, Store, sql
from hub.tracing import trace_dict, trace_text

DAY = 86400.0


def accept_once_it_can(store: Store, a: Acceptance, within: float, interval: float, failing: str) -> bool:
    """``store.accept(a)`` retried while it answers ``TryAgain`` (as a sender retries), for at most
    ``within`` seconds; ``created``."""
    deadline = time.monotonic() + within
    while True:
        try:
            return store.accept(a).created
        except TryAgain:
            assert time.monotonic() < deadline, failing
            time.sleep(interval)


def acceptance(message_id: str = "m-1", sender: str = "VN-MOIT", destinations: tuple[str, ...] = ("TH-ASW", "VN-CUSTOMS"),
               at: float | None = None) -> Acceptance:
    at = time.time() if at is None else at
    return Acceptance(
        sender=sender,
        message_id=message_id,
        received_at=at,
        document_type="CO-FORMD",
        function="01",
        route="r",
        receipt=f"receipt-{sender}-{message_id}".encode(),
        items=tuple(OutboxItem(d, "r", f"payload-{d}-{message_id}".encode()) for d in destinations),
        audit=(AuditEvent(message_id, sender, "received", "r"),),
    )


def history_of(store: Store, message_id: str, row_id: int) -> list[tuple[int, str]]:
    """(number, outcome) of each attempt of one row in ``GET /messages/{id}``'s trace: recorded,
    ``interrupted`` (no outcome recorded) or ``leased`` (under way)."""
    (row,) = [d for d in trace_dict(store.trace(message_id))["deliveries"] if d["row"] == row_id]
    return [(a["number"], a["outcome"]) for a in row["attempts"]]


def accepted_and_delivered(store: Store, count: int, start: int = 0) -> None:
    """``count`` messages ``m-{start}``... to TH-ASW, each delivered before the next is accepted:
    audit entries 2i+1 (received) and 2i+2 (delivered) for message i, oldest first."""
    base = time.time() - 1000
    for i in range(start, start + count):
        store.accept(acceptance(f"m-{i}", destinations=("TH-ASW",), at=base + i))
        (row,) = store.lease("node-a", "TH-ASW", 1, time.time(), 30)
        store.complete(row.id, "node-a", State.DELIVERED, "HTTP 200", base + i, base + i + 0.5)


def settle(store: Store, ends: dict[str, dict[str, State]]) -> None:
    """Leases every due row and ends each as ``ends`` says: message id -> destination -> outcome
    (PENDING: a retry in ten minutes)."""
    now = time.time()
    for destination in {d for outcomes in ends.values() for d in outcomes}:
        for row in store.lease("node-a", destination, 100, now, 30):
            outcome = ends[row.message_id][destination]
            detail = "HTTP 200" if outcome is State.DELIVERED else "HTTP 503"
            store.complete(row.id, "node-a", outcome, detail, now, now, next_attempt_at=now + 600)


BOTH_DELIVERED = {"TH-ASW": State.DELIVERED, "VN-CUSTOMS": State.DELIVERED}

# What a store of schema 3 (the release before retention) holds: a message and its delivered row;
# ``{m}`` is the backend's placeholder.
SCHEMA_3_ROWS = (
    ("INSERT INTO messages (sender, message_id, received_at, document_type, function, route, receipt, conversation, "
     "content_digest) VALUES ('VN-MOIT', 'old-1', 1.0, 'CO-FORMD', '9', 'r', {m}, 'old-1', {m})", (b"\x00", b"\x01")),
    ("INSERT INTO outbox (message_id, sender, destination, route, state, attempts, next_attempt_at, created_at, updated_at, "
     "payload) VALUES ('old-1', 'VN-MOIT', 'TH-ASW', 'r', 'delivered', 1, 1.0, 1.0, 2.0, {m})", (b"\xab\xcd",)),
)


@contextmanager
def refusing_writes(store: Store) -> Iterator[None]:
    """The store's database really refuses writes for a reason of its own, as a read-only one
    does: SQLite's write connection set ``query_only`` (SQLITE_READONLY); PostgreSQL's database set
    ``default_transaction_read_only``, the pool's connections made afresh (SQLSTATE 25006, as a
    standby answers after a failover)."""
    from hub.store.postgres import PostgresStore
    from hub.store.sqlite import SQLiteStore

    if isinstance(store, SQLiteStore):
        store._db.execute("PRAGMA query_only = ON")
        try:
            yield
        finally:
            store._db.execute("PRAGMA query_only = OFF")
        return
    assert isinstance(store, PostgresStore), type(store)
    import psycopg
    from psycopg import sql as pgsql

    with psycopg.connect(store.url, autocommit=True) as admin:
        database = pgsql.Identifier(admin.execute("SELECT current_database()").fetchone()[0])  # type: ignore[index]
        admin.execute(pgsql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(database))
        store._pool.drain()
        try:
            yield
        finally:
            admin.execute(pgsql.SQL("ALTER DATABASE {} RESET default_transaction_read_only").format(database))
            store._pool.drain()


def purged_after_migration(store: Store) -> None:
    """A store migrated from schema 3 with ``SCHEMA_3_ROWS``: the row written before is kept (not
    purged) and found by the first purge; the message's receipt and digest stay."""
    (row,) = store.rows()
    assert (row.state, row.payload, row.purged_at) == (State.DELIVERED, b"\xab\xcd", None)
    report = store.purge(time.time())
    assert (report.rows, report.freed, report.messages) == (1, 2, 1)
    assert store.get(row.id).purged_at is not None  # type: ignore[union-attr]
    assert store.original("VN-MOIT", "old-1") == (b"\x00", b"\x01", 1.0)


class StoreContract:
    def test_migrate_is_idempotent(self, store: Store) -> None:
        v = store.migrate()
        assert store.migrate() == v >= 1

    def test_accept_records_rows_and_receipt(self, store: Store) -> None:
        created, receipt, _ = store.accept(acceptance())
        assert created and receipt == b"receipt-VN-MOIT-m-1"
        assert store.receipt_for("VN-MOIT", "m-1") == receipt
        assert store.receipt_for("VN-MARD", "m-1") is None
        rows = store.rows()
        assert [(r.destination, r.state) for r in rows] == [("TH-ASW", State.PENDING), ("VN-CUSTOMS", State.PENDING)]
        assert rows[0].payload == b"payload-TH-ASW-m-1"

    def test_the_original_keeps_the_documents_digest_and_time(self, store: Store) -> None:
        at = time.time()
        store.accept(replace(acceptance("m-1", at=at), digest=b"\x01" * 32))
        store.accept(acceptance("m-2"))  # recorded without a digest (as before the digest was kept)
        first = store.original("VN-MOIT", "m-1")
        assert first is not None and first.receipt == b"receipt-VN-MOIT-m-1" and first.digest == b"\x01" * 32
        assert abs(first.received_at - at) < 1e-6
        assert store.original("VN-MOIT", "m-2").digest is None  # type: ignore[union-attr]
        assert store.original("VN-MARD", "m-1") is None

    def test_a_message_id_used_by_another_sender_is_known(self, store: Store) -> None:
        store.accept(acceptance("m-1"))  # on route "r"
        assert not store.used_by_another("VN-MOIT", "m-1", ["r"])  # its own
        assert store.used_by_another("VN-MARD", "m-1", ["other", "r"])
        assert not store.used_by_another("VN-MARD", "m-1", ["other"])  # another route (another gateway)
        assert not store.used_by_another("VN-MARD", "m-1", [])
        assert not store.used_by_another("VN-MARD", "m-2", ["r"])

    def test_duplicate_returns_original_receipt_and_writes_nothing(self, store: Store) -> None:
        store.accept(acceptance())
        again = acceptance()
        again = Acceptance(**{**again.__dict__, "receipt": b"another receipt"})
        created, receipt, _ = store.accept(again)
        assert not created and receipt == b"receipt-VN-MOIT-m-1"
        assert len(store.rows()) == 2
        # the same message id from another sender is another message
        assert store.accept(acceptance(sender="VN-MARD"))[0]

    def test_rows_can_be_written_already_leased_to_a_dispatcher(self, store: Store) -> None:
        now = time.time()
        hold = Hold("node-a", 60, frozenset({"TH-ASW"}))
        created, _, held = store.accept(replace(acceptance(at=now), held=hold))
        assert created and [(r.destination, r.state, r.lease_owner, r.attempts) for r in held] == [("TH-ASW", State.LEASED, "node-a", 1)]
        assert held[0].payload == b"payload-TH-ASW-m-1" and now + 59 < held[0].lease_until <= time.time() + 60  # type: ignore[operator]
        stored = store.get(held[0].id)  # what the dispatcher is handed is what the store holds
        assert stored is not None and replace(stored, lease_until=None) == replace(held[0], lease_until=None)
        assert abs(stored.lease_until - held[0].lease_until) < 1  # type: ignore[operator] (PostgreSQL: by its clock)
        # the other destination is pending as usual, and only it can be leased
        assert [r.destination for r in store.lease("node-b", "TH-ASW", 5, now + 1, 30)] == []
        assert [r.destination for r in store.lease("node-b", "VN-CUSTOMS", 5, now + 1, 30)] == ["VN-CUSTOMS"]
        delivered = store.complete(held[0].id, "node-a", State.DELIVERED, "ok", now, now + 1)
        assert delivered.state is State.DELIVERED
        assert [a.number for a in store.trace("m-1").attempts if a.row_id == held[0].id] == [1]
        # a duplicate writes nothing and holds nothing
        created, _, held = store.accept(replace(acceptance(at=now), held=hold))
        assert not created and held == ()

    # Leases expire in real time here: PostgreSQL judges them by the server's clock, whatever the
    # caller's ``now`` says (test_store_postgres.py: a node whose clock is ahead).

    def test_a_held_row_whose_node_is_gone_is_leased_again_when_its_lease_expires(self, store: Store) -> None:
        now = time.time()
        _, _, held = store.accept(replace(acceptance(at=now, destinations=("TH-ASW",)), held=Hold("gone", 0.5, frozenset({"TH-ASW"}))))
        assert store.lease("node-b", "TH-ASW", 5, time.time(), 30) == []
        time.sleep(0.6)
        again = store.lease("node-b", "TH-ASW", 5, time.time(), 30)
        assert [(r.id, r.lease_owner, r.attempts) for r in again] == [(held[0].id, "node-b", 2)]

    def test_one_row_per_destination_is_held_the_others_are_pending(self, store: Store) -> None:
        """An agency can be both a destination and a status-event subscriber: two rows to it, one
        reserved slot; the second row waits for the lease."""
        now = time.time()
        twice = replace(acceptance(at=now, destinations=("TH-ASW", "TH-ASW", "VN-CUSTOMS")), held=Hold("a", 60, frozenset({"TH-ASW", "VN-CUSTOMS"})))
        _, _, held = store.accept(twice)
        assert sorted(r.destination for r in held) == ["TH-ASW", "VN-CUSTOMS"]
        assert {r.id: r.destination for r in held} == {r.id: r.destination for r in store.rows(state=State.LEASED)}
        assert [r.destination for r in store.rows(state=State.PENDING)] == ["TH-ASW"]

    def test_concurrent_duplicates_accept_once(self, store: Store) -> None:
        results: list[bool] = []

        def go() -> None:
            results.append(store.accept(acceptance("race"))[0])

        threads = [threading.Thread(target=go) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results.count(True) == 1
        assert len(store.rows()) == 2

    def test_lease_takes_due_rows_of_one_destination(self, store: Store) -> None:
        now = time.time()
        for i in range(5):
            store.accept(acceptance(f"m-{i}", at=now))
        taken = store.lease("a", "TH-ASW", 3, now + 1, 30)
        assert len(taken) == 3 and all(r.destination == "TH-ASW" and r.state is State.LEASED for r in taken)
        assert all(r.lease_owner == "a" and r.attempts == 1 for r in taken)
        # another owner gets only what is left, never the same rows
        other = store.lease("b", "TH-ASW", 10, now + 1, 30)
        assert {r.id for r in other}.isdisjoint({r.id for r in taken}) and len(other) == 2
        assert store.lease("c", "TH-ASW", 10, now + 1, 30) == []

    def test_rows_not_yet_due_are_not_leased(self, store: Store) -> None:
        now = time.time()
        store.accept(acceptance(at=now))
        assert store.lease("a", "TH-ASW", 10, now - 10, 30) == []

    def test_expired_lease_is_taken_over_and_old_owner_cannot_complete(self, store: Store) -> None:
        now = time.time()
        store.accept(acceptance(at=now))
        (row,) = store.lease("crashed", "TH-ASW", 1, now, 0.4)
        assert store.lease("b", "TH-ASW", 1, time.time(), 5) == []
        time.sleep(0.5)
        (again,) = store.lease("b", "TH-ASW", 1, time.time(), 5)
        assert again.id == row.id and again.attempts == 2 and again.lease_owner == "b"
        with pytest.raises(TransitionError):
            store.complete(row.id, "crashed", State.DELIVERED, "late", now, now + 11)
        done = store.complete(row.id, "b", State.DELIVERED, "ok", now + 10, now + 11)
        assert done.state is State.DELIVERED

    def test_a_stale_attempts_outcome_is_refused_even_for_the_same_owner(self, store: Store) -> None:
        """A delivery slower than its lease: the row is leased again (here by the same owner) and
        the slow attempt's outcome must not overwrite the newer attempt's; nothing is written."""
        now = time.time()
        store.accept(acceptance(at=now))
        (first,) = store.lease("a", "TH-ASW", 1, now, 0.3)
        time.sleep(0.4)
        (second,) = store.lease("a", "TH-ASW", 1, time.time(), 5)
        assert second.attempts == first.attempts + 1
        with pytest.raises(TransitionError, match="leased again"):
            store.complete(first.id, "a", State.DEAD, "HTTP 400", now, now + 11, attempt=first.attempts)
        done = store.complete(second.id, "a", State.DELIVERED, "ok", now + 10, now + 12, attempt=second.attempts)
        assert done.state is State.DELIVERED and done.last_error is None
        assert [a.outcome for a in store.trace(first.message_id).attempts if a.row_id == first.id] == [State.DELIVERED]

    def test_delivered_and_dead_rows_are_never_leased_again(self, store: Store) -> None:
        now = time.time()
        store.accept(acceptance(at=now))
        a, = store.lease("a", "TH-ASW", 1, now, 30)
        b, = store.lease("a", "VN-CUSTOMS", 1, now, 30)
        store.complete(a.id, "a", State.DELIVERED, "ok", now, now)
        store.complete(b.id, "a", State.DEAD, "HTTP 400: bad", now, now)
        far = now + 10_000
        assert store.lease("x", "TH-ASW", 10, far, 30) == [] and store.lease("x", "VN-CUSTOMS", 10, far, 30) == []
        with pytest.raises(TransitionError):
            store.complete(a.id, "a", State.DELIVERED, "again", now, now)
        assert store.get(b.id).last_error == "HTTP 400: bad"  # type: ignore[union-attr]

    def test_retry_schedules_next_attempt(self, store: Store) -> None:
        now = time.time()
        store.accept(acceptance(at=now))
        row, = store.lease("a", "TH-ASW", 1, now, 30)
        later = store.complete(row.id, "a", State.PENDING, "HTTP 503", now, now + 0.1, next_attempt_at=now + 60)
        assert later.state is State.PENDING and later.last_error == "HTTP 503" and later.next_attempt_at == now + 60
        assert store.lease("a", "TH-ASW", 1, now + 30, 30) == []
        (again,) = store.lease("a", "TH-ASW", 1, now + 61, 30)
        assert again.attempts == 2

    def test_illegal_outcome_is_refused(self, store: Store) -> None:
        now = time.time()
        store.accept(acceptance(at=now))
        row, = store.lease("a", "TH-ASW", 1, now, 30)
        with pytest.raises(TransitionError):
            store.complete(row.id, "a", State.LEASED, "?", now, now)

    def test_resend_only_from_dead_or_forced_delivered(self, store: Store) -> None:
        now = time.time()
        store.accept(acceptance(at=now))
        a, = store.lease("a", "TH-ASW", 1, now, 30)
        with pytest.raises(TransitionError):
            store.resend(a.id, "op", now)  # leased
        store.complete(a.id, "a", State.DEAD, "HTTP 400", now, now)
        again = store.resend(a.id, "operator:test", now + 1)
        assert again.state is State.PENDING and again.attempts == 0 and again.message_id == "m-1"
        (leased,) = store.lease("a", "TH-ASW", 1, now + 2, 30)
        store.complete(leased.id, "a", State.DELIVERED, "ok", now + 2, now + 3)
        with pytest.raises(TransitionError):
            store.resend(a.id, "op", now + 4)
        assert store.resend(a.id, "op", now + 4, force=True).state is State.PENDING

    def test_a_pending_row_resent_is_due_now_and_keeps_its_count(self, store: Store) -> None:
        now = time.time()
        store.accept(acceptance(at=now))
        (row,) = store.lease("a", "TH-ASW", 1, now, 30)
        store.complete(row.id, "a", State.PENDING, "HTTP 503", now, now + 1, next_attempt_at=now + 600)
        assert store.lease("a", "TH-ASW", 1, now + 2, 30) == []  # waiting out its backoff
        again = store.resend(row.id, "operator:test", now + 2)
        assert (again.state, again.attempts, again.next_attempt_at) == (State.PENDING, 1, now + 2)
        (leased,) = store.lease("a", "TH-ASW", 1, now + 2, 30)
        assert leased.id == row.id and leased.attempts == 2
        with pytest.raises(TransitionError, match="being delivered now"):
            store.resend(row.id, "op", now + 3)
        assert [e.event for e in store.trace("m-1").audit].count("resend") == 1

    def test_rows_oldest_or_newest_first(self, store: Store) -> None:
        now = time.time()
        for i in range(3):
            store.accept(acceptance(f"m-{i}", at=now))
        assert [r.message_id for r in store.rows(destination="TH-ASW", limit=2)] == ["m-0", "m-1"]
        assert [r.message_id for r in store.rows(destination="TH-ASW", limit=2, newest=True)] == ["m-2", "m-1"]

    def test_release_gives_rows_back_without_counting_an_attempt(self, store: Store) -> None:
        now = time.time()
        store.accept(acceptance(at=now))
        store.lease("a", "TH-ASW", 1, now, 30)
        assert store.release("a", now) == 1
        (row,) = store.lease("b", "TH-ASW", 1, now, 30)
        assert row.attempts == 1

    def test_give_back_returns_one_row_of_this_lease_uncounted(self, store: Store) -> None:
        now = time.time()
        store.accept(acceptance(at=now))
        (row,) = store.lease("a", "TH-ASW", 1, now, 30)
        assert not store.give_back(row.id, "b", row.attempts, now)  # another owner's lease
        assert not store.give_back(row.id, "a", row.attempts + 1, now)  # another lease of this owner
        assert store.give_back(row.id, "a", row.attempts, now)
        back = store.get(row.id)
        assert back is not None and back.state is State.PENDING and back.attempts == 0 and back.lease_owner is None
        assert not store.give_back(row.id, "a", row.attempts, now)  # no longer held
        (again,) = store.lease("b", "TH-ASW", 1, now, 30)  # due as it was, at once
        assert again.id == row.id and again.attempts == 1

    def test_uncount_keeps_the_lease_and_its_outcome_goes_under_the_earlier_attempt(self, store: Store) -> None:
        """A delivery slower than its lease, whose owner leased the row again: the new lease is kept
        but not counted, and the delivery under way records its outcome under its own attempt."""
        now = time.time()
        store.accept(acceptance(at=now))
        (first,) = store.lease("a", "TH-ASW", 1, now, 0.3)
        time.sleep(0.4)
        (second,) = store.lease("a", "TH-ASW", 1, time.time(), 5)
        assert not store.uncount(second.id, "b", second.attempts)
        assert store.uncount(second.id, "a", second.attempts)
        held = store.get(second.id)
        assert held is not None and held.state is State.LEASED and held.attempts == first.attempts
        assert held.lease_owner == "a" and abs(held.lease_until - second.lease_until) < 1  # type: ignore[operator]
        done = store.complete(first.id, "a", State.DELIVERED, "ok", now, now + 11, attempt=first.attempts)
        assert done.state is State.DELIVERED
        assert not store.uncount(second.id, "a", second.attempts)  # settled: nothing to take back

    def test_trace_has_rows_attempts_and_audit(self, store: Store) -> None:
        now = time.time()
        store.accept(acceptance(at=now))
        row, = store.lease("a", "TH-ASW", 1, now, 30)
        store.complete(row.id, "a", State.PENDING, "refused", now, now + 0.5, now + 1)
        row, = store.lease("a", "TH-ASW", 1, now + 2, 30)
        store.complete(row.id, "a", State.DELIVERED, "HTTP 200", now + 2, now + 2.5)
        trace = store.trace("m-1")
        assert trace.message is not None and trace.message.sender == "VN-MOIT"
        assert [a.outcome for a in trace.attempts] == [State.PENDING, State.DELIVERED]
        assert [a.number for a in trace.attempts] == [1, 2]
        assert [e.event for e in trace.audit] == ["received", "retry", "delivered"]

    # -- attempt numbers (hub.tracing: an attempt cut short is listed, under its own number) ----------

    def test_an_attempt_whose_lease_ran_out_keeps_its_number_and_the_next_one_goes_on(self, store: Store) -> None:
        """A node leases the row and stops mid-delivery; another takes the row once the lease has
        run out and delivers it: the delivery is recorded as attempt 2, and the trace lists attempt
        1 as interrupted (the partner may hold the message twice, under the same message id)."""
        now = time.time()
        store.accept(acceptance(at=now, destinations=("TH-ASW",)))
        (first,) = store.lease("crashed", "TH-ASW", 1, now, 0.4)
        steps = history_of(store, "m-1", first.id)
        assert steps == [(1, "leased")], steps  # under way while its lease runs
        assert "attempt 1: under way (leased by crashed until " in trace_text(store.trace("m-1"), "m-1")
        time.sleep(0.5)
        assert history_of(store, "m-1", first.id) == [(1, "interrupted")]  # the lease ran out, no outcome
        (again,) = store.lease("b", "TH-ASW", 1, time.time(), 30)
        assert again.attempts == 2 and history_of(store, "m-1", first.id) == [(1, "interrupted"), (2, "leased")]
        with pytest.raises(TransitionError):
            store.complete(first.id, "crashed", State.DELIVERED, "late", now, now + 1, attempt=first.attempts)
        store.complete(again.id, "b", State.DELIVERED, "HTTP 200", now + 1, now + 2, attempt=again.attempts)
        trace = store.trace("m-1")
        assert [(a.number, a.outcome) for a in trace.attempts] == [(2, State.DELIVERED)]
        assert history_of(store, "m-1", first.id) == [(1, "interrupted"), (2, "delivered")]
        lines = [line.strip() for line in trace_text(trace, "m-1").splitlines()]
        assert lines[-2] == ("attempt 1: interrupted: no outcome was recorded (the node stopped or lost its lease during the delivery); "
                             "the message was sent again with the same message id")
        assert lines[-1].startswith("attempt 2 at ") and lines[-1].endswith(": delivered: HTTP 200")

    def test_leases_given_back_uncounted_take_no_number(self, store: Store) -> None:
        """``give_back``, ``release`` and ``uncount`` undo a lease's count: no attempt number is
        left out for them, so nothing is listed as interrupted."""
        now = time.time()
        store.accept(acceptance(at=now, destinations=("TH-ASW",)))
        (row,) = store.lease("a", "TH-ASW", 1, now, 30)
        assert store.give_back(row.id, "a", row.attempts, now)
        store.lease("a", "TH-ASW", 1, now, 30)
        assert store.release("a", now) == 1
        (first,) = store.lease("a", "TH-ASW", 1, now, 0.3)
        time.sleep(0.4)
        (second,) = store.lease("a", "TH-ASW", 1, time.time(), 30)  # its own delivery still under way
        assert store.uncount(second.id, "a", second.attempts)
        assert history_of(store, "m-1", row.id) == [(1, "leased")]  # one delivery under way, under its first number
        store.complete(first.id, "a", State.PENDING, "HTTP 503", now, now + 1, next_attempt_at=now, attempt=first.attempts)
        assert history_of(store, "m-1", row.id) == [(1, "pending")]
        (third,) = store.lease("a", "TH-ASW", 1, time.time(), 30)
        store.complete(third.id, "a", State.DELIVERED, "HTTP 200", now + 2, now + 3, attempt=third.attempts)
        assert history_of(store, "m-1", row.id) == [(1, "pending"), (2, "delivered")]

    def test_attempt_numbers_go_on_across_resends_and_show_an_attempt_cut_short_after_one(self, store: Store) -> None:
        """A resend of a dead row starts a new count (``attempts`` 0) but not new numbers: the
        attempts after it are numbered after the last one, a gap still meaning an attempt cut
        short; a pending row resent keeps both its count and its numbers."""
        now = time.time()
        store.accept(acceptance(at=now, destinations=("TH-ASW",)))
        (row,) = store.lease("a", "TH-ASW", 1, now, 30)
        store.complete(row.id, "a", State.DEAD, "HTTP 400", now, now + 1, attempt=row.attempts)
        assert store.resend(row.id, "operator:test", time.time()).attempts == 0
        assert history_of(store, "m-1", row.id) == [(1, "dead")]  # nothing cut short, nothing under way
        store.lease("crashed", "TH-ASW", 1, time.time(), 0.3)
        time.sleep(0.4)
        (again,) = store.lease("b", "TH-ASW", 1, time.time(), 30)
        assert again.attempts == 2  # the count since the resend
        store.complete(again.id, "b", State.PENDING, "HTTP 503", now + 3, now + 4, next_attempt_at=now + 600, attempt=again.attempts)
        assert history_of(store, "m-1", row.id) == [(1, "dead"), (2, "interrupted"), (3, "pending")]
        store.resend(row.id, "operator:test", time.time())  # pending: the count goes on
        (third,) = store.lease("b", "TH-ASW", 1, time.time(), 30)
        assert third.attempts == 3
        store.complete(third.id, "b", State.DELIVERED, "HTTP 200", now + 6, now + 7, attempt=third.attempts)
        store.resend(row.id, "operator:test", time.time(), force=True)
        (fourth,) = store.lease("b", "TH-ASW", 1, time.time(), 30)
        assert fourth.attempts == 1
        store.complete(fourth.id, "b", State.DELIVERED, "HTTP 200", now + 9, now + 10, attempt=fourth.attempts)
        assert [a.number for a in store.trace("m-1").attempts] == [1, 3, 4, 5]
        assert history_of(store, "m-1", row.id) == [(1, "dead"), (2, "interrupted"), (3, "pending"), (4, "delivered"), (5, "delivered")]

    def test_audit_chain_verifies_and_counts(self, store: Store) -> None:
        for i in range(3):
            store.accept(acceptance(f"m-{i}"))
        store.record(AuditEvent(None, "unknown", "rejected", "ERR02 MALFORMED_XML"))
        report = verify_chain(store.audit_entries())
        assert report.ok and report.entries == 4

    def test_audit_gaps_none_while_every_message_and_attempt_has_its_entries(self, store: Store) -> None:
        now = time.time()
        accepted_and_delivered(store, 2)
        store.accept(acceptance("m-9", at=now))
        store.accept(acceptance("m-9", at=now))  # a duplicate: nothing written
        store.accept(acceptance("m-9", sender="VN-MARD", at=now))  # the same id from another sender
        a, = store.lease("a", "TH-ASW", 1, now + 1, 30)
        store.complete(a.id, "a", State.PENDING, "HTTP 503", now, now + 0.1, next_attempt_at=now)
        a, = store.lease("a", "TH-ASW", 1, now + 1, 30)
        store.complete(a.id, "a", State.DEAD, "HTTP 400", now, now + 0.2)
        store.resend(a.id, "operator:test", now + 0.3)
        store.record(AuditEvent(None, "unknown", "rejected", "ERR02 MALFORMED_XML"))
        assert store.audit_gaps() == []
        assert verify_chain(store.audit_entries()).ok

    def test_audit_gaps_name_messages_accepted_without_their_entry(self, store: Store) -> None:
        """The store records what it is given; a message recorded without its ``received`` entry
        (here: written so; in a real store: its entry deleted) is named, oldest first, and the
        entry must be the sender's own."""
        now = time.time()
        store.accept(acceptance("m-1", at=now))
        store.accept(replace(acceptance("m-3", at=now + 2), audit=()))
        store.accept(replace(acceptance("m-2", at=now + 1), audit=()))
        mard = acceptance("m-1", sender="VN-MARD", at=now + 3)
        store.accept(replace(mard, audit=(AuditEvent("m-1", "VN-MOIT", "received", "r"),)))  # another sender's entry
        assert store.audit_gaps() == [AuditGap("message", 3, "m-2")]
        assert "audit entries missing for 3 messages (first: m-2): the log was cut or entries deleted" == store.audit_gaps()[0].problem

    def test_counts(self, store: Store) -> None:
        store.accept(acceptance())
        assert store.counts() == {("TH-ASW", State.PENDING): 1, ("VN-CUSTOMS", State.PENDING): 1}

    def test_conversation_by_id_reference_or_message(self, store: Store) -> None:
        from dataclasses import replace

        store.accept(replace(acceptance("m-1"), reference="APP-1", conversation="APP-1"))
        store.accept(replace(acceptance("m-2", sender="VN-MARD"), reference="LIC-9", pre_reference="APP-1", conversation="APP-1"))
        store.accept(acceptance("m-3"))
        for key in ("APP-1", "LIC-9", "m-1", "m-2"):
            assert [m.message_id for m in store.conversation(key)] == ["m-1", "m-2"], key
        assert store.conversation("m-2")[1].pre_reference == "APP-1"
        assert [m.conversation for m in store.conversation("m-3")] == ["m-3"]  # its own, by default
        assert store.conversation("nothing") == []
        assert store.trace("m-2").message.conversation == "APP-1"  # type: ignore[union-attr]

    def test_complete_enqueues_follow_up_rows_in_the_same_transaction(self, store: Store) -> None:
        now = time.time()
        store.accept(acceptance(destinations=("TH-ASW",), at=now))
        row, = store.lease("a", "TH-ASW", 1, now, 30)
        store.complete(row.id, "a", State.DELIVERED, "HTTP 200", now, now + 0.1,
                       enqueue=(OutboxItem("VN-PORTAL", "@events", b'{"event":"delivered"}'),))
        event, = store.rows(destination="VN-PORTAL")
        assert (event.message_id, event.sender, event.route, event.state) == ("m-1", "VN-MOIT", "@events", State.PENDING)
        # a lost lease writes nothing, the follow-up included
        store.accept(acceptance("m-2", destinations=("TH-ASW",), at=now))
        row, = store.lease("a", "TH-ASW", 1, now, 30)
        with pytest.raises(TransitionError):
            store.complete(row.id, "b", State.DELIVERED, "x", now, now, enqueue=(OutboxItem("VN-PORTAL", "@events", b"{}"),))
        assert len(store.rows(destination="VN-PORTAL")) == 1

    # -- retention (Store.purge) ----------------------------------------------------------------

    def test_purge_drops_the_payloads_of_old_messages_whose_rows_are_all_delivered_only(self, store: Store) -> None:
        now = time.time()
        old = {"old": BOTH_DELIVERED, "old-dead": {"TH-ASW": State.DELIVERED, "VN-CUSTOMS": State.DEAD},
               "old-pending": {"TH-ASW": State.DELIVERED, "VN-CUSTOMS": State.PENDING}}
        for message_id in old:
            store.accept(acceptance(message_id, at=now - 10 * DAY))
        store.accept(acceptance("recent", at=now - 3600))
        settle(store, {**old, "recent": BOTH_DELIVERED})
        before = {r.id: r for r in store.rows()}
        report = store.purge(now - DAY)
        assert (report.rows, report.messages, report.dry_run) == (2, 1, False)
        assert report.freed == len(b"payload-TH-ASW-old") + len(b"payload-VN-CUSTOMS-old")
        after = {r.id: r for r in store.rows()}
        purged = {i for i, r in after.items() if r.purged_at is not None}
        assert sorted(after[i].message_id for i in purged) == ["old", "old"]
        for i in purged:  # only the payload went; the row stays delivered with its times and attempts
            assert now - 5 < after[i].purged_at < time.time() + 5  # type: ignore[operator]
            assert after[i] == replace(before[i], payload=b"", purged_at=after[i].purged_at)
        assert all(after[i] == before[i] and after[i].payload for i in after if i not in purged)  # dead, pending, their siblings, recent
        assert [a.outcome for a in store.trace("old").attempts] == [State.DELIVERED, State.DELIVERED]
        assert store.purge(now - DAY).rows == 0  # nothing more to purge

    def test_a_purged_message_sent_again_is_a_duplicate_answered_with_its_original_receipt(self, store: Store) -> None:
        now, digest = time.time(), b"\x01" * 32
        store.accept(replace(acceptance("m-1", at=now - 10 * DAY), digest=digest))
        settle(store, {"m-1": BOTH_DELIVERED})
        assert store.purge(now - DAY).rows == 2
        again = store.accept(replace(acceptance("m-1", at=now), receipt=b"another receipt", digest=digest))
        assert again == (False, b"receipt-VN-MOIT-m-1", ())
        assert store.original("VN-MOIT", "m-1") == (b"receipt-VN-MOIT-m-1", digest, now - 10 * DAY)
        rows = store.rows()
        assert len(rows) == 2 and all(r.purged_at is not None and r.payload == b"" for r in rows)
        with pytest.raises(TransitionError, match=rf"^outbox row {rows[0].id} cannot be resent: its payload was purged by retention on \d{{4}}-\d\d-\d\d$"):
            store.resend(rows[0].id, "operator:test", now, force=True)
        assert store.get(rows[0].id) == rows[0]  # the refusal changed nothing

    def test_a_purge_keeps_the_audit_chain_whole_and_says_what_it_did(self, store: Store) -> None:
        accepted_and_delivered(store, 3)  # received 1000 s ago: entries 1-6
        report = store.purge(time.time(), actor="operator:test")
        assert (report.rows, report.messages) == (3, 3)
        entries = list(store.audit_entries())
        assert verify_chain(entries).ok and store.audit_gaps() == [] and len(entries) == 7
        last = entries[-1]
        assert (last.message_id, last.actor, last.event) == (None, "operator:test", "purged")
        assert re.match(r"retention: payloads of 3 delivered outbox row\(s\) \(ids \d+-\d+\) of 3 message\(s\) received before ", last.detail)
        assert last.detail.endswith(f" dropped ({report.freed} bytes)") and report.freed == 3 * len(b"payload-TH-ASW-m-0")

    def test_a_dry_run_counts_what_a_purge_does_in_batches_and_changes_nothing(self, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(sql, "PURGE_BATCH", 3)  # four batches, two of them splitting a message's rows
        now = time.time()
        for i in range(5):
            store.accept(acceptance(f"m-{i}", at=now - 10 * DAY))
        settle(store, {f"m-{i}": BOTH_DELIVERED for i in range(5)})
        rows, entries = store.rows(), list(store.audit_entries())
        dry = store.purge(now - DAY, dry_run=True)
        assert (dry.rows, dry.messages, dry.freed, dry.dry_run) == (10, 5, sum(len(r.payload) for r in rows), True)
        assert store.rows() == rows and list(store.audit_entries()) == entries
        done = store.purge(now - DAY)
        assert (done.rows, done.messages, done.freed, done.dry_run) == (dry.rows, dry.messages, dry.freed, False)
        assert all(r.purged_at is not None for r in store.rows())
        # one entry per batch, written with its rows: a run cut short leaves no purged row unaudited
        added = [e.detail for e in store.audit_entries()][len(entries):]
        ids = sorted(r.id for r in rows)
        ranges = [(ids[i], ids[min(i + 2, len(ids) - 1)]) for i in range(0, len(ids), 3)]
        assert [d.split(" of ")[1] for d in added] == [f"{n} delivered outbox row(s) (ids {a}-{b})" for n, (a, b) in zip((3, 3, 3, 1), ranges)]

    def test_a_write_the_store_refuses_is_reported_until_a_message_is_recorded(self, store: Store) -> None:
        """What ``GET /health`` answers 503 on: no write of its own, only what the last writes found."""
        assert store.write_fault() is None
        with refusing_writes(store):
            started = time.time()
            with pytest.raises(TryAgain):
                store.accept(acceptance("m-1"))
            fault = store.write_fault(room=1000)
            assert fault is not None and fault.kind == "read-only" and "read-only" in fault.reason, fault
            assert started <= fault.at <= time.time()
            assert store.original("VN-MOIT", "m-1") is None
        assert store.write_fault() == fault  # reads and the passing of its cause unseen: still said
        store.FAULT_HOLD = 0.0  # type: ignore[misc]  # an idle hub: once the hold is over, the next message tries
        assert store.write_fault() is None
        del store.FAULT_HOLD
        assert store.write_fault() == fault
        assert store.accept(acceptance("m-1")).created
        assert store.write_fault() is None
        assert not store.accept(acceptance("m-1")).created and store.write_fault() is None
