"""The PostgreSQL store: the same contract as SQLite, plus what only a shared server shows:
one audit chain under concurrent writers, LISTEN/NOTIFY, and recovery after a connection loss."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from hub.audit import AuditGap, verify_chain
from hub.errors import TryAgain
from hub.store import State, Store, open_store
from hub.store.postgres import PostgresStore

from .pg import Cluster, pg_cluster  # noqa: F401 (the fixture)
from .store_contract import SCHEMA_3_ROWS, StoreContract, accept_once_it_can, accepted_and_delivered, acceptance, purged_after_migration


@pytest.fixture
def pg_url(pg_cluster: Cluster) -> str:  # noqa: F811
    return pg_cluster.new_database()


@pytest.fixture
def store(pg_url: str, tmp_path: Path) -> Iterator[Store]:
    s = open_store(pg_url, tmp_path)
    yield s
    s.close()


class TestPostgresStore(StoreContract):
    pass


def test_open_store_selects_postgres_for_both_url_schemes(pg_url: str, tmp_path: Path) -> None:
    for url in (pg_url, "postgres://" + pg_url.split("://", 1)[1]):
        s = open_store(url, tmp_path)
        try:
            assert isinstance(s, PostgresStore) and s.schema_version() == s.migrate() >= 1
        finally:
            s.close()


def test_audit_chain_is_one_chain_under_concurrent_writers(pg_url: str, tmp_path: Path) -> None:
    """Several threads on two store objects (two nodes) accept and complete concurrently."""
    nodes = [open_store(pg_url, tmp_path), open_store(pg_url, tmp_path)]
    errors: list[BaseException] = []
    per_thread = 40

    def work(n: int) -> None:
        s = nodes[n % 2]
        try:
            for i in range(per_thread):
                s.accept(acceptance(f"t{n}-{i}"))
                for row in s.lease(f"node-{n}", "TH-ASW", 2, time.time() + 1, 30):
                    s.complete(row.id, f"node-{n}", State.DELIVERED, "ok", time.time(), time.time())
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    started = time.monotonic()
    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    try:
        assert not errors, errors
        report = verify_chain(nodes[0].audit_entries())
        delivered = nodes[1].counts().get(("TH-ASW", State.DELIVERED), 0)
        print(f"\n8 threads on 2 stores: {8 * per_thread} accepts, {delivered} completes in {elapsed:.2f}s; "
              f"chain {report.entries} entries ok={report.ok}")
        assert report.ok, report.problem
        assert report.entries == 8 * per_thread + delivered
    finally:
        for s in nodes:
            s.close()


def test_a_cut_at_the_end_of_the_audit_log_is_found_by_the_messages_and_attempts_left(pg_cluster: Cluster, pg_url: str,  # noqa: F811
                                                                                      store: Store) -> None:
    """As in SQLite: the chain of what is left still fits; the records left without entries show the cut."""
    accepted_and_delivered(store, 10)  # entries 2i+1 received and 2i+2 delivered of m-i
    pg_cluster.sql("DELETE FROM audit WHERE seq > 13", pg_url.rsplit("/", 1)[1])
    assert verify_chain(store.audit_entries()).ok
    gaps = store.audit_gaps()
    assert gaps == [AuditGap("message", 3, "m-7"), AuditGap("delivery attempt", 4, gaps[1].first)]
    assert gaps[1].first.startswith("message m-6, outbox row ") and gaps[1].first.endswith(" attempt 1")


def test_notify_wakes_a_waiting_store_of_another_node(pg_url: str, tmp_path: Path) -> None:
    waiting, accepting = open_store(pg_url, tmp_path), open_store(pg_url, tmp_path)
    wake = threading.Event()
    try:
        waiting.wait_for_work(0.3, wake)  # starts the listener
        wake.clear()
        woke: list[float] = []

        def waiter() -> None:
            started = time.monotonic()
            if waiting.wait_for_work(10, wake):
                woke.append(time.monotonic() - started)

        t = threading.Thread(target=waiter)
        t.start()
        time.sleep(0.2)
        accepting.accept(acceptance("wake-up"))
        t.join(10)
        assert woke and woke[0] < 2, "the waiting node was not woken by the NOTIFY"
        print(f"\nwoken {woke[0] * 1000:.0f} ms after starting to wait (accept at ~200 ms)")
    finally:
        waiting.close()
        accepting.close()


def test_connection_loss_answers_try_again_then_recovers(pg_cluster: Cluster, pg_url: str, tmp_path: Path) -> None:  # noqa: F811
    store = PostgresStore(pg_url, min_size=2, max_size=4, timeout=2.0)
    try:
        store.migrate()
        assert store.accept(acceptance("before"))[0]

        # 1. the server ends every connection: calls never report a false success, and work again at once
        assert pg_cluster.terminate_backends(pg_url) >= 1
        outcomes = []
        for i in range(3):
            try:
                outcomes.append(store.accept(acceptance(f"after-kill-{i}"))[0])
            except TryAgain:
                outcomes.append("try again")
        assert outcomes[-1] is True and outcomes.count("try again") <= 1, outcomes

        # 2. the server is down: TryAgain (quickly, not a hang) for writes and reads alike
        pg_cluster.stop("immediate")
        try:
            started = time.monotonic()
            with pytest.raises(TryAgain):
                store.accept(acceptance("while-down"))
            with pytest.raises(TryAgain):
                store.lease("a", "TH-ASW", 10, time.time() + 1, 30)
            assert time.monotonic() - started < 10
        finally:
            pg_cluster.start()

        # 3. the server is back: the same store object reconnects by itself; nothing was half-written
        assert accept_once_it_can(store, acceptance("while-down"), 15, 0.2, "the store did not reconnect")
        ids = {r.message_id for r in store.rows(limit=1000)}
        assert {"before", "while-down"} <= ids
        assert len(store.rows(limit=1000)) == 2 * len(ids)
        assert verify_chain(store.audit_entries()).ok
    finally:
        store.close()


def test_migrations_are_versioned_and_run_once(pg_url: str, tmp_path: Path) -> None:
    s = open_store(pg_url, tmp_path, migrate=False)
    try:
        assert isinstance(s, PostgresStore) and s.schema_version() == 0
        version = s.migrate()
        assert s.migrate() == version == s.schema_version()
        from hub.store.postgres import MIGRATIONS

        assert version == MIGRATIONS[-1][0]
    finally:
        s.close()


def test_hub_store_migrate_command_on_both_backends(pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hub.cli import main
    from hub.store.postgres import MIGRATIONS as PG
    from hub.store.sqlite import MIGRATIONS as SQLITE

    from .support import write_config

    for name, url, latest in (("pg", pg_url, PG[-1][0]), ("sqlite", None, SQLITE[-1][0])):
        config = write_config(tmp_path / name, store=url) if url else write_config(tmp_path / name)
        for _ in range(2):  # idempotent
            assert main(["store", "migrate", "--config", str(config)]) == 0
            assert capsys.readouterr().out.strip() == f"store schema at version {latest}"


def test_pool_options_ride_on_the_store_url(pg_url: str, tmp_path: Path) -> None:
    s = open_store(pg_url + "?pool_min=2&pool_max=3&pool_timeout=1.5&connect_timeout=2", tmp_path)
    try:
        assert isinstance(s, PostgresStore)
        assert (s._pool.min_size, s._pool.max_size, s._pool.timeout) == (2, 3, 1.5)
        assert "pool_" not in s.url and "connect_timeout" not in s._connect_kwargs  # libpq's own option stays in the URL
        assert s.accept(acceptance("pooled"))[0]
    finally:
        s.close()


def test_commits_are_synchronous_whatever_the_servers_default(pg_url: str, tmp_path: Path) -> None:
    """An acknowledgement must wait for its commit's flush: a database set to asynchronous commit
    (``synchronous_commit = off``, which can lose the last commits in a crash) is overridden on
    the hub's connections; a stronger setting named in the URL's options is kept."""
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as admin:
        database = admin.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
        admin.execute(f'ALTER DATABASE "{database}" SET synchronous_commit = off')
        assert psycopg.connect(pg_url).execute("SHOW synchronous_commit").fetchone()[0] == "off"  # type: ignore[index]
    cases = [(pg_url, "on"), (pg_url + "?options=-c%20synchronous_commit%3Dlocal", "on"),
             (pg_url + "?options=-c%20synchronous_commit%3Dremote_apply", "remote_apply")]
    for n, (url, expected) in enumerate(cases):
        s = open_store(url, tmp_path)
        try:
            assert isinstance(s, PostgresStore) and s.accept(acceptance(f"sync-{n}"))[0]
            with s._pool.connection() as conn:
                assert conn.execute("SHOW synchronous_commit").fetchone()[0] == expected  # type: ignore[index]
        finally:
            s.close()


@pytest.mark.parametrize(
    "query, says",
    [
        ("pool_maxx=4", "unknown option 'pool_maxx' in the store URL; did you mean 'pool_max'?"),
        ("pool_size=4", "unknown option 'pool_size'"),
        ("pool_max=lots", "pool_max (connections the pool may open) must be a positive whole number, not 'lots'"),
        ("pool_timeout=0", "pool_timeout"),
        ("pool_timeout=nan", "must be a positive number, not 'nan'"),
        ("pool_timeout=inf", "must be a positive number, not 'inf'"),
        ("pool_min=5&pool_max=2", "pool_max (2) must not be below pool_min (5)"),
        ("sslmode=require&colour=blue", 'not a valid PostgreSQL URL: invalid URI query parameter: "colour"'),
        ("connect_timeout=soon", "connect_timeout must be a whole number of seconds"),
    ],
)
def test_unknown_or_bad_store_url_options_are_config_errors(query: str, says: str, tmp_path: Path) -> None:
    from hub.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        open_store(f"postgresql://hub@127.0.0.1:1/hub?{query}", tmp_path)  # refused before any connection
    assert says in str(caught.value) and "hub.store" in str(caught.value)


def test_a_store_that_need_not_wait_answers_try_again_until_it_can_connect(tmp_path: Path) -> None:
    from benchmarks.pgcluster import _free_port

    started = time.monotonic()
    s = open_store(f"postgresql://hub@127.0.0.1:{_free_port()}/hub?pool_timeout=1", tmp_path, wait=False)
    try:
        assert time.monotonic() - started < 2
        with pytest.raises(TryAgain, match="not connected yet"):
            s.accept(acceptance("too-early"))
        with pytest.raises(TryAgain):
            s.counts()
    finally:
        s.close()


def test_hub_toml_with_a_bad_store_option_fails_to_load_naming_the_file(tmp_path: Path) -> None:
    from hub.errors import ConfigError

    from .support import write_config

    with pytest.raises(ConfigError) as caught:
        write_config(tmp_path, store="postgresql://hub@127.0.0.1:1/hub?pool_mx=3")
    assert str(caught.value).startswith(f"{tmp_path / 'hub.toml'}: hub.store: unknown option 'pool_mx'")


def _newer_schema(cluster: Cluster, url: str) -> None:
    """What a newer sw-hub would leave: a schema version this code has no migration for."""
    from hub.store.postgres import MIGRATIONS

    database = url.rsplit("/", 1)[1]
    cluster.sql("CREATE TABLE schema_version (version INTEGER NOT NULL)", database)
    cluster.sql(f"INSERT INTO schema_version (version) VALUES ({MIGRATIONS[-1][0] + 97})", database)


def test_a_schema_newer_than_the_code_is_refused_not_waited_for(pg_cluster: Cluster, pg_url: str, tmp_path: Path) -> None:  # noqa: F811
    from hub.errors import StoreError
    from hub.store.postgres import MIGRATIONS

    _newer_schema(pg_cluster, pg_url)
    says = f"the database schema is at version {MIGRATIONS[-1][0] + 97}, newer than this hub knows (version {MIGRATIONS[-1][0]})"
    with pytest.raises(StoreError, match=re.escape(says)):
        open_store(pg_url, tmp_path)  # `hub store migrate`, `hub check`
    started = time.monotonic()
    with pytest.raises(StoreError, match=re.escape(says)):
        open_store(pg_url + "?pool_timeout=1", tmp_path, wait=False)  # `hub serve`: a fault for good, not "try again"
    assert time.monotonic() - started < 5


def test_no_permission_to_create_the_schema_is_refused_not_waited_for(pg_cluster: Cluster, pg_url: str, tmp_path: Path) -> None:  # noqa: F811
    from hub.errors import StoreError

    database = pg_url.rsplit("/", 1)[1]
    pg_cluster.sql("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'hub_no_create') "
                   "THEN CREATE ROLE hub_no_create LOGIN; END IF; END $$")
    pg_cluster.sql("REVOKE CREATE ON SCHEMA public FROM PUBLIC", database)  # PostgreSQL 15's default, made explicit
    url = pg_url.replace("postgres@", "hub_no_create@") + "?pool_timeout=1"
    with pytest.raises(StoreError, match="permission denied for schema public"):
        open_store(url, tmp_path, wait=False)


def test_a_permanent_fault_found_later_is_reported_once_and_not_retried(pg_cluster: Cluster, pg_url: str, tmp_path: Path) -> None:  # noqa: F811
    from hub.errors import StoreError

    s = PostgresStore(pg_url, timeout=1, wait=False)  # not migrating on connect: ready at once
    try:
        _newer_schema(pg_cluster, pg_url)
        seen: list[StoreError] = []
        s.when_failed(seen.append)
        assert not s._migrate_now() and len(seen) == 1 and "newer than this hub knows" in str(seen[0])
        late: list[StoreError] = []
        s.when_failed(late.append)  # registered after the fault: told at once
        assert late == seen
    finally:
        s.close()


def test_leases_expire_by_the_servers_clock_not_a_nodes(store: Store) -> None:
    """Nodes on other hosts: one whose clock is an hour ahead must not take over a live lease
    (it would deliver the row a second time), and a lease it takes lasts by the server's clock."""
    now = time.time()
    store.accept(acceptance(at=now, destinations=("TH-ASW",)))
    (row,) = store.lease("node-a", "TH-ASW", 1, now, 30)
    assert store.lease("node-ahead", "TH-ASW", 1, now + 3600, 30) == []
    assert abs(row.lease_until - (now + 30)) < 1  # type: ignore[operator] (the caller's own clock)
    stored = store.get(row.id)
    assert stored is not None and stored.lease_owner == "node-a" and abs(stored.lease_until - (time.time() + 30)) < 2  # type: ignore[operator]
    assert store.complete(row.id, "node-a", State.DELIVERED, "ok", now, now + 1).state is State.DELIVERED


def test_a_store_of_schema_3_is_migrated_and_its_delivered_rows_can_be_purged(pg_url: str, tmp_path: Path) -> None:
    """Schema 4 adds ``outbox.purged_at`` and the partial index outbox_unpurged: rows written
    before are kept (not purged) and indexed, so the first purge finds them."""
    import psycopg

    from hub.store.postgres import MIGRATIONS

    with psycopg.connect(pg_url) as conn:  # the schema of the release before retention, with a delivered row
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for version, script in MIGRATIONS[:3]:
            for statement in filter(str.strip, script.split(";")):
                conn.execute(statement.encode())
            conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
        for statement, values in SCHEMA_3_ROWS:
            conn.execute(statement.format(m="%s"), values)  # type: ignore[arg-type]
    store = open_store(pg_url, tmp_path)
    try:
        assert isinstance(store, PostgresStore) and store.schema_version() == MIGRATIONS[-1][0]
        purged_after_migration(store)
    finally:
        store.close()
