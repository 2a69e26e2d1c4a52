"""The adapter interface: deliver one signed envelope to one agency; optionally feed inbound ones.

An adapter speaks one protocol. It never decides about retries: it says what happened
(``DELIVERED``, ``RETRY`` for a transient fault, ``FAILED`` for a permanent one) and the
dispatcher applies the route's retry policy.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable, ClassVar, Mapping, Sequence

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
