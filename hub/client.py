"""Building and signing envelopes as a partner agency would: used by ``hub send``, the demo,
the tests and the benchmark."""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from .config import WILDCARD, Agency, Config, Route
from .envelope import Header, Party, Subject, build, new_message_id, now_iso
from .errors import ConfigError
from .pipeline import party_of
from .trust import Signer


def agency_signer(agency: Agency) -> Signer:
    """Signs as ``agency`` with its ``signing_key`` (demo and test agencies, whose keys the hub's
    configuration names): the first of its certificates signs, the rest of that file is the chain."""
    if agency.signing_key is None or not agency.certificates:
        raise ConfigError("hub.toml", f"agencies[{agency.id}]", "signing as this agency needs its signing_key and, first in certificates, its certificate")
    return Signer.from_files(agency.signing_key, agency.certificates[0], f"agencies[{agency.id}].signing_key", f"agencies[{agency.id}].certificates")


@dataclass(frozen=True)
class Outgoing:
    document_type: str
    function: str = "01"
    message_type: str | None = None
    reference: str | None = None


def envelope_for(
    payload: etree._Element,
    sender: Party,
    recipient: Party,
    what: Outgoing,
    message_id: str | None = None,
) -> etree._Element:
    subject = Subject(
        document_type=what.document_type,
        type=what.message_type or etree.QName(payload).localname,
        function=what.function,
        send_date=now_iso(),
        reference=what.reference,
        document_year=now_iso()[:4],
    )
    header = Header(message_id=message_id or new_message_id(), sender=sender, recipient=recipient, subject=subject)
    return build(header, payload)


def signed_bytes(envelope: etree._Element, signer: Signer | None) -> bytes:
    if signer is not None:
        envelope = signer.sign(envelope)
    return etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")


def fitting_routes(config: Config, schemas_roots: dict[str, frozenset[str]], sender: str, payload_tag: str, recipient: str | None) -> list[Route]:
    """The routes with a document type of their own that take this document from ``sender`` (to
    ``recipient`` when given)."""
    return [
        route for route in config.routes
        if route.sender in (WILDCARD, sender) and route.document_type != WILDCARD
        and (not recipient or route.recipient in (WILDCARD, recipient))
        and (route.schema is None or payload_tag in schemas_roots.get(route.schema, frozenset()))
    ]


def guess_outgoing(routes: list[Route]) -> Outgoing | None:
    """The document type and function of the routes that fit, when they agree on one."""
    found = {Outgoing(r.document_type, r.function if r.function != WILDCARD else "01") for r in routes}
    return found.pop() if len(found) == 1 else None


def recipient_for(config: Config, identity: str | None) -> Party:
    if identity and identity in config.agencies:
        return party_of(config.agencies[identity])
    return Party(identity=identity or config.hub.party_id, country=config.hub.country, name=None if identity else (config.hub.name or None))
