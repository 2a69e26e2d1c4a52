"""A minimal partner endpoint on loopback that records what it is sent.

It stands in for a foreign gateway in ``hub demo``, the tests and the benchmark. Like any
receiver that follows the envelope's rules, it deduplicates on (sender, message id): a redelivery
is acknowledged again but processed once. ``status`` sets the answer (200, or 400/500 to play a
failing partner); ``start``/``stop`` play a partner that goes down and comes back.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


class Receiver:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, status: int = 200) -> None:
        self.host, self.port, self.status = host, port, status
        self.deliveries: Counter[tuple[str, str]] = Counter()  # (sender, message id) -> times received
        self.bodies: dict[tuple[str, str], bytes] = {}
        self.on_receive: Callable[[str, str, bytes], None] | None = None
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/inbox"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # headers and body leave in two writes: with Nagle on, the body waits for the
            # sender's delayed ACK (40 ms a request on Linux); real gateways do not stall so
            disable_nagle_algorithm = True

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                status = receiver.status
                if status == 200:
                    key = (self.headers.get("X-Sender", ""), self.headers.get("X-Message-Id", ""))
                    with receiver._lock:
                        receiver.deliveries[key] += 1
                        first = receiver.deliveries[key] == 1
                        if first:
                            receiver.bodies[key] = body
                    if first and receiver.on_receive:
                        receiver.on_receive(*key, body)
                answer = b"ok" if status == 200 else b"refused: the partner does not accept this message"
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def unique(self) -> int:
        with self._lock:
            return len(self.deliveries)

    @property
    def redeliveries(self) -> int:
        with self._lock:
            return sum(n - 1 for n in self.deliveries.values())

    def wait_for(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.unique >= count:
                return True
            time.sleep(0.02)
        return self.unique >= count
