"""A small PKI for the trust tests: CAs, an intermediate, CRLs, and the test topology of
``support.write_config`` with VN-MOIT and TH-ASW trusted through CAs instead of pinned certificates.

    gov-root (CA) -> gov-issuing (CA) -> VN-MOIT's signing certificate (O=VN-MOIT)
    th-root (CA)  -> TH-ASW's signing certificate
    rogue-root (CA), trusted by nobody
    VN-MARD keeps its pinned self-signed certificate from ``write_config``
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from lxml import etree

from hub.client import Outgoing, envelope_for, recipient_for
from hub.config import load_config
from hub.keys import Issuer, issue, new_key, write_certificate, write_crl
from hub.pipeline import party_of
from hub.trust import Signer

from .support import REPO, write_config


@dataclass
class Pki:
    folder: Path
    root: Issuer
    inter: Issuer
    th: Issuer
    rogue: Issuer
    moit: Issuer  # VN-MOIT's signing key and certificate, issued by the intermediate
    th_asw: Issuer

    def leaf(self, issuer: Issuer, organization: str, *, kind: str = "rsa", **kwargs) -> Issuer:  # type: ignore[no-untyped-def]
        key = new_key(kind)
        return Issuer(key, issue(key, f"{organization} signer", organization=organization, issuer=issuer, **kwargs))

    def revoke(self, name: str, issuer: Issuer, *certs: x509.Certificate, **kwargs) -> None:  # type: ignore[no-untyped-def]
        now = datetime.now(timezone.utc) - timedelta(minutes=1)
        write_crl(self.folder / name, issuer, [(c.serial_number, now) for c in certs], **kwargs)


def make_pki(folder: Path) -> Pki:
    folder.mkdir(parents=True, exist_ok=True)

    def ca(name: str, issuer: Issuer | None = None) -> Issuer:
        key = new_key("ec")
        cert = issue(key, name, organization="Test PKI", issuer=issuer, ca=True, days=3650)
        write_certificate(folder / f"{name}.crt", cert)
        return Issuer(key, cert)

    root = ca("gov-root")
    inter = ca("gov-issuing", root)
    th = ca("th-root")
    rogue = ca("rogue-root")
    pki = Pki(folder, root, inter, th, rogue, None, None)  # type: ignore[arg-type]
    pki.moit = pki.leaf(inter, "VN-MOIT")
    pki.th_asw = pki.leaf(th, "TH-ASW", kind="ec")
    for name, issuer in (("gov-root.crl", root), ("gov-issuing.crl", inter), ("th-root.crl", th)):
        write_crl(folder / name, issuer)
    return pki


def pki_config(tmp_path: Path, *, extra_hub: str = "", moit_crl: str | None = None) -> tuple[Path, Pki]:
    """The test topology of ``support.write_config`` with VN-MOIT and TH-ASW trusted through CAs."""
    path = write_config(tmp_path)
    pki = make_pki(tmp_path / "pki")
    p = pki.folder
    text = path.read_text()
    crl = moit_crl if moit_crl is not None else f'["{p}/gov-root.crl", "file://{p}/gov-issuing.crl"]'
    moit = f'certificates = ["{tmp_path}/keys/VN-MOIT.crt"]'
    assert moit in text
    text = text.replace(moit, f'trust_anchors = ["{p}/gov-root.crt"]\nintermediates = ["{p}/gov-issuing.crt"]\n'
                              f'subject = "O=VN-MOIT"\ncrl = {crl}')
    th = 'endpoint = "http://127.0.0.1:9/inbox"'
    assert th in text
    text = text.replace(th, th + f'\ntrust_anchors = ["{p}/th-root.crt"]\ncrl = "{p}/th-root.crl"')
    if extra_hub:
        text = text.replace('max_depth = 40\n', f"max_depth = 40\n{extra_hub}\n")
    path.write_text(text)
    return path, pki


def envelope(config_path: Path, sender: str = "VN-MOIT") -> etree._Element:
    config = load_config(config_path)
    document = etree.fromstring((REPO / "examples" / "co-certificate.xml").read_bytes())
    return envelope_for(document, party_of(config.agencies[sender]), recipient_for(config, "TH-ASW"), Outgoing("CO-FORMD"))


def signed(config_path: Path, who: Issuer, *, chain: tuple[x509.Certificate, ...] = (), sender: str = "VN-MOIT") -> etree._Element:
    return Signer(who.key, who.certificate, chain).sign(envelope(config_path, sender))
