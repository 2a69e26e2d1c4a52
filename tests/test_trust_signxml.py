"""``hub.trust.RootCopies``: the hub's signer and verifier are signxml's, copying a document's root
by deep copy instead of serialise-and-parse. These tests hold that change to "the same result as
stock signxml": same signatures, same verified content, same refusals, the caller's tree untouched,
and the one assumption it makes about signxml's code still true of the installed version."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import signxml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree
from signxml import SignatureConfiguration, XMLSigner, XMLVerifier, methods
from signxml.algorithms import CanonicalizationMethod, DigestAlgorithm, SignatureMethod
from signxml.exceptions import InvalidDigest, InvalidSignature

from hub.keys import issue, new_key
from hub.trust import EXC_C14N, Signer, Verifier, RootCopyingSigner, RootCopyingVerifier

CONFIG = SignatureConfiguration(require_x509=True, expect_references=1)


@pytest.fixture(scope="module", params=["rsa", "ec"])
def keypair(request):  # type: ignore[no-untyped-def]
    key = new_key(request.param)
    return request.param, key, issue(key, "signxml copies test", organization="Test")


def _stock_signer(kind: str) -> XMLSigner:
    method = SignatureMethod.RSA_SHA256 if kind == "rsa" else SignatureMethod.ECDSA_SHA256
    return XMLSigner(method=methods.enveloped, signature_algorithm=method, digest_algorithm=DigestAlgorithm.SHA256, c14n_algorithm=EXC_C14N)


def _hub_signer(kind: str) -> XMLSigner:
    method = SignatureMethod.RSA_SHA256 if kind == "rsa" else SignatureMethod.ECDSA_SHA256
    return RootCopyingSigner(method=methods.enveloped, signature_algorithm=method, digest_algorithm=DigestAlgorithm.SHA256, c14n_algorithm=EXC_C14N)


def test_every_copy_in_signxml_goes_straight_from_tostring_to_fromstring() -> None:
    """The mixin hands a root element from ``_tostring`` to ``_fromstring`` without bytes in between;
    that is only safe while signxml never uses ``_tostring``'s result for anything else."""
    folder = Path(inspect.getfile(signxml)).parent
    uses = bare = 0
    for source in folder.rglob("*.py"):
        text = source.read_text()
        uses += len(re.findall(r"\._tostring\(", text))
        bare += len(re.findall(r"\._tostring\(", re.sub(r"self\._fromstring\(self\._tostring\(", "", text)))
    assert uses >= 4, "signxml no longer copies through _tostring; review hub.trust.RootCopies"
    assert bare == 0, "signxml now uses _tostring's bytes for something else; review hub.trust.RootCopies"


def _document(items: list[tuple[str, str]], *, extra_ns: bool) -> etree._Element:
    nsmap = {None: "urn:sw-hub:test", "x": "urn:x"} | ({"unused": "urn:unused"} if extra_ns else {})
    root = etree.Element("{urn:sw-hub:test}Doc", nsmap=nsmap)
    for i, (tag, text) in enumerate(items):
        child = etree.SubElement(root, f"{{urn:x}}{tag}" if i % 2 else f"{{urn:sw-hub:test}}{tag}", n=str(i))
        child.text = text
        if i % 3 == 0:
            child.append(etree.Comment(" a comment "))
        if i % 4 == 0:
            child.set("{urn:x}kind", "x:qualified")
    return root


_texts = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=40)
_items = st.lists(st.tuples(st.sampled_from(["Item", "Goods", "HS", "Box"]), _texts), max_size=12)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(items=_items, extra_ns=st.booleans())
def test_same_signatures_and_same_verified_content_as_stock_signxml(keypair, items, extra_ns) -> None:  # type: ignore[no-untyped-def]
    kind, key, cert = keypair
    document = _document(items, extra_ns=extra_ns)
    before = etree.tostring(document)

    ours = _hub_signer(kind).sign(document, key=key, cert=[cert])
    stock = _stock_signer(kind).sign(document, key=key, cert=[cert])
    assert etree.tostring(document) == before, "signing changed the caller's document"
    digest = ".//{http://www.w3.org/2000/09/xmldsig#}DigestValue"
    assert ours.findtext(digest) == stock.findtext(digest)
    signed_info = ".//{http://www.w3.org/2000/09/xmldsig#}SignedInfo"
    assert etree.tostring(ours.find(signed_info), method="c14n") == etree.tostring(stock.find(signed_info), method="c14n")
    if kind == "rsa":  # PKCS#1 v1.5 is deterministic: the whole documents are the same XML
        assert etree.tostring(ours, method="c14n") == etree.tostring(stock, method="c14n")

    for signed in (ours, stock):
        received = etree.fromstring(etree.tostring(signed))
        as_received = etree.tostring(received)
        by_hub = RootCopyingVerifier().verify(received, x509_cert=cert, expect_config=CONFIG)
        assert etree.tostring(received) == as_received, "verification changed the caller's document"
        by_stock = XMLVerifier().verify(etree.tostring(signed), x509_cert=cert, expect_config=CONFIG)
        assert by_hub.signed_data == by_stock.signed_data  # type: ignore[union-attr]
        assert etree.tostring(by_hub.signed_xml) == etree.tostring(by_stock.signed_xml)  # type: ignore[union-attr]


def test_tampering_is_refused_as_by_stock_signxml(keypair) -> None:  # type: ignore[no-untyped-def]
    kind, key, cert = keypair
    signed = _hub_signer(kind).sign(_document([("Item", "rice"), ("HS", "1006.30")], extra_ns=False), key=key, cert=[cert])
    text = etree.tostring(signed)
    for tampered, error in (
        (text.replace(b"rice", b"gold"), InvalidDigest),
        (re.sub(rb"<ds:SignatureValue>(.)", lambda m: b"<ds:SignatureValue>" + (b"A" if m.group(1) != b"A" else b"B"), text), InvalidSignature),
    ):
        for verifier, data in ((RootCopyingVerifier(), etree.fromstring(tampered)), (XMLVerifier(), tampered)):
            with pytest.raises(error):
                verifier.verify(data, x509_cert=cert, expect_config=CONFIG)


def test_an_element_inside_a_document_is_copied_the_stock_way(keypair) -> None:  # type: ignore[no-untyped-def]
    """Only a root is deep-copied; an inner element keeps signxml's serialise-and-parse copy, which
    carries the namespaces it inherits from its ancestors."""
    kind, key, cert = keypair
    outer = etree.fromstring(b'<o:Outer xmlns:o="urn:outer" xmlns:x="urn:x"><o:Inner x:kind="x:v"><o:A>1</o:A></o:Inner></o:Outer>')
    inner = outer[0]
    ours = _hub_signer(kind).sign(inner, key=key, cert=[cert])
    stock = _stock_signer(kind).sign(inner, key=key, cert=[cert])
    digest = ".//{http://www.w3.org/2000/09/xmldsig#}DigestValue"
    assert ours.findtext(digest) == stock.findtext(digest)
    assert ours.nsmap == stock.nsmap


def test_the_hubs_signer_and_verifier_use_the_mixin() -> None:
    """What the pipeline calls is what the tests above check."""
    key = new_key("ec")
    cert = issue(key, "mixin check", organization="Test")
    signed = Signer(key, cert).sign(_document([("Item", "x")], extra_ns=False))
    verifier = Verifier()
    verified = verifier.verify(etree.fromstring(etree.tostring(signed)), [cert], "the test")
    assert verified.certificate == cert
    assert isinstance(verifier._local.verifier, RootCopyingVerifier)
    assert isinstance(CanonicalizationMethod(EXC_C14N), CanonicalizationMethod)


def test_an_unlinked_element_with_a_tail_is_refused_as_by_stock_signxml(keypair) -> None:  # type: ignore[no-untyped-def]
    """An element taken out of its document may keep its tail text: stock signxml's copy of it is
    not well-formed; the hub's signer must not sign a document that has text after its root."""
    kind, key, cert = keypair
    outer = etree.fromstring(b"<a><b>1</b>tail text</a>")
    inner = outer[0]
    outer.remove(inner)  # lxml keeps the tail with the removed element
    assert inner.getparent() is None and inner.tail == "tail text"
    for signer in (_hub_signer(kind), _stock_signer(kind)):
        with pytest.raises(etree.XMLSyntaxError):
            signer.sign(inner, key=key, cert=[cert])


def _count_root_copies(monkeypatch) -> list[int]:  # type: ignore[no-untyped-def]
    import hub.trust

    copies = [0]
    deepcopy = hub.trust.copy.deepcopy

    def counting(element, memo=None):  # type: ignore[no-untyped-def]
        copies[0] += 1
        return deepcopy(element, memo)

    monkeypatch.setattr(hub.trust.copy, "deepcopy", counting)
    return copies


def test_one_copy_of_the_document_per_signature_and_per_verification(keypair, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """signxml asks for two copies in each; the second is only read, so the hub gives it the tree
    that is not used any more (verification: signxml's own copy; signing: the caller's root)."""
    kind, key, cert = keypair
    copies = _count_root_copies(monkeypatch)
    document = _document([("Item", "rice"), ("HS", "1006.30")], extra_ns=True)
    signed = _hub_signer(kind).sign(document, key=key, cert=[cert])
    assert copies[0] == 1
    copies[0] = 0
    RootCopyingVerifier().verify(signed, x509_cert=cert, expect_config=CONFIG)
    assert copies[0] == 1


@pytest.mark.parametrize(
    "text",
    [
        b'<?xml-stylesheet href="a.xsl"?><d:Doc xmlns:d="urn:d"><d:A>1</d:A></d:Doc>',  # something beside the root
        b"<d:Doc xmlns:d='urn:d'><d:A>1</d:A><!-- note --></d:Doc><!-- after -->",
        b'<d:Doc xmlns:d="urn:d" xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><d:A>1</d:A>'
        b'<ds:Signature Id="placeholder"/></d:Doc>',  # a placeholder signxml removes from its copy
    ],
)
def test_documents_the_signer_must_copy_twice_are_signed_as_by_stock_signxml(keypair, text) -> None:  # type: ignore[no-untyped-def]
    kind, key, cert = keypair
    theirs, ours = etree.fromstring(text), etree.fromstring(text)
    stock = _stock_signer(kind).sign(theirs, key=key, cert=[cert])
    hub_signed = _hub_signer(kind).sign(ours, key=key, cert=[cert])
    assert etree.tostring(ours.getroottree()) == etree.tostring(etree.fromstring(text).getroottree()), "the caller's tree changed"
    digest = ".//{http://www.w3.org/2000/09/xmldsig#}DigestValue"
    assert hub_signed.findtext(digest) == stock.findtext(digest)
    XMLVerifier().verify(etree.tostring(hub_signed), x509_cert=cert, expect_config=CONFIG)


def test_lookups_in_clark_notation_find_what_signxml_finds(keypair, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """``RootCopies._find`` / ``_findall`` write signxml's prefixed paths in Clark notation: the same
    elements, and signxml's own error for a required element that is missing."""
    kind, key, cert = keypair
    signed = _hub_signer(kind).sign(_document([("Item", "rice")], extra_ns=True), key=key, cert=[cert])
    signature = signed.find("{http://www.w3.org/2000/09/xmldsig#}Signature")
    ours, stock = RootCopyingVerifier(), XMLVerifier()
    queries = [(signed, "Signature", "./"), (signed, "Signature", ".//"), (signature, "SignedInfo", ""),
               (signature, "SignatureValue", ""), (signature, "KeyInfo", ""), (signature, "X509Data", ".//"),
               (signature, "dsig11:ECKeyValue", ".//"), (signed, "Signature[@Id='placeholder']", ".//"),
               (signature, "ds:SignedInfo", "./"), (signature, "nope:SignedInfo", ""),
               (signature, "ds:KeyInfo/ds:X509Data", ""), (signed, "{http://www.w3.org/2000/09/xmldsig#}Signature", "./")]
    for element, query, xpath in queries:
        try:
            expected = stock._find(element, query, require=False, xpath=xpath)
        except SyntaxError:  # an unknown prefix: both leave it to lxml, which refuses it alike
            with pytest.raises(SyntaxError):
                ours._find(element, query, require=False, xpath=xpath)
            continue
        assert ours._find(element, query, require=False, xpath=xpath) is expected, (query, xpath)
        assert ours._findall(element, query, xpath=xpath) == stock._findall(element, query, xpath=xpath), (query, xpath)
    with pytest.raises(signxml.exceptions.InvalidInput, match="Expected to find XML element Manifest"):
        ours._find(signature, "Manifest")
    # and the Clark path is what finds them: signxml's prefixed lookup is not asked at all
    monkeypatch.setattr(XMLVerifier, "_find", lambda *a, **k: pytest.fail("signxml's own _find was used"))
    monkeypatch.setattr(XMLVerifier, "_findall", lambda *a, **k: pytest.fail("signxml's own _findall was used"))
    assert ours._find(signature, "SignedInfo") is signature[0]
    assert ours._findall(signature, "SignedInfo") == [signature[0]]


def test_certificate_description_is_signxmls_own(keypair) -> None:  # type: ignore[no-untyped-def]
    kind, key, cert = keypair
    ours = RootCopyingVerifier()
    assert ours._get_cert_description(cert, "x") == XMLVerifier()._get_cert_description(cert, "x")
    assert ours._get_cert_description(cert, "x") is ours._get_cert_description(cert, "x")  # made once
    assert ours._get_cert_description(cert, "y") == XMLVerifier()._get_cert_description(cert, "y")
