"""The hub's SOAP endpoint for ministries: ``POST /soap`` (operation Submit), ``GET /soap?wsdl``.

A request is bounded in size, parsed by the hub's hardened parser (``hub.xml.XmlParser``: no DTD,
no entities, depth limit) and unwrapped: SOAP Envelope/Body/Submit/{urn:sw-hub:envelope:1}Envelope.
The hub envelope goes to the same ``Pipeline.submit`` as ``POST /messages``, and its signed
receipt or NACK comes back byte for byte inside SubmitResponse (a NACK is an answer, not a fault).

Faults, in the request's SOAP version (1.2 if the root or Content-Type says so):

    not XML, DTD, too large or deep, not one Body (two Bodies, two Headers, a Header after the
    Body, anything but Header and Body before it or, in SOAP 1.2, after it), not one Submit,
    no hub Envelope, a body that did not arrive within body_timeout (HTTP 408), a
    multipart (MTOM) request                                                   -> Client / Sender
    a header block with mustUnderstand                                         -> MustUnderstand
    an Envelope in neither SOAP namespace                                      -> VersionMismatch
    the store cannot record the message now (TryAgain)                         -> Server / Receiver, Retry-After
    anything unexpected                                                        -> Server / Receiver

HTTP status: SOAP 1.1 faults are 500 (WS-I Basic Profile R1126); SOAP 1.2 Sender faults are 400,
all others 500 (SOAP 1.2 part 2, 7.5.1.2); a body that did not arrive in time is a 408 whatever
the version (the sender's HTTP stack then sends it again, as for any 408). The fault detail
carries the hub's error code (``HubFault/code``: ERR02, ERR10, ERR11, ..., ERR50).

A NACK's line numbers are the request's: the hub envelope goes to the pipeline on the line where
it stood in the request (``_on_its_lines``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from xml.sax.saxutils import escape

from lxml import etree
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hub.errors import INTERNAL_ERROR_TEXT, TRY_AGAIN_TEXT, Code, Rejected, TryAgain
from hub.httpio import CLOSE, BodyNotRead, read_bounded
from hub.xml import Limits, XmlParser

from .base import Run, Submit
from .soap_wsdl import ENVELOPE_NS, NS, wsdl

log = logging.getLogger("hub.adapters.soap")

SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
MEDIA = {SOAP11: "text/xml; charset=utf-8", SOAP12: "application/soap+xml; charset=utf-8"}

WRAPPER_BYTES = 64 * 1024  # room for the SOAP envelope, headers and Submit around the hub envelope
WRAPPER_DEPTH = 3  # Envelope, Body, Submit
_PROLOG = re.compile(rb"^\s*<\?xml[^>]*\?>\s*")


class WrapperParser:
    """The hardened parser for a request that carries a hub envelope inside a SOAP envelope
    (``POST /soap``, ``POST /as4``). The wrapper gets room beyond the configured limits, which
    are the hub envelope's; a refusal states the configured limits, the ones senders are told
    about, and names its line: a SOAP fault or an eb:Error has no field of its own for it."""

    def __init__(self, limits: Limits, wrapper: str, extra_bytes: int, extra_depth: int) -> None:
        self.limits = limits  # as configured
        self.wrapper, self.extra_bytes, self.extra_depth = wrapper, extra_bytes, extra_depth
        self.read_limits = replace(limits, max_bytes=limits.max_bytes + extra_bytes, max_depth=limits.max_depth + extra_depth)
        self._parser = XmlParser(self.read_limits)

    def too_large(self) -> str:
        extra = f", plus {self.extra_bytes} for {self.wrapper} around it" if self.extra_bytes else ""
        return f"the request is larger than {self.limits.max_bytes} bytes, the limit for a message{extra}"

    def parse(self, data: bytes) -> etree._Element:
        try:
            return self._parser.parse(data)
        except Rejected as exc:
            if exc.code is Code.TOO_LARGE:
                raise Rejected(exc.code, self.too_large()) from None
            if exc.code is Code.TOO_DEEP:
                raise Rejected(exc.code, f"elements are nested deeper than the limit of {self.limits.max_depth} for the hub "
                                         f"envelope, with {self.extra_depth} more for {self.wrapper} around it") from None
            if exc.location and exc.location not in exc.message:  # libxml2's text often names it already
                raise Rejected(exc.code, f"{exc.message} ({exc.location})", exc.location) from None
            raise


def _on_its_lines(envelope: etree._Element, max_bytes: int) -> bytes:
    """The hub envelope's bytes, after as many line breaks (XML allows white space before the root
    element) as put it on the line where it stood in the request: the line of a fault in the
    pipeline's NACK, which is signed and cannot be corrected afterwards, is then the client's.
    lxml's ``sourceline`` is the line on which a start tag ends, and a serialised start tag takes
    one line, so the lines inside match as long as the client wrote the envelope's inner start
    tags on one line each (as SOAP toolkits do). The padding never takes a message past the size
    limit."""
    data = etree.tostring(envelope)
    pad = min((envelope.sourceline or 1) - 1, max(0, max_bytes - len(data)))
    return b"\n" * pad + data


class Fault(Exception):
    def __init__(self, sender: bool, code: str, message: str, special: str | None = None) -> None:
        super().__init__(message)
        self.sender = sender  # True: the client's fault (Client/Sender); False: the hub's (Server/Receiver)
        self.code = code  # the hub's error code, for the detail
        self.message = message
        self.special = special  # MustUnderstand / VersionMismatch instead of Client/Server


def _fault_body(ns: str, fault: Fault) -> bytes:
    detail = f'<h:HubFault xmlns:h="{NS}"><h:code>{escape(fault.code)}</h:code><h:message>{escape(fault.message)}</h:message></h:HubFault>'
    if ns == SOAP11:
        code = fault.special or ("Client" if fault.sender else "Server")
        inner = f"<faultcode>s:{code}</faultcode><faultstring>{escape(fault.message)}</faultstring><detail>{detail}</detail>"
    else:
        code = fault.special or ("Sender" if fault.sender else "Receiver")
        inner = (f"<s:Code><s:Value>s:{code}</s:Value></s:Code><s:Reason><s:Text xml:lang=\"en\">{escape(fault.message)}</s:Text></s:Reason>"
                 f"<s:Detail>{detail}</s:Detail>")
    return f'<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="{ns}"><s:Body><s:Fault>{inner}</s:Fault></s:Body></s:Envelope>'.encode()


def fault_response(ns: str, fault: Fault, status: int | None = None, headers: dict[str, str] | None = None) -> Response:
    """The fault with its HTTP status by the rule above (or ``status``), and ``headers``."""
    if status is None:
        status = 400 if ns == SOAP12 and fault.sender and fault.special is None else 500
    headers = {**(headers or {}), **({"Retry-After": "1"} if fault.code == Code.TRY_AGAIN.value else {})}
    return Response(_fault_body(ns, fault), status_code=status, media_type=MEDIA[ns], headers=headers)


MULTIPART = ("MIME multipart requests (MTOM, attachments) are not taken: send the SOAP envelope itself, "
             "as text/xml (SOAP 1.1) or application/soap+xml (SOAP 1.2)")


def is_multipart(media: str) -> bool:
    """Whether the Content-Type ``media`` is MIME multipart (MTOM/XOP, SOAP with attachments)."""
    return media.strip().lower().startswith("multipart/")


def misshapen(root: etree._Element) -> str | None:
    """Why the SOAP envelope ``root`` is not an optional Header then one Body (SOAP 1.1 allows
    more elements after the Body, 1.2 none), or None. With two Bodies a reader might take either
    one; a header block in a second Header would escape the mustUnderstand check."""
    ns = etree.QName(root).namespace
    # the envelope's elements: "Header", "Body" for the SOAP ones, the Clark name of any other
    names = [etree.QName(e).localname if etree.QName(e).namespace == ns else str(etree.QName(e)) for e in root if isinstance(e.tag, str)]
    bodies, headers = names.count("Body"), names.count("Header")
    if bodies == 0:
        return "the SOAP envelope has no Body"
    if bodies > 1:
        return f"the SOAP envelope holds {bodies} Body elements; it must hold exactly one"
    if headers > 1:
        return f"the SOAP envelope holds {headers} Header elements; it may hold one"
    before, after = names[: names.index("Body")], names[names.index("Body") + 1:]
    if "Header" in after:
        return "the SOAP envelope holds its Header after its Body; the Header comes first"
    if before not in ([], ["Header"]):
        return f"the SOAP envelope holds {', '.join(n for n in before if n != 'Header')} before its Body; only a Header may stand there"
    if after and ns == SOAP12:
        return f"the SOAP 1.2 envelope holds {', '.join(after)} after its Body; nothing may follow it"
    return None


def _success(ns: str, ack_xml: bytes) -> Response:
    body = (f'<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="{ns}"><s:Body><SubmitResponse xmlns="{NS}">'.encode()
            + _PROLOG.sub(b"", ack_xml, count=1) + b"</SubmitResponse></s:Body></s:Envelope>")
    return Response(body, media_type=MEDIA[ns])


class SoapEndpoint:
    def __init__(self, submit: Submit, limits: Limits, run: Run | None = None) -> None:
        self.submit = submit
        self.run = run or run_in_threadpool  # how the parse and submit run off the event loop (``hub serve``: its gate)
        self.limits = limits
        self.parser = WrapperParser(limits, "the SOAP envelope", WRAPPER_BYTES, WRAPPER_DEPTH)

    def unwrap(self, data: bytes, ns: str) -> tuple[str, bytes]:
        """(the request's SOAP namespace, the hub envelope's bytes), or raises ``Fault``."""
        try:
            root = self.parser.parse(data)
        except Rejected as exc:
            raise Fault(True, exc.code.value, f"the request is refused: {exc.message}") from None
        q = etree.QName(root)
        if q.localname != "Envelope" or q.namespace not in (SOAP11, SOAP12):
            raise Fault(True, Code.WRONG_NAMESPACE.value, f"the request is not a SOAP envelope: root element {root.tag}",
                        "VersionMismatch" if q.localname == "Envelope" else None)
        ns = q.namespace
        wrong = misshapen(root)
        if wrong is not None:
            raise Fault(True, Code.INVALID_MESSAGE.value, wrong)
        header = root.find(f"{{{ns}}}Header")
        for block in header if header is not None else ():
            if isinstance(block.tag, str) and block.get(f"{{{ns}}}mustUnderstand") in ("1", "true"):
                raise Fault(True, Code.INVALID_MESSAGE.value, f"header block {block.tag} is not understood", "MustUnderstand")
        body = root.find(f"{{{ns}}}Body")
        assert body is not None  # misshapen: exactly one
        operations = [e for e in body if isinstance(e.tag, str)]
        if len(operations) != 1 or operations[0].tag != f"{{{NS}}}Submit":
            names = ", ".join(str(e.tag) for e in operations) or "nothing"
            raise Fault(True, Code.INVALID_MESSAGE.value, f"unknown operation: the Body holds {names}; this endpoint offers {{{NS}}}Submit")
        inner = [e for e in operations[0] if isinstance(e.tag, str)]
        if len(inner) != 1 or inner[0].tag != f"{{{ENVELOPE_NS}}}Envelope":
            raise Fault(True, Code.WRONG_NAMESPACE.value, f"Submit must hold exactly one Envelope in namespace {ENVELOPE_NS}")
        return ns, _on_its_lines(inner[0], self.limits.max_bytes)

    async def post(self, request: Request) -> Response:
        media = request.headers.get("content-type", "")
        ns = SOAP12 if "application/soap+xml" in media else SOAP11
        if is_multipart(media):  # refused unread: its parts would only be "not well-formed XML"
            return fault_response(ns, Fault(True, Code.INVALID_MESSAGE.value, MULTIPART), headers=CLOSE)
        try:
            data = await read_bounded(request, self.parser.read_limits)
        except BodyNotRead as exc:  # (a client gone never reads it)
            return fault_response(ns, Fault(True, Code.INVALID_MESSAGE.value, exc.sentence), exc.status, CLOSE)
        if data is None:
            return fault_response(ns, Fault(True, Code.TOO_LARGE.value, self.parser.too_large()), headers=CLOSE)
        try:
            ns, envelope = await self.run(self.unwrap, data, ns)
        except Fault as fault:
            return fault_response(ns, fault)
        try:
            ack = await self.run(self.submit, envelope, None)
        except TryAgain as exc:
            log.warning("store unavailable, SOAP sender asked to retry: %s", exc)
            return fault_response(ns, Fault(False, Code.TRY_AGAIN.value, TRY_AGAIN_TEXT))
        except Exception:
            log.exception("SOAP submit failed")
            return fault_response(ns, Fault(False, Code.INTERNAL_ERROR.value, INTERNAL_ERROR_TEXT))
        return _success(ns, ack.xml)

    async def get(self, request: Request) -> Response:
        if "wsdl" not in {k.lower() for k in request.query_params}:
            return JSONResponse({"error": "POST SOAP requests here; GET /soap?wsdl for the WSDL"}, status_code=400)
        address = str(request.url.replace(query="", fragment=""))
        return Response(wsdl(address), media_type="text/xml; charset=utf-8")


def soap_routes(submit: Submit, limits: Limits, run: Run | None = None) -> list[Route]:
    endpoint = SoapEndpoint(submit, limits, run)
    return [Route("/soap", endpoint.post, methods=["POST"]), Route("/soap", endpoint.get, methods=["GET"])]
