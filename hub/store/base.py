"""The store interface: dedupe records, the durable outbox with leases, attempts and the audit log.

Any backend (SQLite embedded, PostgreSQL for scale-out) implements ``Store`` and passes the contract
suite in ``tests/store_contract.py``. The interface speaks in values, not SQL.

Outbox states and the only transitions allowed::

    pending --lease--> leased --complete--> delivered | pending (retry later) | dead
    leased  --lease expired, taken by another owner--> leased
    leased  --release (the owner stops cleanly; no attempt counted)--> pending
    dead | delivered --resend (operator)--> pending

A delivered row may have its payload purged by retention (``Store.purge``): it stays delivered,
with ``purged_at`` set and an empty payload, and can no longer be resent.

A row may also be written already leased, at acceptance, to the accepting node's dispatcher
(``Acceptance.held``, ``Hold``); it then goes on as any leased row.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import Enum
from typing import Callable, Iterator, NamedTuple, Sequence

from ..audit import AuditEntry, AuditEvent, AuditGap
from ..errors import StoreError, TransitionError


class State(str, Enum):
    PENDING = "pending"
    LEASED = "leased"
    DELIVERED = "delivered"
    DEAD = "dead"


# Where ``complete`` may take a leased row.
OUTCOMES = frozenset({State.DELIVERED, State.PENDING, State.DEAD})


@dataclass(frozen=True)
class OutboxItem:
    """One destination's copy of an accepted message, ready to deliver (already signed)."""

    destination: str
    route: str
    payload: bytes


@dataclass(frozen=True)
class Acceptance:
    """Everything the pipeline records in ONE transaction when it accepts a message."""

    sender: str
    message_id: str
    received_at: float
    document_type: str
    function: str
    route: str
    receipt: bytes
    items: tuple[OutboxItem, ...]
    audit: tuple[AuditEvent, ...]
    reference: str | None = None  # Subject/reference and preReference, as the sender gave them
    pre_reference: str | None = None
    conversation: str | None = None  # the exchange it belongs to (Pipeline._conversation); None: its own id
    held: Hold | None = None  # rows to write already leased to this node's dispatcher (``Hold``)
    digest: bytes | None = None  # SHA-256 of the document's canonical form: the same id sent again must carry it


@dataclass(frozen=True)
class Hold:
    """Rows of an acceptance written already leased: to ``owner`` (a dispatcher with a delivery
    thread free for each of ``destinations``) for ``lease_for`` seconds from their write, their
    first attempt counted, so the dispatcher delivers them at once without leasing them in a
    transaction of its own. One row per destination is held (others to it are written pending).
    Should the node stop before it delivers them, the lease expires and any dispatcher takes
    them, as any other leased row."""

    owner: str
    lease_for: float
    destinations: frozenset[str]

    def split(self, items: Sequence[OutboxItem]) -> tuple[list[OutboxItem], list[OutboxItem]]:
        """``(held, pending)``: the first item to each of ``destinations`` is held, the rest pending."""
        held: dict[str, OutboxItem] = {}
        pending = []
        for item in items:
            if item.destination in self.destinations and item.destination not in held:
                held[item.destination] = item
            else:
                pending.append(item)
        return list(held.values()), pending

    def row(self, row_id: int, acceptance: Acceptance, item: OutboxItem, until: float) -> OutboxRow:
        """The held row as the store wrote it (first attempt counted, leased to ``owner``)."""
        a = acceptance
        return OutboxRow(row_id, a.message_id, a.sender, item.destination, item.route, State.LEASED, 1, a.received_at,
                         self.owner, until, None, a.received_at, a.received_at, item.payload)


class Original(NamedTuple):
    """What was recorded when (sender, message id) was first accepted: the receipt given, the
    document's digest (``Acceptance.digest``; None for messages recorded before it was kept) and
    when it was received."""

    receipt: bytes
    digest: bytes | None
    received_at: float


class Accepted(NamedTuple):
    """What ``Store.accept`` did: ``created`` (False: a duplicate, nothing written), the receipt
    to answer with (the original one for a duplicate), and the rows written already leased
    (``Acceptance.held``)."""

    created: bool
    receipt: bytes
    held: tuple[OutboxRow, ...] = ()


@dataclass(frozen=True)
class OutboxRow:
    id: int
    message_id: str
    sender: str
    destination: str
    route: str
    state: State
    attempts: int  # attempts started since the row was created or last resent
    next_attempt_at: float
    lease_owner: str | None
    lease_until: float | None
    last_error: str | None
    created_at: float
    updated_at: float
    payload: bytes  # empty once purged
    purged_at: float | None = None  # when retention dropped the payload (``Store.purge``)
    # attempts the row had before the resend that started its count anew (``Store.resend``): its
    # attempt ``attempts`` is attempt ``attempt_base + attempts`` of its whole history (``Attempt.number``)
    attempt_base: int = 0


@dataclass(frozen=True)
class PurgeReport:
    """What one ``Store.purge`` run dropped, or with ``dry_run`` would drop: the payloads of
    ``rows`` delivered outbox rows (``freed`` bytes) of ``messages`` messages received before
    ``before`` (epoch seconds)."""

    before: float
    dry_run: bool = False
    rows: int = 0
    freed: int = 0
    messages: int = 0


@dataclass(frozen=True)
class Attempt:
    """One recorded attempt of an outbox row. ``number`` is the attempt's place in the row's whole
    history: the row's attempt count under the lease it ran in, plus the attempts before the last
    resend that started the count anew (``OutboxRow.attempt_base``), so the numbers go on across
    resends. A lease whose delivery recorded no outcome (the node stopped, or lost the lease, during
    it) leaves its number out: a gap between two numbers, or a count ahead of the last number, is
    such an attempt (``hub.tracing``). Leases given back uncounted (``release``, ``give_back``,
    ``uncount``) take no number. Attempts recorded before schema 5 keep the numbers they had (one
    after the other, with no gap for an attempt without an outcome)."""

    row_id: int
    number: int
    owner: str
    started_at: float
    finished_at: float
    outcome: State
    detail: str


@dataclass(frozen=True)
class MessageRecord:
    sender: str
    message_id: str
    received_at: float
    document_type: str
    function: str
    route: str
    receipt: bytes
    reference: str | None = None
    pre_reference: str | None = None
    conversation: str | None = None


@dataclass(frozen=True)
class WriteFault:
    """A write the store refused for a reason of its own, not of the call: its disk is full
    (``full``), it is read-only (``read-only``: a file system mounted read-only, a PostgreSQL
    standby), or its disk failed (``io``). ``reason`` is the store's sentence, as the sender's
    "try again" was logged; ``at`` when it last happened (epoch seconds); ``free``: the bytes free
    in the store's folder then (SQLite), to tell when space has been made since."""

    kind: str
    reason: str
    at: float
    free: int | None = None


@dataclass(frozen=True)
class Trace:
    message: MessageRecord | None
    rows: tuple[OutboxRow, ...]
    attempts: tuple[Attempt, ...]
    audit: tuple[AuditEntry, ...]


class Store(ABC):
    """A durable store. Every method is one transaction; every method is safe across threads."""

    # How long a write fault is reported (``write_fault``) after it last happened when the store
    # cannot see for itself whether its cause has passed: then the next message tries (and, if the
    # fault is still there, brings it back), so a hub behind a load balancer that takes it out on
    # 503 is not left out for good once its store can write again with no one left to write.
    FAULT_HOLD = 30.0

    _write_fault: WriteFault | None = None  # the last write fault, until a message is recorded

    def _note_fault(self, fault: WriteFault) -> None:
        """A write failed for a reason of the store's (the backends' write error paths): one
        attribute store, only when a write fails."""
        self._write_fault = fault

    def _note_recorded(self) -> None:
        """A message was recorded (``accept`` created it): whatever write fault was noted has
        passed. One attribute read on the message path."""
        if self._write_fault is not None:
            self._write_fault = None

    def write_fault(self, room: int = 0) -> WriteFault | None:
        """Why the store cannot record messages now, or None (``GET /health``: 503 while it is
        not None). Costs no write and no query: the last write that failed for a reason of the
        store's (``WriteFault``) is kept until a message is recorded again, and reported while its
        cause holds; here, for ``FAULT_HOLD`` seconds after it last happened (a backend that can
        see whether the cause has passed, e.g. the free space of its disk, says so instead).
        ``room``: the bytes one message of the largest size the hub takes needs
        (``[hub] max_message_bytes``). Each process judges by its own writes (and what it sees)."""
        fault = self._write_fault
        if fault is None or time.time() - fault.at >= self.FAULT_HOLD:
            return None
        return fault

    @abstractmethod
    def migrate(self) -> int:
        """Brings the schema to the current version; returns that version. Idempotent."""

    @abstractmethod
    def accept(self, acceptance: Acceptance) -> Accepted:
        """Records the message, its outbox rows and audit entries atomically.

        Returns ``(True, receipt, held rows)`` when recorded, or ``(False, original_receipt, ())``
        when the (sender, message id) pair was already recorded: then nothing new is written.
        """

    @abstractmethod
    def original(self, sender: str, message_id: str) -> Original | None:
        """What was recorded when (sender, message id) was accepted, or None (the duplicate check)."""

    @abstractmethod
    def used_by_another(self, sender: str, message_id: str, routes: Sequence[str]) -> bool:
        """Whether a sender other than ``sender`` had a message accepted under ``message_id`` on one of ``routes``."""

    def receipt_for(self, sender: str, message_id: str) -> bytes | None:
        """The receipt given when (sender, message id) was accepted, or None."""
        found = self.original(sender, message_id)
        return found.receipt if found is not None else None

    @abstractmethod
    def record(self, event: AuditEvent) -> None:
        """Appends one audit entry on its own (e.g. a rejection)."""

    @abstractmethod
    def lease(self, owner: str, destination: str, limit: int, now: float, lease_for: float) -> list[OutboxRow]:
        """Takes up to ``limit`` due rows of one destination: pending rows whose time has come and
        leased rows whose lease expired. Each taken row's attempt count goes up by one."""

    @abstractmethod
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
        """Ends the current attempt of a row this owner holds. Raises ``TransitionError`` if the
        row is not leased by ``owner`` (lease lost) or ``outcome`` is not a legal next state.
        ``attempt``: the row's attempt count when this owner leased it; if the row has been leased
        again since (its lease expired during a slow delivery, and another node or this one took
        it), this outcome is stale and refused, so the newer attempt's outcome is the one kept.
        ``enqueue``: new pending rows for the same message, written in the same transaction
        (status events, ``hub.events``)."""

    @abstractmethod
    def release(self, owner: str, now: float) -> int:
        """Gives back every row ``owner`` holds (clean shutdown) without counting an attempt."""

    @abstractmethod
    def give_back(self, row_id: int, owner: str, attempt: int, now: float) -> bool:
        """Undoes this owner's lease ``attempt`` of one row under which it will start no delivery
        (handed over too late, or queued until too little of its lease was left): pending again,
        due as it was, the lease not counted as an attempt. False if the row is no longer so held."""

    @abstractmethod
    def uncount(self, row_id: int, owner: str, attempt: int) -> bool:
        """This owner leased the row again (lease ``attempt``) while its own delivery under an
        earlier lease is still under way and goes on under this one: the lease is kept but not
        counted as an attempt (the row's attempt count, and the outcome's ``attempt``, become
        ``attempt - 1``). False if the row is no longer so held."""

    @abstractmethod
    def resend(self, row_id: int, actor: str, now: float, force: bool = False) -> OutboxRow:
        """An operator's explicit new attempt, due at ``now``: of a dead row (a new count of
        attempts), of a pending row waiting out its backoff (the count goes on), or with ``force``
        of a delivered one. A leased row is being delivered: ``TransitionError``. A new count keeps
        the numbering of the row's attempts going: ``attempt_base`` becomes the number of its last
        attempt, so the next one is numbered after it (``Attempt``)."""

    @abstractmethod
    def purge(self, before: float, *, dry_run: bool = False, actor: str = "hub", stop: threading.Event | None = None) -> PurgeReport:
        """Retention: drops the payloads of delivered rows of messages received before ``before``
        whose rows are all delivered (a message with a dead, pending or leased row keeps
        everything), and marks them purged; the message's dedupe key, digest and receipt, its
        attempts and its audit entries stay, so a copy sent again still gets its original receipt.
        Works in transactions of a bounded number of rows (``sql.PURGE_BATCH``), so writers are
        held up briefly at a time; each batch that purges rows appends, in its own transaction, one
        ``purged`` audit entry by ``actor`` with its counts. ``dry_run``: counts only, nothing
        written. Once ``stop`` is set (``hub serve`` stopping) no further batch starts."""

    @abstractmethod
    def get(self, row_id: int) -> OutboxRow | None: ...

    @abstractmethod
    def rows(self, state: State | None = None, destination: str | None = None, limit: int = 100, newest: bool = False) -> list[OutboxRow]:
        """Rows by id, oldest first (``newest``: latest first), at most ``limit``."""

    @abstractmethod
    def counts(self) -> dict[tuple[str, State], int]:
        """Number of rows per (destination, state)."""

    @abstractmethod
    def trace(self, message_id: str) -> Trace:
        """The message, its rows, their recorded attempts (numbered as ``Attempt`` says) and its
        audit entries."""

    @abstractmethod
    def conversation(self, key: str, limit: int = 500) -> list[MessageRecord]:
        """The messages of one conversation, oldest first. ``key`` is a conversation id, or the
        reference or message id of any message in it."""

    @abstractmethod
    def audit_entries(self) -> Iterator[AuditEntry]:
        """Every audit entry, oldest first."""

    @abstractmethod
    def audit_gaps(self) -> list[AuditGap]:
        """What the other tables hold without its audit entry, found by the database (anti-joins,
        nothing held in memory): accepted messages without their ``received`` entry (by the sender,
        as the pipeline writes it with the acceptance) and recorded attempts without the outcome
        entry ``complete`` writes with them (same message, owner, time, event and detail). One
        ``AuditGap`` per kind with any missing, oldest first; empty when none is. The hash chain
        cannot show a cut at its end; this can, unless only entries of no other record
        (rejections, duplicates, resends) were cut."""

    @abstractmethod
    def close(self) -> None: ...

    def wait_for_work(self, timeout: float, wake: threading.Event) -> bool:
        """An idle dispatcher's wait: returns when ``wake`` is set, when new work may have arrived
        through the store (another node or process accepted, released or resent rows), or after
        ``timeout`` seconds. True if woken. A backend without notifications waits on ``wake`` only."""
        return wake.wait(timeout)

    def when_failed(self, callback: Callable[[StoreError], None]) -> None:
        """Calls ``callback`` (on a thread of the store's, or at once) if the store finds that it can
        never be used, e.g. a store that connected later (``open_store(wait=False)``) and then could
        not migrate its schema: ``hub serve`` stops on it. A store that is ready when it is opened
        never calls it."""


def check_version(current: int, migrations: Sequence[tuple[int, str]]) -> None:
    """``StoreError`` when the schema is newer than every migration this code knows: a newer hub
    wrote it, and this one must not guess at its tables."""
    known = max((version for version, _ in migrations), default=0)
    if current > known:
        raise StoreError(f"the database schema is at version {current}, newer than this hub knows (version {known}); "
                         "run the sw-hub release that migrated it, or a newer one")


def held_by(row: OutboxRow | None, row_id: int, owner: str, attempt: int | None = None) -> OutboxRow:
    """The row, if ``owner`` still holds the lease of ``attempt`` (any attempt when None); else
    ``TransitionError`` (lease lost, leased again, or no row)."""
    if row is None:
        raise TransitionError(f"outbox row {row_id} does not exist")
    if row.state is not State.LEASED or row.lease_owner != owner:
        raise TransitionError(f"outbox row {row_id} is {row.state.value} (owner {row.lease_owner}); {owner} no longer holds it")
    if attempt is not None and row.attempts != attempt:
        raise TransitionError(f"outbox row {row_id} was leased again (attempt {row.attempts}) since attempt {attempt} began; "
                              "the outcome of the newer attempt counts")
    return row


def check_outcome(outcome: State) -> None:
    if outcome not in OUTCOMES:
        raise TransitionError(f"a leased row cannot become {outcome.value}")


__all__: Sequence[str] = (
    "Acceptance",
    "Attempt",
    "MessageRecord",
    "OutboxItem",
    "OutboxRow",
    "PurgeReport",
    "State",
    "Store",
    "Trace",
    "WriteFault",
)
