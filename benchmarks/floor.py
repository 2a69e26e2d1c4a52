"""The floor: what one message costs in the primitives the path cannot avoid.

Measured with the hub's own libraries, classes and keys: the hardened parser (``hub.xml``), lxml's
libxml2 XSD validator, the compiled co-to-formd stylesheet, signxml verification with the hub's
settings, the hub's ``Signer``, and one durable SQLite commit (WAL, ``synchronous=FULL``, the
store's own pragmas) of a row as large as the outbound message. ``raw`` figures are the bare
cryptography under the XML-DSig: exclusive c14n + SHA-256 + the private or public key operation.

Two floors, both reported:

* ``measure``: each primitive timed alone, in a loop over one message (``common.timed``), summed.
  The primitive's code and data stay in the CPU's caches from one call to the next, and the commits
  follow each other with nothing between them: the least any of them can cost, and less than a
  message pays for them.
* ``chained``: the same primitives and calls one message after another, each message doing all of
  them in the order a message needs them (parse, envelope schema, verify, payload schema on the
  signed copy, XSLT, sign, serialise, commit), over as many distinct messages as the in-process run
  takes, best of three rounds as the in-process run: the floor of a message path, nothing of a hub
  around it (no header read, routing, duplicate check, audit, receipt or envelope building).
"""

from __future__ import annotations

import hashlib
import sqlite3
import tempfile
import time
from pathlib import Path

from lxml import etree

from .common import timed

DSIG = "http://www.w3.org/2000/09/xmldsig#"


def _hub_parts(config_path: Path):  # type: ignore[no-untyped-def]
    from hub.catalogue import SchemaCatalogue, load_mappings
    from hub.config import load_config
    from hub.trust import Signer, load_certificates, load_private_key
    from hub.xml import Schema, XmlParser

    config = load_config(config_path)
    h = config.hub
    schemas = SchemaCatalogue.from_config(config)
    mappings = load_mappings(config, schemas)
    moit = config.agencies["VN-MOIT"]
    return {
        "parser": XmlParser(h.limits),
        "envelope": Schema("envelope", h.envelope_schema, "hub.envelope_schema"),
        "co": schemas.by_name["co"],
        "formd": schemas.by_name["formd"],
        "stylesheet": mappings["co-to-formd"].stylesheet,
        "hub_signer": Signer(load_private_key(h.key), load_certificates(h.certificate)[0]),
        "moit_certificate": load_certificates(moit.certificates[0])[0],
    }


def _verifier(stock: bool = False):  # type: ignore[no-untyped-def]
    """signxml's verifier configured as the hub configures it: the hub's (``RootCopies``), or
    signxml's own class (``stock``), kept beside it to show what the copies cost."""
    from signxml import XMLVerifier

    from hub.trust import ENVELOPE_SIGNATURES, RootCopyingVerifier

    return (XMLVerifier() if stock else RootCopyingVerifier()), ENVELOPE_SIGNATURES


def _commit_timer(folder: Path, payload: bytes):  # type: ignore[no-untyped-def]
    db = sqlite3.connect(folder / "floor.db", isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.execute("CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY, payload BLOB NOT NULL)")

    def commit(data: bytes = payload) -> None:
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO outbox (payload) VALUES (?)", (data,))
        db.execute("COMMIT")

    return db, commit


def measure(config_path: Path, kind: str, size: str, inbound: bytes, *, quick: bool = False) -> dict:
    """Seconds per operation of each primitive for one signed inbound message (``inbound``)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding

    parts = _hub_parts(config_path)
    min_time = 0.05 if quick else 0.3
    repeats = 1 if quick else 3
    t = lambda fn: timed(fn, min_time=min_time, repeats=repeats, min_runs=3)  # noqa: E731

    parser = parts["parser"]
    root = parser.parse(inbound)
    payload = root.find("{urn:sw-hub:envelope:1}Body/{urn:sw-hub:envelope:1}Content")[0]
    document = etree.fromstring(etree.tostring(payload))  # the certificate as a document of its own
    formd = parts["stylesheet"].apply(document)

    from hub.client import Outgoing, envelope_for
    from hub.envelope import Party

    outbound = envelope_for(
        etree.fromstring(etree.tostring(formd)), Party("VN-MOIT", "VN"), Party("TH-ASW", "TH"), Outgoing("CO-FORMD")
    )
    signer = parts["hub_signer"]
    signed_out = etree.tostring(signer.sign(outbound), xml_declaration=True, encoding="UTF-8")
    verifier, vconfig = _verifier()
    stock_verifier = _verifier(stock=True)[0]
    received = parser.parse(inbound)
    cert = parts["moit_certificate"]
    key, public = signer.key, cert.public_key()

    def c14n_digest(element: etree._Element) -> bytes:
        return hashlib.sha256(etree.tostring(element, method="c14n", exclusive=True)).digest()

    signed_info = etree.fromstring(inbound).find(f"{{{DSIG}}}Signature/{{{DSIG}}}SignedInfo")
    signed_info_c14n = etree.tostring(signed_info, method="c14n", exclusive=True)
    if kind == "ec":
        private_op = lambda: key.sign(signed_info_c14n, ec.ECDSA(hashes.SHA256()))  # noqa: E731
        moit_sig = _moit_signature(config_path, signed_info_c14n)
        public_op = lambda: public.verify(moit_sig, signed_info_c14n, ec.ECDSA(hashes.SHA256()))  # noqa: E731
    else:
        private_op = lambda: key.sign(signed_info_c14n, padding.PKCS1v15(), hashes.SHA256())  # noqa: E731
        moit_sig = _moit_signature(config_path, signed_info_c14n)
        public_op = lambda: public.verify(moit_sig, signed_info_c14n, padding.PKCS1v15(), hashes.SHA256())  # noqa: E731

    unsigned_in = etree.fromstring(inbound)
    unsigned_in.remove(unsigned_in.find(f"{{{DSIG}}}Signature"))

    with tempfile.TemporaryDirectory(dir=str(config_path.parent)) as tmp:
        db, commit = _commit_timer(Path(tmp), signed_out)
        try:
            seconds = {
                "parse": t(lambda: parser.parse(inbound)),
                "validate": t(lambda: (parts["envelope"].validate(root), parts["co"].validate(payload))),
                "xslt": t(lambda: parts["stylesheet"].apply(document)),
                "verify": t(lambda: verifier.verify(received, x509_cert=cert, expect_config=vconfig)),
                "verify_signxml": t(lambda: stock_verifier.verify(inbound, x509_cert=cert, expect_config=vconfig)),
                "sign": t(lambda: signer.sign(outbound)),
                "sign_signxml": t(lambda: _signxml_signer(signer).sign(outbound, key=signer.key, cert=[signer.certificate])),
                "commit": t(commit),
                # what the XML-DSig libraries add to the bare cryptography
                "verify_raw": t(lambda: (c14n_digest(unsigned_in), public_op())),
                "sign_raw": t(lambda: (c14n_digest(outbound), private_op())),
                "validate_output": t(lambda: parts["formd"].validate(formd)),
                "serialize_out": t(lambda: etree.tostring(outbound, xml_declaration=True, encoding="UTF-8")),
            }
        finally:
            db.close()
    floor_keys = ("parse", "validate", "xslt", "verify", "sign", "commit")
    total = sum(seconds[k] for k in floor_keys)
    raw_total = total - seconds["verify"] - seconds["sign"] + seconds["verify_raw"] + seconds["sign_raw"]
    return {
        "size": size,
        "key": kind,
        "inbound_bytes": len(inbound),
        "outbound_bytes": len(signed_out),
        "ms": {k: round(v * 1e3, 4) for k, v in seconds.items()},
        "floor_ms": round(total * 1e3, 4),
        "floor_msgs_per_s": round(1 / total, 1),
        "floor_raw_crypto_ms": round(raw_total * 1e3, 4),
        "floor_raw_crypto_msgs_per_s": round(1 / raw_total, 1),
    }


def chained(config_path: Path, messages: list[bytes], warmup: int = 5, rounds: int = 3) -> dict:
    """Milliseconds per message of the floor's primitives chained, one message after another
    (see the module's docstring), and what each primitive took of it on the way."""
    parts = _hub_parts(config_path)
    verifier, vconfig = _verifier()
    parser, envelope, co, stylesheet = parts["parser"], parts["envelope"], parts["co"], parts["stylesheet"]
    signer, cert = parts["hub_signer"], parts["moit_certificate"]
    content = "{urn:sw-hub:envelope:1}Body/{urn:sw-hub:envelope:1}Content"
    clock = time.perf_counter
    spent = dict.fromkeys(("parse", "validate", "verify", "xslt", "sign", "commit"), 0.0)
    with tempfile.TemporaryDirectory(dir=str(config_path.parent)) as tmp:
        db, commit = _commit_timer(Path(tmp), b"")

        def one(data: bytes) -> None:
            t0 = clock()
            root = parser.parse(data)
            t1 = clock()
            envelope.validate(root)
            t2 = clock()
            signed = verifier.verify(root, x509_cert=cert, expect_config=vconfig).signed_xml
            t3 = clock()
            payload = signed.find(content)[0]
            co.validate(payload)
            t4 = clock()
            formd = stylesheet.apply(payload)
            t5 = clock()
            out = etree.tostring(signer.sign(formd), xml_declaration=True, encoding="UTF-8")
            t6 = clock()
            commit(out)
            t7 = clock()
            for key, took in (("parse", t1 - t0), ("validate", t2 - t1 + t4 - t3), ("verify", t3 - t2), ("xslt", t5 - t4),
                              ("sign", t6 - t5), ("commit", t7 - t6)):
                spent[key] += took

        try:
            for data in messages[:warmup]:
                one(data)
            todo = messages[warmup:]
            rounds = max(1, min(rounds, len(todo)))
            size = len(todo) // rounds
            best: tuple[float, int, dict] | None = None
            for r in range(rounds):
                part = todo[r * size : (r + 1) * size if r < rounds - 1 else None]
                for key in spent:
                    spent[key] = 0.0
                start = clock()
                for data in part:
                    one(data)
                wall = clock() - start
                if best is None or wall / len(part) < best[0] / best[1]:
                    best = (wall, len(part), dict(spent))
        finally:
            db.close()
    assert best is not None
    wall, n, parts_spent = best
    return {
        "messages": len(messages) - warmup,
        "ms_per_msg": round(wall / n * 1e3, 4),
        "msgs_per_s": round(n / wall, 1),
        "ms": {k: round(v / n * 1e3, 4) for k, v in parts_spent.items()},
    }


def _moit_signature(config_path: Path, data: bytes) -> bytes:
    """A signature by VN-MOIT's key over ``data``, to time the public-key operation alone."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding

    from hub.config import load_config
    from hub.trust import load_private_key

    key = load_private_key(load_config(config_path).agencies["VN-MOIT"].signing_key)  # type: ignore[arg-type]
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(hashes.SHA256()))
    return key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def _signxml_signer(signer):  # type: ignore[no-untyped-def]
    """signxml's own class with the hub's settings (``hub.trust.Signer`` calls it with ``RootCopies``)."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from signxml import XMLSigner, methods
    from signxml.algorithms import CanonicalizationMethod, DigestAlgorithm, SignatureMethod

    method = SignatureMethod.ECDSA_SHA256 if isinstance(signer.key, ec.EllipticCurvePrivateKey) else SignatureMethod.RSA_SHA256
    return XMLSigner(method=methods.enveloped, signature_algorithm=method, digest_algorithm=DigestAlgorithm.SHA256,
                     c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0)
