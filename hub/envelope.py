"""The hub envelope (``xsd/envelope/envelope.xsd``): a typed view to read it and builders to make it.

    <Envelope xmlns="urn:sw-hub:envelope:1">
      <Header>
        <Reference><version/><messageId/></Reference>
        <From>party</From> <To>party</To>
        <Subject><documentType/><type/><function/><reference/>?<preReference/>?<documentYear/>?<sendDate/></Subject>
      </Header>
      <Body><Content>business document | Receipt | ErrorList</Content></Body>
      <ds:Signature/>?
    </Envelope>
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

from lxml import etree

from .errors import Code, Rejected

NS = "urn:sw-hub:envelope:1"
DSIG = "http://www.w3.org/2000/09/xmldsig#"
VERSION = "1.0"

FUNCTION_RECEIVED = "99"  # acknowledgement: the message is durably accepted
FUNCTION_ERROR = "00"  # validation error: the message is rejected

_ENVELOPE = f"{{{NS}}}Envelope"


def _q(local: str) -> str:
    return f"{{{NS}}}{local}"


@dataclass(frozen=True)
class Party:
    identity: str
    country: str
    name: str | None = None
    ministry: str | None = None
    organization: str | None = None
    unit: str | None = None


@dataclass(frozen=True)
class Subject:
    document_type: str
    type: str
    function: str
    send_date: str
    reference: str | None = None
    pre_reference: str | None = None
    document_year: str | None = None


@dataclass(frozen=True)
class Header:
    message_id: str
    sender: Party
    recipient: Party
    subject: Subject
    version: str = VERSION


_PARTY_FIELDS = (
    ("name", "name"),
    ("identity", "identity"),
    ("countryCode", "country"),
    ("ministryCode", "ministry"),
    ("organizationCode", "organization"),
    ("unitCode", "unit"),
)
_SUBJECT_FIELDS = (
    ("documentType", "document_type"),
    ("type", "type"),
    ("function", "function"),
    ("reference", "reference"),
    ("preReference", "pre_reference"),
    ("documentYear", "document_year"),
    ("sendDate", "send_date"),
)


def _text(element: etree._Element) -> str:
    """The element's whole text: a comment or processing instruction inside a value
    (``VN<!-- -->-MOIT``) splits it in the tree but not in the value the schema checked and the
    signature covers (canonical XML drops comments), so every piece counts, not the first."""
    if not len(element):
        return element.text or ""
    return "".join(element.itertext())


def _children_text(element: etree._Element) -> dict[str, str]:
    return {
        child.tag.rpartition("}")[2]: _text(child).strip()  # the local name, without a QName object
        for child in element
        if isinstance(child.tag, str)
    }


def _read_party(element: etree._Element) -> Party:
    values = _children_text(element)
    return Party(**{attr: values.get(tag) for tag, attr in _PARTY_FIELDS})  # type: ignore[arg-type]


def _elements(parent: etree._Element) -> list[etree._Element]:
    """The element children, without the comments and processing instructions the schema allows
    between them (by position they would shift every field after them)."""
    return list(parent.iterchildren(etree.Element))


def read_header(envelope: etree._Element) -> Header:
    """Reads the header of an envelope that has been validated against the envelope schema."""
    header = _elements(envelope)[0]
    reference, sender, recipient, subject = _elements(header)[:4]
    ref = _children_text(reference)
    subj = _children_text(subject)
    return Header(
        message_id=ref["messageId"].lower(),
        version=ref["version"],
        sender=_read_party(sender),
        recipient=_read_party(recipient),
        subject=Subject(**{attr: subj.get(tag) for tag, attr in _SUBJECT_FIELDS}),  # type: ignore[arg-type]
    )


def content_of(envelope: etree._Element) -> etree._Element | None:
    """The element inside ``Body/Content`` (a comment or processing instruction before it is not
    the document), or None."""
    content = envelope.find(f"{{{NS}}}Body/{{{NS}}}Content")
    if content is None:
        return None
    return next(content.iterchildren(etree.Element), None)


def check_is_envelope(root: etree._Element) -> None:
    if root.tag != _ENVELOPE:
        raise Rejected(
            Code.WRONG_NAMESPACE,
            f"the root element is {root.tag}; expected Envelope in namespace {NS}",
            f"line {root.sourceline}" if root.sourceline else None,
        )


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_message_id() -> str:
    return str(uuid.uuid4())


def _append_party(parent: etree._Element, tag: str, party: Party) -> None:
    el = etree.SubElement(parent, _q(tag))
    for child, attr in _PARTY_FIELDS:
        value = getattr(party, attr)
        if value is not None:
            etree.SubElement(el, _q(child)).text = value


def build(header: Header, content: etree._Element | None) -> etree._Element:
    """Builds an unsigned envelope; ``content`` is moved into ``Body/Content``."""
    root = etree.Element(_ENVELOPE, nsmap={None: NS})
    head = etree.SubElement(root, _q("Header"))
    ref = etree.SubElement(head, _q("Reference"))
    etree.SubElement(ref, _q("version")).text = header.version
    etree.SubElement(ref, _q("messageId")).text = header.message_id
    _append_party(head, "From", header.sender)
    _append_party(head, "To", header.recipient)
    subj = etree.SubElement(head, _q("Subject"))
    for child, attr in _SUBJECT_FIELDS:
        value = getattr(header.subject, attr)
        if value is not None:
            etree.SubElement(subj, _q(child)).text = value
    body = etree.SubElement(root, _q("Body"))
    holder = etree.SubElement(body, _q("Content"))
    if content is not None:
        holder.append(content)
    return root


def receipt_content(message_id: str, received_at: str, destinations: list[str]) -> etree._Element:
    receipt = etree.Element(_q("Receipt"), nsmap={None: NS})
    etree.SubElement(receipt, _q("messageId")).text = message_id
    etree.SubElement(receipt, _q("receivedAt")).text = received_at
    for agency in destinations:
        etree.SubElement(receipt, _q("Destination"), agency=agency)
    return receipt


def error_content(errors: list[Rejected]) -> etree._Element:
    error_list = etree.Element(_q("ErrorList"), nsmap={None: NS})
    for err in errors:
        item = etree.SubElement(error_list, _q("Error"))
        etree.SubElement(item, _q("ErrorCode")).text = err.code.value
        etree.SubElement(item, _q("ErrorName")).text = err.code.name
        etree.SubElement(item, _q("ErrorMessage")).text = err.message
        if err.location:
            etree.SubElement(item, _q("Location")).text = err.location
    return error_list


def reply_header(hub: Party, to: Party | None, original: Header | None, function: str) -> Header:
    """The header of the hub's answer to ``original`` (which may be unknown if it did not parse)."""
    unknown = Party(identity="UNKNOWN", country="ZZ")
    subject = Subject(
        document_type=original.subject.document_type if original else "UNKNOWN",
        type=original.subject.type if original else "UNKNOWN",
        function=function,
        send_date=now_iso(),
        reference=original.message_id if original else None,
    )
    return Header(message_id=new_message_id(), sender=hub, recipient=to or unknown, subject=subject)


@dataclass(frozen=True)
class Ack:
    """The hub's answer to a submission: a signed receipt (function 99) or a NACK (function 00)."""

    xml: bytes
    accepted: bool
    message_id: str | None
    duplicate: bool = False
    errors: tuple[Rejected, ...] = ()

    @property
    def code(self) -> str | None:
        return self.errors[0].code.value if self.errors else None


def read_errors(envelope: etree._Element) -> list[tuple[str, str, str | None]]:
    """(code, message, location) of each error in an ErrorList envelope."""
    out = []
    for err in envelope.iterfind(f".//{{{NS}}}Error"):
        out.append(
            (
                err.findtext(_q("ErrorCode")) or "",
                err.findtext(_q("ErrorMessage")) or "",
                err.findtext(_q("Location")),
            )
        )
    return out
