"""WS-Security for AS4: an X.509 signature over ``eb:Messaging`` and the SOAP body.

Signing puts a ``wsse:Security`` header first in the SOAP header with the signer's certificate as
a ``wsse:BinarySecurityToken`` and a detached ``ds:Signature`` (signxml: exclusive c14n, SHA-256,
RSA or ECDSA) whose two references point by ``wsu:Id`` at ``eb:Messaging`` and ``S12:Body``; its
``ds:KeyInfo`` refers to the token. Verification accepts only that shape: one signature, inside
``wsse:Security``, covering exactly those two elements (each id unique in the message), made with a
certificate configured for the partner and in date. It returns the elements *as signed* (see what
is signed), the certificate, and the verified ``ds:Reference``s a receipt must echo.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from lxml import etree
from signxml import SignatureConfiguration, methods
from signxml.algorithms import DigestAlgorithm, SignatureMethod
from signxml.exceptions import InvalidCertificate, InvalidDigest, InvalidInput, InvalidSignature
from signxml.signer import SignatureReference

from hub.errors import Rejected
from hub.keys import CurrentSigner
from hub.trust import ALLOWED_DIGESTS, ALLOWED_SIGNATURE_METHODS, EXC_C14N, CertificatePolicy, Signer, empty_value, subject_of, unfit_signed_info
from hub.trust import RootCopyingSigner as XMLSigner, RootCopyingVerifier as XMLVerifier  # signxml, copying a root by deep copy

from .build import new_id
from .errors import EbmsCode, EbmsError
from .header import DS, EB, S12, WSSE, WSU

X509V3 = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-x509-token-profile-1.0#X509v3"
BASE64 = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary"
_ALLOWED_URIS = {m.value for m in ALLOWED_SIGNATURE_METHODS} | {d.value for d in ALLOWED_DIGESTS}


def _wsu_id(element: etree._Element) -> str | None:
    return element.get(f"{{{WSU}}}Id")


def _parts(envelope: etree._Element) -> tuple[etree._Element, etree._Element, etree._Element]:
    header = envelope.find(f"{{{S12}}}Header")
    body = envelope.find(f"{{{S12}}}Body")
    if header is None or body is None:
        raise EbmsError(EbmsCode.INVALID_HEADER, "an AS4 message is a SOAP 1.2 envelope with a header and a body")
    messaging = header.findall(f"{{{EB}}}Messaging")
    if len(messaging) != 1:
        raise EbmsError(EbmsCode.INVALID_HEADER, "the SOAP header must hold exactly one eb:Messaging")
    return header, messaging[0], body


class WssSigner:
    """Signs AS4 messages with the hub's key: a ``hub.trust.Signer``, or the ``hub.keys.CurrentSigner``
    of a running hub, whose key a reload (SIGHUP) may swap; it is read at each signature."""

    def __init__(self, signer: Signer | CurrentSigner) -> None:
        self.signer = signer

    def sign(self, envelope: etree._Element) -> tuple[etree._Element, ...]:
        """Signs in place; returns the ``ds:Reference``s of the signature (what a receipt echoes)."""
        current = self.signer.current  # one key and its certificate
        key, certificate = current.key, current.certificate
        method = SignatureMethod.ECDSA_SHA256 if isinstance(key, ec.EllipticCurvePrivateKey) else SignatureMethod.RSA_SHA256
        header, messaging, body = _parts(envelope)
        security = etree.Element(f"{{{WSSE}}}Security", {f"{{{S12}}}mustUnderstand": "true"}, nsmap={"wsse": WSSE, "wsu": WSU})
        header.insert(0, security)
        token_id = new_id("X509")
        token = etree.SubElement(security, f"{{{WSSE}}}BinarySecurityToken",
                                 {"EncodingType": BASE64, "ValueType": X509V3, f"{{{WSU}}}Id": token_id})
        token.text = base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode("ascii")
        key_info = etree.Element(f"{{{DS}}}KeyInfo", nsmap={"ds": DS})
        str_ = etree.SubElement(key_info, f"{{{WSSE}}}SecurityTokenReference", nsmap={"wsse": WSSE})
        etree.SubElement(str_, f"{{{WSSE}}}Reference", URI=f"#{token_id}", ValueType=X509V3)
        signer = XMLSigner(method=methods.detached, signature_algorithm=method,
                           digest_algorithm=DigestAlgorithm.SHA256, c14n_algorithm=EXC_C14N)
        signature = signer.sign(
            envelope,
            key=key,
            reference_uri=[SignatureReference(f"#{_wsu_id(messaging)}"), SignatureReference(f"#{_wsu_id(body)}")],
            key_info=key_info,
        )
        security.append(signature)
        return tuple(signature.iterfind(f"{{{DS}}}SignedInfo/{{{DS}}}Reference"))


@dataclass(frozen=True)
class Verified:
    messaging: etree._Element  # eb:Messaging as signed (canonical form, re-parsed)
    body: etree._Element  # S12:Body as signed
    certificate: x509.Certificate
    references: tuple[etree._Element, ...]  # the verified ds:Reference elements

    @property
    def subject(self) -> str:
        return subject_of(self.certificate)


def is_signed(envelope: etree._Element) -> bool:
    return envelope.find(f"{{{S12}}}Header/{{{WSSE}}}Security/{{{DS}}}Signature") is not None


def _token_certificate(security: etree._Element, signature: etree._Element) -> bytes | None:
    """The DER certificate the signature's KeyInfo points at (token reference or X509Data)."""
    ref = signature.find(f"{{{DS}}}KeyInfo/{{{WSSE}}}SecurityTokenReference/{{{WSSE}}}Reference")
    text = None
    if ref is not None:
        uri = ref.get("URI", "")
        tokens = [t for t in security.iterfind(f"{{{WSSE}}}BinarySecurityToken") if f"#{_wsu_id(t)}" == uri]
        if len(tokens) != 1 or tokens[0].get("ValueType") != X509V3:
            raise EbmsError(EbmsCode.FAILED_AUTHENTICATION, f"the signature's key reference {uri!r} names no X.509 token")
        text = tokens[0].text
    else:
        text = signature.findtext(f"{{{DS}}}KeyInfo/{{{DS}}}X509Data/{{{DS}}}X509Certificate")
    if text is None:
        return None
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except ValueError:
        raise EbmsError(EbmsCode.FAILED_AUTHENTICATION, "the signing certificate is not valid base64") from None


def _unique(envelope: etree._Element, element: etree._Element, what: str) -> str:
    ident = _wsu_id(element)
    if not ident:
        raise EbmsError(EbmsCode.POLICY_NONCOMPLIANCE, f"{what} carries no wsu:Id, so the signature cannot cover it")
    holders = envelope.xpath("//*[@*[local-name()='Id' or local-name()='ID' or local-name()='id']=$v]", v=ident)
    if len(holders) != 1:
        raise EbmsError(EbmsCode.FAILED_AUTHENTICATION, f"the id {ident!r} of {what} is used {len(holders)} times (signature wrapping)")
    return f"#{ident}"


def verify(envelope: etree._Element, policy: CertificatePolicy, who: str) -> Verified:
    """Verifies the WS-Security signature; raises ``EbmsError`` (EBMS:0101 / EBMS:0103).

    ``policy`` decides whether the token's certificate may sign for ``who`` (pinned certificates,
    or the trust store's CA chains and CRLs: ``hub.truststore``)."""
    header, messaging, body = _parts(envelope)
    securities = header.findall(f"{{{WSSE}}}Security")
    signatures = [s for sec in securities for s in sec.iterfind(f"{{{DS}}}Signature")]
    if not signatures:
        raise EbmsError(EbmsCode.POLICY_NONCOMPLIANCE, f"{who} must sign its AS4 messages; this one carries no WS-Security signature")
    if len(securities) != 1 or len(signatures) != 1 or len(envelope.findall(f".//{{{DS}}}Signature")) - _nested(body) != 1:
        raise EbmsError(EbmsCode.POLICY_NONCOMPLIANCE, "exactly one wsse:Security header with one ds:Signature is allowed")
    security, signature = securities[0], signatures[0]
    _check_shape(signature)
    empty = empty_value(signature)
    if empty is not None:
        raise EbmsError(EbmsCode.FAILED_AUTHENTICATION, f"the signature is not well-formed: line {empty[1]}: {empty[0]}")
    der = _token_certificate(security, signature)
    try:
        cert = policy.signer([der] if der else [], who)
    except Rejected as exc:
        raise EbmsError(EbmsCode.FAILED_AUTHENTICATION, f"{exc.code.value} {exc.message}") from None
    wanted = {_unique(envelope, messaging, "eb:Messaging"): "messaging", _unique(envelope, body, "the SOAP body"): "body"}
    config = SignatureConfiguration(
        location=f"./{{{S12}}}Header/{{{WSSE}}}Security/",
        expect_references=2,
        signature_methods=ALLOWED_SIGNATURE_METHODS,
        digest_algorithms=ALLOWED_DIGESTS,
        ignore_ambiguous_key_info=True,
    )
    try:
        # validate_schema=False: signxml's bundled XML-DSig schema refuses ec:InclusiveNamespaces,
        # which AS4 implementations (phase4, Domibus) put in their c14n transforms; _check_shape
        # has already allowed only the elements and algorithms listed there.
        results = XMLVerifier().verify(envelope, x509_cert=cert, expect_config=config, validate_schema=False)
    except InvalidDigest:
        raise EbmsError(EbmsCode.FAILED_AUTHENTICATION, "the signed content was changed after signing (digest mismatch)") from None
    except InvalidSignature as exc:
        raise EbmsError(EbmsCode.FAILED_AUTHENTICATION, f"the signature does not verify: {exc}") from None
    except (InvalidInput, InvalidCertificate, etree.DocumentInvalid, ValueError) as exc:
        # ValueError: a SignatureValue or DigestValue that is not base64 (binascii.Error)
        raise EbmsError(EbmsCode.FAILED_AUTHENTICATION, f"the signature cannot be processed: {exc}") from None
    signed_info = results[0].signature_xml.find(f"{{{DS}}}SignedInfo")
    references = tuple(signed_info.iterfind(f"{{{DS}}}Reference"))
    covered = {ref.get("URI"): result.signed_xml for ref, result in zip(references, results)}
    if set(covered) != set(wanted):
        raise EbmsError(EbmsCode.POLICY_NONCOMPLIANCE, f"the signature must cover exactly eb:Messaging and the SOAP body; it covers {sorted(covered)}")
    signed = {wanted[uri]: element for uri, element in covered.items()}
    if signed["messaging"] is None or signed["messaging"].tag != messaging.tag or signed["body"] is None or signed["body"].tag != body.tag:
        raise EbmsError(EbmsCode.FAILED_AUTHENTICATION, "the signed references are not eb:Messaging and the SOAP body (signature wrapping)")
    return Verified(signed["messaging"], signed["body"], cert, references)


# each XML-DSig element's children, in order: (name, least, most); no ds:Object (the signature
# covers eb:Messaging and the body, nothing an Object could hold)
_SHAPE = {
    "Signature": (("SignedInfo", 1, 1), ("SignatureValue", 1, 1), ("KeyInfo", 0, 1)),
    "SignedInfo": (("CanonicalizationMethod", 1, 1), ("SignatureMethod", 1, 1), ("Reference", 1, None)),
    "Reference": (("Transforms", 0, 1), ("DigestMethod", 1, 1), ("DigestValue", 1, 1)),
}


def _in_order(names: list[str], shape: tuple[tuple[str, int, int | None], ...]) -> bool:
    """Whether ``names`` is the sequence ``shape`` describes."""
    at = 0
    for name, least, most in shape:
        count = 0
        while at < len(names) and names[at] == name:
            at, count = at + 1, count + 1
        if count < least or (most is not None and count > most):
            return False
    return at == len(names)


def _check_shape(signature: etree._Element) -> None:
    """The signature's structure and algorithms, checked before any cryptography: XML-DSig
    elements in their places, exclusive c14n (with an optional InclusiveNamespaces prefix list) as
    the only transform, RSA/ECDSA and SHA-2 only."""
    def refuse(what: str) -> EbmsError:
        return EbmsError(EbmsCode.POLICY_NONCOMPLIANCE, f"the signature is refused: {what}")

    unfit = unfit_signed_info(signature)
    if unfit is not None:
        raise refuse(unfit)

    for parent, allowed in _SHAPE.items():
        for element in ([signature] if parent == "Signature" else signature.iter(f"{{{DS}}}{parent}")):
            names = [etree.QName(c).localname if c.tag.startswith(f"{{{DS}}}") else c.tag for c in element if isinstance(c.tag, str)]
            if not _in_order(names, allowed):
                expected = ", ".join(name + ("" if least == most == 1 else "?" if most == 1 else "+") for name, least, most in allowed)
                raise refuse(f"line {element.sourceline}: ds:{parent} holds {names}; expected, in this order: {expected}")
    for alg in signature.iter(f"{{{DS}}}SignatureMethod", f"{{{DS}}}DigestMethod"):
        if alg.get("Algorithm") not in _ALLOWED_URIS:
            raise refuse(f"the algorithm {alg.get('Algorithm')} is not allowed; use RSA or ECDSA with SHA-256 or stronger")
    for alg in signature.iter(f"{{{DS}}}CanonicalizationMethod", f"{{{DS}}}Transform"):
        extra = [c for c in alg if isinstance(c.tag, str) and c.tag != f"{{{EXC_C14N.value}}}InclusiveNamespaces"]
        if alg.get("Algorithm") != EXC_C14N.value or extra:
            raise refuse(f"only exclusive c14n ({EXC_C14N.value}) is allowed as canonicalisation and transform, not {alg.get('Algorithm')}")


def _nested(body: etree._Element) -> int:
    """Signatures inside the payload (e.g. the hub envelope's own) are the payload's business."""
    return len(body.findall(f".//{{{DS}}}Signature"))
