"""``soap``: calls a ministry's own WSDL operation with the signed envelope (zeep).

    [[agencies]]
    id = "VN-MOH"
    adapter = "soap"
    endpoint = "https://moh.example/nsw/service"     # optional: overrides the WSDL's soap:address
    options = { wsdl = "wsdl/moh.wsdl", service = "MinistryService", port = "MinistrySoap11",
                operation = "ReceiveDocument", argument = "_value_1", timeout = 10,
                client_cert = "keys/hub-client.crt", client_key = "keys/hub-client.key", ca = "keys/moh-ca.crt" }

``argument`` names the operation's parameter that takes the envelope element (``_value_1`` for an
``xs:any`` content, zeep's name for it). ``service``/``port`` default to the WSDL's first ones.

Outcomes: a normal answer is delivered (its content is the ministry's business); a SOAP fault
whose code is Client/Sender (or VersionMismatch, MustUnderstand, DataEncodingUnknown) is a
permanent failure that keeps the fault text; Server/Receiver faults, time-outs, refused
connections, HTTP 408/425/429/5xx and unreadable answers are retried; other HTTP errors fail.

zeep reaches nothing but the configured places: the WSDL's URL (or the folder of a local WSDL)
and the endpoint (``GuardedTransport``); its parser refuses DTDs, entities, huge trees and
external references. One zeep client per dispatcher thread, built on first use (a ministry whose
WSDL URL is down at start-up is retried, not fatal).

Every request (the call, the WSDL and what it imports) ends within ``timeout`` as a whole, however
slowly the ministry drips its status line, headers or body (``requests`` bounds each read only): a
deadline shuts the connection down. An answer that came but cannot be taken (no SOAP, a DTD, an
element the WSDL does not allow) is retried with what was wrong, like an answer that does not parse.
"""

from __future__ import annotations

import http.client
import re
import socket
import threading
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

import requests
import requests.adapters
import zeep
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ProtocolError
from zeep.exceptions import Error as ZeepError, Fault, TransportError, ValidationError, XMLSyntaxError
from zeep.transports import Transport

from hub.config import Agency
from hub.errors import ConfigError, Rejected
from hub.httpio import DEADLINES, TooLarge, read_capped
from hub.xml import XmlParser

from .base import Adapter, AdapterSettings, Delivery, Outcome, Result, one_line, retry_after, retryable_status, seconds, without_credentials

CLIENT_FAULTS = frozenset({"Client", "Sender", "VersionMismatch", "MustUnderstand", "DataEncodingUnknown"})


class Refused(Exception):
    """zeep tried to reach a place the configuration does not name."""


def _origin(url: str) -> str:
    u = urlparse(url)
    port = u.port or {"http": 80, "https": 443}.get(u.scheme)
    return f"{u.scheme}://{(u.hostname or '').lower()}:{port}"


def _is_url(value: str) -> bool:
    return value.startswith(("http://", "https://"))


class WatchedAdapter(requests.adapters.HTTPAdapter):
    """A ``requests`` adapter that notes the connection its current request runs on (one session,
    so one adapter, per delivery thread), so that a deadline can shut it down: ``requests`` bounds
    each read, not a whole answer, and a partner dripping its headers would hold a thread for ever."""

    def __init__(self) -> None:
        self.connection: Any = None  # the urllib3 connection of the request under way
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _noted(HTTPConnectionPool, self),
                                                   "https": _noted(HTTPSConnectionPool, self)}

    def end(self) -> None:
        """Shuts the current request's connection down: its blocked read returns at once."""
        sock = getattr(self.connection, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _noted(pool: type[HTTPConnectionPool], adapter: WatchedAdapter) -> type[HTTPConnectionPool]:
    """``pool`` telling ``adapter`` which connection each request takes."""

    class Noted(pool):  # type: ignore[valid-type, misc]
        def _get_conn(self, timeout: float | None = None) -> Any:
            adapter.connection = super()._get_conn(timeout)
            return adapter.connection

    Noted.__name__ = Noted.__qualname__ = pool.__name__  # urllib3's errors name the pool's class
    return Noted


class GuardedTransport(Transport):
    """A zeep transport limited to the given origins and to local files under one folder, each
    request ended at its deadline."""

    def __init__(
        self, origins: frozenset[str], folder: Path | None, timeout: float, session: requests.Session, max_bytes: int
    ) -> None:
        super().__init__(timeout=timeout, operation_timeout=timeout, session=session)
        self.origins, self.folder, self.max_bytes = origins, folder, max_bytes
        self.last_status = 0  # HTTP status of the last call (one transport per thread)
        self.last_retry_after: float | None = None  # and its Retry-After, in seconds
        self.watched = WatchedAdapter()
        session.mount("http://", self.watched)
        session.mount("https://", self.watched)

    @contextmanager
    def _deadline(self, seconds: float, what: str) -> Iterator[None]:
        """The block's request ended after ``seconds`` as a whole: ``requests.Timeout`` then,
        whatever the cut left behind (an error, or headers cut short that parse as ended)."""
        expired = threading.Event()

        def end() -> None:
            expired.set()
            self.watched.end()

        with DEADLINES.deadline(seconds, end):
            try:
                yield
            except Exception:
                if expired.is_set():
                    raise requests.Timeout(f"no complete answer from {without_credentials(what)} within {seconds:g} s") from None
                raise
        if expired.is_set():
            raise requests.Timeout(f"no complete answer from {without_credentials(what)} within {seconds:g} s")

    def _check(self, url: str) -> None:
        if _is_url(url):
            if _origin(url) not in self.origins:
                raise Refused(f"{url} is not the configured WSDL or endpoint location")
            return
        path = Path(url[len("file://"):] if url.startswith("file://") else url).resolve()
        if self.folder is None or not path.is_relative_to(self.folder):
            raise Refused(f"{url} is outside the folder of the configured WSDL")

    def load(self, url: str) -> bytes:
        self._check(url)
        data: bytes = super().load(url)
        return data

    # Every request below goes only where ``_check`` allows (no redirect elsewhere) and reads at
    # most ``max_bytes`` of the answer within the time-out (``_bounded``).

    def post(self, address: str, message: Any, headers: Any) -> requests.Response:
        self._check(address)
        self.last_status, self.last_retry_after = 0, None
        with self._deadline(self.operation_timeout, address):
            response = self._bounded(self.session.post(address, data=message, headers=headers, timeout=self.operation_timeout,
                                                       stream=True, allow_redirects=False), self.operation_timeout)
        self.last_status = response.status_code
        self.last_retry_after = retry_after(response.headers.get("Retry-After"))
        return response

    def get(self, address: str, params: Any, headers: Any) -> requests.Response:
        self._check(address)
        with self._deadline(self.operation_timeout, address):
            return self._bounded(self.session.get(address, params=params, headers=headers, timeout=self.operation_timeout,
                                                  stream=True, allow_redirects=False), self.operation_timeout)

    def _load_remote_data(self, url: str) -> bytes:  # a WSDL or XSD named by URL (checked by ``load``)
        with self._deadline(self.load_timeout, url):
            response = self._bounded(self.session.get(url, timeout=self.load_timeout, stream=True, allow_redirects=False), self.load_timeout)
        response.raise_for_status()
        return response.content

    def _bounded(self, response: requests.Response, seconds: float) -> requests.Response:
        """``response`` with its body read: at most ``max_bytes`` of it, in ``seconds`` (``TooLarge`` beyond)."""
        with closing(response):
            what = f"the answer of {response.url}"
            response._content = read_capped(response.iter_content(64 * 1024), self.max_bytes, what, seconds)  # noqa: SLF001
        return response


def fault_outcome(code: str | None) -> Outcome:
    """Client-side SOAP fault codes are permanent; everything else may pass."""
    local = re.split(r"[:}]", code or "")[-1].split(".")[0]
    return Outcome.FAILED if local in CLIENT_FAULTS else Outcome.RETRY


def _http_result(status: int, text: str, wait: float | None = None) -> Result:
    """An answer zeep could not take as a reply or a fault, judged by its HTTP status as for any
    HTTP partner, except 200: a 200 that lands here is an unreadable answer (XML that does not
    parse, a fault without a code), and unreadable answers are retried. Another 2xx lands here
    with a body that is no SOAP answer, or with none where zeep needs one (204), and fails.
    ``wait``: the Retry-After of a 429 or 503, waited out by the dispatcher."""
    retry = retryable_status(status) or status == 200
    said = f": {text}" if text else ": an empty answer"
    note = f"; the ministry asks to wait {wait:.0f} s (Retry-After)" if wait and retryable_status(status) else ""
    return Result(Outcome.RETRY if retry else Outcome.FAILED, f"HTTP {status}{said}{note}",
                  retry_after=wait if retry and retryable_status(status) else None)


def _broken(operation: str, exc: requests.RequestException) -> str:
    """What a connection error means for the call: never connected, or broken once the request
    went out (the ministry may have it: the repeat carries the same message id)."""
    cause = exc.args[0] if exc.args else None
    if isinstance(cause, ProtocolError):  # urllib3: the request went out, no whole answer came back
        inner = cause.args[1] if len(cause.args) > 1 else cause
        if isinstance(inner, http.client.BadStatusLine) and not isinstance(inner, ConnectionError):
            return f"the {operation} endpoint answered something that is not HTTP ({type(inner).__name__}: {_text(inner, 120)})"
        return (f"the connection to the {operation} endpoint broke before a complete answer ({type(inner).__name__}: "
                f"{_text(inner, 120)}); the ministry may have received the call, so it is made again with the same message id")
    return f"cannot reach the {operation} endpoint: {_text(exc)}"


def _text(value: Any, limit: int = 300) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = re.sub(r"^\s*<\?xml[^>]*\?>", "", value.decode("utf-8", "replace"))
    return one_line("".join(value.itertext()) if hasattr(value, "itertext") else str(value), limit)


class SoapAdapter(Adapter):
    alias = "soap"
    option_names = frozenset({"wsdl", "service", "port", "operation", "argument", "timeout", "ca", "client_cert", "client_key"})

    def __init__(self, agency: Agency, settings: AdapterSettings) -> None:
        super().__init__(agency, settings)
        o = agency.options
        key = f"agencies[{agency.id}].options"
        for required in ("wsdl", "operation"):
            if not o.get(required):
                raise ConfigError(settings.config_file, f"{key}.{required}", "is required for the soap adapter")
        raw = str(o["wsdl"])
        self.wsdl = raw if _is_url(raw) else str(settings.path(raw).resolve())
        self.service, self.port = o.get("service"), o.get("port")
        self.operation, self.argument = str(o["operation"]), str(o.get("argument", "_value_1"))
        self.timeout = seconds(o, settings.timeout, settings.config_file, f"{key}.timeout")
        origins = {_origin(u) for u in (raw, agency.endpoint) if u and _is_url(u)}
        self._origins = frozenset(origins)
        self._folder = None if _is_url(raw) else Path(self.wsdl).parent
        self._tls = {name: settings.path(str(o[name])) for name in ("client_cert", "client_key", "ca") if o.get(name)}
        self._parser = XmlParser(settings.limits)
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()

    # -- zeep ------------------------------------------------------------------------------------

    def _session(self) -> requests.Session:
        session = requests.Session()
        session.trust_env = False  # no proxies or .netrc from the environment
        if "client_cert" in self._tls:
            session.cert = (str(self._tls["client_cert"]), str(self._tls.get("client_key", self._tls["client_cert"])))
        if "ca" in self._tls:
            session.verify = str(self._tls["ca"])
        with self._lock:
            self._sessions.append(session)
        return session

    def _build(self) -> Any:
        settings = zeep.Settings(strict=True, xml_huge_tree=False, forbid_dtd=True, forbid_entities=True, forbid_external=True)
        transport = self._local.transport = GuardedTransport(
            self._origins, self._folder, self.timeout, self._session(), self._parser.limits.max_bytes
        )
        client = zeep.Client(self.wsdl, transport=transport, settings=settings)
        service = self.service or next(iter(client.wsdl.services))
        port = self.port or next(iter(client.wsdl.services[service].ports))
        if self.agency.endpoint:
            binding = client.wsdl.services[service].ports[port].binding
            proxy = client.create_service(str(binding.name), self.agency.endpoint)
        else:
            proxy = client.bind(service, port)
        getattr(proxy, self.operation)  # fails early (AttributeError) if the WSDL has no such operation
        return proxy

    def _proxy(self) -> Any:
        proxy = getattr(self._local, "proxy", None)
        if proxy is None:
            proxy = self._local.proxy = self._build()
        return proxy

    # -- delivery --------------------------------------------------------------------------------

    def deliver(self, delivery: Delivery) -> Result:
        try:
            proxy = self._proxy()
        except (Refused, ValidationError, AttributeError, KeyError, StopIteration) as exc:
            return Result(Outcome.FAILED, f"the WSDL {without_credentials(self.wsdl)} does not fit the configuration: {type(exc).__name__}: {exc}")
        except (requests.RequestException, ZeepError, OSError) as exc:  # unreachable, slow, or not (yet) a WSDL
            return Result(Outcome.RETRY, f"cannot load the WSDL {without_credentials(self.wsdl)}: {type(exc).__name__}: {_text(exc)}")
        try:
            element = self._parser.parse(delivery.payload)
        except Rejected as exc:
            return Result(Outcome.FAILED, f"the stored envelope does not parse: {exc}")
        transport: GuardedTransport = self._local.transport
        transport.last_status = 0  # set again once the ministry answers: what fails after that is its answer
        try:
            answer = getattr(proxy, self.operation)(**{self.argument: element})
        except Fault as fault:
            detail = _text(fault.detail)
            if fault.code is None:  # an answer that is no SOAP fault (an HTML error page): judge by HTTP
                said = detail or _text(fault.message) or "a SOAP fault without a code or a reason"
                return _http_result(transport.last_status, said, transport.last_retry_after)
            # a real fault: its code decides, not the HTTP status (SOAP 1.1 sends every fault with
            # 500): a Client/Sender fault is the ministry refusing this envelope, which sending it
            # again cannot change (dead); a Server/Receiver fault is transient (retried)
            text = f"SOAP fault {fault.code}: {fault.message}" + (f" ({detail})" if detail else "")
            return Result(fault_outcome(fault.code), text)
        except TransportError as exc:
            return _http_result(exc.status_code or 0, _text(exc.content) or _text(exc.message), transport.last_retry_after)
        except requests.Timeout as exc:
            return Result(Outcome.RETRY, f"time-out calling {self.operation}: {_text(exc) or type(exc).__name__}")
        except TooLarge as exc:  # before the requests errors: it is no network failure
            return Result(Outcome.RETRY, f"unreadable answer to {self.operation}: {exc}")
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            return Result(Outcome.RETRY, _broken(self.operation, exc))
        except requests.RequestException as exc:
            return Result(Outcome.RETRY, f"cannot reach the {self.operation} endpoint: {_text(exc)}")
        except XMLSyntaxError as exc:
            return Result(Outcome.RETRY, f"unreadable answer to {self.operation}: {_text(exc)}")
        except Refused as exc:
            return Result(Outcome.FAILED, f"refused: {exc}; set the agency's endpoint")
        except (ZeepError, TypeError, ValueError, LookupError, AttributeError) as exc:
            if transport.last_status:  # the ministry answered: its answer is what zeep could not take
                return self._unreadable(transport.last_status, exc)
            if isinstance(exc, (ValidationError, TypeError)):
                return Result(Outcome.FAILED, f"the envelope does not fit operation {self.operation}: {_text(exc)}")
            raise
        return Result(Outcome.DELIVERED, f"SOAP {self.operation}: {_text(answer, 200) or 'answered'}")

    def _unreadable(self, status: int, exc: Exception) -> Result:
        """An answer that came but that zeep cannot take (a DTD or entity it refuses, an element the
        WSDL does not allow there, a SOAP Body without the answer): retried, like one that does not
        parse, with what was wrong; the ministry discards the repeat by its message id."""
        what = {"DTDForbidden": "it holds a DTD, which the hub refuses",
                "EntitiesForbidden": "it declares entities, which the hub refuses",
                "ExternalReferenceForbidden": "it refers to an external resource, which the hub refuses"}.get(type(exc).__name__)
        said = what or f"{type(exc).__name__}: {_text(exc) or 'no answer element where the WSDL expects one'}"
        return Result(Outcome.RETRY, f"unreadable answer to {self.operation} (HTTP {status}): {said}")

    def check(self) -> list[str]:
        if _is_url(self.wsdl):
            return []  # reachability is not a configuration fault: deliveries retry
        try:
            self._build()
        except Exception as exc:  # noqa: BLE001 (reported, not raised: this is `hub check`)
            return [f"options.wsdl: {self.wsdl}: {type(exc).__name__}: {exc}"]
        return []

    def close(self) -> None:
        with self._lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()
