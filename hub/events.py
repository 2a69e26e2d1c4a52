"""Status events for the portal (received, delivered, retry, dead), carried by the durable outbox.

An agency subscribes with ``options.events = ["received", "delivered", "retry", "dead"]`` (any
subset) and an adapter that can carry events (``webhook``: signed JSON POSTs; ``mqtt``: JSON on a
status topic). Each event becomes an outbox row for that agency, with route ``@events``, written
in the SAME transaction as the change it reports: the ``received`` rows with the acceptance, the
others with the dispatcher's outcome. So:

- no status change is committed without its event, and no event is lost when the hub crashes;
- events are retried with the default retry policy, dead-lettered with the subscriber's own
  error, resent with ``hub outbox resend`` and visible in ``hub trace`` like any delivery;
- event rows produce no events themselves.

Why the outbox and not fire-and-forget retries in memory: a portal that misses a status change
shows a trader a wrong state until someone looks, and in-memory retries die with the process.
The price is one outbox row per event and subscriber; the commits are the ones the hub makes anyway.
Delivery is at least once: each event carries an ``event_id`` for the subscriber to deduplicate.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from .errors import ConfigError
from .store import OutboxItem, OutboxRow, State
from .tracing import ts

EVENTS_ROUTE = "@events"
KINDS = ("received", "delivered", "retry", "dead")
_BY_OUTCOME = {State.DELIVERED: "delivered", State.PENDING: "retry", State.DEAD: "dead"}


def event_of(payload: bytes) -> dict[str, Any]:
    """The event in an ``@events`` row's payload (adapters read its kind and message id)."""
    return json.loads(payload)


@dataclass(frozen=True)
class StatusEvents:
    """Turns status changes into outbox items for the agencies subscribed to them."""

    hub: str
    subscribers: Mapping[str, frozenset[str]]  # agency id -> event kinds it wants

    @classmethod
    def from_agencies(cls, hub: str, agencies: Iterable[Any], file: str = "hub.toml") -> StatusEvents | None:
        subscribers: dict[str, frozenset[str]] = {}
        for agency in agencies:
            kinds = agency.options.get("events")
            if kinds is None:
                continue
            key = f"agencies[{agency.id}].options.events"
            if isinstance(kinds, str):
                kinds = list(KINDS) if kinds == "all" else [kinds]
            if not isinstance(kinds, list) or not kinds or any(k not in KINDS for k in kinds):
                raise ConfigError(file, key, f"must be a list of {', '.join(KINDS)} (or \"all\"), not {kinds!r}")
            subscribers[agency.id] = frozenset(kinds)
        return cls(hub, subscribers) if subscribers else None

    def _items(self, kind: str, body: dict[str, Any]) -> tuple[OutboxItem, ...]:
        items = []
        for agency, kinds in self.subscribers.items():
            if kind in kinds:
                event = {"event_id": str(uuid.uuid4()), "event": kind, "hub": self.hub, **body}
                items.append(OutboxItem(agency, EVENTS_ROUTE, json.dumps(event, separators=(",", ":")).encode()))
        return tuple(items)

    def received(self, message_id: str, sender: str, document_type: str, function: str,
                 destinations: Sequence[str], at: float, conversation: str | None = None) -> tuple[OutboxItem, ...]:
        """Items to record with the acceptance itself."""
        return self._items("received", {
            "message_id": message_id, "sender": sender, "at": ts(at), "document_type": document_type,
            "function": function, "destinations": list(destinations), "conversation": conversation,
        })

    def settled(self, row: OutboxRow, outcome: State, detail: str, at: float) -> tuple[OutboxItem, ...]:
        """Items to record with a delivery's outcome (none for the event rows themselves)."""
        if row.route == EVENTS_ROUTE:
            return ()
        return self._items(_BY_OUTCOME[outcome], {
            "message_id": row.message_id, "sender": row.sender, "at": ts(at), "destination": row.destination,
            "attempt": row.attempts, "detail": detail,
        })
