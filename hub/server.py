"""The hub's HTTP listener (starlette): envelopes in, receipts or NACKs out.

    POST /messages        an envelope; 200 + signed receipt, 400 + signed NACK, 413 too large,
                          503 + "try again" NACK (ERR50) when the store cannot record it
    GET  /messages/{id}   the message's trace as JSON (clients in [hub] read_from only; no file paths)
    GET  /health          outbox counts; 503 with the reason while the store cannot be reached or
                          cannot record (a full disk, read-only) or the signing certificate is out of date
    POST /soap, GET /soap?wsdl            SOAP 1.1/1.2 operation Submit (adapters.soap_listener)
    GET  /messages/{id}/status, /messages/{id}/receipt, /conversations/{key}, /openapi.json
                          the portal's API (hub.portal; all but the last, as the trace, for
                          clients in [hub] read_from only)
    GET  /keys, /metrics  the hub's published certificates (hub.keys), Prometheus metrics (hub.metrics)
    ...                   plus each adapter's own endpoints (e.g. POST /as4 for ASEAN gateways)

Every refusal is the hub's own answer: a signed NACK on POST /messages (also for a body that does
not arrive within ``body_timeout``: 408, ERR00), a SOAP fault on /soap, a signed eb:Error on /as4,
and JSON ``{"error": sentence}`` elsewhere, including a path nothing is served at (404) and a
method a route does not take (405, with ``Allow``). A store that cannot be read now is a 503 with
Retry-After on every route (``hub.portal.store_answers``), never a bare 500.
"""

from __future__ import annotations

import logging
from typing import Sequence

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from adapters.soap_listener import soap_routes

from .errors import TRY_AGAIN_TEXT, Code, Rejected, TryAgain
from .httpio import CLOSE, BodyNotRead, Gate, read_bounded
from .keys import not_valid_to_sign
from .portal import portal_routes, readers_only, refused_key, store_answers, without_paths
from .pipeline import Pipeline
from .store import Store
from .tracing import trace_dict

log = logging.getLogger("hub.server")

XML = "application/xml"

def create_app(pipeline: Pipeline, store: Store, extra_routes: Sequence[BaseRoute] = (), gate: Gate | None = None) -> Starlette:
    """The listener; ``extra_routes`` are the adapters' own endpoints (``Runtime.listener_routes``),
    sharing ``gate`` (``Runtime.gate``: as many threads as the pipeline lets in) with it."""
    limit = pipeline.settings.limits.max_bytes
    in_pipeline = (gate or Gate(pipeline.settings.pipeline_threads)).run

    async def submit(request: Request) -> Response:
        try:
            data = await read_bounded(request, pipeline.settings.limits)
        except BodyNotRead as exc:
            if exc.gone:  # nobody to answer: no NACK is signed
                return Response(status_code=exc.status)
            nack = await run_in_threadpool(pipeline.nack, Rejected(Code.INVALID_MESSAGE, exc.sentence), None)
            return Response(nack.xml, status_code=exc.status, media_type=XML, headers=CLOSE)
        if data is None:  # signed and recorded off the event loop, as every NACK
            nack = await run_in_threadpool(pipeline.nack, Rejected(Code.TOO_LARGE, f"the message is larger than the limit of {limit} bytes"), None)
            return Response(nack.xml, status_code=413, media_type=XML, headers=CLOSE)
        try:
            ack = await in_pipeline(pipeline.submit, data, None)
        except TryAgain as exc:
            log.warning("store unavailable, asking the sender to retry: %s", exc)
            body = await run_in_threadpool(
                lambda: pipeline.nack(Rejected(Code.TRY_AGAIN, TRY_AGAIN_TEXT), None).xml
            )
            return Response(body, status_code=503, media_type=XML, headers={"Retry-After": "1"})
        # the pipeline answers its own faults with an ERR99 NACK: a 500, not the sender's fault
        status = 200 if ack.accepted else 500 if ack.code == Code.INTERNAL_ERROR.value else 400
        return Response(ack.xml, status_code=status, media_type=XML)

    async def trace(request: Request) -> Response:
        message_id = request.path_params["message_id"].lower()
        refused = refused_key(message_id=message_id)
        if refused is not None:
            return refused
        found = await run_in_threadpool(store.trace, message_id)
        if found.message is None and not found.audit:
            return JSONResponse({"error": f"no message {message_id}"}, status_code=404)
        return JSONResponse(without_paths(trace_dict(found)))  # `hub trace` shows the paths to the operator

    async def health(request: Request) -> Response:
        """200 "ok" with the outbox counts while the hub can take messages; else 503 with the
        reason, so that a load balancer sends senders elsewhere and an operator reads why:
        "not ready" (the store cannot be reached), "cannot record" (the store refused writes for a
        reason of its own: a full disk, read-only, an I/O error; ``Store.write_fault``, judged by
        the last write that failed and what the store can see, never by a write of its own), or
        "certificate not valid" (the hub's signing certificate has expired or is not valid yet:
        every receipt and NACK it signs is refused by partners, so the hub should get no traffic
        until it is renewed and reloaded). Beyond its counts query, a probe costs one date
        comparison and, for SQLite, a statvfs and two access(2) calls; the message path pays one
        attribute read (``Store._note_recorded``)."""
        party = pipeline.settings.party_id
        try:
            counts = await run_in_threadpool(store.counts)
        except TryAgain as exc:  # not ready: the store's database is unreachable (at start-up or later)
            return JSONResponse({"status": "not ready", "party": party, "reason": str(exc)}, status_code=503)
        fault = store.write_fault(limit)
        if fault is not None:
            return JSONResponse({"status": "cannot record", "party": party, "reason": fault.reason}, status_code=503)
        out_of_date = not_valid_to_sign(pipeline.signer.certificate)
        if out_of_date is not None:
            return JSONResponse({"status": "certificate not valid", "party": party, "reason": f"{out_of_date}; renew it and reload (SIGHUP)"},
                                status_code=503)
        outbox: dict[str, dict[str, int]] = {}
        for (destination, state), n in counts.items():
            outbox.setdefault(destination, {})[state.value] = n
        return JSONResponse({"status": "ok", "party": pipeline.settings.party_id, "outbox": outbox})

    return Starlette(
        routes=[
            Route("/messages", submit, methods=["POST"]),
            Route("/messages/{message_id}", readers_only(pipeline.settings.read_from, store_answers(trace)), methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            *portal_routes(store, pipeline.settings.party_id, pipeline.settings.read_from),
            *soap_routes(pipeline.submit, pipeline.settings.limits, run=in_pipeline),
            *extra_routes,
        ],
        exception_handlers={HTTPException: http_error, Exception: internal_error},
    )


async def internal_error(request: Request, exc: Exception) -> Response:
    """A fault inside the hub that no route caught (a bug): a 500 that says so in the hub's JSON
    answer; Starlette still raises it on, so the log has its traceback."""
    return JSONResponse({"error": "a fault inside the hub (an internal error, logged); try again later"}, status_code=500)


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no route at this path, a method the route does not take) as the
    hub's JSON answer with a sentence, instead of a bare "Not Found"."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        sentence = f"nothing is served at {request.url.path}: GET /openapi.json lists what this listener serves"
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        sentence = f"{request.method} is not allowed on {request.url.path}; it takes {allowed}"
    else:
        sentence = exc.detail
    return JSONResponse({"error": sentence}, status_code=exc.status_code, headers=exc.headers)
