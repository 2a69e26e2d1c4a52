"""Delivery through the outbox: retries with backoff, dead letters, resend, no head-of-line blocking."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Iterator

import pytest

from hub.receiver import Receiver
from hub.retry import RetryPolicy
from hub.runtime import Runtime
from hub.store import OutboxRow, State

from .support import Sender, free_port, wait_until, write_config


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(port=free_port())
    yield r
    r.stop()


def build(tmp_path: Path, receiver: Receiver, **kwargs) -> tuple[Runtime, Sender]:  # type: ignore[no-untyped-def]
    runtime = Runtime.load(write_config(tmp_path, gateway_url=receiver.url, **kwargs))
    return runtime, Sender(runtime.config, "VN-MOIT")


def rows_of(runtime: Runtime, destination: str) -> list:  # type: ignore[type-arg]
    return runtime.store.rows(destination=destination, limit=10_000)


def test_delivers_to_http_and_file(tmp_path: Path, receiver: Receiver) -> None:
    runtime, moit = build(tmp_path, receiver.start())
    ids = [runtime.pipeline.submit(moit.message()).message_id for _ in range(5)]
    dispatcher = runtime.dispatcher()
    dispatcher.drain(20)
    dispatcher.stop()
    assert receiver.unique == 5 and receiver.redeliveries == 0
    assert {mid for _, mid in receiver.deliveries} == set(ids)
    files = sorted((tmp_path / "customs-inbox").glob("*.xml"))
    assert len(files) == 5 and not list((tmp_path / "customs-inbox").glob(".*.part"))
    assert all(r.state is State.DELIVERED for r in runtime.store.rows())
    runtime.close()


def test_partner_down_then_up_is_retried_with_backoff(tmp_path: Path, receiver: Receiver) -> None:
    runtime, moit = build(tmp_path, receiver, max_attempts=50, initial_delay=0.1, max_delay=0.4)
    for _ in range(10):
        runtime.pipeline.submit(moit.message())
    dispatcher = runtime.dispatcher()
    dispatcher.start()
    try:
        # customs (a folder) keeps flowing while the gateway is down: no head-of-line blocking
        assert wait_until(lambda: all(r.state is State.DELIVERED for r in rows_of(runtime, "VN-CUSTOMS")), 20)
        assert wait_until(lambda: all(r.attempts >= 2 for r in rows_of(runtime, "TH-ASW")), 20)
        assert all(r.state is not State.DELIVERED for r in rows_of(runtime, "TH-ASW"))
        receiver.start()
        assert wait_until(lambda: all(r.state is State.DELIVERED for r in rows_of(runtime, "TH-ASW")), 30)
    finally:
        dispatcher.stop()
    assert receiver.unique == 10
    trace = runtime.store.trace(rows_of(runtime, "TH-ASW")[0].message_id)
    attempts = [a for a in trace.attempts if a.row_id == rows_of(runtime, "TH-ASW")[0].id]
    assert attempts[0].outcome is State.PENDING and "cannot reach" in attempts[0].detail
    assert attempts[-1].outcome is State.DELIVERED
    gaps = [b.started_at - a.finished_at for a, b in zip(attempts, attempts[1:])]
    assert all(g >= 0.08 for g in gaps), gaps  # waited at least the backoff (0.1 s minus jitter)
    runtime.close()


def test_permanent_failure_is_dead_lettered_then_resent(tmp_path: Path, receiver: Receiver) -> None:
    receiver.status = 400
    runtime, moit = build(tmp_path, receiver.start())
    for _ in range(3):
        runtime.pipeline.submit(moit.message())
    dispatcher = runtime.dispatcher()
    dispatcher.drain(20)
    dead = runtime.store.rows(State.DEAD)
    assert len(dead) == 3 and all(r.destination == "TH-ASW" and r.attempts == 1 for r in dead)
    assert all("HTTP 400" in (r.last_error or "") and "does not accept" in (r.last_error or "") for r in dead)
    dispatcher.drain(1)
    assert len(runtime.store.rows(State.DEAD)) == 3  # a dead row is never picked up again
    receiver.status = 200
    for r in dead:
        runtime.store.resend(r.id, "operator:test", time.time())
    dispatcher.drain(20)
    dispatcher.stop()
    assert receiver.unique == 3 and all(r.state is State.DELIVERED for r in runtime.store.rows())
    assert {mid for _, mid in receiver.deliveries} == {r.message_id for r in dead}  # same message ids
    runtime.close()


def test_gives_up_after_max_attempts(tmp_path: Path, receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    receiver.status = 503
    runtime, moit = build(tmp_path, receiver.start(), max_attempts=3, initial_delay=0.01, max_delay=0.02)
    runtime.pipeline.submit(moit.message())
    dispatcher = runtime.dispatcher()
    with caplog.at_level(logging.WARNING, logger="hub.dispatcher"):
        dispatcher.drain(20)
    dispatcher.stop()
    (row,) = runtime.store.rows(destination="TH-ASW")
    assert row.state is State.DEAD and row.attempts == 3
    assert "gave up after 3 attempts" in (row.last_error or "") and "HTTP 503" in (row.last_error or "")
    # the operator watching the log learns of it, with the command that sends it again
    (line,) = [r.getMessage() for r in caplog.records if "dead-lettered" in r.getMessage()]
    assert f"row {row.id} to TH-ASW (message {row.message_id})" in line and "gave up after 3 attempts" in line
    assert f"hub outbox resend {row.id}" in line
    runtime.close()


def test_a_row_whose_deliveries_never_end_is_dead_lettered_not_retried_for_ever(tmp_path: Path, receiver: Receiver) -> None:
    """A message whose delivery stops the node (every attempt ends without an outcome, its lease
    expires and it is leased again) ends dead after the attempts allowed, not in a crash loop."""
    runtime, moit = build(tmp_path, receiver.start(), max_attempts=3)
    runtime.pipeline.submit(moit.message())
    for i in range(3):  # three nodes took it and died during the delivery: leases that expired
        (row,) = runtime.store.lease(f"crashed-{i}", "TH-ASW", 10, time.time(), 0.01)
        assert row.attempts == i + 1
        time.sleep(0.02)
    dispatcher = runtime.dispatcher()
    dispatcher.drain(20)
    dispatcher.stop()
    (row,) = runtime.store.rows(destination="TH-ASW")
    assert row.state is State.DEAD and receiver.unique == 0  # not attempted a fourth time
    assert "gave up before attempt 4: 3 attempts were started and at most 3 are allowed" in (row.last_error or "")
    trace = runtime.store.trace(row.message_id)
    assert any(e.event == "dead-lettered" and "gave up before attempt 4" in e.detail for e in trace.audit)
    # an operator's resend gives it a new budget
    runtime.store.resend(row.id, "operator:test", time.time())
    assert_delivered_once(runtime, receiver)


def test_after_a_resend_the_dead_letter_names_the_attempt_by_its_number_in_the_trace(
    tmp_path: Path, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """The sentence of a row dead-lettered again after a resend counts its attempts since the
    resend, and names attempts by the numbers ``hub trace`` gives them, which go on across resends."""
    receiver.status = 503
    runtime, moit = build(tmp_path, receiver.start(), max_attempts=2, initial_delay=0.01, max_delay=0.02)
    runtime.pipeline.submit(moit.message())

    def drain() -> OutboxRow:
        dispatcher = runtime.dispatcher()
        dispatcher.drain(20)
        dispatcher.stop()
        (row,) = runtime.store.rows(destination="TH-ASW")
        assert row.state is State.DEAD
        return row

    row = drain()  # attempts 1 and 2, both HTTP 503
    assert (row.last_error or "").startswith("gave up after 2 attempts: ")
    runtime.store.resend(row.id, "operator:test", time.time())
    with caplog.at_level(logging.INFO, logger="hub.dispatcher"):
        row = drain()  # attempts 3 and 4
    assert (row.last_error or "").startswith("gave up after 2 attempts since the last resend: ")
    assert any("attempt 3 failed" in r.getMessage() for r in caplog.records)  # the log says the trace's number
    numbers = [a.number for a in runtime.store.trace(row.message_id).attempts if a.row_id == row.id]
    assert numbers == [1, 2, 3, 4]

    runtime.store.resend(row.id, "operator:test", time.time())
    for i in range(3):  # three nodes took it and died during the delivery: attempts 5 to 7, without an outcome
        runtime.store.lease(f"crashed-{i}", "TH-ASW", 10, time.time(), 0.01)
        time.sleep(0.02)
    row = drain()
    said = "gave up before attempt 8: 3 attempts were started since the last resend and at most 3 are allowed"
    assert (row.last_error or "").startswith(said)
    trace = runtime.store.trace(row.message_id)
    last = [a for a in trace.attempts if a.row_id == row.id][-1]
    assert last.number == 8 and last.detail.startswith(said)
    assert any(e.event == "dead-lettered" and said in e.detail for e in trace.audit)
    runtime.close()


def assert_delivered_once(runtime: Runtime, receiver: Receiver) -> None:
    """A dispatcher delivers what is due; the one row to TH-ASW ends delivered, received once."""
    dispatcher = runtime.dispatcher()
    dispatcher.drain(20)
    dispatcher.stop()
    assert receiver.unique == 1 and runtime.store.rows(destination="TH-ASW")[0].state is State.DELIVERED
    runtime.close()


def test_one_lost_lease_does_not_dead_letter_a_row_even_with_a_single_attempt_allowed(tmp_path: Path, receiver: Receiver) -> None:
    runtime, moit = build(tmp_path, receiver.start(), max_attempts=1)
    runtime.pipeline.submit(moit.message())
    runtime.store.lease("crashed", "TH-ASW", 10, time.time(), 0.01)  # a node took it and stopped before delivering
    time.sleep(0.02)
    assert_delivered_once(runtime, receiver)


def test_an_outcome_the_store_refuses_for_a_moment_is_recorded_not_delivered_again(tmp_path: Path, receiver: Receiver) -> None:
    """While another process holds the store's write lock, ``complete`` answers TryAgain: the
    dispatcher records the outcome once it can, within the lease, instead of leaving the row to
    be delivered again when its lease expires."""
    from hub.errors import TryAgain

    runtime, moit = build(tmp_path, receiver.start())
    runtime.pipeline.submit(moit.message())
    real, refusals = runtime.store.complete, []

    def complete(*args, **kwargs):  # type: ignore[no-untyped-def]
        if len(refusals) < 3:
            refusals.append(args[0])
            raise TryAgain("the store is busy")
        return real(*args, **kwargs)

    runtime.store.complete = complete  # type: ignore[method-assign]
    dispatcher = runtime.dispatcher()
    dispatcher.drain(20)
    dispatcher.stop()
    assert len(refusals) == 3 and receiver.unique == 1 and receiver.redeliveries == 0
    assert all(r.state is State.DELIVERED and r.attempts == 1 for r in runtime.store.rows())
    runtime.close()


def test_check_warns_of_rows_no_dispatcher_takes_and_of_a_lease_shorter_than_a_delivery(tmp_path: Path, receiver: Receiver) -> None:
    import subprocess
    import sys

    from hub.store import Acceptance, OutboxItem

    from .support import REPO

    runtime, _moit = build(tmp_path, receiver, lease_seconds=2.0)
    # rows written while an agency "XX-OLD" was configured; it has since been removed from hub.toml
    runtime.store.accept(Acceptance("VN-MOIT", "m-old", time.time(), "CO-FORMD", "9", "r", b"receipt",
                                    (OutboxItem("XX-OLD", "r", b"<a/>"), OutboxItem("XX-OLD", "r", b"<b/>")), ()))
    assert runtime.stranded() == [
        "2 outbox row(s) to 'XX-OLD' wait for delivery, but 'XX-OLD' is no longer an agency in the configuration: "
        "they are delivered once it is configured again (`hub outbox list --destination XX-OLD` shows them)"]
    config = runtime.config.path
    runtime.close()
    out = subprocess.run([sys.executable, "-m", "hub.cli", "check", "--config", str(config)], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0 and "warning: 2 outbox row(s) to 'XX-OLD'" in out.stdout, out.stdout + out.stderr
    # a lease shorter than a delivery may take: a warning too (the test configurations keep leases short on purpose)
    assert "dispatcher.lease_seconds: warning: 2 s is not longer than delivery_timeout (3 s)" in out.stdout


def test_a_delivery_slower_than_its_lease_is_not_started_twice_and_its_outcome_counts(
    tmp_path: Path, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """The partner answers after 2.5 s, the lease is 1 s: the dispatcher leases the expired row
    again while its delivery is under way; it goes on under the new lease (one POST on the wire),
    the new lease is not counted as an attempt, and its outcome is recorded."""
    receiver.on_receive = lambda sender, message_id, body: time.sleep(2.5)
    runtime, moit = build(tmp_path, receiver.start(), lease_seconds=1.0)
    runtime.pipeline.submit(moit.message())
    dispatcher = runtime.dispatcher()
    assert dispatcher.drain(20)
    dispatcher.stop()
    (row,) = runtime.store.rows(destination="TH-ASW")
    assert receiver.unique == 1 and receiver.redeliveries == 0
    assert "it goes on under a new lease" in caplog.text  # leased again at least once during the delivery
    assert row.state is State.DELIVERED and row.attempts == 1  # one POST: one attempt, however many leases
    attempts = [a for a in runtime.store.trace(row.message_id).attempts if a.row_id == row.id]
    assert [a.outcome for a in attempts] == [State.DELIVERED]
    runtime.close()


def test_an_outcome_recorded_while_its_node_leases_the_row_again_goes_under_the_new_lease(tmp_path: Path, receiver: Receiver) -> None:
    """The race behind the test above: the node leases the row again just as the slow delivery
    records its outcome; the new lease is taken back as an attempt (``Store.uncount``) and the
    outcome is recorded, instead of being dropped (which left the row leased with nobody
    delivering it)."""
    runtime, moit = build(tmp_path, receiver.start(), lease_seconds=1.0)
    runtime.pipeline.submit(moit.message())
    dispatcher = runtime.dispatcher()
    real, calls = runtime.store.complete, []

    def complete(row_id, owner, *args, **kwargs):  # type: ignore[no-untyped-def]
        if not calls:  # the node's next round leases the (expired) row again right now
            (again,) = runtime.store.lease(owner, "TH-ASW", 1, time.time() + 2, 1.0)
            assert not dispatcher._start(again)  # the delivery under way keeps it
        calls.append(kwargs["attempt"])
        return real(row_id, owner, *args, **kwargs)

    runtime.store.complete = complete  # type: ignore[method-assign]
    (row,) = runtime.store.lease(dispatcher.owner, "TH-ASW", 1, time.time(), 1.0)
    assert dispatcher._start(row)
    dispatcher._deliver(row)
    (done,) = runtime.store.rows(destination="TH-ASW")
    assert calls == [row.attempts] and done.state is State.DELIVERED and done.attempts == row.attempts
    assert receiver.unique == 1
    runtime.close()


def test_backoff_never_overflows_with_many_attempts() -> None:
    policy = RetryPolicy(max_attempts=5000, initial_delay=2, max_delay=300, multiplier=2, jitter=0)
    assert policy.delay(1025) == 300 and policy.delay(4999) == 300


def test_backoff_is_capped_and_jittered() -> None:
    policy = RetryPolicy(max_attempts=20, initial_delay=1, max_delay=30, multiplier=2, jitter=0.2)
    delays = [policy.delay(n) for n in range(1, 12)]
    assert 0.8 <= delays[0] <= 1.2 and 1.6 <= delays[1] <= 2.4
    assert all(d <= 30 for d in delays) and max(delays) >= 24  # jitter never goes beyond max_delay
    assert len({policy.delay(5) for _ in range(20)}) > 1
    assert len({policy.delay(11) for _ in range(50)}) > 1  # at the cap, jitter still spreads retries below it
    assert policy.exhausted(20) and not policy.exhausted(19)


def test_a_running_dispatcher_is_handed_fresh_rows_without_leasing_them(tmp_path: Path, receiver: Receiver) -> None:
    """Rows of a message accepted while a delivery thread is free are written leased to the node's
    dispatcher and delivered at once: no lease transaction; a duplicate gives its slots back."""
    runtime, moit = build(tmp_path, receiver.start())
    dispatcher = runtime.dispatcher()
    leases: list[str] = []
    lease = runtime.store.lease

    def counting_lease(owner, destination, *args):  # type: ignore[no-untyped-def]
        rows = lease(owner, destination, *args)
        leases.extend(r.destination for r in rows)
        return rows

    runtime.store.lease = counting_lease  # type: ignore[method-assign]
    dispatcher.start()
    try:
        messages = [moit.message() for _ in range(5)]
        for m in messages:
            assert runtime.pipeline.submit(m).accepted
        assert wait_until(lambda: all(r.state is State.DELIVERED for r in runtime.store.rows()), 20)
        assert receiver.unique == 5 and receiver.redeliveries == 0
        assert leases == [], "rows of fresh messages were leased instead of handed over"
        assert all(r.attempts == 1 and r.lease_owner is None for r in runtime.store.rows())
        assert runtime.pipeline.submit(messages[0]).duplicate
        assert wait_until(lambda: not any(dispatcher._inflight.values()), 5)
    finally:
        dispatcher.stop()
        runtime.close()


def test_a_backlog_is_delivered_before_fresh_rows_are_handed_over(tmp_path: Path) -> None:
    """While rows wait in the store for a destination, fresh rows to it are left to the lease (oldest
    first), not handed over ahead of them; other destinations still take theirs at once."""
    import socket

    silent = socket.socket()  # a gateway that takes connections and never answers: deliveries hang
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    runtime = Runtime.load(write_config(tmp_path, gateway_url=f"http://127.0.0.1:{silent.getsockname()[1]}/"))
    moit = Sender(runtime.config, "VN-MOIT")
    for _ in range(12):
        runtime.pipeline.submit(moit.message())
    dispatcher = runtime.dispatcher()
    dispatcher.start()
    try:
        # four rows in flight (each waits for its 3 s time-out), eight more due in the store
        assert wait_until(lambda: dispatcher._inflight["TH-ASW"] == 4 and "TH-ASW" in dispatcher._maybe_more, 2)
        assert dispatcher.reserve(["TH-ASW"]) is None
        assert wait_until(lambda: all(r.state is State.DELIVERED for r in rows_of(runtime, "VN-CUSTOMS"))
                          and "VN-CUSTOMS" not in dispatcher._maybe_more, 2)
        hold = dispatcher.reserve(["TH-ASW", "VN-CUSTOMS"])
        assert hold is not None and hold.destinations == {"VN-CUSTOMS"}
        dispatcher.hand_over(hold, ())
    finally:
        dispatcher.stop()
        runtime.close()
        silent.close()


def test_stop_waits_for_reservations_and_gives_back_rows_handed_over_late(tmp_path: Path, receiver: Receiver) -> None:
    """A message accepted while the dispatcher stops: stop() waits for the acceptance's hand-over,
    the row is not started, and it goes back to pending with no attempt counted."""
    import threading

    from dataclasses import replace as replaced

    from hub.store import Acceptance, OutboxItem

    runtime, _ = build(tmp_path, receiver.start())
    dispatcher = runtime.dispatcher()
    dispatcher.start()
    hold = dispatcher.reserve(["TH-ASW"])
    assert hold is not None
    stopping = threading.Thread(target=dispatcher.stop)
    stopping.start()
    time.sleep(0.3)
    assert stopping.is_alive(), "stop() did not wait for the reservation"
    assert dispatcher.reserve(["TH-ASW"]) is None  # stopping: no new reservation
    acceptance = Acceptance("VN-MOIT", "late-1", time.time(), "CO-FORMD", "9", "r", b"receipt", (OutboxItem("TH-ASW", "r", b"<x/>"),), ())
    _, _, rows = runtime.store.accept(replaced(acceptance, held=hold))
    assert [r.state for r in rows] == [State.LEASED]
    dispatcher.hand_over(hold, rows)
    stopping.join(10)
    assert not stopping.is_alive()
    row = runtime.store.get(rows[0].id)
    assert row is not None and (row.state, row.attempts, row.lease_owner) == (State.PENDING, 0, None)
    assert receiver.unique == 0 and dispatcher._inflight["TH-ASW"] == 0
    runtime.close()


def counted(runtime: Runtime, destination: str, delay: float = 0.0) -> list[int]:
    """The attempt numbers of the deliveries the adapter of ``destination`` starts (each after ``delay`` s)."""
    adapter = runtime.create_adapters()[destination]
    real, calls = adapter.deliver, []

    def deliver(delivery):  # type: ignore[no-untyped-def]
        calls.append(delivery.attempt)
        time.sleep(delay)
        return real(delivery)

    adapter.deliver = deliver  # type: ignore[method-assign]
    return calls


def test_an_outcome_landing_between_a_lease_and_its_start_is_kept_and_the_row_not_started_again(
    tmp_path: Path, receiver: Receiver
) -> None:
    """The node leases the expired row of a slow delivery again, and the delivery's outcome arrives
    after that lease committed but before the round reaches the row: the outcome waits for the
    round, goes under the new lease, and the row is not started a second time."""
    receiver.on_receive = lambda sender, message_id, body: time.sleep(1.5)
    runtime, moit = build(tmp_path, receiver.start(), lease_seconds=1.0)
    runtime.pipeline.submit(moit.message())
    dispatcher = runtime.dispatcher()
    dispatcher.run_once()  # leases the row (attempt 1) and starts its delivery
    (row,) = rows_of(runtime, "TH-ASW")
    time.sleep(1.2)  # the lease has ended; the partner has not answered yet
    real_lease = runtime.store.lease

    def lease(*args):  # type: ignore[no-untyped-def]
        rows = real_lease(*args)
        if rows:
            time.sleep(0.5)  # committed; the answer arrives now, before the round starts the row
        return rows

    runtime.store.lease = lease  # type: ignore[method-assign]
    dispatcher.run_once()
    runtime.store.lease = real_lease  # type: ignore[method-assign]
    assert dispatcher.drain(20)
    dispatcher.stop()
    done = runtime.store.get(row.id)
    assert receiver.unique == 1 and receiver.redeliveries == 0
    assert done is not None and done.state is State.DELIVERED and done.attempts == 1
    assert [a.outcome for a in runtime.store.trace(row.message_id).attempts if a.row_id == row.id] == [State.DELIVERED]
    runtime.close()


def test_a_slow_partner_asking_for_retries_gets_every_attempt_allowed(tmp_path: Path, receiver: Receiver) -> None:
    """Leases that expire during one slow delivery are not counted as attempts: with max_attempts 3
    a partner answering 503 after 2.5 s (lease 1 s) is tried three times, not dead-lettered by the
    guard against deliveries that never end after one."""
    receiver.status = 503
    runtime, moit = build(tmp_path, receiver.start(), lease_seconds=1.0, max_attempts=3)
    calls = counted(runtime, "TH-ASW", delay=2.5)
    runtime.pipeline.submit(moit.message())
    dispatcher = runtime.dispatcher()
    dispatcher.start()
    (row,) = rows_of(runtime, "TH-ASW")
    assert wait_until(lambda: runtime.store.get(row.id).state is State.DEAD, 30)  # type: ignore[union-attr]
    dispatcher.stop()
    dead = runtime.store.get(row.id)
    assert calls == [1, 2, 3], calls
    assert dead is not None and dead.attempts == 3 and dead.last_error.startswith("gave up after 3 attempts")  # type: ignore[union-attr]
    runtime.close()


def test_a_lease_too_short_for_hand_overs_leaves_fresh_rows_pending(tmp_path: Path, receiver: Receiver) -> None:
    """lease_seconds 2 is no longer than delivery_timeout (3): a row handed over could never have
    enough of its lease left, so fresh rows are written pending (not leased, then parked for a
    lease and charged an attempt never made), and every allowed attempt is made."""
    receiver.status = 503
    runtime, moit = build(tmp_path, receiver.start(), lease_seconds=2.0, max_attempts=2)
    calls = counted(runtime, "TH-ASW")
    dispatcher = runtime.dispatcher()
    dispatcher.start()
    runtime.pipeline.submit(moit.message())
    (row,) = rows_of(runtime, "TH-ASW")
    assert wait_until(lambda: runtime.store.get(row.id).state is State.DEAD, 20)  # type: ignore[union-attr]
    dispatcher.stop()
    assert calls == [1, 2], calls
    runtime.close()


def test_a_row_handed_over_too_late_is_given_back_uncounted(tmp_path: Path, receiver: Receiver) -> None:
    """An acceptance so slow that its held row's lease could end during the delivery: the row is
    given back at once (pending, no attempt counted) instead of waiting for its lease to end."""
    runtime, moit = build(tmp_path, receiver.start(), lease_seconds=30.0)
    dispatcher = runtime.dispatcher()
    dispatcher.start()
    real_accept = runtime.store.accept
    seen: list = []

    def slow_accept(acceptance):  # type: ignore[no-untyped-def]
        accepted = real_accept(acceptance)
        seen.extend(runtime.store.rows(destination="TH-ASW"))  # as written: leased to the dispatcher
        dispatcher.clock = lambda: time.time() + 28  # the transaction "took" 28 s of the 30 s lease
        return accepted

    runtime.store.accept = slow_accept  # type: ignore[method-assign]
    runtime.pipeline.submit(moit.message())
    dispatcher.clock = time.time
    assert seen and seen[0].state is State.LEASED and seen[0].attempts == 1
    assert receiver.wait_for(1, 10)
    dispatcher.stop()
    (row,) = rows_of(runtime, "TH-ASW")
    assert row.state is State.DELIVERED and row.attempts == 1  # given back, then leased and delivered once
    runtime.close()


def test_a_queued_row_whose_lease_is_nearly_over_is_given_back_not_delivered(tmp_path: Path, receiver: Receiver) -> None:
    """A row that waited behind a delivery until less than delivery_timeout of its lease was left
    is not delivered under it (its lease could end mid-delivery and another node take it too): it
    is given back, uncounted, and delivered under a fresh lease."""
    runtime, moit = build(tmp_path, receiver.start(), lease_seconds=30.0)
    runtime.pipeline.submit(moit.message())
    dispatcher = runtime.dispatcher()
    (row,) = runtime.store.lease(dispatcher.owner, "TH-ASW", 1, time.time(), 1.0)  # 1 s left < 3 s timeout
    dispatcher._inflight["TH-ASW"] += 1  # its slot, as run_once takes it
    assert dispatcher._start(row)
    dispatcher._deliver(row)
    back = runtime.store.get(row.id)
    assert receiver.unique == 0 and back is not None and back.state is State.PENDING and back.attempts == 0
    assert dispatcher.drain(10)
    (done,) = rows_of(runtime, "TH-ASW")
    assert receiver.unique == 1 and done.state is State.DELIVERED and done.attempts == 1
    runtime.close()
