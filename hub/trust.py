"""Signing and verification of envelopes (enveloped XML-DSig through signxml), and key loading.

Keys and certificates are loaded once, at start-up; nothing here reads a file per message.
``Verifier.verify`` returns only what the signature covers, and the pipeline goes on with that
element alone, so content moved next to a signed envelope (signature wrapping) is never used.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from lxml import etree
from signxml import SignatureConfiguration, XMLSigner, XMLVerifier, methods
from signxml.algorithms import CanonicalizationMethod, DigestAlgorithm, SignatureMethod
from signxml.exceptions import InvalidCertificate, InvalidDigest, InvalidInput, InvalidSignature

from .errors import Code, ConfigError, Rejected

DSIG = "http://www.w3.org/2000/09/xmldsig#"
EXC_C14N = CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0

ALLOWED_SIGNATURE_METHODS = frozenset(
    {
        SignatureMethod.RSA_SHA256,
        SignatureMethod.RSA_SHA384,
        SignatureMethod.RSA_SHA512,
        SignatureMethod.ECDSA_SHA256,
        SignatureMethod.ECDSA_SHA384,
        SignatureMethod.ECDSA_SHA512,
    }
)
ALLOWED_DIGESTS = frozenset({DigestAlgorithm.SHA256, DigestAlgorithm.SHA384, DigestAlgorithm.SHA512})
_ALLOWED_URIS = {m.value for m in ALLOWED_SIGNATURE_METHODS} | {d.value for d in ALLOWED_DIGESTS}

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def load_private_key(path: Path, key: str = "key") -> PrivateKey:
    try:
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise ConfigError(str(path), key, "the private key file does not exist (run `hub keys init`)") from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(path), key, f"not a readable PEM private key: {exc}") from None
    if not isinstance(loaded, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise ConfigError(str(path), key, "only RSA and EC private keys are supported")
    return loaded


def load_certificates(path: Path, key: str = "certificate") -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(path.read_bytes())
    except FileNotFoundError:
        raise ConfigError(str(path), key, "the certificate file does not exist") from None
    except ValueError as exc:
        raise ConfigError(str(path), key, f"not a readable PEM certificate: {exc}") from None
    return certs


def in_date(cert: x509.Certificate, now: datetime | None = None) -> bool:
    now = now or datetime.now(timezone.utc)
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def subject_of(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string()


class Signer:
    """Signs envelopes with one key: enveloped, exclusive c14n, SHA-256, certificate in KeyInfo."""

    def __init__(self, key: PrivateKey, certificate: x509.Certificate) -> None:
        self.key, self.certificate = key, certificate
        method = SignatureMethod.ECDSA_SHA256 if isinstance(key, ec.EllipticCurvePrivateKey) else SignatureMethod.RSA_SHA256
        self._signer = XMLSigner(
            method=methods.enveloped,
            signature_algorithm=method,
            digest_algorithm=DigestAlgorithm.SHA256,
            c14n_algorithm=EXC_C14N,
        )
        self._certs = [certificate]

    @classmethod
    def from_files(cls, key_path: Path, cert_path: Path) -> Signer:
        return cls(load_private_key(key_path), load_certificates(cert_path)[0])

    def sign(self, element: etree._Element) -> etree._Element:
        return self._signer.sign(element, key=self.key, cert=self._certs)


@dataclass(frozen=True)
class Verified:
    """What a signature covers, and who made it."""

    element: etree._Element
    certificate: x509.Certificate

    @property
    def subject(self) -> str:
        return subject_of(self.certificate)


class Verifier:
    """Verifies an enveloped signature against a given set of acceptable certificates."""

    def __init__(self) -> None:
        self._verifier = XMLVerifier()
        self._config = SignatureConfiguration(
            require_x509=True,
            expect_references=1,
            signature_methods=ALLOWED_SIGNATURE_METHODS,
            digest_algorithms=ALLOWED_DIGESTS,
            ignore_ambiguous_key_info=True,
        )

    def verify(self, root: etree._Element, trusted: Sequence[x509.Certificate], who: str) -> Verified:
        signatures = root.findall(f".//{{{DSIG}}}Signature")
        if not signatures:
            raise Rejected(Code.SIGNATURE_MISSING, f"{who} must sign its messages; the message carries no signature")
        if len(signatures) > 1 or signatures[0].getparent() is not root:
            raise Rejected(
                Code.SIGNATURE_WRAPPING,
                "exactly one signature is allowed, as the last child of the root element",
                f"line {signatures[-1].sourceline}",
            )
        signature = signatures[0]
        for alg in signature.iter(f"{{{DSIG}}}SignatureMethod", f"{{{DSIG}}}DigestMethod"):
            if alg.get("Algorithm") not in _ALLOWED_URIS:
                raise Rejected(
                    Code.WEAK_ALGORITHM,
                    f"the algorithm {alg.get('Algorithm')} is refused; use RSA or ECDSA with SHA-256 or stronger",
                    f"line {alg.sourceline}",
                )
        cert = self._pick_certificate(signature, trusted, who)
        if not in_date(cert):
            raise Rejected(
                Code.CERTIFICATE_EXPIRED,
                f"the certificate of {who} ({subject_of(cert)}) is valid only from "
                f"{cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d}",
            )
        try:
            result = self._verifier.verify(root, x509_cert=cert, expect_config=self._config)
        except InvalidDigest:
            raise Rejected(Code.SIGNATURE_INVALID, "the signed content was changed after signing (digest mismatch)") from None
        except InvalidSignature as exc:
            raise Rejected(Code.SIGNATURE_INVALID, f"the signature value does not verify: {exc}") from None
        except (InvalidInput, InvalidCertificate) as exc:
            raise Rejected(Code.SIGNATURE_INVALID, f"the signature cannot be processed: {exc}") from None
        signed = result.signed_xml  # type: ignore[union-attr]
        if signed is None or signed.tag != root.tag:
            raise Rejected(
                Code.SIGNATURE_WRAPPING,
                "the signature does not cover the whole envelope; only a signed envelope is accepted",
            )
        return Verified(signed, cert)

    @staticmethod
    def _pick_certificate(signature: etree._Element, trusted: Sequence[x509.Certificate], who: str) -> x509.Certificate:
        if not trusted:
            raise Rejected(Code.WRONG_SIGNER, f"no certificate is configured for {who}")
        embedded = signature.findtext(f"{{{DSIG}}}KeyInfo/{{{DSIG}}}X509Data/{{{DSIG}}}X509Certificate")
        if embedded is None:
            return trusted[0] if len(trusted) == 1 else _no_keyinfo(who)
        try:
            der = base64.b64decode("".join(embedded.split()))
        except ValueError:
            raise Rejected(Code.SIGNATURE_INVALID, "the certificate in KeyInfo is not base64") from None
        for cert in trusted:
            if cert.public_bytes(serialization.Encoding.DER) == der:
                return cert
        try:
            other = subject_of(x509.load_der_x509_certificate(der))
        except ValueError:
            other = "an unreadable certificate"
        raise Rejected(Code.WRONG_SIGNER, f"signed by {other}, which is not a certificate configured for {who}")


def _no_keyinfo(who: str) -> x509.Certificate:
    raise Rejected(Code.SIGNATURE_INVALID, f"{who} has several certificates; the signature must carry its certificate in KeyInfo")
