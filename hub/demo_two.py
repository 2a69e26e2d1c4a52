"""``hub demo --two-hubs``: a Vietnamese and a Thai hub on loopback exchange a Form D over AS4.

Each hub gets its own folder, keys and hub.toml (``hub.twohubs``) under a temporary folder, removed
when the demo ends however it ends (``--keep`` keeps it for inspection; a ``--folder`` the user
names is never removed). The ministry submits over HTTP (POST /messages); the hubs talk AS4 (POST
/as4) and answer each other with signed eb:Receipts; customs and the ministry take their
documents from folders. The Thai hub starts a moment late, so the first AS4 attempt finds no one
and is resent with the same eb:MessageId.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path

import httpx
import uvicorn
from lxml import etree

from .client import Outgoing, agency_signer, envelope_for, recipient_for, signed_bytes
from .config import Config
from .envelope import content_of, read_header
from .pipeline import party_of
from .demo import _say, _wait
from .runtime import Runtime
from .server import create_app
from .store import State
from .tracing import trace_text
from .trust import Signer, Verifier
from .twohubs import MOIT, REPO, TH_CUSTOMS, TH_HUB, VN_HUB, write_pair

FORMD = "urn:sw-hub:asean:eatiga:formd:1"
STATUS = "urn:sw-hub:asean:eatiga:formd-status:1"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Hub:
    """One hub in this process: listener (with POST /as4) and dispatcher."""

    def __init__(self, path: Path) -> None:
        self.runtime = Runtime.load(path)
        h = self.runtime.config.hub
        self.url = f"http://{h.listen_address}"
        app = create_app(self.runtime.pipeline, self.runtime.store, self.runtime.listener_routes(), self.runtime.gate)
        self.server = uvicorn.Server(uvicorn.Config(app, host=h.listen_host, port=h.listen_port, log_level="warning",
                                                    access_log=False, lifespan="off"))
        self.dispatcher = self.runtime.dispatcher()
        self._thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def config(self) -> Config:
        return self.runtime.config

    def start(self) -> bool:
        self._thread.start()
        self.dispatcher.start()
        return _wait(lambda: self.server.started, 10)

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(10)
        self.dispatcher.stop()
        self.runtime.close()

    def checked(self, data: bytes) -> etree._Element:
        """The envelope, after checking this hub's signature on it."""
        return Verifier().verify(etree.fromstring(data), [self.runtime.signer.certificate], self.config.hub.party_id).element

    def row(self, message_id: str, destination: str):  # type: ignore[no-untyped-def]
        return next((r for r in self.runtime.store.trace(message_id).rows if r.destination == destination), None)

    def receipt_detail(self, message_id: str, destination: str) -> str:
        row = self.row(message_id, destination)
        attempts = [a for a in self.runtime.store.trace(message_id).attempts if row and a.row_id == row.id]
        return attempts[-1].detail if attempts else "no attempt"


def _signer(config: Config, agency: str) -> Signer:
    a = config.agencies[agency]
    return agency_signer(a)


def run_two_hubs(folder: str | None = None, keep: bool = False) -> int:
    """0 when every step did what it should, 1 if not, 130 on Ctrl-C. A temporary folder is
    removed when the demo ends, whatever ends it, unless ``keep``."""
    base = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="sw-hub-two-hubs-"))
    remove = folder is None and not keep  # a folder the user named is theirs
    try:
        return _exchange(base, remove)
    except KeyboardInterrupt:
        _say("demo interrupted" + (f"; {base} removed" if remove else f"; the hubs are in {base}"))
        return 130
    finally:
        if remove:
            shutil.rmtree(base, ignore_errors=True)


def _exchange(base: Path, removed: bool) -> int:
    pair = write_pair(base, _free_port(), _free_port())
    vn, th = _Hub(pair.vn), _Hub(pair.th)
    after = " (removed at the end: --keep keeps it)" if removed else ""
    _say(f"two hubs in {base}{after}: {VN_HUB} ({vn.url}, vn/hub.toml) and {TH_HUB} ({th.url}, th/hub.toml), each with its own keys")
    ok = True
    try:
        if not vn.start():
            _say(f"demo: the VN hub could not listen on {vn.url}")
            return 1
        config = vn.config
        document = etree.parse(str(REPO / "examples" / "co-certificate.xml")).getroot()
        envelope = envelope_for(document, party_of(config.agencies[MOIT]), recipient_for(config, TH_HUB), Outgoing("CO-FORMD"))
        data = signed_bytes(envelope, _signer(config, MOIT))
        formd_id = read_header(envelope).message_id
        with httpx.Client(timeout=30) as http:
            answer = http.post(f"{vn.url}/messages", content=data)
            _say(f"1. {MOIT} submits certificate of origin {document.findtext('{*}CertificateNumber')} to {VN_HUB} "
                 f"(HTTP POST /messages): HTTP {answer.status_code}, receipt signed by {VN_HUB}")
            ok &= answer.status_code == 200 and read_header(vn.checked(answer.content)).subject.function == "99"

            _wait(lambda: (r := vn.row(formd_id, TH_HUB)) is not None and r.last_error is not None, 20)
            _say(f"2. {TH_HUB} is not up yet: {vn.row(formd_id, TH_HUB).last_error}")
            ok &= th.start()
            _say(f"   {TH_HUB} comes up; {VN_HUB} resends the AS4 message with the same eb:MessageId")
            delivered = base / "th" / "agencies" / TH_CUSTOMS / "inbox" / f"{VN_HUB}_{formd_id}.xml"
            ok &= _wait(lambda: delivered.exists() and vn.row(formd_id, TH_HUB).state is State.DELIVERED, 30)
            _say(f"3. {VN_HUB} -(AS4)-> {TH_HUB}: eb:Receipt: {vn.receipt_detail(formd_id, TH_HUB)}")
            form = content_of(th.checked(delivered.read_bytes())) if delivered.exists() else None
            reference = form.findtext(f"{{{FORMD}}}ReferenceID") if form is not None else None
            _say(f"4. {TH_CUSTOMS} finds Form D {reference} in {delivered.parent}, signed by {TH_HUB}")
            ok &= form is not None

            status = etree.parse(str(REPO / "examples" / "formd-status-accepted.xml")).getroot()
            for tag, value in (("ReferenceID", reference or ""), ("IssuingCountryCode", "VN"), ("SenderCountryCode", "TH")):
                status.find(f"{{{STATUS}}}{tag}").text = value
            back = envelope_for(status, party_of(th.config.agencies[TH_CUSTOMS]), recipient_for(th.config, VN_HUB),
                                Outgoing("FORMD-STATUS", reference=formd_id))
            status_id = read_header(back).message_id
            answer = http.post(f"{th.url}/messages", content=signed_bytes(back, _signer(th.config, TH_CUSTOMS)))
            _say(f"5. {TH_CUSTOMS} accepts it: FormDStatus ACCEPTED to {TH_HUB}: HTTP {answer.status_code}, receipt signed by {TH_HUB}")
            ok &= answer.status_code == 200 and read_header(th.checked(answer.content)).subject.function == "99"

        returned = base / "vn" / "agencies" / MOIT / "outbox" / f"{TH_HUB}_{status_id}.xml"
        ok &= _wait(lambda: returned.exists() and th.row(status_id, VN_HUB).state is State.DELIVERED, 30)
        _say(f"6. {TH_HUB} -(AS4)-> {VN_HUB}: eb:Receipt: {th.receipt_detail(status_id, VN_HUB)}")
        code = content_of(vn.checked(returned.read_bytes())).findtext(f"{{{STATUS}}}StatusCode") if returned.exists() else None  # type: ignore[union-attr]
        _say(f"7. {MOIT} finds status {code} for {reference} in {returned.parent}, signed by {VN_HUB}")
        _say("   (the portal's MQTT status event plugs in as a VN agency subscribed to events: see hub/twohubs.py)")
        ok &= code == "ACCEPTED"
        _say("")
        _say(trace_text(vn.runtime.store.trace(formd_id), formd_id))
        _say(trace_text(th.runtime.store.trace(status_id), status_id))
        receipts = len(list(base.glob("*/receipts/*/*.receipt.xml")))
        ok &= receipts == 2
        kept = "checked" if removed else f"kept under {base}/*/receipts"
        _say(f"demo {'OK' if ok else 'FAILED'}: Form D {reference} went {MOIT} -> {VN_HUB} -(AS4)-> {TH_HUB} -> {TH_CUSTOMS}, "
             f"its acceptance came back {TH_CUSTOMS} -> {TH_HUB} -(AS4)-> {VN_HUB} -> {MOIT}; {receipts} signed eb:Receipts {kept}")
    finally:
        for hub in (th, vn):
            hub.stop()
    return 0 if ok else 1
