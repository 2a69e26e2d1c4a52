"""The scale-out store: one PostgreSQL database shared by any number of hub nodes (psycopg 3).

- Every method is one transaction on a pooled connection (``psycopg_pool``): an explicit one where
  it writes more than one statement, else the statement alone (autocommit: no BEGIN and COMMIT
  round trips for a read or a single-statement lease). A call that finds its connection lost raises
  ``TryAgain`` and has the pool check its idle connections, so the next call runs on a live (new)
  connection: the store reconnects by itself.
- Work is leased with ``FOR UPDATE SKIP LOCKED``: two nodes never take the same row, and a row
  whose lease expired (its node died) is taken over.
- Duplicates: ``INSERT ... ON CONFLICT DO NOTHING`` on the (sender, message id) key.
- The audit log is ONE hash chain across all nodes: an append locks the one-row ``audit_head``
  table ``FOR UPDATE``, so appends are serialized; each transaction appends last, just before it
  commits, to hold that lock as briefly as possible (and never while waiting for another lock).
- Accepted, released and resent rows ``NOTIFY hub_work``; ``wait_for_work`` wakes an idle
  dispatcher on it (one listening connection per store, on a background thread). A burst of
  notifications wakes the dispatcher once (``_COALESCE``), not once per accepted message on every node.
- Times are epoch seconds as ``double precision``, like SQLite's REAL. Leases are written and
  judged expired by the server's clock (``SERVER_NOW``), so nodes on hosts whose clocks disagree
  never take over each other's live leases; a node is handed its lease's end in its own clock.
- Pool settings ride on the store URL (``parse_url``): ``pool_min``, ``pool_max``, ``pool_timeout``;
  libpq's own ``connect_timeout`` (default 5 s) bounds each connection attempt.
- ``wait=False`` (``hub serve``): the store is returned even when the server cannot be reached; it
  answers ``TryAgain`` until it has connected and migrated its schema, which it does by itself.
  Only transient faults (``TryAgain``: the server unreachable, a lost connection) are waited out: a
  migration that can never succeed (``StoreError``: no permission to create the tables, a schema
  newer than this code) raises at once if found while opening, and otherwise ends the waiting and
  is reported to ``when_failed`` (``hub serve`` exits on it).

psycopg errors are mapped at this boundary: a lost connection, an unreachable server, a pool
timeout, a deadlock or a serialization failure -> ``TryAgain`` (nothing was claimed as done);
any other database error -> ``StoreError``.
"""

from __future__ import annotations

import difflib
import logging
import math
import threading
import time
import uuid
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from typing import Any, Callable, Iterator, Sequence
from urllib.parse import unquote

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from ..audit import GENESIS, AuditEntry, AuditEvent, AuditGap, chain
from ..errors import ConfigError, StoreError, TransitionError, TryAgain
from .base import (
    Accepted,
    Acceptance,
    Attempt,
    MessageRecord,
    Original,
    OutboxItem,
    OutboxRow,
    PurgeReport,
    State,
    Store,
    Trace,
    WriteFault,
    check_outcome,
    check_version,
    held_by,
)
from .sql import (
    LAST_NUMBER,
    MESSAGE_COLUMNS,
    OUTCOME_EVENTS,
    ROW_COLUMNS,
    attempts_after_resend,
    base_after_resend,
    message_record,
    outbox_row,
    purge_rows,
    resend_event,
    resendable_row,
    row_filter,
    row_order,
    unaudited,
)

log = logging.getLogger("hub.store.postgres")

CHANNEL = "hub_work"
# A lost connection is re-made with the pool's backoff (1 s, doubling); a round of attempts ends
# after this many seconds and the next call starts a new one, so a long outage never leaves the
# pool waiting minutes between attempts once the server is back.
_RECONNECT_ROUND = 10.0
# Notifications arriving within this many seconds wake the waiting dispatchers once: under load every
# node would otherwise run one (mostly empty, SKIP LOCKED) lease per message accepted on any node.
# The node that accepted a message wakes its own dispatcher at once (``Pipeline.on_accept``).
_COALESCE = 0.02
# the server's clock in epoch seconds: leases are set and expire by it, one clock for every node
SERVER_NOW = "extract(epoch from clock_timestamp())::double precision"
_MIGRATION_LOCK = 0x6875625F6D6967  # pg_advisory_xact_lock key: only one node migrates at a time

MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        f"""
        CREATE TABLE messages (
            sender TEXT NOT NULL,
            message_id TEXT NOT NULL,
            received_at DOUBLE PRECISION NOT NULL,
            document_type TEXT NOT NULL,
            function TEXT NOT NULL,
            route TEXT NOT NULL,
            receipt BYTEA NOT NULL,
            PRIMARY KEY (sender, message_id)
        );
        CREATE INDEX messages_message ON messages (message_id);
        CREATE TABLE outbox (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            message_id TEXT NOT NULL,
            sender TEXT NOT NULL,
            destination TEXT NOT NULL,
            route TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('pending', 'leased', 'delivered', 'dead')),
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at DOUBLE PRECISION NOT NULL,
            lease_owner TEXT,
            lease_until DOUBLE PRECISION,
            last_error TEXT,
            created_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL,
            payload BYTEA NOT NULL
        );
        CREATE INDEX outbox_pending ON outbox (destination, next_attempt_at, id) WHERE state = 'pending';
        CREATE INDEX outbox_leased ON outbox (destination, lease_until) WHERE state = 'leased';
        CREATE INDEX outbox_state ON outbox (state, destination);
        CREATE INDEX outbox_message ON outbox (message_id);
        CREATE TABLE attempts (
            row_id BIGINT NOT NULL REFERENCES outbox (id),
            number INTEGER NOT NULL,
            owner TEXT NOT NULL,
            started_at DOUBLE PRECISION NOT NULL,
            finished_at DOUBLE PRECISION NOT NULL,
            outcome TEXT NOT NULL,
            detail TEXT NOT NULL,
            PRIMARY KEY (row_id, number)
        );
        CREATE TABLE audit (
            seq BIGINT PRIMARY KEY,
            at DOUBLE PRECISION NOT NULL,
            message_id TEXT,
            actor TEXT NOT NULL,
            event TEXT NOT NULL,
            detail TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL
        );
        CREATE INDEX audit_message ON audit (message_id);
        CREATE TABLE audit_head (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            seq BIGINT NOT NULL,
            hash TEXT NOT NULL
        );
        INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '{GENESIS}');
        """,
    ),
    (
        2,
        """
        ALTER TABLE messages ADD COLUMN reference TEXT;
        ALTER TABLE messages ADD COLUMN pre_reference TEXT;
        ALTER TABLE messages ADD COLUMN conversation TEXT;
        UPDATE messages SET conversation = message_id WHERE conversation IS NULL;
        CREATE INDEX messages_reference ON messages (reference);
        CREATE INDEX messages_conversation ON messages (conversation, received_at);
        """,
    ),
    (
        3,
        """
        SET LOCAL lock_timeout = '5s';
        ALTER TABLE messages ADD COLUMN content_digest BYTEA;
        """,
    ),
    (
        4,
        # retention (Store.purge): the index holds only delivered rows whose payload is still kept
        """
        SET LOCAL lock_timeout = '5s';
        ALTER TABLE outbox ADD COLUMN purged_at DOUBLE PRECISION;
        CREATE INDEX outbox_unpurged ON outbox (id) WHERE state = 'delivered' AND purged_at IS NULL;
        """,
    ),
    (
        5,
        # attempt numbers that go on across resends (OutboxRow.attempt_base); a constant default
        # is not written into the rows there are (no table rewrite), and nodes of the release
        # before, which do not write the column, keep working beside this one
        """
        SET LOCAL lock_timeout = '5s';
        ALTER TABLE outbox ADD COLUMN attempt_base INTEGER NOT NULL DEFAULT 0;
        """,
    ),
)

_AUDIT_COLUMNS = "seq, at, message_id, actor, event, detail, prev_hash, hash"


def _synchronous_commits(conn: psycopg.Connection) -> None:
    """An acknowledgement waits for its commit's flush: a connection whose server, database, role
    or URL options say ``synchronous_commit`` = off or local (commits that a crash of the server
    can lose) is set to on; on, remote_write and remote_apply are kept. Set per session, not as a
    startup option, which connection poolers such as PgBouncer refuse."""
    level = conn.execute("SHOW synchronous_commit").fetchone()
    if level is not None and level[0] in ("off", "local"):
        conn.execute("SET synchronous_commit = on")


# the hub's own options in the store URL's query -> PostgresStore keyword, kind, what it means
POOL_OPTIONS = {
    "pool_min": ("min_size", int, "connections the pool keeps open"),
    "pool_max": ("max_size", int, "connections the pool may open"),
    "pool_timeout": ("timeout", float, "seconds a call waits for a free connection before answering 'try again'"),
}


def parse_url(url: str, file: str = "hub.toml") -> tuple[str, dict[str, Any]]:
    """Splits the hub's pool options off a ``postgresql://`` URL: (URL for libpq, PostgresStore keywords).

    ``postgresql://hub@db1/hub?pool_min=2&pool_max=10&pool_timeout=5&connect_timeout=3``. Other
    query parameters must be libpq's own (``sslmode``, ``connect_timeout``, ...); anything else is a
    ``ConfigError`` here rather than a connection failure later."""
    base, _, query = url.partition("?")
    kept: list[str] = []
    options: dict[str, Any] = {}
    for part in filter(None, query.split("&")):
        raw_key, _, raw_value = part.partition("=")
        key, value = unquote(raw_key), unquote(raw_value)
        if not key.startswith("pool_"):
            kept.append(part)
            continue
        if key not in POOL_OPTIONS:
            hint = difflib.get_close_matches(key, list(POOL_OPTIONS), n=1)
            raise ConfigError(file, "hub.store", f"unknown option {key!r} in the store URL"
                              + (f"; did you mean {hint[0]!r}?" if hint else f"; the pool options are {', '.join(POOL_OPTIONS)}"))
        name, kind, meaning = POOL_OPTIONS[key]
        try:
            number = kind(value)
        except ValueError:
            number = None
        if number is None or not 0 < number < math.inf:  # nan and inf too: a pool wait that never ends
            raise ConfigError(file, "hub.store", f"{key} ({meaning}) must be a positive {'whole ' if kind is int else ''}number, not {value!r}")
        options[name] = number
    if options.get("max_size", options.get("min_size", 0)) < options.get("min_size", 0):
        raise ConfigError(file, "hub.store", f"pool_max ({options['max_size']}) must not be below pool_min ({options['min_size']})")
    if "min_size" in options and "max_size" not in options:
        options["max_size"] = max(options["min_size"], 16)
    conninfo = base + ("?" + "&".join(kept) if kept else "")
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.Error as exc:
        raise ConfigError(file, "hub.store", f"not a valid PostgreSQL URL: {str(exc).strip()}; the hub's own options are {', '.join(POOL_OPTIONS)}") from None
    if not str(params.get("connect_timeout", "0")).isdigit():
        raise ConfigError(file, "hub.store", f"connect_timeout must be a whole number of seconds, not {params['connect_timeout']!r}")
    return conninfo, options


def _transient(exc: BaseException) -> bool:
    """Errors after which the same call may well succeed: the sender or dispatcher retries. A
    read-only transaction (25006: connected to a standby, e.g. during a failover) is one of them."""
    return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)) or (
        isinstance(exc, psycopg.Error) and ((exc.sqlstate or "").startswith(("08", "40", "53", "57")) or exc.sqlstate == "25006")
    )


# SQLSTATEs that say the database itself cannot take writes now (``WriteFault.kind``)
_FAULT_STATES = {"53100": "full", "25006": "read-only", "58030": "io"}
_FAULT_SAID = {"full": "its disk is full", "read-only": "it takes no writes (a standby, or a read-only setting)",
               "io": "its disk failed to read or write (an I/O error)"}


def _unreachable(reason: str) -> bool:
    """libpq's sentence for a server it could not reach (refused, no such socket, timed out, a host
    name it cannot resolve), as opposed to one it refused to try (a bad option) or a server that
    answered no (a password, a database that does not exist)."""
    if "timeout expired" in reason or "could not translate host name" in reason:
        return True
    return "connection to server" in reason and any(
        why in reason for why in ("Connection refused", "No such file or directory", "No route to host", "Network is unreachable"))


class PostgresStore(Store):
    def __init__(
        self,
        url: str,
        min_size: int = 1,
        max_size: int = 16,
        timeout: float = 5.0,
        connect_timeout: int = 5,
        *,
        wait: bool = True,
        migrate_on_connect: bool = False,
    ) -> None:
        """``wait``: connect now, or raise ``StoreError``. ``wait=False``: return at once; calls answer
        ``TryAgain`` until the pool connects (by itself) and, with ``migrate_on_connect``, until the
        schema has been migrated."""
        self.url = url
        self._timeout = timeout
        given = conninfo_to_dict(url)
        self._connect_kwargs: dict[str, Any] = {"application_name": "sw-hub"}
        if "connect_timeout" not in given:
            self._connect_kwargs["connect_timeout"] = connect_timeout
        self._pool = ConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            kwargs={**self._connect_kwargs, "autocommit": True},  # transactions are explicit (_tx)
            configure=_synchronous_commits,
            reconnect_timeout=_RECONNECT_ROUND,
            name="sw-hub",
            open=False,
        )
        # LISTEN/NOTIFY: one listening connection, on a thread started by the first wait_for_work.
        self._waiters: set[threading.Event] = set()
        self._waiters_lock = threading.Lock()
        self._listener: threading.Thread | None = None
        self._closed = threading.Event()
        self._origin = uuid.uuid4().hex  # the payload of this store's NOTIFYs after an accept
        self._ready = threading.Event()  # set once calls may run: connected (and migrated, if asked)
        self._starting: threading.Thread | None = None
        self._warned = 0.0
        self.failure: StoreError | None = None  # a migration that can never succeed (wait=False)
        self._on_failure: list[Callable[[StoreError], None]] = []
        self._failure_lock = threading.Lock()
        if wait:
            self._first_connection()
            try:
                self._pool.open(wait=True, timeout=timeout)
            except psycopg.Error as exc:
                self._pool.close()
                raise StoreError(f"cannot open the PostgreSQL store {_safe(url)}: {exc}") from exc
            self._ready.set()
        else:
            self._pool.open(wait=False)
            if not migrate_on_connect:
                self._ready.set()
            elif not (self._reachable() and self._migrate_now(raise_permanent=True)):
                # down at start: run all the same, answering "try again", and migrate once it is up
                self._starting = threading.Thread(target=self._migrate_when_reachable, name="store-start", daemon=True)
                self._starting.start()

    def _first_connection(self) -> None:
        """One connection made by hand before the pool opens (``wait=True``: the one-shot commands),
        so that a server that cannot be reached, or a URL libpq refuses (a port that is not one, an
        unknown sslmode), is said in one line with libpq's own reason, at once, instead of the pool
        logging each of its attempts and then saying only that it did not fill in time. A server that
        cannot be reached is ``TryAgain`` (it may be back soon: `hub send` exits 75); the rest
        ``StoreError``."""
        try:
            psycopg.connect(self.url, **self._connect_kwargs).close()
        except psycopg.Error as exc:
            self._pool.close()
            reason = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
            said = f"cannot open the PostgreSQL store {_safe(self.url) or '(libpq defaults)'}: {reason}"
            if _unreachable(reason):
                raise TryAgain(said + "; try again once it is up") from exc
            raise StoreError(said) from exc

    def _reachable(self) -> bool:
        try:
            psycopg.connect(self.url, **self._connect_kwargs).close()
            return True
        except psycopg.Error as exc:
            log.warning("PostgreSQL store %s not reachable (%s); answering 'try again' until it is", _safe(self.url), " ".join(str(exc).split()))
            return False

    def _migrate_now(self, raise_permanent: bool = False) -> bool:
        """True once migrated; False after a transient fault (try again later). A permanent fault
        (``StoreError``) raises with ``raise_permanent`` (while opening: the pool is closed first),
        else it is recorded and reported to ``when_failed``."""
        try:
            self.migrate()
        except TryAgain as exc:
            if not self._closed.is_set() and time.monotonic() - self._warned > 60:  # once a minute while it lasts
                self._warned = time.monotonic()
                log.warning("PostgreSQL store %s not ready yet (the schema is migrated once it can be): %s", _safe(self.url), exc)
            return False
        except StoreError as exc:
            failure = StoreError(f"the PostgreSQL store {_safe(self.url)} cannot be used: {exc}")
            if raise_permanent:
                self._pool.close()
                raise failure from exc
            self._fail(failure)
            return False
        self._ready.set()
        return True

    def _migrate_when_reachable(self) -> None:
        while not self._closed.wait(0.5):
            if self._migrate_now():
                log.info("PostgreSQL store %s reachable, schema at version %s", _safe(self.url), self.schema_version())
                return
            if self.failure is not None:
                return

    def _fail(self, failure: StoreError) -> None:
        log.error("%s; it will not be tried again", failure)
        with self._failure_lock:
            self.failure = failure
            callbacks = list(self._on_failure)
        for callback in callbacks:
            callback(failure)

    def when_failed(self, callback: Callable[[StoreError], None]) -> None:
        with self._failure_lock:
            failure = self.failure
            if failure is None:
                self._on_failure.append(callback)
        if failure is not None:
            callback(failure)

    # -- plumbing ------------------------------------------------------------------------------

    @contextmanager
    def _tx(self, *, starting: bool = False, transaction: bool = True) -> Iterator[psycopg.Cursor]:
        """One transaction on a pooled connection: committed when the block ends, rolled back if it raises.
        ``transaction=False``: each statement commits alone (reads, and writes of a single statement).
        Until the store is ready (``wait=False``), only ``starting`` transactions (the migration) run."""
        if not (starting or self._ready.is_set()):
            raise TryAgain(f"the store is not connected yet (PostgreSQL {_safe(self.url)})")
        conn: psycopg.Connection | None = None
        try:
            with self._pool.connection() as conn, conn.transaction() if transaction else nullcontext(), conn.cursor() as cur:
                yield cur
        except (TransitionError, TryAgain):
            raise
        except psycopg.Error as exc:
            if conn is not None and conn.broken:
                # The server went away (restart, failover, terminated backend): the pool drops this
                # connection; check the idle ones now too, so the next call gets a live connection.
                self._check_pool()
            self._note_write_error(exc)
            if _transient(exc):
                raise TryAgain(f"the store is unavailable: {type(exc).__name__}: {exc}".strip()) from exc
            raise StoreError(f"store operation failed: {type(exc).__name__}: {exc}") from exc

    def _note_write_error(self, exc: psycopg.Error) -> None:
        """Kept for ``write_fault`` (``GET /health``): a call the server refused for a reason of its
        own, a full disk (53100), a read-only transaction (25006: a standby, e.g. during a failover)
        or an I/O error (58030). Costs nothing on a call that succeeds. Each node judges by its own
        calls; the server's disk cannot be looked at from here, so a fault is reported for
        ``FAULT_HOLD`` seconds after it last happened, or until a message is recorded."""
        kind = _FAULT_STATES.get(exc.sqlstate or "")
        if kind is not None:
            said = " ".join(str(exc).split())
            self._note_fault(WriteFault(kind, f"the PostgreSQL store {_safe(self.url)}: {_FAULT_SAID[kind]}: {said}", time.time()))

    def _check_pool(self) -> None:
        try:
            self._pool.check()
        except Exception as exc:  # noqa: BLE001 (best effort: the pool replaces bad connections anyway)
            log.debug("pool check failed: %s", exc)

    def _append_audit(self, cur: psycopg.Cursor, events: tuple[AuditEvent, ...] | list[AuditEvent], at: float) -> None:
        """Appends to the single chain. Call it LAST in a transaction: it holds the chain's head until commit."""
        if not events:
            return
        seq, prev = cur.execute("SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE").fetchone()  # type: ignore[misc]
        values = chain(prev, seq, at, events)
        rows = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s)"] * len(values))
        cur.execute(  # one round trip while the head is locked: the entries and the new head together
            f"WITH added AS (INSERT INTO audit ({_AUDIT_COLUMNS}) VALUES {rows}) "
            "UPDATE audit_head SET seq = %s, hash = %s WHERE id = 1",
            [v for entry in values for v in entry] + [values[-1][0], values[-1][7]],
        )

    # -- interface ------------------------------------------------------------------------------

    def migrate(self) -> int:
        with self._tx(starting=True) as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            cur.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            current = cur.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0  # type: ignore[index]
            check_version(current, MIGRATIONS)
            for version, script in MIGRATIONS:
                if version > current:
                    for statement in script.split(";"):
                        if statement.strip():
                            cur.execute(statement.encode())
                    cur.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
                    current = version
        return current

    def schema_version(self) -> int:
        with self._tx(transaction=False) as cur:
            if cur.execute("SELECT to_regclass('schema_version')").fetchone()[0] is None:  # type: ignore[index]
                return 0
            return cur.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]  # type: ignore[index]

    def accept(self, acceptance: Acceptance) -> Accepted:
        a = acceptance
        hold = a.held
        held_items, pending = hold.split(a.items) if hold is not None else ([], list(a.items))
        held: list[OutboxRow] = []
        with self._tx() as cur:
            cur.execute(
                f"INSERT INTO messages ({MESSAGE_COLUMNS}, content_digest) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (sender, message_id) DO NOTHING",
                (a.sender, a.message_id, a.received_at, a.document_type, a.function, a.route, a.receipt,
                 a.reference, a.pre_reference, a.conversation or a.message_id, a.digest),
            )
            if cur.rowcount == 0:
                original = cur.execute(
                    "SELECT receipt FROM messages WHERE sender = %s AND message_id = %s", (a.sender, a.message_id)
                ).fetchone()
                if original is None:  # cannot happen under READ COMMITTED; never claim a receipt we lack
                    raise TryAgain(f"message {a.message_id} from {a.sender} is being recorded concurrently")
                return Accepted(False, bytes(original[0]))
            if pending:  # the rows and the NOTIFY (sent at commit, naming this store as its origin) in one round trip
                rows = ", ".join(["(%s, %s, %s, %s, 'pending', 0, %s, %s, %s, %s)"] * len(pending))
                cur.execute(
                    "WITH added AS (INSERT INTO outbox (message_id, sender, destination, route, state, attempts, "
                    f"next_attempt_at, created_at, updated_at, payload) VALUES {rows}) SELECT pg_notify('{CHANNEL}', %s)",
                    [v for i in pending for v in (a.message_id, a.sender, i.destination, i.route, a.received_at, a.received_at,
                                                  a.received_at, i.payload)] + [self._origin],
                )
            if held_items and hold is not None:  # leased to this node's dispatcher: no other node is told
                until = time.time() + hold.lease_for  # from the write: waiting for a connection does not shorten it
                # stored in the server's time (``SERVER_NOW``: every node judges leases by one clock)
                rows = ", ".join([f"(%s, %s, %s, %s, 'leased', 1, %s, %s, {SERVER_NOW} + %s, %s, %s, %s)"] * len(held_items))
                ids = dict(cur.execute(
                    "INSERT INTO outbox (message_id, sender, destination, route, state, attempts, next_attempt_at, lease_owner, "
                    f"lease_until, created_at, updated_at, payload) VALUES {rows} RETURNING destination, id",
                    [v for i in held_items for v in (a.message_id, a.sender, i.destination, i.route, a.received_at, hold.owner,
                                                     hold.lease_for, a.received_at, a.received_at, i.payload)],
                ).fetchall())
                held = [hold.row(ids[i.destination], a, i, until) for i in held_items]
            self._append_audit(cur, a.audit, a.received_at)
        self._note_recorded()
        return Accepted(True, a.receipt, tuple(held))

    def original(self, sender: str, message_id: str) -> Original | None:
        with self._tx(transaction=False) as cur:
            row = cur.execute(
                "SELECT receipt, content_digest, received_at FROM messages WHERE sender = %s AND message_id = %s", (sender, message_id)
            ).fetchone()
        return Original(bytes(row[0]), bytes(row[1]) if row[1] is not None else None, row[2]) if row else None

    def used_by_another(self, sender: str, message_id: str, routes: Sequence[str]) -> bool:
        with self._tx(transaction=False) as cur:
            row = cur.execute(
                "SELECT 1 FROM messages WHERE message_id = %s AND sender <> %s AND route = ANY(%s) LIMIT 1", (message_id, sender, list(routes))
            ).fetchone()
        return row is not None

    def record(self, event: AuditEvent) -> None:
        with self._tx() as cur:
            self._append_audit(cur, (event,), time.time())

    def lease(self, owner: str, destination: str, limit: int, now: float, lease_for: float) -> list[OutboxRow]:
        if limit <= 0:
            return []
        with self._tx(transaction=False) as cur:
            # Due rows and expired leases are looked up apart, each by a plain scan of its own partial
            # index in index order: such scans mark the index entries of rows gone from the index's
            # state as dead and skip them next time (one scan of both, a bitmap scan, would walk every
            # row that has left 'pending' since the last vacuum, on every lease).
            rows = cur.execute(
                "WITH pending AS (SELECT id, next_attempt_at FROM outbox WHERE destination = %s AND state = 'pending' "
                "AND next_attempt_at <= %s ORDER BY next_attempt_at, id LIMIT %s FOR UPDATE SKIP LOCKED), "
                "expired AS (SELECT id, next_attempt_at FROM outbox WHERE destination = %s AND state = 'leased' "
                f"AND lease_until < {SERVER_NOW} ORDER BY lease_until LIMIT %s FOR UPDATE SKIP LOCKED), "
                "due AS (SELECT id FROM (SELECT * FROM pending UNION ALL SELECT * FROM expired) d ORDER BY next_attempt_at, id LIMIT %s) "
                f"UPDATE outbox o SET state = 'leased', lease_owner = %s, lease_until = {SERVER_NOW} + %s, attempts = o.attempts + 1, "
                f"updated_at = %s FROM due WHERE o.id = due.id RETURNING {', '.join('o.' + c for c in ROW_COLUMNS.split(', '))}",
                (destination, now, limit, destination, limit, limit, owner, lease_for, now),
            ).fetchall()
        # the caller times its deliveries by its own clock: the lease it holds, in that clock
        return sorted((replace(outbox_row(r), lease_until=now + lease_for) for r in rows), key=lambda r: (r.next_attempt_at, r.id))

    def complete(
        self,
        row_id: int,
        owner: str,
        outcome: State,
        detail: str,
        started_at: float,
        now: float,
        next_attempt_at: float | None = None,
        enqueue: Sequence[OutboxItem] = (),
        attempt: int | None = None,
    ) -> OutboxRow:
        check_outcome(outcome)
        with self._tx() as cur:
            error = None if outcome is State.DELIVERED else detail
            # one statement: the row changes only while this owner holds its lease, and the attempt is
            # recorded with it (a concurrent takeover is seen: READ COMMITTED re-checks the WHERE)
            updated = cur.execute(
                "WITH done AS (UPDATE outbox SET state = %s, lease_owner = NULL, lease_until = NULL, "
                "last_error = COALESCE(%s, last_error), next_attempt_at = COALESCE(%s, next_attempt_at), updated_at = %s "
                f"WHERE id = %s AND state = 'leased' AND lease_owner = %s AND attempts = COALESCE(%s::integer, attempts) RETURNING {ROW_COLUMNS}), "
                # numbered by the row's count under this lease (``Attempt``); past the last number if
                # that is ahead (attempts numbered one after the other before schema 5, or by such a node)
                "attempt AS (INSERT INTO attempts (row_id, number, owner, started_at, finished_at, outcome, detail) "
                "SELECT id, GREATEST(attempt_base + attempts, (SELECT COALESCE(MAX(number), 0) + 1 FROM attempts WHERE row_id = %s)), "
                "%s, %s, %s, %s, %s FROM done) "
                "SELECT * FROM done",
                (outcome.value, error, next_attempt_at, now, row_id, owner, attempt, row_id, owner, started_at, now, outcome.value, detail),
            ).fetchone()
            if updated is None:  # not ours (lease lost, or no such row): say which; nothing was written
                current = cur.execute(f"SELECT {ROW_COLUMNS} FROM outbox WHERE id = %s", (row_id,)).fetchone()
                held_by(outbox_row(current) if current else None, row_id, owner, attempt)
                raise TransitionError(f"outbox row {row_id} changed while {owner} completed it")
            row = outbox_row(updated)
            if enqueue:
                cur.executemany(
                    "INSERT INTO outbox (message_id, sender, destination, route, state, attempts, next_attempt_at, "
                    "created_at, updated_at, payload) VALUES (%s, %s, %s, %s, 'pending', 0, %s, %s, %s, %s)",
                    [(row.message_id, row.sender, i.destination, i.route, now, now, now, i.payload) for i in enqueue],
                )
                cur.execute(f"NOTIFY {CHANNEL}")
            event = OUTCOME_EVENTS[outcome]
            self._append_audit(cur, (AuditEvent(row.message_id, owner, event, f"{row.destination}: {detail}"),), now)
        return row

    def release(self, owner: str, now: float) -> int:
        with self._tx() as cur:
            cur.execute(
                "UPDATE outbox SET state = 'pending', lease_owner = NULL, lease_until = NULL, attempts = attempts - 1, "
                "updated_at = %s WHERE state = 'leased' AND lease_owner = %s",
                (now, owner),
            )
            count = cur.rowcount
            if count:
                cur.execute(f"NOTIFY {CHANNEL}")
        return count

    def give_back(self, row_id: int, owner: str, attempt: int, now: float) -> bool:
        with self._tx() as cur:
            cur.execute(
                "UPDATE outbox SET state = 'pending', lease_owner = NULL, lease_until = NULL, attempts = attempts - 1, "
                "updated_at = %s WHERE id = %s AND state = 'leased' AND lease_owner = %s AND attempts = %s",
                (now, row_id, owner, attempt),
            )
            given = cur.rowcount == 1
            if given:
                cur.execute(f"NOTIFY {CHANNEL}")
        return given

    def uncount(self, row_id: int, owner: str, attempt: int) -> bool:
        with self._tx(transaction=False) as cur:
            cur.execute(
                "UPDATE outbox SET attempts = attempts - 1 WHERE id = %s AND state = 'leased' AND lease_owner = %s AND attempts = %s",
                (row_id, owner, attempt),
            )
            return cur.rowcount == 1

    def resend(self, row_id: int, actor: str, now: float, force: bool = False) -> OutboxRow:
        with self._tx() as cur:
            current = cur.execute(f"SELECT {ROW_COLUMNS}, {LAST_NUMBER} FROM outbox WHERE id = %s FOR UPDATE", (row_id,)).fetchone()
            row = resendable_row(current, row_id, force)
            assert current is not None  # resendable_row raised otherwise
            updated = cur.execute(
                "UPDATE outbox SET state = 'pending', attempts = %s, attempt_base = %s, next_attempt_at = %s, updated_at = %s "
                f"WHERE id = %s RETURNING {ROW_COLUMNS}",
                (attempts_after_resend(row), base_after_resend(row, current[-1]), now, now, row_id),
            ).fetchone()
            cur.execute(f"NOTIFY {CHANNEL}")
            self._append_audit(cur, (resend_event(row, actor),), now)
        return outbox_row(updated)  # type: ignore[arg-type]

    def purge(self, before: float, *, dry_run: bool = False, actor: str = "hub", stop: threading.Event | None = None) -> PurgeReport:
        stamp = time.time()
        return purge_rows(self._tx, "%s", before, stamp, dry_run, stop, lambda cur, event: self._append_audit(cur, (event,), stamp),
                          actor, lock=" FOR UPDATE OF o")

    def get(self, row_id: int) -> OutboxRow | None:
        with self._tx(transaction=False) as cur:
            r = cur.execute(f"SELECT {ROW_COLUMNS} FROM outbox WHERE id = %s", (row_id,)).fetchone()
        return outbox_row(r) if r else None

    def rows(self, state: State | None = None, destination: str | None = None, limit: int = 100, newest: bool = False) -> list[OutboxRow]:
        where, params = row_filter(state, destination, "%s")
        with self._tx(transaction=False) as cur:
            rs = cur.execute(f"SELECT {ROW_COLUMNS} FROM outbox {where} {row_order(newest)} LIMIT %s", (*params, limit)).fetchall()
        return [outbox_row(r) for r in rs]

    def counts(self) -> dict[tuple[str, State], int]:
        with self._tx(transaction=False) as cur:
            rs = cur.execute("SELECT destination, state, COUNT(*) FROM outbox GROUP BY destination, state").fetchall()
        return {(d, State(s)): n for d, s, n in rs}

    def trace(self, message_id: str) -> Trace:
        with self._tx(transaction=False) as cur:
            m = cur.execute(
                f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE message_id = %s ORDER BY received_at LIMIT 1",
                (message_id,),
            ).fetchone()
            rows = [outbox_row(r) for r in cur.execute(f"SELECT {ROW_COLUMNS} FROM outbox WHERE message_id = %s ORDER BY id", (message_id,)).fetchall()]
            attempts = [
                Attempt(r[0], r[1], r[2], r[3], r[4], State(r[5]), r[6])
                for r in cur.execute(
                    "SELECT a.row_id, a.number, a.owner, a.started_at, a.finished_at, a.outcome, a.detail FROM attempts a "
                    "JOIN outbox o ON o.id = a.row_id WHERE o.message_id = %s ORDER BY a.started_at, a.row_id",
                    (message_id,),
                ).fetchall()
            ]
            audit = [
                AuditEntry(*r)
                for r in cur.execute(f"SELECT {_AUDIT_COLUMNS} FROM audit WHERE message_id = %s ORDER BY seq", (message_id,)).fetchall()
            ]
        return Trace(message_record(m) if m else None, tuple(rows), tuple(attempts), tuple(audit))

    def conversation(self, key: str, limit: int = 500) -> list[MessageRecord]:
        with self._tx(transaction=False) as cur:
            found = cur.execute("SELECT conversation FROM messages WHERE conversation = %s LIMIT 1", (key,)).fetchone() or cur.execute(
                "SELECT conversation FROM messages WHERE message_id = %s OR reference = %s ORDER BY received_at LIMIT 1", (key, key)
            ).fetchone()
            if found is None:
                return []
            rows = cur.execute(
                f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation = %s ORDER BY received_at, message_id LIMIT %s",
                (found[0], limit),
            ).fetchall()
        return [message_record(r) for r in rows]

    def audit_entries(self) -> Iterator[AuditEntry]:
        after = 0
        while True:
            with self._tx(transaction=False) as cur:
                batch = cur.execute(
                    f"SELECT {_AUDIT_COLUMNS} FROM audit WHERE seq > %s ORDER BY seq LIMIT 1000", (after,)
                ).fetchall()
            if not batch:
                return
            for r in batch:
                yield AuditEntry(*r)
            after = batch[-1][0]

    def audit_gaps(self) -> list[AuditGap]:
        with self._tx(transaction=False) as cur:
            return unaudited(cur)

    # -- LISTEN/NOTIFY -----------------------------------------------------------------------------

    def wait_for_work(self, timeout: float, wake: threading.Event) -> bool:
        # ``wake`` stays registered: a notification that comes while the dispatcher is busy sets it,
        # so its next wait returns at once instead of missing the work until the next poll.
        if not self._closed.is_set():
            with self._waiters_lock:
                self._waiters.add(wake)
                if self._listener is None:
                    self._listener = threading.Thread(target=self._listen, name="store-listen", daemon=True)
                    self._listener.start()
        return wake.wait(timeout)

    def _notify_waiters(self) -> None:
        with self._waiters_lock:
            for event in self._waiters:
                event.set()

    def _listen(self) -> None:
        """Holds a LISTEN connection; reconnects after a loss (and wakes the waiters: they may have missed work)."""
        delay = 0.1
        while not self._closed.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, **self._connect_kwargs) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._notify_waiters()
                    delay = 0.1
                    while not self._closed.is_set():
                        # an accept of this store's own woke its dispatcher already (Pipeline.on_accept)
                        if any(n.payload != self._origin for n in list(conn.notifies(timeout=0.5, stop_after=1))):
                            self._closed.wait(_COALESCE)  # let the burst this one began arrive ...
                            for _ in conn.notifies(timeout=0):  # ... and take it in one go: one wake-up for all
                                pass
                            self._notify_waiters()
            except psycopg.Error as exc:
                if self._closed.is_set():
                    return
                log.debug("store listener: connection lost (%s); reconnecting in %.1fs", exc, delay)
                self._closed.wait(delay)
                delay = min(delay * 2, 2.0)

    def close(self) -> None:
        self._closed.set()
        if self._listener is not None:
            self._listener.join(5)
        self._pool.close()
        if self._starting is not None:
            self._starting.join(5)


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        params = conninfo_to_dict(url)
        params.pop("password", None)
        return " ".join(f"{k}={v}" for k, v in params.items())
    except Exception:
        return "(unparsable URL)"
