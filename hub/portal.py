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

A key in the URL that no stored message can have (``refused_key``: a character XML cannot carry,
which PostgreSQL's text cannot hold either) and a ``sender`` given empty or more than once are
400s; a store that cannot be read now is a 503 with Retry-After (``store_answers``). Every
refusal is JSON ``{"error": sentence}``.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Awaitable, Callable, Iterable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .config import HubSettings, Network
from .errors import StoreError, TryAgain
from .events import EVENTS_ROUTE
from .metrics import scraper_allowed
from .openapi import openapi_document
from .store import MessageRecord, State, Store, Trace
from .tracing import ts


log = logging.getLogger("hub.portal")

Endpoint = Callable[[Request], Awaitable[Response]]

# what no XML 1.0 document carries: C0 controls but tab, LF and CR; U+FFFE, U+FFFF; surrogates
_NOT_IN_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def refused_key(**keys: str | None) -> Response | None:
    """A 400 for the first of ``keys`` (a message id, conversation key or sender from the URL)
    that no stored message can have, else None. Every one the hub stored came from an XML
    document, so a character XML cannot carry names nothing; it is refused before the store is
    asked (PostgreSQL's text cannot even hold a NUL: asked for one, the store failed, a 500)."""
    for name, value in keys.items():
        found = _NOT_IN_XML.search(value or "")
        if found:
            return JSONResponse({"error": f"{name.replace('_', ' ')} holds the character U+{ord(found.group()):04X}, "
                                          f"which no message can carry"}, status_code=400)
    return None


def store_answers(endpoint: Endpoint) -> Endpoint:
    """``endpoint`` whose store faults are answers, not a bare 500 with a traceback: a store that
    cannot be reached now (``TryAgain``: e.g. PostgreSQL down) is a 503 with Retry-After, as
    ``GET /health`` says "not ready"; another store failure a 500 that says so (logged)."""

    async def guarded(request: Request) -> Response:
        try:
            return await endpoint(request)
        except TryAgain as exc:
            return JSONResponse({"error": f"the hub cannot read its store now; ask again later ({exc})"},
                                status_code=503, headers={"Retry-After": "1"})
        except StoreError as exc:
            log.error("GET %s: %s", request.url.path, exc)
            return JSONResponse({"error": "the hub failed to read its store (an internal error, logged); ask again later"}, status_code=500)

    return guarded


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
        refused = refused_key(message_id=message_id)
        if refused is not None:
            return refused
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
        message_id, senders = request.path_params["message_id"].lower(), request.query_params.getlist("sender")
        if len(senders) > 1:
            return JSONResponse({"error": f"sender is given {len(senders)} times: name one agency"}, status_code=400)
        sender = senders[0] if senders else None
        if sender == "":
            return JSONResponse({"error": "sender is empty: name the agency that sent the message, or leave sender out"}, status_code=400)
        refused = refused_key(message_id=message_id, sender=sender)
        if refused is not None:
            return refused
        found = await run_in_threadpool(receipt_of, store, message_id, sender)
        if found is None:  # never seen, or refused: a NACK is no receipt
            whose = f" from {sender}" if sender else ""
            return JSONResponse({"error": f"no receipt for message {message_id}{whose}: not accepted"}, status_code=404)
        return Response(found, media_type="application/xml")  # as given: its signature still verifies

    async def conversation(request: Request) -> Response:
        key = request.path_params["key"]
        refused = refused_key(conversation_key=key)
        if refused is not None:
            return refused
        found = await run_in_threadpool(conversation_of, key)
        if found is None:
            return JSONResponse({"error": f"no conversation {key}"}, status_code=404)
        return JSONResponse(found)

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    return [
        Route("/messages/{message_id}/status", readers_only(readers, store_answers(status)), methods=["GET"]),
        Route("/messages/{message_id}/receipt", readers_only(readers, store_answers(receipt)), methods=["GET"]),
        Route("/conversations/{key}", readers_only(readers, store_answers(conversation)), methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]
