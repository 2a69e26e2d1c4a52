"""``hub demo``: a complete e-Form D exchange on loopback, with the shipped ``hub.toml``.

The Ministry of Industry and Trade submits an issued certificate of origin for a shipment to
Thailand. The hub verifies the ministry's signature, validates the certificate, translates it to
an e-Form D for the Thai gateway and to a WCO DM declaration document for Vietnamese customs,
signs both, records them and answers with a signed receipt. The Thai gateway is down at first,
so its delivery is retried until it comes back. A repeat of the same message gets the original
receipt; a tampered copy gets a NACK. Each message's trace is printed, then a one-line summary.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import uvicorn
from lxml import etree

from .audit import verify_chain
from .client import Outgoing, agency_signer, envelope_for, recipient_for, signed_bytes
from .config import load_config
from .envelope import read_errors
from .keys import init_keys
from .pipeline import party_of
from .receiver import Receiver
from .runtime import Runtime
from .server import create_app
from .store import State
from .tracing import trace_text
from .trust import Verifier, load_certificates
from .xml import Limits, XmlParser

SENDER = "VN-MOIT"
GATEWAY = "TH-ASW"
CUSTOMS = "VN-CUSTOMS"


def _say(text: str) -> None:
    print(text, flush=True)


def _wait(condition, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return bool(condition())


def tampered(data: bytes) -> bytes:
    """The signed message with one text of the certificate changed after signing."""
    root = etree.fromstring(data)
    content = root.find("{urn:sw-hub:envelope:1}Body/{urn:sw-hub:envelope:1}Content")
    element = next(e for e in content.iter() if isinstance(e.tag, str) and e.text and e.text.strip())
    element.text = element.text + " (altered)"
    return etree.tostring(root)


def run_demo(config_path: str) -> int:
    config = load_config(config_path)
    for line in init_keys(config):
        _say(f"keys: {line}")
    runtime = Runtime.build(config)
    h = config.hub
    server = uvicorn.Server(uvicorn.Config(create_app(runtime.pipeline, runtime.store), host=h.listen_host, port=h.listen_port,
                                           log_level="warning", access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    if not _wait(lambda: server.started, 10):
        _say(f"demo: the hub could not listen on {h.listen_host}:{h.listen_port} (is the port taken?)")
        return 1
    dispatcher = runtime.dispatcher()
    dispatcher.start()
    url = f"http://{h.listen_address}/messages"
    gateway_url = urlparse(config.agencies[GATEWAY].endpoint)
    gateway = Receiver(gateway_url.hostname or "127.0.0.1", gateway_url.port or 80)
    hub_cert = load_certificates(h.certificate)[0]
    checked: list[str] = []
    gateway.on_receive = lambda sender, mid, body: checked.append(
        Verifier().verify(XmlParser(Limits()).parse(body), [hub_cert], "the hub").subject
    )
    ok = True
    try:
        agency = config.agencies[SENDER]
        signer = agency_signer(agency)
        document = XmlParser(h.limits).parse((config.base / "examples" / "co-certificate.xml").read_bytes())
        envelope = envelope_for(document, party_of(agency), recipient_for(config, GATEWAY), Outgoing("CO-FORMD", "01"))
        data = signed_bytes(envelope, signer)
        message_id = envelope.findtext(".//{urn:sw-hub:envelope:1}messageId")
        _say(f"1. {SENDER} submits certificate of origin {document.findtext('.//{*}CertificateNumber') or ''} "
             f"for {GATEWAY} as message {message_id}")
        with httpx.Client(timeout=30) as http:
            first = http.post(url, content=data)
            _say(f"   hub answers HTTP {first.status_code}: signed receipt (function 99)" if first.status_code == 200
                 else f"   hub answers HTTP {first.status_code}: {first.text[:300]}")
            ok &= first.status_code == 200
            again = http.post(url, content=data)
            same = again.content == first.content
            _say(f"2. the same message again: HTTP {again.status_code}, "
                 + ("the original receipt, no new delivery" if same else "a different answer (unexpected)"))
            ok &= same
            bad = http.post(url, content=tampered(data))
            codes = [f"{c} {m}" for c, m, _ in read_errors(etree.fromstring(bad.content))]
            _say(f"3. a tampered copy: HTTP {bad.status_code}, NACK: {'; '.join(codes)}")
            ok &= bad.status_code == 400

        _say(f"4. {GATEWAY} is down; {CUSTOMS} takes its WCO DM copy from a folder")
        _wait(lambda: any(r.state is State.DELIVERED and r.destination == CUSTOMS for r in runtime.store.trace(message_id).rows)
              and any(r.destination == GATEWAY and r.last_error for r in runtime.store.trace(message_id).rows), 20)
        time.sleep(1.0)
        gateway.start()
        _say(f"5. {GATEWAY} is back on {gateway_url.geturl()}")
        delivered = _wait(lambda: all(r.state is State.DELIVERED for r in runtime.store.trace(message_id).rows), 60)
        ok &= delivered and gateway.unique == 1 and gateway.redeliveries == 0
        if checked:
            _say(f"   {GATEWAY} checked the hub's signature on the Form D: {checked[0]}")
        _say("")
        trace = runtime.store.trace(message_id)
        _say(trace_text(trace, message_id))
        customs_files = sorted(Path(runtime.adapters[CUSTOMS].settings.path(config.agencies[CUSTOMS].endpoint)).glob(f"*{message_id}.xml"))
        _say(f"   customs file: {customs_files[0] if customs_files else 'missing'}")
        ok &= bool(customs_files)
        retries = sum(1 for a in trace.attempts if a.outcome is State.PENDING)
        report = verify_chain(runtime.store.audit_entries())
        ok &= report.ok
        _say("")
        _say(
            f"demo {'OK' if ok else 'FAILED'}: 1 certificate accepted and delivered to "
            f"{sum(r.state is State.DELIVERED for r in trace.rows)}/{len(trace.rows)} destinations "
            f"({retries} retr{'y' if retries == 1 else 'ies'} while {GATEWAY} was down), 1 duplicate answered with the "
            f"original receipt, 1 tampered copy rejected; audit chain {'verified' if report.ok else 'BROKEN'} ({report.entries} entries)"
        )
    finally:
        gateway.stop()
        server.should_exit = True
        thread.join(10)
        dispatcher.stop()
        runtime.close()
    return 0 if ok else 1
