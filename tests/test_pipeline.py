"""The message path in-process: acceptance, receipts, duplicates and every kind of refusal."""

from __future__ import annotations

import copy
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import pytest
from lxml import etree

from hub.envelope import NS, read_errors, read_header
from hub.errors import Code, TryAgain
from hub.runtime import Runtime
from hub.store import State
from hub.tracing import trace_text
from hub.trust import Verifier, load_certificates

from .support import EXAMPLES, HOSTILE, Sender, message_id_of, tampered, write_config

E = f"{{{NS}}}"


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[Runtime, Sender]]:
    runtime = Runtime.load(write_config(tmp_path))
    yield runtime, Sender(runtime.config, "VN-MOIT")
    runtime.close()


def hub_cert(runtime: Runtime):  # type: ignore[no-untyped-def]
    return load_certificates(runtime.config.hub.certificate)


def test_comments_and_processing_instructions_between_header_fields_are_not_fields(env: tuple[Runtime, Sender]) -> None:
    """The envelope schema allows comments and processing instructions between elements; the
    header is read by element, not by position (a comment first made it an ERR99, one between
    From and To would have shifted the fields)."""
    runtime, moit = env
    data = moit.message()
    for old, new in ((b'<Envelope xmlns="urn:sw-hub:envelope:1">', b'<Envelope xmlns="urn:sw-hub:envelope:1"><!-- a -->'),
                     (b"<Header>", b"<Header><!-- h -->"), (b"<To>", b"<!-- b --><To>"), (b"<Content>", b"<Content><!-- c -->")):
        assert old in data
        data = data.replace(old, new, 1)
    ack = runtime.pipeline.submit(data)  # comments are outside what the signature covers (c14n drops them)
    assert ack.accepted, ack.errors
    header = read_header(etree.fromstring(data.replace(b"<!-- h -->", b"<?note x?>")))  # a PI is inside it: read alone
    assert (header.sender.identity, header.recipient.identity) == ("VN-MOIT", "TH-ASW")


def test_accepts_translates_signs_and_records(env: tuple[Runtime, Sender]) -> None:
    runtime, moit = env
    data = moit.message()
    ack = runtime.pipeline.submit(data)
    assert ack.accepted and not ack.duplicate and ack.message_id == message_id_of(data)
    receipt = etree.fromstring(ack.xml)
    signed = Verifier().verify(receipt, hub_cert(runtime), "hub").element
    header = read_header(signed)
    assert header.subject.function == "99" and header.subject.reference == ack.message_id
    assert header.sender.identity == "VN-NSW" and header.recipient.identity == "VN-MOIT"
    assert [d.get("agency") for d in signed.iter(E + "Destination")] == ["TH-ASW", "VN-CUSTOMS"]

    rows = {r.destination: r for r in runtime.store.rows()}
    assert set(rows) == {"TH-ASW", "VN-CUSTOMS"} and all(r.state is State.PENDING for r in rows.values())
    for destination, root in (("TH-ASW", "FormD"), ("VN-CUSTOMS", "MetaData")):
        delivered = Verifier().verify(etree.fromstring(rows[destination].payload), hub_cert(runtime), "hub").element
        out = read_header(delivered)
        assert out.message_id == ack.message_id and out.sender.identity == "VN-MOIT"
        assert out.recipient.identity == destination
        content = delivered.find(f"{E}Body/{E}Content")[0]
        assert etree.QName(content).localname == root


def test_duplicate_gets_the_original_receipt_and_no_new_rows(env: tuple[Runtime, Sender]) -> None:
    runtime, moit = env
    data = moit.message()
    first = runtime.pipeline.submit(data)
    again = runtime.pipeline.submit(data)
    assert again.accepted and again.duplicate and again.xml == first.xml
    # a retry by the sender re-signs with a new send date but keeps the message id
    retry = runtime.pipeline.submit(moit.message(message_id=first.message_id))
    assert retry.duplicate and retry.xml == first.xml
    assert len(runtime.store.rows()) == 2
    # the trace shows each arrival: received once, sent again twice
    trace = runtime.store.trace(first.message_id)
    assert [e.event for e in trace.audit].count("duplicate") == 2
    text = trace_text(trace, first.message_id)
    assert text.count("sent again by VN-MOIT: answered with the original receipt") == 2


def test_a_message_id_used_again_for_another_document_is_refused_not_answered_with_the_old_receipt(env: tuple[Runtime, Sender]) -> None:
    runtime, moit = env
    first = runtime.pipeline.submit(moit.message())
    certificate = etree.fromstring((EXAMPLES / "co-certificate.xml").read_bytes())
    # the same document serialised otherwise (a namespace declaration it does not use): a retry
    respelled = etree.fromstring(etree.tostring(certificate).replace(b">", b' xmlns:unused="urn:example:unused">', 1))
    assert runtime.pipeline.submit(moit.message(respelled, message_id=first.message_id)).duplicate
    # another document under the same id: refused with its own code; the first stays as it was
    other = copy.deepcopy(certificate)
    text = next(e for e in other.iter() if isinstance(e.tag, str) and e.text and e.text.strip())
    text.text = text.text.strip() + " (amended)"
    code, message, _ = nack(runtime, moit.message(other, message_id=first.message_id))
    assert code == "ERR60" and first.message_id in message and "another document" in message
    assert len(runtime.store.rows()) == 2
    assert [e.event for e in runtime.store.trace(first.message_id).audit].count("rejected") == 1
    # the same document under the same id for another purpose (here another reference): refused too
    from hub.client import Outgoing, envelope_for, recipient_for, signed_bytes
    from hub.pipeline import party_of

    config = runtime.config
    purpose = envelope_for(copy.deepcopy(certificate), party_of(config.agencies["VN-MOIT"]), recipient_for(config, "TH-ASW"),
                           Outgoing("CO-FORMD", reference="REF-OTHER"), first.message_id)
    code, _, _ = nack(runtime, signed_bytes(purpose, moit.signer))
    assert code == "ERR60"


def test_the_store_missing_the_row_it_refused_as_a_duplicate_gives_no_receipt_on_a_guess(env: tuple[Runtime, Sender]) -> None:
    """The race: the duplicate check finds nothing, the insert finds the id taken (another thread
    or node got there first). The answer comes from what the store recorded, never a guess."""
    runtime, moit = env
    data = moit.message()
    first = runtime.pipeline.submit(data)
    real = runtime.store.original
    runtime.store.original = lambda sender, mid: None  # type: ignore[method-assign]
    with pytest.raises(TryAgain):
        runtime.pipeline.submit(data)  # not found before nor after the insert: try again, no receipt
    seen: list[str] = []

    def once_missed(sender: str, mid: str):  # type: ignore[no-untyped-def]
        seen.append(mid)
        return None if len(seen) == 1 else real(sender, mid)

    runtime.store.original = once_missed  # type: ignore[method-assign]
    again = runtime.pipeline.submit(data)
    assert again.duplicate and again.xml == first.xml and len(seen) == 2
    assert len(runtime.store.rows()) == 2


def test_a_refused_message_corrected_and_sent_again_with_its_id_is_accepted(env: tuple[Runtime, Sender]) -> None:
    """A NACK keeps nothing that would make the corrected message a duplicate."""
    runtime, moit = env
    broken = moit.message(document_type="NO-SUCH")
    refused = runtime.pipeline.submit(broken)
    assert not refused.accepted and refused.message_id
    corrected = runtime.pipeline.submit(moit.message(message_id=refused.message_id))
    assert corrected.accepted and not corrected.duplicate
    again = runtime.pipeline.submit(moit.message(message_id=refused.message_id))
    assert again.duplicate and again.xml == corrected.xml
    events = [e.event for e in runtime.store.trace(refused.message_id).audit]
    assert events[0] == "rejected" and "received" in events and events[-1] == "duplicate"


def nack(runtime: Runtime, data: bytes, authenticated_as: str | None = None) -> tuple[str, str, str | None]:
    ack = runtime.pipeline.submit(data, authenticated_as)
    assert not ack.accepted
    envelope = etree.fromstring(ack.xml)
    signed = Verifier().verify(envelope, hub_cert(runtime), "hub").element  # NACKs are signed too
    assert read_header(signed).subject.function == "00"
    (error,) = read_errors(signed)
    assert error[1], "every NACK carries a sentence"
    return error


def test_malformed_xml(env: tuple[Runtime, Sender]) -> None:
    runtime, moit = env
    code, message, location = nack(runtime, moit.message()[:-30])
    assert code == Code.MALFORMED_XML.value and location and location.startswith("line")


@pytest.mark.parametrize("name", ["xmlbomb.xml", "quadratic.xml", "external.xml", "dtd.xml"])
def test_dtd_and_entities(env: tuple[Runtime, Sender], name: str) -> None:
    runtime, _ = env
    code, message, _ = nack(runtime, (HOSTILE / name).read_bytes())
    assert code == Code.FORBIDDEN_DTD.value


def test_oversized(env: tuple[Runtime, Sender]) -> None:
    runtime, moit = env
    data = moit.message().replace(b"</Envelope>", b"<!--" + b"x" * 1_000_000 + b"--></Envelope>")
    code, message, _ = nack(runtime, data)
    assert code == Code.TOO_LARGE.value and "1000000" in message


def test_wrong_envelope_namespace(env: tuple[Runtime, Sender]) -> None:
    runtime, moit = env
    code, message, _ = nack(runtime, moit.message().replace(NS.encode(), b"urn:example:other"))
    assert code == Code.WRONG_NAMESPACE.value and NS in message


def test_payload_in_wrong_namespace(env: tuple[Runtime, Sender]) -> None:
    runtime, moit = env
    formd = etree.fromstring((EXAMPLES / "formd.xml").read_bytes())  # a Form D where the route wants a national certificate
    code, message, _ = nack(runtime, moit.message(formd))
    assert code == Code.WRONG_NAMESPACE.value and "schema 'co'" in message


def test_unknown_route(env: tuple[Runtime, Sender]) -> None:
    runtime, moit = env
    code, message, _ = nack(runtime, moit.message(document_type="NO-SUCH-PROCEDURE"))
    assert code == Code.UNKNOWN_PROCEDURE.value and "NO-SUCH-PROCEDURE" in message


def test_missing_signature(env: tuple[Runtime, Sender]) -> None:
    runtime, moit = env
    code, message, _ = nack(runtime, moit.message(sign=False))
    assert code == Code.SIGNATURE_MISSING.value and "VN-MOIT" in message


def test_tampered_content(env: tuple[Runtime, Sender]) -> None:
    runtime, moit = env
    code, message, _ = nack(runtime, tampered(moit.message()))
    assert code == Code.SIGNATURE_INVALID.value and "changed after signing" in message


def test_signed_by_another_agency(env: tuple[Runtime, Sender]) -> None:
    runtime, moit = env
    mard = Sender(runtime.config, "VN-MARD")
    envelope = moit.envelope()  # claims to come from VN-MOIT ...
    data = etree.tostring(mard.signer.sign(envelope))  # ... but VN-MARD signed it
    code, message, _ = nack(runtime, data)
    assert code == Code.WRONG_SIGNER.value and "VN-MOIT" in message


def test_unknown_sender(env: tuple[Runtime, Sender]) -> None:
    runtime, moit = env
    data = moit.message().replace(b"<identity>VN-MOIT</identity>", b"<identity>XX-NOBODY</identity>", 1)
    code, message, _ = nack(runtime, data)
    assert code == Code.UNKNOWN_SENDER.value and "XX-NOBODY" in message


def test_channel_identity_must_match_the_envelope(env: tuple[Runtime, Sender]) -> None:
    runtime, moit = env
    code, _, _ = nack(runtime, moit.message(), authenticated_as="VN-MARD")
    assert code == Code.SENDER_MISMATCH.value


def test_invalid_envelope(env: tuple[Runtime, Sender]) -> None:
    runtime, moit = env
    envelope = moit.envelope()
    envelope.find(f"{E}Header/{E}Subject/{E}function").text = "first"
    code, message, location = nack(runtime, etree.tostring(moit.signer.sign(envelope)))
    assert code == Code.INVALID_MESSAGE.value and "function" in message and location


def test_invalid_payload_names_line_and_path(env: tuple[Runtime, Sender]) -> None:
    runtime, moit = env
    document = etree.fromstring((EXAMPLES / "co-certificate.xml").read_bytes())
    hs = next(e for e in document.iter() if isinstance(e.tag, str) and etree.QName(e).localname in ("HSCode", "HSCodeID", "ClassificationID"))
    hs.text = "12AB"
    code, message, location = nack(runtime, moit.message(document))
    assert code == Code.INVALID_DOCUMENT.value and "12AB" in message
    assert location and "line" in location and "/" in location


def test_signature_wrapping_is_refused(env: tuple[Runtime, Sender]) -> None:
    runtime, moit = env
    good = etree.fromstring(moit.message())
    # a forged envelope carrying the good envelope's signature, with the signed original hidden inside
    forged = copy.deepcopy(good)
    signature = forged[-1]
    forged.remove(signature)
    wrapper = etree.SubElement(forged, "{urn:example:hide}Hidden")
    wrapper.append(copy.deepcopy(good))
    forged.append(signature)
    code, _, _ = nack(runtime, etree.tostring(forged))
    assert code in (Code.SIGNATURE_WRAPPING.value, Code.SIGNATURE_INVALID.value, Code.INVALID_MESSAGE.value)
    two = copy.deepcopy(good)
    two.insert(0, copy.deepcopy(good[-1]))
    code, _, _ = nack(runtime, etree.tostring(two))
    assert code in (Code.SIGNATURE_WRAPPING.value, Code.INVALID_MESSAGE.value)
    assert runtime.store.rows() == []


def test_rejections_are_audited(env: tuple[Runtime, Sender]) -> None:
    runtime, moit = env
    runtime.pipeline.submit(b"<not-xml")
    data = moit.message(document_type="NOPE")
    runtime.pipeline.submit(data)
    entries = list(runtime.store.audit_entries())
    assert [e.event for e in entries] == ["rejected", "rejected"]
    assert entries[0].detail.startswith("ERR02") and entries[1].message_id == message_id_of(data)


def test_a_refusal_is_credited_to_a_sender_only_once_its_signature_verified(env: tuple[Runtime, Sender]) -> None:
    """Anyone can write an envelope naming VN-MOIT: an unsigned (or wrongly signed) one is audited
    as unauthenticated, with the claimed sender in the detail; a signed one refused later (an
    invalid document) is audited under the sender's name."""
    runtime, moit = env
    unsigned = moit.message(sign=False)
    assert runtime.pipeline.submit(unsigned).code == Code.SIGNATURE_MISSING.value
    document = etree.parse(str(EXAMPLES / "co-certificate.xml"))
    next(e for e in document.iter() if isinstance(e.tag, str) and etree.QName(e).localname == "HSCode").text = "12AB"
    invalid = moit.message(etree.tostring(document))
    assert runtime.pipeline.submit(invalid).code == Code.INVALID_DOCUMENT.value
    (claim,) = runtime.store.trace(message_id_of(unsigned)).audit
    assert claim.actor == "unauthenticated" and "(the envelope names VN-MOIT as sender)" in claim.detail
    (signed,) = runtime.store.trace(message_id_of(invalid)).audit
    assert signed.actor == "VN-MOIT" and "names" not in signed.detail


def test_a_route_may_require_a_signature_or_not(tmp_path: Path) -> None:
    extra = """
[[routes]]
name = "open-permits"
from = "VN-MARD"
document_type = "CO-OPEN"
schema = "co"
require_signature = false
deliver = [{ agency = "VN-CUSTOMS" }]
"""
    runtime = Runtime.load(write_config(tmp_path, extra=extra))
    try:
        mard = Sender(runtime.config, "VN-MARD")
        unsigned = runtime.pipeline.submit(mard.message(to="VN-NSW", document_type="CO-OPEN", sign=False))
        assert unsigned.accepted
        tampered_ack = runtime.pipeline.submit(tampered(mard.message(to="VN-NSW", document_type="CO-OPEN")))
        assert not tampered_ack.accepted and tampered_ack.code == Code.SIGNATURE_INVALID.value  # a signature present is checked
        moit = Sender(runtime.config, "VN-MOIT")
        assert runtime.pipeline.submit(moit.message(sign=False)).code == Code.SIGNATURE_MISSING.value  # the hub's default
    finally:
        runtime.close()


def test_one_message_is_signed_with_one_key_across_a_key_swap(env: tuple[Runtime, Sender]) -> None:
    """A reload may swap the hub's key while a message is in the pipeline: its outbound copies and
    its receipt are still signed with one key (the one current when its signing began)."""
    from hub.keys import CurrentSigner, issue, new_key
    from hub.trust import Signer

    runtime, moit = env
    old = runtime.pipeline.signer.current  # type: ignore[union-attr]
    key = new_key("ec")
    new = Signer(key, issue(key, "VN-NSW rotated", organization="VN-NSW"))

    class SwapsOnEveryRead(CurrentSigner):
        """A reload landing between any two reads of the current key."""

        reads = 0

        @property  # type: ignore[override]
        def current(self) -> Signer:
            SwapsOnEveryRead.reads += 1
            return old if SwapsOnEveryRead.reads % 2 else new

        @current.setter
        def current(self, value: Signer) -> None:
            pass

    runtime.pipeline.signer = SwapsOnEveryRead(old)
    ack = runtime.pipeline.submit(moit.message())
    assert ack.accepted
    signers = {Verifier().verify(etree.fromstring(ack.xml), [old.certificate, new.certificate], "hub").certificate}
    for row in runtime.store.rows():
        signers.add(Verifier().verify(etree.fromstring(row.payload), [old.certificate, new.certificate], "hub").certificate)
    assert len(signers) == 1, "the receipt and the outbound copies were signed with different keys"


@pytest.mark.parametrize("threads", [1, 2])
def test_at_most_pipeline_threads_messages_at_once(tmp_path: Path, threads: int) -> None:
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace("[hub]\n", f"[hub]\npipeline_threads = {threads}\n", 1))
    runtime = Runtime.load(config)
    try:
        assert runtime.config.hub.pipeline_threads == threads
        moit = Sender(runtime.config, "VN-MOIT")
        inside, most, lock = [0], [0], threading.Lock()
        parse = runtime.pipeline.parser.parse

        def slow_parse(data: bytes):  # type: ignore[no-untyped-def]
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            time.sleep(0.02)  # lets other threads in, if the pipeline would let them
            with lock:
                inside[0] -= 1
            return parse(data)

        runtime.pipeline.parser.parse = slow_parse  # type: ignore[method-assign]
        messages = [moit.message() for _ in range(8)]
        with ThreadPoolExecutor(8) as pool:
            acks = list(pool.map(runtime.pipeline.submit, messages))
        assert all(a.accepted for a in acks)
        assert most[0] == threads
    finally:
        runtime.close()


def test_each_refused_message_is_logged_once_and_accepted_ones_are_not(env: tuple[Runtime, Sender], caplog: pytest.LogCaptureFixture) -> None:
    import logging

    runtime, moit = env
    unsigned = moit.message(sign=False)
    with caplog.at_level(logging.INFO, logger="hub.pipeline"):
        assert runtime.pipeline.submit(moit.message()).accepted
        assert not runtime.pipeline.submit(unsigned).accepted
        assert not runtime.pipeline.submit(b"<Envelope><unclosed></Envelope>").accepted
    lines = [r for r in caplog.records if r.name == "hub.pipeline"]
    assert [r.levelno for r in lines] == [logging.INFO, logging.INFO], [r.getMessage() for r in lines]
    first, second = (r.getMessage() for r in lines)
    assert first.startswith(f"refused message {message_id_of(unsigned)} from VN-MOIT (not authenticated): {Code.SIGNATURE_MISSING.value} ")
    assert "VN-MOIT" in first.split(": ", 1)[1] and "\n" not in first  # the NACK's sentence
    assert second.startswith(f"refused a message (no envelope header read): {Code.MALFORMED_XML.value} ")


def test_a_flood_of_refused_messages_logs_a_few_lines_and_counts_the_rest(env: tuple[Runtime, Sender], caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from hub.throttle import Tally

    runtime, _ = env
    now = [0.0]
    runtime.pipeline._refusals = Tally(10.0, 3, clock=lambda: now[0])  # 3 lines every 10 s, on a clock of the test's
    with caplog.at_level(logging.INFO, logger="hub.pipeline"):
        for _ in range(50):
            runtime.pipeline.submit(b"<not-xml")
        now[0] = 10.0
        runtime.pipeline.submit(b"<not-xml")
    lines = [r.getMessage() for r in caplog.records if r.name == "hub.pipeline"]
    assert len(lines) == 4, lines
    assert all(line.startswith(f"refused a message (no envelope header read): {Code.MALFORMED_XML.value} ") for line in lines)
    assert lines[-1].endswith("[47 more refused since the last such line, not logged]"), lines[-1]
    assert "more refused" not in "".join(lines[:3])
