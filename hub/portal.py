"""The portal's read side of the listener: a message's status, a conversation, the OpenAPI document.

    GET /messages/{id}/status   delivered | failed | in_progress | rejected, per destination
    GET /messages/{id}/receipt  the signed receipt the hub answered with, byte for byte
    GET /conversations/{key}    the messages of one exchange (key: conversation id, reference or message id)
    GET /openapi.json           the listener's API, including the status webhook (hub.openapi)

Submitting is ``POST /messages`` (hub.server); status changes are pushed to subscribed agencies
(webhook, MQTT) through the outbox (hub.events). Event rows (route ``@events``) are part of a
message's trace but not of its status.

The receipt of a message id that several senders used is that of the message received first,
the one ``GET /messages/{id}`` describes (``Store.trace``), or with ``?sender=AGENCY`` that
sender's own (``receipt_of``).

These and ``GET /messages/{id}`` (hub.server) tell anyone who knows a message id its senders,
destinations and delivery details: only clients in ``[hub] read_from`` (loopback by default, the
same syntax as ``metrics_from``) get them, others a 403 (``readers_only``). What they return
carries no absolute file system path of the hub (``without_paths``: e.g. the file adapter's
"written to /srv/..." becomes "written to …/NAME.xml"); ``hub trace`` keeps the full text.
"""

from __future__ import annotations

import re
from typing import Any, Awaitable, Callable, Iterable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .config import HubSettings, Network
from .events import EVENTS_ROUTE
from .metrics import scraper_allowed
from .openapi import openapi_document
from .store import MessageRecord, State, Store, Trace
from .tracing import ts


Endpoint = Callable[[Request], Awaitable[Response]]


def receipt_of(store: Store, message_id: str, sender: str | None = None) -> bytes | None:
    """The signed receipt given for ``message_id`` (from ``sender``; without one, to the first who
    used the id), or None when no such message was accepted."""
    if sender is not None:
        found = store.original(sender, message_id)
        return None if found is None else found.receipt
    m = store.trace(message_id).message
    return None if m is None else m.receipt


def readers_only(allowed: Iterable[Network], endpoint: Endpoint) -> Endpoint:
    """``endpoint`` for clients in ``allowed`` (``[hub] read_from``, checked as ``metrics_from``:
    ``hub.metrics.scraper_allowed``); a 403 saying which setting allows it for the others."""
    networks = tuple(allowed)

    async def guarded(request: Request) -> Response:
        host = request.client.host if request.client else None
        if not scraper_allowed(host, networks):
            return JSONResponse({"error": f"forbidden: message traces, status, receipts and conversations are not served to "
                                          f"{host or 'an unknown address'} (hub.toml: [hub] read_from)"}, status_code=403)
        return await endpoint(request)

    return guarded


# An absolute path of two parts or more, standing alone or in quotes ("/srv/hub/in", '/a/b.xml',
# file:///etc/x.crl), but not the path of a URL (http://host/a/b: after a word character or "//")
# nor an XPath with prefixes (/co:A/co:B stops at the ":")
_ABSOLUTE_PATH = re.compile(r"(?:\bfile://|(?<![\w.:/~-]))(?:/[^\s/:'\"<>()\[\]{},;|]+){2,}/?")


def without_paths(value: Any) -> Any:
    """``value`` (a JSON answer) with every absolute file system path in its strings cut to
    ``…/`` and its last part: the hub's folders are not the partners' business."""
    if isinstance(value, str):
        return _ABSOLUTE_PATH.sub(lambda m: "…/" + m.group(0).rstrip("/").rsplit("/", 1)[-1], value) if "/" in value else value
    if isinstance(value, dict):
        return {k: without_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_paths(v) for v in value]
    return value


def message_status(trace: Trace) -> dict[str, Any] | None:
    """The portal's view of one message, or None if the hub never saw it."""
    m = trace.message
    if m is None:
        rejected = [e for e in trace.audit if e.event == "rejected"]
        if not rejected:
            return None
        last = rejected[-1]
        return {"message_id": last.message_id, "sender": last.actor, "status": "rejected", "detail": last.detail, "at": ts(last.at)}
    rows = [r for r in trace.rows if r.route != EVENTS_ROUTE]
    states = {r.state for r in rows}
    status = "failed" if State.DEAD in states else "delivered" if states <= {State.DELIVERED} else "in_progress"
    return {
        **_summary(m),
        "status": status,
        "destinations": [
            {"agency": r.destination, "state": r.state.value, "attempts": r.attempts, "updated_at": ts(r.updated_at),
             "last_error": r.last_error if r.state is not State.DELIVERED else None}
            for r in rows
        ],
    }


def _summary(m: MessageRecord) -> dict[str, Any]:
    return {
        "message_id": m.message_id, "sender": m.sender, "received_at": ts(m.received_at), "document_type": m.document_type,
        "function": m.function, "route": m.route, "reference": m.reference, "pre_reference": m.pre_reference,
        "conversation": m.conversation,
    }


def portal_routes(store: Store, party_id: str, read_from: Iterable[Network] | None = None) -> list[Route]:
    """``read_from``: the clients that may read status and conversations (default: loopback)."""
    document = openapi_document(party_id)
    readers = tuple(read_from) if read_from is not None else HubSettings.read_from

    async def status(request: Request) -> Response:
        message_id = request.path_params["message_id"].lower()
        found = message_status(await run_in_threadpool(store.trace, message_id))
        if found is None:
            return JSONResponse({"error": f"no message {message_id}"}, status_code=404)
        return JSONResponse(without_paths(found))

    def conversation_of(key: str) -> dict[str, Any] | None:
        records = store.conversation(key)
        if not records:
            return None
        messages = []
        for m in records:
            state = message_status(store.trace(m.message_id)) or {}
            messages.append({**_summary(m), "status": state.get("status")})
        return {"conversation": records[0].conversation, "messages": messages}

    async def receipt(request: Request) -> Response:
        message_id, sender = request.path_params["message_id"].lower(), request.query_params.get("sender")
        found = await run_in_threadpool(receipt_of, store, message_id, sender)
        if found is None:  # never seen, or refused: a NACK is no receipt
            whose = f" from {sender}" if sender else ""
            return JSONResponse({"error": f"no receipt for message {message_id}{whose}: not accepted"}, status_code=404)
        return Response(found, media_type="application/xml")  # as given: its signature still verifies

    async def conversation(request: Request) -> Response:
        key = request.path_params["key"]
        found = await run_in_threadpool(conversation_of, key)
        if found is None:
            return JSONResponse({"error": f"no conversation {key}"}, status_code=404)
        return JSONResponse(found)

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    return [
        Route("/messages/{message_id}/status", readers_only(readers, status), methods=["GET"]),
        Route("/messages/{message_id}/receipt", readers_only(readers, receipt), methods=["GET"]),
        Route("/conversations/{key}", readers_only(readers, conversation), methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]
