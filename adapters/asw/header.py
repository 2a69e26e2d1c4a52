"""Reading the ebMS 3.0 header (``eb:Messaging``) of an AS4 message into typed values.

Works on SOAP 1.1 and 1.2 envelopes, user messages and signals (receipts, errors), as produced by
this adapter or by other implementations (the phase4 samples in the tests). Text values are
read as tokens (surrounding whitespace dropped). The header is validated against the OASIS
schema (``xsd/as4/``, compiled once) before it is trusted with anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from lxml import etree

from hub.xml import Schema

from .errors import EbmsCode, EbmsError

S11 = "http://schemas.xmlsoap.org/soap/envelope/"
S12 = "http://www.w3.org/2003/05/soap-envelope"
EB = "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/"
EBBP = "http://docs.oasis-open.org/ebxml-bp/ebbp-signals-2.0"
DS = "http://www.w3.org/2000/09/xmldsig#"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "xsd" / "as4" / "as4.xsd"


@lru_cache(maxsize=1)
def header_schema() -> Schema:
    return Schema("ebms-header-3.0", SCHEMA_PATH, "asw.header_schema")


@dataclass(frozen=True)
class PartyId:
    value: str
    type: str | None = None


@dataclass(frozen=True)
class Party:
    """One end of ``eb:PartyInfo``: its party ids (with their type) and its role."""

    ids: tuple[PartyId, ...]
    role: str

    @property
    def id(self) -> PartyId:
        return self.ids[0]


@dataclass(frozen=True)
class Property:
    name: str
    value: str
    type: str | None = None


@dataclass(frozen=True)
class Part:
    """One ``eb:PartInfo``: where the payload is (no href: the SOAP body; ``#id``: an element in
    the SOAP body; ``cid:``: a MIME attachment) and its properties."""

    href: str | None
    properties: tuple[Property, ...] = ()
    schema_location: str | None = None

    @property
    def kind(self) -> str:
        if not self.href:
            return "body"
        if self.href.startswith("#"):
            return "body-element"
        if self.href.startswith("cid:"):
            return "attachment"
        return "external"


@dataclass(frozen=True)
class UserMessage:
    message_id: str
    timestamp: str
    ref_to_message_id: str | None
    sender: Party
    recipient: Party
    service: str
    service_type: str | None
    action: str
    conversation_id: str
    agreement: str | None = None
    agreement_type: str | None = None
    pmode: str | None = None
    mpc: str | None = None
    properties: tuple[Property, ...] = ()
    parts: tuple[Part, ...] = ()

    def property(self, name: str) -> str | None:
        return next((p.value for p in self.properties if p.name == name), None)


@dataclass(frozen=True)
class NrReference:
    """A ``ds:Reference`` in a receipt's non-repudiation information: a part and its digest."""

    uri: str
    digest_method: str
    digest_value: str


@dataclass(frozen=True)
class SignalError:
    code: str
    severity: str
    short_description: str | None = None
    description: str | None = None
    detail: str | None = None
    category: str | None = None
    origin: str | None = None
    ref_to_message_in_error: str | None = None

    @property
    def failure(self) -> bool:
        return self.severity.lower() == "failure"

    def text(self) -> str:
        words = " ".join(w for w in (self.description, self.detail) if w)
        return f"{self.code} {self.short_description or ''}".strip() + (f": {words}" if words else "")


@dataclass(frozen=True)
class Signal:
    message_id: str
    timestamp: str
    ref_to_message_id: str | None
    receipt: tuple[NrReference, ...] | None  # None: not a receipt; () a receipt without NRI
    errors: tuple[SignalError, ...] = ()
    pull_request: bool = False


@dataclass(frozen=True)
class Messaging:
    soap: str  # "1.1" or "1.2"
    id: str | None
    user_messages: tuple[UserMessage, ...]
    signals: tuple[Signal, ...]


def _eb(local: str) -> str:
    return f"{{{EB}}}{local}"


def _text(element: etree._Element | None) -> str | None:
    if element is None:
        return None
    return " ".join((element.text or "").split()) or ""


def _required(parent: etree._Element, local: str) -> str:
    value = _text(parent.find(_eb(local)))
    if value is None:
        raise EbmsError(EbmsCode.INVALID_HEADER, f"eb:{local} is missing in eb:{etree.QName(parent).localname}")
    return value


def _attr(element: etree._Element | None, name: str) -> str | None:
    if element is None:
        return None
    value = element.get(name)
    return " ".join(value.split()) if value is not None else None


def _properties(parent: etree._Element | None) -> tuple[Property, ...]:
    if parent is None:
        return ()
    return tuple(Property(p.get("name", ""), _text(p) or "", p.get("type")) for p in parent.iterfind(_eb("Property")))


def _party(element: etree._Element | None, which: str) -> Party:
    if element is None:
        raise EbmsError(EbmsCode.INVALID_HEADER, f"eb:PartyInfo/eb:{which} is missing")
    ids = tuple(PartyId(_text(p) or "", _attr(p, "type")) for p in element.iterfind(_eb("PartyId")))
    if not ids:
        raise EbmsError(EbmsCode.INVALID_HEADER, f"eb:{which} has no eb:PartyId")
    return Party(ids, _text(element.find(_eb("Role"))) or "")


def _message_info(element: etree._Element) -> tuple[str, str, str | None]:
    info = element.find(_eb("MessageInfo"))
    if info is None:
        raise EbmsError(EbmsCode.INVALID_HEADER, "eb:MessageInfo is missing")
    return _required(info, "MessageId"), _required(info, "Timestamp"), _text(info.find(_eb("RefToMessageId")))


def read_user_message(element: etree._Element) -> UserMessage:
    message_id, timestamp, ref_to = _message_info(element)
    party_info = element.find(_eb("PartyInfo"))
    collab = element.find(_eb("CollaborationInfo"))
    if party_info is None or collab is None:
        raise EbmsError(EbmsCode.INVALID_HEADER, "eb:UserMessage needs eb:PartyInfo and eb:CollaborationInfo")
    service, agreement = collab.find(_eb("Service")), collab.find(_eb("AgreementRef"))
    parts = tuple(
        Part(
            href=_attr(p, "href"),
            properties=_properties(p.find(_eb("PartProperties"))),
            schema_location=_attr(p.find(_eb("Schema")), "location"),
        )
        for p in element.iterfind(f"{_eb('PayloadInfo')}/{_eb('PartInfo')}")
    )
    return UserMessage(
        message_id=message_id,
        timestamp=timestamp,
        ref_to_message_id=ref_to,
        sender=_party(party_info.find(_eb("From")), "From"),
        recipient=_party(party_info.find(_eb("To")), "To"),
        service=_required(collab, "Service"),
        service_type=_attr(service, "type"),
        action=_required(collab, "Action"),
        conversation_id=_required(collab, "ConversationId"),
        agreement=_text(agreement),
        agreement_type=_attr(agreement, "type"),
        pmode=_attr(agreement, "pmode"),
        mpc=_attr(element, "mpc"),
        properties=_properties(element.find(_eb("MessageProperties"))),
        parts=parts,
    )


def read_signal(element: etree._Element) -> Signal:
    message_id, timestamp, ref_to = _message_info(element)
    receipt = element.find(_eb("Receipt"))
    references = None
    if receipt is not None:
        references = tuple(
            NrReference(
                uri=ref.get("URI", ""),
                digest_method=_attr(ref.find(f"{{{DS}}}DigestMethod"), "Algorithm") or "",
                digest_value="".join((ref.findtext(f"{{{DS}}}DigestValue") or "").split()),
            )
            for ref in receipt.iterfind(f"{{{EBBP}}}NonRepudiationInformation/{{{EBBP}}}MessagePartNRInformation/{{{DS}}}Reference")
        )
    errors = tuple(
        SignalError(
            code=e.get("errorCode", ""),
            severity=e.get("severity", ""),
            short_description=e.get("shortDescription"),
            description=_text(e.find(_eb("Description"))),
            detail=_text(e.find(_eb("ErrorDetail"))),
            category=e.get("category"),
            origin=e.get("origin"),
            ref_to_message_in_error=e.get("refToMessageInError"),
        )
        for e in element.iterfind(_eb("Error"))
    )
    return Signal(message_id, timestamp, ref_to, references, errors, element.find(_eb("PullRequest")) is not None)


def read_messaging(element: etree._Element, soap: str = "1.2") -> Messaging:
    return Messaging(
        soap=soap,
        id=element.get(f"{{{WSU}}}Id") or element.get("id"),
        user_messages=tuple(read_user_message(u) for u in element.iterfind(_eb("UserMessage"))),
        signals=tuple(read_signal(s) for s in element.iterfind(_eb("SignalMessage"))),
    )


def soap_version(envelope: etree._Element) -> str:
    if envelope.tag == f"{{{S12}}}Envelope":
        return "1.2"
    if envelope.tag == f"{{{S11}}}Envelope":
        return "1.1"
    raise EbmsError(EbmsCode.INVALID_HEADER, f"not a SOAP envelope: the root element is {envelope.tag}")


def find_messaging(envelope: etree._Element) -> etree._Element:
    """The one ``eb:Messaging`` element, a direct child of the SOAP header."""
    ns = S12 if soap_version(envelope) == "1.2" else S11
    found = envelope.findall(f"{{{ns}}}Header/{_eb('Messaging')}")
    if len(found) != 1:
        raise EbmsError(EbmsCode.INVALID_HEADER, f"the SOAP header must hold exactly one eb:Messaging, not {len(found)}")
    return found[0]


def validate(messaging: etree._Element) -> None:
    errors = header_schema().errors(messaging)
    if errors:
        first = errors[0]
        raise EbmsError(EbmsCode.INVALID_HEADER, f"the ebMS header is not valid (line {first.line}): {first.message}")


def read(envelope: etree._Element, check: bool = True) -> Messaging:
    """Reads (and with ``check`` validates) the ebMS header of a SOAP envelope."""
    element = find_messaging(envelope)
    if check:
        validate(element)
    return read_messaging(element, soap_version(envelope))
