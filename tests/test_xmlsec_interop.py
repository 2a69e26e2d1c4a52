"""Interoperability with xmlsec1, an XML-DSig implementation nobody here wrote.

Both directions, RSA-SHA256 and ECDSA-SHA256, enveloped, exclusive c14n, X509Data in KeyInfo:
documents the hub signs verify with ``xmlsec1 --verify`` (which also validates the chain to the CA
it is given), and documents ``xmlsec1 --sign`` fills in from a template verify in the hub (the
``Verifier``, ``hub verify`` and the whole pipeline). Without xmlsec1 these tests are skipped
locally and fail when CI=true (``scripts/test.sh`` installs the Debian package).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from lxml import etree

from hub.config import load_config
from hub.errors import Code, Rejected
from hub.keys import Issuer, write_certificate, write_private_key
from hub.runtime import Runtime
from hub.trust import DSIG, EXC_C14N, Signer, Verifier
from hub.truststore import TrustStore

from .pki import Pki, envelope, pki_config
from .support import REPO, tampered

RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
ECDSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"


@pytest.fixture(scope="module")
def xmlsec1() -> str:
    found = shutil.which("xmlsec1")
    if found is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("xmlsec1 is required in CI (apt-get install xmlsec1; scripts/test.sh does it)")
        pytest.skip("xmlsec1 is not installed (apt-get install xmlsec1)")
    return found


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60)


def template(root: etree._Element, signature_method: str) -> etree._Element:
    """An empty enveloped signature for xmlsec1 to fill in: exc-c14n, SHA-256, X509Certificate."""
    d = f"{{{DSIG}}}"
    sig = etree.SubElement(root, d + "Signature", nsmap={"ds": DSIG})
    info = etree.SubElement(sig, d + "SignedInfo")
    etree.SubElement(info, d + "CanonicalizationMethod", Algorithm=EXC_C14N.value)
    etree.SubElement(info, d + "SignatureMethod", Algorithm=signature_method)
    ref = etree.SubElement(info, d + "Reference", URI="")
    transforms = etree.SubElement(ref, d + "Transforms")
    etree.SubElement(transforms, d + "Transform", Algorithm=ENVELOPED)
    etree.SubElement(transforms, d + "Transform", Algorithm=EXC_C14N.value)
    etree.SubElement(ref, d + "DigestMethod", Algorithm=SHA256)
    etree.SubElement(ref, d + "DigestValue")
    etree.SubElement(sig, d + "SignatureValue")
    etree.SubElement(etree.SubElement(etree.SubElement(sig, d + "KeyInfo"), d + "X509Data"), d + "X509Certificate")
    return root


def files(folder: Path, name: str, who: Issuer) -> tuple[Path, Path]:
    key, cert = folder / f"{name}.key", folder / f"{name}.crt"
    write_private_key(key, who.key)
    write_certificate(cert, who.certificate)
    return key, cert


def xmlsec_sign(xmlsec1: str, folder: Path, root: etree._Element, who: Issuer, method: str, name: str) -> Path:
    key, cert = files(folder, name, who)
    tmpl, out = folder / f"{name}-template.xml", folder / f"{name}-signed.xml"
    tmpl.write_bytes(etree.tostring(template(root, method), xml_declaration=True, encoding="UTF-8"))
    result = run(xmlsec1, "--sign", "--privkey-pem", f"{key},{cert}", "--output", str(out), str(tmpl))
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture
def env(tmp_path: Path) -> tuple[Path, Pki]:
    return pki_config(tmp_path)


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_hub_signatures_verify_in_xmlsec1(xmlsec1: str, env: tuple[Path, Pki], tmp_path: Path, kind: str) -> None:
    path, pki = env
    signer = pki.leaf(pki.inter, "VN-MOIT", kind=kind)
    doc = tmp_path / f"hub-{kind}.xml"
    root = Signer(signer.key, signer.certificate, [pki.inter.certificate]).sign(envelope(path))
    assert root.find(f".//{{{DSIG}}}SignatureMethod").get("Algorithm") == (RSA_SHA256 if kind == "rsa" else ECDSA_SHA256)
    doc.write_bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))
    # xmlsec1 builds and checks the chain leaf -> intermediate (from KeyInfo) -> the trusted root
    ok = run(xmlsec1, "--verify", "--trusted-pem", str(pki.folder / "gov-root.crt"), "--enabled-key-data", "x509", str(doc))
    assert ok.returncode == 0 and "OK" in ok.stdout + ok.stderr, ok.stderr
    _, cert = files(tmp_path, f"leaf-{kind}", signer)
    ok = run(xmlsec1, "--verify", "--pubkey-cert-pem", str(cert), str(doc))
    assert ok.returncode == 0, ok.stderr
    bad = tmp_path / f"hub-{kind}-tampered.xml"
    bad.write_bytes(tampered(doc.read_bytes()))
    assert run(xmlsec1, "--verify", "--trusted-pem", str(pki.folder / "gov-root.crt"), "--enabled-key-data", "x509", str(bad)).returncode != 0


def test_hub_verify_command_output_verifies_in_xmlsec1(xmlsec1: str, env: tuple[Path, Pki], tmp_path: Path) -> None:
    path, pki = env
    key, cert = files(tmp_path, "moit", pki.moit)
    unsigned = tmp_path / "in.xml"
    unsigned.write_bytes(etree.tostring(envelope(path)))
    out = subprocess.run([sys.executable, "-m", "hub.cli", "sign", "--key", str(key), "--cert", str(cert), str(unsigned), str(tmp_path / "out.xml")],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    ok = run(xmlsec1, "--verify", "--trusted-pem", str(pki.folder / "gov-root.crt"), "--untrusted-pem", str(pki.folder / "gov-issuing.crt"),
             "--enabled-key-data", "x509", str(tmp_path / "out.xml"))
    assert ok.returncode == 0, ok.stderr


@pytest.mark.parametrize("kind,method", [("rsa", RSA_SHA256), ("ec", ECDSA_SHA256)])
def test_xmlsec1_signatures_verify_in_the_hub(xmlsec1: str, env: tuple[Path, Pki], tmp_path: Path, kind: str, method: str) -> None:
    path, pki = env
    signer = pki.leaf(pki.inter, "VN-MOIT", kind=kind)
    out = xmlsec_sign(xmlsec1, tmp_path, envelope(path), signer, method, f"xmlsec-{kind}")
    root = etree.fromstring(out.read_bytes())
    assert root.find(f".//{{{DSIG}}}X509Certificate").text.strip()  # xmlsec1 filled in the certificate
    store = TrustStore.from_config(load_config(path))
    verified = Verifier().verify(root, store.policy("VN-MOIT"), "agency VN-MOIT")
    assert verified.certificate == signer.certificate and verified.element.find(f"{{{DSIG}}}Signature") is None

    _, cert = files(tmp_path, f"cert-{kind}", signer)
    for who in (["--cert", str(cert)], ["--config", str(path), "--agency", "VN-MOIT"]):
        cli = subprocess.run([sys.executable, "-m", "hub.cli", "verify", *who, str(out)], capture_output=True, text=True, cwd=REPO)
        assert cli.returncode == 0 and cli.stdout.strip() == "CN=VN-MOIT signer,O=VN-MOIT", cli.stderr

    with pytest.raises(Rejected) as info:
        Verifier().verify(etree.fromstring(tampered(out.read_bytes())), store.policy("VN-MOIT"), "agency VN-MOIT")
    assert info.value.code is Code.SIGNATURE_INVALID

    runtime = Runtime.load(path)  # the whole path: a message signed by xmlsec1 is accepted, translated and re-signed
    try:
        ack = runtime.pipeline.submit(out.read_bytes())
        assert ack.accepted, ack.errors
    finally:
        runtime.close()
