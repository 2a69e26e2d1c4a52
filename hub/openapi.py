"""The listener's OpenAPI 3.1 document, served at ``GET /openapi.json``; written by hand, checked
against the app's routes by tests/test_portal.py."""

from __future__ import annotations

from typing import Any

XML = {"application/xml": {"schema": {"type": "string", "description": "a hub envelope (urn:sw-hub:envelope:1)"}}}


_NOT_A_READER = {"description": "the client's address is not in [hub] read_from (loopback only by default)"}
_BAD_KEY = {"description": "a key no message can have (a character XML cannot carry); for the receipt also a sender "
                           "given empty or more than once", "content": {"application/json": {}}}
_STORE_DOWN = {"description": "the store cannot be read now: ask again after Retry-After", "content": {"application/json": {}}}

def _json(ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}


def _message_id() -> dict[str, Any]:
    return {"name": "message_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}


_EVENT = {
    "type": "object",
    "required": ["event_id", "event", "hub", "message_id", "sender", "at"],
    "properties": {
        "event_id": {"type": "string", "format": "uuid", "description": "unique per event: deduplicate redeliveries on it"},
        "event": {"enum": ["received", "delivered", "retry", "dead"]},
        "hub": {"type": "string"},
        "message_id": {"type": "string"},
        "sender": {"type": "string"},
        "at": {"type": "string", "format": "date-time"},
        "destination": {"type": "string", "description": "delivered, retry, dead: the destination agency"},
        "attempt": {"type": "integer"},
        "detail": {"type": "string", "description": "the destination's own answer or error"},
        "destinations": {"type": "array", "items": {"type": "string"}, "description": "received: where it goes"},
        "document_type": {"type": "string"},
        "function": {"type": "string"},
        "conversation": {"type": ["string", "null"]},
    },
}

_STATUS = {
    "type": "object",
    "required": ["message_id", "status"],
    "properties": {
        "message_id": {"type": "string"},
        "sender": {"type": "string"},
        "status": {"enum": ["delivered", "failed", "in_progress", "rejected"],
                   "description": "failed: at least one destination dead-lettered; rejected: answered with a NACK"},
        "received_at": {"type": "string", "format": "date-time"},
        "document_type": {"type": "string"},
        "function": {"type": "string"},
        "route": {"type": "string"},
        "reference": {"type": ["string", "null"]},
        "pre_reference": {"type": ["string", "null"]},
        "conversation": {"type": ["string", "null"]},
        "detail": {"type": "string", "description": "rejected: the NACK's code and reason"},
        "destinations": {"type": "array", "items": {"type": "object", "properties": {
            "agency": {"type": "string"}, "state": {"enum": ["pending", "leased", "delivered", "dead"]},
            "attempts": {"type": "integer"}, "updated_at": {"type": "string"}, "last_error": {"type": ["string", "null"]}}}},
    },
}


def openapi_document(party_id: str) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": f"sw-hub listener ({party_id})",
            "version": "1",
            "description": "Submit envelopes, follow their status and conversations. Every accepted message is "
            "durably recorded before its receipt is returned. Status changes are pushed to subscribed "
            "agencies as signed webhooks (see `webhooks`) or MQTT events. Any route may answer, in JSON "
            "`{\"error\": sentence}`: 503 with Retry-After past [hub] max_connections (on /soap a SOAP fault), 408 "
            "for a request head that did not arrive within [hub] head_timeout, 431 for one larger than 64 KiB (or a chunked body whose framing outweighs it), 400 for "
            "a request that is not HTTP/1.1, 404 and 405 for a path or method not served.",
        },
        "paths": {
            "/messages": {"post": {
                "summary": "Submit a signed envelope",
                "requestBody": {"required": True, "content": XML},
                "responses": {
                    "200": {"description": "signed receipt (function 99); a duplicate gets the original receipt", "content": XML},
                    "400": {"description": "signed NACK (function 00) with an ErrorList: code and reason", "content": XML},
                    "408": {"description": "NACK ERR00: the body did not arrive within [hub] body_timeout; send it again", "content": XML},
                    "413": {"description": "NACK ERR11: larger than the limit", "content": XML},
                    "503": {"description": "NACK ERR50: not recorded, send the same message again later", "content": XML},
                },
            }},
            "/messages/{message_id}": {"get": {
                "summary": "A message's trace: every destination, attempt and audit entry",
                "parameters": [_message_id()],
                "responses": {"200": {"description": "the trace", "content": {"application/json": {"schema": {"type": "object"}}}},
                              "404": {"description": "no such message"}, "403": _NOT_A_READER, "400": _BAD_KEY, "503": _STORE_DOWN},
            }},
            "/messages/{message_id}/status": {"get": {
                "summary": "A message's status",
                "parameters": [_message_id()],
                "responses": {"200": {"description": "the status", "content": _json("Status")}, "404": {"description": "no such message"},
                              "403": _NOT_A_READER, "400": _BAD_KEY, "503": _STORE_DOWN},
            }},
            "/messages/{message_id}/receipt": {"get": {
                "summary": "The signed receipt the hub answered with when it accepted the message, byte for byte",
                "description": "Its signature verifies with the hub's certificate (`GET /keys`). A message id that several "
                "senders used: the receipt of the message received first, as `GET /messages/{message_id}` shows, "
                "or with `sender` that sender's own.",
                "parameters": [_message_id(), {"name": "sender", "in": "query", "required": False, "schema": {"type": "string"},
                                               "description": "the agency that sent the message"}],
                "responses": {"200": {"description": "the receipt (function 99)", "content": XML},
                              "404": {"description": "no such message, or it was not accepted (a NACK is no receipt)"}, "403": _NOT_A_READER,
                              "400": _BAD_KEY, "503": _STORE_DOWN},
            }},
            "/conversations/{key}": {"get": {
                "summary": "The messages of one conversation",
                "description": "A message joins the conversation of the message its Subject/preReference names (by "
                "reference or message id); otherwise its own reference (or message id) starts one. `key` is a "
                "conversation id, or the reference or message id of any message in it.",
                "parameters": [{"name": "key", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "the conversation, oldest message first", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"conversation": {"type": "string"},
                                                     "messages": {"type": "array", "items": {"$ref": "#/components/schemas/Status"}}}}}}},
                              "404": {"description": "no such conversation"}, "403": _NOT_A_READER, "400": _BAD_KEY, "503": _STORE_DOWN},
            }},
            "/health": {"get": {"summary": "Whether the hub can take messages, and its outbox counts",
                                "responses": {"200": {"description": "ok: status, party and outbox (counts per destination and state)"},
                                              "503": {"description": "status (not ready: the store cannot be reached; cannot record: "
                                                                     "the store refuses writes, e.g. its disk is full or read-only; "
                                                                     "certificate not valid: the hub's signing certificate has expired "
                                                                     "or is not valid yet), party and reason (a sentence)"}}}},
            "/soap": {
                "get": {"summary": "The WSDL of the SOAP endpoint (`?wsdl`)",
                        "parameters": [{"name": "wsdl", "in": "query", "required": True, "allowEmptyValue": True, "schema": {"type": "string"}}],
                        "responses": {"200": {"description": "WSDL 1.1 with SOAP 1.1 and 1.2 bindings", "content": {"text/xml": {}}}}},
                "post": {"summary": "SOAP 1.1 / 1.2 operation Submit: an envelope in, the receipt or NACK out",
                         "responses": {"200": {"description": "SubmitResponse"}, "400": {"description": "SOAP 1.2 Sender fault"},
                                       "408": {"description": "SOAP fault, detail ERR00: the body did not arrive within [hub] body_timeout"},
                                       "500": {"description": "SOAP fault (1.1: any; 1.2: Receiver)"},
                                       "503": {"description": "SOAP Server/Receiver fault, detail ERR50: more connections than [hub] max_connections"}}},
            },
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1"}}}},
            "/keys": {"get": {"summary": "The hub's current certificate, then the next one published ahead of a rotation, "
                                      "then the previous one until it expires",
                              "responses": {"200": {"description": "PEM bundle", "content": {"application/x-pem-file": {}}}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics: certificate expiry, messages accepted and rejected by code, outbox rows",
                                 "responses": {"200": {"description": "text exposition format 0.0.4", "content": {"text/plain": {}}},
                                               "403": {"description": "the client's address is not in [hub] metrics_from"},
                                               "404": {"description": "metrics are off ([hub] metrics_from = [])"}}}},
        },
        "webhooks": {
            "status": {"post": {
                "summary": "A status change of a message (agencies with adapter `webhook` and `options.events`)",
                "description": "Delivered through the hub's durable outbox: retried with backoff on 408/425/429/5xx or "
                "no answer, dead-lettered on other 4xx. Check `X-Hub-Signature` before trusting the body.",
                "parameters": [
                    {"name": "X-Hub-Signature", "in": "header", "required": True, "schema": {"type": "string"},
                     "description": "t=<unix seconds>,sha256=<hex HMAC-SHA256(secret, \"<t>.\" + raw body)>; refuse old t"},
                    {"name": "X-Hub-Event", "in": "header", "schema": {"type": "string"}},
                    {"name": "X-Hub-Event-Id", "in": "header", "description": "the event's event_id: what tells a redelivery from another event of the message",
                     "schema": {"type": "string"}},
                    {"name": "X-Message-Id", "in": "header", "schema": {"type": "string"}},
                ],
                "requestBody": {"content": _json("StatusEvent")},
                "responses": {"200": {"description": "taken"}},
            }},
        },
        "components": {"schemas": {"Status": _STATUS, "StatusEvent": _EVENT}},
    }
