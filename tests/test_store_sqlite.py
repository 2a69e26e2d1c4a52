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
