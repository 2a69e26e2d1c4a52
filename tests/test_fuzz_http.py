"""The listener under attack: a real ``hub serve`` on loopback (the Vietnamese hub of the two-hub
pair, so POST /as4 is there too) sent wrong methods, broken framing, bodies that stop, heads that
never end, idle connections past ``max_connections``, junk in paths and queries, misshapen SOAP and
AS4 envelopes. Every answer is a proper status with the hub's own error body (a NACK, a SOAP
fault, a signed eb:Error, or JSON with a sentence), nothing the client did puts a traceback in the
log, and after each test the hub still answers /health and accepts a valid message.

The longer campaign these tests were cut from is not part of the suite; each bug it found has its
own test here, and the hypothesis tests replay a bounded, derandomised part of it."""

from __future__ import annotations

import copy
import json
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from adapters.asw.header import S12
from adapters.base import Delivery
from hub.config import load_config
from hub.envelope import read_header
from hub.runtime import Runtime
from hub.twohubs import MOIT, TH_CUSTOMS, TH_HUB, VN_HUB, write_pair

from .pg import Cluster, pg_cluster  # noqa: F401 (the fixture)
from .support import EXAMPLES, HubProcess, Sender, free_port, message_id_of, wait_until, write_config

BODY_SECONDS = 1  # [hub] body_timeout: also the deadline of a request's head (head_timeout is not given)
HEAD_SECONDS, SLOW_BODY_SECONDS = 1, 4  # [hub] head_timeout and body_timeout of the ``split`` hub
MAX_CONNECTIONS = 8
SOAP11, SOAP12 = "http://schemas.xmlsoap.org/soap/envelope/", "http://www.w3.org/2003/05/soap-envelope"
HUB_NS = "urn:sw-hub:envelope:1"
EB = "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/"


def fixed(examples: int) -> settings:
    """Deterministic and bounded: the same examples on every run."""
    return settings(derandomize=True, deadline=None, max_examples=examples,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# -- the hub and the wire ---------------------------------------------------------------------------


@dataclass
class Listener:
    process: HubProcess
    port: int
    moit: Sender
    th: Runtime  # the Thai hub, in-process: it makes the AS4 messages VN receives

    @property
    def url(self) -> str:
        return self.process.url

    def valid(self) -> bytes:
        return self.moit.message(EXAMPLES / "co-certificate.xml", to=TH_HUB)

    def soap(self, ns: str = SOAP11, data: bytes | None = None) -> bytes:
        inner = (data or self.valid()).split(b"?>", 1)[-1]
        return _soap(ns, b'<Submit xmlns="urn:sw-hub:soap:1">' + inner + b"</Submit>")

    def as4(self) -> bytes:
        """A signed AS4 user message from TH-NSW carrying a Form D status, as the Thai hub sends it."""
        data = Sender(self.th.config, TH_CUSTOMS).message(EXAMPLES / "formd-status-accepted.xml", to=VN_HUB, document_type="FORMD-STATUS")
        assert self.th.pipeline.submit(data, None).accepted
        row = next(r for r in self.th.store.trace(message_id_of(data)).rows if r.destination == VN_HUB)
        message, _ = self.th.create_adapters()[VN_HUB].message(Delivery(row.id, row.message_id, row.sender, row.destination, row.payload, 1))  # type: ignore[attr-defined]
        return message

    def log(self) -> str:
        return self.process.log.read_text(encoding="utf-8", errors="replace")


def _soap(ns: str, body: bytes, header: bytes = b"") -> bytes:
    return b'<s:Envelope xmlns:s="' + ns.encode() + b'">' + header + b"<s:Body>" + body + b"</s:Body></s:Envelope>"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Listener]:
    folder = tmp_path_factory.mktemp("fuzz-http")
    port = free_port()
    pair = write_pair(folder, port, free_port())
    text = pair.vn.read_text()
    listen = f'listen = "127.0.0.1:{port}"\n'
    pair.vn.write_text(text.replace(listen, f"{listen}body_timeout = {BODY_SECONDS}\nmax_connections = {MAX_CONNECTIONS}\n", 1))
    th = Runtime.load(pair.th)
    process = HubProcess(pair.vn, "--no-dispatch").start()
    try:
        yield Listener(process, port, Sender(load_config(pair.vn), MOIT), th)
    finally:
        process.terminate()
        th.close()


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HubProcess, Sender]]:
    """A hub whose head deadline (``head_timeout``) is shorter than its body's (``body_timeout``)."""
    path = write_config(tmp_path_factory.mktemp("head-timeout"), max_bytes=1_000_000)
    path.write_text(path.read_text().replace("max_depth = 40\n", f"max_depth = 40\nhead_timeout = {HEAD_SECONDS}\n"
                                                                  f"body_timeout = {SLOW_BODY_SECONDS}\n", 1))
    with HubProcess(path, "--no-dispatch") as process:
        yield process, Sender(load_config(path), MOIT)


@pytest.fixture(autouse=True)
def still_serving(hub: Listener) -> Iterator[None]:
    """After each test: no traceback logged for what the clients did, and the hub serves the next one."""
    before = len(hub.log())
    yield
    assert httpx.get(hub.url + "/health", timeout=10).status_code == 200
    assert httpx.post(hub.url + "/messages", content=hub.valid(), timeout=30).status_code == 200
    logged = hub.log()[before:]
    assert "Traceback" not in logged and "Exception in ASGI" not in logged, logged[-3000:]


def _send(port: int, data: bytes | list[bytes], *, wait: float = 5.0) -> tuple[bytes, bool]:
    """(every byte the hub sent back, whether it closed the connection within ``wait`` seconds)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        try:
            for part in data if isinstance(data, list) else [data]:
                sock.sendall(part)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return _read(sock, wait)


def _read(sock: socket.socket, wait: float) -> tuple[bytes, bool]:
    sock.settimeout(wait)
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except TimeoutError:
        return out, False
    except ConnectionResetError:
        pass
    return out, True


def _one_answer(sock: socket.socket) -> bytes:
    """One whole answer (head and Content-Length bytes of body) from a connection kept open."""
    sock.settimeout(10)
    answer = b""
    while b"\r\n\r\n" not in answer or len(_parts(answer)[2]) < int(_parts(answer)[1].get("content-length", 0)):
        chunk = sock.recv(65536)
        assert chunk, answer
        answer += chunk
    return answer


def _parts(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    """(status, headers in lower case, body) of an HTTP/1.1 answer (after any "100 Continue")."""
    while answer.startswith(b"HTTP/1.1 100 "):
        answer = answer.partition(b"\r\n\r\n")[2]
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict((k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:]))
    return int(lines[0].split()[1]), headers, body[: int(headers.get("content-length", len(body)))]


def _head(method: str, path: str, *headers: tuple[str, str | int]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: hub", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _error_text(response_body: bytes) -> str:
    """The sentence of a JSON refusal (and that it is one)."""
    found = json.loads(response_body)
    assert isinstance(found, dict) and isinstance(found.get("error"), str) and len(found["error"]) > 10, found
    return found["error"]


def _fault(body: bytes) -> tuple[str, str, str]:
    """(fault code, sentence, hub error code) of a SOAP 1.1 or 1.2 fault."""
    root = etree.fromstring(body)
    code = root.findtext(".//faultcode") or root.findtext(f".//{{{SOAP12}}}Value") or ""
    sentence = root.findtext(".//faultstring") or root.findtext(f".//{{{SOAP12}}}Text") or ""
    return code.split(":")[-1], sentence, root.findtext(".//{urn:sw-hub:soap:1}code") or ""


def _proper(status: int, body: bytes, *allowed: int) -> bool:
    """``status`` is one of ``allowed``, or the 500 a SOAP fault that is the client's has by design
    (WS-I Basic Profile R1126: every SOAP 1.1 fault; SOAP 1.2: VersionMismatch, MustUnderstand)."""
    if status in allowed:
        return True
    return status == 500 and b"Fault>" in body and _fault(body)[0] in ("Client", "VersionMismatch", "MustUnderstand")


def _ebms_error(body: bytes) -> etree._Element:
    error = etree.fromstring(body).find(f".//{{{EB}}}Error")
    assert error is not None, body[:500]
    return error


# -- bugs found, one test each ------------------------------------------------------------------


def test_a_client_that_goes_away_mid_body_leaves_no_traceback(hub: Listener) -> None:
    """A client that closed its connection half-way through its body made Starlette's
    ClientDisconnect escape every POST route: "Exception in ASGI application" and a traceback in
    the log, for something the client did."""
    bodies = {"/messages": hub.valid(), "/soap": hub.soap(), "/as4": hub.as4()}
    before = len(hub.log())
    for path, body in bodies.items():
        cut = body[: len(body) // 2]
        for request in (_head("POST", path, ("Content-Length", len(body))) + cut,  # stops half-way
                        _head("POST", path, ("Transfer-Encoding", "chunked")) + b"%x\r\n" % len(cut) + cut + b"\r\n",  # no last chunk
                        _head("POST", path, ("Transfer-Encoding", "chunked")) + b"ffff\r\n" + cut):  # a chunk that lies
            with socket.create_connection(("127.0.0.1", hub.port)) as sock:
                sock.sendall(request)
                time.sleep(0.02)  # the hub starts reading the body before the client goes
    # a traceback would be there at once; none within a second
    assert not wait_until(lambda: "Traceback" in hub.log()[before:], 1.0), hub.log()[before:][-2000:]


def test_a_body_that_does_not_arrive_in_time_is_refused_in_each_routes_own_form(hub: Listener) -> None:
    """A body that stopped coming was answered 408 in plain text on every route and the
    connection kept: now a signed NACK on /messages, a SOAP fault on /soap, a signed eb:Error
    (a warning: the partner sends it again) on /as4, each with the sentence, and the hub closes
    the connection instead of keeping it for the rest of a body nobody reads."""
    answers: dict[str, tuple[bytes, bool]] = {}

    def stalled(path: str, media: str) -> None:
        answers[path] = _send(hub.port, _head("POST", path, ("Content-Type", media), ("Content-Length", 5000)) + b"<Envelope", wait=BODY_SECONDS + 8)

    threads = [threading.Thread(target=stalled, args=a) for a in
               (("/messages", "application/xml"), ("/soap", "application/soap+xml"), ("/as4", "application/soap+xml"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for path, (answer, closed) in answers.items():
        status, headers, body = _parts(answer)
        assert (status, headers.get("connection"), closed) == (408, "close", True), (path, answer[:300])
        if path == "/messages":
            nack = etree.fromstring(body)
            assert nack.findtext(f".//{{{HUB_NS}}}ErrorCode") == "ERR00" and nack.find(".//{http://www.w3.org/2000/09/xmldsig#}Signature") is not None
            assert f"did not arrive within {BODY_SECONDS} s" in nack.findtext(f".//{{{HUB_NS}}}ErrorMessage")
        elif path == "/soap":
            assert _fault(body)[0] == "Sender" and _fault(body)[2] == "ERR00" and f"within {BODY_SECONDS} s" in _fault(body)[1]
        else:
            error = _ebms_error(body)
            assert error.get("severity") == "warning" and f"within {BODY_SECONDS} s" in (error.findtext(f"{{{EB}}}Description") or "")


def test_idle_connections_and_heads_that_never_end_are_closed(hub: Listener) -> None:
    """uvicorn waited for ever for the first request of a connection and for a head that trickles:
    a connection that says nothing, or half a request line, was held as long as the client
    liked. Now the head has ``head_timeout`` (here ``body_timeout``, which is shorter than its
    default); a connection that sent part of one is told why."""
    idle = socket.create_connection(("127.0.0.1", hub.port))
    half = socket.create_connection(("127.0.0.1", hub.port))
    kept = socket.create_connection(("127.0.0.1", hub.port))
    try:
        half.sendall(b"GET /health HTTP/1.1\r\nHost: hub\r\nX-Slow: ")
        kept.sendall(_head("GET", "/health"))  # answered, kept alive; then half of the next request
        assert _parts(_one_answer(kept))[0] == 200
        kept.sendall(b"GET /hea")
        started = time.monotonic()
        (silence, idle_closed), (told, half_closed), (next_told, kept_closed) = (_read(s, BODY_SECONDS + 8) for s in (idle, half, kept))
        assert time.monotonic() - started < BODY_SECONDS + 5
    finally:
        for sock in (idle, half, kept):
            sock.close()
    assert (silence, idle_closed) == (b"", True)  # nothing came: nobody to tell
    for answer, closed in ((told, half_closed), (next_told, kept_closed)):
        status, headers, body = _parts(answer)
        assert (status, headers["connection"], closed) == (408, "close", True)
        assert f"head did not arrive within {BODY_SECONDS} s" in _error_text(body)


def test_connections_past_the_limit_get_the_hubs_503_and_the_deadline_frees_them(hub: Listener) -> None:
    """``max_connections`` sockets that never send a byte held the listener for ever: every
    other client got uvicorn's bare "Service Unavailable" for as long as they stayed. Now the
    503 says why (JSON; a SOAP fault with ERR50 on /soap) with Retry-After, and the head deadline
    frees the slots."""
    hogs = [socket.create_connection(("127.0.0.1", hub.port)) for _ in range(MAX_CONNECTIONS)]
    try:
        assert wait_until(lambda: httpx.get(hub.url + "/health", timeout=5).status_code == 503, 2)
        busy = httpx.get(hub.url + "/health", timeout=5)
        assert busy.headers["retry-after"] == "1" and "max_connections" in _error_text(busy.content)
        fault = httpx.post(hub.url + "/soap", content=hub.soap(SOAP12), headers={"Content-Type": "application/soap+xml"}, timeout=5)
        assert fault.status_code == 503 and fault.headers["retry-after"] == "1" and _fault(fault.content)[::2] == ("Receiver", "ERR50")
        assert wait_until(lambda: httpx.get(hub.url + "/health", timeout=5).status_code == 200, BODY_SECONDS + 5)
    finally:
        for sock in hogs:
            sock.close()
    logged = hub.log()
    assert "Exceeded concurrency limit" not in logged and "refused with 503: more than [hub] max_connections" in logged


def test_a_head_or_trailers_larger_than_the_hub_reads_are_refused(hub: Listener) -> None:
    """uvicorn and httptools gathered a URL, a header or a chunked body's trailers of any size in
    memory (120 MB of one header took 190 MB, copied again at every packet, until the client
    stopped): now past 64 KiB of them together the hub answers 431 and closes the connection."""
    big = "a" * 70_000
    for request in (f"GET /health?{big} HTTP/1.1\r\nHost: hub\r\n\r\n".encode(),
                    _head("GET", "/health", ("X-Big", big)),
                    _head("GET", "/health", *((f"X-{i}", "b" * 60) for i in range(1200)))):
        answer, closed = _send(hub.port, request)
        status, headers, body = _parts(answer)
        assert (status, headers["connection"], closed) == (431, "close", True) and "more than 65536 bytes" in _error_text(body)
    # trailers of a megabyte: the connection is closed as they come (the client, still sending,
    # may see a reset before the 431)
    trailer = _head("POST", "/messages", ("Transfer-Encoding", "chunked")) + b"5\r\n<x/>\n\r\n0\r\nX-Trailer: " + b"t" * 2**20
    answer, closed = _send(hub.port, trailer)
    assert closed and (answer == b"" or _parts(answer)[0] == 431), answer[:300]
    # a message of 900 kB in chunks of 500 bytes is no head: taken
    data = hub.valid()
    padded = data.replace(b"?>", b"?>" + b" " * (900_000 - len(data)), 1)  # white space before the root
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(padded[i:i + 500]), padded[i:i + 500]) for i in range(0, len(padded), 500)) + b"0\r\n\r\n"
    status, _, body = _parts(_send(hub.port, _head("POST", "/messages", ("Transfer-Encoding", "chunked"), ("Connection", "close")) + chunked)[0])
    assert status == 200, body[-500:]


def test_a_head_has_head_timeout_an_idle_kept_alive_connection_too_and_a_body_body_timeout(split: tuple[HubProcess, Sender]) -> None:
    """A head shared ``body_timeout`` (60 s by default) with the body: a client reopening about
    ``max_connections`` connections a minute held every slot with half-sent heads. Now a head has
    ``head_timeout``, from the connection's opening or from the answer before, and a kept-alive
    connection left idle is closed after it too (uvicorn's own 5 s gave way); a body that comes
    slowly still has all of ``body_timeout``."""
    process, moit = split
    port = int(process.url.rsplit(":", 1)[1])
    data = moit.message()
    results: dict[str, tuple[bytes, bool, float]] = {}

    def run(name: str, first: bytes, then: bytes | None = None) -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(first)
            if then is not None:  # answered and kept alive; then ``then``, or nothing
                assert _parts(_one_answer(sock))[0] == 200
                if then:
                    sock.sendall(then)
            started = time.monotonic()
            answer, closed = _read(sock, SLOW_BODY_SECONDS + 8)
            results[name] = answer, closed, time.monotonic() - started

    cases = {"half a head": (b"GET /health HTTP/1.1\r\nHost: hub\r\nX-Slow: ",),
             "idle after an answer": (_head("GET", "/health"), b""),
             "half a head after an answer": (_head("GET", "/health"), b"GET /hea"),
             "half a body": (_head("POST", "/messages", ("Content-Type", "application/xml"), ("Content-Length", len(data))) + data[:500],)}
    threads = [threading.Thread(target=run, args=(name, *args)) for name, args in cases.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name in ("half a head", "half a head after an answer"):
        answer, closed, took = results[name]
        status, headers, body = _parts(answer)
        assert (status, headers["connection"], closed) == (408, "close", True), (name, answer[:300])
        assert f"head did not arrive within {HEAD_SECONDS} s" in _error_text(body)
        assert took < SLOW_BODY_SECONDS - 1.5, (name, took)  # the head's deadline, not the body's
    answer, closed, took = results["idle after an answer"]
    assert (answer, closed) == (b"", True) and took < SLOW_BODY_SECONDS - 1.5, took  # nothing came: nobody to tell
    answer, closed, took = results["half a body"]
    status, headers, body = _parts(answer)
    assert (status, headers["connection"], closed) == (408, "close", True), answer[:300]
    assert f"did not arrive within {SLOW_BODY_SECONDS} s" in (etree.fromstring(body).findtext(f".//{{{HUB_NS}}}ErrorMessage") or "")
    assert took > SLOW_BODY_SECONDS - 1, took  # all of body_timeout, not head_timeout
    assert "a request head did not arrive within 1 s" in process.log.read_text()


def _chunked(data: bytes, size: int) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(data[i:i + size]), data[i:i + size]) for i in range(0, len(data), size))


def test_a_body_in_tiny_chunks_is_taken_and_framing_out_of_proportion_is_not(hub: Listener, split: tuple[HubProcess, Sender]) -> None:
    """Chunk lines counted with the head against 64 KiB: a valid message sent in 20,000 chunks of
    5 bytes (100 kB of framing for 100 kB of body, as a client streaming small writes sends it)
    got a 431. Framing is now held to the body it carries: 64 KiB beyond its bytes, and 64 KiB in a
    row without one; chunk extensions or trailers with little or no body are still refused (and
    a read holding the head is counted too: chunk extensions sent with it were not)."""
    process, moit = split
    data = moit.message()
    padded = data.replace(b"?>", b"?>" + b" " * (100_000 - len(data)), 1)  # white space before the root
    request = _head("POST", "/messages", ("Transfer-Encoding", "chunked"), ("Connection", "close")) + _chunked(padded, 5) + b"0\r\n\r\n"
    assert request.count(b"\r\n5\r\n") >= 19_999
    with socket.create_connection(("127.0.0.1", int(process.url.rsplit(":", 1)[1])), timeout=20) as sock:
        try:
            for at in range(0, len(request), 16_384):  # written as it is made, in reads of their own
                sock.sendall(request[at:at + 16_384])
                time.sleep(0.02)
        except (BrokenPipeError, ConnectionResetError):  # refused half-way: the answer says why
            pass
        status, _, body = _parts(_read(sock, 20)[0])
    assert status == 200, body[-500:]
    receipt = etree.fromstring(body)
    assert read_header(receipt).subject.reference == message_id_of(data) and receipt.find(".//{http://www.w3.org/2000/09/xmldsig#}Signature") is not None

    chunked = _head("POST", "/messages", ("Transfer-Encoding", "chunked"))
    floods = {  # each just past its bound in its last bytes: the hub has read all of it when it answers
        "chunk extensions, a byte of body each": [chunked + b"".join(b"1;e=" + b"e" * 1100 + b"\r\nx\r\n" for _ in range(60))],
        "a chunk extension and no body": [chunked + b"0;e=" + b"e" * 65_600],
        "trailers after a body": [chunked + _chunked(b" " * 100_000, 1000), b"0\r\n" + b"".join(b"X-T%d: %s\r\n" % (i, b"t" * 1000) for i in range(66))],
    }
    for name, parts in floods.items():
        with socket.create_connection(("127.0.0.1", hub.port), timeout=10) as sock:
            for part in parts:
                sock.sendall(part)
                time.sleep(0.2)  # a read of its own
            answer, closed = _read(sock, 10)
        status, headers, body = _parts(answer)
        assert (status, headers["connection"], closed) == (431, "close", True), (name, answer[:300])
        assert "more than 65536 bytes of chunk lines and trailers" in _error_text(body), name


def test_an_upgrade_the_hub_does_not_speak_is_ignored_not_taken_as_the_end_of_the_request(hub: Listener) -> None:
    """``curl --http2`` on an http:// URL asks to upgrade to h2c: httptools ended the request at its
    head and uvicorn dropped the body, so a valid message got ERR02 "Document is empty" (and two
    warnings in the log). The Upgrade is ignored now, as RFC 9110 lets a server do."""
    before = len(hub.log())
    for upgrade in ("h2c", "websocket"):
        data = hub.valid()
        request = _head("POST", "/messages", ("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", upgrade), ("HTTP2-Settings", "AAMAAABkAAQCAAAA"),
                        ("Content-Type", "application/xml"), ("Content-Length", len(data))) + data
        with socket.create_connection(("127.0.0.1", hub.port), timeout=10) as sock:
            sock.sendall(request + _head("GET", "/health", ("Connection", "close")))  # and the next request on the connection
            answer, _ = _read(sock, 10)
        status, _, body = _parts(answer)
        assert status == 200 and b"<ErrorList>" not in body, answer[:1500]
        assert answer.count(b"HTTP/1.1 200 OK") == 2
    assert "upgrade" not in hub.log()[before:].lower()


def test_requests_that_are_not_http_get_a_sentence_and_log_one_line(hub: Listener) -> None:
    """uvicorn answered "Invalid HTTP request received." and logged a warning for each one: a
    client could write the log full. Now a JSON sentence, and at most a line a minute."""
    before = len(hub.log())
    for request in (_head("POST", "/messages", ("Content-Length", 3), ("Transfer-Encoding", "chunked")) + b"0\r\n\r\n",
                    _head("POST", "/messages", ("Transfer-Encoding", "chunked")) + b"zz\r\nabc\r\n",
                    _head("POST", "/messages", ("Content-Length", 5), ("Content-Length", 6)) + b"<x/>",
                    _head("POST", "/soap", ("Content-Length", "-1")),
                    b"GET /messages/\x00 HTTP/1.1\r\nHost: hub\r\n\r\n",
                    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"):  # a TLS hello on the plain port
        status, headers, body = _parts(_send(hub.port, request)[0])
        assert (status, headers["connection"]) == (400, "close") and "not valid HTTP/1.1" in _error_text(body)
    logged = hub.log()[before:]
    assert "Invalid HTTP request received" not in logged and logged.count("not valid HTTP/1.1") <= 1, logged


def test_no_route_and_wrong_methods_are_json_sentences(hub: Listener) -> None:
    """Starlette's bare "Not Found" and "Method Not Allowed" became the hub's JSON sentences."""
    with httpx.Client(base_url=hub.url, timeout=10) as client:
        nothing = client.get("/nothing/here")
        assert nothing.status_code == 404 and "/openapi.json" in _error_text(nothing.content)
        for method, path, allowed in (("GET", "/messages", {"POST"}), ("PUT", "/messages", {"POST"}), ("GET", "/as4", {"POST"}),
                                      ("DELETE", "/health", {"GET", "HEAD"}), ("POST", "/keys", {"GET", "HEAD"})):
            wrong = client.request(method, path)
            assert (wrong.status_code, set(wrong.headers["allow"].split(", "))) == (405, allowed)
            assert f"{method} is not allowed on {path}; it takes {wrong.headers['allow']}" == _error_text(wrong.content)
        bare = client.get("/soap")
        assert bare.status_code == 400 and "?wsdl" in _error_text(bare.content)
    # CONNECT, which httptools takes for a switch of protocol: answered as any method, then closed
    answer, closed = _send(hub.port, _head("CONNECT", "/health") + _head("GET", "/health"))
    status, headers, body = _parts(answer)
    assert (status, headers["connection"], closed) == (405, "close", True) and "CONNECT is not allowed" in _error_text(body)


def test_soap_envelopes_that_are_not_one_header_and_one_body_are_refused(hub: Listener) -> None:
    """Two Bodies were accepted (the first one submitted, the second never looked at), and a
    header block with mustUnderstand in a second Header escaped the check."""
    submit = hub.soap().split(b"<s:Body>", 1)[1].rsplit(b"</s:Body>", 1)[0]
    must = b'<s:Header/><s:Header><x:Tx xmlns:x="urn:x" s:mustUnderstand="1"/></s:Header>'
    cases = {  # each with words of its sentence
        "2 Body elements": _soap(SOAP11, submit).replace(b"</s:Envelope>", b"<s:Body>" + submit + b"</s:Body></s:Envelope>"),
        "2 Header elements": _soap(SOAP11, submit, must),
        "the Header comes first": _soap(SOAP11, submit).replace(b"</s:Body>", b"</s:Body><s:Header/>"),
        "{urn:x}y before its Body": _soap(SOAP11, submit, b'<x:y xmlns:x="urn:x"/>'),
        "{urn:x}y after its Body": _soap(SOAP12, submit).replace(b"</s:Envelope>", b'<x:y xmlns:x="urn:x"/></s:Envelope>'),
    }
    for name, body in cases.items():
        r = httpx.post(hub.url + "/soap", content=body, headers={"Content-Type": "text/xml"}, timeout=10)
        code, sentence, hub_code = _fault(r.content)
        assert (code in ("Client", "Sender"), hub_code) == (True, "ERR00") and name in sentence, (name, r.text)
    # SOAP 1.1 lets elements follow the Body: still taken
    after = _soap(SOAP11, submit).replace(b"</s:Envelope>", b'<x:y xmlns:x="urn:x"/></s:Envelope>')
    assert httpx.post(hub.url + "/soap", content=after, headers={"Content-Type": "text/xml"}, timeout=10).status_code == 200


def test_as4_envelopes_that_are_not_one_header_and_one_body_are_refused(hub: Listener) -> None:
    """A second (unsigned) Header added to a signed AS4 message was accepted; a second Body was
    refused with a sentence about signatures that told the partner nothing."""
    signed = hub.as4()

    def changed(change) -> bytes:  # type: ignore[no-untyped-def]
        root = etree.fromstring(signed)
        change(root)
        return etree.tostring(root)

    def second_header(root: etree._Element) -> None:
        root.find(f"{{{S12}}}Header").addnext(etree.Element(f"{{{S12}}}Header"))

    def second_body(root: etree._Element) -> None:
        extra = etree.Element(f"{{{S12}}}Body")
        etree.SubElement(extra, "{urn:x}other")
        root.find(f"{{{S12}}}Body").addprevious(extra)

    for change, said in ((second_header, "2 Header elements"), (second_body, "2 Body elements")):
        r = httpx.post(hub.url + "/as4", content=changed(change), headers={"Content-Type": "application/soap+xml"}, timeout=10)
        error = _ebms_error(r.content)
        assert (r.status_code, error.get("errorCode")) == (400, "EBMS:0009") and said in error.findtext(f"{{{EB}}}Description"), r.text[:800]
    assert httpx.post(hub.url + "/as4", content=signed, headers={"Content-Type": "application/soap+xml"}, timeout=10).status_code == 200


def test_multipart_requests_are_refused_for_what_they_are(hub: Listener) -> None:
    """MTOM or SOAP-with-attachments on /soap and /as4 were parsed as XML: "not well-formed XML"
    (and on /as4 an invalid header). Now refused as multipart, on /as4 as a feature not supported."""
    media = 'multipart/related; type="application/xop+xml"; boundary="b"; start-info="application/soap+xml"'
    body = b"--b\r\nContent-Type: application/xop+xml\r\n\r\n" + hub.soap(SOAP12) + b"\r\n--b--\r\n"
    r = httpx.post(hub.url + "/soap", content=body, headers={"Content-Type": media}, timeout=10)
    assert r.status_code == 400 and _fault(r.content)[0] == "Sender" and "multipart" in _fault(r.content)[1]
    r = httpx.post(hub.url + "/as4", content=body, headers={"Content-Type": media}, timeout=10)
    error = _ebms_error(r.content)
    assert (r.status_code, error.get("errorCode")) == (400, "EBMS:0008") and "multipart" in error.findtext(f"{{{EB}}}Description")


def test_a_receipts_sender_given_twice_or_empty_is_refused(hub: Listener) -> None:
    """``?sender=`` answered "no receipt ... not accepted" for an accepted message, and
    ``?sender=A&sender=B`` used B without a word."""
    data = hub.valid()
    assert httpx.post(hub.url + "/messages", content=data, timeout=30).status_code == 200
    url = f"{hub.url}/messages/{message_id_of(data)}/receipt"
    assert httpx.get(url, params={"sender": MOIT}, timeout=10).status_code == 200
    empty = httpx.get(url + "?sender=", timeout=10)
    assert empty.status_code == 400 and "sender is empty" in _error_text(empty.content)
    twice = httpx.get(url, params=[("sender", "VN-MARD"), ("sender", MOIT)], timeout=10)
    assert twice.status_code == 400 and "given 2 times" in _error_text(twice.content)


def test_on_postgresql_keys_no_message_can_have_are_refused_and_a_store_down_is_a_503(pg_cluster: Cluster, tmp_path: Path) -> None:  # noqa: F811
    """PostgreSQL's text holds no NUL: GET /messages/%00 (and the status, receipt, sender and
    conversation) made the store fail, a bare 500 with a traceback. And with the database down,
    every portal route was a bare 500 with a traceback, while /health said "not ready"."""
    config = write_config(tmp_path / "up", store=pg_cluster.new_database())
    with HubProcess(config, "--no-dispatch") as up, httpx.Client(base_url=up.url, timeout=10) as client:
        data = Sender(load_config(config), MOIT).message()
        assert client.post("/messages", content=data).status_code == 200
        mid = message_id_of(data)
        for path, what in (("/messages/%00", "message id"), ("/messages/a%00b/status", "message id"), ("/messages/%01/receipt", "message id"),
                           (f"/messages/{mid}/receipt?sender=VN%00", "sender"), ("/conversations/%00x", "conversation key")):
            r = client.get(path)
            assert r.status_code == 400 and _error_text(r.content).startswith(f"{what} holds the character U+000"), (path, r.text)
        assert client.get(f"/messages/{mid}/status").json()["status"] == "in_progress"
        assert "Traceback" not in up.log.read_text()

    closed = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing?pool_timeout=0.5"
    down = HubProcess(write_config(tmp_path / "down", store=closed), "--no-dispatch").start(healthy=False)
    try:
        paths = [f"/messages/{mid}", f"/messages/{mid}/status", f"/messages/{mid}/receipt", f"/conversations/{mid}"]
        answers: dict[str, httpx.Response] = {}
        threads = [threading.Thread(target=lambda p=p: answers.__setitem__(p, httpx.get(down.url + p, timeout=20))) for p in paths]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for path, r in answers.items():
            assert (r.status_code, r.headers.get("retry-after")) == (503, "1"), (path, r.text)
            assert "cannot read its store now" in _error_text(r.content)
    finally:
        down.terminate()
    assert "Traceback" not in down.log.read_text()


def test_a_store_failure_or_a_bug_behind_a_route_is_a_500_in_the_hubs_words(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub's own failures are 500s, but with its JSON sentence instead of a bare "Internal
    Server Error"; a store that fails is logged in one line, a bug with its traceback."""
    import asyncio

    from hub.errors import StoreError
    from hub.server import create_app

    runtime = Runtime.load(write_config(tmp_path))
    try:
        def broken(*args: object) -> None:
            raise StoreError("store operation failed: DataError: something the driver refused")

        def bug(*args: object) -> None:
            raise RuntimeError("a bug")

        monkeypatch.setattr(runtime.store, "trace", broken)
        monkeypatch.setattr(runtime.store, "counts", bug)
        app = create_app(runtime.pipeline, runtime.store)

        async def get(path: str) -> httpx.Response:
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=("127.0.0.1", 5000))
            async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
                return await client.get(path)

        for path, said in (("/messages/x", "failed to read its store"), ("/messages/x/status", "failed to read its store"),
                           ("/health", "a fault inside the hub")):
            r = asyncio.run(get(path))
            assert r.status_code == 500 and said in _error_text(r.content), (path, r.text)
    finally:
        runtime.close()


# -- bounded fuzzing (derandomised) ----------------------------------------------------------------

_junk = st.text(alphabet=st.characters(codec="utf-8"), max_size=40) | st.sampled_from(
    ["..", "../..", "%", "%zz", "a/b", "\x00", "\ufffe", "x" * 3000, "<x>", '"}', "\\", "?", "#", "\u202e"])
_GET_ROUTES = ["/messages/{}", "/messages/{}/status", "/messages/{}/receipt", "/conversations/{}", "/health", "/keys", "/soap", "/openapi.json"]


@fixed(60)
@given(route=st.sampled_from(_GET_ROUTES), key=_junk, names=st.lists(st.sampled_from(["sender", "wsdl", "limit", "page", "since", "x", ""]), max_size=3),
       values=st.lists(_junk, min_size=3, max_size=3))
def test_fuzz_paths_and_queries_of_the_read_routes(hub: Listener, route: str, key: str, names: list[str], values: list[str]) -> None:
    """Any path segment and query: never a 5xx; a refusal is JSON with a sentence (escaped: it
    parses, whatever the URL held), a redirect's Location stays percent-encoded."""
    query = "&".join(f"{quote(n)}={quote(v)}" for n, v in zip(names, values))
    path = route.format(quote(key, safe="")) + (f"?{query}" if query else "")
    status, headers, body = _parts(_send(hub.port, _head("GET", path, ("Connection", "close")))[0])
    assert status in (200, 307, 400, 404, 405), (path, status, body[:300])  # 307: Starlette's redirect of a trailing "/"
    if status >= 400:
        assert headers["content-type"] == "application/json", (path, body[:200])
        _error_text(body)
    assert all(32 <= ord(c) < 127 for c in headers.get("location", ""))


_FRAMING = st.sampled_from([
    [("Content-Length", "{n}")], [("Content-Length", "{n}"), ("Content-Length", "{n}")], [("Content-Length", "0")],
    [("Content-Length", "{short}")], [("Content-Length", " {n}")], [("Content-Length", "+{n}")], [("Content-Length", "99999999999999999999")],
    [("Transfer-Encoding", "chunked")], [("Transfer-Encoding", "chunked"), ("Content-Length", "{n}")], [("Transfer-Encoding", "gzip")],
    [("Transfer-Encoding", "chunked, identity")], [("Expect", "100-continue"), ("Content-Length", "{n}")],
    [("Content-Length", "{n}"), ("Content-Encoding", "gzip")],
])
_MEDIA = st.sampled_from(["application/xml", "text/xml", "application/soap+xml", "", "application/json", "multipart/related; boundary=x",
                          "text/xml; charset=utf-16", "\u00e9"])


@fixed(50)
@given(path=st.sampled_from(["/messages", "/soap", "/as4"]), framing=_FRAMING, media=_MEDIA, cut=st.integers(0, 3))
def test_fuzz_framing_of_the_post_routes(hub: Listener, path: str, framing: list[tuple[str, str]], media: str, cut: int) -> None:
    """Lying, doubled and absurd lengths and encodings on every POST route: a proper status and
    the route's own refusal (never a 5xx but a SOAP fault that is the client's: ``_proper``)."""
    body = b"<Envelope/>" * (1 + cut)
    headers = [(k, v.format(n=len(body), short=max(0, len(body) - 5))) for k, v in framing] + [("Content-Type", media), ("Connection", "close")]
    chunked = any(v.startswith("chunked") for k, v in headers if k == "Transfer-Encoding")
    payload = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if chunked else body
    answer, _ = _send(hub.port, _head("POST", path, *headers).replace(b"\xc3\xa9", b"\xe9") + payload, wait=BODY_SECONDS + 5)
    status, answered, data = _parts(answer)
    assert _proper(status, data, 200, 400, 408, 413), (headers, answer[:400])
    kind = answered.get("content-type", "")
    if "json" in kind:
        _error_text(data)
    else:
        assert "xml" in kind and etree.fromstring(data) is not None


_MARKS = [b"<", b">", b"&", b"\x00", b"\x01", b"]]>", b"</s:Body>", b"<s:Body>", b"<s:Header/>", b'"', b"\xff", b"&#1;", b"<!DOCTYPE x>",
          b"\xef\xbb\xbf", "\u202e".encode()]


@fixed(60)
@given(route=st.sampled_from(["/messages", "/soap11", "/soap12", "/as4"]), edits=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 2), st.sampled_from(_MARKS)), min_size=1, max_size=4))
def test_fuzz_bodies_of_the_post_routes(hub: Listener, route: str, edits: list[tuple[float, int, bytes]], body_cache: dict[str, bytes]) -> None:
    """A valid request of each route with bytes inserted, replaced or cut: never a fault inside
    the hub (ERR99, a 5xx but a SOAP fault that is the client's), and every answer well-formed XML,
    whatever of the request's junk its sentence quotes."""
    data = bytearray(body_cache[route])
    for where, op, mark in edits:
        at = int(where * len(data))
        if op == 0:
            data[at:at] = mark
        elif op == 1:
            data[at:at + len(mark)] = mark
        else:
            del data[at:at + 40]
    path = "/soap" if route.startswith("/soap") else route
    media = "text/xml" if route == "/soap11" else "application/soap+xml"
    r = httpx.post(hub.url + path, content=bytes(data), headers={"Content-Type": media}, timeout=30)
    assert _proper(r.status_code, r.content, 200, 400), r.text[:500]
    assert b"ERR99" not in r.content and etree.fromstring(r.content) is not None


@pytest.fixture(scope="module")
def body_cache(hub: Listener) -> dict[str, bytes]:
    """One valid request per route (an AS4 message may come again: a duplicate is answered too)."""
    return {"/messages": hub.valid(), "/soap11": hub.soap(SOAP11), "/soap12": hub.soap(SOAP12),
            "/as4": hub.as4()}


def test_a_signed_as4_message_with_an_extra_copy_of_its_body_is_not_taken_twice(hub: Listener) -> None:
    """The signed body copied after itself (same wsu:Id): refused, not the copy delivered."""
    root = etree.fromstring(hub.as4())
    root.append(copy.deepcopy(root.find(f"{{{S12}}}Body")))
    r = httpx.post(hub.url + "/as4", content=etree.tostring(root), headers={"Content-Type": "application/soap+xml"}, timeout=10)
    assert r.status_code == 400 and "2 Body elements" in _ebms_error(r.content).findtext(f"{{{EB}}}Description")
