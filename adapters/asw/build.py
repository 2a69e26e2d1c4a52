"""Building AS4 messages (SOAP 1.2 with the ebMS 3.0 header), unsigned; ``wss`` signs them.

The payload travels in the SOAP body, not as a MIME attachment: it is one XML document, and a
plain SOAP 1.2 request keeps the message a single XML document that the signature covers
directly (``eb:PartInfo href="#<body id>"``, as in the ebMS 3.0 specification's own AS4 example
and phase4's ``UserMessage12.xml``). ``eb:Messaging`` and ``S12:Body`` carry ``wsu:Id``s so the
WS-Security signature can reference them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Sequence

from lxml import etree

from .header import DS, EB, EBBP, S12, WSU, Party, Property

ROLE_INITIATOR = "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/initiator"
ROLE_RESPONDER = "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/responder"

NSMAP = {"S12": S12, "eb": EB, "wsu": WSU}


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4()}"


def _eb(parent: etree._Element, local: str, text: str | None = None, **attrs: str | None) -> etree._Element:
    """An eb: element under ``parent``; attributes given None are left out."""
    element = etree.SubElement(parent, f"{{{EB}}}{local}", {k: v for k, v in attrs.items() if v is not None})
    if text is not None:
        element.text = text
    return element


def _soap(signal: bool) -> tuple[etree._Element, etree._Element, etree._Element]:
    """(envelope, eb:Messaging, S12:Body), with fresh wsu:Ids on the last two."""
    envelope = etree.Element(f"{{{S12}}}Envelope", nsmap=NSMAP if not signal else {**NSMAP, "ebbp": EBBP, "ds": DS})
    header = etree.SubElement(envelope, f"{{{S12}}}Header")
    messaging = etree.SubElement(header, f"{{{EB}}}Messaging", {f"{{{S12}}}mustUnderstand": "true", f"{{{WSU}}}Id": new_id("eb")})
    body = etree.SubElement(envelope, f"{{{S12}}}Body", {f"{{{WSU}}}Id": new_id("body")})
    return envelope, messaging, body


def _message_info(parent: etree._Element, message_id: str, timestamp: str, ref_to: str | None = None) -> None:
    info = _eb(parent, "MessageInfo")
    _eb(info, "Timestamp", timestamp)
    _eb(info, "MessageId", message_id)
    if ref_to is not None:
        _eb(info, "RefToMessageId", ref_to)


def _party(parent: etree._Element, tag: str, party: Party) -> None:
    element = _eb(parent, tag)
    for pid in party.ids:
        _eb(element, "PartyId", pid.value, type=pid.type)
    _eb(element, "Role", party.role)


@dataclass(frozen=True)
class Collaboration:
    service: str
    action: str
    conversation_id: str
    service_type: str | None = None
    agreement: str | None = None


def user_message(
    *,
    message_id: str,
    timestamp: str,
    sender: Party,
    recipient: Party,
    collaboration: Collaboration,
    payload: etree._Element,
    properties: Sequence[Property] = (),
) -> etree._Element:
    """An AS4 user message carrying ``payload`` (moved into the SOAP body)."""
    envelope, messaging, body = _soap(signal=False)
    user = _eb(messaging, "UserMessage")
    _message_info(user, message_id, timestamp)
    party_info = _eb(user, "PartyInfo")
    _party(party_info, "From", sender)
    _party(party_info, "To", recipient)
    c = collaboration
    collab = _eb(user, "CollaborationInfo")
    if c.agreement:
        _eb(collab, "AgreementRef", c.agreement)
    _eb(collab, "Service", c.service, type=c.service_type)
    _eb(collab, "Action", c.action)
    _eb(collab, "ConversationId", c.conversation_id)
    if properties:
        props = _eb(user, "MessageProperties")
        for p in properties:
            _eb(props, "Property", p.value, name=p.name, type=p.type)
    part = _eb(_eb(user, "PayloadInfo"), "PartInfo", href=f"#{body.get(f'{{{WSU}}}Id')}")
    _eb(_eb(part, "PartProperties"), "Property", "application/xml", name="MimeType")
    body.append(payload)
    return envelope


def receipt(*, message_id: str, timestamp: str, ref_to: str, references: Sequence[etree._Element]) -> etree._Element:
    """An ``eb:Receipt`` signal whose non-repudiation information holds a copy of each
    ``ds:Reference`` (part URI and digest) of the received message's verified signature."""
    envelope, messaging, _ = _soap(signal=True)
    signal = _eb(messaging, "SignalMessage")
    _message_info(signal, message_id, timestamp, ref_to)
    nri = etree.SubElement(_eb(signal, "Receipt"), f"{{{EBBP}}}NonRepudiationInformation")
    for reference in references:
        part = etree.SubElement(nri, f"{{{EBBP}}}MessagePartNRInformation")
        part.append(etree.fromstring(etree.tostring(reference)))
    return envelope


@dataclass(frozen=True)
class ErrorItem:
    code: str
    short: str
    description: str
    severity: str = "failure"
    category: str = "Content"


def error(*, message_id: str, timestamp: str, ref_to: str | None, errors: Sequence[ErrorItem]) -> etree._Element:
    """An ``eb:Error`` signal (one ``eb:Error`` per item) about the message ``ref_to``."""
    envelope, messaging, _ = _soap(signal=True)
    signal = _eb(messaging, "SignalMessage")
    _message_info(signal, message_id, timestamp, ref_to)
    for item in errors:
        e = _eb(signal, "Error", category=item.category, errorCode=item.code, origin="ebMS",
                refToMessageInError=ref_to, severity=item.severity, shortDescription=item.short)
        _eb(e, "Description", item.description, **{"{http://www.w3.org/XML/1998/namespace}lang": "en"})
    return envelope
