"""The embedded store: one SQLite file in WAL mode, fsync on every commit (synchronous=FULL).

Writes go through one connection with group commit: concurrent writers of a process share ONE
transaction, each inside its own savepoint (a writer that fails rolls back only its own part), and
one of them commits it for all; every writer returns only once the commit that contains its rows
is on disk, so durability is exactly that of one fsync per transaction, only with fewer fsyncs.
Reads use a second connection, which sees committed data only (WAL snapshots): nothing is ever
read, and so answered, before it is durable. Processes sharing the file (``hub serve --workers``,
``hub send``, other nodes) take turns through a lock file beside the database (``flock``), so a
waiting process is woken the moment the file is free instead of polling SQLite's busy handler;
``busy_timeout`` still covers any other writer.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Iterator, Sequence

from ..audit import GENESIS, AuditEntry, AuditEvent, AuditGap, chain
from ..errors import StoreError, TryAgain
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

MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE messages (
            sender TEXT NOT NULL,
            message_id TEXT NOT NULL,
            received_at REAL NOT NULL,
            document_type TEXT NOT NULL,
            function TEXT NOT NULL,
            route TEXT NOT NULL,
            receipt BLOB NOT NULL,
            PRIMARY KEY (sender, message_id)
        );
        CREATE TABLE outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            message_id TEXT NOT NULL,
            sender TEXT NOT NULL,
            destination TEXT NOT NULL,
            route TEXT NOT NULL,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL NOT NULL,
            lease_owner TEXT,
            lease_until REAL,
            last_error TEXT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            payload BLOB NOT NULL
        );
        CREATE INDEX outbox_due ON outbox (destination, state, next_attempt_at);
        CREATE INDEX outbox_message ON outbox (message_id);
        CREATE TABLE attempts (
            row_id INTEGER NOT NULL REFERENCES outbox (id),
            number INTEGER NOT NULL,
            owner TEXT NOT NULL,
            started_at REAL NOT NULL,
            finished_at REAL NOT NULL,
            outcome TEXT NOT NULL,
            detail TEXT NOT NULL,
            PRIMARY KEY (row_id, number)
        );
        CREATE TABLE audit (
            seq INTEGER PRIMARY KEY,
            at REAL NOT NULL,
            message_id TEXT,
            actor TEXT NOT NULL,
            event TEXT NOT NULL,
            detail TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL
        );
        CREATE INDEX audit_message ON audit (message_id);
        """,
    ),
    (
        2,
        """
        ALTER TABLE messages ADD COLUMN reference TEXT;
        ALTER TABLE messages ADD COLUMN pre_reference TEXT;
        ALTER TABLE messages ADD COLUMN conversation TEXT;
        UPDATE messages SET conversation = message_id WHERE conversation IS NULL;
        CREATE INDEX messages_message ON messages (message_id);
        CREATE INDEX messages_reference ON messages (reference);
        CREATE INDEX messages_conversation ON messages (conversation, received_at);
        """,
    ),
    (
        3,
        """
        ALTER TABLE messages ADD COLUMN content_digest BLOB;
        """,
    ),
    (
        4,
        # retention (Store.purge): the index holds only delivered rows whose payload is still kept
        """
        ALTER TABLE outbox ADD COLUMN purged_at REAL;
        CREATE INDEX outbox_unpurged ON outbox (id) WHERE state = 'delivered' AND purged_at IS NULL;
        """,
    ),
    (
        5,
        # attempt numbers that go on across resends (OutboxRow.attempt_base); rows written before
        # start at 0, which adding the column with its default gives them without rewriting them
        """
        ALTER TABLE outbox ADD COLUMN attempt_base INTEGER NOT NULL DEFAULT 0;
        """,
    ),
)



class WriterLock:
    """The lock file beside the database: an exclusive ``flock`` that processes take in turn, with
    a bound on the wait.

    Free, it is taken at once. Held by another process, a thread of its own (one per store, kept
    once started) waits in a blocking ``flock``, so the waiter is woken the moment the file is
    free (no polling), while the caller waits at most ``timeout`` seconds and then gets
    ``TryAgain``: a process that stalls while
    holding the lock (stopped, swapped out, its disk hung) costs the others an answer to retry,
    not a hang, and the writers behind the first time-out get theirs at once (``_LockWait``).
    A wait given up still ends in the background: if it gets the lock and no caller wants it any
    more, it lets it go at once; a caller that comes meanwhile takes that wait over (one
    ``flock`` request per open file at a time: a second blocking request on the same descriptor
    would be granted together with the first, and one unlock would then release both). One
    caller at a time: the store calls it holding its write connection.
    """

    GRACE = 0.05

    def __init__(self, path: str, timeout: float) -> None:
        self.path, self.timeout = path, timeout
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self._mutex = threading.Lock()
        self._wake = threading.Condition(self._mutex)  # a new wait for the waiting thread
        self._pending: _LockWait | None = None  # the blocking flock asked of, or under way in, that thread
        self._waiter: threading.Thread | None = None  # started at the first wait, then kept
        self._closed = False

    def acquire(self) -> None:
        with self._mutex:
            wait = self._pending
            if wait is None:
                try:
                    fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return
                except BlockingIOError:
                    pass
                # the grace is the first caller's: the holder may let go just as the time runs out
                wait = self._pending = _LockWait(time.monotonic() + self.timeout + self.GRACE)
                if self._waiter is None:
                    self._waiter = threading.Thread(target=self._waits, name="sqlite-writer-lock", daemon=True)
                    self._waiter.start()
                self._wake.notify()
            wait.wanted = True
        if wait.granted.wait(max(0.0, wait.deadline - time.monotonic())):
            return self._granted(wait)
        with self._mutex:
            if wait.granted.is_set():  # got it just as the time ran out
                return self._granted(wait)
            wait.wanted = False
        raise TryAgain(
            f"the store is busy: another process has held its write lock ({self.path}) for more than {self.timeout:g} s"
        )

    @staticmethod
    def _granted(wait: _LockWait) -> None:
        if wait.failed is not None:
            raise TryAgain(f"the store's write lock cannot be taken: {wait.failed}")

    def _waits(self) -> None:
        """The waiting thread: one blocking ``flock`` for each wait asked of it."""
        while True:
            with self._mutex:
                while self._pending is None and not self._closed:
                    self._wake.wait()
                if self._pending is None:
                    return
                wait = self._pending
            failed = None
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            except OSError as exc:  # ENOLCK and the like: this wait fails, the next one tries again
                failed = exc
            with self._mutex:
                self._pending = None
                if self._closed:  # the store closed meanwhile and left the descriptor to this wait
                    os.close(self._fd)
                    return
                if failed is not None:
                    wait.failed = failed
                    wait.granted.set()
                elif wait.wanted:
                    wait.granted.set()
                else:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)

    def release(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        with self._mutex:
            self._closed = True
            self._wake.notify()
            if self._pending is None:  # else the wait closes it when it ends: its number stays its own
                os.close(self._fd)


class _LockWait:
    """One blocking ``flock`` under way. Every caller waits on it until one ``deadline``: while a
    stalled process keeps the lock, the writers behind the first time-out get their answer at
    once instead of each waiting the whole time again."""

    __slots__ = ("deadline", "wanted", "granted", "failed")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.wanted = False
        self.granted = threading.Event()  # set when the lock is the caller's (or ``failed`` says why not)
        self.failed: OSError | None = None


class _Batch:
    """One write transaction shared by the writers that joined it (group commit)."""

    __slots__ = ("opened", "writers", "done", "error")

    def __init__(self) -> None:
        self.opened = time.monotonic()
        self.writers = 0
        self.done = False
        self.error: BaseException | None = None


def _store_error(exc: BaseException, path: str) -> BaseException:
    """A sqlite3 error as the hub's: a fault that may pass (busy, a full disk, a file it may not
    write now) is ``TryAgain`` (the sender is answered ERR50, nothing was recorded), any other
    ``StoreError``; the sentence names the store and says which it is."""
    if isinstance(exc, sqlite3.OperationalError):
        return TryAgain(_said(exc, path))
    if isinstance(exc, sqlite3.Error):
        return StoreError(f"the store {path}: {exc}")
    return exc


_CAUSES = {
    "SQLITE_FULL": "its disk is full",
    "SQLITE_READONLY": "it cannot be written (check the owner and mode of the file and its folder, and that the "
                       "file system is not mounted read-only)",
    "SQLITE_BUSY": "it is busy",
    "SQLITE_LOCKED": "it is busy",
    "SQLITE_CANTOPEN": "its file cannot be opened",
    "SQLITE_IOERR": "its disk failed to read or write (an I/O error)",
}

# SQLite's errors that say the store itself cannot take writes now (``WriteFault.kind``), as
# opposed to a busy file or a fault of one call: ``GET /health`` reports them (``write_fault``)
_FAULT_KINDS = {"SQLITE_FULL": "full", "SQLITE_READONLY": "read-only", "SQLITE_IOERR": "io", "SQLITE_CANTOPEN": "io"}


def _said(exc: sqlite3.Error, path: str | None = None) -> str:
    """What went wrong, in words: SQLite's sentence after the cause (a full disk is not "busy")."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    cause = _CAUSES.get(name) or next((c for k, c in _CAUSES.items() if name.startswith(k + "_")), None)
    if path is None:
        return f"{cause}: {exc}" if cause else str(exc)
    return f"the store {path} is busy or unavailable: {exc}" if cause is None else f"the store {path}: {cause}: {exc}"


def _make_folder(path: str) -> None:
    """The folder of the database file, made when missing; a path that cannot hold the file is said
    as such (a file in the way of a folder, a folder where the file should be)."""
    file = Path(path)
    if file.is_dir():
        raise StoreError(f"cannot open the SQLite store {path}: it is a folder; name a database file in it "
                         f"(e.g. sqlite:///{file / 'hub.db'})")
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise StoreError(f"cannot open the SQLite store {path}: {exc.filename or file.parent} is a file, "
                         "not a folder") from exc
    except OSError as exc:
        raise StoreError(f"cannot open the SQLite store {path}: its folder {file.parent} cannot be made: "
                         f"{exc.strerror or exc}") from exc


class SQLiteStore(Store):
    # A batch is committed as soon as no other writer is on its way into it, and in any case once
    # it is this old or this large, so a steady stream of writers cannot hold back its commit.
    BATCH_MAX_SECONDS = 0.005
    BATCH_MAX_WRITERS = 256

    def __init__(self, path: Path | str, busy_timeout_ms: int = 10_000) -> None:
        self.path = str(path)
        memory = self.path == ":memory:"
        if not memory:
            _make_folder(self.path)
        try:
            self._file_lock = None if memory else WriterLock(self.path + "-writer.lock", busy_timeout_ms / 1000)
        except OSError as exc:  # a folder it may not write, a read-only file system
            raise StoreError(f"cannot open the SQLite store {self.path}: its lock file {self.path}-writer.lock "
                             f"cannot be opened: {exc.strerror or exc}") from exc
        try:
            self._db = self._connect(busy_timeout_ms)
            try:
                # a reader must not wait for another process's write lock (`hub outbox list`, `hub trace`
                # while a writer holds it, or stalls): a file already in WAL mode needs no lock to open
                self._wal(self._db)
                # a database in memory exists only for its own connection: it reads through the writer
                self._reader = self._db if memory else self._connect(busy_timeout_ms)
            except BaseException:
                self._db.close()
                raise
        except sqlite3.Error as exc:
            if self._file_lock is not None:
                self._file_lock.close()
            raise StoreError(f"cannot open the SQLite store {self.path}: {_said(exc)}") from exc
        except BaseException:
            if self._file_lock is not None:
                self._file_lock.close()
            raise
        self._lock = threading.Lock()  # the write connection
        self._read_lock = self._lock if memory else threading.Lock()
        self._state = threading.Condition()  # group commit bookkeeping, below
        self._batch: _Batch | None = None  # the open transaction on the write connection
        self._joining = 0  # writers between asking for the write connection and finishing their part
        self._committing = False

    def unwritable(self) -> str | None:
        """Why this process cannot write the store, or None. SQLite opens a file it may not write
        read-only without a word, and only the first write fails: `hub serve` would then answer every
        sender "try again" for good, so it asks this first. The kernel judges (owner, mode, a
        read-only mount) through access(2): never by opening the file, since closing any descriptor
        of it would drop every POSIX lock SQLite holds on it in this process (another process could
        then take itself for the last one and remove the WAL under this one's feet)."""
        if self.path == ":memory:":
            return None
        if not os.access(self.path, os.W_OK):
            return "the file is not writable by this process"
        folder = os.path.dirname(os.path.abspath(self.path))
        if not os.access(folder, os.W_OK | os.X_OK):  # SQLite makes and removes the -wal and -shm files there
            return f"its folder {folder} does not let this process create the file's write-ahead log ({self.path}-wal)"
        return None

    def _free_bytes(self) -> int | None:
        """Bytes free for this process on the file system of the store's folder (statvfs: no file
        opened, nothing written); None for a store in memory or a folder it cannot look at."""
        if self.path == ":memory:":
            return None
        try:
            st = os.statvfs(os.path.dirname(os.path.abspath(self.path)))
        except OSError:
            return None
        return (st.f_bfree if os.geteuid() == 0 else st.f_bavail) * st.f_frsize  # root may use the reserved blocks

    def _note_write_error(self, exc: BaseException) -> None:
        """A write failed: kept for ``write_fault`` when SQLite's reason is the store's own (a full
        disk, a file or file system it may not write, an I/O error), with the space free then.
        Costs nothing on a write that succeeds."""
        name = getattr(exc, "sqlite_errorname", "") or ""
        kind = _FAULT_KINDS.get(name) or next((k for prefix, k in _FAULT_KINDS.items() if name.startswith(prefix + "_")), None)
        if kind is not None and isinstance(exc, sqlite3.Error):
            self._note_fault(WriteFault(kind, _said(exc, self.path), time.time(), self._free_bytes()))

    def write_fault(self, room: int = 0) -> WriteFault | None:
        """Why this store cannot record messages now, or None. Beyond the last write fault
        (``Store.write_fault``), SQLite sees two causes for itself, at the cost of one statvfs and
        two access(2) calls (no write, no query): a disk with less than ``room`` bytes free, and a
        file or folder this process may not write (``unwritable``; e.g. its file system remounted
        read-only). So every process on the host (``--workers``) says the same of them, whether or
        not it was the one whose write failed, and a full disk is reported until space is made
        (with none made since the fault, it stays reported, however long ago it was), then at once
        no longer, with no write needed to find out (the next message is the proof)."""
        noted = self._write_fault
        free = self._free_bytes()
        short = free is not None and free < room
        unwritable = self.unwritable()
        if noted is not None:
            if (noted.kind == "full" and short) or (noted.kind == "read-only" and unwritable is not None):
                return noted
            made_room = noted.kind == "full" and free is not None and noted.free is not None and free > noted.free
            held = None if made_room else super().write_fault(room)
            if held is not None:
                return held
        if unwritable is not None:
            return WriteFault("read-only", f"the store {self.path} cannot be written by this process: {unwritable}", time.time())
        if short:
            return WriteFault("full", f"the store {self.path}: its disk has {free} bytes free, less than one message of the largest "
                                      f"size the hub takes may need ({room} bytes, [hub] max_message_bytes)", time.time(), free)
        return None

    def _connect(self, busy_timeout_ms: int) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            db.execute("PRAGMA synchronous = FULL")
            db.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            db.close()
            raise
        return db

    def _wal(self, db: sqlite3.Connection) -> None:
        """Puts the file in WAL mode (a setting the file keeps). Only a file not yet in WAL mode
        (a new one) takes the lock file for it: processes opening a new file together would race to
        switch it, so they do it one at a time."""
        if db.execute("PRAGMA journal_mode").fetchone()[0] == "wal" or self._file_lock is None:
            db.execute("PRAGMA journal_mode = WAL")
            return
        try:
            self._file_lock.acquire()
        except TryAgain as exc:
            raise StoreError(f"cannot open the SQLite store {self.path}: {exc}") from exc
        try:
            db.execute("PRAGMA journal_mode = WAL")
        finally:
            self._unlock_file()

    # -- plumbing ------------------------------------------------------------------------------

    @contextmanager
    def _tx(self, write: bool = True) -> Iterator[sqlite3.Cursor]:
        if write or self._reader is self._db:
            with self._write() as cur:
                yield cur
            return
        with self._read_lock:
            cur = self._reader.cursor()
            try:
                cur.execute("BEGIN")
                yield cur
                cur.execute("COMMIT")
            except BaseException as exc:
                try:
                    cur.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                error = _store_error(exc, self.path)
                if error is exc:
                    raise
                raise error from exc
            finally:
                cur.close()

    def _read_one(self, sql: str, args: tuple) -> tuple | None:
        """The first row of one statement on the read connection, without BEGIN and COMMIT: a lone
        statement is a transaction of its own (the duplicate check, once a message)."""
        if self._reader is self._db:
            with self._tx(write=False) as cur:
                return cur.execute(sql, args).fetchone()
        with self._read_lock:
            try:
                return self._reader.execute(sql, args).fetchone()
            except sqlite3.Error as exc:
                raise _store_error(exc, self.path) from exc

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Cursor]:
        """One writer's part of the current batch, in a savepoint; returns once the batch is durable.
        A writer whose part failed still sees the batch committed (it may be the one to commit it)
        before it raises, so an open batch always has someone to end it."""
        batch: _Batch | None = None
        failure: BaseException | None = None
        with self._state:
            self._joining += 1
        try:
            with self._lock:
                cur = self._db.cursor()
                try:
                    if self._batch is None:
                        self._begin()
                    batch = self._batch
                    assert batch is not None
                    cur.execute("SAVEPOINT writer")
                    try:
                        yield cur
                    except BaseException:
                        self._undo_part(cur, batch)
                        raise
                    cur.execute("RELEASE writer")
                    batch.writers += 1
                except BaseException as exc:
                    failure = exc
                finally:
                    cur.close()
        finally:
            with self._state:
                self._joining -= 1
                if self._joining == 0:  # what writers waiting to commit are waiting for
                    self._state.notify_all()
        if batch is not None:
            try:
                self._wait_durable(batch)
            except BaseException as exc:
                self._note_write_error(exc.__cause__ or exc)  # _raise: the hub's error from SQLite's
                if failure is None:
                    raise
        if failure is not None:
            self._note_write_error(failure)
            error = _store_error(failure, self.path)
            if error is failure:
                raise failure
            raise error from failure

    def _begin(self) -> None:
        if self._file_lock is not None:
            self._file_lock.acquire()
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._unlock_file()
            raise
        self._batch = _Batch()

    def _unlock_file(self) -> None:
        if self._file_lock is not None:
            self._file_lock.release()

    def _undo_part(self, cur: sqlite3.Cursor, batch: _Batch) -> None:
        """Rolls back one writer's part; if SQLite already rolled back the whole transaction (an
        I/O error, a full disk), the batch is lost for every writer in it."""
        try:
            if self._db.in_transaction:
                cur.execute("ROLLBACK TO writer")
                cur.execute("RELEASE writer")
                return
        except sqlite3.Error:
            pass
        self._end(batch, sqlite3.OperationalError("the transaction was rolled back"), commit=False)

    def _end(self, batch: _Batch, error: BaseException | None, commit: bool) -> None:
        """Commits (or rolls back) the open batch; the caller holds the write connection."""
        if commit:
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                error = exc
        if error is not None and self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
        self._batch = None
        self._unlock_file()
        with self._state:
            batch.done, batch.error = True, error
            self._state.notify_all()

    def _wait_durable(self, batch: _Batch) -> None:
        with self._state:
            while not batch.done:
                age = time.monotonic() - batch.opened
                if not self._committing and self._batch is batch and (
                    self._joining == 0 or age >= self.BATCH_MAX_SECONDS or batch.writers >= self.BATCH_MAX_WRITERS
                ):
                    self._committing = True
                    break
                self._state.wait(None if self._committing else max(0.0005, self.BATCH_MAX_SECONDS - age))
            else:
                return self._raise(batch)
        try:
            with self._lock:
                if self._batch is batch and not batch.done:
                    self._end(batch, None, commit=True)
        finally:
            with self._state:
                self._committing = False
                self._state.notify_all()
        self._raise(batch)

    def _raise(self, batch: _Batch) -> None:
        if batch.error is not None:
            error = _store_error(batch.error, self.path)
            raise error from batch.error

    def _append_audit(self, cur: sqlite3.Cursor, events: Sequence[AuditEvent], at: float) -> None:
        """Chains ``events`` onto the audit log: the last entry read once, the new ones written in
        one statement."""
        last = cur.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev = (last[0], last[1]) if last else (0, GENESIS)
        cur.executemany("INSERT INTO audit (seq, at, message_id, actor, event, detail, prev_hash, hash) VALUES (?,?,?,?,?,?,?,?)",
                        chain(prev, seq, at, events))

    # -- interface ------------------------------------------------------------------------------

    def migrate(self) -> int:
        """Brings the schema to the last version. A schema already there is only read: opening the
        store for a command that reads (`hub trace`, `hub outbox list`) waits for no writer."""
        current = self._version()
        check_version(current, MIGRATIONS)
        if current == MIGRATIONS[-1][0]:
            return current
        with self._tx() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = cur.execute("SELECT MAX(version) FROM schema_version").fetchone()
            current = row[0] or 0
            check_version(current, MIGRATIONS)
            for version, script in MIGRATIONS:
                if version > current:
                    for statement in script.split(";"):
                        if statement.strip():
                            cur.execute(statement)
                    cur.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
                    current = version
        return current

    def _version(self) -> int:
        """The schema version the file holds (0: none yet), read without the write lock."""
        with self._read_lock:
            try:
                row = self._reader.execute("SELECT MAX(version) FROM schema_version").fetchone()
            except sqlite3.Error as exc:
                if isinstance(exc, sqlite3.OperationalError) and "no such table" in str(exc):
                    return 0
                raise _store_error(exc, self.path) from exc
        return (row[0] if row else None) or 0

    def accept(self, acceptance: Acceptance) -> Accepted:
        a = acceptance
        hold = a.held
        held_items, pending = hold.split(a.items) if hold is not None else ([], list(a.items))
        held: list[OutboxRow] = []
        with self._tx() as cur:
            cur.execute(
                f"INSERT INTO messages ({MESSAGE_COLUMNS}, content_digest) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (sender, message_id) DO NOTHING",
                (a.sender, a.message_id, a.received_at, a.document_type, a.function, a.route, a.receipt,
                 a.reference, a.pre_reference, a.conversation or a.message_id, a.digest),
            )
            if cur.rowcount == 0:
                original = cur.execute(
                    "SELECT receipt FROM messages WHERE sender = ? AND message_id = ?", (a.sender, a.message_id)
                ).fetchone()
                if original is None:  # cannot happen under the write lock; said as PostgreSQL says it
                    raise TryAgain(f"message {a.message_id} from {a.sender} is being recorded concurrently")
                return Accepted(False, bytes(original[0]))
            cur.executemany(
                "INSERT INTO outbox (message_id, sender, destination, route, state, attempts, next_attempt_at, "
                "created_at, updated_at, payload) VALUES (?,?,?,?,'pending',0,?,?,?,?)",
                [(a.message_id, a.sender, i.destination, i.route, a.received_at, a.received_at, a.received_at, i.payload) for i in pending],
            )
            for i in held_items:  # leased to this node's dispatcher (``Hold``)
                assert hold is not None  # held items come from a hold
                until = time.time() + hold.lease_for  # from the write: waiting for the store does not shorten it
                cur.execute(
                    "INSERT INTO outbox (message_id, sender, destination, route, state, attempts, next_attempt_at, "
                    "lease_owner, lease_until, created_at, updated_at, payload) VALUES (?,?,?,?,'leased',1,?,?,?,?,?,?)",
                    (a.message_id, a.sender, i.destination, i.route, a.received_at, hold.owner, until, a.received_at,
                     a.received_at, i.payload),
                )
                held.append(hold.row(cur.lastrowid, a, i, until))  # type: ignore[arg-type]
            self._append_audit(cur, a.audit, a.received_at)
        self._note_recorded()
        return Accepted(True, a.receipt, tuple(held))

    def original(self, sender: str, message_id: str) -> Original | None:
        row = self._read_one(
            "SELECT receipt, content_digest, received_at FROM messages WHERE sender = ? AND message_id = ?", (sender, message_id)
        )
        return Original(bytes(row[0]), bytes(row[1]) if row[1] is not None else None, row[2]) if row else None

    def used_by_another(self, sender: str, message_id: str, routes: Sequence[str]) -> bool:
        marks = ",".join("?" * len(routes))
        sql = f"SELECT 1 FROM messages WHERE message_id = ? AND sender <> ? AND route IN ({marks}) LIMIT 1"
        return bool(routes) and self._read_one(sql, (message_id, sender, *routes)) is not None

    def record(self, event: AuditEvent) -> None:
        with self._tx() as cur:
            self._append_audit(cur, (event,), time.time())

    def lease(self, owner: str, destination: str, limit: int, now: float, lease_for: float) -> list[OutboxRow]:
        if limit <= 0:
            return []
        with self._tx() as cur:
            # Due rows and expired leases are looked up apart, each a range of the index outbox_due
            # (destination, state, ...): one query with "pending ... OR leased ..." walked every row
            # the destination ever had (delivered ones too) and sorted them, on every lease.
            due = cur.execute(
                "SELECT next_attempt_at, id FROM outbox WHERE destination = ? AND state = 'pending' AND next_attempt_at <= ? "
                "ORDER BY next_attempt_at, id LIMIT ?",
                (destination, now, limit),
            ).fetchall()
            due += cur.execute(
                "SELECT next_attempt_at, id FROM outbox WHERE destination = ? AND state = 'leased' AND lease_until < ? "
                "ORDER BY next_attempt_at, id LIMIT ?",
                (destination, now, limit),
            ).fetchall()
            ids = [r[1] for r in sorted(due)[:limit]]
            if not ids:
                return []
            marks = ",".join("?" * len(ids))
            cur.execute(
                f"UPDATE outbox SET state = 'leased', lease_owner = ?, lease_until = ?, attempts = attempts + 1, "
                f"updated_at = ? WHERE id IN ({marks})",
                (owner, now + lease_for, now, *ids),
            )
            rows = cur.execute(f"SELECT {ROW_COLUMNS} FROM outbox WHERE id IN ({marks}) ORDER BY next_attempt_at, id", ids).fetchall()
        return [outbox_row(r) for r in rows]

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
            current = cur.execute(f"SELECT {ROW_COLUMNS} FROM outbox WHERE id = ?", (row_id,)).fetchone()
            row = held_by(outbox_row(current) if current else None, row_id, owner, attempt)
            error = None if outcome is State.DELIVERED else detail
            cur.execute(
                "UPDATE outbox SET state = ?, lease_owner = NULL, lease_until = NULL, last_error = COALESCE(?, last_error), "
                "next_attempt_at = ?, updated_at = ? WHERE id = ?",
                (outcome.value, error, next_attempt_at if next_attempt_at is not None else row.next_attempt_at, now, row_id),
            )
            # numbered by the row's count under this lease (``Attempt``), in the INSERT itself; past
            # the last number if that is ahead (attempts numbered one after the other before schema 5)
            cur.execute(
                "INSERT INTO attempts (row_id, number, owner, started_at, finished_at, outcome, detail) "
                "SELECT ?, MAX(?, COALESCE(MAX(number), 0) + 1), ?, ?, ?, ?, ? FROM attempts WHERE row_id = ?",
                (row_id, row.attempt_base + row.attempts, owner, started_at, now, outcome.value, detail, row_id),
            )
            if enqueue:
                cur.executemany(
                    "INSERT INTO outbox (message_id, sender, destination, route, state, attempts, next_attempt_at, "
                    "created_at, updated_at, payload) VALUES (?,?,?,?,'pending',0,?,?,?,?)",
                    [(row.message_id, row.sender, i.destination, i.route, now, now, now, i.payload) for i in enqueue],
                )
            event = OUTCOME_EVENTS[outcome]
            self._append_audit(cur, (AuditEvent(row.message_id, owner, event, f"{row.destination}: {detail}"),), now)
        return replace(  # what the UPDATE above wrote, without reading the row (and its payload) again
            row, state=outcome, lease_owner=None, lease_until=None, last_error=error if error is not None else row.last_error,
            next_attempt_at=next_attempt_at if next_attempt_at is not None else row.next_attempt_at, updated_at=now,
        )

    def release(self, owner: str, now: float) -> int:
        with self._tx() as cur:
            cur.execute(
                "UPDATE outbox SET state = 'pending', lease_owner = NULL, lease_until = NULL, attempts = attempts - 1, "
                "updated_at = ? WHERE state = 'leased' AND lease_owner = ?",
                (now, owner),
            )
            return cur.rowcount

    def give_back(self, row_id: int, owner: str, attempt: int, now: float) -> bool:
        with self._tx() as cur:
            cur.execute(
                "UPDATE outbox SET state = 'pending', lease_owner = NULL, lease_until = NULL, attempts = attempts - 1, "
                "updated_at = ? WHERE id = ? AND state = 'leased' AND lease_owner = ? AND attempts = ?",
                (now, row_id, owner, attempt),
            )
            return cur.rowcount == 1

    def uncount(self, row_id: int, owner: str, attempt: int) -> bool:
        with self._tx() as cur:
            cur.execute(
                "UPDATE outbox SET attempts = attempts - 1 WHERE id = ? AND state = 'leased' AND lease_owner = ? AND attempts = ?",
                (row_id, owner, attempt),
            )
            return cur.rowcount == 1

    def resend(self, row_id: int, actor: str, now: float, force: bool = False) -> OutboxRow:
        with self._tx() as cur:
            current = cur.execute(f"SELECT {ROW_COLUMNS}, {LAST_NUMBER} FROM outbox WHERE id = ?", (row_id,)).fetchone()
            row = resendable_row(current, row_id, force)
            cur.execute(
                "UPDATE outbox SET state = 'pending', attempts = ?, attempt_base = ?, next_attempt_at = ?, updated_at = ? WHERE id = ?",
                (attempts_after_resend(row), base_after_resend(row, current[-1]), now, now, row_id),
            )
            self._append_audit(cur, (resend_event(row, actor),), now)
            updated = cur.execute(f"SELECT {ROW_COLUMNS} FROM outbox WHERE id = ?", (row_id,)).fetchone()
        return outbox_row(updated)

    def purge(self, before: float, *, dry_run: bool = False, actor: str = "hub", stop: threading.Event | None = None) -> PurgeReport:
        stamp = time.time()
        return purge_rows(lambda: self._tx(write=not dry_run), "?", before, stamp, dry_run, stop,
                          lambda cur, event: self._append_audit(cur, (event,), stamp), actor)

    def get(self, row_id: int) -> OutboxRow | None:
        with self._tx(write=False) as cur:
            r = cur.execute(f"SELECT {ROW_COLUMNS} FROM outbox WHERE id = ?", (row_id,)).fetchone()
        return outbox_row(r) if r else None

    def rows(self, state: State | None = None, destination: str | None = None, limit: int = 100, newest: bool = False) -> list[OutboxRow]:
        where, params = row_filter(state, destination, "?")
        with self._tx(write=False) as cur:
            rs = cur.execute(f"SELECT {ROW_COLUMNS} FROM outbox {where} {row_order(newest)} LIMIT ?", (*params, limit)).fetchall()
        return [outbox_row(r) for r in rs]

    def counts(self) -> dict[tuple[str, State], int]:
        with self._tx(write=False) as cur:
            rs = cur.execute("SELECT destination, state, COUNT(*) FROM outbox GROUP BY destination, state").fetchall()
        return {(d, State(s)): n for d, s, n in rs}

    def trace(self, message_id: str) -> Trace:
        with self._tx(write=False) as cur:
            m = cur.execute(
                f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE message_id = ? ORDER BY received_at LIMIT 1",
                (message_id,),
            ).fetchone()
            rows = [outbox_row(r) for r in cur.execute(f"SELECT {ROW_COLUMNS} FROM outbox WHERE message_id = ? ORDER BY id", (message_id,))]
            attempts = [
                Attempt(r[0], r[1], r[2], r[3], r[4], State(r[5]), r[6])
                for r in cur.execute(
                    "SELECT a.row_id, a.number, a.owner, a.started_at, a.finished_at, a.outcome, a.detail FROM attempts a "
                    "JOIN outbox o ON o.id = a.row_id WHERE o.message_id = ? ORDER BY a.started_at, a.row_id",
                    (message_id,),
                )
            ]
            audit = [AuditEntry(*r) for r in cur.execute(
                "SELECT seq, at, message_id, actor, event, detail, prev_hash, hash FROM audit WHERE message_id = ? ORDER BY seq",
                (message_id,),
            )]
        return Trace(message_record(m) if m else None, tuple(rows), tuple(attempts), tuple(audit))

    def conversation(self, key: str, limit: int = 500) -> list[MessageRecord]:
        with self._tx(write=False) as cur:
            found = cur.execute("SELECT conversation FROM messages WHERE conversation = ? LIMIT 1", (key,)).fetchone() or cur.execute(
                "SELECT conversation FROM messages WHERE message_id = ? OR reference = ? ORDER BY received_at LIMIT 1", (key, key)
            ).fetchone()
            if found is None:
                return []
            rows = cur.execute(
                f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation = ? ORDER BY received_at, message_id LIMIT ?",
                (found[0], limit),
            ).fetchall()
        return [message_record(r) for r in rows]

    def audit_entries(self) -> Iterator[AuditEntry]:
        after = 0
        while True:
            with self._tx(write=False) as cur:
                batch = cur.execute(
                    "SELECT seq, at, message_id, actor, event, detail, prev_hash, hash FROM audit WHERE seq > ? ORDER BY seq LIMIT 1000",
                    (after,),
                ).fetchall()
            if not batch:
                return
            for r in batch:
                yield AuditEntry(*r)
            after = batch[-1][0]

    def audit_gaps(self) -> list[AuditGap]:
        with self._tx(write=False) as cur:
            return unaudited(cur)

    def close(self) -> None:
        with self._lock:
            self._db.close()
            if self._reader is not self._db:
                with self._read_lock:
                    self._reader.close()
            if self._file_lock is not None:
                self._file_lock.close()
                self._file_lock = None
