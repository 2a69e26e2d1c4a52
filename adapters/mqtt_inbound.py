"""The MQTT inbox: messages on subscribed topics are submitted, then acknowledged to the broker.

A message is acknowledged (PUBACK) only after ``Pipeline.submit`` returned, that is after the hub
durably recorded it (receipt) or answered it for good (NACK). If the hub crashes before, the
broker still holds the message in the persistent session and delivers it again on reconnect; the
hub answers a repeat with the original receipt. When the store cannot take it (``TryAgain``) the
message is submitted again with a capped backoff, and nothing behind it is acknowledged first:
one worker handles messages in arrival order, as MQTT wants acknowledgements in order.

The answer (receipt or NACK) is published to the message's MQTT 5 Response Topic with its
Correlation Data, else to ``options.reply_topic`` if set. The sender chooses the Response Topic,
and the hub publishes with its own broker account, which may write to other agencies' topics: a
Response Topic is followed only under a prefix of ``options.response_topics`` (none by default),
and never one that cannot be published to (a wildcard ``+`` or ``#``, or U+0000, which paho or
the broker refuse); others are ignored with a warning. With neither a usable Response Topic nor
``reply_topic`` the answer has nowhere to go: it is dropped with a warning (at most one line every
``LOG_SECONDS``; ``hub check`` warns of an agency configured so). A reply that cannot be sent is logged and the message still
acknowledged: it is recorded, and a resend gets the original receipt. A fault inside the hub is
answered like any refusal (the pipeline's ERR99 NACK) and acknowledged. Only a store outage keeps
a message unacknowledged, retried in place; should anything else still escape, it is logged, the
message stays unacknowledged (the broker sends it again on the next connection) and the inbox
goes on with the next message.

At most ``QUEUE_LIMIT`` messages wait for the worker. Past that, a QoS 1 or 2 message holds up
paho's network thread until there is room (the broker keeps the rest, and it sends no more than
its in-flight window anyway), and a QoS 0 message, which its sender published as "at most once",
is dropped with a warning: a publisher flooding QoS 0 cannot fill the hub's memory. While the
network thread waits it sends no keep-alive: a worker held up longer than 1.5 keep-alive periods
(a store outage) loses the connection, and the broker sends the unacknowledged messages again to
the next one; the hub answers those with their original receipts.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hub.errors import TryAgain
from hub.throttle import Tally

from .base import InboundSource, Submit
from .mqtt_client import MqttConnection

log = logging.getLogger("hub.adapters.mqtt")

QUEUE_LIMIT = 16  # messages waiting for the inbox's worker (each a packet of up to 2 x max_bytes + 64 KiB)
LOG_SECONDS = 10.0  # dropped QoS 0 messages, and answers with no topic to go to, are logged at most this often


class MqttInbox(InboundSource):
    def __init__(self, agency: str, submit: Submit, connect: Callable[[Callable[[mqtt.MQTTMessage, int], None]], MqttConnection],
                 reply_topic: str | None = None, response_prefixes: tuple[str, ...] = ()) -> None:
        self.agency, self.submit, self.connect, self.reply_topic = agency, submit, connect, reply_topic
        self.response_prefixes = response_prefixes
        self._queue: queue.Queue[tuple[mqtt.MQTTMessage, int]] = queue.Queue(QUEUE_LIMIT)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._connection: MqttConnection | None = None
        self.taken = 0  # messages submitted and acknowledged (for tests and logs)
        self._dropped = Tally(LOG_SECONDS)  # QoS 0 messages that found the queue full
        self._unanswered = Tally(LOG_SECONDS)  # answers with no topic to be published to

    @property
    def dropped(self) -> int:
        return self._dropped.count

    @property
    def unanswered(self) -> int:
        return self._unanswered.count

    def start(self) -> None:
        self._connection = self.connect(self._arrived)
        if not self._connection.subscribed.wait(10):  # bounded: the supervisor keeps reconnecting
            log.warning("mqtt inbox %s: not subscribed yet (%s)", self.agency, self._connection.last_error)
        self._thread = threading.Thread(target=self._run, name=f"mqtt-inbox-{self.agency}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stops taking messages; those not yet submitted stay unacknowledged, with the broker."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
        if self._connection:
            self._connection.close()

    def _arrived(self, message: mqtt.MQTTMessage, generation: int) -> None:
        """paho's network thread: queues ``message`` for the worker, within ``QUEUE_LIMIT``."""
        if message.qos == 0:
            try:
                self._queue.put_nowait((message, generation))
            except queue.Full:
                self._drop(message)
            return
        while not self._stop.is_set():  # not acknowledged when stopped: the broker keeps it
            try:
                self._queue.put((message, generation), timeout=0.2)
                return
            except queue.Full:
                continue

    def _drop(self, message: mqtt.MQTTMessage) -> None:
        since = self._dropped.add()
        if since:
            log.warning("mqtt inbox %s: %d QoS 0 message(s) dropped (the last on %s): %d already wait to be submitted; "
                        "publish with QoS 1 to have the broker keep them", self.agency, since, message.topic, QUEUE_LIMIT)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                message, generation = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self._handle(message, generation)
            except Exception:
                log.exception("mqtt inbox %s: message on %s not handled, going on with the next", self.agency, message.topic)

    def _handle(self, message: mqtt.MQTTMessage, generation: int) -> None:
        delay = 0.1
        while True:
            if self._stop.is_set():
                return  # not acknowledged: the broker delivers it again to the next session
            try:
                ack = self.submit(bytes(message.payload), self.agency)
                break
            except TryAgain as exc:  # the store is down: keep the message, try again (a bug goes up to _run)
                log.warning("mqtt inbox %s: message on %s not taken yet: %s", self.agency, message.topic, exc)
                self._stop.wait(delay)
                delay = min(delay * 2, 5.0)
        assert self._connection is not None
        try:
            self._reply(message, ack.xml)
        except Exception as exc:  # the message is recorded: acknowledge it all the same
            log.warning("mqtt inbox %s: no answer sent for the message on %s: %s", self.agency, message.topic, exc)
        self._connection.ack(message, generation)  # False: the connection changed, the broker sends it again
        self.taken += 1

    def _reply(self, message: mqtt.MQTTMessage, answer: bytes) -> None:
        assert self._connection is not None
        props = getattr(message, "properties", None)
        topic = getattr(props, "ResponseTopic", None)
        unusable = isinstance(topic, str) and any(c in topic for c in "+#\0")
        if topic and (unusable or not topic.startswith(self.response_prefixes)):
            why = "a reply cannot be published there" if unusable else f"not under options.response_topics {list(self.response_prefixes)}"
            log.warning("mqtt inbox %s: ignoring the Response Topic %r of a message on %s: %s", self.agency, topic, message.topic, why)
            topic = None
        topic = topic or self.reply_topic
        if not topic:  # the message is recorded all the same; its sender never hears of it
            since = self._unanswered.add()
            if since:
                log.warning("mqtt inbox %s: %d answer(s) (receipt or NACK) dropped (the last for a message on %s): the message "
                            "had no usable Response Topic and options.reply_topic is not set", self.agency, since, message.topic)
            return
        out = Properties(PacketTypes.PUBLISH)
        correlation = getattr(props, "CorrelationData", None)
        if correlation is not None:
            out.CorrelationData = correlation
        out.ContentType = "application/xml"
        self._connection.send(topic, answer, out)
