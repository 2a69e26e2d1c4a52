"""``webhook``: signed callbacks to a portal: status events (JSON) and envelopes (XML).

Like ``http`` (same retry rules: 2xx delivered; 408/425/429/5xx, time-outs, refused connections
retried; other 4xx dead-lettered with the portal's own answer), and every POST is signed:

    X-Hub-Signature: t=<unix seconds>,sha256=<hex HMAC-SHA256(secret, "<t>." + body)>

The timestamp is inside the MAC so a captured callback cannot be replayed later than the
portal's tolerance; ``verify`` is what the portal runs. The secret comes from
``options.secret_file`` (relative to hub.toml) or ``options.secret_env``, never from hub.toml
itself; an agency without one is a configuration error (the hub never sends an unsigned callback).

Status events reach the portal through the durable outbox (``hub.events``): an agency with
``options.events`` gets one ``@events`` row per event, delivered here as ``application/json``
with ``X-Hub-Event`` set to the event's kind and ``X-Hub-Event-Id`` to its ``event_id`` (a portal
that drops redeliveries does so by this id: ``X-Message-Id`` is the same for every event of a
message).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time

from hub.config import Agency
from hub.errors import ConfigError
from hub.events import EVENTS_ROUTE, event_of

from .base import AdapterSettings, Delivery
from .http import HttpAdapter

HEADER = "X-Hub-Signature"


def sign(secret: bytes, body: bytes, at: int | None = None) -> str:
    t = int(time.time()) if at is None else at
    mac = hmac.new(secret, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},sha256={mac}"


def verify(secret: bytes, body: bytes, header: str, tolerance: float = 300.0, now: float | None = None) -> bool:
    """True if ``header`` is a valid signature of ``body`` made within ``tolerance`` seconds."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        t = int(fields["t"])
        given = fields["sha256"]
    except (ValueError, KeyError):
        return False
    if abs((time.time() if now is None else now) - t) > tolerance:
        return False
    expected = hmac.new(secret, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, given)


def load_secret(agency: Agency, settings: AdapterSettings) -> bytes:
    key = f"agencies[{agency.id}].options"
    if "secret_file" in agency.options:
        path = settings.path(str(agency.options["secret_file"]))
        try:
            secret = path.read_bytes().strip()
        except OSError as exc:
            raise ConfigError(str(path), f"{key}.secret_file", f"cannot read the webhook secret: {exc.strerror}") from None
    elif "secret_env" in agency.options:
        secret = os.environ.get(str(agency.options["secret_env"]), "").encode()
    else:
        raise ConfigError(settings.config_file, key, "a webhook needs secret_file or secret_env: callbacks are always signed")
    if len(secret) < 16:
        raise ConfigError(settings.config_file, key, "the webhook secret must have at least 16 bytes")
    return secret


class WebhookAdapter(HttpAdapter):
    alias = "webhook"
    carries_events = True
    option_names = HttpAdapter.option_names | {"secret_file", "secret_env"}

    def __init__(self, agency: Agency, settings: AdapterSettings) -> None:
        super().__init__(agency, settings)
        self._secret = load_secret(agency, settings)

    def request_headers(self, delivery: Delivery) -> dict[str, str]:
        headers = super().request_headers(delivery)
        headers[HEADER] = sign(self._secret, delivery.payload)
        if delivery.route == EVENTS_ROUTE:
            headers["Content-Type"] = "application/json"
            event = event_of(delivery.payload)
            headers["X-Hub-Event"] = str(event.get("event", ""))
            # every event of a message carries its X-Message-Id: this is what tells one event from another
            headers["X-Hub-Event-Id"] = str(event.get("event_id", ""))
        return headers
