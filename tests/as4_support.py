"""What the AS4 tests share: a VN/TH pair of hubs built in-process, a scripted partner gateway on
loopback, and helpers to re-sign an altered AS4 message."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

from lxml import etree

from adapters.asw import AswAdapter
from adapters.asw.header import S12, WSSE
from adapters.asw.inbound import Inbound
from adapters.asw.wss import WssSigner
from adapters.base import Delivery
from hub.runtime import Runtime
from hub.trust import Signer
from hub.twohubs import MOIT, TH_HUB

from .support import EXAMPLES, Sender, message_id_of

AS4_SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "conformance" / "as4" / "phase4-samples"


def inbound_of(runtime: Runtime) -> Inbound:
    """The hub's POST /as4 handler, called directly (no HTTP)."""
    gateways = [a for a in runtime.create_adapters().values() if isinstance(a, AswAdapter)]
    return Inbound(gateways, runtime.pipeline.submit)


def submit_certificate(vn: Runtime) -> str:
    """VN-MOIT submits the example certificate of origin for Thailand; returns the message id."""
    data = Sender(vn.config, MOIT).message(EXAMPLES / "co-certificate.xml", to=TH_HUB)
    ack = vn.pipeline.submit(data, None)
    assert ack.accepted, ack.errors
    return message_id_of(data)


def outbound_message(vn: Runtime, message_id: str) -> tuple[bytes, str]:
    """(the AS4 message VN sends to TH for this message, its eb:MessageId)."""
    row = next(r for r in vn.store.trace(message_id).rows if r.destination == TH_HUB)
    adapter = vn.create_adapters()[TH_HUB]
    assert isinstance(adapter, AswAdapter)
    data, sent = adapter.message(Delivery(row.id, row.message_id, row.sender, row.destination, row.payload, 1))
    return data, sent.message_id


def resign(data: bytes, signer: Signer, change: Callable[[etree._Element], None] = lambda e: None) -> bytes:
    """The message with its WS-Security header removed, ``change`` applied, and signed again."""
    root = etree.fromstring(data)
    header = root.find(f"{{{S12}}}Header")
    for security in header.findall(f"{{{WSSE}}}Security"):
        header.remove(security)
    change(root)
    WssSigner(signer).sign(root)
    return etree.tostring(root)


class Partner:
    """A member gateway on loopback whose answer a test scripts: ``answer(body) -> (status, bytes)``."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.answer: Callable[[bytes], tuple[int, bytes]] = lambda body: (200, b"")
        self.received: list[bytes] = []
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> Partner:
        partner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                partner.received.append(body)
                status, answer = partner.answer(body)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/soap+xml")
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except (BrokenPipeError, ConnectionResetError):  # the hub gave up waiting (time-out test)
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
