"""``POST /as4``: AS4 user messages from member gateways, answered synchronously.

    parse (size, DTD, depth) -> one eb:Messaging, valid against the ebMS 3.0 schema, one
    UserMessage -> From PartyId = a configured gateway, To = this hub -> WS-Security signature by
    that gateway's certificate (only the signed header and body are used from here on) -> one
    payload in the SOAP body -> eb:MessageId names the envelope it carries, eb:Action = its
    documentType -> the hub pipeline (envelope signature, dedupe, route, ONE transaction)
    -> signed eb:Receipt (NRI: the verified ds:References), or a signed eb:Error

A resent message (same eb:MessageId) carries the same envelope, so the pipeline answers it as a
duplicate: it is never delivered twice, and the partner still gets a (fresh, signed) receipt.
HTTP status: 200 receipt; 400 eb:Error (failure); 413 eb:Error (failure, ERR11) too large; 503
eb:Error (warning) when the store cannot record the message now, and 500 eb:Error (warning) for a
fault inside the hub (ERR99, whether the pipeline answered it or this endpoint caught it) — the
partner resends, as for any missing receipt; 408 eb:Error (warning, ERR00) for a body that did not
arrive within ``body_timeout``, which the partner sends again too. An envelope that is not one
Header and one Body (``soap_listener.misshapen``: two Bodies, two Headers) is refused as an
invalid header before its signature is looked at; a MIME multipart message (payloads as
attachments) is refused unread, as a feature not supported (EBMS:0008).
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Sequence

from lxml import etree
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from adapters.base import Run, Submit
from hub.envelope import NS as HUB_NS
from hub.envelope import Party, new_message_id, now_iso
from hub.errors import INTERNAL_ERROR_TEXT, TRY_AGAIN_TEXT, Code, Rejected, TryAgain
from hub.httpio import CLOSE, BodyNotRead, read_bounded

from ..soap_listener import WrapperParser, is_multipart, misshapen
from . import build as as4
from .errors import EbmsCode, EbmsError
from .header import S12, UserMessage, read, read_messaging
from .outbound import ebms_message_id
from .wss import WssSigner, verify

if TYPE_CHECKING:
    from .adapter import AswAdapter

log = logging.getLogger("hub.adapters.asw")
CONTENT_TYPE = "application/soap+xml; charset=utf-8"
WRAPPER_DEPTH = 4  # room for the SOAP envelope around the hub envelope
_LINE = re.compile(r"^line \d+(?:, )?")


def _refusal_text(errors: Sequence[Rejected]) -> str:
    """The NACK's errors in one sentence, each with the path of its fault. Not its line: the
    payload reaches the pipeline serialised again from the signed body (its canonical form), so
    a line number would count lines the partner never sent."""
    parts = []
    for e in errors:
        where = _LINE.sub("", e.location or "")
        parts.append(f"{e.code.value} {e.code.name}: {e.message}" + (f" (at {where})" if where else ""))
    return "the hub refused the payload: " + "; ".join(parts)


class Inbound:
    def __init__(self, adapters: Sequence[AswAdapter], submit: Submit, run: Run | None = None) -> None:
        first = adapters[0].settings
        assert first.party is not None and first.signer is not None
        self.hub: Party = first.party
        self.submit = submit
        self.run = run or run_in_threadpool  # the parse, verification and submit off the event loop (``hub serve``: its gate)
        self.parser = WrapperParser(first.limits, "the SOAP envelope", 0, WRAPPER_DEPTH)
        self._wss = WssSigner(first.signer)
        self.by_party = {a.peer.party_id: a for a in adapters}

    async def endpoint(self, request: Request) -> Response:
        if is_multipart(request.headers.get("content-type", "")):  # refused unread: the payload goes in the SOAP body
            unsupported = EbmsError(EbmsCode.FEATURE_NOT_SUPPORTED, "MIME multipart messages (attachments) are not taken: send the "
                                                                    "SOAP envelope alone, the payload in its body, as application/soap+xml")
            return Response(await self.run(self.error_signal, None, unsupported), status_code=400, media_type=CONTENT_TYPE, headers=CLOSE)
        try:
            data = await read_bounded(request, self.parser.read_limits)
        except BodyNotRead as exc:  # not read whole: nothing to refer to; a partner gone is not answered
            if exc.gone:
                return Response(status_code=exc.status)
            late = EbmsError(EbmsCode.OTHER, f"{Code.INVALID_MESSAGE.value} {exc.sentence}", "warning")
            return Response(await self.run(self.error_signal, None, late), status_code=exc.status, media_type=CONTENT_TYPE, headers=CLOSE)
        if data is None:  # the body is not read: nothing to refer to
            log.info("AS4 message refused: %s", self.parser.too_large())
            too_large = EbmsError(EbmsCode.INVALID_HEADER, f"{Code.TOO_LARGE.value} {self.parser.too_large()}")
            return Response(await self.run(self.error_signal, None, too_large), status_code=413, media_type=CONTENT_TYPE, headers=CLOSE)
        status, body = await self.run(self.handle, data)
        return Response(body, status_code=status, media_type=CONTENT_TYPE)

    def handle(self, data: bytes) -> tuple[int, bytes]:
        """(HTTP status, signed signal) for one inbound AS4 message."""
        ref_to = None
        try:
            root = self._parse(data)
            user = self._user_message(root)
            ref_to = user.message_id
            adapter = self._gateway(user)
            verified = verify(root, adapter.policy, adapter.peer.who)
            signed = read_messaging(verified.messaging).user_messages[0]  # see what is signed
            payload = self._payload(signed, verified.body)
            ack = self.submit(etree.tostring(payload), adapter.agency.id)
        except EbmsError as exc:
            log.info("AS4 message %s refused: %s", ref_to, exc)
            return 400, self.error_signal(ref_to, exc)
        except TryAgain as exc:
            log.warning("AS4 message %s: store unavailable, the partner must resend: %s", ref_to, exc)
            return 503, self.error_signal(ref_to, EbmsError(EbmsCode.OTHER, TRY_AGAIN_TEXT, "warning"))
        except Exception:  # a bug, not the partner's fault: an error signal that says so
            log.exception("AS4 message %s failed inside the hub", ref_to)
            return self._internal_error(ref_to)
        if not ack.accepted:
            if any(e.code is Code.INTERNAL_ERROR for e in ack.errors):  # the pipeline logged it: the partner sends it again
                return self._internal_error(ref_to)
            return 400, self.error_signal(ref_to, EbmsError(EbmsCode.OTHER, _refusal_text(ack.errors)))
        if ack.duplicate:
            log.info("AS4 message %s is a duplicate; receipt sent again, nothing delivered twice", ref_to)
        signal = as4.receipt(message_id=self._id(), timestamp=now_iso(), ref_to=signed.message_id, references=verified.references)
        return 200, self._sign(signal)

    # -- steps ----------------------------------------------------------------------------------

    def _parse(self, data: bytes) -> etree._Element:
        try:
            root = self.parser.parse(data)
        except Rejected as exc:
            raise EbmsError(EbmsCode.INVALID_HEADER, f"{exc.code.value} {exc.message}") from None
        if root.tag != f"{{{S12}}}Envelope":
            raise EbmsError(EbmsCode.INVALID_HEADER, f"an AS4 message is a SOAP 1.2 envelope; the root element is {root.tag}")
        wrong = misshapen(root)
        if wrong is not None:
            raise EbmsError(EbmsCode.INVALID_HEADER, wrong)
        return root

    @staticmethod
    def _user_message(root: etree._Element) -> UserMessage:
        messaging = read(root)
        if messaging.signals or len(messaging.user_messages) != 1:
            raise EbmsError(EbmsCode.PROCESSING_MODE_MISMATCH,
                            f"exactly one eb:UserMessage is accepted here, not {len(messaging.user_messages)} "
                            f"user message(s) and {len(messaging.signals)} signal(s)")
        return messaging.user_messages[0]

    def _gateway(self, user: UserMessage) -> AswAdapter:
        sender = user.sender.id
        adapter = self.by_party.get(sender.value)
        if adapter is None or (sender.type or "") != adapter.peer.party_type:
            raise EbmsError(EbmsCode.PROCESSING_MODE_MISMATCH,
                            f"no member gateway is configured with party id {sender.value!r} of type {sender.type!r}")
        recipient = user.recipient.id.value
        if recipient != self.hub.identity:
            raise EbmsError(EbmsCode.PROCESSING_MODE_MISMATCH, f"the message is for {recipient!r}; this hub is {self.hub.identity!r}")
        return adapter

    def _payload(self, user: UserMessage, body: etree._Element) -> etree._Element:
        children = [c for c in body if isinstance(c.tag, str)]
        body_id = body.get("{http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd}Id")
        if len(user.parts) != 1 or user.parts[0].kind not in ("body", "body-element") or len(children) != 1:
            raise EbmsError(EbmsCode.FEATURE_NOT_SUPPORTED,
                            "exactly one payload is accepted, in the SOAP body (no MIME attachments)")
        href = user.parts[0].href
        if href and href != f"#{body_id}":
            raise EbmsError(EbmsCode.VALUE_INCONSISTENT, f"eb:PartInfo href {href!r} does not name the SOAP body")
        payload = children[0]
        if payload.tag != f"{{{HUB_NS}}}Envelope":
            raise EbmsError(EbmsCode.VALUE_INCONSISTENT, f"the payload must be a hub envelope ({HUB_NS}), not {payload.tag}")
        envelope_id = (payload.findtext(f"{{{HUB_NS}}}Header/{{{HUB_NS}}}Reference/{{{HUB_NS}}}messageId") or "").strip().lower()
        expected = ebms_message_id(envelope_id, user.sender.id.value, user.recipient.id.value)
        if user.message_id != expected:
            raise EbmsError(EbmsCode.VALUE_INCONSISTENT, f"eb:MessageId {user.message_id!r} does not name the envelope it carries ({expected!r})")
        document_type = (payload.findtext(f"{{{HUB_NS}}}Header/{{{HUB_NS}}}Subject/{{{HUB_NS}}}documentType") or "").strip()
        if user.action != document_type:
            raise EbmsError(EbmsCode.VALUE_INCONSISTENT, f"eb:Action {user.action!r} differs from the envelope's documentType {document_type!r}")
        return payload

    def _id(self) -> str:
        return f"{new_message_id()}@{self.hub.identity}"

    def _internal_error(self, ref_to: str | None) -> tuple[int, bytes]:
        """A fault inside the hub: a warning, not a failure, so the partner sends the message again."""
        text = f"{Code.INTERNAL_ERROR.value}: {INTERNAL_ERROR_TEXT}"
        return 500, self.error_signal(ref_to, EbmsError(EbmsCode.OTHER, text, "warning"))

    def error_signal(self, ref_to: str | None, exc: EbmsError) -> bytes:
        """A signed eb:Error signal about the message ``ref_to``."""
        item = as4.ErrorItem(exc.code.value, exc.code.short, exc.message, exc.severity, exc.code.category)
        return self._sign(as4.error(message_id=self._id(), timestamp=now_iso(), ref_to=ref_to, errors=[item]))

    def _sign(self, envelope: etree._Element) -> bytes:
        self._wss.sign(envelope)
        return etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")
