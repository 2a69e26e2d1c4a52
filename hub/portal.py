"""The portal's read side of the listener: a message's status, a conversation, the OpenAPI document.

    GET /messages/{id}/status   delivered | failed | in_progress | rejected, per destination
    GET /conversations/{key}    the messages of one exchange (key: conversation id, reference or message id)
    GET /openapi.json           the listener's API, including the status webhook (hub.openapi)

Submitting is ``POST /messages`` (hub.server); status changes are pushed to subscribed agencies
(webhook, MQTT) through the outbox (hub.events). Event rows (route ``@events``) are part of a
message's trace but not of its status.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .events import EVENTS_ROUTE
from .openapi import openapi_document
from .store import MessageRecord, State, Store, Trace
from .tracing import ts


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


def portal_routes(store: Store, party_id: str) -> list[Route]:
    document = openapi_document(party_id)

    async def status(request: Request) -> Response:
        message_id = request.path_params["message_id"].lower()
        found = message_status(await run_in_threadpool(store.trace, message_id))
        if found is None:
            return JSONResponse({"error": f"no message {message_id}"}, status_code=404)
        return JSONResponse(found)

    def conversation_of(key: str) -> dict[str, Any] | None:
        records = store.conversation(key)
        if not records:
            return None
        messages = []
        for m in records:
            state = message_status(store.trace(m.message_id)) or {}
            messages.append({**_summary(m), "status": state.get("status")})
        return {"conversation": records[0].conversation, "messages": messages}

    async def conversation(request: Request) -> Response:
        key = request.path_params["key"]
        found = await run_in_threadpool(conversation_of, key)
        if found is None:
            return JSONResponse({"error": f"no conversation {key}"}, status_code=404)
        return JSONResponse(found)

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    return [
        Route("/messages/{message_id}/status", status, methods=["GET"]),
        Route("/conversations/{key}", conversation, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]
