"""``hub serve``: the HTTP listener, inbound sources and the dispatcher in one process.

SIGTERM or SIGINT stops the listener (requests in progress finish), then the inbound sources,
then the dispatcher (deliveries in flight finish, held leases are given back). Every accepted
message is already in the store, so stopping at any point loses nothing.

With ``workers`` > 1 (``[hub] workers`` or ``--workers``) the process forks that many workers,
each a whole hub (listener, pipeline, dispatcher) on the same port and the shared store, so every
core works; inbound folder sources and the daily retention purge run in the first worker only.
Each worker listens on a socket of its own with SO_REUSEPORT, so the kernel spreads connections
evenly over the workers (one shared socket would let the first worker awake take a whole burst of
connections); where SO_REUSEPORT does not exist, the workers share the parent's socket.
The parent only supervises: it passes SIGTERM/SIGINT/SIGHUP on, restarts a worker that dies, and
workers stop by themselves if the parent is killed.

SIGHUP reloads the keys and trust (``Runtime.reload``): the hub's key and certificates, every
agency's certificates, CAs and CRLs. The reload runs in a thread of its own, so requests go on
while files are read and CRLs fetched; the swap is between one message and the next, nothing in
flight is dropped, and a configuration that does not load leaves the running keys in place (the
log says why). The signal handler only writes one byte to a non-blocking pipe (no lock: a second
SIGHUP that interrupts the handler cannot deadlock it); the reload thread blocks on the pipe, takes
every byte waiting and reloads once, and starts only after the scheduled jobs do, so a SIGHUP that
came while the hub was loading is honoured then, once. Message counters for ``GET /metrics`` live
in memory the workers share.

Two hubs never share a port: the listen address is claimed before anything starts (``_claim``),
and a port held by another hub or program stops ``hub serve`` with one line (``PortInUse``, exit
status 1), before the store is opened or the dispatcher started.

What a client can hold of the listener is bounded (``ListenerProtocol``: uvicorn's own HTTP
protocol, with these changes):

- a request's head (request line and headers) must arrive within ``[hub] head_timeout`` (10 s; at
  most ``body_timeout``, its default where that is shorter) of the connection's opening or of the
  answer to the request before, else the connection is closed: with a 408 once part of a head
  came, silently if nothing came (an idle kept-alive connection ends so; uvicorn's own keep-alive
  time-out, 5 s from an answer to the next request's first byte, gives way to this one deadline).
  uvicorn waited for ever for the first request of a connection, so ``max_connections`` idle
  sockets held the listener (a 503 for everyone else) as long as their sender liked; with
  ``body_timeout`` as the head's deadline, a client reopening about ``max_connections``
  connections a minute still did. The body then has ``body_timeout`` (``hub.httpio``);
- a request's head may not pass ``HEAD_BYTES`` (a 431, and the connection closed): uvicorn and
  httptools gathered a header or a URL of any size in memory, copying it again at each packet. The
  framing of a chunked body (chunk lines with their extensions, the CRLF after each chunk, the
  trailers) is held to the body it carries: at most ``HEAD_BYTES`` more than the body bytes
  received so far, and never ``HEAD_BYTES`` in a row without a body byte (``ListenerProtocol._count``).
  A body in many tiny chunks is taken (20,000 chunks of 5 bytes: 100 kB of framing for 100 kB of
  body), while chunk extensions or trailers with little or no body, which httptools parses to no
  use (and uvicorn adds the trailers to the request's headers), stop at ``HEAD_BYTES``;
- past ``max_connections`` the 503 says why, in JSON (a SOAP fault on /soap), with Retry-After;
- a request that is not HTTP/1.1 is a 400 with a sentence in JSON;
- an Upgrade to a protocol the hub does not speak (h2c) is ignored, instead of ending the request
  before its body.

The warning lines these events log, which a client causes at will, are throttled (``Tally``).

A store that can never be used (``Store.when_failed``: e.g. a PostgreSQL schema newer than this
code, or no permission to create it, found once the database came up) stops ``hub serve`` with
exit status 78 (``EXIT_UNUSABLE``, EX_CONFIG) and the reason in the log.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import json
import logging
import os
import select
import signal
import socket
import sys
import threading
import time
from http import HTTPStatus

import httptools
import uvicorn
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .errors import Code, ConfigError, HubError, StoreError
from .metrics import Counters
from .retention import RetentionJob
from .runtime import Runtime
from .server import create_app
from .throttle import Tally

log = logging.getLogger("hub.serve")

# A worker or node that can never run as configured (a store it cannot use, a configuration error
# found while starting) exits with this (sysexits' EX_CONFIG): the supervisor stops instead of
# restarting it, and a service manager can tell it from a crash.
EXIT_UNUSABLE = 78


class PortInUse(HubError):
    """The listen address is held by another hub or program (the command line says so in one line)."""

    def __init__(self, host: str, port: int) -> None:
        shown = f"[{host}]" if ":" in host else host
        super().__init__(f"cannot listen on {shown}:{port}: address already in use (another hub or program holds it)")


def serve(config_path: str, dispatch: bool = True, workers: int | None = None, *,
          sock: socket.socket | None = None, worker: int = 0, counters: Counters | None = None) -> int:
    # from the start: a SIGHUP that arrives while the hub is loading is not lost (nor fatal); it
    # waits in the pipe until the reloader starts
    wake_read, wake_write = _wakeup_pipe()
    before = signal.signal(signal.SIGHUP, lambda *_: _poke(wake_write))
    in_worker = sock is not None
    claim: socket.socket | None = None
    if sock is None:
        from .config import load_config

        own = load_config(config_path).hub
        count = workers if workers is not None else own.workers
        if count > 1:
            # the parent reloads nothing (_supervise passes SIGHUP on to the workers, which load afresh)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            os.close(wake_read)
            os.close(wake_write)
            return _supervise(config_path, dispatch, count)
        try:  # before anything starts: a port in use stops the hub here, with nothing to undo
            claim = _claim(own.listen_host, own.listen_port)
            try:
                sock = _bind(own.listen_host, own.listen_port, reuse_port=False)  # none may share it
            except BaseException:
                if claim is not None:
                    claim.close()
                raise
        except BaseException:
            signal.signal(signal.SIGHUP, before)
            os.close(wake_read)
            os.close(wake_write)
            raise
    if counters is not None:
        counters.use_row(worker)
    runtime = Runtime.load(config_path, wait_for_store=False, counters=counters)  # a database down at start: 503 until it is up
    h = runtime.config.hub
    dispatcher = runtime.dispatcher() if dispatch else None
    runtime.start_jobs()  # CRL refresh and the daily expiry warning
    days = runtime.config.retention.delivered_days
    retention = RetentionJob(runtime.store, days, h.party_id) if days and worker == 0 else None  # one process per node
    if retention is not None:
        retention.start()
    # only now: a reload restarts the jobs, so it must not run before (or while) they are started
    _reloader(runtime, wake_read)
    sources = [s for s in (a.inbound(runtime.pipeline.submit) for a in runtime.create_adapters().values()) if s] if worker == 0 else []
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(runtime.pipeline, runtime.store, runtime.listener_routes(), runtime.gate),
            host=h.listen_host,
            port=h.listen_port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=10,
            limit_concurrency=h.max_connections,
            http=listener_protocol(h.head_timeout),
        )
    )
    # uvicorn re-raises the signal it caught once it has stopped; with these handlers in place the
    # re-raised signal lands here instead of killing the process before the dispatcher stops.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: setattr(server, "should_exit", True))
    store_failed: list[Exception] = []

    def on_store_failure(exc: Exception) -> None:  # a thread of the store's: stop as SIGTERM would
        store_failed.append(exc)
        server.should_exit = True

    runtime.store.when_failed(on_store_failure)
    if dispatcher:
        if worker == 0:
            for line in runtime.stranded():
                log.error("outbox: %s", line)
        dispatcher.start()
    for source in sources:
        source.start()
    reload_by = f"worker {worker} of parent {os.getppid()} (SIGHUP to the parent reloads every worker)" if in_worker else "SIGHUP reloads keys and trust"
    log.info("hub %s listening on http://%s (dispatcher %s); pid %s, %s",
             h.party_id, h.listen_address, dispatcher.owner if dispatcher else "off", os.getpid(), reload_by)
    try:
        server.run(sockets=[sock])
    finally:
        if not in_worker:  # no longer listening: the address is free for the next hub (a worker's is its parent's)
            sock.close()
            if claim is not None:
                claim.close()
        for source in sources:
            source.stop()
        if dispatcher:
            dispatcher.stop()
        if retention is not None:
            retention.stop()
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # before the pipe closes: no write to a closed (or reused) fd
        os.close(wake_write)  # the reloader reads the end of the pipe and stops
        runtime.close()
        if store_failed:
            log.error("hub %s stopped: %s", h.party_id, store_failed[0])
        else:
            log.info("hub %s stopped cleanly", h.party_id)
    return EXIT_UNUSABLE if store_failed else 0


def listener_protocol(head_seconds: float) -> type[HttpToolsProtocol]:
    """``ListenerProtocol`` with a request head's deadline of ``head_seconds``."""
    return type("ListenerProtocol", (ListenerProtocol,), {"head_seconds": head_seconds})


HEAD_BYTES = 64 * 1024  # a request's line and headers; a chunked body's framing beyond its bytes, and in a row


class ListenerProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol (httptools) with the hub's bounds on what a client holds (see the
    module's docstring). A connection waits ``head_seconds`` for a head from its opening, and again
    from each answer (a pipelined request already read is answered next): one deadline stands for
    uvicorn's keep-alive time-out too. What a request sends is counted in parts of at most
    ``HEAD_BYTES`` (a larger read is parsed part by part) as each part is parsed: the head before
    it is (httptools would hold it), the framing of its body after (``_count``)."""

    head_seconds = 10.0

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._app, self._limit = self.app, self.limit_concurrency
        self.limit_concurrency = None  # checked here, to answer it in the hub's words
        self._head_timer: asyncio.TimerHandle | None = None
        self._waiting_head = True  # no request of this connection is being read or answered
        self._head_began = False  # a byte of the awaited head came
        self._reading_head = True  # no request is past its head: the next part starts (or goes on with) a head
        self._message_open = False  # a request began and has not ended
        self._head_bytes = 0  # of the head being read (``HEAD_BYTES``)
        self._tail = b""  # the last bytes of the head so far: its blank line may span two parts
        # of the body being read: its framing (chunk lines, the CRLF after each chunk, trailers), its
        # bytes, and its framing since a part with a body byte (``_count``)
        self._framing, self._body_seen, self._run = 0, 0, 0
        self._body_bytes, self._completed, self._begun_after_end = 0, False, False  # of the part being parsed
        self._ignoring_upgrade = False  # the head just read asks for an Upgrade the hub does not speak
        self._upgraded = False  # a WebSocket took the connection over: nothing more is ours to parse

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._waiting_head:
            self._head_began = True
        if len(data) <= HEAD_BYTES:  # a read of one part: the usual
            self._take(data)
            return
        for start in range(0, len(data), HEAD_BYTES):
            if self.transport.is_closing() or self._upgraded:
                return
            self._take(data[start:start + HEAD_BYTES])

    def _take(self, data: bytes) -> None:
        """Parses ``data`` (at most ``HEAD_BYTES``) and holds the request to its bounds."""
        in_head = self._reading_head
        head = 0
        if in_head:  # counted before it is parsed: httptools would hold all of it
            head = self._head_part(data)
            self._head_bytes += head
            if self._head_bytes > HEAD_BYTES:
                self._too_much()
                return
        self._body_bytes, self._completed, self._begun_after_end = 0, False, False
        self._feed(data)
        if self.transport.is_closing() or self._upgraded or (in_head and self._reading_head and not self._completed):
            return  # nothing more to count: a head goes on (counted above)
        if self._begun_after_end:  # a request ended and the next began here: which bytes are whose is not known
            self._tail = data[-3:] if self._reading_head and self._message_open else b""  # its head's blank line may begin here
            return
        self._count(len(data) - head - self._body_bytes)

    def _count(self, framing: int) -> None:
        """Adds a part's ``framing`` (its bytes that are neither head nor body) to the body being read,
        and refuses a body whose framing is out of proportion: more than ``HEAD_BYTES`` beyond the
        body bytes received so far (20,000 chunks of 5 bytes are 100 kB of each; 1-byte chunks are 5
        bytes of framing a byte, and are refused after some 16 kB), or ``HEAD_BYTES`` in a row with
        no body byte (trailers, chunk extensions). A part with a body byte starts the run again with
        all its framing, since where in it the body stops is not known (each part is at most
        ``HEAD_BYTES``): the run is never less than the framing since the last body byte. A body with
        a Content-Length has no framing; none of this costs more than a few additions a read."""
        self._framing += framing
        self._body_seen += self._body_bytes
        self._run = framing if self._body_bytes else self._run + framing
        if self._framing > HEAD_BYTES + self._body_seen or self._run > HEAD_BYTES:
            self._too_much("of chunk lines and trailers came beyond the body bytes they carried, or in a row without one")

    def _feed(self, data: bytes) -> None:
        """uvicorn's ``data_received``, except that an Upgrade the hub does not speak (h2c; a
        WebSocket, which no route takes) is ignored, as RFC 9110 lets a server do: httptools ends
        such a request at its head and takes what follows for the new protocol, so uvicorn lost
        the body (``curl --http2`` posting a valid message got ERR02 "Document is empty"). Its
        head is parsed again without the Upgrade header, then the body."""
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            _log_throttled(_INVALID, "listener: %s request(s) that were not valid HTTP/1.1 answered 400")
            self.send_400_response("Invalid HTTP request received.")
        except httptools.HttpParserUpgrade as exc:
            if self._ignoring_upgrade:
                self._without_upgrade(data[exc.args[0]:])
            elif self._should_upgrade():  # a WebSocket, where a library for it is installed: uvicorn's way
                self._upgraded = True
                self.handle_websocket_upgrade()
            elif self.cycle is not None:  # CONNECT: answered as any request (405); the parser reads no more
                self.cycle.keep_alive = False

    def _without_upgrade(self, rest: bytes) -> None:
        """Parses the request whose head was just read again, without its Upgrade header, and ``rest``."""
        self._ignoring_upgrade = False
        head = b"%s %s HTTP/%s\r\n" % (self.parser.get_method(), self.url, self.parser.get_http_version().encode("ascii"))
        head += b"".join(name + b": " + value + b"\r\n" for name, value in self.headers if name != b"upgrade") + b"\r\n"
        self.parser = httptools.HttpRequestParser(self)
        self.parser.set_dangerous_leniencies(lenient_data_after_close=True)  # as uvicorn's own parser
        self._feed(head + rest)

    def _head_part(self, data: bytes) -> int:
        """How many bytes of ``data`` belong to the head being read: up to its blank line."""
        seen = self._tail + data
        end = seen.find(b"\r\n\r\n")
        self._tail = seen[-3:]
        return len(data) if end < 0 else max(0, end + 4 - (len(seen) - len(data)))

    def _too_much(self, what: str = "of request line and headers came") -> None:
        self._disarm()
        self._close_with(431, f"more than {HEAD_BYTES} bytes {what}; the connection is closed")

    def on_message_begin(self) -> None:
        self._begun_after_end, self._message_open = self._completed, True
        super().on_message_begin()

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._ignoring_upgrade:  # not a request yet: parsed again (``_without_upgrade``)
            return
        self._completed, self._reading_head, self._message_open, self._tail = True, True, False, b""
        super().on_message_complete()

    def on_headers_complete(self) -> None:
        if self.parser.should_upgrade() and not self._should_upgrade() and any(name == b"upgrade" for name, _ in self.headers):
            self._ignoring_upgrade = True  # nothing starts: the head is parsed again without it
            return
        self._disarm()
        self._waiting_head = self._head_began = self._reading_head = False
        self._head_bytes, self._tail, self._framing, self._body_seen, self._run = 0, b"", 0, 0, 0
        limit = self._limit
        if limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit):  # uvicorn's own test
            self.app = _overloaded(limit)
            _log_throttled(_OVERLOADED, "listener: %s request(s) refused with 503: more than [hub] max_connections = %s at once", limit)
        else:
            self.app = self._app
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        waiting = not self.pipeline  # else the next request's head has come already, and is answered now
        super().on_response_complete()
        if waiting and not self.transport.is_closing():
            self._unset_keepalive_if_required()  # uvicorn's own time-out: the head's deadline stands for it
            self._waiting_head, self._head_began = True, self._head_bytes > 0
            self._arm()

    def send_400_response(self, msg: str) -> None:
        self._disarm()
        self._close_with(400, "the request is not valid HTTP/1.1 (its request line, a header, Content-Length, Transfer-Encoding "
                              "or chunked body); nothing was read")

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.head_seconds, self._head_late)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._waiting_head:
            return
        if self._head_began:
            _log_throttled(_LATE, "listener: %s connection(s) closed: a request head did not arrive within %s s", f"{self.head_seconds:g}")
            self._close_with(408, f"the request head did not arrive within {self.head_seconds:g} s; the connection is closed")
        else:  # nothing came: nobody to tell
            self.transport.close()

    def _close_with(self, status: int, sentence: str) -> None:
        """Answers ``status`` with ``sentence`` and closes the connection; only closes it while an
        answer of the route's is being written (nothing may be written into it)."""
        if self.cycle is not None and self.cycle.response_started and not self.cycle.response_complete:
            self.transport.close()
            return
        body = json.dumps({"error": sentence}).encode()
        head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode()
        self.transport.write(head + body)
        self.transport.close()


def _overloaded(limit: int) -> ASGIApp:
    """The answer past ``max_connections`` (an ASGI app): a SOAP fault on POST /soap, else JSON;
    503 with Retry-After, and the connection closed. Nothing is signed or recorded: a flood
    costs the hub as little as can be."""
    sentence = f"the hub is serving as many connections as it takes ([hub] max_connections = {limit}); send the request again later"
    headers = {"Retry-After": "1", "Connection": "close"}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/soap" and scope["method"] == "POST":
            from adapters.soap_listener import SOAP11, SOAP12, Fault, fault_response

            media = dict(scope["headers"]).get(b"content-type", b"")
            ns = SOAP12 if b"application/soap+xml" in media else SOAP11
            answer = fault_response(ns, Fault(False, Code.TRY_AGAIN.value, sentence), 503, headers)
        else:
            answer = JSONResponse({"error": sentence}, status_code=503, headers=headers)
        await answer(scope, receive, send)

    return app


# warning lines a client causes at will: at most one a minute of each kind, with the count since the last
_OVERLOADED, _LATE, _INVALID = Tally(60.0), Tally(60.0), Tally(60.0)


def _log_throttled(tally: Tally, message: str, *args: object) -> None:
    since = tally.add()
    if since:
        log.warning(message, since, *args)


def _wakeup_pipe() -> tuple[int, int]:
    """(read end, write end), both non-blocking: SIGHUP's handler writes, the reloader reads."""
    read, write = os.pipe()
    os.set_blocking(read, False)
    os.set_blocking(write, False)
    return read, write


def _poke(fd: int) -> None:
    """The SIGHUP handler: one byte into the pipe. No lock is taken (``threading.Event.set`` takes one,
    and a second SIGHUP landing inside it would deadlock the main thread); a full pipe already says
    "reload"."""
    try:
        os.write(fd, b"\0")
    except OSError:  # BlockingIOError: full, a reload is already due; EBADF: serve() is stopping
        pass


def _reloader(runtime: Runtime, fd: int) -> threading.Thread:
    """Reloads keys and trust each time SIGHUP writes to the pipe ``fd``, away from the event loop:
    reading files and fetching CRLs must not hold up requests. It takes every byte waiting, then
    reloads once: SIGHUPs during a reload make one more. Ends (closing ``fd``) when the write end is
    closed."""

    def drained() -> bool:
        """Reads all that is waiting; False once the write end is closed."""
        while True:
            try:
                if not os.read(fd, 4096):
                    return False
            except BlockingIOError:
                return True

    def run() -> None:
        ready = select.poll()  # not select.select: no FD_SETSIZE limit on the pipe's number
        ready.register(fd, select.POLLIN)
        try:
            while True:
                ready.poll()
                if not drained():
                    return
                try:
                    runtime.reload()
                except Exception:  # noqa: BLE001 (reload logs its own refusals; this is the unforeseen)
                    log.exception("reload failed; still serving with the keys and trust loaded before")
        finally:
            os.close(fd)

    thread = threading.Thread(target=run, name="hub-reload", daemon=True)
    thread.start()
    return thread


_REUSE_PORT = getattr(socket, "SO_REUSEPORT", None)


def _bind(host: str, port: int, *, reuse_port: bool, listen: bool = True) -> socket.socket:
    """A TCP socket bound to ``host:port`` (and listening); ``PortInUse`` if the address is held."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # connections of the last run in TIME_WAIT do not hold it up
        if reuse_port and _REUSE_PORT is not None:
            sock.setsockopt(socket.SOL_SOCKET, _REUSE_PORT, 1)
        sock.bind((host, port))
        if listen:
            sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(host, port) from None
        raise
    return sock


def _listen(host: str, port: int, *, listen: bool = True) -> socket.socket:
    """A worker's socket, shared with its siblings through SO_REUSEPORT (where it exists)."""
    sock = _bind(host, port, reuse_port=True, listen=listen)
    sock.set_inheritable(True)
    return sock


def _claim(host: str, port: int) -> socket.socket | None:
    """Makes sure no other hub or program holds ``host:port``; ``PortInUse`` if one does. Returns
    the lock to hold as long as the hub listens there (None where there is none: not Linux).

    The kernel refuses a second socket on a port, except that Linux lets any process of the same
    user bind a port whose sockets all have SO_REUSEPORT, as the workers' have, and then splits
    the connections between them: a second ``hub serve --workers N`` on the port of a running one
    started without an error and answered 17 of 40 requests. Hence two checks, before the hub's
    own sockets are bound:

    - a lock per listen address, taken by every hub (one worker or many): an abstract Unix socket
      named after the address. Binding it is atomic (of two hubs started at the same moment, one
      gets it); the kernel lets it go when the last process holding it ends, even by SIGKILL (the
      workers inherit it), so no stale lock file is ever left to remove by hand; and it lives in
      the network namespace, as the port does (a container with a network of its own has its own,
      a service with a private /tmp does not). A lock file could be in none of these.
    - a probe: binding the address without SO_REUSEPORT (with SO_REUSEADDR, so connections of an
      earlier run in TIME_WAIT do not count) fails if any socket listens there, with SO_REUSEPORT
      or not: another program (which takes no hub's lock) is found too. It is closed at once.
    """
    lock = None
    if sys.platform.startswith("linux"):
        try:
            name = ipaddress.ip_address(host).compressed
        except ValueError:
            name = host.lower()
        lock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            lock.bind(f"\0sw-hub:listen:{name}:{port}")
        except OSError as exc:
            lock.close()
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(host, port) from None
            log.warning("no lock on the listen address %s:%s (%s); relying on the kernel's own check", host, port, exc)
            lock = None
    try:
        _bind(host, port, reuse_port=False, listen=False).close()
    except BaseException:
        if lock is not None:
            lock.close()
        raise
    return lock


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker when the supervising parent goes away, even by SIGKILL."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _supervise(config_path: str, dispatch: bool, count: int) -> int:
    """Binds once, forks ``count`` workers on the socket, and keeps them running until told to stop.
    Nothing that holds threads or database connections exists in this process before a fork."""
    from .config import load_config

    h = load_config(config_path).hub
    # the parent holds the port (bound, not listening: it takes no connections) so that a port in
    # use fails here, once; with SO_REUSEPORT each worker then listens on a socket of its own. The
    # claim first: SO_REUSEPORT alone would let this hub share a port with another (``_claim``)
    claim = _claim(h.listen_host, h.listen_port)
    sock = _listen(h.listen_host, h.listen_port, listen=_REUSE_PORT is None)
    parent = os.getpid()
    counters = Counters(count)  # made before the forks: every worker counts into it
    stopping = False
    pids: dict[int, int] = {}  # pid -> worker index
    restarts: list[float] = []

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.setpgid(0, 0)  # a terminal's ^C reaches the parent, which passes it on once
                _die_with_parent()
                if os.getppid() != parent:
                    os._exit(0)
                for sig in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, signal.SIG_DFL)
                signal.signal(signal.SIGHUP, signal.SIG_IGN)  # not the parent's forwarding; serve() sets its own
                own = _listen(h.listen_host, h.listen_port) if _REUSE_PORT is not None else sock
                code = serve(config_path, dispatch, sock=own, worker=index, counters=counters)
            except (ConfigError, StoreError) as exc:  # restarting it would fail the same way
                log.error("worker %s cannot run: %s", index, exc)
                code = EXIT_UNUSABLE
            except BaseException:  # noqa: BLE001 (the worker's own log has the details)
                log.exception("worker %s failed", index)
            finally:
                logging.shutdown()
                os._exit(code)
        pids[pid] = index

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(pids):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def reload(*_: object) -> None:
        for pid in list(pids):
            try:
                os.kill(pid, signal.SIGHUP)
            except ProcessLookupError:
                pass

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    signal.signal(signal.SIGHUP, reload)
    for index in range(count):
        spawn(index)
    log.info("hub %s: %s workers on http://%s; pid %s, SIGHUP reloads keys and trust in every worker",
             h.party_id, count, h.listen_address, parent)
    status = 0
    while pids:
        try:
            pid, code = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid not in pids:
            continue
        index = pids.pop(pid)
        code = os.waitstatus_to_exitcode(code)
        if stopping:
            status = status or (code if code > 0 else 0)
            continue
        if code == EXIT_UNUSABLE:
            log.error("worker %s (pid %s) cannot run with this configuration or store; stopping every worker", index, pid)
            status = EXIT_UNUSABLE
            stop()
            continue
        log.warning("worker %s (pid %s) exited with %s; starting it again", index, pid, code)
        now = time.monotonic()
        restarts[:] = [t for t in restarts if now - t < 60] + [now]
        if len(restarts) > 5:
            log.error("workers keep dying (%s restarts in a minute); stopping", len(restarts))
            status = 1
            stop()
            continue
        time.sleep(0.5)
        spawn(index)
    sock.close()
    if claim is not None:
        claim.close()
    return status
