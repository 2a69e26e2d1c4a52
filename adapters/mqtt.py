"""``mqtt``: deliver to a topic per agency (QoS 1, persistent session), receive from subscribed
topics, publish status events.

    [[agencies]]
    id = "VN-MOT"
    adapter = "mqtt"
    endpoint = "mqtt://broker.example:1883"            # mqtts:// for TLS
    options = { topic = "nsw/VN-MOT/in",                # deliveries (default sw-hub/to/<agency id>)
                subscribe = ["nsw/VN-MOT/out"],          # inbound: messages from this agency
                reply_topic = "nsw/VN-MOT/ack",          # receipts/NACKs when no Response Topic
                response_topics = ["nsw/VN-MOT/reply/"], # the prefixes a sender's Response Topic may have
                events = ["received", "delivered", "retry", "dead"],   # status events (hub.events)
                status_topic = "sw-hub/status",          # ... published to <status_topic>/<message id>/<event>
                protocol = "5",                          # or "3.1.1"
                client_id = "sw-hub-VN-NSW-VN-MOT", session_expiry = 604800, pub_session_expiry = 300, timeout = 10,
                require_subscriber = true,               # MQTT 5: retry while no subscriber takes the topic
                username = "hub", password_env = "MQTT_PASSWORD", tls_ca = "keys/broker-ca.crt" }

Delivered means the broker's PUBACK came back (the broker then owns the message, in its own
persistent store). No connection, no PUBACK in time or a broker refusal that may pass is retried;
a refusal that cannot pass (not authorized, invalid topic or payload) is a permanent failure.
With ``require_subscriber`` (default true for envelopes) an MQTT 5 PUBACK saying "no matching
subscribers" is retried: nobody would ever read that message. Delivery is at least once; each
message carries its message id (MQTT 5 user property ``message-id``, and inside the envelope).

Deliveries and the inbox use two connections, so that messages queued for the inbox are never
received by a connection that cannot take them:

- the inbox: client id ``<client_id>-sub``, stable, session kept ``session_expiry`` (7 days): the
  broker queues the agency's messages while the hub is down. It runs in one worker per node; with
  several hub nodes give each node its own id (``client_id = "sw-hub-{host}"``) and subscribe with
  a shared subscription (``$share/sw-hub/<topic>``) so each message goes to one node.
- deliveries: client id ``<client_id>-pub-<host>-<pid>``, one per process (workers and nodes
  would otherwise take each other's connection), session kept ``pub_session_expiry`` (300 s).
  Its session holds nothing the hub relies on: an unacknowledged publication is the outbox's to
  resend, never paho's (adapters/mqtt_client.py). With MQTT 3.1.1, whose sessions never expire,
  this connection uses a clean session rather than leave one behind per process.
"""

from __future__ import annotations

import os
import socket
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hub.config import Agency
from hub.events import EVENTS_ROUTE, event_of

from .base import Adapter, AdapterSettings, Delivery, InboundSource, Outcome, Result, Submit, seconds
from .mqtt_client import MQTT_CONNECTION_OPTIONS, MqttConnection, MqttOptions
from .mqtt_inbound import MqttInbox


class MqttAdapter(Adapter):
    alias = "mqtt"
    carries_events = True
    option_names = frozenset({"topic", "status_topic", "timeout", "require_subscriber", "subscribe", "reply_topic", "response_topics"}) | MQTT_CONNECTION_OPTIONS

    def __init__(self, agency: Agency, settings: AdapterSettings) -> None:
        super().__init__(agency, settings)
        o = agency.options
        self.options = MqttOptions.from_agency(agency, settings)
        self.topic = str(o.get("topic", f"sw-hub/to/{agency.id}"))
        self.status_topic = str(o.get("status_topic", "sw-hub/status")).rstrip("/")
        self.timeout = seconds(o, settings.timeout, settings.config_file, f"agencies[{agency.id}].options.timeout")
        self.require_subscriber = bool(o.get("require_subscriber", True))
        self._connection: MqttConnection | None = None
        self._lock = threading.Lock()

    def _publisher(self) -> MqttConnection:
        with self._lock:
            if self._connection is None:
                suffix = f"pub-{socket.gethostname()}-{os.getpid()}"  # one per process: workers and nodes never collide
                v5 = self.options.protocol == mqtt.MQTTv5  # a 3.1.1 session never expires: keep none per process
                self._connection = MqttConnection(self.options, suffix, self.options.pub_session_expiry if v5 else 0)
            return self._connection

    def deliver(self, delivery: Delivery) -> Result:
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = [("message-id", delivery.message_id), ("sender", delivery.sender)]
        props.PayloadFormatIndicator = 1
        if delivery.route == EVENTS_ROUTE:
            event = event_of(delivery.payload)
            topic = f"{self.status_topic}/{delivery.message_id}/{event.get('event', 'status')}"
            props.ContentType = "application/json"
        else:
            topic = self.topic
            props.ContentType = "application/xml"
        published = self._publisher().publish(topic, delivery.payload, props, self.timeout)
        if not published.ok:
            return Result(Outcome.FAILED if published.permanent else Outcome.RETRY, published.detail)
        if published.no_subscriber and self.require_subscriber and delivery.route != EVENTS_ROUTE:
            return Result(Outcome.RETRY, published.detail)
        return Result(Outcome.DELIVERED, published.detail)

    def inbound(self, submit: Submit) -> InboundSource | None:
        topics = self.agency.options.get("subscribe")
        if not topics:
            return None
        topics = [topics] if isinstance(topics, str) else list(topics)
        reply = self.agency.options.get("reply_topic")
        prefixes = self.agency.options.get("response_topics", [])
        return MqttInbox(self.agency.id, submit,
                         lambda handler: MqttConnection(self.options, "sub", self.options.session_expiry, handler, topics),
                         str(reply) if reply else None, tuple([prefixes] if isinstance(prefixes, str) else prefixes))

    def check(self) -> list[str]:
        problems = []
        for key, what in (("subscribe", "a topic filter"), ("response_topics", "a topic prefix")):
            value = self.agency.options.get(key)
            if value is not None and not (isinstance(value, str) or (isinstance(value, list) and all(isinstance(t, str) for t in value))):
                problems.append(f"options.{key}: must be {what} or a list of them")
        if self._unanswerable():
            problems.append("options.reply_topic: warning: the agency's messages are taken (options.subscribe) but no receipt "
                            "or NACK can reach it: set reply_topic, or response_topics for MQTT 5 Response Topics; "
                            "until then every answer is dropped")
        return problems

    def _unanswerable(self) -> bool:
        """Whether the inbox takes messages but has no topic to answer any of them on."""
        o = self.agency.options
        response_topics = bool(o.get("response_topics")) and self.options.protocol == mqtt.MQTTv5  # MQTT 3.1.1 has none
        return bool(o.get("subscribe")) and not o.get("reply_topic") and not response_topics

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
