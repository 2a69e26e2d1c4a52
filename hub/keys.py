"""Key pairs and demo certificates: ``hub keys init`` and the demo's first run.

Private keys are written with mode 0600 and never logged. The demo issues its agencies'
certificates from demo CAs (the ``trust_anchors`` the configuration names, created with a key next
to them) and keeps their CRLs fresh, so the topology looks like a real one; production
certificates come from the agencies' own CAs. ``inventory`` and ``warn_expiring`` serve
``hub keys``, ``hub check``, the daily expiry warning and ``GET /metrics``; ``CurrentSigner`` is
the hub's key as ``hub serve`` holds it, swapped on a reload (SIGHUP).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence
from urllib.parse import unquote, urlparse

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .errors import ConfigError
from .trust import PrivateKey, load_certificates, load_private_key, same_key, subject_of

if TYPE_CHECKING:
    from .config import Config
    from .trust import Signer
    from .truststore import TrustStore

log = logging.getLogger("hub.keys")


def new_key(kind: str = "rsa") -> PrivateKey:
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"unknown key kind {kind!r}; use rsa or ec")


def _folder_of(path: Path) -> None:
    """Makes the folder ``path`` goes in; a file in the way of it is said as such (not "File exists")."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise ConfigError(str(path), "", f"cannot be written: {exc.filename or path.parent} is a file, not a folder") from exc


def write_private_key(path: Path, key: PrivateKey) -> None:
    _folder_of(path)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, pem)
    finally:
        os.close(fd)
    os.chmod(path, 0o600)


def write_certificate(path: Path, cert: x509.Certificate) -> None:
    _folder_of(path)
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
    if issuer:
        builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False)
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


def write_crl(
    path: Path,
    issuer: Issuer,
    revoked: Sequence[tuple[int, datetime]] = (),
    *,
    days: float = 30,
    this_update: datetime | None = None,
) -> x509.CertificateRevocationList:
    """A CRL from ``issuer`` listing (serial, revocation date); nextUpdate ``days`` after thisUpdate."""
    start = this_update or datetime.now(timezone.utc) - timedelta(minutes=5)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.certificate.subject)
        .last_update(start)
        .next_update(start + timedelta(days=days))
        .add_extension(x509.CRLNumber(int(start.timestamp())), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False)
    )
    for serial, when in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
        )
    crl = builder.sign(issuer.key, hashes.SHA256())
    _folder_of(path)
    path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    return crl


def _local(location: str, base: Path) -> Path | None:
    """The file behind a CRL location, when it is local (a path or a file:// URL)."""
    if "://" not in location:
        return base / location
    url = urlparse(location)
    return Path(unquote(url.path)) if url.scheme == "file" and url.netloc in ("", "localhost") else None


def _demo_ca(cert_path: Path, kind: str, written: list[str]) -> Issuer | None:
    """The demo CA at ``cert_path`` (key next to it, ``.key``), created when missing; None for a
    real CA whose key the hub does not hold."""
    key_path = cert_path.with_suffix(".key")
    if cert_path.exists():
        if not key_path.exists():
            return None
        return Issuer(load_private_key(key_path), load_certificates(cert_path)[0])
    key = new_key(kind)
    cert = issue(key, f"{cert_path.stem} demo CA", organization="sw-hub demo", ca=True, days=3650)
    write_private_key(key_path, key)
    write_certificate(cert_path, cert)
    written.append(f"wrote {key_path} (0600) and {cert_path} (demo CA, 10 years)")
    return Issuer(key, cert)


def _demo_crl(path: Path, issuer: Issuer, written: list[str], days: int = 30) -> None:
    """Writes the demo CA's CRL when missing or past half its life, keeping what it revoked."""
    revoked: list[tuple[int, datetime]] = []
    if path.exists():
        try:
            old = x509.load_pem_x509_crl(path.read_bytes())
        except ValueError:
            old = None
        if old is not None and old.next_update_utc is not None and old.issuer == issuer.certificate.subject:
            if old.next_update_utc - datetime.now(timezone.utc) > timedelta(days=days / 2):
                return
            revoked = [(r.serial_number, r.revocation_date_utc) for r in old]
    write_crl(path, issuer, revoked, days=days)
    written.append(f"wrote {path} (CRL of {subject_of(issuer.certificate)}, next update in {days} days)")


def _issued_by(cert_path: Path, issuer: Issuer) -> bool:
    try:
        load_certificates(cert_path)[0].verify_directly_issued_by(issuer.certificate)
        return True
    except (ConfigError, IndexError, ValueError, TypeError, InvalidSignature):
        return False


def init_keys(config: "Config", kind: str = "rsa", days: int = 365) -> list[str]:
    """Generates what the configuration names and does not exist yet: demo CAs (the first
    ``trust_anchors`` of a demo agency, i.e. one with a ``signing_key``), their CRLs, the demo
    agencies' key pairs issued by those CAs (self-signed without anchors), and the hub's current
    and next key pairs, issued by the first demo CA when there is one."""
    written: list[str] = []
    cas: dict[Path, Issuer | None] = {}
    for agency in config.agencies.values():
        if agency.signing_key is None or not agency.certificates:
            continue
        issuer = None
        if agency.trust_anchors:
            anchor = agency.trust_anchors[0]
            if anchor not in cas:
                cas[anchor] = _demo_ca(anchor, kind, written)
            issuer = cas[anchor]
            if issuer is None:
                written.append(f"skipped {agency.id}: its CA {anchor} is not a demo CA (no key next to it)")
                continue
            for location in agency.crl:
                local = _local(location, config.base)
                if local is not None:
                    _demo_crl(local, issuer, written)
        stale = issuer is not None and agency.certificates[0].exists() and not _issued_by(agency.certificates[0], issuer)
        if create_pair(agency.signing_key, agency.certificates[0], agency.name or agency.id, kind=kind,
                       country=agency.country, organization=agency.id, issuer=issuer, days=days, overwrite=stale):
            written.append(f"wrote {agency.signing_key} (0600) and {agency.certificates[0]} (demo key of {agency.id}"
                           + (f", issued by {subject_of(issuer.certificate)})" if issuer else ", self-signed)"))
    h = config.hub
    hub_issuer = next((i for i in cas.values() if i is not None), None)
    pairs = [(h.key, h.certificate, "")] + ([(h.next_key, h.next_certificate, " (the hub's next key, published ahead of rotation")]
                                            if h.next_key is not None and h.next_certificate is not None else [])
    for key_path, cert_path, note in pairs:
        if create_pair(key_path, cert_path, h.name or h.party_id, kind=kind, country=h.country, organization=h.party_id,
                       issuer=hub_issuer, days=days):
            issued = f", issued by {subject_of(hub_issuer.certificate)}" if hub_issuer else ", self-signed"
            written.append(f"wrote {key_path} (0600) and {cert_path}{note or ' (the hub'}{issued})")
    return written


# -- inventory and expiry warnings -------------------------------------------------------------------


KEY_ROLES = frozenset({"signing key", "next key"})
PREVIOUS = "previous certificate"  # the hub's certificate before its last rotation, published until it expires


@dataclass(frozen=True)
class KeyEntry:
    """One certificate or CRL the hub relies on, for ``hub keys`` and the expiry warnings."""

    owner: str  # "hub", or an agency id
    role: str  # signing certificate, next certificate, previous certificate, chain, pinned, trust anchor, intermediate, CRL
    location: str
    subject: str
    expires: datetime | None  # notAfter, or a CRL's nextUpdate; None when unknown (unreadable)
    problem: str | None = None
    serial: str | None = None  # a certificate's serial number in hex (the metrics' label)
    note: str | None = None  # needs a look without being unusable (a private key others can read)
    setting: str = ""  # the hub.toml key that names it (`hub check` names it so)
    starts: datetime | None = None  # a certificate's notBefore: before it, nobody accepts it

    def days_left(self, now: datetime) -> int | None:
        return None if self.expires is None else (self.expires - now) // timedelta(days=1)

    def status(self, now: datetime, window_days: int) -> str:
        """ok, WARNING (within the window; a CRL past nextUpdate but within its grace; a note),
        EXPIRED or PROBLEM."""
        days = self.days_left(now)
        if self.problem:
            return "PROBLEM"
        if self.role in KEY_ROLES:  # a private key does not expire; its certificate says when
            return "WARNING" if self.note else "ok"
        if days is None or self.expires is None:
            return "PROBLEM"
        if self.role == PREVIOUS:  # retired by a rotation: its end is expected; once expired it is no longer published
            return "ok" if self.expires >= now else "WARNING"
        if self.starts is not None and self.starts > now:  # not valid yet: refused as an expired one is (ERR24)
            return "PROBLEM"
        if self.note:
            return "WARNING" if self.expires >= now else "EXPIRED"
        if self.role == "CRL":  # a CRL is short-lived by design: only an overdue one needs a look
            return "WARNING" if self.expires < now else "ok"
        if self.expires < now:
            return "EXPIRED"
        return "WARNING" if days < window_days else "ok"

    def concern(self, now: datetime) -> str:
        """What needs a look, in words, for an entry whose status is not ok."""
        said = self.problem or self.note
        if said:
            return said
        if self.starts is not None and self.starts > now and self.role != PREVIOUS:
            return f"not valid yet: valid from {self.starts:%Y-%m-%d %H:%M} UTC (its notBefore); until then it is refused as an expired one is"
        days = self.days_left(now)
        if self.role == "CRL":
            return f"its next update was due {self.expires:%Y-%m-%d %H:%M} UTC; it is used only within the grace period"
        if days is not None and days < 0:
            expired = f"expired {-days} day(s) ago"
            return f"{expired}: no longer published (GET /keys); remove hub.previous_certificate" if self.role == PREVIOUS else expired
        return f"expires in {days} day(s)"


def inventory(config: "Config", trust: "TrustStore | None" = None) -> list[KeyEntry]:
    """Every certificate the configuration names (read from its file) and every CRL (from ``trust``)."""
    out: list[KeyEntry] = []

    def setting(owner: str, name: str) -> str:
        return f"hub.{name}" if owner == "hub" else f"agencies[{owner}].{name}"

    def certs(owner: str, role: str, name: str, path: Path | None, rest: str | None = None) -> None:
        if path is None:
            return
        named = setting(owner, name)
        try:
            loaded = load_certificates(path)
        except ConfigError as exc:
            out.append(KeyEntry(owner, role, str(path), "-", None, exc.reason, setting=named))
            return
        for i, cert in enumerate(loaded):
            out.append(KeyEntry(owner, role if i == 0 or rest is None else rest, str(path), subject_of(cert), cert.not_valid_after_utc,
                                serial=f"{cert.serial_number:x}", setting=named, starts=cert.not_valid_before_utc))

    def key(owner: str, role: str, name: str, path: Path | None, cert_path: Path | None) -> None:
        """A private key: readable, the key of the first certificate in ``cert_path`` (the one it
        signs with: the rest of that file is its chain), not readable by others. A certificate file
        that cannot be read is its own entry's problem, not the key's."""
        if path is None:
            return
        named = setting(owner, name)
        try:
            loaded = load_private_key(path, role)
        except ConfigError as exc:
            out.append(KeyEntry(owner, role, str(path), "-", None, exc.reason, setting=named))
            return
        try:
            certificates = load_certificates(cert_path) if cert_path is not None else []
        except ConfigError:
            certificates = []
        kind = f"RSA-{loaded.key_size}" if isinstance(loaded, rsa.RSAPrivateKey) else f"EC {loaded.curve.name}"
        if certificates and not same_key(loaded, certificates[0]):
            mine = next((c for c in certificates if same_key(loaded, c)), None)
            said = (f"it belongs to no certificate in {cert_path}" if mine is None else
                    f"it belongs to {subject_of(mine)}, not to the first certificate in {cert_path} "
                    f"({subject_of(certificates[0])}), the one that goes with it")
            out.append(KeyEntry(owner, role, str(path), kind, None, said, setting=named))
            return
        mode = path.stat().st_mode & 0o777
        note = f"readable by other users (mode {mode:04o}): chmod 600 {path}" if mode & 0o077 else None
        out.append(KeyEntry(owner, role, str(path), kind, None, note=note, setting=named))

    h = config.hub
    key("hub", "signing key", "key", h.key, h.certificate)
    certs("hub", "signing certificate", "certificate", h.certificate, "chain")
    key("hub", "next key", "next_key", h.next_key, h.next_certificate)
    certs("hub", "next certificate", "next_certificate", h.next_certificate, "chain")
    certs("hub", PREVIOUS, "previous_certificate", h.previous_certificate, "chain")
    current, upcoming = _first(out, "signing certificate"), _first(out, "next certificate")
    if current is not None and upcoming is not None and upcoming.expires < current.expires:  # type: ignore[operator]
        out[out.index(upcoming)] = replace(
            upcoming, note=f"it expires before the signing certificate ({current.expires:%Y-%m-%d}): it cannot replace it"
        )
    for agency in config.agencies.values():
        key(agency.id, "signing key", "signing_key", agency.signing_key, agency.certificates[0] if agency.certificates else None)
        for path in agency.certificates:
            certs(agency.id, "pinned certificate", "certificates", path)
        for path in agency.trust_anchors:
            certs(agency.id, "trust anchor", "trust_anchors", path)
        for path in agency.intermediates:
            certs(agency.id, "intermediate", "intermediates", path)
    if trust is not None:
        out.extend(crl_entries(trust))
    return out


def _first(entries: list[KeyEntry], role: str) -> KeyEntry | None:
    """The hub's first certificate in ``role`` that could be read."""
    return next((e for e in entries if e.owner == "hub" and e.role == role and e.expires is not None), None)


def crl_entries(trust: "TrustStore", now: datetime | None = None) -> list[KeyEntry]:
    """One entry per CRL location (``expires`` is its nextUpdate), as the store holds it now."""
    now = now or trust.clock()
    out = []
    for source in trust.sources.values():
        using = [a.id for a in trust.agencies.values() if source in a.crls]
        owners, setting = ", ".join(using), ", ".join(f"agencies[{a}].crl" for a in using)
        loaded = source.loaded
        unusable = source.unusable(now, trust.crl_grace)
        if loaded is None:
            out.append(KeyEntry(owners, "CRL", source.location, "-", None, unusable, setting=setting))
        else:
            problem = unusable or (f"last refresh failed: {source.error}" if source.error else None)
            out.append(KeyEntry(owners, "CRL", source.location, loaded.crl.issuer.rfc4514_string(), loaded.next_update, problem, setting=setting))
    return out


def warn_expiring(entries: Sequence[KeyEntry], window_days: int, now: datetime | None = None) -> list[str]:
    """Logs (warning level, logger ``hub.keys``) and returns one line per entry that needs attention."""
    now = now or datetime.now(timezone.utc)
    lines = []
    for e in entries:
        status = e.status(now, window_days)
        if status != "ok":
            lines.append(f"{status}: {e.owner} {e.role} {e.subject} ({e.location}): {e.concern(now)}")
    for line in lines:
        log.warning("%s", line)
    return lines


def not_valid_to_sign(cert: x509.Certificate, now: datetime | None = None) -> str | None:
    """Why the hub must not sign with ``cert`` now, in words naming it and its dates, or None while
    it is valid. A receipt or NACK signed with a certificate out of its dates is refused by every
    partner that verifies it (ERR24), so the hub could only answer with proof nobody accepts:
    ``hub serve`` does not start with one, a reload (SIGHUP) does not bring one in, and ``GET
    /health`` answers 503 once the one in use expires (the daily expiry warning, ``warn_expiring``,
    says it in the log)."""
    now = now or datetime.now(timezone.utc)
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now < start:
        when = f"is not valid until {start:%Y-%m-%d %H:%M} UTC"
    elif now > end:
        when = f"expired on {end:%Y-%m-%d %H:%M} UTC"
    else:
        return None
    return (f"the signing certificate {subject_of(cert)} (serial {cert.serial_number:x}, valid {start:%Y-%m-%d %H:%M} to "
            f"{end:%Y-%m-%d %H:%M} UTC) {when}: partners refuse every receipt and NACK signed with it (ERR24)")


class CurrentSigner:
    """The hub's ``Signer`` as ``hub serve`` holds it: a reload (SIGHUP) swaps in another one.

    The pipeline, the adapters and ``GET /keys`` hold this object rather than a ``Signer``. Every
    use reads ``current`` once, so a document is signed with one key and that key's own
    certificate, never the old key with the new certificate; a signature under way during a swap
    finishes with the key it started with. Swapping the signer is one attribute store, so nothing is
    locked on the message path. ``previous`` (``[hub] previous_certificate``) is only published, never
    used to sign.
    """

    def __init__(self, signer: "Signer", previous: x509.Certificate | None = None) -> None:
        self.current, self.previous = signer, previous

    def swap(self, signer: "Signer", previous: x509.Certificate | None = None) -> None:
        self.previous = previous  # first: ``published`` reads ``current`` first (see there)
        self.current = signer

    def sign(self, element: Any) -> Any:
        return self.current.sign(element)

    @property
    def key(self) -> PrivateKey:
        return self.current.key

    @property
    def certificate(self) -> x509.Certificate:
        return self.current.certificate

    @property
    def next_certificate(self) -> x509.Certificate | None:
        return self.current.next_certificate

    @property
    def published(self) -> tuple[x509.Certificate, ...]:
        """The current certificate and the next one, then the previous one until it expires: outbox
        rows signed before the rotation are still delivered, to partners who trust what GET /keys says."""
        # ``current`` before ``previous``, the reverse of ``swap``'s order: a reload between the two
        # reads then publishes the previous certificate it names with the signer before it (in a
        # rotation, the old certificate twice), never the new signer without its previous one
        published = self.current.published
        previous = self.previous
        if previous is None or previous.not_valid_after_utc < datetime.now(timezone.utc):
            return published
        return (*published, previous)


def published_route(signer: "Signer | CurrentSigner") -> Any:
    """``GET /keys``: the hub's current certificate, then the next one (published ahead of a
    rotation), then the previous one (until it expires), as a PEM bundle, so that partners can
    trust the next key before it signs and the old one while messages it signed are delivered.
    Read at each request, so that it shows the certificates of the last reload."""
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def keys(request: Request) -> Response:
        pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in signer.published)
        return Response(pem, media_type="application/x-pem-file")

    return Route("/keys", keys, methods=["GET"])
