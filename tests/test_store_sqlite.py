from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Iterator

import pytest

from hub.audit import AuditEvent, AuditGap, verify_chain
from hub.errors import ConfigError, TryAgain
from hub.store import Store, open_store
from hub.store.sqlite import MIGRATIONS

from .store_contract import SCHEMA_3_ROWS, StoreContract, accept_once_it_can, accepted_and_delivered, acceptance, purged_after_migration
from .support import LockHolder, sqlite_at_schema, write_config


def _messages(store: Store) -> list:  # type: ignore[type-arg]
    return [m for m in (store.trace(mid).message for mid in ("before", "m-1", "m-2")) if m is not None]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store("sqlite:///hub.db", tmp_path)
    yield s
    s.close()


class TestSQLiteStore(StoreContract):
    pass


def test_tampering_with_the_audit_log_is_detected(tmp_path: Path) -> None:
    store = open_store("sqlite:///hub.db", tmp_path)
    for i in range(4):
        store.accept(acceptance(f"m-{i}"))
    store.close()
    db = sqlite3.connect(tmp_path / "hub.db")
    db.execute("UPDATE audit SET detail = 'forged' WHERE seq = 2")
    db.commit()
    db.close()
    store = open_store("sqlite:///hub.db", tmp_path)
    report = verify_chain(store.audit_entries())
    assert not report.ok and "entry 2 was altered" in (report.problem or "")
    store.close()
    db = sqlite3.connect(tmp_path / "hub.db")
    db.execute("DELETE FROM audit WHERE seq = 3")
    db.commit()
    db.close()
    store = open_store("sqlite:///hub.db", tmp_path)
    assert not verify_chain(store.audit_entries()).ok
    store.close()


def test_a_cut_at_the_end_of_the_audit_log_is_found_by_the_messages_and_attempts_left(tmp_path: Path) -> None:
    """The chain of what is left still fits: only the records left without their entries show the cut."""
    store = open_store("sqlite:///hub.db", tmp_path)
    accepted_and_delivered(store, 10)  # entries 2i+1 received and 2i+2 delivered of m-i
    store.close()
    db = sqlite3.connect(tmp_path / "hub.db")
    db.execute("DELETE FROM audit WHERE seq > 13")  # m-6 received kept, its delivery and m-7 .. m-9 cut
    db.commit()
    db.close()
    store = open_store("sqlite:///hub.db", tmp_path)
    try:
        assert verify_chain(store.audit_entries()).ok
        gaps = store.audit_gaps()
        assert gaps == [AuditGap("message", 3, "m-7"), AuditGap("delivery attempt", 4, gaps[1].first)]
        assert gaps[1].first.startswith("message m-6, outbox row ") and gaps[1].first.endswith(" attempt 1")
    finally:
        store.close()


def test_absolute_sqlite_url(tmp_path: Path) -> None:
    s = open_store(f"sqlite:///{tmp_path}/abs.db", Path("/nonexistent"))
    s.close()
    assert (tmp_path / "abs.db").exists()


def test_a_writer_waits_for_another_process_and_goes_on_the_moment_it_lets_go(tmp_path: Path) -> None:
    store = open_store("sqlite:///hub.db", tmp_path)
    try:
        holder = LockHolder(tmp_path / "hub.db", seconds=0.4)  # exits, and so lets go, after 0.4 s
        start = time.monotonic()
        created, _receipt, _rows = store.accept(acceptance("m-1"))
        waited = time.monotonic() - start
        holder.proc.wait(10)
        assert created and 0.2 < waited < 1.5  # woken when the file is free (0.4 s), not after a long poll
        assert store.receipt_for("VN-MOIT", "m-1") == b"receipt-VN-MOIT-m-1"
    finally:
        store.close()


def test_a_stalled_process_holding_the_store_gets_writers_try_again_not_a_hang(tmp_path: Path) -> None:
    store = open_store("sqlite:///hub.db?lock_timeout=0.5", tmp_path)
    try:
        store.accept(acceptance("before"))
        with LockHolder(tmp_path / "hub.db").stall() as holder:
            start = time.monotonic()
            with pytest.raises(TryAgain, match="another process has held its write lock .* for more than 0.5 s"):
                store.accept(acceptance("m-1"))
            assert 0.4 < time.monotonic() - start < 5
            # the writers behind the first time-out get their answer at once, deliveries too
            start = time.monotonic()
            with pytest.raises(TryAgain):
                store.accept(acceptance("m-2"))
            with pytest.raises(TryAgain):
                store.record(AuditEvent("m-2", "VN-MOIT", "rejected", "x"))
            assert time.monotonic() - start < 1
            # reading needs no lock: the duplicate check and traces still answer
            assert store.receipt_for("VN-MOIT", "before") == b"receipt-VN-MOIT-before"
            holder.end()
            # the wait given up lets the lock go at once: another process gets it before this store writes
            LockHolder(tmp_path / "hub.db", seconds=0, within=2).proc.wait(10)
            # the holders gone, the next writer goes on
            assert accept_once_it_can(store, acceptance("m-1"), 10, 0.05, "the store stayed locked after the holder was gone")
        assert {m.message_id for m in _messages(store)} == {"before", "m-1"}
        assert verify_chain(store.audit_entries()).ok
    finally:
        store.close()


def test_closing_a_store_while_a_write_waits_for_the_lock(tmp_path: Path) -> None:
    store = open_store("sqlite:///hub.db?lock_timeout=0.2", tmp_path)
    with LockHolder(tmp_path / "hub.db").stall() as holder:
        with pytest.raises(TryAgain):
            store.accept(acceptance("m-1"))
        store.close()  # the wait still under way keeps its descriptor until it ends
        holder.end()
    again = open_store("sqlite:///hub.db", tmp_path)
    try:
        assert again.accept(acceptance("m-1")).created
    finally:
        again.close()


def test_a_store_of_the_previous_schema_is_migrated_and_its_messages_stay_duplicates(tmp_path: Path) -> None:
    db = sqlite_at_schema(tmp_path / "hub.db", 2)  # the schema of the release before the digest was kept
    db.execute("INSERT INTO messages (sender, message_id, received_at, document_type, function, route, receipt, conversation) "
               "VALUES ('VN-MOIT', 'old-1', 1.0, 'CO-FORMD', '9', 'r', x'00', 'old-1')")
    db.close()
    store = open_store("sqlite:///hub.db", tmp_path)
    try:
        assert store.migrate() == MIGRATIONS[-1][0]
        assert store.original("VN-MOIT", "old-1") == (b"\x00", None, 1.0)  # no digest: any copy is a duplicate
    finally:
        store.close()


def test_a_store_of_schema_3_is_migrated_and_its_delivered_rows_can_be_purged(tmp_path: Path) -> None:
    """Schema 4 adds ``outbox.purged_at`` and the partial index outbox_unpurged: rows written
    before are kept (not purged) and indexed, so the first purge finds them."""
    db = sqlite_at_schema(tmp_path / "hub.db", 3)
    for statement, values in SCHEMA_3_ROWS:
        db.execute(statement.format(m="?"), values)
    db.close()
    store = open_store("sqlite:///hub.db", tmp_path)
    try:
        assert store.migrate() == MIGRATIONS[-1][0]
        purged_after_migration(store)
    finally:
        store.close()


@pytest.mark.parametrize("query, says", [
    ("lock_timeout=0", "lock_timeout"), ("lock_timeout=soon", "lock_timeout"), ("timeout=5", "unknown option 'timeout'"),
])
def test_sqlite_url_options_are_checked(tmp_path: Path, query: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        open_store(f"sqlite:///hub.db?{query}", tmp_path)
    with pytest.raises(ConfigError, match=f"hub.store: .*{says}"):  # `hub check` and start-up say it before any write
        write_config(tmp_path, store=f"sqlite:///hub.db?{query}")


def test_group_commit_shares_fsyncs_and_answers_only_when_durable(tmp_path: Path) -> None:
    import threading

    store = open_store("sqlite:///hub.db", tmp_path)
    commits: list[str] = []
    store._db.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)  # type: ignore[attr-defined]
    seen_by_others: list[bool] = []

    def writer(n: int) -> None:
        for i in range(25):
            store.accept(acceptance(f"w{n}-{i}"))
            # once accept returns, another connection (another process) sees the row: it is committed
            other = sqlite3.connect(tmp_path / "hub.db")
            seen_by_others.append(other.execute("SELECT 1 FROM messages WHERE message_id = ?", (f"w{n}-{i}",)).fetchone() is not None)
            other.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(seen_by_others) and len(seen_by_others) == 200
    assert len(commits) < 200  # concurrent writers shared transactions
    assert verify_chain(store.audit_entries()).ok
    store.close()


def test_a_failed_write_does_not_hold_the_database(tmp_path: Path) -> None:
    from hub.errors import TransitionError
    from hub.store import State

    store = open_store("sqlite:///hub.db", tmp_path)
    with pytest.raises(TransitionError):
        store.complete(12345, "nobody", State.DELIVERED, "x", 0.0, 0.0)
    # the batch it joined was ended: another process can write at once
    other = sqlite3.connect(tmp_path / "hub.db", timeout=0.2)
    other.execute("BEGIN IMMEDIATE")
    other.execute("COMMIT")
    other.close()
    assert store.accept(acceptance("after"))[0]
    store.close()


def test_a_schema_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    from hub.errors import StoreError

    db = sqlite3.connect(tmp_path / "hub.db")
    db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    db.execute("INSERT INTO schema_version (version) VALUES (?)", (MIGRATIONS[-1][0] + 1,))
    db.commit()
    db.close()
    with pytest.raises(StoreError, match=f"schema is at version {MIGRATIONS[-1][0] + 1}, newer than this hub knows"):
        open_store("sqlite:///hub.db", tmp_path)


def test_a_lease_reads_what_is_due_not_the_outbox_history(tmp_path: Path) -> None:
    """The work of a lease (SQLite VM steps) must not grow with the rows already delivered: the
    lease looks up due rows and expired leases as ranges of the outbox_due index."""
    from hub.store import State
    from hub.store.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path / "hub.db")
    store.migrate()

    def steps_of_one_lease(now: float) -> int:
        store.accept(acceptance(f"probe-{now}", at=now))
        steps = [0]

        def count() -> int:
            steps[0] += 1
            return 0

        store._db.set_progress_handler(count, 1)
        try:
            rows = store.lease("owner", "TH-ASW", 4, now, 60)
        finally:
            store._db.set_progress_handler(None, 1)
        assert rows
        for row in rows:
            store.complete(row.id, "owner", State.DELIVERED, "ok", now, now)
        return steps[0]

    now = 1_000_000.0
    small = steps_of_one_lease(now)
    for i in range(1500):  # history: delivered rows of the same destination
        store.accept(acceptance(f"old-{i}", at=now + 1))
    while rows := store.lease("owner", "TH-ASW", 100, now + 2, 60):
        for row in rows:
            store.complete(row.id, "owner", State.DELIVERED, "ok", now + 2, now + 2)
    large = steps_of_one_lease(now + 3)
    assert large < small * 2, f"a lease took {small} VM steps with an empty history and {large} after 1,500 deliveries"
    store.close()
