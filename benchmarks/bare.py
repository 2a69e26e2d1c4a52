"""The end-to-end floor: the most a server doing only the unavoidable work reaches on this machine.

``bare`` is not a hub. For each message it does the least that the end-to-end target names
(verify + validate + translate + sign + durable commit + signed receipt, then the delivery), with
the hub's own libraries, classes, keys and HTTP stack (uvicorn with httptools and uvloop,
processes on one port with SO_REUSEPORT), on the event loop itself:

    hardened parse, envelope and payload schemas, the sender's signature (signxml as the hub
    calls it), the mapping's XSLT, the outbound message signed, a receipt signed, ONE commit of
    both (SQLite, WAL, synchronous=FULL, a file per process: no writer waits for another), the
    answer; then the delivery: one POST to the partner on a kept connection and ONE commit that
    marks it done.

Nothing else: no header reading, routing, duplicate check, audit trail, output validation,
trust policy (one pinned certificate), retries, leases, group commit, threads, metrics or
answers to anything but a valid message. It would lose a message at the first fault. Its rate
is therefore an upper bound, on these cores, for any hub that does the work the target names
with these parts; the hub's rate is reported beside it.

    python -m benchmarks.bare CONFIG PORT RECEIVER_URL DB   # one worker (``BareServe`` starts N)
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

from lxml import etree

from .common import proc_cpu_seconds
from .topology import REPO

_MESSAGE_ID = re.compile(rb"<messageId>([^<]+)</messageId>")
ENV = "{urn:sw-hub:envelope:1}"
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


class Bare:
    """The ASGI application of one worker."""

    def __init__(self, config_path: Path, receiver_url: str, db_path: Path) -> None:
        from hub.client import Outgoing, envelope_for
        from hub.envelope import Party
        from hub.trust import ENVELOPE_SIGNATURES, RootCopyingVerifier
        from hub.xml import hardened_parser

        from .floor import _hub_parts

        parts = _hub_parts(config_path)
        self.parser, self.envelope, self.co = parts["parser"], parts["envelope"], parts["co"]
        self.stylesheet, self.signer, self.certificate = parts["stylesheet"], parts["hub_signer"], parts["moit_certificate"]
        self.verifier, self.expect, self.signxml_parser = RootCopyingVerifier(), ENVELOPE_SIGNATURES, hardened_parser()
        self.outgoing = lambda document: envelope_for(document, Party("VN-MOIT", "VN"), Party("TH-ASW", "TH"), Outgoing("CO-FORMD"))
        self.db = sqlite3.connect(db_path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = FULL")
        self.db.execute("CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY, message_id TEXT, payload BLOB, receipt BLOB, "
                        "delivered INTEGER NOT NULL DEFAULT 0)")
        url = urlsplit(receiver_url)
        self.partner, self.path = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or 80, timeout=30), url.path

    def handle(self, body: bytes) -> tuple[bytes, Callable[[], None]]:
        """The receipt for one valid message, and its delivery (run after the answer is sent)."""
        root = self.parser.parse(body)
        self.envelope.validate(root)
        signed = self.verifier.verify(root, x509_cert=self.certificate, expect_config=self.expect, parser=self.signxml_parser).signed_xml
        payload = signed.find(f"{ENV}Body/{ENV}Content")[0]
        self.co.validate(payload)
        formd = self.stylesheet.apply(payload)  # the hub's call: a copy of the payload, transformed
        outbound = etree.tostring(self.signer.sign(self.outgoing(formd)), xml_declaration=True, encoding="UTF-8")
        found = _MESSAGE_ID.search(body)
        message_id = found.group(1).decode() if found else ""
        receipt_root = etree.Element("Receipt")
        etree.SubElement(receipt_root, "messageId").text = message_id
        etree.SubElement(receipt_root, "receivedAt").text = str(time.time())
        receipt = etree.tostring(self.signer.sign(receipt_root), xml_declaration=True, encoding="UTF-8")
        self.db.execute("BEGIN IMMEDIATE")
        row = self.db.execute("INSERT INTO outbox (message_id, payload, receipt) VALUES (?,?,?)", (message_id, outbound, receipt)).lastrowid
        self.db.execute("COMMIT")

        def deliver() -> None:
            self.partner.request("POST", self.path, outbound, {"Content-Type": "application/xml", "X-Sender": "VN-MOIT",
                                                               "X-Message-Id": message_id})
            answer = self.partner.getresponse()
            answer.read()
            if answer.status == 200:
                self.db.execute("BEGIN IMMEDIATE")
                self.db.execute("UPDATE outbox SET delivered = 1 WHERE id = ?", (row,))
                self.db.execute("COMMIT")

        return receipt, deliver

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            event = await receive()
            chunks.append(event.get("body", b""))
            if not event.get("more_body"):
                break
        if scope["method"] != "POST":  # the readiness probe
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        receipt, deliver = self.handle(b"".join(chunks))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/xml"), (b"content-length", str(len(receipt)).encode())]})
        await send({"type": "http.response.body", "body": receipt})
        deliver()


class BareServe:
    """``workers`` bare processes on one port, started the way ``e2e.HubServe`` starts ``hub serve``."""

    def __init__(self, config_path: Path, port: int, receiver_url: str, folder: Path, workers: int) -> None:
        import httpx

        self.host, self.port = "127.0.0.1", port
        self.log = folder / "bare.log"
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with open(self.log, "ab") as log:
            self.procs = [
                subprocess.Popen([sys.executable, "-m", "benchmarks.bare", str(config_path), str(port), receiver_url,
                                  str(folder / f"bare-{i}.db")], stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
                for i in range(workers)
            ]
        deadline = time.monotonic() + 60
        up = False
        while time.monotonic() < deadline and not up:
            if any(p.poll() is not None for p in self.procs):
                self.stop()
                raise RuntimeError(f"a bare worker exited: {self.log.read_text()[-2000:]}")
            try:
                up = httpx.get(f"http://{self.host}:{port}/", timeout=2).status_code == 200
            except httpx.HTTPError:
                time.sleep(0.1)
        if not up:
            self.stop()
            raise RuntimeError(f"the bare workers did not come up: {self.log.read_text()[-2000:]}")
        time.sleep(1.0)  # every worker listening

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def cpu(self) -> float:
        return sum(proc_cpu_seconds(pid) for pid in self.pids() if Path(f"/proc/{pid}").exists())

    def memory(self) -> dict:
        return {}

    def stop(self) -> int:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        codes = []
        for p in self.procs:
            try:
                codes.append(p.wait(30))
            except subprocess.TimeoutExpired:
                p.kill()
                codes.append(p.wait(10))
        return max((abs(c) for c in codes), default=0)  # 0: every worker stopped cleanly


def main(argv: list[str]) -> None:
    import socket

    import uvicorn

    config_path, port, receiver_url, db = Path(argv[0]), int(argv[1]), argv[2], Path(argv[3])
    app: Any = Bare(config_path, receiver_url, db)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(2048)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", http="httptools", loop="uvloop"))
    for sig in (signal.SIGTERM, signal.SIGINT):  # stop as uvicorn would, without its re-raised signal
        signal.signal(sig, lambda *_: setattr(server, "should_exit", True))
    server.run(sockets=[sock])


if __name__ == "__main__":
    main(sys.argv[1:])
