"""The ``http`` adapter against a real HTTP(S) server on loopback: each partner answer mapped onto an
outcome, kept connections that the partner closed, time-outs, refused connections, mutual TLS."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import MappingProxyType

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from adapters import Delivery, Outcome
from adapters.base import AdapterSettings
from adapters.http import HttpAdapter
from hub.config import Agency
from hub.errors import ConfigError
from hub.keys import Issuer, issue, new_key, write_certificate, write_private_key


class Partner(ThreadingHTTPServer):
    """Answers each POST with the next (status, body) of ``script`` (the last one repeats)."""

    daemon_threads = True

    def __init__(self, script: list[tuple[int, bytes]], *, delay: float = 0.0, close_after_each: bool = False,
                 silent_close: bool = False) -> None:
        self.script, self.delay, self.close_after_each = list(script), delay, close_after_each
        self.silent_close = silent_close  # closes after each answer although it offered to keep the connection
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.connections = 0
        super().__init__(("127.0.0.1", 0), _Handler)
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def get_request(self):  # type: ignore[no-untyped-def]
        self.connections += 1
        return super().get_request()

    def __enter__(self) -> "Partner":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/inbox"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Partner

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((dict(self.headers), body))
        time.sleep(self.server.delay)
        status, answer = self.server.script.pop(0) if len(self.server.script) > 1 else self.server.script[0]
        self.send_response(status)
        self.send_header("Content-Length", str(len(answer)))
        if self.server.close_after_each:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(answer)
        if self.server.silent_close:
            self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


def _adapter(endpoint: str, tmp_path: Path | None = None, **options: object) -> HttpAdapter:
    agency = Agency("TH-ASW", "Thai gateway", "TH", "http", endpoint, options=MappingProxyType(dict(options)))
    return HttpAdapter(agency, AdapterSettings(timeout=2.0, base=tmp_path or Path(".")))


def _delivery(n: int = 1) -> Delivery:
    return Delivery(n, f"MSG-{n}", "VN-MOIT", "TH-ASW", b"<Envelope>" + b"x" * 10_000 + b"</Envelope>", 1, "co")


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(200, Outcome.DELIVERED), (202, Outcome.DELIVERED), (400, Outcome.FAILED), (404, Outcome.FAILED),
     (408, Outcome.RETRY), (429, Outcome.RETRY), (500, Outcome.RETRY), (503, Outcome.RETRY)],
)
def test_each_answer_is_mapped_onto_an_outcome(status: int, outcome: Outcome) -> None:
    with Partner([(status, b"partner says: schema version 2 expected")]) as partner:
        adapter = _adapter(partner.url)
        result = adapter.deliver(_delivery())
        adapter.close()
    assert result.outcome is outcome
    assert f"HTTP {status}" in result.detail
    if outcome is not Outcome.DELIVERED:
        assert "schema version 2 expected" in result.detail  # the partner's own words are kept
    headers, body = partner.received[0]
    assert headers["X-Message-Id"] == "MSG-1" and headers["X-Sender"] == "VN-MOIT"
    assert headers["Content-Type"] == "application/xml" and body == _delivery().payload


def test_one_kept_connection_per_thread_and_a_closed_one_is_replaced() -> None:
    with Partner([(200, b"ok")]) as partner:
        adapter = _adapter(partner.url)
        assert all(adapter.deliver(_delivery(n)).outcome is Outcome.DELIVERED for n in range(5))
        assert partner.connections == 1
        # the partner drops idle connections (a restart, an idle time-out): the next delivery still goes
        adapter._local.connection.sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
        assert adapter.deliver(_delivery(6)).outcome is Outcome.DELIVERED
        adapter.close()
    assert partner.connections == 2 and len(partner.received) == 6


def test_a_partner_that_closes_after_each_answer_gets_every_delivery() -> None:
    with Partner([(200, b"ok")], close_after_each=True) as partner:
        adapter = _adapter(partner.url)
        assert [adapter.deliver(_delivery(n)).outcome for n in range(3)] == [Outcome.DELIVERED] * 3
        adapter.close()
    assert partner.connections == 3


def test_a_kept_connection_the_partner_dropped_without_a_word_is_replaced() -> None:
    """An idle time-out on the partner's side: the next request meets a closed connection."""
    with Partner([(200, b"ok")], silent_close=True) as partner:
        adapter = _adapter(partner.url)
        outcomes = []
        for n in range(3):
            outcomes.append(adapter.deliver(_delivery(n)).outcome)
            time.sleep(0.05)  # the partner's close reaches the hub before the next delivery
        adapter.close()
    assert outcomes == [Outcome.DELIVERED] * 3
    assert partner.connections == 3 and len(partner.received) == 3


def test_credentials_in_the_endpoint_are_sent_as_basic_authentication() -> None:
    with Partner([(200, b"ok")]) as partner:
        adapter = _adapter(partner.url.replace("http://", "http://hub%40vn:s3cret@"))
        assert adapter.deliver(_delivery()).outcome is Outcome.DELIVERED
        adapter.close()
    assert partner.received[0][0]["Authorization"] == "Basic aHViQHZuOnMzY3JldA=="  # hub@vn:s3cret


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:abc/inbox", "http://127.0.0.1:99999/inbox"])
def test_an_endpoint_with_a_bad_port_is_a_configuration_error(endpoint: str) -> None:
    with pytest.raises(ConfigError, match=r"agencies\[TH-ASW\].endpoint"):
        _adapter(endpoint)


def test_a_slow_partner_is_a_time_out_and_is_retried() -> None:
    with Partner([(200, b"ok")], delay=1.0) as partner:
        adapter = _adapter(partner.url, timeout=0.2)
        result = adapter.deliver(_delivery())
        adapter.close()
    assert result.outcome is Outcome.RETRY and "time-out" in result.detail


def test_a_partner_dripping_its_answer_is_cut_off_at_the_timeout_and_retried() -> None:
    """Each byte of the answer arrives within the socket's time-out, so only the deadline over
    the whole delivery ends it: without it a partner could hold a delivery thread for ever."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def drip() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            for _ in range(100):  # X-Slow: aaaa... one byte every 0.2 s, for at most 20 s
                if stop.wait(0.2):
                    break
                try:
                    conn.sendall(b"a")
                except OSError:
                    break

    thread = threading.Thread(target=drip, daemon=True)
    thread.start()
    adapter = _adapter(f"http://127.0.0.1:{listener.getsockname()[1]}/inbox", timeout=1.0)
    started = time.monotonic()
    result = adapter.deliver(_delivery())
    took = time.monotonic() - started
    stop.set()
    adapter.close()
    thread.join(5)
    listener.close()
    assert result.outcome is Outcome.RETRY and "within 1 s" in result.detail, result.detail
    assert took < 3.0, took  # the deadline (1 s) and the watchdog's tick, not the partner's 20 s


def test_a_refused_connection_is_retried() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nobody listens here once the socket is closed
    adapter = _adapter(f"http://127.0.0.1:{port}/inbox")
    result = adapter.deliver(_delivery())
    assert result.outcome is Outcome.RETRY and "cannot reach" in result.detail and "Refused" in result.detail


def _server_certificate(ca: Issuer) -> Issuer:
    key = new_key("ec")
    now = datetime.now(timezone.utc) - timedelta(minutes=1)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return Issuer(key, cert)


def test_https_with_mutual_tls(tmp_path: Path) -> None:
    ca_key = new_key("ec")
    ca = Issuer(ca_key, issue(ca_key, "partner CA", organization="TH", ca=True))
    server, client = _server_certificate(ca), Issuer(k := new_key("ec"), issue(k, "hub client", organization="VN", issuer=ca))
    for name, pair in (("server", server), ("client", client)):
        write_private_key(tmp_path / f"{name}.key", pair.key)
        write_certificate(tmp_path / f"{name}.crt", pair.certificate)
    write_certificate(tmp_path / "ca.crt", ca.certificate)
    other_key = new_key("ec")
    write_certificate(tmp_path / "other-ca.crt", issue(other_key, "someone else", ca=True))

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(tmp_path / "ca.crt"))
    context.load_cert_chain(str(tmp_path / "server.crt"), str(tmp_path / "server.key"))
    context.verify_mode = ssl.CERT_REQUIRED  # the partner wants the hub's client certificate
    with Partner([(200, b"ok")]) as partner:
        partner.socket = context.wrap_socket(partner.socket, server_side=True)
        url = partner.url.replace("http://", "https://")
        good = _adapter(url, tmp_path, ca="ca.crt", client_cert="client.crt", client_key="client.key")
        assert good.deliver(_delivery()).outcome is Outcome.DELIVERED
        # the partner drops the kept connection without a TLS close_notify (an idle time-out)
        partner.silent_close = True
        assert good.deliver(_delivery(2)).outcome is Outcome.DELIVERED
        time.sleep(0.05)
        assert good.deliver(_delivery(3)).outcome is Outcome.DELIVERED
        partner.silent_close = False
        good.close()
        without_client_cert = _adapter(url, tmp_path, ca="ca.crt")
        assert without_client_cert.deliver(_delivery()).outcome is Outcome.RETRY
        wrong_ca = _adapter(url, tmp_path, ca="other-ca.crt", client_cert="client.crt", client_key="client.key")
        result = wrong_ca.deliver(_delivery())
        assert result.outcome is Outcome.RETRY and "CERTIFICATE_VERIFY_FAILED" in result.detail
    assert len(partner.received) == 3


def test_missing_tls_files_are_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="agencies\\[TH-ASW\\].options"):
        _adapter("https://127.0.0.1:1/inbox", tmp_path, ca="nowhere.crt")
    with pytest.raises(ConfigError, match="client_key is set without client_cert"):
        _adapter("https://127.0.0.1:1/inbox", tmp_path, client_key="hub.key")
