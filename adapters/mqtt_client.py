"""One paho-mqtt connection with a persistent session: connect, publish-and-wait-for-PUBACK, acks.

MQTT 5 by default (``protocol = "3.1.1"`` for brokers that need it). The session is persistent:
MQTT 5 connects with clean_start False and a session expiry interval, 3.1.1 with clean_session
False; so a broker keeps the session's subscriptions and queued QoS 1 messages while the hub is
away, and paho resends unacknowledged publications after a reconnect. Received messages are
acknowledged only by ``ack`` (paho's ``manual_ack``): the inbox calls it once the hub has
durably taken the message.

Reconnection is ours, not paho's: each connection is a fresh paho client, made by a supervisor
thread with a capped backoff. So a publication that had no PUBACK when the connection broke is
never resent behind the hub's back; ``publish`` reports it as a retry and the outbox resends it
when the dispatcher decides (at least once, with the same message id). An acknowledgement is
sent only on the connection that received the message; after a reconnect the broker sends the
message again (persistent session) and the hub answers the repeat from its dedupe record.

Settling: after each (re)connection, publishing waits ``settle`` seconds (default 1). mosquitto
(2.0.11, Debian's) restores persistent sessions after a restart but silently drops, with a
successful PUBACK, messages routed to a restored session before its client reconnects
(eclipse-mosquitto/mosquitto#769); a broker restart is when the hub reconnects, so it gives the
subscribers that time to come back first. (A broker without that fault needs no settling.)
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from hub.config import Agency
from hub.errors import ConfigError

from .base import AdapterSettings

log = logging.getLogger("hub.adapters.mqtt")

NO_MATCHING_SUBSCRIBERS = 0x10
PERMANENT_REASONS = frozenset({0x87, 0x90, 0x99})  # not authorized, topic name invalid, payload format invalid


# the agency options that make a broker connection (the rest are the adapter's: adapters.mqtt)
MQTT_CONNECTION_OPTIONS = frozenset({
    "protocol", "password_env", "password_file", "client_id", "session_expiry", "pub_session_expiry", "keepalive",
    "receive_maximum", "reconnect_max", "settle", "username", "tls_ca", "tls_cert", "tls_key",
})


@dataclass(frozen=True)
class MqttOptions:
    host: str
    port: int
    tls: bool
    protocol: int  # mqtt.MQTTv5 or mqtt.MQTTv311
    client_id: str
    session_expiry: int  # the inbox's session: what the broker keeps for the hub while it is away
    pub_session_expiry: int  # the publisher's session, one per process (see adapters.mqtt)
    keepalive: int
    receive_maximum: int
    reconnect_max: float
    settle: float  # seconds after each (re)connection before publishing (see MqttConnection)
    username: str | None = None
    password: str | None = None
    # MQTT 5: the largest packet the broker may send the hub (twice the message size limit: a
    # message somewhat too large is still answered with ERR11, a huge one is not held in memory).
    # The broker discards a larger one without a word (MQTT 5, 3.1.2.11.4): its sender gets no
    # NACK and the hub logs nothing, as it never sees it (README, "Partners and adapters").
    max_packet: int | None = None
    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    @classmethod
    def from_agency(cls, agency: Agency, settings: AdapterSettings) -> MqttOptions:
        """From the agency's endpoint and its options named in ``MQTT_CONNECTION_OPTIONS``."""
        o, key = agency.options, f"agencies[{agency.id}]"
        url = urlparse(agency.endpoint)
        if url.scheme not in ("mqtt", "mqtts") or not url.hostname:
            raise ConfigError(settings.config_file, f"{key}.endpoint", f"must be mqtt://HOST:PORT or mqtts://HOST:PORT, not {agency.endpoint!r}")
        version = str(o.get("protocol", "5"))
        if version not in ("5", "3.1.1"):
            raise ConfigError(settings.config_file, f"{key}.options.protocol", f"must be \"5\" or \"3.1.1\", not {version!r}")
        party = settings.party.identity if settings.party else "hub"
        password = None
        if o.get("password_env"):
            password = os.environ.get(str(o["password_env"]))
        elif o.get("password_file"):
            password = settings.path(str(o["password_file"])).read_text(encoding="utf-8").strip()
        return cls(
            host=url.hostname,
            port=url.port or (8883 if url.scheme == "mqtts" else 1883),
            tls=url.scheme == "mqtts",
            protocol=mqtt.MQTTv5 if version == "5" else mqtt.MQTTv311,
            client_id=str(o.get("client_id", f"sw-hub-{party}-{agency.id}")).replace("{host}", socket.gethostname()),
            session_expiry=int(o.get("session_expiry", 7 * 24 * 3600)),
            pub_session_expiry=int(o.get("pub_session_expiry", 300)),
            keepalive=int(o.get("keepalive", 30)),
            receive_maximum=int(o.get("receive_maximum", 32)),
            reconnect_max=float(o.get("reconnect_max", 5.0)),
            max_packet=2 * settings.limits.max_bytes + 64 * 1024,
            settle=float(o.get("settle", 1.0)),
            username=o.get("username"),
            password=password,
            **{name: str(settings.path(str(o[f"tls_{name}"]))) for name in ("ca", "cert", "key") if o.get(f"tls_{name}")},
        )


@dataclass(frozen=True)
class Published:
    ok: bool
    permanent: bool
    detail: str
    no_subscriber: bool = False  # MQTT 5 reason 0x10: the broker took it, but nobody subscribes


class MqttConnection:
    def __init__(self, options: MqttOptions, suffix: str, session_expiry: int,
                 on_message: Callable[[mqtt.MQTTMessage, int], None] | None = None, subscriptions: Sequence[str] = ()) -> None:
        self.options = options
        self.client_id = f"{options.client_id}-{suffix}"
        self.session_expiry = session_expiry  # 0 with MQTT 3.1.1: a clean session (3.1.1 sessions never expire)
        self.v5 = options.protocol == mqtt.MQTTv5
        self.on_message, self.subscriptions = on_message, tuple(subscriptions)
        self.connected = threading.Event()
        self.subscribed = threading.Event()  # the broker confirmed the subscriptions (SUBACK)
        self.generation = 0  # which connection is current: acks and PUBACK waits belong to one
        self.ready_at = 0.0  # monotonic time from which publishing is allowed (settle)
        self.last_error = "not connected yet"
        self._up = 0  # the last generation that completed its CONNECT
        self._client: mqtt.Client | None = None
        self._reasons: dict[tuple[int, int], Any] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"mqtt-{self.client_id}", daemon=True)
        self._thread.start()

    # -- the supervisor: one fresh paho client per connection ---------------------------------------

    def _new_client(self, generation: int) -> mqtt.Client:
        o = self.options
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTProtocolVersion(o.protocol),
                             clean_session=None if self.v5 else self.session_expiry == 0, manual_ack=True, reconnect_on_failure=False)
        client.on_connect = lambda c, u, flags, reason, props: self._on_connect(c, generation, reason)
        client.on_disconnect = lambda c, u, flags, reason, props: self._on_disconnect(generation, reason)
        client.on_publish = lambda c, u, mid, reason, props: self._on_publish(generation, mid, reason)
        client.on_subscribe = lambda c, u, mid, reasons, props: self.subscribed.set()
        client.on_message = lambda c, u, message: self.on_message(message, generation) if self.on_message else None
        if o.username:
            client.username_pw_set(o.username, o.password)
        if o.tls:
            client.tls_set(ca_certs=o.ca, certfile=o.cert, keyfile=o.key, cert_reqs=ssl.CERT_REQUIRED)
        return client

    def _run(self) -> None:
        delay = 0.2
        while not self._stop.is_set():
            with self._lock:
                self.generation += 1
                generation = self.generation
            client = self._new_client(generation)
            try:
                if self.v5:
                    props = Properties(PacketTypes.CONNECT)
                    props.SessionExpiryInterval = self.session_expiry
                    props.ReceiveMaximum = self.options.receive_maximum
                    if self.options.max_packet:
                        props.MaximumPacketSize = self.options.max_packet
                    client.connect(self.options.host, self.options.port, self.options.keepalive, clean_start=False, properties=props)
                else:
                    client.connect(self.options.host, self.options.port, self.options.keepalive)
            except (OSError, ValueError) as exc:
                self.last_error = f"cannot connect to {self.options.host}:{self.options.port}: {exc}"
                self._stop.wait(delay)
                delay = min(delay * 2, self.options.reconnect_max)
                continue
            self._client = client
            client.loop_forever()  # returns when the connection ends (reconnect_on_failure is off)
            self.connected.clear()
            self._client = None
            if self._up == generation:
                delay = 0.2  # it had been up: start the backoff again
            self._stop.wait(delay)
            delay = min(delay * 2, self.options.reconnect_max)

    # -- paho callbacks (network thread) ----------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, generation: int, reason: Any) -> None:
        if reason.is_failure:
            self.last_error = f"the broker refused the connection: {reason}"
            log.warning("mqtt %s: %s", self.client_id, self.last_error)
            return
        if self.subscriptions:
            topics = [(t, SubscribeOptions(qos=1) if self.v5 else 1) for t in self.subscriptions]
            client.subscribe(topics)  # type: ignore[arg-type]
        else:
            self.subscribed.set()
        self.ready_at = time.monotonic() + self.options.settle
        self._up = generation
        self.connected.set()

    def _on_disconnect(self, generation: int, reason: Any) -> None:
        self.connected.clear()
        self.last_error = f"disconnected from {self.options.host}:{self.options.port}: {reason}"

    def _on_publish(self, generation: int, mid: int, reason: Any) -> None:
        with self._lock:
            self._reasons[(generation, mid)] = reason

    # -- use --------------------------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes, properties: Properties | None, timeout: float) -> Published:
        """Publishes with QoS 1 and waits for the broker's PUBACK on the same connection."""
        deadline = time.monotonic() + timeout
        if not self.connected.wait(min(timeout, 2.0)):
            return Published(False, False, f"broker {self.options.host}:{self.options.port} not reachable ({self.last_error})")
        wait = self.ready_at - time.monotonic()
        if wait > timeout:
            return Published(False, False, f"connection to {self.options.host}:{self.options.port} is settling")
        if wait > 0:
            time.sleep(wait)
        client, generation = self._client, self.generation
        if client is None or not self.connected.is_set():
            return Published(False, False, f"broker {self.options.host}:{self.options.port} not reachable ({self.last_error})")
        info = client.publish(topic, payload, qos=1, properties=properties if self.v5 else None)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return Published(False, False, f"publish to {topic} failed: {mqtt.error_string(info.rc)}")
        while not info.is_published():
            if generation != self.generation or not self.connected.is_set():
                return Published(False, False, f"connection lost before the PUBACK for {topic}")
            if time.monotonic() > deadline:
                return Published(False, False, f"no PUBACK for {topic} within {timeout:g} s")
            info.wait_for_publish(0.05)
        with self._lock:
            reason = self._reasons.pop((generation, info.mid), None)
        code = getattr(reason, "value", 0)
        if code >= 0x80:
            return Published(False, code in PERMANENT_REASONS, f"the broker refused the message on {topic}: {reason} (0x{code:02x})")
        if code == NO_MATCHING_SUBSCRIBERS:
            return Published(True, False, f"PUBACK on {topic}: no matching subscribers", no_subscriber=True)
        return Published(True, False, f"PUBACK on {topic}")

    def send(self, topic: str, payload: bytes, properties: Properties | None = None) -> None:
        """Publishes with QoS 1 without waiting (replies); lost with the connection if it breaks."""
        client = self._client
        if client is not None:
            client.publish(topic, payload, qos=1, properties=properties if self.v5 else None)

    def ack(self, message: mqtt.MQTTMessage, generation: int) -> bool:
        """Acknowledges on the connection that received the message; False if that one is gone
        (the broker then sends the message again)."""
        client = self._client
        if client is None or generation != self.generation:
            return False
        client.ack(message.mid, message.qos)
        return True

    def close(self) -> None:
        self._stop.set()
        client = self._client
        if client is not None:
            client.disconnect()
        self._thread.join(timeout=10)
