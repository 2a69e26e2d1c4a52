"""``http``: POSTs the signed envelope to the agency's endpoint.

2xx is delivered; 408, 425, 429, 5xx, time-outs and connection errors are retried; any other
status is a permanent failure that keeps the partner's own answer as the error. Each request
carries ``X-Message-Id`` and ``X-Sender`` so the receiver can recognise a redelivery.

Options (``[agencies.options]``): ``timeout`` (seconds), and for HTTPS ``ca`` (the CA file the
partner's server certificate must chain to; the system's CAs otherwise), ``client_cert`` and
``client_key`` (mutual TLS). Paths are relative to hub.toml. ``user:password@`` in the endpoint
is sent as HTTP Basic authentication.

Each delivery thread keeps one keep-alive connection to the partner (``http.client``: a delivery
costs a third of what a general-purpose client takes, measured in the benchmark). A request on a
kept connection that the partner had closed in the meantime is sent once more on a new one; the
receiver's (sender, message id) dedupe absorbs the rare case where the first one did arrive.
"""

from __future__ import annotations

import base64
import http.client
import socket
import ssl
import threading
from urllib.parse import unquote, urlsplit

from .base import Adapter, AdapterSettings, Delivery, Outcome, Result, retryable_status, seconds

from hub.config import Agency
from hub.errors import ConfigError
from hub.httpio import DEADLINES

KEPT_ANSWER = 64 * 1024  # of a partner's answer, at most this much is read (and 500 chars kept)
# what a kept connection that the partner closed in the meantime raises (over TLS: the peer went
# away without close_notify, as idle time-outs of servers and load balancers do)
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError,
          ssl.SSLEOFError, ssl.SSLZeroReturnError)


class _Call:
    """One POST under its deadline: the connection it is on, and whether the deadline ended it."""

    __slots__ = ("connection", "expired")

    def __init__(self) -> None:
        self.connection: http.client.HTTPConnection | None = None
        self.expired = False

    def expire(self) -> None:
        self.expired = True
        sock = self.connection.sock if self.connection is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # the blocked read returns at once
            except OSError:
                pass


class HttpAdapter(Adapter):
    alias = "http"
    option_names = frozenset({"timeout", "ca", "client_cert", "client_key"})

    def __init__(self, agency: Agency, settings: AdapterSettings) -> None:
        super().__init__(agency, settings)
        self._timeout = seconds(agency.options, settings.timeout, settings.config_file, f"agencies[{agency.id}].options.timeout")
        url = urlsplit(agency.endpoint)
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
        """This thread's connection, and whether it has carried a request before."""
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            return connection, True
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

    def _post(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """Status and (the start of) the answer, all within ``timeout``: the socket's time-out bounds
        each read, the deadline the whole delivery (a partner dripping bytes is cut off)."""
        if self._auth is not None:
            headers = {**headers, "Authorization": self._auth}
        call = _Call()
        with DEADLINES.deadline(self._timeout, call.expire):
            try:
                answered = self._post_once(body, headers, call)
            except (OSError, http.client.HTTPException):
                if not call.expired:
                    raise
                answered = None
        if call.expired:  # cut off: what was read may end early (headers cut short parse as ended)
            self._drop()
            raise TimeoutError(f"no complete answer within {self._timeout:g} s")
        return answered  # type: ignore[return-value]

    def _post_once(self, body: bytes, headers: dict[str, str], call: _Call) -> tuple[int, bytes]:
        for _ in range(2):
            connection, reused = self._connection()
            call.connection = connection
            try:
                connection.request("POST", self._path, body=body, headers=headers)
                response = connection.getresponse()
            except _STALE:
                # before any answer: the kept connection was dead; once more on a new one
                self._drop()
                if not reused or call.expired:
                    raise
                continue
            except BaseException:
                self._drop()
                raise
            try:
                answer = response.read(KEPT_ANSWER)
            except BaseException:  # the partner answered, then the body broke off: not sent again here
                self._drop()
                raise
            if response.will_close or not response.isclosed():  # closing, or more than we read
                self._drop()
            return response.status, answer
        raise ConnectionResetError("the partner closed the connection twice")  # pragma: no cover

    def deliver(self, delivery: Delivery) -> Result:
        endpoint = self.agency.endpoint
        try:
            status, answer = self._post(delivery.payload, self.request_headers(delivery))
        except (socket.timeout, TimeoutError) as exc:
            return Result(Outcome.RETRY, f"time-out talking to {endpoint}: {exc or type(exc).__name__}")
        except (OSError, http.client.HTTPException) as exc:
            return Result(Outcome.RETRY, f"cannot reach {endpoint}: {type(exc).__name__}: {exc}")
        text = answer.decode("utf-8", "replace")[:500].strip()
        if 200 <= status < 300:
            return Result(Outcome.DELIVERED, f"HTTP {status}")
        if retryable_status(status):
            return Result(Outcome.RETRY, f"HTTP {status}: {text}")
        return Result(Outcome.FAILED, f"HTTP {status}: {text}")

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
