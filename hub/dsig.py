"""Enveloped XML signatures made in place: exclusive c14n, SHA-256, RSA or ECDSA, certificates in
KeyInfo, element for element what signxml's ``XMLSigner`` (``methods.enveloped``) writes.

signxml serialises and re-parses the whole document twice per signature (to copy it) before it
canonicalises it; for a document the hub has just built, that is most of the cost of signing
(more than the RSA operation itself at 10 KiB, and x4 for ECDSA). Here the document is
canonicalised once, as it is, and the signature appended to it. Only signing takes this path:
every signature the hub *checks* still goes through signxml (``hub.trust.Verifier``), and the
tests check that signxml verifies what is made here.

The fast path takes only the plain case: a root element without an ``Id``/``ID`` attribute,
without a tail and without a signature of its own; ``EnvelopedSigner.applies`` tells the caller,
which otherwise uses signxml.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from lxml import etree

DSIG = "http://www.w3.org/2000/09/xmldsig#"
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
ECDSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"

_NSMAP = {"ds": DSIG}
_SIGNATURE = f"{{{DSIG}}}Signature"


def _ds(local: str) -> str:
    return f"{{{DSIG}}}{local}"


def certificate_text(cert: x509.Certificate) -> str:
    """The base64 body of the PEM, line breaks and final newline kept (as signxml writes it)."""
    pem = cert.public_bytes(serialization.Encoding.PEM).decode("ascii").replace("\r", "")
    return pem.split("-----BEGIN CERTIFICATE-----\n", 1)[1].split("-----END CERTIFICATE-----", 1)[0]


class EnvelopedSigner:
    """Signs with one RSA or EC key; thread-safe (no state changes after construction)."""

    def __init__(self, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, certificates: Sequence[x509.Certificate]) -> None:
        self.key = key
        self._ec = isinstance(key, ec.EllipticCurvePrivateKey)
        self.method = ECDSA_SHA256 if self._ec else RSA_SHA256
        self._ec_size = (key.curve.key_size + 7) // 8 if isinstance(key, ec.EllipticCurvePrivateKey) else 0
        self._certificates = tuple(certificate_text(c) for c in certificates)

    @staticmethod
    def applies(element: etree._Element) -> bool:
        """True for the plain case this class signs; anything else goes to signxml."""
        return (
            element.getparent() is None
            and not element.tail
            and element.get("Id") is None
            and element.get("ID") is None
            and element.find(f".//{_SIGNATURE}") is None
        )

    def _value(self, data: bytes) -> bytes:
        if self._ec:
            der = self.key.sign(data, ec.ECDSA(hashes.SHA256()))  # type: ignore[call-arg]
            r, s = decode_dss_signature(der)
            return r.to_bytes(self._ec_size, "big") + s.to_bytes(self._ec_size, "big")
        return self.key.sign(data, padding.PKCS1v15(), hashes.SHA256())  # type: ignore[call-arg]

    def sign_in_place(self, root: etree._Element) -> etree._Element:
        """Appends the enveloped signature to ``root`` (which ``applies`` accepted) and returns it."""
        digest = hashlib.sha256(etree.tostring(root, method="c14n", exclusive=True)).digest()
        signature = etree.SubElement(root, _SIGNATURE, nsmap=_NSMAP)
        signed_info = etree.SubElement(signature, _ds("SignedInfo"), nsmap=_NSMAP)
        etree.SubElement(signed_info, _ds("CanonicalizationMethod"), Algorithm=EXC_C14N)
        etree.SubElement(signed_info, _ds("SignatureMethod"), Algorithm=self.method)
        reference = etree.SubElement(signed_info, _ds("Reference"), URI="")
        transforms = etree.SubElement(reference, _ds("Transforms"))
        etree.SubElement(transforms, _ds("Transform"), Algorithm=ENVELOPED)
        etree.SubElement(transforms, _ds("Transform"), Algorithm=EXC_C14N)
        etree.SubElement(reference, _ds("DigestMethod"), Algorithm=SHA256)
        etree.SubElement(reference, _ds("DigestValue")).text = base64.b64encode(digest).decode("ascii")
        value = self._value(etree.tostring(signed_info, method="c14n", exclusive=True))
        etree.SubElement(signature, _ds("SignatureValue")).text = base64.b64encode(value).decode("ascii")
        data = etree.SubElement(etree.SubElement(signature, _ds("KeyInfo")), _ds("X509Data"))
        for text in self._certificates:
            etree.SubElement(data, _ds("X509Certificate")).text = text
        return root
