"""One paho-mqtt connection with a persistent session: connect, publish-and-wait-for-PUBACK, acks.

MQTT 5 by default (``protocol = "3.1.1"`` for brokers that need it). The session is persistent:
MQTT 5 connects with clean_start False and a session expiry interval, 3.1.1 with clean_session
False; so a broker keeps the session's subscriptions and queued QoS 1 messages while the hub is
away, and paho resends unacknowledged publications after a reconnect. Received messages are
acknowledged only by ``ack`` (paho's ``manual_ack``): the inbox calls it once the hub has
durably taken the message. paho's network thread reconnects by itself with a capped backoff.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
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


@dataclass(frozen=True)
class MqttOptions:
    host: str
    port: int
    tls: bool
    protocol: int  # mqtt.MQTTv5 or mqtt.MQTTv311
    client_id: str
    session_expiry: int
    keepalive: int
    receive_maximum: int
    reconnect_max: float
    username: str | None = None
    password: str | None = None
    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    @classmethod
    def from_agency(cls, agency: Agency, settings: AdapterSettings) -> MqttOptions:
        o, key = agency.options, f"agencies[{agency.id}]"
        url = urlparse(agency.endpoint)
        if url.scheme not in ("mqtt", "mqtts") or not url.hostname:
            raise ConfigError("hub.toml", f"{key}.endpoint", f"must be mqtt://HOST:PORT or mqtts://HOST:PORT, not {agency.endpoint!r}")
        version = str(o.get("protocol", "5"))
        if version not in ("5", "3.1.1"):
            raise ConfigError("hub.toml", f"{key}.options.protocol", f"must be \"5\" or \"3.1.1\", not {version!r}")
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
            client_id=str(o.get("client_id", f"sw-hub-{party}-{agency.id}")),
            session_expiry=int(o.get("session_expiry", 7 * 24 * 3600)),
            keepalive=int(o.get("keepalive", 30)),
            receive_maximum=int(o.get("receive_maximum", 32)),
            reconnect_max=float(o.get("reconnect_max", 5.0)),
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
    def __init__(self, options: MqttOptions, suffix: str, on_message: Callable[[mqtt.MQTTMessage], None] | None = None,
                 subscriptions: Sequence[str] = ()) -> None:
        self.options = options
        self.v5 = options.protocol == mqtt.MQTTv5
        self.on_message, self.subscriptions = on_message, tuple(subscriptions)
        self.connected = threading.Event()
        self.last_error = "not connected yet"
        self._reasons: dict[int, Any] = {}
        self._lock = threading.Lock()
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"{options.client_id}-{suffix}",
            protocol=options.protocol,
            clean_session=None if self.v5 else False,
            manual_ack=True,
        )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.reconnect_delay_set(min_delay=0.2, max_delay=options.reconnect_max)  # type: ignore[arg-type]
        client.max_queued_messages_set(1000)
        if options.username:
            client.username_pw_set(options.username, options.password)
        if options.tls:
            client.tls_set(ca_certs=options.ca, certfile=options.cert, keyfile=options.key, cert_reqs=ssl.CERT_REQUIRED)
        self.client = client
        if self.v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = options.session_expiry
            props.ReceiveMaximum = options.receive_maximum
            client.connect_async(options.host, options.port, options.keepalive, clean_start=False, properties=props)
        else:
            client.connect_async(options.host, options.port, options.keepalive)
        client.loop_start()

    # -- paho callbacks (network thread) ----------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self.last_error = f"the broker refused the connection: {reason}"
            log.warning("mqtt %s: %s", self.options.client_id, self.last_error)
            return
        if self.subscriptions:
            topics = [(t, SubscribeOptions(qos=1) if self.v5 else 1) for t in self.subscriptions]
            client.subscribe(topics)  # type: ignore[arg-type]
        self.connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self.connected.clear()
        self.last_error = f"disconnected from {self.options.host}:{self.options.port}: {reason}"

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        with self._lock:
            self._reasons[mid] = reason

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if self.on_message is not None:
            self.on_message(message)  # not acknowledged here: see ``ack``

    # -- use --------------------------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes, properties: Properties | None, timeout: float) -> Published:
        """Publishes with QoS 1 and waits for the broker's PUBACK."""
        if not self.connected.wait(min(timeout, 2.0)):
            return Published(False, False, f"broker {self.options.host}:{self.options.port} not reachable ({self.last_error})")
        info = self.client.publish(topic, payload, qos=1, properties=properties if self.v5 else None)
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError) as exc:
            return Published(False, False, f"publish to {topic} failed: {exc}")
        if not info.is_published():
            return Published(False, False, f"no PUBACK for {topic} within {timeout:g} s")
        with self._lock:
            reason = self._reasons.pop(info.mid, None)
        code = getattr(reason, "value", 0)
        if code >= 0x80:
            return Published(False, code in PERMANENT_REASONS, f"the broker refused the message on {topic}: {reason} (0x{code:02x})")
        if code == NO_MATCHING_SUBSCRIBERS:
            return Published(True, False, f"PUBACK on {topic}: no matching subscribers", no_subscriber=True)
        return Published(True, False, f"PUBACK on {topic}")

    def send(self, topic: str, payload: bytes, properties: Properties | None = None) -> None:
        """Publishes with QoS 1 without waiting (replies): paho resends it after a reconnect."""
        self.client.publish(topic, payload, qos=1, properties=properties if self.v5 else None)

    def ack(self, message: mqtt.MQTTMessage) -> None:
        self.client.ack(message.mid, message.qos)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
