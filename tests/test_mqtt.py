"""MQTT against Debian's mosquitto: QoS 1 deliveries with persistent sessions, the inbox that acks
only what the hub recorded, broker restarts and a hub crash in the middle of streams, status events."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
from lxml import etree

from hub.config import load_config
from hub.envelope import read_header
from hub.errors import TryAgain
from hub.receiver import Receiver
from hub.runtime import Runtime, check
from hub.store import State
from adapters.mqtt import MqttAdapter  # after hub: the hub package imports the adapters

from .mosquitto import Broker, Peer
from .support import HubProcess, Sender, free_port, message_id_of, wait_until, write_config

IN, OUT, ACK = "nsw/VN-MOT/in", "nsw/VN-MOT/out", "nsw/VN-MOT/ack"


def mqtt_agency(broker: Broker, folder: Path, *, agency_id: str = "VN-MOT", options: str = "") -> str:
    return f"""
[[agencies]]
id = "{agency_id}"
name = "Ministry of Transport"
country = "VN"
adapter = "mqtt"
endpoint = "{broker.url}"
certificates = ["{folder}/keys/{agency_id}.crt"]
signing_key = "{folder}/keys/{agency_id}.key"
options = {{ topic = "{IN}", subscribe = ["{OUT}"], reply_topic = "{ACK}", response_topics = ["test/"], timeout = 2, reconnect_max = 0.5{options} }}

[[routes]]
name = "co-to-{agency_id}"
from = "VN-MOIT"
to = "{agency_id}"
document_type = "CO-FORMD"
schema = "co"
deliver = [{{ agency = "{agency_id}" }}]

[[routes]]
name = "co-from-{agency_id}"
from = "{agency_id}"
document_type = "CO-FORMD"
schema = "co"
deliver = [{{ agency = "VN-CUSTOMS" }}]
"""


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "broker").start()
    yield b
    b.stop()


def stored_messages(folder: Path, sender: str) -> set[str]:
    with sqlite3.connect(folder / "hub.db") as db:
        return {r[0] for r in db.execute("SELECT message_id FROM messages WHERE sender = ?", (sender,))}


# -- deliveries ------------------------------------------------------------------------------------


def test_stream_survives_a_broker_restart_with_nothing_lost(tmp_path: Path, broker: Broker) -> None:
    """500 deliveries with QoS 1; the broker restarts twice in the middle. The ministry's
    subscriber (persistent session) gets every message; rows delivered only after a PUBACK."""
    ministry = Peer(broker, "ministry-VN-MOT", (IN,))
    runtime = Runtime.load(write_config(tmp_path, extra=mqtt_agency(broker, tmp_path), max_attempts=100, max_delay=0.3))
    moit = Sender(runtime.config, "VN-MOIT")
    total = 500
    messages = [moit.message(to="VN-MOT") for _ in range(total)]
    dispatcher = runtime.dispatcher()
    dispatcher.start()
    started = time.perf_counter()
    try:
        def submit() -> None:
            for m in messages:
                assert runtime.pipeline.submit(m).accepted

        feeder = threading.Thread(target=submit)
        feeder.start()
        for fraction in (0.25, 0.6):
            assert wait_until(lambda: ministry.unique >= total * fraction, 60)
            broker.restart(down_for=0.5)
        feeder.join()
        assert wait_until(lambda: all(r.state is State.DELIVERED for r in runtime.store.rows(destination="VN-MOT", limit=10_000)), 60)
        elapsed = time.perf_counter() - started
        assert wait_until(lambda: ministry.unique == total, 30), f"{ministry.unique} of {total}"
        rows = runtime.store.rows(destination="VN-MOT", limit=10_000)
    finally:
        dispatcher.stop()
        ministry.close()
        runtime.close()
    assert set(ministry.received) == {message_id_of(m) for m in messages}
    retried = sum(1 for r in rows if r.attempts > 1)
    duplicates = sum(len(v) - 1 for v in ministry.received.values())
    print(f"\nmqtt: {total} deliveries with 2 broker restarts in {elapsed:.1f} s; {retried} rows retried, "
          f"{duplicates} duplicates on the wire (at least once), 0 lost")


def test_broker_down_is_retried_then_delivered_and_refusals_fail(tmp_path: Path, broker: Broker) -> None:
    broker.stop()
    extra = mqtt_agency(broker, tmp_path) + mqtt_agency(broker, tmp_path, agency_id="VN-BAD", options=', topic = "forbidden/x"').replace(
        f'topic = "{IN}", subscribe = ["{OUT}"], ', "")
    runtime = Runtime.load(write_config(tmp_path, extra=extra, max_attempts=100, max_delay=0.2))
    moit = Sender(runtime.config, "VN-MOIT")
    ack = runtime.pipeline.submit(moit.message(to="VN-MOT"))
    dispatcher = runtime.dispatcher()
    dispatcher.start()
    try:
        assert wait_until(lambda: runtime.store.rows(destination="VN-MOT")[0].attempts >= 2, 20)
        assert "not reachable" in (runtime.store.rows(destination="VN-MOT")[0].last_error or "")
        broker.start()
        ministry = Peer(broker, "ministry-VN-MOT", (IN,))
        assert wait_until(lambda: runtime.store.rows(destination="VN-MOT")[0].state is State.DELIVERED, 20)
        assert wait_until(lambda: ack.message_id in ministry.received, 10)
        bad = runtime.pipeline.submit(moit.message(to="VN-BAD"))
        assert wait_until(lambda: runtime.store.rows(destination="VN-BAD")[0].state is State.DEAD, 20)
        row = runtime.store.rows(destination="VN-BAD")[0]
        assert row.attempts == 1 and "Not authorized" in (row.last_error or ""), row.last_error
        assert bad.accepted
        ministry.close()
    finally:
        dispatcher.stop()
        runtime.close()


def test_mqtt_311_delivers_and_receives(tmp_path: Path, broker: Broker) -> None:
    runtime = Runtime.load(write_config(tmp_path, extra=mqtt_agency(broker, tmp_path, options=', protocol = "3.1.1"')))
    ministry = Peer(broker, "ministry-311", (IN, ACK), protocol=4)
    moit, mot = Sender(runtime.config, "VN-MOIT"), Sender(runtime.config, "VN-MOT")
    inbox = runtime.create_adapters()["VN-MOT"].inbound(runtime.pipeline.submit)
    assert inbox is not None
    inbox.start()
    dispatcher = runtime.dispatcher()
    dispatcher.start()
    try:
        ids = [runtime.pipeline.submit(moit.message(to="VN-MOT")).message_id for _ in range(5)]
        assert wait_until(lambda: set(ids) <= set(ministry.received), 20)
        sent = [mot.message(to="VN-CUSTOMS") for _ in range(5)]
        for m in sent:
            ministry.publish(OUT, m).wait_for_publish(5)
        assert wait_until(lambda: stored_messages(tmp_path, "VN-MOT") == {message_id_of(m) for m in sent}, 20)
        # receipts come back on the reply topic (3.1.1 has no Response Topic)
        assert wait_until(lambda: ministry.unique >= 10, 10)
    finally:
        inbox.stop()
        dispatcher.stop()
        ministry.close()
        runtime.close()


# -- the inbox -------------------------------------------------------------------------------------


def test_inbox_acks_only_what_the_hub_took(tmp_path: Path, broker: Broker) -> None:
    """While the store refuses (TryAgain) nothing is acknowledged; the inbox stops; a new one (a
    restarted hub) gets the same message again from the persistent session and takes it."""
    runtime = Runtime.load(write_config(tmp_path, extra=mqtt_agency(broker, tmp_path)))
    adapter = runtime.create_adapters()["VN-MOT"]
    assert isinstance(adapter, MqttAdapter)
    mot = Sender(runtime.config, "VN-MOT")
    tries: list[float] = []

    def refusing(data: bytes, who: str | None):  # type: ignore[no-untyped-def]
        tries.append(time.monotonic())
        raise TryAgain("store down")

    first = adapter.inbound(refusing)
    assert first is not None
    first.start()
    agency = Peer(broker, "agency-VN-MOT", (ACK,))
    message = mot.message(to="VN-CUSTOMS")
    agency.publish(OUT, message, response_topic="test/replies", correlation=b"c-1").wait_for_publish(5)
    assert wait_until(lambda: len(tries) >= 3, 10)
    first.stop()  # a crash or stop before the hub took it: no PUBACK was sent
    assert stored_messages(tmp_path, "VN-MOT") == set()
    replies = Peer(broker, "agency-replies", ("test/replies",))
    second = adapter.inbound(runtime.pipeline.submit)
    assert second is not None
    second.start()
    try:
        assert wait_until(lambda: stored_messages(tmp_path, "VN-MOT") == {message_id_of(message)}, 20)
        assert wait_until(lambda: replies.unique == 1, 10)  # the receipt, on the Response Topic
        (topic, receipt), = next(iter(replies.received.values()))
        assert read_header(etree.fromstring(receipt)).subject.reference == message_id_of(message)
    finally:
        second.stop()
        agency.close()
        replies.close()
        runtime.close()


def test_a_response_topic_with_a_wildcard_neither_stops_the_inbox_nor_stays_unacknowledged(tmp_path: Path, broker: Broker) -> None:
    """The sender chooses the Response Topic; paho refuses to publish to "replies/#". The message
    is recorded and acknowledged all the same, its receipt goes to the reply topic, and the next
    message is taken and answered on its own Response Topic. A Response Topic outside
    ``response_topics`` (another agency's inbound topic, where the hub's account may publish) is
    not followed either. A new inbox (a restarted hub) gets none again from the broker: all were
    acknowledged."""
    runtime = Runtime.load(write_config(tmp_path, extra=mqtt_agency(broker, tmp_path)))
    adapter = runtime.create_adapters()["VN-MOT"]
    mot = Sender(runtime.config, "VN-MOT")
    agency = Peer(broker, "agency-VN-MOT", (ACK, "test/replies", "other/in"))
    inbox = adapter.inbound(runtime.pipeline.submit)
    assert inbox is not None
    inbox.start()
    wildcard, normal, elsewhere = (mot.message(to="VN-CUSTOMS") for _ in range(3))
    try:
        agency.publish(OUT, wildcard, response_topic="replies/#", correlation=b"c-1").wait_for_publish(5)
        agency.publish(OUT, normal, response_topic="test/replies", correlation=b"c-2").wait_for_publish(5)
        agency.publish(OUT, elsewhere, response_topic="other/in", correlation=b"c-3").wait_for_publish(5)
        assert wait_until(lambda: agency.unique == 3, 20), agency.received
        answers = {read_header(etree.fromstring(receipt)).subject.reference: (topic, receipt)
                   for (topic, receipt), in agency.received.values()}
        assert {mid: topic for mid, (topic, _) in answers.items()} == {
            message_id_of(wildcard): ACK, message_id_of(normal): "test/replies", message_id_of(elsewhere): ACK}
        assert all(read_header(etree.fromstring(receipt)).subject.function == "99" for _, receipt in answers.values())
        assert stored_messages(tmp_path, "VN-MOT") == {message_id_of(wildcard), message_id_of(normal), message_id_of(elsewhere)}
        assert wait_until(lambda: inbox.taken == 3, 5)
    finally:
        inbox.stop()
    again: list[bytes] = []
    second = adapter.inbound(lambda data, who: again.append(data) or runtime.pipeline.submit(data, who))
    assert second is not None
    second.start()
    try:
        time.sleep(1.0)
        assert again == []
    finally:
        second.stop()
        agency.close()
        runtime.close()


def test_a_qos0_flood_is_dropped_beyond_the_queue_and_qos1_waits_its_turn(tmp_path: Path, broker: Broker, caplog: pytest.LogCaptureFixture) -> None:
    """While the hub is busy at most ``QUEUE_LIMIT`` messages wait in memory: QoS 0 beyond that is
    dropped with one warning, QoS 1 stays with the broker and paho until there is room, then
    every one of them is taken."""
    from adapters.mqtt_inbound import QUEUE_LIMIT

    runtime = Runtime.load(write_config(tmp_path, extra=mqtt_agency(broker, tmp_path)))
    adapter = runtime.create_adapters()["VN-MOT"]
    mot = Sender(runtime.config, "VN-MOT")
    gate, submitted = threading.Event(), []

    def busy(data: bytes, who: str | None):  # type: ignore[no-untyped-def]
        submitted.append(message_id_of(data))
        assert gate.wait(30)
        return runtime.pipeline.submit(data, who)

    inbox = adapter.inbound(busy)
    assert inbox is not None
    inbox.start()
    agency = Peer(broker, "agency-VN-MOT")
    flood, kept = QUEUE_LIMIT + 30, 20
    try:
        agency.publish(OUT, mot.message(to="VN-CUSTOMS")).wait_for_publish(5)
        assert wait_until(lambda: len(submitted) == 1, 10)  # the worker holds it, the queue is empty
        with caplog.at_level("WARNING", logger="hub.adapters.mqtt"):
            for _ in range(flood):
                agency.publish(OUT, mot.message(to="VN-CUSTOMS"), qos=0).wait_for_publish(5)
            assert wait_until(lambda: inbox.dropped == flood - QUEUE_LIMIT, 10), inbox.dropped  # type: ignore[attr-defined]
        drops = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
        assert len(drops) == 1 and "QoS 0" in drops[0]
        qos1 = [mot.message(to="VN-CUSTOMS") for _ in range(kept)]
        for message in qos1:
            agency.publish(OUT, message).wait_for_publish(5)
        time.sleep(0.5)
        assert inbox.dropped == flood - QUEUE_LIMIT and len(submitted) == 1  # type: ignore[attr-defined]
        gate.set()
        assert wait_until(lambda: inbox.taken == 1 + QUEUE_LIMIT + kept, 30), inbox.taken  # type: ignore[attr-defined]
        assert {message_id_of(m) for m in qos1} <= stored_messages(tmp_path, "VN-MOT")
    finally:
        gate.set()
        inbox.stop()
        agency.close()
        runtime.close()


def test_answers_with_nowhere_to_go_are_warned_of_by_hub_check_and_logged(tmp_path: Path, broker: Broker, caplog: pytest.LogCaptureFixture) -> None:
    """Neither reply_topic nor response_topics: no receipt or NACK can reach the agency. `hub
    check` warns of it; the inbox takes the messages all the same and logs the answers it drops,
    one line for a burst of them."""
    answered = tmp_path / "answered"
    answered.mkdir()
    errors, warnings = check(write_config(answered, extra=mqtt_agency(broker, answered)))
    assert errors == [] and not [w for w in warnings if "reply_topic" in w], warnings
    config = write_config(tmp_path, extra=mqtt_agency(broker, tmp_path).replace(f', reply_topic = "{ACK}", response_topics = ["test/"]', ""))
    errors, warnings = check(config)
    (warning,) = [w for w in warnings if "reply_topic" in w]
    assert errors == [] and "agencies[VN-MOT].options.reply_topic: warning: " in warning and "every answer is dropped" in warning
    runtime = Runtime.load(config)
    inbox = runtime.create_adapters()["VN-MOT"].inbound(runtime.pipeline.submit)
    assert inbox is not None
    inbox.start()
    agency = Peer(broker, "agency-VN-MOT")
    try:
        with caplog.at_level("WARNING", logger="hub.adapters.mqtt"):
            for message in (b"not xml", Sender(runtime.config, "VN-MOT").message(to="VN-CUSTOMS")):
                agency.publish(OUT, message).wait_for_publish(5)
            assert wait_until(lambda: inbox.taken == 2, 20), inbox.taken  # type: ignore[attr-defined]
        assert inbox.unanswered == 2  # type: ignore[attr-defined]
        lines = [r.getMessage() for r in caplog.records if "answer(s)" in r.getMessage()]
        assert len(lines) == 1 and "VN-MOT" in lines[0] and "reply_topic is not set" in lines[0], lines
    finally:
        inbox.stop()
        agency.close()
        runtime.close()


def test_hub_crash_and_broker_restart_in_an_inbound_stream_lose_nothing(tmp_path: Path, broker: Broker) -> None:
    """An agency publishes 300 messages over MQTT; the hub is SIGKILLed once and the broker
    restarted once in the middle. Every message ends up recorded, each once. The agency waits
    a moment after reconnecting before it publishes again, as the hub's own publisher does:
    mosquitto 2.0 drops what is routed to a restored session before its client is back (#769)."""
    receiver = Receiver(port=free_port()).start()
    config = write_config(tmp_path, gateway_url=receiver.url, extra=mqtt_agency(broker, tmp_path))
    mot = Sender(load_config(config), "VN-MOT")
    total = 300
    messages = [mot.message(to="VN-CUSTOMS") for _ in range(total)]
    agency = Peer(broker, "agency-VN-MOT", (), reconnect=(1.5, 1.5), settle=1.0)
    hub_process = HubProcess(config).start()
    try:
        infos = []
        started = time.perf_counter()
        for i, m in enumerate(messages):
            infos.append(agency.publish(OUT, m))
            if i == total // 3:
                assert wait_until(lambda: len(stored_messages(tmp_path, "VN-MOT")) >= total // 6, 30)
                hub_process.kill()
                at_kill = len(stored_messages(tmp_path, "VN-MOT"))
                hub_process = HubProcess(config).start()
            if i == 2 * total // 3:
                broker.restart(down_for=0.5)
        for info in infos:
            info.wait_for_publish(30)
        assert wait_until(lambda: len(stored_messages(tmp_path, "VN-MOT")) == total, 60), len(stored_messages(tmp_path, "VN-MOT"))
        elapsed = time.perf_counter() - started
        assert stored_messages(tmp_path, "VN-MOT") == {message_id_of(m) for m in messages}
        customs = tmp_path / "customs-inbox"
        assert wait_until(lambda: len(list(customs.glob("*.xml"))) == total, 30)
    finally:
        hub_process.terminate()
        agency.close()
        receiver.stop()
    print(f"\nmqtt inbox: {total} messages with a hub SIGKILL (at {at_kill} recorded) and a broker restart: "
          f"all {total} recorded once, {elapsed:.1f} s")


# -- status events ---------------------------------------------------------------------------------


def test_status_events_for_the_portal(tmp_path: Path, broker: Broker) -> None:
    receiver = Receiver(port=free_port()).start()
    portal_options = ', events = "all", status_topic = "sw-hub/status"'
    extra = mqtt_agency(broker, tmp_path, agency_id="VN-PORTAL", options=portal_options).replace(
        f'topic = "{IN}", subscribe = ["{OUT}"], reply_topic = "{ACK}", ', "")
    runtime = Runtime.load(write_config(tmp_path, gateway_url=receiver.url, extra=extra, max_attempts=2, max_delay=0.1))
    portal = Peer(broker, "portal", ("sw-hub/status/#",))
    moit = Sender(runtime.config, "VN-MOIT")
    dispatcher = runtime.dispatcher()
    dispatcher.start()
    try:
        ok = runtime.pipeline.submit(moit.message()).message_id
        expected = {f"{ok}/received/", f"{ok}/delivered/TH-ASW", f"{ok}/delivered/VN-CUSTOMS"}
        assert wait_until(lambda: expected <= set(portal.received), 20), portal.received.keys()
        receiver.status = 500
        failing = runtime.pipeline.submit(moit.message()).message_id
        assert wait_until(lambda: {f"{failing}/retry/TH-ASW", f"{failing}/dead/TH-ASW"} <= set(portal.received), 20)
        topic, payload = portal.received[f"{failing}/dead/TH-ASW"][0]
        assert topic == f"sw-hub/status/{failing}/dead" and b"HTTP 500" in payload
        trace = runtime.store.trace(ok)
        assert {r.destination for r in trace.rows} == {"TH-ASW", "VN-CUSTOMS", "VN-PORTAL"}  # event rows are in the trace
    finally:
        dispatcher.stop()
        portal.close()
        receiver.stop()
        runtime.close()
