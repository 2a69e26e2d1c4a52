"""The asw adapter (AS4): reading phase4's messages, the OASIS schema, WS-Security, the inbound
endpoint, and the partner's failures mapped onto the outbox."""

from __future__ import annotations

import base64
import copy
import dataclasses
import re
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import pytest
from cryptography import x509
from lxml import etree

from adapters.asw import header, wss
from adapters.asw.errors import EbmsCode, EbmsError
from adapters.asw.header import DS, EB, S12, WSSE, WSU
from adapters.asw.outbound import Outbound
from adapters.base import Delivery, Outcome
from hub.errors import ConfigError
from hub.keys import issue, new_key, write_certificate
from hub.runtime import Runtime, check
from hub.store import State
from hub.trust import Pinned, Signer, in_date
from hub.twohubs import TH_CUSTOMS, TH_HUB, VN_HUB, Pair, write_pair
from hub.xml import XmlParser

from .as4_support import AS4_SAMPLES, Partner, inbound_of, outbound_message, resign, submit_certificate
from .support import REPO, SHARED, Sender, free_port, wait_until

SHARED_AS4 = SHARED / "conformance" / "as4"


@pytest.fixture
def pair(tmp_path: Path) -> Pair:
    return write_pair(tmp_path, free_port(), free_port(), initial_delay=0.05)


@pytest.fixture
def hubs(pair: Pair) -> Iterator[tuple[Runtime, Runtime]]:
    vn, th = Runtime.load(pair.vn), Runtime.load(pair.th)
    yield vn, th
    vn.close()
    th.close()


def _signal(data: bytes) -> header.Signal:
    return header.read(etree.fromstring(data)).signals[0]


# -- the schemas and phase4's messages ------------------------------------------------------------


def test_shipped_schemas_are_the_oasis_ones_with_their_licence() -> None:
    for name in ("ebms-header-3_0-200704.xsd", "soap11.xsd", "soap12.xsd", "LICENSE"):
        assert (REPO / "xsd" / "as4" / name).read_bytes() == (SHARED_AS4 / name).read_bytes(), name
    assert "Apache License 2.0" in (REPO / "xsd" / "as4" / "NOTICE.md").read_text()
    assert "../shared" not in header.SCHEMA_PATH.read_text() and header.SCHEMA_PATH.is_relative_to(REPO)


def test_reads_phase4_user_messages() -> None:
    m = header.read(etree.parse(str(AS4_SAMPLES / "UserMessage.xml")).getroot())
    assert m.soap == "1.1" and not m.signals and len(m.user_messages) == 1
    u = m.user_messages[0]
    assert (u.message_id, u.timestamp) == ("UUID-1@requester.example.com", "2006-07-25T12:19:05")
    assert u.sender.ids == (header.PartyId("uri:requester.example.com", None),) and u.sender.role == "http://example.org/roles/Buyer"
    assert u.recipient.ids == (header.PartyId("QRS543", "someType"),) and u.recipient.role == "http://example.org/roles/Seller"
    assert (u.agreement, u.service, u.service_type, u.action, u.conversation_id) == (
        "http://registry.example.com/cpa/123456", "QuoteToCollect", "MyServiceTypes", "NewPurchaseOrder", "4321")
    assert u.property("ProcessInst") == "PurchaseOrder:123456" and u.property("ContextID") == "987654321"
    (part,) = u.parts
    assert (part.href, part.kind, part.schema_location) == ("cid:part@example.com", "attachment", "http://registry.example.org/po.xsd")
    assert dict((p.name, p.value) for p in part.properties)["MimeType"] == "application/xml"

    root12 = etree.parse(str(AS4_SAMPLES / "UserMessage12.xml")).getroot()
    u = header.read(root12).user_messages[0]
    scheme = "urn:oasis:names:tc:ebcore:partyid-type:iso6523:0088"
    assert header.read(root12).soap == "1.2" and u.message_id == "2011-921@5209999001264.example.com"
    assert u.sender.id == header.PartyId("5209999001264", scheme) and u.recipient.id == header.PartyId("5209999001295", scheme)
    assert (u.sender.role, u.recipient.role, u.conversation_id) == ("Seller", "Buyer", "2011-921")
    assert u.service == "http://docs.oasis-open.org/ebxml-msg/as4/200902/service" and u.agreement is None
    (part,) = u.parts
    body = root12.find(f"{{{S12}}}Body")
    assert part.kind == "body-element" and part.href == f"#{body.get(f'{{{WSU}}}Id')}"  # the payload reference resolves

    two = header.read(etree.parse(str(AS4_SAMPLES / "TwoUserMessages.xml")).getroot())
    assert [u.message_id for u in two.user_messages] == ["UUID-2@receiver.example.com", "UUID-dad2@receiver.example.com"]
    assert all(u.pmode == "pm-esens-generic-resp" and u.parts[0].kind == "body" for u in two.user_messages)

    bare = etree.parse(str(AS4_SAMPLES / "UserMessageWithoutWSSE.xml")).getroot()
    u = header.read(bare).user_messages[0]
    assert u.sender.id.value == u.recipient.id.value == "APP_1000000101" and u.parts[0].kind == "body"
    assert not wss.is_signed(bare) and etree.QName(bare.find(f"{{{header.S11}}}Body")[0]).localname == "StandardBusinessDocument"


def test_a_header_without_party_id_is_read_but_refused_by_the_schema() -> None:
    root = etree.parse(str(AS4_SAMPLES / "UserMessageNoPartyID.xml")).getroot()
    assert header.read(root, check=False).user_messages[0].sender.id.value == ""
    with pytest.raises(EbmsError) as caught:
        header.read(root)
    assert caught.value.code is EbmsCode.INVALID_HEADER and "PartyId" in caught.value.message


def test_reads_phase4_receipts_and_verifies_phase4s_signature() -> None:
    plain = _signal((AS4_SAMPLES / "ReceiptMessage.xml").read_bytes())
    assert plain.ref_to_message_id == "uiopfdsmnf4898965563434@a.example.com" and plain.message_id == "uiwtoruiopwr2543890@b.example.com"
    assert [r.uri for r in plain.receipt or ()] == ["http://b.example.com/doc45/#b", "http:/a.example.com/doc23/#a"]
    assert {r.digest_value for r in plain.receipt or ()} == {"fX/iNylcUHNLV4lCE0eC7aEGP28="}

    root = etree.parse(str(AS4_SAMPLES / "TestReceipt12.xml")).getroot()
    signal = header.read(root).signals[0]
    assert signal.ref_to_message_id == "035e0a83-6dc5-427b-bcee-483475c65153@phase4" and not signal.errors
    assert [r.uri.split("-")[0] for r in signal.receipt or ()] == ["#phase4", "#id", "cid:phase4"]
    token = root.find(f".//{{{WSSE}}}BinarySecurityToken")
    phase4 = x509.load_der_x509_certificate(base64.b64decode(token.text or ""))
    if not in_date(phase4):
        pytest.skip(f"phase4's test certificate is valid only until {phase4.not_valid_after_utc:%Y-%m-%d}")
    verified = wss.verify(root, Pinned([phase4]), "phase4")  # exclusive c14n with a PrefixList, by another implementation
    assert "PEPPOL TEST AP" in verified.subject and header.read_messaging(verified.messaging).signals == (signal,)
    root.find(f".//{{{header.EB}}}RefToMessageId").text = "someone-else@phase4"
    with pytest.raises(EbmsError, match="digest mismatch"):
        wss.verify(root, Pinned([phase4]), "phase4")


def test_every_sample_but_the_one_without_party_id_is_valid_against_the_schema() -> None:
    for path in sorted(AS4_SAMPLES.glob("*.xml")):
        root = etree.parse(str(path)).getroot()
        if path.name == "UserMessageNoPartyID.xml":
            continue
        header.validate(header.find_messaging(root))


def _schema_over_shared(tmp_path: Path) -> etree.XMLSchema:
    """The unmodified OASIS schema from ../shared, with only the XML namespace supplied locally."""
    wrapper = tmp_path / "wrapper.xsd"
    wrapper.write_text(f"""<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:t">
      <xs:import namespace="http://www.w3.org/XML/1998/namespace" schemaLocation="{REPO}/xsd/as4/xml.xsd"/>
      <xs:import namespace="{EB}" schemaLocation="{SHARED_AS4}/ebms-header-3_0-200704.xsd"/></xs:schema>""")
    return etree.XMLSchema(etree.parse(str(wrapper)))


def test_our_messages_receipts_and_errors_validate_against_the_oasis_schema(hubs: tuple[Runtime, Runtime], tmp_path: Path) -> None:
    vn, th = hubs
    data, ebms_id = outbound_message(vn, submit_certificate(vn))
    status, receipt = inbound_of(th).handle(data)
    error = inbound_of(th).error_signal(ebms_id, EbmsError(EbmsCode.OTHER, "a test error"))
    schema = _schema_over_shared(tmp_path)
    for message in (data, receipt, error):
        messaging = header.find_messaging(etree.fromstring(message))
        assert schema.validate(messaging), schema.error_log
        header.validate(messaging)
    u = header.read(etree.fromstring(data)).user_messages[0]
    assert status == 200 and u.action == "FORMD" and u.sender.id.value == VN_HUB and u.recipient.id.value == TH_HUB
    assert u.sender.id.type == u.recipient.id.type and u.agreement and u.conversation_id and u.parts[0].kind == "body-element"


# -- inbound: POST /as4 ---------------------------------------------------------------------------


def test_inbound_verifies_accepts_and_answers_with_a_signed_receipt(hubs: tuple[Runtime, Runtime]) -> None:
    vn, th = hubs
    message_id = submit_certificate(vn)
    data, ebms_id = outbound_message(vn, message_id)
    status, answer = inbound_of(th).handle(data)
    assert status == 200
    gateway = vn.create_adapters()[TH_HUB]
    verified = wss.verify(etree.fromstring(answer), gateway.policy, "TH")  # type: ignore[attr-defined]
    signal = header.read_messaging(verified.messaging).signals[0]
    sent = wss.verify(etree.fromstring(data), th.create_adapters()[VN_HUB].policy, "VN")  # type: ignore[attr-defined]
    assert signal.ref_to_message_id == ebms_id and "Thailand" in verified.subject
    assert {(r.uri, r.digest_value) for r in signal.receipt or ()} == {
        (r.get("URI"), r.findtext("{http://www.w3.org/2000/09/xmldsig#}DigestValue")) for r in sent.references}
    trace = th.store.trace(message_id)
    assert trace.message is not None and trace.message.sender == VN_HUB and trace.message.document_type == "FORMD"
    assert [r.destination for r in trace.rows] == [TH_CUSTOMS]


def test_duplicates_on_message_id_are_answered_but_accepted_once(hubs: tuple[Runtime, Runtime]) -> None:
    vn, th = hubs
    message_id = submit_certificate(vn)
    first, ebms_id = outbound_message(vn, message_id)
    again, same_id = outbound_message(vn, message_id)  # a resend: new timestamp and signature, same MessageId
    assert same_id == ebms_id and again != first
    inbound = inbound_of(th)
    answers = [inbound.handle(m) for m in (first, first, again)]
    assert [s for s, _ in answers] == [200, 200, 200]
    assert all(_signal(a).ref_to_message_id == ebms_id and _signal(a).receipt for _, a in answers)
    assert len(th.store.trace(message_id).rows) == 1


def _refused(th: Runtime, data: bytes) -> header.SignalError:
    status, answer = inbound_of(th).handle(data)
    assert status == 400
    root = etree.fromstring(answer)
    assert wss.is_signed(root)
    (error,) = header.read(root).signals[0].errors
    assert error.failure
    return error


def test_inbound_refusals_are_signed_ebms_errors(hubs: tuple[Runtime, Runtime]) -> None:
    vn, th = hubs
    message_id = submit_certificate(vn)
    data, _ = outbound_message(vn, message_id)
    moit = Signer.from_files(vn.config.agencies["VN-MOIT"].signing_key, vn.config.agencies["VN-MOIT"].certificates[0])  # type: ignore[arg-type]

    def text(element_path: str, value: str):  # type: ignore[no-untyped-def]
        def change(root: etree._Element) -> None:
            root.find(element_path, {"eb": EB, "h": "urn:sw-hub:envelope:1"}).text = value
        return change

    def signature_value(value: str) -> bytes:
        """The WS-Security SignatureValue replaced: signxml decodes it unchecked (ERR99 once)."""
        root = etree.fromstring(data)
        root.find(f".//{{{WSSE}}}Security/{{{DS}}}Signature/{{{DS}}}SignatureValue").text = value
        return etree.tostring(root)

    def signature_children(change) -> bytes:  # type: ignore[no-untyped-def]
        """The WS-Security signature's children rearranged (its value unchanged)."""
        root = etree.fromstring(data)
        change(root.find(f".//{{{WSSE}}}Security/{{{DS}}}Signature"))
        return etree.tostring(root)

    def second_signed_info(signature: etree._Element) -> None:  # signxml would verify the first one only
        signature.insert(1, copy.deepcopy(signature[0]))

    def an_object(signature: etree._Element) -> None:  # nothing in a ds:Object is covered
        etree.SubElement(signature, f"{{{DS}}}Object").text = "unsigned"

    tampered = data.replace(b"Robusta", b"Arabica")
    cases = {
        "EBMS:0103 two SignedInfo": (signature_children(second_signed_info), "ds:Signature holds ['SignedInfo', 'SignedInfo'"),
        "EBMS:0103 object": (signature_children(an_object), "expected, in this order: SignedInfo, SignatureValue, KeyInfo?"),
        "EBMS:0101 empty value": (signature_value(""), "ds:SignatureValue is empty"),
        "EBMS:0101 not base64": (signature_value("Siam-Highland!é"), "the signature cannot be processed"),
        "EBMS:0101 digest": (tampered, "changed after signing"),
        "EBMS:0103 unsigned": (etree.tostring(_without_security(data)), "carries no WS-Security signature"),
        "EBMS:0101 signer": (resign(data, moit), "configured for agency VN-NSW"),
        "EBMS:0010 party": (resign(data, vn.signer, text(".//eb:From/eb:PartyId", "MY-NSW")), "no member gateway"),
        "EBMS:0010 to": (resign(data, vn.signer, text(".//eb:To/eb:PartyId", "LA-NSW")), "this hub is 'TH-NSW'"),
        "EBMS:0003 id": (resign(data, vn.signer, text(".//eb:MessageId", "other@VN-NSW")), "does not name the envelope"),
        "EBMS:0003 action": (resign(data, vn.signer, text(".//eb:Action", "FORMD-STATUS")), "differs from the envelope's documentType"),
        "EBMS:0009 schema": (resign(data, vn.signer, text(".//eb:Timestamp", "yesterday")), "not valid"),
        "EBMS:0009 soap11": (data.replace(S12.encode(), b"http://schemas.xmlsoap.org/soap/envelope/"), "SOAP 1.2"),
        "EBMS:0003 envelope": (resign(data, vn.signer, text(".//h:messageId", "not-the-same")), "does not name"),
    }
    for name, (message, words) in cases.items():
        error = _refused(th, message)
        assert error.code == name.split()[0], (name, error)
        assert words in (error.description or ""), (name, error.description)
    assert th.store.trace(message_id).message is None  # nothing was accepted


def test_hostile_xml_at_the_as4_endpoint_is_refused_before_expansion(hubs: tuple[Runtime, Runtime]) -> None:
    """The conformance corpus's DTD, entity and external-reference documents, as they are and as
    the prolog of a real AS4 message, each get a signed EBMS:0009 (ERR10) without being expanded."""
    vn, th = hubs
    data, _ = outbound_message(vn, submit_certificate(vn))
    hostile = sorted(p for p in (SHARED / "conformance" / "hostile-xml").glob("*.xml") if not p.name.startswith("simple"))
    assert hostile
    for path in hostile:
        raw = path.read_bytes()
        doctype = re.search(rb"<!DOCTYPE[^\[>]*(\[.*?\]\s*)?>", raw, re.S)
        assert doctype is not None, path.name
        for message in (raw, doctype.group(0) + data[data.index(b"?>") + 2:]):
            error = _refused(th, message)
            assert error.code == "EBMS:0009" and "ERR10 a DOCTYPE declaration is not allowed" in (error.description or ""), (path.name, error)
    assert th.store.counts() == {}  # nothing was accepted


def _without_security(data: bytes) -> etree._Element:
    root = etree.fromstring(data)
    h = root.find(f"{{{S12}}}Header")
    h.remove(h.find(f"{{{WSSE}}}Security"))
    return root


def test_a_payload_the_pipeline_refuses_becomes_an_error_with_its_nack(hubs: tuple[Runtime, Runtime]) -> None:
    vn, th = hubs
    message_id = submit_certificate(vn)
    data, _ = outbound_message(vn, message_id)

    def break_form(root: etree._Element) -> None:  # the envelope inside is re-signed by VN, but its Form D is invalid
        body = root.find(f"{{{S12}}}Body")
        envelope = body[0]
        envelope.remove(envelope.find("{http://www.w3.org/2000/09/xmldsig#}Signature"))
        form = envelope.find(".//{urn:sw-hub:asean:eatiga:formd:1}FormD")
        form.remove(form.find("{urn:sw-hub:asean:eatiga:formd:1}Exporter"))
        body.replace(envelope, vn.signer.sign(envelope))

    error = _refused(th, resign(data, vn.signer, break_form))
    assert error.code == "EBMS:0004" and "ERR05" in (error.description or "")


@pytest.mark.parametrize("forged_id", [True, False])
def test_signature_wrapping_is_refused(hubs: tuple[Runtime, Runtime], forged_id: bool) -> None:
    """The signed eb:Messaging is hidden in a wrapper; a forged one takes its place, with the same
    wsu:Id (the id is then ambiguous) or with none (it is then not covered by the signature)."""
    vn, th = hubs
    data, _ = outbound_message(vn, submit_certificate(vn))
    root = etree.fromstring(data)
    h = root.find(f"{{{S12}}}Header")
    signed = h.find(f"{{{EB}}}Messaging")
    forged = copy.deepcopy(signed)
    forged.find(f".//{{{EB}}}Action").text = "SOMETHING-ELSE"
    if not forged_id:
        del forged.attrib[f"{{{WSU}}}Id"]
    hidden = etree.SubElement(h, "{urn:attacker}Wrapper")
    h.replace(signed, forged)
    hidden.append(signed)
    error = _refused(th, etree.tostring(root))
    if forged_id:
        assert error.code == "EBMS:0101" and "used 2 times (signature wrapping)" in (error.description or "")
    else:
        assert error.code == "EBMS:0103" and "carries no wsu:Id" in (error.description or "")


# -- outbound: the partner's answers mapped onto the outbox --------------------------------------


def _outbox(tmp_path: Path, th_port: int) -> tuple[Runtime, Runtime, str]:
    pair = write_pair(tmp_path, free_port(), th_port, initial_delay=0.05, max_attempts=6)
    vn, th = Runtime.load(pair.vn), Runtime.load(pair.th)
    return vn, th, submit_certificate(vn)


def _row(vn: Runtime, message_id: str):  # type: ignore[no-untyped-def]
    return next(r for r in vn.store.trace(message_id).rows if r.destination == TH_HUB)


def _ids(partner: Partner) -> set[str]:
    return {header.read(etree.fromstring(b)).user_messages[0].message_id for b in partner.received}


_MARD = """
[[agencies]]
id = "VN-MARD"
name = "Ministry of Agriculture and Rural Development"
country = "VN"
adapter = "file"
endpoint = "agencies/VN-MARD/outbox"
certificates = ["keys/demo/VN-MARD.crt"]
signing_key = "keys/demo/VN-MARD.key"

[[routes]]
name = "mard-formd-to-thailand"
from = "VN-MARD"
to = "TH-NSW"
document_type = "CO-FORMD"
schema = "co"
deliver = [{ agency = "TH-NSW", mapping = ["co-to-formd"] }]

[[routes]]
name = "mard-co-at-home"
from = "VN-MARD"
to = "VN-CUSTOMS"
document_type = "CO-FORMD"
schema = "co"
deliver = [{ agency = "VN-CUSTOMS" }]
"""


def test_senders_to_a_gateway_do_not_share_a_message_id(tmp_path: Path) -> None:
    """The hub sends every national sender's messages to the gateway in its own name, ids kept: a
    second agency using an id already taken (a sender's bug, a copied template) is refused at once
    with ERR60, instead of the gateway refusing its Form D later as a reuse of the first one's id
    (a dead letter); the first sender's own resend is still its duplicate, and an id used on a
    route that does not reach that gateway does not count."""
    pair = write_pair(tmp_path, free_port(), free_port(), vn_extra=_MARD)
    vn = Runtime.load(pair.vn)
    try:
        moit, mard, taken_id = Sender(vn.config, "VN-MOIT"), Sender(vn.config, "VN-MARD"), str(uuid.uuid4())
        first = moit.message(to=TH_HUB, message_id=taken_id)
        assert vn.pipeline.submit(first).accepted
        taken = vn.pipeline.submit(mard.message(to=TH_HUB, message_id=taken_id))
        assert not taken.accepted and taken.code == "ERR60" and "already used by another agency" in taken.errors[0].message
        assert vn.pipeline.submit(first).duplicate
        assert vn.pipeline.submit(mard.message(to=TH_HUB, message_id=str(uuid.uuid4()))).accepted
        assert {r.sender for r in vn.store.trace(taken_id).rows} == {"VN-MOIT"}
        at_home = str(uuid.uuid4())  # an id used on a route that stays in the country does not count
        assert vn.pipeline.submit(mard.message(to="VN-CUSTOMS", message_id=at_home)).accepted
        assert vn.pipeline.submit(moit.message(to=TH_HUB, message_id=at_home)).accepted
    finally:
        vn.close()


@pytest.mark.parametrize("failure", ["5xx", "missing receipt", "oversized answer", "refused connection"])
def test_transient_failures_are_retried_with_the_same_message_id(tmp_path: Path, failure: str) -> None:
    port = free_port()
    vn, th, message_id = _outbox(tmp_path, port)
    inbound, partner, calls = inbound_of(th), Partner(port), []

    def answer(body: bytes) -> tuple[int, bytes]:
        calls.append(1)
        if len(calls) <= 2 and failure == "5xx":
            return 500, b"gateway overloaded"
        if len(calls) <= 2 and failure == "missing receipt":
            inbound.handle(body)  # the partner accepts it, but the receipt is lost on the way back
            return 200, b""
        if len(calls) <= 2 and failure == "oversized answer":  # more than the hub reads (max_bytes)
            inbound.handle(body)
            return 200, b" " * (vn.config.hub.limits.max_bytes + 1)
        return inbound.handle(body)

    partner.answer = answer
    dispatcher = vn.dispatcher()
    try:
        if failure != "refused connection":
            partner.start()
        else:
            assert wait_until(lambda: dispatcher.run_once() >= 0 and _row(vn, message_id).attempts >= 2 and _row(vn, message_id).state is State.PENDING, 20)
            assert "cannot reach" in (_row(vn, message_id).last_error or "")
            partner.start()
        assert dispatcher.drain(30)
        row = _row(vn, message_id)
        assert row.state is State.DELIVERED and (row.attempts == 3 or failure == "refused connection" and row.attempts >= 3)
        attempts = [a for a in vn.store.trace(message_id).attempts if a.row_id == row.id]
        assert [a.outcome for a in attempts] == [State.PENDING] * (row.attempts - 1) + [State.DELIVERED]
        assert attempts[-1].detail.startswith("AS4 receipt") and "signed by CN=Thailand" in attempts[-1].detail
        if failure != "refused connection":
            assert len(_ids(partner)) == 1 and len(partner.received) == 3  # resent with the same eb:MessageId
        if failure == "oversized answer":
            assert "bytes; the hub reads no more" in attempts[0].detail
        assert len(th.store.trace(message_id).rows) == 1  # the partner took it once
    finally:
        dispatcher.stop()
        partner.stop()
        vn.close()
        th.close()


def test_a_partner_error_is_dead_lettered_with_the_partners_text(tmp_path: Path) -> None:
    port = free_port()
    vn, th, message_id = _outbox(tmp_path, port)
    inbound, partner = inbound_of(th), Partner(port).start()
    words = "Form D VN-TH 25/02/00317 was already used for another consignment"
    partner.answer = lambda body: (400, inbound.error_signal(header.read(etree.fromstring(body)).user_messages[0].message_id,
                                                             EbmsError(EbmsCode.OTHER, words)))
    dispatcher = vn.dispatcher()
    try:
        assert dispatcher.drain(20)
        row = _row(vn, message_id)
        assert row.state is State.DEAD and row.attempts == 1
        assert f"AS4 error from {TH_HUB}: EBMS:0004 Other: {words}" in (row.last_error or "")
    finally:
        dispatcher.stop()
        partner.stop()
        vn.close()
        th.close()


@pytest.mark.parametrize("error", ["unsigned", "about another message"])
def test_an_error_the_partner_did_not_sign_for_this_message_does_not_end_the_delivery(tmp_path: Path, error: str) -> None:
    """Anything on the way could answer with an unsigned eb:Error, or replay a signed one about
    another message: the delivery is sent again (same MessageId) and ends delivered."""
    port = free_port()
    vn, th, message_id = _outbox(tmp_path, port)
    inbound, partner, calls = inbound_of(th), Partner(port), []
    words = "Form D VN-TH 25/02/00317 was already used for another consignment"

    def answer(body: bytes) -> tuple[int, bytes]:
        calls.append(1)
        if len(calls) > 2:
            return inbound.handle(body)
        ours = header.read(etree.fromstring(body)).user_messages[0].message_id
        signal = etree.fromstring(inbound.error_signal("someone-else@TH" if error == "about another message" else ours,
                                                       EbmsError(EbmsCode.OTHER, words)))
        if error == "unsigned":
            security = signal.find(f"{{{S12}}}Header/{{{WSSE}}}Security")
            security.getparent().remove(security)
        return 400, etree.tostring(signal)

    partner.answer = answer
    partner.start()
    dispatcher = vn.dispatcher()
    try:
        assert dispatcher.drain(30)
        row = _row(vn, message_id)
        assert row.state is State.DELIVERED and row.attempts == 3
        first = [a for a in vn.store.trace(message_id).attempts if a.row_id == row.id][0]
        assert first.outcome is State.PENDING and words in first.detail
        assert ("unsigned AS4 error" if error == "unsigned" else "about someone-else@TH, not") in first.detail, first.detail
        assert len(_ids(partner)) == 1 and len(th.store.trace(message_id).rows) == 1
    finally:
        dispatcher.stop()
        partner.stop()
        vn.close()
        th.close()


def test_time_outs_and_receipts_that_do_not_check_out_are_retried(hubs: tuple[Runtime, Runtime]) -> None:
    vn, th = hubs
    message_id = submit_certificate(vn)
    port = free_port()
    partner = Partner(port).start()
    gateway = vn.create_adapters()[TH_HUB]
    peer = dataclasses.replace(gateway.peer, endpoint=f"http://127.0.0.1:{port}/as4", timeout=0.3)  # type: ignore[attr-defined]
    outbound = Outbound(peer, gateway.policy, vn.pipeline.party, vn.signer, XmlParser(vn.config.hub.limits))  # type: ignore[attr-defined]
    row = _row(vn, message_id)
    delivery = Delivery(row.id, row.message_id, row.sender, row.destination, row.payload, 1)
    inbound = inbound_of(th)
    try:
        partner.answer = lambda body: (time.sleep(1.0), (200, b""))[1]
        result = outbound.deliver(delivery)
        assert result.outcome is Outcome.RETRY and "time-out" in result.detail

        other, _ = outbound_message(vn, submit_certificate(vn))
        partner.answer = lambda body: inbound.handle(other)  # a valid receipt, but for another message
        result = outbound.deliver(delivery)
        assert result.outcome is Outcome.RETRY and "refers to" in result.detail

        partner.answer = lambda body: (200, resign(inbound.handle(body)[1], vn.signer))  # signed by the wrong key
        result = outbound.deliver(delivery)
        assert result.outcome is Outcome.RETRY and "does not check out" in result.detail

        partner.answer = lambda body: inbound.handle(body)
        assert outbound.deliver(delivery).outcome is Outcome.DELIVERED
    finally:
        outbound.close()
        partner.stop()


def test_gateway_options_are_checked(tmp_path: Path) -> None:
    pair = write_pair(tmp_path, free_port(), free_port())
    text = pair.vn.read_text().replace('options = { receipts = "receipts/TH-NSW" }', 'options = { reciepts = "x" }')
    pair.vn.write_text(text)
    runtime = Runtime.load(pair.vn)
    try:
        with pytest.raises(ConfigError, match="did you mean 'receipts'"):
            runtime.create_adapters()
    finally:
        runtime.close()


@pytest.mark.parametrize("dates", ["expired", "expiring"])
def test_hub_check_names_a_gateways_certificate_out_of_date_once(tmp_path: Path, dates: str) -> None:
    """The dates of an asw gateway's certificates are `hub check`'s general certificate check
    (an expired one a fault, one about to expire a warning), not reported again by the adapter."""
    pair = write_pair(tmp_path, free_port(), free_port())
    now = datetime.now(timezone.utc)
    not_before, days = (now - timedelta(days=400), 30) if dates == "expired" else (now - timedelta(days=1), 5)
    gateway = tmp_path / "TH-NSW-gateway.crt"
    write_certificate(gateway, issue(new_key("ec"), "TH gateway", not_before=not_before, days=days))
    text = pair.vn.read_text()
    assert 'certificates = ["../th/keys/hub.crt"]' in text
    pair.vn.write_text(text.replace('certificates = ["../th/keys/hub.crt"]', f'certificates = ["{gateway}"]'))
    errors, warnings = check(pair.vn)
    named = [line for line in errors + warnings if "CN=TH gateway" in line]
    assert len(named) == 1, named
    assert f"agencies[{TH_HUB}].certificates" in named[0]
    if dates == "expired":
        assert named == errors and "not valid now" in named[0]
    else:
        assert named == warnings and "expires on" in named[0]


# -- inbound: what a partner is told about faults (review h2) --------------------------------------


def _error_of(answer: bytes) -> header.SignalError:
    root = etree.fromstring(answer)
    assert wss.is_signed(root)
    (error,) = header.read(root).signals[0].errors
    return error


def test_an_internal_error_is_a_warning_to_send_again_whoever_caught_it(hubs: tuple[Runtime, Runtime], monkeypatch: pytest.MonkeyPatch) -> None:
    """ERR99 means "send it again": the pipeline's ERR99 NACK gets the same retryable answer (HTTP
    500, severity warning) as a fault this endpoint catches itself; other NACKs stay failures."""
    vn, th = hubs
    data, _ = outbound_message(vn, submit_certificate(vn))

    def bug(*args: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(th.pipeline, "_accept", bug)  # the pipeline catches it: an ERR99 NACK
    answers = [inbound_of(th).handle(data)]
    monkeypatch.setattr(th.pipeline, "submit", bug)  # the endpoint catches it
    answers.append(inbound_of(th).handle(data))
    assert [status for status, _ in answers] == [500, 500]
    for _, answer in answers:
        error = _error_of(answer)
        assert (error.code, error.severity) == ("EBMS:0004", "warning") and "ERR99" in (error.description or ""), error
    assert th.store.counts() == {}


def test_a_payload_fault_names_its_path_but_no_line_of_the_reserialised_payload(hubs: tuple[Runtime, Runtime]) -> None:
    vn, th = hubs
    data, _ = outbound_message(vn, submit_certificate(vn))

    def break_hs_code(root: etree._Element) -> None:
        body = root.find(f"{{{S12}}}Body")
        envelope = body[0]
        envelope.remove(envelope.find("{http://www.w3.org/2000/09/xmldsig#}Signature"))
        envelope.find(".//{urn:sw-hub:asean:eatiga:formd:1}HSCode").text = "09X111"
        body.replace(envelope, vn.signer.sign(envelope))

    error = _refused(th, resign(data, vn.signer, break_hs_code))
    description = error.description or ""
    assert error.code == "EBMS:0004" and "ERR05" in description and "'09X111'" in description
    assert description.endswith("(at /FormD/GoodsItem[1]/HSCode)") and "line " not in description, description


def test_too_large_and_too_deep_are_signed_errors_that_state_the_configured_limits(hubs: tuple[Runtime, Runtime]) -> None:
    import asyncio

    import httpx
    from starlette.applications import Starlette
    from starlette.routing import Route

    _, th = hubs
    limits = th.config.hub.limits
    inbound = inbound_of(th)
    app = Starlette(routes=[Route("/as4", inbound.endpoint, methods=["POST"])])

    async def post(body: bytes) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as client:
            return await client.post("/as4", content=body, headers={"Content-Type": "application/soap+xml"})

    r = asyncio.run(post(b"<x>" + b"a" * limits.max_bytes + b"</x>"))
    assert r.status_code == 413 and r.headers["content-type"].startswith("application/soap+xml")
    error = _error_of(r.content)
    assert (error.code, error.severity) == ("EBMS:0009", "failure")
    assert (error.description or "").startswith("ERR11 ") and f"larger than {limits.max_bytes} bytes" in (error.description or "")
    error = _refused(th, b"<a>" * (limits.max_depth + 10) + b"</a>" * (limits.max_depth + 10))
    assert f"ERR12 elements are nested deeper than the limit of {limits.max_depth} " in (error.description or ""), error
