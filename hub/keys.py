"""Key pairs and demo certificates: ``hub keys init`` and the demo's first run.

Private keys are written with mode 0600 and never logged. The demo issues every certificate from
one demo CA so the topology looks like a real one; production certificates come from the
agencies' own CAs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .trust import PrivateKey

if TYPE_CHECKING:
    from .config import Config


def new_key(kind: str = "rsa") -> PrivateKey:
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"unknown key kind {kind!r}; use rsa or ec")


def write_private_key(path: Path, key: PrivateKey) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, pem)
    finally:
        os.close(fd)
    os.chmod(path, 0o600)


def write_certificate(path: Path, cert: x509.Certificate) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _name(common_name: str, country: str | None, organization: str | None) -> x509.Name:
    attrs = []
    if country:
        attrs.append(x509.NameAttribute(NameOID.COUNTRY_NAME, country))
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


@dataclass(frozen=True)
class Issuer:
    key: PrivateKey
    certificate: x509.Certificate


def issue(
    key: PrivateKey,
    common_name: str,
    *,
    country: str | None = None,
    organization: str | None = None,
    issuer: Issuer | None = None,
    ca: bool = False,
    days: int = 365,
    not_before: datetime | None = None,
) -> x509.Certificate:
    """A certificate for ``key``: self-signed without ``issuer``, else signed by it."""
    start = not_before or datetime.now(timezone.utc) - timedelta(minutes=5)
    subject = _name(common_name, country, organization)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca, content_commitment=not ca, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=ca, crl_sign=ca, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    return builder.sign(issuer.key if issuer else key, hashes.SHA256())


def create_pair(
    key_path: Path,
    cert_path: Path,
    common_name: str,
    *,
    kind: str = "rsa",
    country: str | None = None,
    organization: str | None = None,
    issuer: Issuer | None = None,
    days: int = 365,
    overwrite: bool = False,
) -> bool:
    """Generates a key and certificate unless both exist; returns True when it wrote them."""
    if key_path.exists() and cert_path.exists() and not overwrite:
        return False
    key = new_key(kind)
    cert = issue(key, common_name, country=country, organization=organization, issuer=issuer, days=days)
    write_private_key(key_path, key)
    write_certificate(cert_path, cert)
    return True


def init_keys(config: "Config", kind: str = "rsa", days: int = 365) -> list[str]:
    """Generates the hub's key pair and the demo agencies' pairs that do not exist yet."""
    written = []
    h = config.hub
    if create_pair(h.key, h.certificate, h.name or h.party_id, kind=kind, country=h.country, organization=h.party_id, days=days):
        written.append(f"wrote {h.key} (0600) and {h.certificate}")
    for agency in config.agencies.values():
        if agency.signing_key is not None and agency.certificates:
            if create_pair(agency.signing_key, agency.certificates[0], agency.name or agency.id, kind=kind,
                           country=agency.country, organization=agency.id, days=days):
                written.append(f"wrote {agency.signing_key} (0600) and {agency.certificates[0]} (demo key of {agency.id})")
    return written
