"""The adapter interface: deliver one signed envelope to one agency; optionally feed inbound ones.

An adapter speaks one protocol. It never decides about retries: it says what happened
(``DELIVERED``, ``RETRY`` for a transient fault, ``FAILED`` for a permanent one) and the
dispatcher applies the route's retry policy.
"""

from __future__ import annotations

import re
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable, ClassVar, Mapping, Sequence
from urllib.parse import urlsplit, urlunsplit

from hub.config import Agency
from hub.errors import ConfigError
from hub.envelope import Ack, Party
from hub.xml import Limits

if TYPE_CHECKING:
    from hub.errors import Rejected
    from hub.keys import CurrentSigner
    from hub.trust import Signer
    from hub.truststore import TrustStore


class Outcome(str, Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    FAILED = "failed"


@dataclass(frozen=True)
class Delivery:
    """One attempt at handing one outbox row to its destination."""

    row_id: int
    message_id: str
    sender: str
    destination: str
    payload: bytes
    attempt: int
    route: str = ""  # "@events" (hub.events.EVENTS_ROUTE): the payload is a JSON status event


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    detail: str
    # RETRY only: seconds the partner asked the hub to wait (HTTP Retry-After); the dispatcher
    # waits at least that long, never beyond the route's ``max_delay``
    retry_after: float | None = None


# control characters (C0, DEL, C1) and the Unicode marks that reorder what a terminal shows (bidi)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def one_line(text: str | bytes, limit: int = 500) -> str:
    """What a partner said (or an error quoting it), fit for a one-line log entry, an outbox row's
    last error and an operator's terminal: decoded, whitespace runs made one space, any other
    control character shown as an escape (a partner's answer could otherwise break the lines of
    ``hub outbox list`` or send escape sequences to the terminal that shows it), cut at ``limit``."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = " ".join(text.split())
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def without_credentials(url: str) -> str:
    """A URL as details and logs may show it: ``user:password@`` removed (they reach the store too)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    try:
        port = parts.port
    except ValueError:
        port = None
    return urlunsplit((parts.scheme, host + (f":{port}" if port else ""), parts.path, parts.query, parts.fragment))


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from an HTTP ``Retry-After`` value (delay-seconds or an HTTP-date, RFC 9110
    10.2.3); None when absent or unreadable. A date in the past is 0; an absurd value is returned
    as it is, for the caller to cap (the dispatcher never waits beyond the route's ``max_delay``)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, OverflowError, IndexError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


# 408 Request Timeout, 425 Too Early, 429 Too Many Requests: the partner may take the same request later
RETRYABLE_STATUS = frozenset({408, 425, 429})


def retryable_status(status: int) -> bool:
    """Whether a partner's HTTP answer with this status is a transient fault, to be retried.

    The rule of every adapter that speaks HTTP: 2xx delivered; 408, 425, 429 and 5xx (like
    time-outs and connection errors, which the adapter sees before any status) retried; any
    other 4xx a permanent failure. What a 2xx proves is the protocol's own business (an AS4
    partner's 2xx delivers only with a receipt that checks out), so it is left to the caller.
    """
    return status >= 500 or status in RETRYABLE_STATUS


# The core's entry point handed to inbound sources: (raw bytes, authenticated identity or None).
Submit = Callable[[bytes, "str | None"], Ack]
Run = Callable[..., Awaitable[Any]]  # run(func, *args): func(*args) in a worker thread, awaited


class InboundSource(ABC):
    """A source of inbound messages that the hub runs beside its listener (e.g. a watched folder)."""

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...


def seconds(options: Mapping[str, Any], default: float, file: str, key: str, name: str = "timeout") -> float:
    """An agency's option ``name`` (``key`` names it in faults), ``default`` when not given: a
    positive, finite number of seconds, or a ``ConfigError`` that ``hub check`` names (not a
    ValueError from ``float()`` at start-up, nor a NaN deadline that never ends)."""
    value = options.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise ConfigError(file, key, f"must be a positive number of seconds, not {value!r}")
    return float(value)


@dataclass(frozen=True)
class AdapterSettings:
    timeout: float = 10.0
    base: Path = Path(".")  # relative folders in agency settings are relative to hub.toml
    party: Party | None = None  # the hub itself, for protocols that name both ends (asw)
    signer: "Signer | CurrentSigner | None" = None  # the hub's key, for protocols that sign at their own level (asw); swapped on reload
    limits: Limits = Limits()  # bounds on what an adapter's own inbound endpoint parses
    trust: "TrustStore | None" = None  # partners' certificates, CAs and CRLs, for protocol-level signatures
    config_file: str = "hub.toml"  # the configuration file, named in the adapters' configuration errors
    # the hub's signed NACK (``Pipeline.nack``), for what an inbound source refuses before submitting
    nack: "Callable[[Rejected, None], Ack] | None" = None

    def path(self, value: str) -> Path:
        path = Path(value)
        return path if path.is_absolute() else self.base / path


class Adapter(ABC):
    """Delivers to one agency. Instances live as long as the hub and are shared by threads."""

    alias: ClassVar[str]
    carries_events: ClassVar[bool] = False  # can deliver status events (options.events, hub.events)
    # sends each message on in the hub's own name, its message id kept (AS4 to a member gateway):
    # the senders that reach it through this hub must then not share a message id (``Pipeline``)
    reissues: ClassVar[bool] = False
    # the keys of the agency's ``options`` this adapter reads (``events`` too where it carries
    # events): any other key is a configuration error, so a misspelt option is never just ignored
    option_names: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, agency: Agency, settings: AdapterSettings) -> None:
        self.agency, self.settings = agency, settings

    @abstractmethod
    def deliver(self, delivery: Delivery) -> Result: ...

    def inbound(self, submit: Submit) -> InboundSource | None:
        """An inbound source for this agency, if the adapter has one and it is configured."""
        return None

    @classmethod
    def listener_routes(cls, adapters: Sequence[Adapter], submit: Submit, run: Run) -> list[Any]:
        """Routes (starlette ``BaseRoute``) this kind of adapter serves on the hub's HTTP listener,
        built once for every configured agency of the kind (e.g. ``POST /as4`` for ``asw``);
        ``run(func, *args)`` runs what parses and submits a request off the event loop, at most
        as many at once as the pipeline takes (``hub.httpio.Gate``)."""
        return []

    def check(self) -> list[str]:
        """Problems with this agency's adapter settings, for ``hub check``."""
        return []

    def close(self) -> None:
        """Releases connections and threads."""
