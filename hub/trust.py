"""Signing and verification of envelopes (enveloped XML-DSig through signxml), and key loading.

Keys and certificates are loaded once, at start-up; nothing here reads a file per message.
``Verifier.verify`` returns only what the signature covers, and the pipeline goes on with that
element alone, so content moved next to a signed envelope (signature wrapping) is never used.
Which certificate may sign is a ``CertificatePolicy``: ``Pinned`` (a fixed list) here, or an
agency's entry in ``hub.truststore`` (pins, CA chains, CRLs, cached per certificate).

signxml keeps per-call state on its signer and verifier objects (the verifier stores the
certificate it checks with), so ``Signer`` and ``Verifier`` hold one per thread.

Every signature is made and checked by signxml. The hub only changes how signxml *copies* a
document (``RootCopies``): signxml copies by serialising and re-parsing, which at 10 KiB was most
of its cost; for a document's root element an lxml deep copy gives the same tree.
"""

from __future__ import annotations

import base64
import binascii
import copy
import functools
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol, Sequence

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from lxml import etree
from signxml import SignatureConfiguration, XMLSigner, XMLVerifier, methods
from signxml.algorithms import CanonicalizationMethod, DigestAlgorithm, SignatureMethod
from signxml.exceptions import InvalidCertificate, InvalidDigest, InvalidInput, InvalidSignature
from signxml.exceptions import SignXMLException
from signxml.util import namespaces as SIGNXML_NAMESPACES

from .errors import Code, ConfigError, Rejected
from .xml import fault_node, hardened_parser

DSIG = "http://www.w3.org/2000/09/xmldsig#"
EXC_C14N = CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0
_SIGNATURE_TAG = f"{{{DSIG}}}Signature"

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
        data = path.read_bytes()
        loaded = serialization.load_pem_private_key(data, password=None)
    except FileNotFoundError:
        hint = "" if key.startswith("--") else " (run `hub keys init`)"  # a file named on the command line is the user's own
        raise ConfigError(str(path), key, f"the private key file does not exist{hint}") from None
    except OSError as exc:  # permissions, a directory: the hub's user must be able to read it
        raise ConfigError(str(path), key, f"cannot read the private key file: {exc.strerror or exc}") from None
    except (ValueError, TypeError) as exc:
        why = _not_pem(data, path, "pkey", b"PRIVATE KEY") or f"not a readable PEM private key: {exc}"
        raise ConfigError(str(path), key, why) from None
    if not isinstance(loaded, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise ConfigError(str(path), key, "only RSA and EC private keys are supported")
    return loaded


def load_certificates(path: Path, key: str = "certificate") -> list[x509.Certificate]:
    try:
        data = path.read_bytes()
        certs = x509.load_pem_x509_certificates(data)
    except FileNotFoundError:
        raise ConfigError(str(path), key, "the certificate file does not exist") from None
    except OSError as exc:
        raise ConfigError(str(path), key, f"cannot read the certificate file: {exc.strerror or exc}") from None
    except ValueError as exc:
        why = _not_pem(data, path, "x509", b"CERTIFICATE") or f"not a readable PEM certificate: {exc}"
        raise ConfigError(str(path), key, why) from None
    return certs


def _not_pem(data: bytes, path: Path, tool: str, label: bytes) -> str | None:
    """Why a key or certificate file the PEM reader refused is not what it should be, in words an
    operator can act on, when the reason is one of the usual ones; else None."""
    if not data.strip():
        return "the file is empty"
    if data[:1] == b"\x30":  # an ASN.1 SEQUENCE: DER, the binary form of the same thing
        return f"the file holds DER (binary), not PEM: convert it with `openssl {tool} -inform der -in {path} -out {path}.pem`"
    begin = data.find(b"-----BEGIN ")
    if begin >= 0 and label not in data[begin:begin + 40]:
        found = data[begin + 11:data.find(b"-----", begin + 11)].decode("ascii", "replace")
        wanted = "a private key" if label == b"PRIVATE KEY" else "a certificate"
        return f"the file holds a PEM {found}, not {wanted}"
    return None


def in_date(cert: x509.Certificate, now: datetime | None = None) -> bool:
    now = now or datetime.now(timezone.utc)
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def subject_of(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string()


def weak_key(cert: x509.Certificate) -> str | None:
    """Why the certificate's key is too weak to sign with, or None."""
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return None if key.key_size >= 2048 else f"its RSA key has {key.key_size} bits; at least 2048 are required"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return None if key.curve.name in _STRONG_CURVES else f"its EC key is on the curve {key.curve.name}; use P-256, P-384 or P-521"
    return f"its {type(key).__name__} key is not accepted for signing; use RSA or ECDSA"


_STRONG_CURVES = frozenset({"secp256r1", "secp384r1", "secp521r1"})


def may_sign(cert: x509.Certificate) -> bool:
    """True unless a KeyUsage extension leaves out both digitalSignature and nonRepudiation."""
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return bool(usage.digital_signature or usage.content_commitment)


def same_key(key: PrivateKey, cert: x509.Certificate) -> bool:
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return key.public_key().public_bytes(*spki) == cert.public_key().public_bytes(*spki)


@functools.lru_cache(maxsize=256)
def _clark_path(query: str, xpath: str) -> str | None:
    """The ElementPath signxml's ``_find`` builds from ``query`` (``prefix:Name``, the prefix "ds"
    when there is none) under ``xpath``, with the namespace in Clark notation; None when it cannot
    be written so (a prefix in ``xpath``, an unknown prefix): signxml then looks it up itself."""
    namespace = "ds"
    if ":" in query:
        namespace, _, query = query.partition(":")
    uri = SIGNXML_NAMESPACES.get(namespace)
    if uri is None or ":" in xpath or ":" in query:  # more prefixes than the first: signxml's own way
        return None
    return f"{xpath}{{{uri}}}{query}"


class _Root:
    """A document root on its way from ``RootCopies._tostring`` to ``RootCopies._fromstring``."""

    __slots__ = ("element",)

    def __init__(self, element: etree._Element) -> None:
        self.element = element


class RootCopies:
    """Mixin for signxml's processors: copies of a document's root element by ``copy.deepcopy``.

    signxml copies a node as ``self._fromstring(self._tostring(node))`` (serialise, then re-parse),
    because a deep copy of an element *inside* a document can lose namespace declarations of its
    ancestors. A root element (no parent, no tail) has no ancestors: its deep copy (libxml2's node
    copy into a new document) is the same tree, at a fraction of the cost (at 10 KiB the serialise-and-parse copies
    were ~40 % of a signature and of a verification). Anything else - a non-root element, a
    call with keyword arguments - goes the way signxml goes. The input has been through the hub's
    hardened parser, so the re-parse's DTD and entity checks have nothing left to find.

    It relies on ``_tostring``'s result going straight into ``_fromstring`` in signxml; the
    supported signxml versions are pinned in pyproject.toml and tests/test_trust_signxml.py checks
    that assumption against the installed signxml.
    """

    def _tostring(self, xml_node, **kwargs):  # type: ignore[no-untyped-def]
        if not kwargs and isinstance(xml_node, etree._Element) and xml_node.getparent() is None and xml_node.tail is None:
            return _Root(xml_node)
        return super()._tostring(xml_node, **kwargs)

    def _fromstring(self, xml_string, **kwargs):  # type: ignore[no-untyped-def]
        if isinstance(xml_string, _Root):
            return self._copy_root(xml_string.element)
        return super()._fromstring(xml_string, **kwargs)

    def _copy_root(self, element: etree._Element) -> etree._Element:
        return copy.deepcopy(element)

    # signxml finds each ds: element with a prefixed path and its namespace map, which lxml
    # compiles again on every call (its path cache keys on the sorted map): ~9 lookups a
    # verification. The same path in Clark notation is compiled once. Same elements, same errors.

    def _find(self, element, query, require=True, xpath=""):  # type: ignore[no-untyped-def]
        path = _clark_path(query, xpath)
        result = None if path is None else element.find(path)
        if path is None or (result is None and require):  # signxml's own way, or its own error
            return super()._find(element, query, require=require, xpath=xpath)
        return result

    def _findall(self, element, query, xpath=""):  # type: ignore[no-untyped-def]
        path = _clark_path(query, xpath)
        return super()._findall(element, query, xpath=xpath) if path is None else element.findall(path)

    def _remembered(self, table: str, key, make):  # type: ignore[no-untyped-def]
        """``make()``, made once per ``key`` and kept on this signxml object (at most 64 a table)."""
        kept = self.__dict__.setdefault(table, {})
        found = kept.get(key)
        if found is None:
            if len(kept) >= 64:
                kept.clear()
            found = kept[key] = make()
        return found


class RootCopyingSigner(RootCopies, XMLSigner):
    """signxml's signer with ``RootCopies`` (the hub's envelopes and AS4's WS-Security).

    An enveloped signature of a whole document takes two copies of it in signxml (``_unpack``):
    the first receives the Signature element, the second is only canonicalised for the digest.
    When the caller's element is a document root with nothing beside it and no ``ds:Signature``
    inside (no placeholder for signxml to remove), the second copy would be the caller's tree
    itself, unchanged: signxml canonicalises the caller's tree instead (tests hold the caller's
    tree untouched and the signatures equal to stock signxml's).

    signxml also builds a Signature element by element, naming each ``ds:`` tag through
    ``_ds_tag`` (about 14 QNames a signature); the names depend only on the signer's namespace
    settings, so each is made once per signer and reused.
    """

    def _unpack(self, data, references):  # type: ignore[no-untyped-def]
        only_read = (
            self.construction_method == methods.enveloped
            and isinstance(data, etree._Element)
            and data.getparent() is None
            and data.tail is None
            and data.getprevious() is None
            and data.getnext() is None
            and next(data.iter(_SIGNATURE_TAG), None) is None
        )
        self._roots = [data, 0] if only_read else None
        try:
            return super()._unpack(data, references)
        finally:
            self._roots = None

    def get_root(self, data):  # type: ignore[no-untyped-def]
        roots = getattr(self, "_roots", None)
        if roots is not None and data is roots[0]:
            roots[1] += 1
            if roots[1] == 2:  # the digest's input: canonicalised, never changed
                return data
        return super().get_root(data)

    def _ds_tag(self, tag):  # type: ignore[no-untyped-def]
        key = (tag, self.namespaces.get(None))
        return self._remembered("_ds_tags", key, lambda: super(RootCopyingSigner, self)._ds_tag(tag))


class RootCopyingVerifier(RootCopies, XMLVerifier):
    """signxml's verifier with ``RootCopies``; it also copies no more than once per verification.

    ``verify`` reads the caller's tree and copies it before changing anything
    (``_verify_reference``: the copy loses its Signature element, the enveloped transform); then
    ``_apply_transforms`` copies that copy again before canonicalising it. The second copy guards
    against a tree someone else still uses, and nobody else holds signxml's own copy, which is
    only read (canonicalised) and then dropped: it is canonicalised as it is.
    """

    def verify(self, data, **kwargs):  # type: ignore[no-untyped-def]
        self._own = None
        try:
            return super().verify(data, **kwargs)
        finally:
            self._own = None

    def get_root(self, data):  # type: ignore[no-untyped-def]
        # the caller's document root is used as it is: verify() only reads it (see above)
        if isinstance(data, etree._Element) and data.getparent() is None:
            return data
        return super().get_root(data)

    def _copy_root(self, element: etree._Element) -> etree._Element:
        if element is getattr(self, "_own", None):
            return element
        self._own = copy.deepcopy(element)
        return self._own

    def _get_cert_description(self, cert, cert_source):  # type: ignore[no-untyped-def]
        # signxml writes the certificate's subject (RFC 4514) on every verification, for an error
        # message it seldom needs; a certificate's description does not change
        make = lambda: super(RootCopyingVerifier, self)._get_cert_description(cert, cert_source)  # noqa: E731
        return self._remembered("_descriptions", (cert, cert_source), make)


class Signer:
    """Signs envelopes with one key: enveloped, exclusive c14n, SHA-256, certificate in KeyInfo.

    ``chain`` (intermediate CA certificates) goes into KeyInfo after the signing certificate;
    ``next_certificate`` is the successor published ahead of a key rotation, never used to sign.
    """

    def __init__(
        self,
        key: PrivateKey,
        certificate: x509.Certificate,
        chain: Sequence[x509.Certificate] = (),
        next_certificate: x509.Certificate | None = None,
    ) -> None:
        if not same_key(key, certificate):
            raise ValueError(f"the private key does not belong to the certificate {subject_of(certificate)}")
        self.key, self.certificate, self.next_certificate = key, certificate, next_certificate
        method = SignatureMethod.ECDSA_SHA256 if isinstance(key, ec.EllipticCurvePrivateKey) else SignatureMethod.RSA_SHA256
        self._method = method
        self._local = threading.local()  # signxml keeps per-call state and a parser on the instance
        self._certs = [certificate, *chain]

    @property
    def current(self) -> Signer:
        """Itself: a ``Signer`` is always its own current key (``hub.keys.CurrentSigner``, which a
        reload swaps, answers with the key of the moment); callers that sign several times for one
        message take ``current`` once."""
        return self

    @property
    def published(self) -> tuple[x509.Certificate, ...]:
        """The certificates partners should trust now: the current one, then the next one if any."""
        return (self.certificate,) + ((self.next_certificate,) if self.next_certificate is not None else ())

    @classmethod
    def from_files(
        cls, key_path: Path, cert_path: Path, key: str = "key", cert: str = "certificate", next_certificate: x509.Certificate | None = None
    ) -> Signer:
        """Key from ``key_path``; the first certificate of ``cert_path`` signs, the rest are its chain."""
        certs = load_certificates(cert_path, cert)
        if not certs:
            raise ConfigError(str(cert_path), cert, "the file holds no certificate")
        try:
            return cls(load_private_key(key_path, key), certs[0], certs[1:], next_certificate)
        except ValueError as exc:
            raise ConfigError(str(key_path), key, str(exc)) from None

    def sign(self, element: etree._Element) -> etree._Element:
        """A signed copy of ``element`` (signxml: enveloped, exclusive c14n, SHA-256, certificates
        in KeyInfo); ``element`` itself is left as it was."""
        signer = getattr(self._local, "signer", None)
        if signer is None:
            signer = self._local.signer = RootCopyingSigner(
                method=methods.enveloped,
                signature_algorithm=self._method,
                digest_algorithm=DigestAlgorithm.SHA256,
                c14n_algorithm=EXC_C14N,
            )
        return signer.sign(element, key=self.key, cert=self._certs)



@dataclass(frozen=True)
class Verified:
    """What a signature covers, and who made it."""

    element: etree._Element
    certificate: x509.Certificate

    @property
    def subject(self) -> str:
        return subject_of(self.certificate)


class CertificatePolicy(Protocol):
    """Decides which certificate signed, from the DER certificates found in KeyInfo/X509Data.

    Returns the signer's certificate when the policy trusts it for ``who``, else raises
    ``Rejected`` with the cause (unknown signer, another agency's certificate, expired, revoked,
    untrusted chain, CRL unavailable). ``hub.truststore`` implements it per agency, with a cache.
    """

    def signer(self, embedded: Sequence[bytes], who: str) -> x509.Certificate: ...


class Pinned:
    """The simplest policy: exactly these certificates, checked for dates, key strength and usage."""

    def __init__(self, certificates: Sequence[x509.Certificate]) -> None:
        self.certificates = tuple(certificates)
        self._der = {c.public_bytes(serialization.Encoding.DER): c for c in self.certificates}

    def signer(self, embedded: Sequence[bytes], who: str) -> x509.Certificate:
        if not self.certificates:
            raise Rejected(Code.UNKNOWN_SIGNER, f"no certificate is configured for {who}")
        if not embedded:
            if len(self.certificates) > 1:
                raise Rejected(Code.UNKNOWN_SIGNER, f"{who} has several certificates; the signature must carry its certificate in KeyInfo")
            cert = self.certificates[0]
        else:
            found = next((self._der[d] for d in embedded if d in self._der), None)
            if found is None:
                raise Rejected(Code.UNKNOWN_SIGNER, f"signed by {describe(embedded[0])}, which is not a certificate configured for {who}")
            cert = found
        check_signing_certificate(cert, who)
        return cert


def check_signing_certificate(cert: x509.Certificate, who: str, now: datetime | None = None) -> None:
    """Dates, key strength and key usage of a certificate that is about to be trusted."""
    if not in_date(cert, now):
        raise Rejected(
            Code.CERTIFICATE_EXPIRED,
            f"the certificate of {who} ({subject_of(cert)}) is valid only from "
            f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} to {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC",
        )
    weak = weak_key(cert)
    if weak:
        raise Rejected(Code.WEAK_ALGORITHM, f"the certificate of {who} ({subject_of(cert)}) is refused: {weak}")
    if not may_sign(cert):
        raise Rejected(
            Code.UNTRUSTED_CHAIN,
            f"the certificate of {who} ({subject_of(cert)}) may not sign documents: its key usage has neither "
            "digitalSignature nor nonRepudiation",
        )


def describe(der: bytes) -> str:
    try:
        return subject_of(read_certificate(der))
    except ValueError:
        return "an unreadable certificate"


# What cryptography raises for bytes that are not a certificate it can read: ValueError mostly, but
# also its own exceptions (a bad version at load; a repeated extension, an unknown name or key type
# when a part is first read, since names, extensions and the key are parsed lazily)
_UNREADABLE = (ValueError, TypeError, x509.InvalidVersion, x509.DuplicateExtension, x509.UnsupportedGeneralNameType, UnsupportedAlgorithm)


def read_certificate(der: bytes) -> x509.Certificate:
    """A certificate a message carries (KeyInfo), with every part the hub reads parsed now.

    Anyone can put any bytes there: a part parsed lazily by cryptography would otherwise fail
    later, wherever the hub first reads it, with an exception nobody expects (an ERR99 for what
    is the sender's fault). Raises ``ValueError`` with the reason."""
    try:
        cert = x509.load_der_x509_certificate(der)
        subject_of(cert), cert.issuer.rfc4514_string(), cert.extensions, cert.public_key()
        cert.not_valid_before_utc, cert.not_valid_after_utc
    except _UNREADABLE as exc:
        raise ValueError(f"{type(exc).__name__}: {exc}") from None
    return cert


_C14N_URIS = frozenset(m.value for m in CanonicalizationMethod)
_TRANSFORM_URIS = _C14N_URIS | {"http://www.w3.org/2000/09/xmldsig#enveloped-signature"}


# what signxml is told to expect of an envelope's signature (the shape checks are ``Verifier``'s)
ENVELOPE_SIGNATURES = SignatureConfiguration(
    location="./",  # the root's own signature; one inside the document (a Form D's issuer's) is content
    require_x509=True,
    expect_references=1,
    signature_methods=ALLOWED_SIGNATURE_METHODS,
    digest_algorithms=ALLOWED_DIGESTS,
    ignore_ambiguous_key_info=True,
)


class Verifier:
    """Verifies the enveloped signature of a whole document, then returns only what it covers.

    Checks run cheapest first and each failure has its own code: shape (one signature, last child
    of the root, one reference to the whole document, no empty value) -> algorithms -> the signer's
    certificate (``CertificatePolicy``, cached per certificate) -> the signature value -> the
    digest. A signature that is not well-formed XML-DSig (signxml's schema) is ERR22 as well.
    """

    def __init__(self) -> None:
        # one signxml verifier per thread: ``XMLVerifier.verify`` stores the certificate it checks
        # with on the instance, so a shared one would let two threads swap certificates
        self._local = threading.local()
        self._config = ENVELOPE_SIGNATURES

    def verify(self, root: etree._Element, trusted: Sequence[x509.Certificate] | CertificatePolicy, who: str) -> Verified:
        signature = self._signature(root, who)
        unfit = unfit_signed_info(signature)
        if unfit is not None:
            raise Rejected(Code.SIGNATURE_INVALID, f"the signature is refused before any cryptography: {unfit}", f"line {signature.sourceline}")
        empty = empty_value(signature)
        if empty is not None:
            raise Rejected(Code.SIGNATURE_INVALID, f"the signature is not well-formed: {empty[0]}", f"line {empty[1]}")
        self._check_algorithms(signature)
        # a policy, or certificates (asked by duck typing: isinstance on a Protocol is slow)
        policy = trusted if hasattr(trusted, "signer") else Pinned(trusted)
        cert = policy.signer(_embedded(signature), who)
        try:
            verifier = getattr(self._local, "verifier", None)
            if verifier is None:
                verifier = self._local.verifier = RootCopyingVerifier()
                self._local.parser = hardened_parser()
            # signxml parses the signed content back from its canonical form: with the hub's parser,
            # not signxml's default one, which refuses an xml:id that is not a name (or used twice),
            # so a document the hub parsed would come back as nothing signed (ERR26)
            result = verifier.verify(root, x509_cert=cert, expect_config=self._config, parser=self._local.parser)
        except InvalidDigest:
            raise Rejected(Code.SIGNATURE_INVALID, "the signed content was changed after signing (digest mismatch)") from None
        except InvalidSignature:
            raise Rejected(
                Code.SIGNATURE_VALUE_INVALID,
                f"the signature value does not verify with the key of {subject_of(cert)}: the signature or what it signs was altered",
            ) from None
        except InvalidCertificate as exc:
            raise Rejected(Code.CERTIFICATE_EXPIRED, f"the certificate of {who} is not valid now: {exc}") from None
        except etree.DocumentInvalid as exc:
            what, line = schema_fault(signature, exc)
            raise Rejected(Code.SIGNATURE_INVALID, f"the signature is not well-formed: {what}", f"line {line}") from None
        except (InvalidInput, SignXMLException, ValueError, etree.C14NError) as exc:
            raise Rejected(Code.SIGNATURE_INVALID, f"the signature cannot be processed: {exc}") from None
        signed = result.signed_xml
        if signed is None or signed.tag != root.tag:
            raise Rejected(Code.SIGNATURE_WRAPPING, "the signature does not cover the whole envelope; only a signed envelope is accepted")
        return Verified(signed, cert)

    @staticmethod
    def _signature(root: etree._Element, who: str) -> etree._Element:
        # The envelope's signature is the root's child. A signature deeper down is part of what it
        # signs (the issuing member's signature of a Form D, which formd.xsd makes room for): signxml
        # is told to look at the root's children only (``ENVELOPE_SIGNATURES``), and the hub goes on
        # with the signed copy of the whole envelope, so a signature inside cannot stand in for it.
        signatures = root.findall(f"{{{DSIG}}}Signature")
        if not signatures:
            inner = next(root.iter(f"{{{DSIG}}}Signature"), None)
            if inner is None:
                raise Rejected(Code.SIGNATURE_MISSING, f"{who} must sign its messages; the message carries no signature")
            raise Rejected(
                Code.SIGNATURE_WRAPPING,
                "the message's signature belongs as a child of the root element, and there is none there: the one at "
                f"line {inner.sourceline} is inside what the message carries and signs nothing of the message itself",
                f"line {inner.sourceline}",
            )
        if len(signatures) > 1:
            raise Rejected(
                Code.SIGNATURE_WRAPPING,
                "exactly one signature is allowed as a child of the root element",
                f"line {signatures[-1].sourceline}",
            )
        signature = signatures[0]
        references = signature.findall(f"{{{DSIG}}}SignedInfo/{{{DSIG}}}Reference")
        if len(references) != 1 or references[0].get("URI") != "":
            raise Rejected(
                Code.SIGNATURE_WRAPPING,
                'the signature must have exactly one reference, to the whole document (URI="")',
                f"line {signature.sourceline}",
            )
        return signature

    @staticmethod
    def _check_algorithms(signature: etree._Element) -> None:
        for alg in signature.iter(f"{{{DSIG}}}SignatureMethod", f"{{{DSIG}}}DigestMethod"):
            if alg.get("Algorithm") not in _ALLOWED_URIS:
                raise Rejected(
                    Code.WEAK_ALGORITHM,
                    f"the algorithm {alg.get('Algorithm')} is refused; use RSA or ECDSA with SHA-256 or stronger",
                    f"line {alg.sourceline}",
                )
        for alg in signature.iter(f"{{{DSIG}}}CanonicalizationMethod", f"{{{DSIG}}}Transform"):
            allowed = _C14N_URIS if etree.QName(alg).localname == "CanonicalizationMethod" else _TRANSFORM_URIS
            if alg.get("Algorithm") not in allowed:
                raise Rejected(
                    Code.WEAK_ALGORITHM,
                    f"the transform {alg.get('Algorithm')} is refused; only enveloped-signature and canonicalisation are allowed",
                    f"line {alg.sourceline}",
                )


SIGNED_INFO_LIMIT = 64  # elements and attributes; a SignedInfo of one or two references has fewer than 25


def unfit_signed_info(signature: etree._Element) -> str | None:
    """Why the signature's SignedInfo must not be canonicalised, or None.

    signxml canonicalises SignedInfo before it checks the signature value, that is for anyone who
    sends a message. Exclusive c14n repeats a namespace declaration on every element and for every
    attribute that uses it: a SignedInfo stuffed with prefixed elements or attributes bound to
    long namespace URIs turned 600 KB into 244 MB. Only XML-DSig elements (and exclusive c14n's
    InclusiveNamespaces), unqualified attributes and at most ``SIGNED_INFO_LIMIT`` of both are
    let through, which bounds the canonical form by the size of what was sent.
    """
    signed_info = signature.find(f"{{{DSIG}}}SignedInfo")
    if signed_info is None:
        return None  # signxml says what is missing
    allowed = (f"{{{DSIG}}}", f"{{{EXC_C14N.value}}}")
    count = 0
    for element in signed_info.iter():
        count += 1 + len(element.attrib)
        if count > SIGNED_INFO_LIMIT:
            return f"SignedInfo holds more than {SIGNED_INFO_LIMIT} elements and attributes"
        if isinstance(element.tag, str) and not element.tag.startswith(allowed):
            namespace = etree.QName(element).namespace or ""
            shown = namespace if len(namespace) <= 60 else namespace[:57] + "..."
            return f"line {element.sourceline}: SignedInfo holds {{{shown}}}{etree.QName(element).localname}, which is not an XML-DSig element"
        if any(name.startswith("{") for name in element.attrib):
            return f"line {element.sourceline}: SignedInfo's elements carry no namespaced attributes"
    return None


# the base64 values signxml decodes with ``b64decode(element.text)``, never asking whether there is text
_DECODED_VALUES = (f"{{{DSIG}}}SignatureValue", f"{{{DSIG}}}SignedInfo/{{{DSIG}}}Reference/{{{DSIG}}}DigestValue")


def empty_value(signature: etree._Element) -> tuple[str, int | None] | None:
    """An empty SignatureValue or DigestValue, or one holding markup, as (what, line); else None.

    signxml's schema accepts an empty base64 value, then decodes ``None``: a TypeError, which
    would be answered as the hub's own fault (ERR99). Asked before signxml, not caught from it,
    so that a TypeError that is a bug in the hub still surfaces as one."""
    for path in _DECODED_VALUES:
        for element in signature.iterfind(path):
            if len(element):
                return f"ds:{etree.QName(element).localname} holds markup; it must hold only base64 text", element.sourceline
            if not (element.text or "").strip():
                return f"ds:{etree.QName(element).localname} is empty", element.sourceline
    return None


def schema_fault(signature: etree._Element, exc: etree.DocumentInvalid) -> tuple[str, int | None]:
    """signxml's XML-DSig schema complaint (a missing or empty element) as (what, line).

    signxml validates a copy of the signature, whose lines start at 1: the line is that of the
    element its path names in ``signature``, else of the signature itself."""
    entry = exc.error_log[0] if len(exc.error_log) else None
    what = (entry.message if entry is not None else str(exc)).replace(f"{{{DSIG}}}", "ds:")
    found = fault_node(signature, entry.path) if entry is not None else None
    return what, (found[0] if found else signature).sourceline


def _embedded(signature: etree._Element) -> list[bytes]:
    """The DER certificates in KeyInfo/X509Data, in document order."""
    out = []
    for text in signature.iterfind(f"{{{DSIG}}}KeyInfo/{{{DSIG}}}X509Data/{{{DSIG}}}X509Certificate"):
        try:
            out.append(base64.b64decode("".join((text.text or "").split()), validate=True))
        except (ValueError, binascii.Error):
            raise Rejected(Code.SIGNATURE_INVALID, "a certificate in KeyInfo is not base64", f"line {text.sourceline}") from None
    return out
