"""Debian's mosquitto broker for the tests: 127.0.0.1 on a free port, a temporary config with
persistence on (sessions and queued messages survive a restart), started and stopped by the test.

Without /usr/sbin/mosquitto (or ``mosquitto`` on PATH) the MQTT tests are skipped, except under
CI=true, where they fail: scripts/test.sh installs it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from .support import free_port


def mosquitto_binary() -> str:
    found = "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else shutil.which("mosquitto")
    if found:
        return found
    if os.environ.get("CI") == "true":
        pytest.fail("mosquitto is not installed (apt-get install mosquitto); CI=true, so this is a failure")
    pytest.skip("mosquitto is not installed (apt-get install mosquitto)")


class Broker:
    def __init__(self, folder: Path) -> None:
        self.binary = mosquitto_binary()
        self.folder = folder
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)
        self.conf = folder / "mosquitto.conf"
        (folder / "acl").write_text("topic deny forbidden/#\ntopic readwrite #\n", encoding="utf-8")
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {folder}/\n"
            "autosave_interval 1\n"
            "max_queued_messages 100000\n"
            f"acl_file {folder}/acl\n"
            f"log_dest file {folder}/mosquitto.log\n"
            + ("user root\n" if os.geteuid() == 0 else ""),
            encoding="utf-8",
        )

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> Broker:
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("mosquitto did not come up")

    def stop(self) -> None:
        """A clean stop: mosquitto saves its persistent sessions and queued messages first."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
        self.proc = None

    def restart(self, down_for: float = 0.0) -> None:
        self.stop()
        time.sleep(down_for)
        self.start()


class Peer:
    """An MQTT client playing an agency or the portal: a persistent session (MQTT 5 unless told),
    QoS 1; records what arrives on its subscriptions, keyed by message id. ``publish`` waits for
    the connection and then ``settle`` seconds after each (re)connection, like the hub does (see
    adapters/mqtt_client.py on mosquitto#769)."""

    def __init__(self, broker: Broker, client_id: str, subscribe: tuple[str, ...] = (), protocol: int = 5,
                 reconnect: tuple[float, float] = (0.1, 0.5), settle: float = 0.0) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self.v5 = protocol == 5
        self.received: dict[str, list[tuple[str, bytes]]] = {}  # message id -> [(topic, payload)]
        self.lock = threading.Lock()
        self.connected = threading.Event()
        self.settle, self.ready_at = settle, 0.0
        self.topics = subscribe
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv5 if self.v5 else mqtt.MQTTv311, clean_session=None if self.v5 else False)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_disconnect = lambda *a: self.connected.clear()
        self.client.reconnect_delay_set(min_delay=reconnect[0], max_delay=reconnect[1])  # type: ignore[arg-type]
        self.client.max_queued_messages_set(0)
        self.client.max_inflight_messages_set(100)
        if self.v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600
            self.client.connect_async("127.0.0.1", broker.port, 30, clean_start=False, properties=props)
        else:
            self.client.connect_async("127.0.0.1", broker.port, 30)
        self.client.loop_start()
        assert self.connected.wait(10), "the test peer could not connect"

    def _on_connect(self, client, userdata, flags, reason, properties):  # type: ignore[no-untyped-def]
        if self.topics:
            client.subscribe([(t, 1) for t in self.topics])
        self.ready_at = time.monotonic() + self.settle
        self.connected.set()

    def _on_message(self, client, userdata, message):  # type: ignore[no-untyped-def]
        key = message_key(message)
        with self.lock:
            self.received.setdefault(key, []).append((message.topic, message.payload))

    def publish(self, topic: str, payload: bytes, response_topic: str | None = None, correlation: bytes | None = None, qos: int = 1):  # type: ignore[no-untyped-def]
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        assert self.connected.wait(30), "the test peer lost its broker"
        time.sleep(max(0.0, self.ready_at - time.monotonic()))
        props = None
        if self.v5 and response_topic:
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = response_topic
            if correlation is not None:
                props.CorrelationData = correlation
        return self.client.publish(topic, payload, qos=qos, properties=props)

    @property
    def unique(self) -> int:
        with self.lock:
            return len(self.received)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def message_key(message) -> str:  # type: ignore[no-untyped-def]
    """What identifies an MQTT message from the hub: "<message id>/<event>/<destination>" for a
    status event (JSON), the message id for an envelope (user property, else in the envelope)."""
    payload = message.payload
    if payload.startswith(b"{"):
        event = json.loads(payload)
        return f"{event['message_id']}/{event['event']}/{event.get('destination', '')}"
    for name, value in getattr(getattr(message, "properties", None), "UserProperty", None) or []:
        if name == "message-id":
            return str(value)
    from lxml import etree

    return etree.fromstring(payload).findtext(".//{urn:sw-hub:envelope:1}messageId") or message.topic
