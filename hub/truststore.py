"""Whom the hub believes, per agency: pinned certificates, CA chains and CRLs, with a cache.

    TrustStore                    built from the configuration; files are read at start-up and on reload
    ├── AgencyTrust               one per agency: what its signing certificate must be
    │     certificates            pinned: the signer must be one of these (several during a rotation)
    │     trust_anchors           CAs the signer must chain to (with optional intermediates)
    │     subject                 attributes the signer's subject must carry, e.g. O=VN-MOIT
    │     crl                     CRLs checked for every certificate of the chain below the anchor
    ├── CrlSource                 one per CRL location: the last good CRL read from it
    └── cache                     SHA-256 of the KeyInfo certificates -> accepted certificate or refusal

Every constraint an agency configures must hold: with both ``certificates`` and
``trust_anchors``, the signer is one of the pinned certificates *and* chains to an anchor. A
signer is judged against the claimed sender's own trust only, never against any trusted CA; a
certificate another agency's trust accepts is refused as "certificate of another agency".

Chains are built and checked with ``cryptography.x509.verification`` (validity periods, CA basic
constraints and key usage; the signer's key usage must allow digitalSignature or
nonRepudiation). Revocation: when an agency names CRLs, every certificate of the chain below the
anchor must be covered by a CRL of its issuer that is loaded and fresh, else the message is
refused (fail closed): a CRL is fresh until its nextUpdate plus ``trust.crl_grace_seconds``. A
refresh that fails keeps the last good CRL (its own nextUpdate still bounds it).

The outcome for one certificate is computed once and cached until the earliest of: a certificate
of the chain leaves its validity window, a CRL it relied on stops being fresh, any CRL changes
(refresh), the trust is reloaded (``adopt``), or, for refusals, five minutes. Per message this
costs a SHA-256 and a dict look-up.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Mapping, Sequence
from urllib.parse import unquote, urlparse

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import verification

from .errors import Code, ConfigError, Rejected
from .files import write_durably
from .trust import check_signing_certificate, load_certificates, read_certificate, subject_of, weak_key

if TYPE_CHECKING:
    from .config import Agency, Config

log = logging.getLogger("hub.trust")

Clock = Callable[[], datetime]
NEGATIVE_TTL = timedelta(minutes=5)
CACHE_SIZE = 4096
_SPKI = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def fingerprint(cert: x509.Certificate) -> bytes:
    return cert.fingerprint(hashes.SHA256())


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _signing_usage(policy: object, cert: x509.Certificate, usage: x509.KeyUsage | None) -> None:
    if usage is None or not (usage.digital_signature or usage.content_commitment):
        raise ValueError("the key usage has neither digitalSignature nor nonRepudiation")


_EE_POLICY = verification.ExtensionPolicy.permit_all().require_present(x509.KeyUsage, verification.Criticality.AGNOSTIC, _signing_usage)
_CA_POLICY = verification.ExtensionPolicy.webpki_defaults_ca()


# -- CRLs -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedCrl:
    crl: x509.CertificateRevocationList
    issuer: x509.Certificate  # the configured CA whose key verified the CRL's signature
    this_update: datetime
    next_update: datetime
    digest: bytes

    def covers(self, issuer: x509.Certificate) -> bool:
        return self.issuer.public_key().public_bytes(*_SPKI) == issuer.public_key().public_bytes(*_SPKI)


CRL_LIMIT = 64 * 1024 * 1024  # bytes of a downloaded CRL, decompressed (the largest public CRLs are a few MiB)
CRL_SECONDS = 60.0  # for the whole download: CRLs are read one after another, a slow server must not hold up the rest


class CrlSource:
    """One CRL location. ``refresh`` reads it again; the last good CRL stays until a better one.

    The last good CRL read from an http(s) location is also kept in ``cache`` (a folder), so a hub
    that starts while the CA's server is down uses it, with the same checks as when it was
    fetched (its issuer's signature, its nextUpdate and the grace), instead of refusing every
    message that needs it. A local file is its own copy and is not kept again.
    """

    def __init__(self, location: str, base: Path, fetch_timeout: float = 10.0, cache: Path | None = None) -> None:
        self.location = location
        self.base = base
        self.fetch_timeout = fetch_timeout
        self.issuers: list[x509.Certificate] = []  # CA certificates allowed to sign this CRL
        self.loaded: LoadedCrl | None = None
        self.error: str | None = "not read yet"
        remote = urlparse(location).scheme in ("http", "https")
        name = hashlib.sha256(location.encode()).hexdigest()[:32] + ".crl"
        self.kept: Path | None = cache / name if cache is not None and remote else None

    def _read(self) -> bytes:
        if "://" not in self.location:
            return (self.base / self.location).read_bytes()
        url = urlparse(self.location)
        if url.scheme == "file":
            if url.netloc not in ("", "localhost"):
                raise OSError(f"file URL with a remote host {url.netloc!r}")
            return Path(unquote(url.path)).read_bytes()
        if url.scheme in ("http", "https"):
            import httpx

            from .httpio import read_capped

            # uncompressed (a gzip chunk is decompressed whole before it is counted), no redirects
            headers = {"Accept-Encoding": "identity"}
            with httpx.stream("GET", self.location, timeout=self.fetch_timeout, headers=headers) as response:
                response.raise_for_status()
                return read_capped(response.iter_bytes(), CRL_LIMIT, f"the CRL at {self.location}", CRL_SECONDS)
        raise OSError(f"unsupported scheme {url.scheme!r}; use a path, file://, http:// or https://")

    def refresh(self) -> bool:
        """Reads the location again; True when what the hub relies on changed."""
        try:
            data = self._read()
        except Exception as exc:  # OSError, httpx errors: any failure to fetch keeps the last good CRL
            reason = f"cannot read {self.location}: {exc}"
            if self.loaded is None and self.kept is not None and self.kept.is_file():
                try:
                    kept = self.kept.read_bytes()
                except OSError as err:
                    return self._refuse(f"{reason}; the copy kept in {self.kept} cannot be read either: {err}")
                log.warning("CRL %s: %s; using the copy kept from an earlier read (%s)", self.location, reason, self.kept)
                changed = self._load(kept, f"the copy kept of {self.location} ({self.kept})")
                if self.loaded is not None:
                    self.error = reason  # what a fresh read would say; the kept copy is used meanwhile
                return changed
            return self._refuse(reason)
        changed = self._load(data, self.location)
        if changed and self.kept is not None:
            self._keep(data)
        return changed

    def _keep(self, data: bytes) -> None:
        """Writes the CRL just loaded to ``kept``: a file of its own (workers write side by side),
        on disk before it is renamed over the old copy. The copy is judged again when it is read."""
        assert self.kept is not None
        try:
            write_durably(self.kept, data, mode=0o600, folder_mode=0o700)
        except OSError as exc:  # the hub still has it in memory; only a restart during an outage would miss it
            log.warning("CRL %s: cannot keep a copy in %s: %s", self.location, self.kept, exc)

    def _load(self, data: bytes, what: str) -> bool:
        digest = hashlib.sha256(data).digest()
        if self.loaded is not None and digest == self.loaded.digest:
            self.error = None
            return False
        try:
            crl = (x509.load_pem_x509_crl if data.lstrip().startswith(b"-----BEGIN") else x509.load_der_x509_crl)(data)
        except ValueError as exc:
            return self._refuse(f"{what} is not a readable CRL: {exc}")
        # a CA's key signs (RSA, EC, EdDSA): never one of the key-agreement kinds a certificate may carry
        issuer = next((ca for ca in self.issuers if ca.subject == crl.issuer and crl.is_signature_valid(ca.public_key())), None)  # type: ignore[arg-type]
        if issuer is None:
            return self._refuse(f"{what} is not signed by a CA configured for the agencies that name it ({crl.issuer.rfc4514_string()})")
        if crl.next_update_utc is None:
            return self._refuse(f"{what} has no nextUpdate, so its freshness cannot be judged")
        if self.loaded is not None and crl.last_update_utc < self.loaded.this_update:
            return self._refuse(f"{what} is older than the CRL already loaded (thisUpdate {crl.last_update_utc:%Y-%m-%d %H:%M})")
        self.loaded = LoadedCrl(crl, issuer, crl.last_update_utc, crl.next_update_utc, digest)
        self.error = None
        log.info("CRL %s loaded: issuer %s, %d revoked, next update %s", what, crl.issuer.rfc4514_string(), len(crl),
                 crl.next_update_utc.strftime("%Y-%m-%d %H:%M"))
        return True

    def _refuse(self, reason: str) -> bool:
        """Nothing the hub relies on changes: the last good CRL (if any) stays, bounded by its nextUpdate."""
        self.error = reason
        log.warning("CRL %s: %s%s", self.location, reason, " (keeping the last good CRL)" if self.loaded else "")
        return False

    def unusable(self, now: datetime, grace: timedelta) -> str | None:
        """Why this CRL cannot be relied on now, or None."""
        if self.loaded is None:
            return self.error or f"{self.location} could not be read"
        if now > self.loaded.next_update + grace:
            return (f"the CRL {self.location} is stale: its next update was due {self.loaded.next_update:%Y-%m-%d %H:%M} UTC "
                    f"and the grace of {grace} has passed")
        return None


# -- per-agency trust ------------------------------------------------------------------------------


class AgencyTrust:
    """What an agency's signing certificate must be; built at start-up and on reload."""

    def __init__(
        self,
        agency_id: str,
        *,
        pinned: Sequence[x509.Certificate] = (),
        anchors: Sequence[x509.Certificate] = (),
        intermediates: Sequence[x509.Certificate] = (),
        subject: x509.Name | None = None,
        crls: Sequence[CrlSource] = (),
    ) -> None:
        self.id = agency_id
        self.pinned = tuple(pinned)
        self.anchors = tuple(anchors)
        self.intermediates = tuple(intermediates)
        self.subject = subject
        self.crls = tuple(crls)
        self.pinned_fps = frozenset(fingerprint(c) for c in self.pinned)
        self.anchor_fps = frozenset(fingerprint(c) for c in self.anchors)
        self._store = verification.Store(list(self.anchors)) if self.anchors else None

    @property
    def configured(self) -> bool:
        return bool(self.pinned or self.anchors)

    def subject_ok(self, cert: x509.Certificate) -> bool:
        return self.subject is None or _attributes(self.subject) <= _attributes(cert.subject)

    def build_chain(self, leaf: x509.Certificate, extra: Sequence[x509.Certificate], now: datetime) -> list[x509.Certificate]:
        """leaf ... anchor; raises ``verification.VerificationError``."""
        assert self._store is not None
        verifier = (
            verification.PolicyBuilder()
            .store(self._store)
            .time(now)
            .extension_policies(ca_policy=_CA_POLICY, ee_policy=_EE_POLICY)
            .build_client_verifier()
        )
        return list(verifier.verify(leaf, [*self.intermediates, *extra]).chain)

    def accepts_identity(self, leaf: x509.Certificate, extra: Sequence[x509.Certificate], now: datetime) -> bool:
        """Would this agency take ``leaf`` as its own (pinning, subject, chain), whatever its state?"""
        if not self.configured or not self.subject_ok(leaf):
            return False
        if self.pinned:
            return fingerprint(leaf) in self.pinned_fps
        try:
            self.build_chain(leaf, extra, now)
        except verification.VerificationError:
            try:  # an expired certificate is still recognisably this agency's
                self.build_chain(leaf, extra, leaf.not_valid_before_utc + (leaf.not_valid_after_utc - leaf.not_valid_before_utc) / 2)
            except verification.VerificationError:
                return False
        return True


@dataclass
class _Entry:
    certificate: x509.Certificate | None
    refusal: tuple[Code, str] | None
    valid_from: datetime | None
    valid_until: datetime | None
    generation: int


class AgencyPolicy:
    """The ``CertificatePolicy`` of one agency, bound to the store and its cache."""

    def __init__(self, store: TrustStore, agency_id: str) -> None:
        self.store, self.agency_id = store, agency_id

    def signer(self, embedded: Sequence[bytes], who: str) -> x509.Certificate:
        return self.store.signer(self.agency_id, embedded)


class TrustStore:
    def __init__(
        self,
        agencies: Mapping[str, AgencyTrust],
        *,
        crl_grace: timedelta = timedelta(days=1),
        clock: Clock = utcnow,
        cache_size: int = CACHE_SIZE,
    ) -> None:
        self.agencies = dict(agencies)
        self.crl_grace = crl_grace
        self.clock = clock
        self.cache_size = cache_size
        self.sources: dict[str, CrlSource] = {}
        for trust in self.agencies.values():
            for source in trust.crls:
                self.sources.setdefault(source.location, source)
        self._cache: OrderedDict[tuple[str, tuple[bytes, ...]], _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self.generation = 0
        self.evaluations = 0  # cache misses, for tests and the benchmark

    # -- construction -------------------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: Config, clock: Clock = utcnow) -> TrustStore:
        file = str(config.path)
        sources: dict[str, CrlSource] = {}
        agencies: dict[str, AgencyTrust] = {}
        cache = config.base / config.trust.crl_cache if config.trust.crl_cache else None
        for agency in config.agencies.values():
            agencies[agency.id] = _agency_trust(file, agency, config.base, sources, cache)
        _refuse_ambiguous_anchors(file, agencies)
        store = cls(agencies, crl_grace=timedelta(seconds=config.trust.crl_grace_seconds), clock=clock)
        store.refresh_crls()
        return store

    # -- the hot path -------------------------------------------------------------------------------

    def policy(self, agency_id: str) -> AgencyPolicy:
        return AgencyPolicy(self, agency_id)

    def signer(self, agency_id: str, embedded: Sequence[bytes]) -> x509.Certificate:
        """The certificate that signed for ``agency_id``, or ``Rejected``; cached per certificate."""
        key = (agency_id, tuple(hashlib.sha256(d).digest() for d in embedded))
        now = self.clock()
        with self._lock:
            entry = self._cache.get(key)
            if entry is not None and not self._fresh(entry, now):
                entry = None
        if entry is None:
            generation = self.generation
            entry = self._evaluate(agency_id, embedded, now, generation)
            with self._lock:
                self._cache[key] = entry
                self._cache.move_to_end(key)
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        if entry.refusal is not None:
            raise Rejected(*entry.refusal)
        assert entry.certificate is not None
        return entry.certificate

    def _fresh(self, entry: _Entry, now: datetime) -> bool:
        return (
            entry.generation == self.generation
            and (entry.valid_until is None or now < entry.valid_until)
            and (entry.valid_from is None or now >= entry.valid_from)
        )

    # -- judging one certificate ---------------------------------------------------------------------

    def _evaluate(self, agency_id: str, embedded: Sequence[bytes], now: datetime, generation: int) -> _Entry:
        self.evaluations += 1

        def refuse(code: Code, message: str, until: datetime | None = None) -> _Entry:
            return _Entry(None, (code, message), None, until or now + NEGATIVE_TTL, generation)

        who = f"agency {agency_id}"
        trust = self.agencies.get(agency_id)
        if trust is None or not trust.configured:
            return refuse(Code.UNKNOWN_SIGNER, f"no certificate or CA is configured for {who}")
        if not embedded:
            if len(trust.pinned) == 1 and not trust.anchors:
                certs = [trust.pinned[0]]
            else:
                return refuse(Code.UNKNOWN_SIGNER, f"the signature carries no certificate in KeyInfo/X509Data, which {who} must send")
        else:
            try:
                certs = [read_certificate(d) for d in embedded]
            except ValueError as exc:
                return refuse(Code.SIGNATURE_INVALID, f"a certificate in KeyInfo/X509Data cannot be read ({exc})")
        leaf = next((c for c in certs if fingerprint(c) in trust.pinned_fps), None) or next((c for c in certs if not _is_ca(c)), certs[0])
        extra = [c for c in certs if c is not leaf]
        name = subject_of(leaf)

        if trust.pinned and fingerprint(leaf) not in trust.pinned_fps:
            return self._not_ours(refuse, agency_id, leaf, extra, now, f"which is not one of the certificates configured for {who}")
        if not trust.subject_ok(leaf):
            return self._not_ours(refuse, agency_id, leaf, extra, now,
                                  f"whose subject lacks {trust.subject.rfc4514_string()}, which certificates of {who} carry")  # type: ignore[union-attr]
        if now < leaf.not_valid_before_utc:
            check_code = (Code.CERTIFICATE_EXPIRED, f"the certificate of {who} ({name}) is not valid before "
                          f"{leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
            return _Entry(None, check_code, None, leaf.not_valid_before_utc, generation)
        try:
            check_signing_certificate(leaf, who, now)
        except Rejected as exc:
            return refuse(exc.code, exc.message)

        if trust.anchors:
            try:
                chain = trust.build_chain(leaf, extra, now)
            except verification.VerificationError as exc:
                return refuse(Code.UNTRUSTED_CHAIN, self._chain_failure(trust, leaf, extra, now, str(exc)))
            for ca in chain[1:]:
                weak = weak_key(ca)
                if weak:
                    return refuse(Code.WEAK_ALGORITHM, f"the CA certificate {subject_of(ca)} above {name} is refused: {weak}")
            rivals = self.owners(leaf, chain[1:], now, exclude=agency_id)  # the path validated, whatever was embedded
            if rivals and not trust.pinned:  # chosen by CA and subject: the certificate must say which agency it is
                return refuse(Code.WRONG_SIGNER, f"signed by {name}, a certificate that passes as {', '.join(rivals)}'s as well as "
                                                 f"{who}'s (it carries the subject each requires): it cannot tell which agency signed; "
                                                 "the agencies' subjects must be told apart")
        else:
            chain = [leaf]

        until = min(c.not_valid_after_utc for c in chain)
        if trust.crls:
            for source in trust.crls:
                reason = source.unusable(now, self.crl_grace)
                if reason:
                    return _Entry(None, (Code.CRL_UNAVAILABLE, f"revocation of {who}'s certificates cannot be checked: {reason}; "
                                         "the hub refuses until a fresh CRL is available"), None, None, generation)
            below_anchor = chain[:-1] if trust.anchors else chain
            for i, cert in enumerate(below_anchor):
                issuer = chain[i + 1] if i + 1 < len(chain) else None
                crl = self._crl_for(trust, cert, issuer)
                if crl is None:
                    if issuer is None:  # a pinned certificate whose issuer publishes no CRL configured here
                        continue
                    return _Entry(None, (Code.CRL_UNAVAILABLE, f"no CRL of {subject_of(issuer)} (issuer of {subject_of(cert)}) is configured "
                                         f"for {who}; revocation cannot be checked"), None, None, generation)
                revoked = crl.crl.get_revoked_certificate_by_serial_number(cert.serial_number)
                if revoked is not None:
                    what = "the certificate" if cert is leaf else f"the CA certificate {subject_of(cert)} above"
                    return _Entry(None, (Code.CERTIFICATE_REVOKED, f"{what} {name} (serial {cert.serial_number:x}) of {who} was revoked by "
                                         f"{subject_of(crl.issuer)} on {revoked.revocation_date_utc:%Y-%m-%d %H:%M} UTC{_reason(revoked)}"),
                                  None, None, generation)
                until = min(until, crl.next_update + self.crl_grace)
        return _Entry(leaf, None, leaf.not_valid_before_utc, until, generation)

    def _crl_for(self, trust: AgencyTrust, cert: x509.Certificate, issuer: x509.Certificate | None) -> LoadedCrl | None:
        for source in trust.crls:
            loaded = source.loaded
            if loaded is None or loaded.crl.issuer != cert.issuer:
                continue
            if issuer is not None and loaded.covers(issuer):
                return loaded
            if issuer is None and _issued(cert, loaded.issuer):
                return loaded
        return None

    def _not_ours(self, refuse, agency_id: str, leaf: x509.Certificate, extra: Sequence[x509.Certificate], now: datetime, why: str) -> _Entry:  # type: ignore[no-untyped-def]
        owners = self.owners(leaf, extra, now, exclude=agency_id)
        if owners:
            return refuse(Code.WRONG_SIGNER, f"signed by {subject_of(leaf)}, a certificate of {', '.join(owners)}, "
                                             f"not of agency {agency_id} that the envelope names as sender")
        return refuse(Code.UNKNOWN_SIGNER, f"signed by {subject_of(leaf)}, {why}; no configured agency uses this certificate")

    def _chain_failure(self, trust: AgencyTrust, leaf: x509.Certificate, extra: Sequence[x509.Certificate], now: datetime, detail: str) -> str:
        owners = self.owners(leaf, extra, now, exclude=trust.id)
        other = f" (it belongs to {', '.join(owners)})" if owners else ""
        return (f"the certificate {subject_of(leaf)}, issued by {leaf.issuer.rfc4514_string()}, does not chain to a CA trusted "
                f"for agency {trust.id}{other}: {detail}")

    def owners(self, leaf: x509.Certificate, extra: Sequence[x509.Certificate], now: datetime, exclude: str | None = None) -> list[str]:
        return [a.id for a in self.agencies.values() if a.id != exclude and a.accepts_identity(leaf, extra, now)]

    # -- CRL refresh ---------------------------------------------------------------------------------

    def refresh_crls(self) -> bool:
        """Reads every CRL location again (the scheduled job); True when something changed."""
        with self._refresh_lock:
            changed = False
            for source in self.sources.values():
                changed |= source.refresh()
            if changed:
                with self._lock:
                    self.generation += 1
                    self._cache.clear()
            return changed

    def adopt(self, other: TrustStore) -> None:
        """Takes the agencies, CRLs and grace of ``other``, a store just built from the reloaded
        configuration (``Runtime.reload``, on SIGHUP).

        The store changes in place because the pipeline and the adapters hold it (and policies
        made from it). Each agency's trust is one object, replaced whole, and the cache is
        emptied with a new generation, so no message is judged by half of the old trust and half
        of the new; a judgement under way when the swap happens is used for its own message only
        (its cache entry carries the old generation). A CRL location that the new store could not
        read keeps the last good CRL read from it, as a failed refresh does, unless the new store
        holds a newer one.
        """
        with self._refresh_lock:
            for location, source in other.sources.items():
                old = self.sources.get(location)
                # the newer of the two: a reload while the location is down may have read an older
                # kept copy (a copy that failed to be written, or one put back by someone)
                if old is not None and old.loaded is not None and old.loaded.issuer in source.issuers and (
                    source.loaded is None or source.loaded.this_update < old.loaded.this_update
                ):
                    source.loaded = old.loaded
            with self._lock:
                self.crl_grace = other.crl_grace
                self.sources = other.sources
                self.agencies = other.agencies
                self.generation += 1
                self._cache.clear()

    def problems(self, now: datetime | None = None) -> list[tuple[str, str]]:
        """(agency id, sentence) for every CRL that cannot be relied on now."""
        now = now or self.clock()
        out = []
        for trust in self.agencies.values():
            for source in trust.crls:
                reason = source.unusable(now, self.crl_grace)
                if reason:
                    out.append((trust.id, reason))
        return out


def _reason(revoked: x509.RevokedCertificate) -> str:
    try:
        return f" (reason: {revoked.extensions.get_extension_for_class(x509.CRLReason).value.reason.value})"
    except x509.ExtensionNotFound:
        return ""


def _agency_trust(file: str, agency: Agency, base: Path, sources: dict[str, CrlSource], crl_cache: Path | None = None) -> AgencyTrust:
    key = f"agencies[{agency.id}]"

    def certs(paths: Iterable[Path], name: str) -> list[x509.Certificate]:
        out: list[x509.Certificate] = []
        for path in paths:
            out.extend(load_certificates(path, f"{key}.{name}"))
        return out

    anchors, intermediates = certs(agency.trust_anchors, "trust_anchors"), certs(agency.intermediates, "intermediates")
    for ca, name in [(c, "trust_anchors") for c in anchors] + [(c, "intermediates") for c in intermediates]:
        if not _is_ca(ca):
            raise ConfigError(file, f"{key}.{name}", f"{subject_of(ca)} is not a CA certificate (basicConstraints CA:TRUE)")
    subject = None
    if agency.subject is not None:
        try:
            subject = x509.Name.from_rfc4514_string(agency.subject)
        except ValueError as exc:
            raise ConfigError(file, f"{key}.subject", f"not an RFC 4514 name such as \"O=VN-MOIT,C=VN\": {exc}") from None
    crls = []
    for location in agency.crl:
        source = sources.setdefault(location, CrlSource(location, base, cache=crl_cache))
        source.issuers.extend(c for c in anchors + intermediates if all(c is not i for i in source.issuers))
        crls.append(source)
    if crls and not (anchors or intermediates):
        raise ConfigError(file, f"{key}.crl", "a CRL needs the CA that signs it: name it in trust_anchors or intermediates")
    pinned = certs(agency.certificates, "certificates")
    return AgencyTrust(agency.id, pinned=pinned, anchors=anchors, intermediates=intermediates, subject=subject, crls=crls)


def _refuse_ambiguous_anchors(file: str, agencies: Mapping[str, AgencyTrust]) -> None:
    """Two agencies whose CAs meet (one anchor, or one's anchor under the other's) must be told
    apart by pinning or by subjects neither of which holds the other: with VN-MOIT's "O=VN-MOIT"
    and another's "O=VN-MOIT,OU=Permits", every certificate of the second would pass as VN-MOIT's.
    (Subjects that merely differ can still meet in one certificate; ``TrustStore`` refuses such a
    certificate when it is used.)"""
    trusts = [t for t in agencies.values() if t.anchors]
    for i, trust in enumerate(trusts):
        for other in trusts[i + 1:]:
            if not (_under(trust, other) or _under(other, trust)):
                continue
            for a, b in ((trust, other), (other, trust)):
                if a.pinned:
                    continue
                fix = (f"give each its own subject (e.g. subject = \"O={a.id}\") or pinned certificates, "
                       "so one cannot sign as the other")
                if a.subject is None:
                    raise ConfigError(file, f"agencies[{a.id}].subject",
                                      f"agencies {other.id} and {trust.id} trust the same CA and {a.id} requires no subject; {fix}")
                if b.subject is not None and _attributes(a.subject) <= _attributes(b.subject):
                    raise ConfigError(
                        file, f"agencies[{a.id}].subject",
                        f"agencies {other.id} and {trust.id} trust the same CA, and every certificate of {b.id} "
                        f"({b.subject.rfc4514_string()}) carries all that {a.id} requires ({a.subject.rfc4514_string()}); {fix}",
                    )


def _under(trust: AgencyTrust, other: AgencyTrust) -> bool:
    """Whether one of ``other``'s anchors is ``trust``'s, or a CA that chains up to one of them
    (through the CA certificates either agency names): certificates ``other`` takes could then
    chain to ``trust``'s anchors too."""
    if trust.anchor_fps & other.anchor_fps:
        return True
    known = [*trust.anchors, *trust.intermediates, *other.intermediates]
    for ca in other.anchors:
        current, seen = ca, set()
        while fingerprint(current) not in seen:
            seen.add(fingerprint(current))
            issuer = next((c for c in known if c.subject == current.issuer and _issued(current, c)), None)
            if issuer is None:
                break
            if fingerprint(issuer) in trust.anchor_fps:
                return True
            current = issuer
    return False


def _issued(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
        return True
    except (ValueError, TypeError, InvalidSignature):
        return False


def _attributes(name: x509.Name) -> set[tuple[x509.ObjectIdentifier, str | bytes]]:
    return {(a.oid, a.value) for a in name}


class TrustJobs:
    """The trust store's scheduled work (apscheduler): re-read every CRL every
    ``crl_refresh_seconds``, and log the certificates and CRLs near expiry once a day."""

    def __init__(self, store: TrustStore, refresh_seconds: float, daily: Callable[[], object] | None = None) -> None:
        self.store, self.refresh_seconds, self.daily = store, refresh_seconds, daily
        self._scheduler: object | None = None

    def start(self) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler

        scheduler = BackgroundScheduler(timezone=timezone.utc, daemon=True)
        if self.store.sources:
            scheduler.add_job(self.store.refresh_crls, "interval", seconds=self.refresh_seconds, id="crl-refresh",
                              max_instances=1, coalesce=True)
        if self.daily is not None:
            scheduler.add_job(self.daily, "interval", days=1, id="expiry-warning", next_run_time=utcnow(),
                              max_instances=1, coalesce=True)
        scheduler.start()
        self._scheduler = scheduler

    def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)  # type: ignore[attr-defined]
            self._scheduler = None
