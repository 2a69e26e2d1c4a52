"""Deliveries to faulty partners on loopback: every message ends delivered (once on the partner's
side, which deduplicates on sender + message id), retried with the same message id, or
dead-lettered with a last error that says what happened; one bad partner never holds up the others.

Partners: raw HTTP servers that hang, reset, answer garbage, drip or never end, redirect, shed load
with Retry-After, refuse, close kept connections or send something unasked on them, and crash; a
SOAP ministry that drips, answers a DTD or no answer element, and a WSDL that drips at start-up;
folders that fill up, turn read-only, hold another file of the same name or lose their file
system; a mosquitto broker that hangs; and a ``hub serve`` killed in the middle of deliveries.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Iterator

import httpx
import pytest

from adapters import Delivery, Outcome
from adapters.base import AdapterSettings, one_line, retry_after
from adapters.file import FileAdapter
from adapters.http import HttpAdapter
from adapters.soap import SoapAdapter
from hub.config import Agency, load_config
from hub.receiver import Receiver
from hub.retry import RetryPolicy
from hub.runtime import Runtime
from hub.store import State, open_store

from .soap_peer import HUB_NS, SOAP11, WSDL
from .support import REPO, HubProcess, Sender, free_port, message_id_of, mounted_tmpfs, wait_until, write_config

# -- a raw partner: each connection handled by a function, so it can break HTTP any way it likes ------------------


class Raw:
    """A TCP server on loopback; ``handle(partner, connection)`` serves each connection. Records
    each request it read whole (``requests``: their X-Message-Id) and ends its threads on exit."""

    def __init__(self, handle: Callable[[Raw, socket.socket], None], port: int = 0) -> None:
        self.handle = handle
        self.listener = socket.create_server(("127.0.0.1", port))
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self.requests: list[str] = []
        self.connections = 0
        self.open: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/inbox"

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                connection, _ = self.listener.accept()
            except OSError:
                continue
            self.connections += 1
            self.open.append(connection)
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            try:
                self.handle(self, connection)
            except OSError:
                pass

    def read_request(self, connection: socket.socket) -> bytes | None:
        """One request's head and body, or None when the client closed the connection first."""
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = connection.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = re.search(rb"(?i)content-length:\s*(\d+)", head)
        while length and len(body) < int(length.group(1)):
            chunk = connection.recv(65536)
            if not chunk:
                return None
            body += chunk
        message_id = re.search(rb"(?i)x-message-id:\s*(\S+)", head)
        if message_id:
            self.requests.append(message_id.group(1).decode())
        return head + b"\r\n\r\n" + body

    def close(self) -> None:
        """Stops like a process that dies: the listener and every connection closed."""
        self.stop.set()
        self.thread.join(5)
        self.listener.close()
        for connection in self.open:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def answer(status: int, body: bytes = b"", headers: bytes = b"") -> bytes:
    return b"HTTP/1.1 %d X\r\n%sContent-Length: %d\r\n\r\n%s" % (status, headers, len(body), body)


def reset(connection: socket.socket) -> None:
    """Closes with a TCP RST instead of a FIN."""
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")


def forever(partner: Raw, seconds: float = 10.0) -> None:
    partner.stop.wait(seconds)


def http_adapter(url: str, timeout: float = 0.5) -> HttpAdapter:
    agency = Agency("TH-ASW", "Thai gateway", "TH", "http", url, options=MappingProxyType({"timeout": timeout}))
    return HttpAdapter(agency, AdapterSettings(timeout=timeout))


def delivery(n: int = 1) -> Delivery:
    return Delivery(n, f"MSG-{n}", "VN-MOIT", "TH-ASW", b"<Envelope>" + b"x" * 2000 + b"</Envelope>", 1, "co")


# -- HTTP: each way of breaking an answer ends in an outcome that says what happened -------------------------------


def _hangs(p: Raw, c: socket.socket) -> None:
    p.read_request(c)
    forever(p)


def _late(p: Raw, c: socket.socket) -> None:
    p.read_request(c)
    time.sleep(1.0)
    c.sendall(answer(200, b"ok"))


def _reset_mid_request(p: Raw, c: socket.socket) -> None:
    c.recv(100)
    reset(c)


def _reset_mid_headers(p: Raw, c: socket.socket) -> None:
    p.read_request(c)
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Le")
    time.sleep(0.05)
    reset(c)


def _reset_mid_body(p: Raw, c: socket.socket) -> None:
    p.read_request(c)
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhalf")
    time.sleep(0.05)
    reset(c)


def _garbage(p: Raw, c: socket.socket) -> None:
    p.read_request(c)
    c.sendall(b"\x00\x01\x1b[2Jthis is no HTTP\r\n\r\n")


def _gigabytes(p: Raw, c: socket.socket) -> None:
    """A 200 that announces 5 GB and streams until the hub hangs up (bounded: 64 MiB at most)."""
    p.read_request(c)
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5000000000\r\n\r\n")
    for _ in range(1024):
        c.sendall(b"x" * 65536)


def _endless(p: Raw, c: socket.socket) -> None:
    """A 200 whose chunked body never ends (bounded: 10 s of it)."""
    p.read_request(c)
    c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    while not p.stop.wait(0.05):
        c.sendall(b"4\r\nmore\r\n")


def _endless_headers(p: Raw, c: socket.socket) -> None:
    p.read_request(c)
    c.sendall(b"HTTP/1.1 200 OK\r\n")
    for i in range(200):
        c.sendall(b"X-More-%d: yes\r\n" % i)


def _status(status: int, body: bytes = b"", headers: bytes = b"") -> Callable[[Raw, socket.socket], None]:
    def handle(p: Raw, c: socket.socket) -> None:
        while p.read_request(c) is not None:
            c.sendall(answer(status, body, headers))

    return handle


CASES = {
    "never answers": (_hangs, Outcome.RETRY, "no complete answer within 0.5 s"),
    "answers after the timeout": (_late, Outcome.RETRY, "no complete answer within 0.5 s"),
    "resets mid-request": (_reset_mid_request, Outcome.RETRY, "broke"),
    "resets mid-headers": (_reset_mid_headers, Outcome.RETRY, "may have received it, so it is sent again with the same message id"),
    # the status decides: a 2xx is the partner taking the message, whatever becomes of its body
    "200, then resets mid-body": (_reset_mid_body, Outcome.DELIVERED, "HTTP 200 OK; the answer's body broke off"),
    "200 with gigabytes": (_gigabytes, Outcome.DELIVERED, "HTTP 200 OK"),
    "200 with a body that never ends": (_endless, Outcome.DELIVERED, "HTTP 200 OK; the answer's body did not end within 0.5 s"),
    "garbage": (_garbage, Outcome.RETRY, r"answered something that is not HTTP (BadStatusLine: \x00\x01\x1b[2Jthis is no HTTP)"),
    "endless headers": (_endless_headers, Outcome.RETRY, "not valid HTTP (HTTPException: got more than 100 headers)"),
    "301 elsewhere": (_status(301, headers=b"Location: http://127.0.0.1:1/moved\r\n"), Outcome.FAILED,
                      "HTTP 301 Moved Permanently; a redirect to http://127.0.0.1:1/moved, not followed: set the agency's endpoint"),
    "308 to itself": (_status(308, headers=b"Location: /inbox\r\n"), Outcome.FAILED, "a redirect to /inbox, not followed"),
    "400": (_status(400, b"schema version 2 expected"), Outcome.FAILED, "HTTP 400 Bad Request: schema version 2 expected"),
    "401": (_status(401, b"who are you"), Outcome.FAILED, "HTTP 401 Unauthorized: who are you"),
    "403": (_status(403), Outcome.FAILED, "HTTP 403 Forbidden"),
    "404": (_status(404), Outcome.FAILED, "HTTP 404 Not Found"),
    "413": (_status(413), Outcome.FAILED, "HTTP 413 Request Entity Too Large"),
    "500": (_status(500, b"boom"), Outcome.RETRY, "HTTP 500 Internal Server Error: boom"),
    "502": (_status(502), Outcome.RETRY, "HTTP 502 Bad Gateway"),
    "504": (_status(504), Outcome.RETRY, "HTTP 504 Gateway Timeout"),
    "429 Retry-After seconds": (_status(429, headers=b"Retry-After: 120\r\n"), Outcome.RETRY,
                                "HTTP 429 Too Many Requests; the partner asks to wait 120 s (Retry-After)"),
    "503 Retry-After date": (_status(503, headers=b"Retry-After: Fri, 31 Dec 9999 23:59:59 GMT\r\n"), Outcome.RETRY,
                             "HTTP 503 Service Unavailable; the partner asks to wait"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_faulty_answer_ends_in_an_outcome_that_says_what_happened(case: str) -> None:
    handle, outcome, said = CASES[case]
    with Raw(handle) as partner:
        adapter = http_adapter(partner.url)
        started = time.monotonic()
        result = adapter.deliver(delivery())
        took = time.monotonic() - started
        adapter.close()
    assert result.outcome is outcome, result
    assert said in result.detail, result.detail
    assert took < 1.5, took  # the timeout (0.5 s) and the deadline's tick, whatever the partner does
    assert partner.requests in ([], ["MSG-1"])  # sent once: no resend on a fresh connection


def test_retry_after_is_read_in_seconds_and_as_a_date_and_absurd_values_are_left_to_the_cap() -> None:
    assert retry_after("120") == 120.0
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert retry_after("Fri, 31 Dec 9999 23:59:59 GMT") > 1e11  # type: ignore[operator]
    assert retry_after("-5") is None and retry_after("soon") is None and retry_after("") is None
    policy = RetryPolicy(initial_delay=0.05, max_delay=30.0, jitter=0.0)
    assert policy.delay(1, asked=10.0) == 10.0  # waited out, longer than the backoff
    assert policy.delay(1, asked=1e14) == 30.0  # never beyond max_delay
    assert policy.delay(1, asked=0.0) == 0.05 and policy.delay(1, asked=float("nan")) == 0.05


def test_a_partners_answer_never_breaks_an_operators_line_or_terminal() -> None:
    assert one_line(b"bad\r\n\x1b]0;owned\x07 line\x00two\xff") == "bad \\x1b]0;owned\\x07 line\\x00two\ufffd"
    assert one_line("x" * 600) == "x" * 497 + "..."


def test_credentials_in_the_endpoint_never_reach_a_detail() -> None:
    with Raw(_hangs) as partner:
        port = partner.port
    result = http_adapter(f"http://hub:s3cret-pw@127.0.0.1:{port}/inbox").deliver(delivery())
    assert result.outcome is Outcome.RETRY and "cannot reach http://127.0.0.1:" in result.detail
    assert "s3cret" not in result.detail and "hub:" not in result.detail


# -- HTTP: kept connections ----------------------------------------------------------------------------------------


def test_something_sent_unasked_on_a_kept_connection_is_not_taken_for_the_next_answer() -> None:
    """An idle server that writes an answer nobody asked for (a "408" before it closes a kept
    connection, here a 400): the next delivery must not read it as its own answer, which would
    dead-letter a message the partner never saw. It goes on a new connection instead."""

    def handle(p: Raw, c: socket.socket) -> None:
        if p.connections == 1:
            p.read_request(c)
            c.sendall(answer(200, b"ok"))
            time.sleep(0.05)
            c.sendall(answer(400, b"idle connection closed", b"Connection: close\r\n"))
            forever(p, 2.0)  # and reads nothing more on it
            return
        while p.read_request(c) is not None:
            c.sendall(answer(200, b"ok"))

    with Raw(handle) as partner:
        adapter = http_adapter(partner.url)
        first = adapter.deliver(delivery(1))
        time.sleep(0.2)  # the unasked answer has arrived
        second = adapter.deliver(delivery(2))
        adapter.close()
    assert (first.outcome, second.outcome) == (Outcome.DELIVERED, Outcome.DELIVERED), second.detail
    assert partner.requests == ["MSG-1", "MSG-2"] and partner.connections == 2  # each once


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_a_kept_connection_closed_between_deliveries_is_neither_a_failure_nor_a_duplicate(how: str) -> None:
    def handle(p: Raw, c: socket.socket) -> None:
        p.read_request(c)
        c.sendall(answer(200, b"ok"))  # offers keep-alive, then closes the idle connection
        time.sleep(0.05)
        if how == "rst":
            reset(c)

    with Raw(handle) as partner:
        adapter = http_adapter(partner.url)
        outcomes = []
        for n in range(4):
            outcomes.append(adapter.deliver(delivery(n)).outcome)
            time.sleep(0.15)
        adapter.close()
    assert outcomes == [Outcome.DELIVERED] * 4
    assert partner.requests == ["MSG-0", "MSG-1", "MSG-2", "MSG-3"] and partner.connections == 4


def test_a_partner_that_crashes_after_answering_is_retried_then_gets_the_next_delivery_once() -> None:
    def handle(p: Raw, c: socket.socket) -> None:
        while p.read_request(c) is not None:
            c.sendall(answer(200, b"ok"))

    partner = Raw(handle)
    port = partner.port
    adapter = http_adapter(partner.url)
    assert adapter.deliver(delivery(1)).outcome is Outcome.DELIVERED
    partner.close()  # the partner dies with the kept connection open
    down = adapter.deliver(delivery(2))
    assert down.outcome is Outcome.RETRY and "cannot reach" in down.detail and "Refused" in down.detail, down.detail
    with Raw(handle, port) as again:
        assert adapter.deliver(delivery(2)).outcome is Outcome.DELIVERED
        assert adapter.deliver(delivery(3)).outcome is Outcome.DELIVERED
    adapter.close()
    assert partner.requests == ["MSG-1"] and again.requests == ["MSG-2", "MSG-3"]


# -- the dispatcher: Retry-After, clear last errors, no partner holding up another ---------------------------------


def test_a_partner_shedding_load_is_not_hit_again_before_its_retry_after(tmp_path: Path) -> None:
    with Raw(_status(503, b"busy\r\n\x1b[31mred", b"Retry-After: 2\r\n")) as partner:
        runtime = Runtime.load(write_config(tmp_path, gateway_url=partner.url, initial_delay=0.05, max_delay=5.0))
        runtime.pipeline.submit(Sender(runtime.config, "VN-MOIT").message())
        dispatcher = runtime.dispatcher()
        dispatcher.run_once()
        assert wait_until(lambda: runtime.store.rows(destination="TH-ASW")[0].attempts == 1
                          and runtime.store.rows(destination="TH-ASW")[0].state is State.PENDING, 10)
        dispatcher.stop()
    (row,) = runtime.store.rows(destination="TH-ASW")
    assert row.next_attempt_at - row.updated_at >= 1.9  # not the 0.05 s backoff
    # the partner's words, on one line and without its escape sequence
    assert row.last_error == "HTTP 503 Service Unavailable: busy \\x1b[31mred; the partner asks to wait 2 s (Retry-After)"
    runtime.close()


def ministry(then: Callable[[Raw, socket.socket], None]) -> Callable[[Raw, socket.socket], None]:
    """A SOAP ministry that serves its WSDL (``GET``), then answers the call with ``then``."""

    def handle(p: Raw, c: socket.socket) -> None:
        while (request := p.read_request(c)) is not None:
            if not request.startswith(b"GET"):
                then(p, c)
                return
            wsdl = WSDL.format(ns="urn:x", op="ReceiveDocument", hub=HUB_NS, base=f"http://127.0.0.1:{p.port}").encode()
            c.sendall(answer(200, wsdl, b"Content-Type: text/xml\r\n"))

    return handle


def sends(raw: bytes, rst: bool = False) -> Callable[[Raw, socket.socket], None]:
    def then(p: Raw, c: socket.socket) -> None:
        c.sendall(raw)
        if rst:
            time.sleep(0.05)
            reset(c)

    return then


def soap(inner: str, status: int = 200) -> Callable[[Raw, socket.socket], None]:
    return sends(answer(status, f'<s:Envelope xmlns:s="{SOAP11}"><s:Body>{inner}</s:Body></s:Envelope>'.encode(),
                        b"Content-Type: text/xml\r\n"))


def drips(p: Raw, c: socket.socket) -> None:
    """A status line, then a header every 0.1 s for as long as the test lasts."""
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\n")
    while not p.stop.wait(0.1):
        c.sendall(b"X-Drip: y\r\n")


def test_hanging_and_dripping_partners_hold_up_nobody_and_stop_in_time(tmp_path: Path) -> None:
    """TH-ASW never answers, a SOAP ministry drips its answer for ever: customs (a folder) and a
    healthy HTTP partner get every message meanwhile, and the dispatcher stops within the timeouts."""
    good = Receiver(port=free_port()).start()
    with Raw(_hangs) as hanging, Raw(ministry(drips)) as dripping:
        extra = f"""
[[agencies]]
id = "VN-MOH"
name = "Ministry of Health"
country = "VN"
adapter = "soap"
options = {{ wsdl = "http://127.0.0.1:{dripping.port}/ministry?wsdl", operation = "ReceiveDocument", timeout = 1 }}

[[agencies]]
id = "VN-PORT"
name = "Port authority"
country = "VN"
adapter = "http"
endpoint = "{good.url}"

[[routes]]
name = "co-to-moh"
to = "VN-MOH"
schema = "co"
deliver = [{{ agency = "VN-MOH" }}]

[[routes]]
name = "co-to-port"
to = "VN-PORT"
schema = "co"
deliver = [{{ agency = "VN-PORT" }}]
"""
        runtime = Runtime.load(write_config(tmp_path, gateway_url=hanging.url, extra=extra, max_attempts=100))
        moit = Sender(runtime.config, "VN-MOIT")
        dispatcher = runtime.dispatcher()
        dispatcher.start()
        try:
            for to in ("TH-ASW", "VN-MOH", "VN-PORT") * 6:
                assert runtime.pipeline.submit(moit.message(to=to)).accepted
            delivered = lambda d: [r for r in runtime.store.rows(destination=d) if r.state is State.DELIVERED]  # noqa: E731
            assert wait_until(lambda: len(delivered("VN-CUSTOMS")) == 6 and good.unique == 6, 5), (len(delivered("VN-CUSTOMS")), good.unique)
            assert not delivered("TH-ASW") and not delivered("VN-MOH")
        finally:
            stopped = threading.Thread(target=dispatcher.stop)
            stopped.start()
            stopped.join(8)  # each stuck delivery ends at its timeout (3 s, 1 s)
            assert not stopped.is_alive(), "the dispatcher is still waiting for a partner that drips"
    good.stop()
    errors = {r.destination: r.last_error or "" for r in runtime.store.rows() if r.attempts >= 1 and r.state is not State.DELIVERED}
    assert "no complete answer within 3 s" in errors["TH-ASW"]
    assert "time-out calling ReceiveDocument: no complete answer from http://127.0.0.1:" in errors["VN-MOH"]
    runtime.close()


# -- SOAP: what a ministry answers, and its WSDL at start-up -------------------------------------------------------


def soap_adapter(wsdl: str, timeout: float = 0.5) -> SoapAdapter:
    options = {"wsdl": wsdl, "operation": "ReceiveDocument", "port": "MinistrySoap11", "timeout": timeout}
    return SoapAdapter(Agency("VN-MOH", "MOH", "VN", "soap", "", options=MappingProxyType(options)), AdapterSettings(timeout=timeout))


ENVELOPE = f'<Envelope xmlns="{HUB_NS}"><Header><Reference><messageId>M-1</messageId></Reference></Header></Envelope>'.encode()
SOAP_CASES = {
    "drips its answer": (drips, Outcome.RETRY, "time-out calling ReceiveDocument: no complete answer from"),
    "a DTD": (sends(answer(200, b'<!DOCTYPE x [<!ENTITY e "y">]><x>&e;</x>')), Outcome.RETRY,
              "unreadable answer to ReceiveDocument (HTTP 200): it holds a DTD, which the hub refuses"),
    "an empty SOAP Body": (soap(""), Outcome.RETRY, "unreadable answer to ReceiveDocument (HTTP 200): IndexError"),
    "an element the WSDL does not allow": (
        soap('<m:ReceiveDocumentResponse xmlns:m="urn:x"><m:ticket>T</m:ticket><m:status>A</m:status></m:ReceiveDocumentResponse>'),
        Outcome.RETRY, "unreadable answer to ReceiveDocument (HTTP 200): XMLParseError: Unexpected element"),
    "an HTML page": (sends(answer(200, b"<html><body>maintenance</body></html>")), Outcome.RETRY, "unreadable answer to ReceiveDocument"),
    "a server fault": (soap("<s:Fault><faultcode>s:Server</faultcode><faultstring>db down</faultstring></s:Fault>", 500),
                       Outcome.RETRY, "SOAP fault s:Server: db down"),
    "a client fault": (soap("<s:Fault><faultcode>s:Client</faultcode><faultstring>E17 unknown permit</faultstring></s:Fault>", 500),
                       Outcome.FAILED, "SOAP fault s:Client: E17 unknown permit"),
    "429 with Retry-After": (sends(answer(429, b"slow down", b"Retry-After: 30\r\n")), Outcome.RETRY,
                             "HTTP 429: slow down; the ministry asks to wait 30 s (Retry-After)"),
    "garbage": (sends(b"\x00garbage\r\n\r\n"), Outcome.RETRY, "the ReceiveDocument endpoint answered something that is not HTTP"),
    "a reset mid-answer": (sends(b"HTTP/1.1 200 OK\r\nContent-Length: 900\r\n\r\n<s:Env", rst=True), Outcome.RETRY,
                           "broke before a complete answer (ConnectionResetError"),
}


@pytest.mark.parametrize("case", list(SOAP_CASES))
def test_each_ministry_answer_ends_in_an_outcome_not_an_exception(case: str) -> None:
    then, outcome, said = SOAP_CASES[case]
    with Raw(ministry(then)) as partner:
        adapter = soap_adapter(f"http://127.0.0.1:{partner.port}/ministry?wsdl")
        started = time.monotonic()
        result = adapter.deliver(Delivery(1, "M-1", "VN-MOIT", "VN-MOH", ENVELOPE, 1, "co"))
        took = time.monotonic() - started
        adapter.close()
    assert result.outcome is outcome, result
    assert said in result.detail, result.detail
    assert took < 2.0, took
    if case == "429 with Retry-After":
        assert result.retry_after == 30.0


def test_a_wsdl_that_drips_at_start_up_is_retried_within_the_timeout() -> None:
    def handle(p: Raw, c: socket.socket) -> None:
        c.recv(65536)
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: 99999\r\n\r\n")
        for _ in range(50):  # a byte every 0.1 s, for 5 s at most
            if p.stop.wait(0.1):
                break
            c.sendall(b" ")

    with Raw(handle) as partner:
        adapter = soap_adapter(f"http://127.0.0.1:{partner.port}/ministry?wsdl")
        started = time.monotonic()
        result = adapter.deliver(Delivery(1, "M-1", "VN-MOIT", "VN-MOH", ENVELOPE, 1, "co"))
        took = time.monotonic() - started
        adapter.close()
    assert result.outcome is Outcome.RETRY and "cannot load the WSDL" in result.detail and "within 0.5 s" in result.detail, result
    assert took < 2.0, took


# -- files: full, read-only, a file already there, a file system that goes away ------------------------------------


def file_adapter(folder: Path) -> FileAdapter:
    return FileAdapter(Agency("VN-CUSTOMS", "Customs", "VN", "file", str(folder)), AdapterSettings())


def file_delivery(n: int, payload: bytes = b"<Envelope>one</Envelope>") -> Delivery:
    return Delivery(n, f"MSG-{n}", "VN-MOIT", "VN-CUSTOMS", payload, 1, "co")


def test_a_file_already_there_is_never_overwritten_and_a_repeat_leaves_it_alone(tmp_path: Path) -> None:
    adapter = file_adapter(tmp_path / "out")
    assert adapter.deliver(file_delivery(7)).outcome is Outcome.DELIVERED
    target = tmp_path / "out" / "VN-MOIT_MSG-7.xml"
    before = os.stat(target)
    again = adapter.deliver(file_delivery(7))  # a retry whose first attempt's outcome was lost
    assert again.outcome is Outcome.DELIVERED and "already in" in again.detail
    assert os.stat(target).st_ino == before.st_ino  # not replaced under an agency that may be reading it
    other = adapter.deliver(file_delivery(7, b"<Envelope>two</Envelope>"))  # e.g. two destinations sharing the folder
    assert other.outcome is Outcome.FAILED, other
    assert "is already there and it holds 24 bytes of something else: not replaced" in other.detail
    assert "`hub outbox show 7 --payload` shows this row's document), then resend the row" in other.detail
    assert target.read_bytes() == b"<Envelope>one</Envelope>"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["VN-MOIT_MSG-7.xml"]  # no temporary left


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs."""
    with mounted_tmpfs(tmp_path / "small", "64k") as folder:
        yield folder


def test_a_full_or_read_only_folder_is_retried_and_leaves_no_partial_file(tmpfs: Path) -> None:
    adapter = file_adapter(tmpfs / "inbox")
    assert adapter.deliver(file_delivery(1)).outcome is Outcome.DELIVERED
    full = adapter.deliver(file_delivery(2, b"x" * 200_000))
    assert full.outcome is Outcome.RETRY and full.detail.endswith("inbox: No space left on device"), full.detail
    assert sorted(p.name for p in (tmpfs / "inbox").iterdir()) == ["VN-MOIT_MSG-1.xml"]
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    read_only = adapter.deliver(file_delivery(3))
    assert read_only.outcome is Outcome.RETRY and read_only.detail.endswith("Read-only file system"), read_only.detail
    subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], check=True)
    assert adapter.deliver(file_delivery(3)).outcome is Outcome.DELIVERED


def test_a_folder_whose_file_system_went_away_is_not_written_underneath(tmpfs: Path) -> None:
    """A share unmounted: the hub must not create the folder again on the disk beneath, where the
    files would be hidden once the share is mounted again; it waits, and goes on once it is back."""
    adapter = file_adapter(tmpfs / "inbox")
    assert adapter.deliver(file_delivery(1)).outcome is Outcome.DELIVERED
    subprocess.run(["umount", str(tmpfs)], check=True)
    gone = adapter.deliver(file_delivery(2))
    assert gone.outcome is Outcome.RETRY and f"{tmpfs} is no longer mounted" in gone.detail, gone.detail
    assert not (tmpfs / "inbox").exists()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(tmpfs)], check=True)
    assert adapter.deliver(file_delivery(2)).outcome is Outcome.DELIVERED
    # a folder deleted on a file system still there is made again
    shutil.rmtree(tmpfs / "inbox")
    assert adapter.deliver(file_delivery(3)).outcome is Outcome.DELIVERED


# -- MQTT: a broker that hangs mid-stream --------------------------------------------------------------------------


def test_a_hung_broker_mid_stream_loses_nothing_and_holds_up_no_one_else(tmp_path: Path) -> None:
    from .mosquitto import Broker, Peer
    from .test_mqtt import IN, mqtt_agency

    broker = Broker(tmp_path / "broker").start()
    receiver = Receiver(port=free_port()).start()
    ministry = Peer(broker, "ministry-VN-MOT", (IN,))
    runtime = Runtime.load(write_config(tmp_path, gateway_url=receiver.url, extra=mqtt_agency(broker, tmp_path),
                                        max_attempts=100, max_delay=0.3))
    moit = Sender(runtime.config, "VN-MOIT")
    dispatcher = runtime.dispatcher()
    dispatcher.start()
    th: list[str] = []
    try:
        ids = [runtime.pipeline.submit(moit.message(to="VN-MOT")).message_id for _ in range(5)]
        assert wait_until(lambda: ministry.unique == 5, 20)
        assert broker.proc is not None
        broker.proc.send_signal(signal.SIGSTOP)  # accepts nothing, acknowledges nothing, keeps the sockets open
        try:
            ids += [runtime.pipeline.submit(moit.message(to="VN-MOT")).message_id for _ in range(10)]
            th += [runtime.pipeline.submit(moit.message()).message_id for _ in range(5)]
            assert receiver.wait_for(5, 10)  # the HTTP partner is served meanwhile
            assert wait_until(lambda: any("no PUBACK for nsw/VN-MOT/in within 2 s" in (r.last_error or "")
                                          for r in runtime.store.rows(destination="VN-MOT", limit=100)), 15)
        finally:
            broker.proc.send_signal(signal.SIGCONT)
        assert wait_until(lambda: all(r.state is State.DELIVERED for r in runtime.store.rows(destination="VN-MOT", limit=100)), 30)
        assert wait_until(lambda: set(ids) <= set(ministry.received), 10)  # at least once; the ministry dedupes on the id
    finally:
        dispatcher.stop()
        ministry.close()
        runtime.close()
        broker.stop()
        receiver.stop()
    assert {mid for _, mid in receiver.deliveries} == set(th)


# -- a hub killed in the middle of deliveries ----------------------------------------------------------------------


def hub_cli(config: Path, *args: str) -> str:
    return subprocess.run([sys.executable, "-m", "hub.cli", *args, "--config", str(config)], capture_output=True, text=True,
                          cwd=REPO, timeout=60).stdout


def test_a_hub_killed_mid_delivery_redelivers_only_what_it_had_not_recorded(tmp_path: Path) -> None:
    """SIGKILL while the partner is slow to answer: after the restart every row is delivered; the
    partner saw again only messages it had taken whose outcome the hub had not recorded (at most
    the deliveries in flight), each with the same message id, so it discards them as duplicates.
    Attempt counts and the last error survive the restart, and `hub outbox` states them."""
    receiver = Receiver(port=free_port())
    receiver.status = 503
    receiver.start()
    config = write_config(tmp_path, gateway_url=receiver.url, lease_seconds=4.0, initial_delay=0.2, max_delay=0.4, max_attempts=50)
    moit = Sender(load_config(config), "VN-MOIT")
    messages = [moit.message() for _ in range(12)]
    store = open_store(load_config(config).hub.store, tmp_path)
    rows = lambda: {r.message_id: r for r in store.rows(destination="TH-ASW")}  # noqa: E731
    hub = HubProcess(config).start()
    gate = threading.Event()
    try:
        with httpx.Client(timeout=10) as client:
            assert all(hub.post(m, client).status_code == 200 for m in messages)
        assert wait_until(lambda: len(rows()) == 12 and all(r.attempts >= 1 and r.last_error for r in rows().values()), 10)
        receiver.on_receive = lambda sender, mid, body: gate.wait(5)  # takes it, then is slow to answer
        receiver.status = 200
        assert wait_until(lambda: receiver.unique >= 4, 10)
        hub.kill()
        received_at_kill = {mid for _, mid in receiver.deliveries}
        gate.set()
        receiver.on_receive = None
        at_kill = rows()
        listing = hub_cli(config, "outbox", "list", "--destination", "TH-ASW")
        # a row still pending says why in a sentence: the partner's status and its own words
        assert re.search(r"pending .* attempts \d+ .* last error: HTTP 503 Service Unavailable: refused: the partner does not "
                         r"accept this message", listing), listing
        recorded = {mid for mid, r in at_kill.items() if r.state is State.DELIVERED}
        hub = HubProcess(config).start()
        assert receiver.wait_for(12, 30)
        assert wait_until(lambda: all(r.state is State.DELIVERED for r in rows().values()), 20)
    finally:
        gate.set()
        if hub.proc is not None and hub.proc.poll() is None:
            hub.terminate()
        receiver.stop()
    after = rows()
    store.close()
    assert {mid for _, mid in receiver.deliveries} == {message_id_of(m) for m in messages}  # every message, under its own id
    again = {mid for (_, mid), n in receiver.deliveries.items() if n > 1}
    assert again <= received_at_kill - recorded, (again, received_at_kill, recorded)  # only those not recorded
    assert len(again) <= 4  # at most the deliveries in flight (concurrency 4)
    assert all(after[mid].attempts >= at_kill[mid].attempts for mid in after)  # the counts went on, not from 0
