"""Trust: signatures, certificates, chains, CRLs, key rotation, and one code and sentence per
refusal. The PKI is described in ``tests/pki.py``."""

from __future__ import annotations

import asyncio
import base64
import copy
import logging
import os
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from lxml import etree
from starlette.applications import Starlette

from hub.config import load_config
from hub.envelope import NS, read_errors
from hub.errors import Code, ConfigError, Rejected
from hub.keys import Issuer, init_keys, issue, new_key, write_certificate, write_crl, write_private_key
from hub.runtime import Runtime, check
from hub.trust import DSIG, Pinned, Signer, Verifier, load_certificates
from hub.truststore import TrustJobs, TrustStore

from .pki import Pki, envelope, pki_config, signed
from .support import REPO, Sender, tampered, wait_until, write_config

E = f"{{{NS}}}"


@pytest.fixture
def pki_env(tmp_path: Path) -> Iterator[tuple[TrustStore, Pki, Path]]:
    path, pki = pki_config(tmp_path)
    yield TrustStore.from_config(load_config(path)), pki, path


def refusal(store: TrustStore, root: etree._Element, agency: str = "VN-MOIT") -> Rejected:
    with pytest.raises(Rejected) as info:
        Verifier().verify(root, store.policy(agency), f"agency {agency}")
    assert info.value.message, "every refusal carries a sentence"
    return info.value


# -- accepted ---------------------------------------------------------------------------------------


def test_a_chain_to_the_senders_ca_is_accepted_and_only_the_signed_part_goes_on(pki_env) -> None:  # type: ignore[no-untyped-def]
    store, pki, path = pki_env
    root = signed(path, pki.moit)
    root.append(etree.Comment("unsigned comment after the signature"))
    verified = Verifier().verify(root, store.policy("VN-MOIT"), "agency VN-MOIT")
    assert verified.subject == "CN=VN-MOIT signer,O=VN-MOIT"
    assert verified.element is not root and verified.element.find(f"{{{DSIG}}}Signature") is None
    assert b"unsigned comment" not in etree.tostring(verified.element)
    # the intermediate may also travel in KeyInfo; an EC signer works as well
    ec = pki.leaf(pki.inter, "VN-MOIT", kind="ec")
    assert Verifier().verify(signed(path, ec, chain=(pki.inter.certificate,)), store.policy("VN-MOIT"), "x").certificate == ec.certificate


def test_a_certificate_is_judged_once_then_cached(pki_env) -> None:  # type: ignore[no-untyped-def]
    store, pki, path = pki_env
    documents = [signed(path, pki.moit) for _ in range(5)]
    before = store.evaluations
    for root in documents:
        Verifier().verify(root, store.policy("VN-MOIT"), "agency VN-MOIT")
    assert store.evaluations == before + 1
    assert store.refresh_crls() is False  # unchanged CRLs keep the cache
    Verifier().verify(documents[0], store.policy("VN-MOIT"), "agency VN-MOIT")
    assert store.evaluations == before + 1


# -- one code and one sentence per refusal ------------------------------------------------------------


def test_tampered_content(pki_env) -> None:  # type: ignore[no-untyped-def]
    store, pki, path = pki_env
    root = etree.fromstring(tampered(etree.tostring(signed(path, pki.moit))))
    error = refusal(store, root)
    assert error.code is Code.SIGNATURE_INVALID and "changed after signing" in error.message


def test_tampered_signature_value(pki_env) -> None:  # type: ignore[no-untyped-def]
    store, pki, path = pki_env
    root = signed(path, pki.moit)
    value = root.find(f"{{{DSIG}}}Signature/{{{DSIG}}}SignatureValue")
    raw = bytearray(base64.b64decode(value.text))
    raw[10] ^= 0x01
    value.text = base64.b64encode(bytes(raw)).decode()
    error = refusal(store, root)
    assert error.code is Code.SIGNATURE_VALUE_INVALID and "signature value does not verify" in error.message


def test_wrapped_payload(pki_env) -> None:  # type: ignore[no-untyped-def]
    store, pki, path = pki_env
    good = signed(path, pki.moit)
    # the signed envelope hidden in a wrapper, a forged unsigned payload where the hub reads
    forged = copy.deepcopy(good)
    signature = forged[-1]
    forged.remove(signature)
    forged.find(f"{E}Body/{E}Content")[0].set("forged", "yes")
    hidden = etree.SubElement(forged, "{urn:example:attack}Hidden")
    hidden.append(copy.deepcopy(good))
    error = refusal(store, forged)
    assert error.code is Code.SIGNATURE_WRAPPING and "as a child of the root" in error.message
    # a signature that points at one element instead of the whole document
    partial = copy.deepcopy(good)
    partial.find(f".//{{{DSIG}}}Reference").set("URI", "#payload")
    error = refusal(store, partial)
    assert error.code is Code.SIGNATURE_WRAPPING and 'URI=""' in error.message
    # a second, unsigned payload next to the signed one
    doubled = copy.deepcopy(good)
    doubled.find(f"{E}Body").append(copy.deepcopy(doubled.find(f"{E}Body/{E}Content")))
    error = refusal(store, doubled)
    assert error.code is Code.SIGNATURE_INVALID


def test_unknown_signer(pki_env) -> None:  # type: ignore[no-untyped-def]
    store, pki, path = pki_env
    stranger = new_key("rsa")
    me = Issuer(stranger, issue(stranger, "nobody", organization="XX-NOBODY"))
    error = refusal(store, signed(path, me, sender="VN-MARD"), "VN-MARD")
    assert error.code is Code.UNKNOWN_SIGNER and "not one of the certificates configured for agency VN-MARD" in error.message
    # a certificate of the right CA without the sender's subject attribute
    other = pki.leaf(pki.inter, "VN-SOMEONE")
    error = refusal(store, signed(path, other))
    assert error.code is Code.UNKNOWN_SIGNER and "O=VN-MOIT" in error.message


def test_certificate_of_another_agency(pki_env) -> None:  # type: ignore[no-untyped-def]
    store, pki, path = pki_env
    config = load_config(path)
    mard = Sender(config, "VN-MARD")  # pinned, self-signed
    root = mard.signer.sign(envelope(path))
    error = refusal(store, root)
    assert error.code is Code.WRONG_SIGNER and "certificate of VN-MARD" in error.message and "VN-MOIT" in error.message
    error = refusal(store, signed(path, pki.th_asw))  # chains to TH-ASW's CA, not to VN-MOIT's
    assert error.code is Code.WRONG_SIGNER and "certificate of TH-ASW" in error.message
    error = refusal(store, signed(path, pki.moit, sender="TH-ASW"), "TH-ASW")
    assert error.code is Code.UNTRUSTED_CHAIN and "belongs to VN-MOIT" in error.message


def test_expired_certificate(pki_env) -> None:  # type: ignore[no-untyped-def]
    store, pki, path = pki_env
    old = pki.leaf(pki.inter, "VN-MOIT", not_before=datetime.now(timezone.utc) - timedelta(days=400), days=30)
    error = refusal(store, signed(path, old))
    assert error.code is Code.CERTIFICATE_EXPIRED and "valid only from" in error.message
    future = pki.leaf(pki.inter, "VN-MOIT", not_before=datetime.now(timezone.utc) + timedelta(days=2))
    error = refusal(store, signed(path, future))
    assert error.code is Code.CERTIFICATE_EXPIRED and "not valid before" in error.message


def test_revoked_certificate_after_a_crl_refresh(pki_env) -> None:  # type: ignore[no-untyped-def]
    store, pki, path = pki_env
    root = signed(path, pki.moit)
    Verifier().verify(root, store.policy("VN-MOIT"), "agency VN-MOIT")  # accepted and cached
    pki.revoke("gov-issuing.crl", pki.inter, pki.moit.certificate)
    assert store.refresh_crls() is True
    error = refusal(store, root)
    assert error.code is Code.CERTIFICATE_REVOKED and "was revoked by CN=gov-issuing" in error.message
    assert f"{pki.moit.certificate.serial_number:x}" in error.message


def test_revoked_intermediate(pki_env) -> None:  # type: ignore[no-untyped-def]
    store, pki, path = pki_env
    pki.revoke("gov-root.crl", pki.root, pki.inter.certificate)
    store.refresh_crls()
    error = refusal(store, signed(path, pki.moit))
    assert error.code is Code.CERTIFICATE_REVOKED and "CA certificate CN=gov-issuing" in error.message


def test_untrusted_chain(pki_env) -> None:  # type: ignore[no-untyped-def]
    store, pki, path = pki_env
    impostor = pki.leaf(pki.rogue, "VN-MOIT")  # the right subject from a CA VN-MOIT does not trust
    error = refusal(store, signed(path, impostor))
    assert error.code is Code.UNTRUSTED_CHAIN and "does not chain to a CA trusted for agency VN-MOIT" in error.message
    key = new_key("rsa")  # issued by the right CA but not allowed to sign documents
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "VN-MOIT")]))
        .issuer_name(pki.inter.certificate.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(datetime.now(timezone.utc) - timedelta(minutes=5)).not_valid_after(datetime.now(timezone.utc) + timedelta(days=5))
        .add_extension(x509.KeyUsage(False, False, True, False, False, False, False, False, False), critical=True)
        .sign(pki.inter.key, hashes.SHA256())
    )
    error = refusal(store, signed(path, Issuer(key, cert)))
    assert error.code is Code.UNTRUSTED_CHAIN and "may not sign documents" in error.message


def test_weak_algorithm(pki_env) -> None:  # type: ignore[no-untyped-def]
    store, pki, path = pki_env
    root = signed(path, pki.moit)
    root.find(f".//{{{DSIG}}}SignatureMethod").set("Algorithm", "http://www.w3.org/2000/09/xmldsig#rsa-sha1")
    error = refusal(store, root)
    assert error.code is Code.WEAK_ALGORITHM and "rsa-sha1" in error.message
    root = signed(path, pki.moit)
    root.find(f".//{{{DSIG}}}DigestMethod").set("Algorithm", "http://www.w3.org/2000/09/xmldsig#sha1")
    assert refusal(store, root).code is Code.WEAK_ALGORITHM
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    weak = Issuer(small, issue(small, "VN-MOIT signer", organization="VN-MOIT", issuer=pki.inter))
    error = refusal(store, signed(path, weak))
    assert error.code is Code.WEAK_ALGORITHM and "1024 bits" in error.message


def test_a_signed_info_stuffed_to_blow_up_in_canonicalisation_is_refused_first(pki_env) -> None:  # type: ignore[no-untyped-def]
    """signxml canonicalises SignedInfo before it checks the signature value: prefixed elements
    or attributes bound to long namespace URIs, repeated by exclusive c14n on each element, made
    600 KB of input cost 244 MB. Anyone can send that; it is refused before any cryptography."""
    store, pki, path = pki_env
    long_uri = "urn:" + "x" * 2000
    for stuff in ("elements", "attributes", "count"):
        root = signed(path, pki.moit)
        transform = root.find(f".//{{{DSIG}}}Transform")
        if stuff == "elements":
            for i in range(200):
                etree.SubElement(transform, f"{{{long_uri}{i % 8}}}x")
        elif stuff == "attributes":
            transform.set(f"{{{long_uri}}}a", "")
        else:
            for i in range(70):
                transform.set(f"b{i}", "")
        error = refusal(store, root)
        assert error.code is Code.SIGNATURE_INVALID and "refused before any cryptography" in error.message, error
        assert len(error.message) < 300  # the stuffing is not echoed back
    assert Verifier().verify(signed(path, pki.moit), store.policy("VN-MOIT"), "agency VN-MOIT")  # the usual shape passes


def test_missing_signature(pki_env) -> None:  # type: ignore[no-untyped-def]
    store, pki, path = pki_env
    error = refusal(store, envelope(path))
    assert error.code is Code.SIGNATURE_MISSING and "VN-MOIT must sign" in error.message


# each breaks a signature's structure; signxml used to raise TypeError or DocumentInvalid (ERR99)
def _empty_signature_value(signature: etree._Element) -> etree._Element:
    value = signature.find(f"{{{DSIG}}}SignatureValue")
    value.text = None
    return value


def _no_digest_value(signature: etree._Element) -> etree._Element:
    value = signature.find(f".//{{{DSIG}}}DigestValue")
    value.getparent().remove(value)
    return signature.find(f".//{{{DSIG}}}Reference")


def _empty_x509_data(signature: etree._Element) -> etree._Element:
    data = signature.find(f".//{{{DSIG}}}X509Data")
    for child in list(data):
        data.remove(child)
    return data


def _no_signature_method(signature: etree._Element) -> etree._Element:
    method = signature.find(f".//{{{DSIG}}}SignatureMethod")
    method.getparent().remove(method)
    return signature.find(f".//{{{DSIG}}}Reference")


MALFORMED_SIGNATURES = [
    (_empty_signature_value, "ds:SignatureValue is empty"),
    (_no_digest_value, "Element 'ds:Reference': Missing child element(s). Expected is ( ds:DigestValue )"),
    (_empty_x509_data, "Element 'ds:X509Data': Missing child element(s)"),
    (_no_signature_method, "Element 'ds:Reference': This element is not expected. Expected is ( ds:SignatureMethod )"),
]


def malformed(data: bytes, damage) -> tuple[etree._Element, int]:  # type: ignore[no-untyped-def]
    """``data`` with its signature damaged and spread over lines, and the line of the element at fault."""
    root = etree.fromstring(data)
    signature = root.find(f"{{{DSIG}}}Signature")
    element = damage(signature)
    at_fault = list(signature.iter()).index(element)
    etree.indent(signature)  # one element a line, so a location can name the element, not the signature
    root = etree.fromstring(etree.tostring(root))
    return root, list(root.find(f"{{{DSIG}}}Signature").iter())[at_fault].sourceline


@pytest.mark.parametrize(("damage", "sentence"), MALFORMED_SIGNATURES, ids=[d.__name__.strip("_") for d, _ in MALFORMED_SIGNATURES])
def test_a_signature_that_is_not_well_formed_is_refused_not_an_internal_error(pki_env, damage, sentence) -> None:  # type: ignore[no-untyped-def]
    _, pki, path = pki_env
    root, line = malformed(etree.tostring(signed(path, pki.moit)), damage)
    with pytest.raises(Rejected) as info:
        # pinned: the store would refuse an empty X509Data before signxml sees it (ERR29, no certificate)
        Verifier().verify(root, Pinned([pki.moit.certificate]), "agency VN-MOIT")
    error = info.value
    assert error.code is Code.SIGNATURE_INVALID
    assert error.message.startswith("the signature is not well-formed: ") and sentence in error.message, error
    assert error.location == f"line {line}" and line > root.find(f"{{{DSIG}}}Signature").sourceline


def test_the_pipeline_nacks_a_signature_that_is_not_well_formed(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    runtime = Runtime.load(path)
    try:
        good = Sender(runtime.config, "VN-MOIT").message()
        for damage, sentence in MALFORMED_SIGNATURES[:3]:
            root, line = malformed(good, damage)
            code, message, location = nack_code(runtime, etree.tostring(root))
            assert (code, location) == (Code.SIGNATURE_INVALID.value, f"line {line}") and sentence in message, message
        assert runtime.pipeline.submit(good).accepted
    finally:
        runtime.close()


def test_crl_missing_at_start_up_fails_closed(tmp_path: Path) -> None:
    path, pki = pki_config(tmp_path, moit_crl=f'"{tmp_path}/nowhere.crl"')
    store = TrustStore.from_config(load_config(path))
    error = refusal(store, signed(path, pki.moit))
    assert error.code is Code.CRL_UNAVAILABLE and "nowhere.crl" in error.message
    write_crl(tmp_path / "nowhere.crl", pki.inter)
    store.refresh_crls()
    error = refusal(store, signed(path, pki.moit))  # that CRL covers the leaf; the root's (for the intermediate) is missing
    assert error.code is Code.CRL_UNAVAILABLE and "no CRL of CN=gov-root" in error.message


def test_a_hub_started_while_the_crl_server_is_down_uses_the_copy_it_kept(tmp_path: Path) -> None:
    """The last good CRL of an http location is kept on disk (``[trust] crl_cache``): a restart
    during the CA's outage does not refuse the agency's traffic; a damaged copy still fails closed."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    pki_folder = tmp_path / "pki"
    pki_folder.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(SimpleHTTPRequestHandler, directory=str(pki_folder)))
    base = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        path, pki = pki_config(tmp_path, moit_crl=f'["{base}/gov-root.crl", "{base}/gov-issuing.crl"]')
        first = TrustStore.from_config(load_config(path))
        Verifier().verify(signed(path, pki.moit), first.policy("VN-MOIT"), "agency VN-MOIT")
    finally:
        server.shutdown()
        server.server_close()
    kept = sorted((tmp_path / "var" / "crl-cache").glob("*.crl"))
    assert len(kept) == 2  # one a location; local files are not copied
    restarted = TrustStore.from_config(load_config(path))  # the server is down now
    Verifier().verify(signed(path, pki.moit), restarted.policy("VN-MOIT"), "agency VN-MOIT")
    assert "cannot read" in (restarted.sources[f"{base}/gov-issuing.crl"].error or "")
    issuing = restarted.sources[f"{base}/gov-issuing.crl"]
    assert issuing.kept is not None and issuing.kept in kept
    good = issuing.kept.read_bytes()
    # a copy is judged like a download: damaged, or signed by another CA, it is refused (fail closed)
    for bad in (b"not a CRL", _crl_bytes(tmp_path / "rogue.crl", pki.rogue)):
        issuing.kept.write_bytes(bad)
        error = refusal(TrustStore.from_config(load_config(path)), signed(path, pki.moit))
        assert error.code is Code.CRL_UNAVAILABLE
    # a reload (SIGHUP) while the server is down keeps the newer CRL the hub holds, not an older copy
    issuing.kept.write_bytes(_crl_bytes(tmp_path / "older.crl", pki.inter, this_update=datetime.now(timezone.utc) - timedelta(days=2)))
    reloaded = TrustStore.from_config(load_config(path))
    newer = issuing.loaded
    assert newer is not None and reloaded.sources[issuing.location].loaded.this_update < newer.this_update  # type: ignore[union-attr]
    restarted.adopt(reloaded)
    assert restarted.sources[issuing.location].loaded is newer
    issuing.kept.write_bytes(good)
    path.write_text(path.read_text() + '\n[trust]\ncrl_cache = ""\n')  # no copies kept: fail closed as before
    error = refusal(TrustStore.from_config(load_config(path)), signed(path, pki.moit))
    assert error.code is Code.CRL_UNAVAILABLE and "cannot read" in error.message


@pytest.mark.parametrize("server", ["endless", "dripping"])
def test_a_crl_server_sending_without_end_is_cut_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: str) -> None:
    """A CRL location answering a body with no end (no Content-Length, chunk after chunk) is read
    up to ``CRL_LIMIT`` and no further; one that drips its bytes, each within the fetch time-out,
    is given ``CRL_SECONDS`` in all (the CRLs are refreshed one after another). The refresh fails
    closed with the reason."""
    import functools
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from hub import truststore

    monkeypatch.setattr(truststore, "CRL_LIMIT", 1024 * 1024)
    monkeypatch.setattr(truststore, "CRL_SECONDS", 1.0)
    sent = []

    class Endless(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunk = b"x" * (65536 if server == "endless" else 16)
            try:
                for _ in range(256):  # 16 MiB (or 25 s of drips) at most, then the test server stops by itself
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
                    sent.append(len(chunk))
                    if server == "dripping":
                        time.sleep(0.1)
            except OSError:
                pass  # the hub hung up

        def log_message(self, *args: object) -> None:
            pass

    http = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Endless))
    http.daemon_threads = True
    threading.Thread(target=http.serve_forever, daemon=True).start()
    try:
        location = f"http://127.0.0.1:{http.server_address[1]}/gov-issuing.crl"
        source = truststore.CrlSource(location, tmp_path)
        started = time.monotonic()
        assert source.refresh() is False and source.loaded is None
        said = "larger than 1,048,576 bytes" if server == "endless" else "took more than 1 s to arrive"
        assert said in (source.error or ""), source.error
        assert time.monotonic() - started < 10
    finally:
        http.shutdown()
        http.server_close()
    assert sum(sent) < 16 * 1024 * 1024  # the hub stopped reading long before the server's end


def _crl_bytes(path: Path, issuer: Issuer, **kwargs) -> bytes:  # type: ignore[no-untyped-def]
    write_crl(path, issuer, **kwargs)
    return path.read_bytes()


def test_stale_crl_fails_closed_after_the_grace(pki_env) -> None:  # type: ignore[no-untyped-def]
    store, pki, path = pki_env
    long_ago = datetime.now(timezone.utc) - timedelta(days=10)
    write_crl(pki.folder / "gov-issuing.crl", pki.inter, days=1, this_update=long_ago - timedelta(days=1))  # older: refused
    store.refresh_crls()
    assert "older than the CRL already loaded" in (store.sources[f"file://{pki.folder}/gov-issuing.crl"].error or "")
    write_crl(pki.folder / "gov-issuing.crl", pki.inter, days=1, this_update=long_ago)
    fresh = TrustStore.from_config(load_config(path))  # a hub started with only the stale CRL
    error = refusal(fresh, signed(path, pki.moit))
    assert error.code is Code.CRL_UNAVAILABLE and "stale" in error.message
    within_grace = TrustStore.from_config(load_config(path))
    within_grace.crl_grace = timedelta(days=30)
    within_grace.refresh_crls()
    Verifier().verify(signed(path, pki.moit), within_grace.policy("VN-MOIT"), "agency VN-MOIT")


def test_the_scheduled_job_refreshes_crls(pki_env) -> None:  # type: ignore[no-untyped-def]
    store, pki, path = pki_env
    root = signed(path, pki.moit)
    Verifier().verify(root, store.policy("VN-MOIT"), "agency VN-MOIT")
    jobs = TrustJobs(store, refresh_seconds=0.1)
    jobs.start()
    try:
        pki.revoke("gov-issuing.crl", pki.inter, pki.moit.certificate)

        def revoked() -> bool:
            try:
                Verifier().verify(root, store.policy("VN-MOIT"), "agency VN-MOIT")
                return False
            except Rejected as exc:
                return exc.code is Code.CERTIFICATE_REVOKED

        assert wait_until(revoked, 10)
    finally:
        jobs.stop()


def test_agencies_sharing_a_ca_must_be_told_apart(tmp_path: Path) -> None:
    path, pki = pki_config(tmp_path)
    text = path.read_text()
    mard = f'certificates = ["{tmp_path}/keys/VN-MARD.crt"]'
    path.write_text(text.replace(mard, f'trust_anchors = ["{pki.folder}/gov-root.crt"]'))
    with pytest.raises(ConfigError) as info:
        TrustStore.from_config(load_config(path))
    assert "trust the same CA" in info.value.reason and "subject" in info.value.key
    path.write_text(text.replace(mard, f'trust_anchors = ["{pki.folder}/gov-root.crt"]\nsubject = "O=VN-MARD"'))
    store = TrustStore.from_config(load_config(path))
    mard_leaf = pki.leaf(pki.root, "VN-MARD")
    error = refusal(store, signed(path, mard_leaf))  # the same CA, but VN-MARD's subject: not VN-MOIT's
    assert error.code is Code.WRONG_SIGNER and "certificate of VN-MARD" in error.message

    # one subject within the other: every certificate of VN-MARD would pass as VN-MOIT's
    path.write_text(text.replace(mard, f'trust_anchors = ["{pki.folder}/gov-root.crt"]\nsubject = "OU=Permits,O=VN-MOIT"'))
    with pytest.raises(ConfigError) as info:
        TrustStore.from_config(load_config(path))
    assert info.value.key == "agencies[VN-MOIT].subject" and "carries all that VN-MOIT requires (O=VN-MOIT)" in info.value.reason
    # subjects apart, but one certificate carries both: it is refused as either agency's
    path.write_text(text.replace(mard, f'trust_anchors = ["{pki.folder}/gov-root.crt"]\nsubject = "CN=VN-MARD signer"'))
    store = TrustStore.from_config(load_config(path))
    key = new_key("ec")
    both = Issuer(key, issue(key, "VN-MARD signer", organization="VN-MOIT", issuer=pki.root))
    for sender in ("VN-MOIT", "VN-MARD"):
        error = refusal(store, signed(path, both, sender=sender), sender)
        assert error.code is Code.WRONG_SIGNER and "cannot tell which agency signed" in error.message, error.message
    Verifier().verify(signed(path, pki.moit), store.policy("VN-MOIT"), "agency VN-MOIT")  # VN-MOIT's own still passes
    mard_only = Issuer(key, issue(key, "VN-MARD signer", organization="VN-MARD", issuer=pki.root))
    Verifier().verify(signed(path, mard_only, sender="VN-MARD"), store.policy("VN-MARD"), "agency VN-MARD")
    # the same certificate under VN-MOIT's intermediate, sent without it: judged on the path validated
    under = Issuer(key, issue(key, "VN-MARD signer", organization="VN-MOIT", issuer=pki.inter))
    error = refusal(store, signed(path, under))
    assert error.code is Code.WRONG_SIGNER and "VN-MARD" in error.message, error.message
    # a CA under another agency's anchor is that anchor's too: the subjects are compared at start
    path.write_text(text.replace(mard, f'trust_anchors = ["{pki.folder}/gov-issuing.crt"]\nsubject = "OU=Permits,O=VN-MOIT"'))
    with pytest.raises(ConfigError) as info:
        TrustStore.from_config(load_config(path))
    assert info.value.key == "agencies[VN-MOIT].subject" and "trust the same CA" in info.value.reason


def test_a_crl_needs_its_ca(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    text = path.read_text().replace(f'certificates = ["{tmp_path}/keys/VN-MARD.crt"]',
                                    f'certificates = ["{tmp_path}/keys/VN-MARD.crt"]\ncrl = "x.crl"')
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        TrustStore.from_config(load_config(path))
    assert info.value.key == "agencies[VN-MARD].crl"


# -- the pipeline answers with the same codes ------------------------------------------------------------


def nack_code(runtime: Runtime, data: bytes) -> tuple[str, str, str | None]:
    ack = runtime.pipeline.submit(data)
    assert not ack.accepted
    (error,) = read_errors(Verifier().verify(etree.fromstring(ack.xml), [runtime.signer.certificate], "hub").element)
    return error


def test_pipeline_accepts_a_ca_issued_signer_and_nacks_revoked_and_missing_crls(tmp_path: Path) -> None:
    path, pki = pki_config(tmp_path)
    runtime = Runtime.load(path)
    try:
        data = etree.tostring(signed(path, pki.moit))
        assert runtime.pipeline.submit(data).accepted
        pki.revoke("gov-issuing.crl", pki.inter, pki.moit.certificate)
        runtime.trust.refresh_crls()  # type: ignore[union-attr]
        code, message, _ = nack_code(runtime, etree.tostring(signed(path, pki.moit)))
        assert code == Code.CERTIFICATE_REVOKED.value
        (pki.folder / "gov-root.crl").unlink()
        runtime.trust.refresh_crls()  # type: ignore[union-attr]
        code, _, _ = nack_code(runtime, etree.tostring(signed(path, pki.moit)))
        assert code == Code.CERTIFICATE_REVOKED.value  # the last good root CRL stays until its nextUpdate + grace
        assert "cannot read" in (runtime.trust.sources[f"{pki.folder}/gov-root.crl"].error or "")  # type: ignore[union-attr]
        code, _, _ = nack_code(runtime, etree.tostring(envelope(path)))
        assert code == Code.SIGNATURE_MISSING.value
    finally:
        runtime.close()
    errors, _ = check(path)
    assert any("gov-root.crl" in e and "agencies[VN-MOIT].crl" in e for e in errors)


# -- key rotation and expiry ---------------------------------------------------------------------------------


def test_an_agency_may_have_an_old_and_a_new_certificate(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    config = load_config(path)
    old = Sender(config, "VN-MARD")
    key = new_key("ec")
    new_cert = issue(key, "VN-MARD 2", organization="VN-MARD")
    write_certificate(tmp_path / "keys" / "VN-MARD-next.crt", new_cert)
    path.write_text(path.read_text().replace(f'certificates = ["{tmp_path}/keys/VN-MARD.crt"]',
                                             f'certificates = ["{tmp_path}/keys/VN-MARD.crt", "{tmp_path}/keys/VN-MARD-next.crt"]'))
    store = TrustStore.from_config(load_config(path))
    for signer in (old.signer, Signer(key, new_cert)):
        root = signer.sign(envelope(path, "VN-MARD"))
        assert Verifier().verify(root, store.policy("VN-MARD"), "agency VN-MARD").certificate == signer.certificate


def get_keys(runtime: Runtime) -> httpx.Response:
    """``GET /keys`` from the route ``hub serve`` mounts."""
    keys_route = [r for r in runtime.listener_routes() if getattr(r, "path", None) == "/keys"]

    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=Starlette(routes=keys_route))
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
            return await client.get("/keys")

    return asyncio.run(get())


def test_the_hub_publishes_its_next_key_and_warns_before_expiry(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace("max_depth = 40\n", f'max_depth = 40\nnext_key = "{tmp_path}/keys/hub-next.key"\n'
                                             f'next_certificate = "{tmp_path}/keys/hub-next.crt"\n'))
    lines = init_keys(load_config(path))
    assert any("hub-next.key (0600)" in line for line in lines)
    assert (tmp_path / "keys" / "hub-next.key").stat().st_mode & 0o777 == 0o600
    soon = new_key("ec")
    write_certificate(tmp_path / "keys" / "VN-MARD.crt", issue(soon, "VN-MARD", organization="VN-MARD", days=10))
    write_private_key(tmp_path / "keys" / "VN-MARD.key", soon)  # its demo signing key (`hub keys` checks they belong together)
    runtime = Runtime.load(path)
    try:
        assert [c.subject for c in runtime.signer.published] == [runtime.signer.certificate.subject, load_certificates(tmp_path / "keys" / "hub-next.crt")[0].subject]
        assert runtime.signer.next_certificate is not None and runtime.signer.next_certificate != runtime.signer.certificate
        with caplog.at_level(logging.WARNING, logger="hub.keys"):
            runtime.start_jobs()  # `hub serve`: the daily expiry warning runs at once
            assert wait_until(lambda: any("VN-MARD" in r.getMessage() and "expires in 9 day(s)" in r.getMessage() for r in caplog.records), 10)
        response = get_keys(runtime)
        assert response.status_code == 200 and response.headers["content-type"] == "application/x-pem-file"
        assert x509.load_pem_x509_certificates(response.content) == list(runtime.signer.published)
    finally:
        runtime.close()
    out = subprocess.run([sys.executable, "-m", "hub.cli", "keys", "--config", str(path)], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert "next certificate" in out.stdout and "WARNING" in out.stdout and "need attention" in out.stdout
    assert "PRIVATE KEY" not in out.stdout + out.stderr


def test_hub_keys_checks_the_private_keys_too(tmp_path: Path) -> None:
    """A private key others can read, one missing, one that is not its certificate's, and a next
    certificate that expires before the current one: each said by `hub keys` (and `hub check`)."""
    path = write_config(tmp_path)
    keys = tmp_path / "keys"

    def listed(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "hub.cli", *args, "--config", str(path)], capture_output=True, text=True, cwd=REPO)

    out = listed("keys")
    assert out.returncode == 0 and "hub            signing key" in out.stdout and "VN-MOIT        signing key" in out.stdout, out.stdout
    (keys / "hub.key").chmod(0o644)
    out, checked = listed("keys"), listed("check")
    assert out.returncode == 0 and "hub            signing key              -  WARNING" in out.stdout, out.stdout
    assert f"({keys}/hub.key): readable by other users (mode 0644): chmod 600 {keys}/hub.key" in out.stderr, out.stderr
    assert checked.returncode == 0 and f"{keys}/hub.key: hub.key: warning: readable by other users (mode 0644)" in checked.stdout, checked.stdout
    (keys / "hub.key").chmod(0o600)
    moit = (keys / "VN-MOIT.key").read_bytes()
    write_private_key(keys / "VN-MOIT.key", new_key("ec"))  # no longer the key of VN-MOIT.crt
    out = listed("keys")
    assert out.returncode == 1 and f"it belongs to no certificate in {keys}/VN-MOIT.crt" in out.stdout, out.stdout
    (keys / "VN-MOIT.key").unlink()
    out = listed("keys")
    assert out.returncode == 1 and "PROBLEM" in out.stdout and "the private key file does not exist" in out.stdout, out.stdout
    assert "PRIVATE KEY" not in out.stdout + out.stderr
    (keys / "VN-MOIT.key").write_bytes(moit)
    (keys / "VN-MOIT.key").chmod(0o600)

    next_key = new_key("ec")
    write_private_key(keys / "hub-next.key", next_key)
    write_certificate(keys / "hub-next.crt", issue(next_key, "VN-NSW next", organization="VN-NSW", days=10))
    path.write_text(path.read_text().replace("max_depth = 40\n", f'max_depth = 40\nnext_key = "{keys}/hub-next.key"\n'
                                             f'next_certificate = "{keys}/hub-next.crt"\n'))
    out = listed("keys")
    assert out.returncode == 0, out.stdout
    assert "hub            next certificate         9  WARNING" in out.stdout, out.stdout
    assert "WARNING: hub next certificate" in out.stderr and "it expires before the signing certificate" in out.stderr, out.stderr


def test_next_key_must_match_its_certificate(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    write_private_key(tmp_path / "keys" / "other.key", new_key("ec"))
    path.write_text(path.read_text().replace("max_depth = 40\n", f'max_depth = 40\nnext_key = "{tmp_path}/keys/other.key"\n'
                                             f'next_certificate = "{tmp_path}/keys/hub.crt"\n'))
    with pytest.raises(ConfigError) as info:
        Runtime.load(path)
    assert info.value.key == "hub.next_key" and "does not belong" in info.value.reason


def with_previous(path: Path, certificate: x509.Certificate, next_key: bool = True) -> Path:
    """``hub.toml`` at ``path`` naming ``certificate`` as the hub's previous one (and a next key pair)."""
    keys = path.parent / "keys"
    write_certificate(keys / "hub-old.crt", certificate)
    extra = f'previous_certificate = "{keys}/hub-old.crt"\n'
    if next_key:
        extra = f'next_key = "{keys}/hub-next.key"\nnext_certificate = "{keys}/hub-next.crt"\n' + extra
    path.write_text(path.read_text().replace("max_depth = 40\n", "max_depth = 40\n" + extra, 1))
    init_keys(load_config(path))
    return path


def hub_cli(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hub.cli", *args, "--config", str(path)], capture_output=True, text=True, cwd=REPO)


def test_the_previous_certificate_is_published_after_the_current_and_next_until_it_expires(tmp_path: Path) -> None:
    old_key = new_key("ec")
    old = issue(old_key, "VN-NSW", organization="VN-NSW", days=100)
    path = with_previous(write_config(tmp_path), old)
    runtime = Runtime.load(path)
    try:
        current, upcoming = runtime.signer.certificate, load_certificates(tmp_path / "keys" / "hub-next.crt")[0]
        assert x509.load_pem_x509_certificates(get_keys(runtime).content) == [current, upcoming, old]
    finally:
        runtime.close()
    out = hub_cli(path, "keys")
    assert out.returncode == 0, out.stdout + out.stderr
    row = next(line for line in out.stdout.splitlines() if "previous certificate" in line)
    assert row.startswith("hub            previous certificate    99  ok       CN=VN-NSW,O=VN-NSW"), row
    assert row.endswith(f"({tmp_path}/keys/hub-old.crt)"), row

    expired = issue(old_key, "VN-NSW", organization="VN-NSW", not_before=datetime.now(timezone.utc) - timedelta(days=400), days=395)
    write_certificate(tmp_path / "keys" / "hub-old.crt", expired)
    runtime = Runtime.load(path)
    try:
        assert x509.load_pem_x509_certificates(get_keys(runtime).content) == [current, upcoming]
    finally:
        runtime.close()
    out = hub_cli(path, "keys")
    assert out.returncode == 0, out.stdout + out.stderr  # a note, not a problem
    assert "hub            previous certificate    -6  WARNING" in out.stdout, out.stdout
    assert "expired 6 day(s) ago: no longer published (GET /keys); remove hub.previous_certificate" in out.stderr, out.stderr
    checked = hub_cli(path, "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    said = f"{tmp_path}/keys/hub-old.crt: hub.previous_certificate: warning: previous certificate CN=VN-NSW,O=VN-NSW: expired 6 day(s) ago"
    assert (checked.stdout + checked.stderr).count(said) == 1, checked.stdout + checked.stderr


def test_get_keys_during_a_rotation_reload_still_publishes_the_old_certificate() -> None:
    """A reload (``swap``) landing between the two reads of ``published`` (a GET /keys while SIGHUP
    is applied): the old certificate, which the rows signed before the rotation carry, is published
    by either side of the swap, never left out (with the previous certificate read first, the new
    signer came without it)."""
    from types import SimpleNamespace

    from hub.keys import CurrentSigner

    old = SimpleNamespace(not_valid_after_utc=datetime.now(timezone.utc) + timedelta(days=30))
    before, after = SimpleNamespace(published=(old, "next")), SimpleNamespace(published=("next",))

    class ReloadedMidway(CurrentSigner):
        swapped = False

        def __getattribute__(self, name: str) -> object:
            value = super().__getattribute__(name)
            if name in ("current", "previous") and not super().__getattribute__("swapped"):
                self.swapped = True
                self.swap(after, old)  # type: ignore[arg-type]
            return value

    signer = ReloadedMidway(before)  # type: ignore[arg-type]
    assert old in signer.published


@pytest.mark.parametrize("content, said", [
    (None, "it is the current certificate (CN=Test hub,O=VN-NSW,C=VN, serial "),
    (b"", "the file is empty"),
    (b"not a certificate\n", "not a readable PEM certificate"),
])
def test_a_previous_certificate_that_is_the_current_one_or_unreadable_is_refused(tmp_path: Path, content: bytes | None, said: str) -> None:
    path = write_config(tmp_path)
    current = load_certificates(tmp_path / "keys" / "hub.crt")[0]
    with_previous(path, current, next_key=False)
    if content is not None:
        (tmp_path / "keys" / "hub-old.crt").write_bytes(content)
    with pytest.raises(ConfigError) as info:
        Runtime.load(path)
    assert info.value.key == "hub.previous_certificate" and info.value.file == f"{tmp_path}/keys/hub-old.crt"
    assert said in info.value.reason, info.value.reason
    errors, _ = check(path)
    assert errors == [str(info.value)]


def test_a_missing_previous_certificate_is_refused_like_the_other_certificates(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace("max_depth = 40\n", f'max_depth = 40\nprevious_certificate = "{tmp_path}/keys/gone.crt"\n'))
    errors, _ = check(path)
    assert errors == [f"{tmp_path}/keys/gone.crt: hub.previous_certificate: the certificate file does not exist"], errors


def test_hub_check_states_each_expiry_warning_once(tmp_path: Path) -> None:
    """Its own line for each, not also the log's: the hub's certificate, an agency's, and a CA in
    the hub's certificate file (a warning only the expiry log used to give)."""
    path = write_config(tmp_path)
    keys = tmp_path / "keys"
    ca_key, hub_key, mard_key = new_key("ec"), new_key("ec"), new_key("ec")
    ca = Issuer(ca_key, issue(ca_key, "hub CA", organization="VN-NSW", ca=True, days=8))
    hub_cert = issue(hub_key, "VN-NSW", organization="VN-NSW", issuer=ca, days=12)
    (keys / "hub.crt").write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in (hub_cert, ca.certificate)))
    write_private_key(keys / "hub.key", hub_key)
    write_certificate(keys / "VN-MARD.crt", issue(mard_key, "VN-MARD", organization="VN-MARD", days=10))
    write_private_key(keys / "VN-MARD.key", mard_key)
    out = hub_cli(path, "check")
    assert out.returncode == 0, out.stdout + out.stderr
    printed = out.stdout + out.stderr
    for subject in ("CN=VN-NSW,O=VN-NSW", "CN=VN-MARD,O=VN-MARD", "CN=hub CA,O=VN-NSW"):
        assert printed.count(subject) == 1, (subject, printed)
    assert f"{keys}/hub.crt: hub.certificate: warning: chain CN=hub CA,O=VN-NSW: expires in 7 day(s)" in out.stdout, out.stdout


def test_keys_init_makes_a_demo_ca_crl_and_issued_certificates(tmp_path: Path) -> None:
    for name in ("xsd", "mappings", "examples"):
        os.symlink(REPO / name, tmp_path / name)
    (tmp_path / "hub.toml").write_text((REPO / "hub.toml").read_text())
    out = subprocess.run([sys.executable, "-m", "hub.cli", "keys", "init", "--config", str(tmp_path / "hub.toml")],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0 and "demo CA" in out.stdout and "issued by" in out.stdout
    assert "PRIVATE KEY" not in out.stdout + out.stderr
    demo = tmp_path / "keys" / "demo"
    for key in demo.glob("*.key"):
        assert key.stat().st_mode & 0o777 == 0o600
    moit = load_certificates(demo / "VN-MOIT.crt")[0]
    moit.verify_directly_issued_by(load_certificates(demo / "vn-ca.crt")[0])
    assert x509.load_pem_x509_crl((demo / "vn-ca.crl").read_bytes()).next_update_utc is not None
    runtime = Runtime.load(tmp_path / "hub.toml")
    try:
        sender = Sender(runtime.config, "VN-MOIT")
        assert runtime.pipeline.submit(sender.message()).accepted
    finally:
        runtime.close()


# -- commands -------------------------------------------------------------------------------------------


def hub(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hub.cli", *args], capture_output=True, text=True, cwd=REPO)


def test_sign_and_verify_commands(tmp_path: Path) -> None:
    path, pki = pki_config(tmp_path)
    key, cert = tmp_path / "moit.key", tmp_path / "moit.crt"
    write_private_key(key, pki.moit.key)
    write_certificate(cert, pki.moit.certificate)
    unsigned = tmp_path / "in.xml"
    unsigned.write_bytes(etree.tostring(envelope(path)))
    out = hub("sign", "--key", str(key), "--cert", str(cert), str(unsigned), str(tmp_path / "out.xml"))
    assert out.returncode == 0, out.stderr
    good = hub("verify", "--cert", str(cert), str(tmp_path / "out.xml"))
    assert good.returncode == 0 and good.stdout.strip() == "CN=VN-MOIT signer,O=VN-MOIT"
    good = hub("verify", "--config", str(path), "--agency", "VN-MOIT", str(tmp_path / "out.xml"))
    assert good.returncode == 0 and good.stdout.strip() == "CN=VN-MOIT signer,O=VN-MOIT"
    wrong = hub("verify", "--config", str(path), "--agency", "TH-ASW", str(tmp_path / "out.xml"))
    assert wrong.returncode == 1 and "ERR41 UNTRUSTED_CHAIN" in wrong.stderr and wrong.stdout == ""
    (tmp_path / "bad.xml").write_bytes(tampered((tmp_path / "out.xml").read_bytes()))
    bad = hub("verify", "--cert", str(cert), str(tmp_path / "bad.xml"))
    assert bad.returncode == 1 and "ERR22 SIGNATURE_INVALID" in bad.stderr and "changed after signing" in bad.stderr
    unsigned_out = hub("verify", "--cert", str(cert), str(unsigned))
    assert unsigned_out.returncode == 1 and "ERR21" in unsigned_out.stderr


def test_verify_command_names_a_signature_that_is_not_well_formed(tmp_path: Path) -> None:
    path, pki = pki_config(tmp_path)
    cert = tmp_path / "moit.crt"
    write_certificate(cert, pki.moit.certificate)
    root, line = malformed(etree.tostring(signed(path, pki.moit)), _no_digest_value)
    (tmp_path / "broken.xml").write_bytes(etree.tostring(root))
    out = hub("verify", "--cert", str(cert), str(tmp_path / "broken.xml"))
    assert out.returncode == 1 and out.stdout == "" and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.startswith("invalid: ERR22 SIGNATURE_INVALID: the signature is not well-formed: ")
    assert "ds:DigestValue" in out.stderr and f"(line {line})" in out.stderr


def test_pinned_policy_without_a_store() -> None:
    key = new_key("ec")
    cert = issue(key, "solo")
    root = Signer(key, cert).sign(etree.fromstring(b"<doc><a>1</a></doc>"))
    assert Verifier().verify(root, Pinned([cert]), "solo").subject == "CN=solo"
    other = new_key("ec")
    with pytest.raises(Rejected) as info:
        Verifier().verify(root, [issue(other, "someone else")], "solo")
    assert info.value.code is Code.UNKNOWN_SIGNER



def test_concurrent_verifications_never_mix_certificates() -> None:
    """signxml's verifier keeps the certificate on the instance; the hub uses one per thread."""
    a_key, b_key = new_key("ec"), new_key("ec")
    a, b = issue(a_key, "A"), issue(b_key, "B")
    honest = Signer(b_key, b).sign(etree.fromstring(b"<doc><x>1</x></doc>"))
    forged = copy.deepcopy(honest)  # signed with B's key, presenting A's certificate
    forged.find(f".//{{{DSIG}}}X509Certificate").text = base64.b64encode(a.public_bytes(Encoding.DER)).decode()
    verifier, accepted = Verifier(), []

    def attack() -> None:
        for _ in range(400):
            try:
                verifier.verify(forged, [a], "A")
                accepted.append(1)
            except Rejected:
                pass

    def work() -> None:
        for _ in range(400):
            verifier.verify(honest, [b], "B")

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=f) for f in (attack, work)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert accepted == []


def test_a_key_or_certificate_file_in_the_wrong_form_is_named_for_what_it_holds(tmp_path: Path) -> None:
    """An empty file, the DER form, or a certificate where the key goes: the sentence says which,
    and how to convert DER, instead of the PEM reader's "MalformedFraming"."""
    from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

    from hub.trust import load_private_key

    key = new_key("ec")
    cert = issue(key, "Wrong form", days=1)
    (tmp_path / "key.der").write_bytes(key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption()))
    (tmp_path / "cert.der").write_bytes(cert.public_bytes(Encoding.DER))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(Encoding.PEM))
    (tmp_path / "empty.pem").write_bytes(b"\n")
    cases = [
        (load_private_key, "key.der", "DER (binary), not PEM: convert it with `openssl pkey -inform der"),
        (load_certificates, "cert.der", "DER (binary), not PEM: convert it with `openssl x509 -inform der"),
        (load_private_key, "cert.pem", "holds a PEM CERTIFICATE, not a private key"),
        (load_certificates, "empty.pem", "the file is empty"),
    ]
    for load, name, said in cases:
        with pytest.raises(ConfigError) as refused:
            load(tmp_path / name)
        assert said in str(refused.value), (name, str(refused.value))
    with pytest.raises(ConfigError) as missing:
        load_private_key(tmp_path / "absent.pem", "--key")  # `hub sign --key`: the user's own file
    assert "hub keys init" not in str(missing.value)
