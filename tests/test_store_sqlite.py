from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Iterator

import pytest

from hub.audit import verify_chain
from hub.store import Store, open_store

from .store_contract import StoreContract, acceptance


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


def test_absolute_sqlite_url(tmp_path: Path) -> None:
    s = open_store(f"sqlite:///{tmp_path}/abs.db", Path("/nonexistent"))
    s.close()
    assert (tmp_path / "abs.db").exists()


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
    from hub.store.sqlite import MIGRATIONS

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
