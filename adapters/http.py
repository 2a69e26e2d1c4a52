"""``http``: POSTs the signed envelope to the agency's endpoint.

2xx is delivered; 408, 425, 429, 5xx, time-outs and connection errors are retried; any other
status is a permanent failure that keeps the partner's own answer as the error. Each request
carries ``X-Message-Id`` and ``X-Sender`` so the receiver can recognise a redelivery.

Options (``[agencies.options]``): ``timeout`` (seconds), and for HTTPS ``ca`` (the CA file the
partner's server certificate must chain to; the system's CAs otherwise), ``client_cert`` and
``client_key`` (mutual TLS). Paths are relative to hub.toml. ``user:password@`` in the endpoint
is sent as HTTP Basic authentication.

Each delivery thread keeps one keep-alive connection to the partner (``http.client``: a delivery
costs a third of what a general-purpose client takes, measured in the benchmark). A kept
connection is looked at before it is used: one the partner has closed, or on which it sent
something unasked (an idle server's "408" before it closes), is replaced before the request
goes, so what it held is never taken for the answer. A request on a kept connection that the
partner closed at that very moment is sent once more on a new one; the receiver's (sender,
message id) dedupe absorbs the rare case where the first one did arrive.

Once the status line and headers are in, the status decides: the body (the partner's words, at
most ``KEPT_ANSWER`` of it) is read within what is left of the timeout, and a body that does not
end, or breaks off, is noted in the detail but does not turn a 2xx into a retry (the partner has
taken the message; sending it again would only make it discard a copy). The ``Retry-After`` of a
429 or 503 is waited out (``Result.retry_after``, capped by the route's ``max_delay``).
Credentials in the endpoint never appear in a detail (they would reach the log and the store).
"""

from __future__ import annotations

import base64
import http.client
import select
import socket
import ssl
import threading
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import unquote, urlsplit

from .base import Adapter, AdapterSettings, Delivery, Outcome, Result, one_line, retry_after, retryable_status, seconds, without_credentials

from hub.config import Agency
from hub.errors import ConfigError
from hub.httpio import DEADLINES

REDIRECTS = frozenset({301, 302, 303, 307, 308})  # not followed: the endpoint is the configured one
KEPT_ANSWER = 64 * 1024  # of a partner's answer, at most this much is read (and 500 chars kept)
# what a kept connection that the partner closed in the meantime raises (over TLS: the peer went
# away without close_notify, as idle time-outs of servers and load balancers do)
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError,
          ssl.SSLEOFError, ssl.SSLZeroReturnError)


class _Call:
    """One POST under its deadline: the connection it is on, how far it got, and whether the
    deadline ended it."""

    __slots__ = ("connection", "expired", "sent")

    def __init__(self) -> None:
        self.connection: http.client.HTTPConnection | None = None
        self.expired = False
        self.sent = False  # the request went out (whole or in part): the partner may have it

    def expire(self) -> None:
        self.expired = True
        sock = self.connection.sock if self.connection is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # the blocked read returns at once
            except OSError:
                pass


@dataclass(frozen=True)
class _Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes
    cut: str = ""  # why the body was not read to its end, if it was not


class _NoAnswer(Exception):
    """The request went out but no answer came: the connection broke, or what came was not HTTP."""


def _stale(connection: http.client.HTTPConnection) -> bool:
    """Whether a kept connection, idle between two requests, holds anything to read: the
    partner's close, or bytes it sent unasked (nothing may come before a request)."""
    sock = connection.sock
    if sock is None:
        return True
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):  # closed under us
        return True
    return bool(readable)


class HttpAdapter(Adapter):
    alias = "http"
    option_names = frozenset({"timeout", "ca", "client_cert", "client_key"})

    def __init__(self, agency: Agency, settings: AdapterSettings) -> None:
        super().__init__(agency, settings)
        self._timeout = seconds(agency.options, settings.timeout, settings.config_file, f"agencies[{agency.id}].options.timeout")
        url = urlsplit(agency.endpoint)
        self._where = without_credentials(agency.endpoint)  # the endpoint as details show it
        self._https = url.scheme == "https"
        try:
            self._host, self._port = url.hostname or "", url.port
        except ValueError as exc:  # a port that is not a number, or out of range
            raise ConfigError(settings.config_file, f"agencies[{agency.id}].endpoint", f"{agency.endpoint!r}: {exc}") from None
        self._path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        # user:password@ in the endpoint: HTTP Basic authentication (send it over https only)
        self._auth = None
        if url.username is not None:
            credentials = f"{unquote(url.username)}:{unquote(url.password or '')}".encode()
            self._auth = "Basic " + base64.b64encode(credentials).decode("ascii")
        self._tls = self._tls_context(agency, settings) if self._https else None
        self._local = threading.local()
        self._connections: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    @staticmethod
    def _tls_context(agency: Agency, settings: AdapterSettings) -> ssl.SSLContext:
        o = agency.options
        try:
            context = ssl.create_default_context(cafile=str(settings.path(str(o["ca"]))) if o.get("ca") else None)
            if o.get("client_key") and not o.get("client_cert"):
                raise ValueError("client_key is set without client_cert")
            if o.get("client_cert"):
                cert = settings.path(str(o["client_cert"]))
                context.load_cert_chain(str(cert), str(settings.path(str(o["client_key"]))) if o.get("client_key") else None)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ConfigError(settings.config_file, f"agencies[{agency.id}].options", f"cannot load the TLS files: {exc}") from None
        return context

    def request_headers(self, delivery: Delivery) -> dict[str, str]:
        """Headers of one delivery's POST (``webhook`` adds its signature)."""
        return {"Content-Type": "application/xml", "X-Message-Id": delivery.message_id, "X-Sender": delivery.sender}

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        """This thread's connection, and whether it has carried a request before. A kept one that
        the partner closed, or that holds bytes nobody asked for, is replaced first."""
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            if not _stale(connection):
                return connection, True
            self._drop()
        if self._https:
            connection = http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout, context=self._tls)
        else:
            connection = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        self._local.connection = connection
        with self._lock:
            self._connections.append(connection)
        return connection, False

    def _drop(self) -> None:
        connection = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            connection.close()
            with self._lock:
                if connection in self._connections:
                    self._connections.remove(connection)

    def _post(self, body: bytes, headers: dict[str, str]) -> _Answer:
        """The partner's answer, all within ``timeout``: the socket's time-out bounds each read,
        the deadline the whole delivery (a partner dripping bytes is cut off). ``TimeoutError``
        when no status came in time; ``_NoAnswer`` when the request went out but no answer came;
        ``OSError`` when it could not be sent."""
        if self._auth is not None:
            headers = {**headers, "Authorization": self._auth}
        call = _Call()
        with DEADLINES.deadline(self._timeout, call.expire):
            try:
                return self._post_once(body, headers, call)
            except (OSError, http.client.HTTPException) as exc:
                self._drop()
                if call.expired or isinstance(exc, socket.timeout):
                    # cut off: what was read may end early (headers cut short parse as ended)
                    raise TimeoutError(f"no complete answer within {self._timeout:g} s") from None
                if call.sent:
                    raise _NoAnswer(_no_answer(exc)) from None
                raise

    def _post_once(self, body: bytes, headers: dict[str, str], call: _Call) -> _Answer:
        for _ in range(2):
            connection, reused = self._connection()
            call.connection, call.sent = connection, False
            try:
                if connection.sock is None:
                    connection.connect()
                call.sent = True
                connection.request("POST", self._path, body=body, headers=headers)
                response = connection.getresponse()
            except _STALE:
                # before any answer: the kept connection was closed as the request went; once more on a new one
                self._drop()
                if not reused or call.expired:
                    raise
                continue
            if call.expired:  # the status line and headers were cut short, which parses as if they ended
                raise TimeoutError(f"no complete answer within {self._timeout:g} s")
            return self._answer(response, call)
        raise ConnectionResetError("the partner closed the connection twice")  # pragma: no cover

    def _answer(self, response: http.client.HTTPResponse, call: _Call) -> _Answer:
        """The status decides from here on: the body is read up to ``KEPT_ANSWER`` within what is
        left of the deadline, and one that breaks off or does not end is only noted."""
        broken = True
        try:
            body = response.read(KEPT_ANSWER)
            broken = False
        except http.client.IncompleteRead as exc:
            body = exc.partial
        except (OSError, http.client.HTTPException):
            body = b""
        ended = not broken and _ended(response, body)
        cut = ""
        if not ended and len(body) < KEPT_ANSWER:  # not the limit: the partner stopped, or the deadline did
            cut = f"the answer's body did not end within {self._timeout:g} s" if call.expired else "the answer's body broke off"
        if not ended or response.will_close:  # closing, broken, or more than we read
            self._drop()
        return _Answer(response.status, response.msg, body, cut)

    def deliver(self, delivery: Delivery) -> Result:
        where = self._where
        try:
            answer = self._post(delivery.payload, self.request_headers(delivery))
        except TimeoutError as exc:
            return Result(Outcome.RETRY, f"time-out talking to {where}: {exc}")
        except _NoAnswer as exc:
            return Result(Outcome.RETRY, f"{where}: {exc}")
        except (OSError, http.client.HTTPException) as exc:
            return Result(Outcome.RETRY, f"cannot reach {where}: {type(exc).__name__}: {exc}")
        return self.judge(answer)

    def judge(self, answer: _Answer) -> Result:
        """The outcome of a partner's answer, by its status, in words an operator reads in
        ``hub outbox``: the status and its standard name, the partner's own words, what was cut."""
        status = answer.status
        said = one_line(answer.body, 500)
        name = _status_name(status)
        notes = [answer.cut] if answer.cut else []
        if status in REDIRECTS:
            location = one_line(answer.headers.get("Location") or "", 200)
            notes.insert(0, f"a redirect{f' to {location}' if location else ''}, not followed: set the agency's endpoint "
                            "to the address the partner now uses")
        wait = retry_after(answer.headers.get("Retry-After")) if retryable_status(status) else None
        if wait:
            notes.append(f"the partner asks to wait {wait:.0f} s (Retry-After)")
        head = f"HTTP {status}{f' {name}' if name else ''}"
        if 200 <= status < 300:  # the status says it all (the trace keeps no partner's answer)
            return Result(Outcome.DELIVERED, head + "".join(f"; {n}" for n in notes))
        detail = head + (f": {said}" if said else "") + "".join(f"; {n}" for n in notes)
        if retryable_status(status):
            return Result(Outcome.RETRY, detail, retry_after=wait)
        return Result(Outcome.FAILED, detail)

    def check(self) -> list[str]:
        if not self.agency.endpoint.startswith(("http://", "https://")):
            return [f"endpoint: {self.agency.endpoint!r} is not an http(s) URL"]
        if not self._host:
            return [f"endpoint: {self.agency.endpoint!r} has no host"]
        return []

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()


def _ended(response: http.client.HTTPResponse, body: bytes) -> bool:
    """Whether the answer's body was read to its end (a body without a length or chunks ends
    where the partner closes the connection: there a short read is the end)."""
    if response.isclosed():
        return True
    return response.length is None and not response.chunked and len(body) < KEPT_ANSWER


def _status_name(status: int) -> str:
    """The standard name of an HTTP status ("Service Unavailable"), never the partner's own reason phrase."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "(not a standard HTTP status)" if not 100 <= status < 600 else ""


def _no_answer(exc: BaseException) -> str:
    """What happened to a request that went out without an answer coming back, for an operator."""
    if isinstance(exc, (http.client.BadStatusLine, http.client.LineTooLong)) and not isinstance(exc, ConnectionError):
        return f"the partner answered something that is not HTTP ({type(exc).__name__}: {one_line(str(exc), 120)})"
    if isinstance(exc, http.client.HTTPException) and not isinstance(exc, ConnectionError):
        return f"the partner's answer is not valid HTTP ({type(exc).__name__}: {one_line(str(exc), 120)})"
    return (f"the connection broke after the request was sent and before any answer ({type(exc).__name__}: {exc}); "
            "the partner may have received it, so it is sent again with the same message id")
