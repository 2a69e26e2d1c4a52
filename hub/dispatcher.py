"""The dispatcher: leases due outbox rows and hands them to adapters, per destination.

Each destination has its own worker pool of ``concurrency`` threads, so a slow or dead partner
never holds up the others. A running dispatcher is also handed its node's fresh rows: the
pipeline ``reserve``s a free delivery slot before the acceptance's transaction, the store writes
the row already leased to this dispatcher, and ``hand_over`` starts its delivery (no lease
transaction); rows waiting in the store keep going first. Outcomes map onto the store's
transitions:

    adapter DELIVERED          -> delivered
    adapter RETRY / exception  -> pending with capped, jittered backoff, or dead after max attempts
    adapter FAILED             -> dead, keeping the partner's error
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Mapping, Sequence

from adapters import Adapter, Delivery, Outcome, Result
from adapters.base import one_line

from .config import DispatcherSettings
from .errors import HubError, TransitionError, TryAgain
from .events import StatusEvents
from .retry import RetryPolicy
from .store import Hold, OutboxRow, State, Store

log = logging.getLogger("hub.dispatcher")


def new_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Dispatcher:
    # a row leased this many times (or max_attempts, if more) without an outcome is dead-lettered
    LEASES_WITHOUT_OUTCOME = 3
    # recording an outcome the store refuses for now: again every so often, until this close to the lease's end
    COMPLETE_RETRY_SECONDS = 0.2
    COMPLETE_MARGIN = 2.0

    def __init__(
        self,
        store: Store,
        adapters: Mapping[str, Adapter],
        policies: Mapping[str, RetryPolicy],
        settings: DispatcherSettings,
        default_policy: RetryPolicy = RetryPolicy(),
        owner: str | None = None,
        clock: Callable[[], float] = time.time,
        events: StatusEvents | None = None,
    ) -> None:
        self.store, self.adapters, self.policies, self.settings = store, adapters, policies, settings
        self.events = events  # status events, recorded in the same transaction as each outcome
        self.default_policy = default_policy
        self.owner = owner or new_owner()
        self.clock = clock
        self._inflight = {d: 0 for d in adapters}  # rows leased and handed to the pool, per destination
        # row id -> (attempt, lease end) of the lease its delivery under way holds (``Store.complete``'s
        # ``attempt``): a delivery slower than its lease whose row this dispatcher leases again
        # goes on under the new lease instead of being started twice
        self._running: dict[int, tuple[int, float]] = {}
        # lease rounds of ``run_once`` under way per destination, from the lease to its rows' start:
        # an outcome the store refuses as stale waits for them (``_leased_again``)
        self._rounds = {d: 0 for d in adapters}
        # Rows queued behind the busy deliveries, so a delivery thread that finishes takes the next
        # row at once and rows are leased several per transaction. Only when a queued row cannot
        # outlive its lease: it waits behind at most one delivery (each bounded by the timeout).
        c = settings.concurrency
        self._prefetch = c if settings.lease_seconds > 2 * settings.delivery_timeout + 5 else 0
        # a row handed over must have this much of its lease left: time for its delivery, and with
        # queued rows (``_prefetch``) for one delivery ahead of it too
        self._fresh = settings.delivery_timeout * (2 if self._prefetch else 1)
        self._pools = {d: ThreadPoolExecutor(settings.concurrency, thread_name_prefix=f"deliver-{d}") for d in adapters}
        self._lock = threading.Lock()
        self._reserved = 0  # reservations (``reserve``) not yet ended by ``hand_over``
        self._no_reservations = threading.Condition(self._lock)
        self._round_over = threading.Condition(self._lock)
        self._wake = threading.Event()
        # destinations that may have due rows beyond those in flight (the last lease was full, or
        # found no free slot): only for them does a finished delivery look at the store again;
        # new rows wake the dispatcher themselves (Pipeline.on_accept, the store's notifications)
        self._maybe_more: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- life cycle -----------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dispatcher", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Stops leasing, lets deliveries in flight finish, gives back anything still held."""
        with self._lock:
            self._stop.set()  # under the lock: no reservation starts from now on
            # acceptances in flight with a reservation end it soon (their store transaction)
            self._no_reservations.wait_for(lambda: self._reserved == 0, timeout)
        self._wake.set()
        if self._thread:
            self._thread.join(timeout)
        for pool in self._pools.values():
            pool.shutdown(wait=True)
        try:
            self.store.release(self.owner, self.clock())
        except HubError as exc:
            log.warning("could not release leases on stop (they expire by themselves): %s", exc)

    def _run(self) -> None:
        unavailable = 0.0  # when the store's outage was last logged: once a minute, not every poll
        while not self._stop.is_set():
            self._wake.clear()  # a wake-up from now on (new rows, a freed slot) ends the wait below at once
            try:
                self.run_once()
                if unavailable:
                    log.info("dispatcher: store available again")
                    unavailable = 0.0
            except HubError as exc:
                if time.monotonic() - unavailable > 60:
                    log.warning("dispatcher: store unavailable, retrying: %s", exc)
                    unavailable = time.monotonic()
            except Exception:  # a bug must not stop this node's deliveries for good
                log.exception("dispatcher: a round failed; the next one follows")
            self.store.wait_for_work(self.settings.poll_interval, self._wake)  # PostgreSQL: LISTEN/NOTIFY

    # -- work -----------------------------------------------------------------------------------

    def run_once(self) -> int:
        """Leases due rows for every destination with a free slot and starts their delivery."""
        taken = 0
        concurrency = self.settings.concurrency
        for destination, pool in self._pools.items():
            with self._lock:
                inflight = self._inflight[destination]
                free = concurrency + self._prefetch - inflight
                # a delivery thread with nothing to do takes what is due now; otherwise wait until
                # a whole batch can be queued behind the busy ones
                if free <= 0 or (inflight >= concurrency and free < concurrency):
                    self._maybe_more.add(destination)
                    continue
                self._inflight[destination] += free  # the slots are this lease's (``reserve`` runs meanwhile)
                self._rounds[destination] += 1
            try:
                taken += self._lease_and_start(destination, pool, free)
            finally:
                with self._lock:
                    self._rounds[destination] -= 1
                    self._round_over.notify_all()
        return taken

    def _lease_and_start(self, destination: str, pool: ThreadPoolExecutor, free: int) -> int:
        rows: list[OutboxRow] = []
        try:
            rows = self.store.lease(self.owner, destination, free, self.clock(), self.settings.lease_seconds)
        finally:
            with self._lock:
                self._inflight[destination] -= free - len(rows)
        if len(rows) < free:
            self._maybe_more.discard(destination)
        else:
            self._maybe_more.add(destination)
        started = 0
        for row in rows:
            if self._start(row):
                pool.submit(self._deliver, row)
                started += 1
        return started

    def _start(self, row: OutboxRow) -> bool:
        """Notes a leased row's delivery as under way; False (and its slot given back) when it
        already is: its lease expired while the partner was slow, and the delivery under way now
        holds the new one."""
        with self._lock:
            again = row.id in self._running
            self._running[row.id] = (row.attempts, row.lease_until or 0.0)
            if again:
                self._inflight[row.destination] -= 1
        if again:
            log.warning("row %s to %s: delivery still under way after its lease of %.0f s; it goes on under a new lease",
                        row.id, row.destination, self.settings.lease_seconds)
            self._uncount(row)
        return not again

    def _uncount(self, row: OutboxRow) -> None:
        """The new lease of a row whose delivery goes on under it is not an attempt of its own: the
        store takes the count back, and the delivery's outcome goes under the earlier number."""
        try:
            if not self.store.uncount(row.id, self.owner, row.attempts):
                return  # the delivery under way has already recorded its outcome
        except HubError as exc:
            log.warning("row %s: the new lease stays counted as an attempt (%s)", row.id, exc)
            return
        with self._lock:
            if self._running.get(row.id, (None,))[0] == row.attempts:
                self._running[row.id] = (row.attempts - 1, row.lease_until or 0.0)

    def _leased_again(self, row: OutboxRow, lease: tuple[int, float]) -> bool:
        """After the store refused an outcome as stale: whether this dispatcher holds a newer lease
        of the row for the delivery under way (``_start``). A lease round of the row's destination
        between its lease and its rows' start is waited for: without that wait, an outcome landing
        in between was dropped and the row started a second time."""
        with self._lock:
            self._round_over.wait_for(lambda: self._rounds[row.destination] == 0, self.settings.lease_seconds)
            now = self._running.get(row.id)
            return now is not None and now != lease  # a new lease (even one of the same number, uncounted)

    def _give_back(self, row: OutboxRow, attempt: int, why: str) -> None:
        """Gives back a row this dispatcher will not deliver under its lease (not counted as an
        attempt; due again at once, for any node); if the store cannot, the lease expires by itself."""
        try:
            given = self.store.give_back(row.id, self.owner, attempt, self.clock())
        except HubError as exc:
            log.warning("row %s to %s: %s; not given back (%s), taken again when its lease expires", row.id, row.destination, why, exc)
            return
        if given:
            log.info("row %s to %s: %s; given back", row.id, row.destination, why)
            self._wake.set()

    # -- rows handed over by the pipeline (Store.accept with a Hold) ---------------------------

    def reserve(self, destinations: Iterable[str]) -> Hold | None:
        """A delivery slot for a freshly accepted message's row to each of ``destinations`` whose
        pool has a thread free (or room in its queue) and no backlog in the store, so the row is
        written already leased to this dispatcher (``Hold``) and delivered at once, without a lease
        transaction. Destinations with a backlog are left to ``run_once``, oldest rows first. Each
        reservation must be ended by ``hand_over``."""
        if self.settings.lease_seconds <= self._fresh:
            # a row handed over needs ``_fresh`` of its lease left, which a lease this short never has:
            # each fresh row would be written leased, then wait for its lease to end, charged an attempt
            return None
        limit = self.settings.concurrency + self._prefetch
        taken = []
        with self._lock:
            if self._thread is None or self._stop.is_set():  # only a running dispatcher takes rows
                return None
            for destination in set(destinations):
                if destination in self._pools and destination not in self._maybe_more and self._inflight[destination] < limit:
                    self._inflight[destination] += 1
                    taken.append(destination)
            if taken:
                self._reserved += 1
        if not taken:
            return None
        return Hold(self.owner, self.settings.lease_seconds, frozenset(taken))

    def hand_over(self, hold: Hold, rows: Sequence[OutboxRow]) -> None:
        """Starts the delivery of the rows the store wrote leased for ``hold`` (none if the message
        was a duplicate or its transaction failed) and gives back the slots they did not use.

        A row is not started if the dispatcher is stopping (``stop`` waits for every reservation to
        end, then gives back what this node holds) or if the acceptance took so long that the row's
        lease could end during its delivery (it expires and is leased again, by any node)."""
        unused = [d for d in hold.destinations if not any(r.destination == d for r in rows)]
        declined: list[OutboxRow] = []
        now = self.clock()
        try:
            for row in rows:
                if self._stop.is_set() or (row.lease_until or 0) - now < self._fresh:
                    unused.append(row.destination)
                    declined.append(row)
                    continue
                if self._start(row):
                    self._pools[row.destination].submit(self._deliver, row)
        finally:
            with self._lock:
                for destination in unused:
                    self._inflight[destination] -= 1
                self._reserved -= 1
                if self._reserved == 0:
                    self._no_reservations.notify_all()
        for row in declined:  # not left leased until its lease ends, charged an attempt never made
            self._give_back(row, row.attempts, "handed over with too little of its lease left, or while stopping")

    def drain(self, timeout: float = 30.0) -> bool:
        """Delivers until no row is pending or leased (tests and the demo); False on time-out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            taken = self.run_once()
            with self._lock:
                busy = any(self._inflight.values())
            if not taken and not busy:
                open_rows = sum(n for (_, state), n in self.store.counts().items() if state in (State.PENDING, State.LEASED))
                if open_rows == 0:
                    return True
            time.sleep(0.01)
        return False

    def _deliver(self, row: OutboxRow) -> None:
        started = self.clock()
        try:
            if self._lease_too_short(row, started):
                return
            policy = self.policies.get(row.route, self.default_policy)
            allowed = max(policy.max_attempts, self.LEASES_WITHOUT_OUTCOME)
            if row.attempts - 1 >= allowed:
                # as many leases as allowed before this one, and none of them settled the row: each
                # ended without an outcome (a node stopped, or lost its store, during the delivery or
                # before it began). A message whose delivery stops the node must not do it for ever.
                since = " since the last resend" if row.attempt_base else ""
                detail = (f"gave up before attempt {row.attempt_base + row.attempts}: {row.attempts - 1} attempts were started"
                          f"{since} and at most {allowed} are allowed (an attempt counts from its lease, also when a node "
                          "stopped or lost its store before it ended)")
                log.warning("row %s to %s: %s", row.id, row.destination, detail)
                self._complete(row, State.DEAD, detail, started, self.clock())
                return
            adapter = self.adapters[row.destination]
            try:
                result = adapter.deliver(
                    Delivery(row.id, row.message_id, row.sender, row.destination, row.payload, row.attempts, row.route)
                )
            except Exception as exc:  # an adapter bug must not lose the row: treat as transient
                log.exception("adapter %s raised on row %s", row.destination, row.id)
                result = Result(Outcome.RETRY, f"adapter error: {type(exc).__name__}: {exc}")
            self._settle(row, result, started)
        except HubError as exc:
            log.warning("row %s: outcome not recorded (%s); the lease will expire and it will be retried", row.id, exc)
        except Exception:  # a bug: the row stays leased until its lease expires, then goes again
            log.exception("row %s: outcome not recorded; the lease will expire and it will be retried", row.id)
        finally:
            with self._lock:
                self._inflight[row.destination] -= 1
                self._running.pop(row.id, None)
            if row.destination in self._maybe_more:
                self._wake.set()

    def _lease_too_short(self, row: OutboxRow, now: float) -> bool:
        """Whether the row's lease ends before a delivery started now could (a queued row waited
        behind a delivery whose outcome took long to record): then it is given back, not delivered,
        since once its lease ends another node may deliver it too. Not with a lease no longer than
        ``delivery_timeout`` (``hub check`` warns of it), under which no row would ever go."""
        attempt, until = self._running.get(row.id, (row.attempts, row.lease_until or 0.0))
        timeout = self.settings.delivery_timeout
        if self.settings.lease_seconds <= timeout or until - now >= timeout:
            return False
        self._give_back(row, attempt, f"{max(until - now, 0):.1f} s of its lease left, less than delivery_timeout ({timeout:g} s)")
        return True

    def _complete(self, row: OutboxRow, state: State, detail: str, started: float, now: float, next_at: float | None = None) -> None:
        """Records the outcome; while the store answers "try again" (e.g. another process holds
        its write lock), tries again as long as the lease lasts, stopping or not: an outcome not
        recorded means the row is delivered once more when its lease expires or is given back."""
        extra = self.events.settled(row, state, detail, now) if self.events is not None else ()
        while True:
            lease = self._running.get(row.id, (row.attempts, row.lease_until or 0.0))
            attempt, lease_until = lease
            try:
                self.store.complete(row.id, self.owner, state, detail, started, now, next_at, enqueue=extra, attempt=attempt)
                return
            except TransitionError:
                # this node may have leased the row again meanwhile (``_start``): this delivery holds
                # the new lease, so its outcome is recorded under it
                if not self._leased_again(row, lease):
                    raise
            except TryAgain:
                if self.clock() > lease_until - self.COMPLETE_MARGIN:
                    raise
                time.sleep(self.COMPLETE_RETRY_SECONDS)

    def _settle(self, row: OutboxRow, result: Result, started: float) -> None:
        now = self.clock()
        policy = self.policies.get(row.route, self.default_policy)
        # what an adapter says often quotes the partner: kept on one line, without control characters
        detail = one_line(result.detail, 1000)

        def complete(state: State, detail: str, next_at: float | None = None) -> None:
            self._complete(row, state, detail, started, now, next_at)

        if result.outcome is Outcome.DELIVERED:
            complete(State.DELIVERED, detail)
        elif result.outcome is Outcome.FAILED or policy.exhausted(row.attempts):
            since = " since the last resend" if row.attempt_base else ""
            why = "permanent failure" if result.outcome is Outcome.FAILED else f"gave up after {row.attempts} attempts{since}"
            complete(State.DEAD, f"{why}: {detail}")
            log.warning("row %s to %s (message %s): dead-lettered, %s: %s; `hub outbox resend %s` sends it again",
                        row.id, row.destination, row.message_id, why, detail, row.id)
        else:
            delay = policy.delay(row.attempts, asked=result.retry_after)
            complete(State.PENDING, detail, now + delay)
            log.info("row %s to %s: attempt %s failed (%s); next in %.1fs", row.id, row.destination, row.attempt_base + row.attempts,
                     detail, delay)

