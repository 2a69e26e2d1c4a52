"""``hub.toml``, parsed once into typed, frozen objects.

Relative paths are relative to the folder of the configuration file. Every fault names the file,
the key and what is wrong; unknown keys are faults too (with a did-you-mean), so a typo never
silently falls back to a default. Loading goes on past a fault and refuses the file with all of
them (``ConfigError.faults``), leaving out what only follows from another (``_FAULTY``, ``_Names``).
"""

from __future__ import annotations

import builtins
import difflib
import ipaddress
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Mapping

from .errors import ConfigError
from .retry import RetryPolicy
from .xml import Limits

WILDCARD = "*"
# an envelope's From/To identity (type Identity in xsd/envelope/envelope.xsd): the hub's party_id
# and every agency id travel in it, so one that does not match could never send or receive
IDENTITY = "[A-Za-z0-9][A-Za-z0-9._\\-]{0,63}"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
METRICS_FROM = ("127.0.0.1/32", "::1/128")  # [hub] metrics_from by default: loopback only
READ_FROM = METRICS_FROM  # [hub] read_from by default: loopback only too


# `hub serve` processes at most: one or two per core is the advice; far more is a typo, and each
# worker is a whole hub (100000 of them took the machine down instead of being refused)
MAX_WORKERS = 256


@dataclass(frozen=True)
class HubSettings:
    party_id: str
    name: str
    country: str
    store: str
    listen_host: str
    listen_port: int
    key: Path
    certificate: Path
    limits: Limits
    require_signature: bool
    envelope_schema: Path
    next_key: Path | None = None  # key rotation: the successor key, loaded and checked but not used yet
    next_certificate: Path | None = None  # published ahead of time (`hub keys`, GET /keys)
    previous_certificate: Path | None = None  # after a rotation: still published (GET /keys) until it expires
    workers: int = 1  # `hub serve` processes sharing the listening port (and the store); one or two per core
    pipeline_threads: int = 2  # messages in the pipeline at once in one process (more wait for a turn)
    max_connections: int = 512  # HTTP connections and requests at once per process; beyond them a 503
    # seconds a request's head may take, from the connection's opening or the answer before (``hub.serve``)
    head_timeout: float = 10.0
    # client addresses allowed to GET /metrics (403 for others); empty: no /metrics at all (404)
    metrics_from: tuple[Network, ...] = tuple(ipaddress.ip_network(n) for n in METRICS_FROM)
    # client addresses allowed to GET a message's trace, its status and conversations (403 for others)
    read_from: tuple[Network, ...] = tuple(ipaddress.ip_network(n) for n in READ_FROM)

    @property
    def listen_address(self) -> str:
        """``host:port`` as a URL writes it: an IPv6 address in brackets."""
        return f"[{self.listen_host}]:{self.listen_port}" if ":" in self.listen_host else f"{self.listen_host}:{self.listen_port}"


@dataclass(frozen=True)
class DispatcherSettings:
    concurrency: int = 4  # deliveries in flight per destination
    poll_interval: float = 0.2  # seconds between looks at the outbox when idle
    lease_seconds: float = 60.0  # how long a leased row stays ours before another node may take it
    delivery_timeout: float = 10.0


@dataclass(frozen=True)
class RetentionSettings:
    delivered_days: int = 0  # `hub serve` purges delivered messages' payloads older than this once a day; 0: kept forever


@dataclass(frozen=True)
class Agency:
    id: str
    name: str
    country: str
    adapter: str
    endpoint: str
    certificates: tuple[Path, ...] = ()
    ministry: str | None = None
    signing_key: Path | None = None  # demos and tests only: lets `hub send --as` sign for it
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    trust_anchors: tuple[Path, ...] = ()  # CA certificates the agency's signing certificate must chain to
    intermediates: tuple[Path, ...] = ()  # CA certificates that may sit between an anchor and the signer
    crl: tuple[str, ...] = ()  # CRL locations (path, file:// or http(s):// URL), refreshed by a job
    subject: str | None = None  # RFC 4514 attributes its certificates must carry, e.g. "O=VN-MOIT"


@dataclass(frozen=True)
class TrustSettings:
    crl_refresh_seconds: float = 900.0  # how often every CRL is read again from its location
    crl_grace_seconds: float = 86400.0  # a CRL past nextUpdate is used this much longer, then fail closed
    expiry_warning_days: int = 30  # `hub keys`, `hub check`, a daily log line and GET /metrics warn this far ahead
    crl_cache: str = "var/crl-cache"  # the last good CRL of each http(s) location, for a start while its server is down ("" = none)


@dataclass(frozen=True)
class Destination:
    agency: str
    mappings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Route:
    name: str
    sender: str
    recipient: str
    document_type: str
    function: str
    schema: str | None
    sign: bool
    destinations: tuple[Destination, ...]
    retry: RetryPolicy
    require_signature: bool | None = None  # None: the hub's [hub] require_signature decides

    def matches(self, sender: str, recipient: str, document_type: str, function: str) -> bool:
        return (
            self.sender in (WILDCARD, sender)
            and self.recipient in (WILDCARD, recipient)
            and self.document_type in (WILDCARD, document_type)
            and self.function in (WILDCARD, function)
        )


@dataclass(frozen=True)
class MappingSpec:
    name: str
    stylesheet: Path
    output: str | None  # schema the mapping's output must validate against


@dataclass(frozen=True)
class Config:
    path: Path
    hub: HubSettings
    dispatcher: DispatcherSettings
    schemas: Mapping[str, Path]
    mappings: Mapping[str, MappingSpec]
    agencies: Mapping[str, Agency]
    routes: tuple[Route, ...]
    trust: TrustSettings = field(default_factory=TrustSettings)
    retry: RetryPolicy = field(default_factory=RetryPolicy)  # [retry]: rows of no route (status events)
    retention: RetentionSettings = field(default_factory=RetentionSettings)

    @property
    def base(self) -> Path:
        return self.path.parent


_REQUIRED = object()
# What the read of a faulty key gives: its fault is recorded (``_Table.faults``) and loading goes
# on to find the file's other faults; a check that needs the value skips it rather than fault again.
_FAULTY: Any = object()


class _Table:
    """Typed reads from one TOML table, remembering which keys were read. A fault is recorded in
    ``faults`` (shared by every table of the file) and the read gives ``_FAULTY``."""

    def __init__(self, file: str, prefix: str, data: Any, base: Path, faults: list[ConfigError]) -> None:
        self.file, self.prefix, self.base, self.faults = file, prefix, base, faults
        self.failed = not isinstance(data, dict)  # then every read gives _FAULTY: one fault for the table, not one per key
        if self.failed and data is not _FAULTY:  # a table inside a faulty one is no fault of its own
            self.fault("", "must be a table")
        self.data: dict[str, Any] = {} if self.failed else data
        self._read: set[str] = set()

    def fault(self, key: str, reason: str) -> Any:
        """Records a fault of ``key`` (this table itself when empty); gives ``_FAULTY``."""
        self.faults.append(ConfigError(self.file, self._key(key) if key else self.prefix, reason))
        return _FAULTY

    def _get(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        self._read.add(key)
        if self.failed:
            return _FAULTY
        if key not in self.data:
            if default is _REQUIRED:  # perhaps given under a misspelt name
                hint = difflib.get_close_matches(key, [k for k in self.data if k not in self._read], n=1)
                given = f"; '{hint[0]}' is given: did you mean '{key}'?" if hint else ""
                self._read.update(hint)  # said here: not an unknown key as well
                return self.fault(key, "is required" + given)
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            return self.fault(key, f"must be {names}, not {value!r}")
        return value

    def _key(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def str(self, key: str, default: Any = _REQUIRED, allow_empty: bool = False) -> Any:
        value = self._get(key, str, default)
        if value is not default and isinstance(value, str) and not value.strip() and not allow_empty:
            return self.fault(key, "must not be empty")
        return value

    def identity(self, key: builtins.str) -> Any:
        value = self.str(key)
        if isinstance(value, str) and not re.fullmatch(IDENTITY, value):
            return self.fault(key, f"{value!r} cannot stand in an envelope: an identity must match "
                                   f"{IDENTITY} (Identity in xsd/envelope/envelope.xsd)")
        return value

    def int(self, key: builtins.str, default: Any = _REQUIRED, minimum: builtins.int = 0, maximum: builtins.int | None = None) -> Any:
        value = self._get(key, int, default)
        if isinstance(value, int) and value < minimum:
            return self.fault(key, f"must be at least {minimum}")
        if isinstance(value, int) and maximum is not None and value > maximum:
            return self.fault(key, f"must be at most {maximum}")
        return value

    def float(self, key: builtins.str, default: Any = _REQUIRED, minimum: builtins.float = 0.0) -> Any:
        value = self._get(key, float, default)
        if isinstance(value, float) and not math.isfinite(value):  # TOML's nan and inf: no number of seconds or ratio
            return self.fault(key, f"must be a finite number, not {value!r}")
        if isinstance(value, float) and value < minimum:
            return self.fault(key, f"must be at least {minimum:g}" if minimum else "must not be negative")
        return value

    def bool(self, key: builtins.str, default: Any = _REQUIRED) -> Any:
        return self._get(key, bool, default)

    def path(self, key: builtins.str, default: Any = _REQUIRED) -> Any:
        value = self.str(key, default)
        return self.base / value if isinstance(value, str) else value

    def list(self, key: builtins.str, default: Any = _REQUIRED) -> Any:
        """A tuple of strings (one string given alone stands for a list of it)."""
        value = self._get(key, (list, str), default)
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list) and not all(isinstance(v, str) for v in value):
            return self.fault(key, "must be a list of strings")
        return tuple(value) if isinstance(value, list) else value

    def paths(self, key: builtins.str) -> Any:
        """A list of paths (default: none)."""
        value = self.list(key, ())
        return value if value is _FAULTY else tuple(self.base / p for p in value)

    def table(self, key: builtins.str) -> _Table:
        self._read.add(key)
        return _Table(self.file, self._key(key), _FAULTY if self.failed else self.data.get(key, {}), self.base, self.faults)

    def tables(self, key: builtins.str) -> builtins.list[_Table]:
        """The tables of an array of tables; none when it is faulty (the fault is recorded)."""
        self._read.add(key)
        items = self.data.get(key, [])
        if not isinstance(items, list):
            self.fault(key, "must be an array of tables ([[...]])")
            return []
        return [_Table(self.file, f"{self._key(key)}[{i}]", item, self.base, self.faults) for i, item in enumerate(items)]

    def raw(self, key: builtins.str) -> Any:
        self._read.add(key)
        return self.data.get(key)

    def done(self) -> None:
        """Refuses keys that nothing read: a typo must not fall back to a default silently."""
        for key in self.data:
            if key not in self._read:
                self.fault(key, "unknown key" + did_you_mean(key, sorted(self._read)))


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """"; did you mean 'X'?" for the known name closest to ``name``, or nothing."""
    hint = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean '{hint[0]}'?" if hint else ""


class _Names:
    """The names a section defines, for the references to them. A name not among them is unknown
    only if the section was ``listed`` and every entry in it named: an entry whose name is missing
    or unusable may be the one meant, and a fault for the reference would only echo the entry's own."""

    def __init__(self, given: Iterable[Any], listed: bool) -> None:
        names = list(given)
        self.names = {n for n in names if isinstance(n, str)}
        self.complete = listed and all(isinstance(n, str) for n in names)

    def unknown(self, name: Any) -> bool:
        """Whether ``name`` (a read value: not ``_FAULTY``, not None) names nothing in the section."""
        return isinstance(name, str) and self.complete and name not in self.names


def _retry(table: _Table, default: RetryPolicy) -> RetryPolicy:
    policy = RetryPolicy(
        max_attempts=table.int("max_attempts", default.max_attempts, minimum=1),
        initial_delay=table.float("initial_delay", default.initial_delay),
        max_delay=table.float("max_delay", default.max_delay),
        multiplier=table.float("multiplier", default.multiplier),
        jitter=table.float("jitter", default.jitter),
    )
    table.done()
    return policy


def _networks(table: _Table, key: str, default: tuple[str, ...]) -> Any:
    """Client addresses or CIDR networks (``10.0.0.5``, ``10.0.0.0/8``, ``::1/128``): each entry
    that is not one is a fault of its own."""
    entries = table.list(key, default)
    if entries is _FAULTY:
        return _FAULTY
    out = []
    for entry in entries:
        text = entry.strip()
        try:
            out.append(ipaddress.ip_network(text))
            continue
        except ValueError:
            pass
        what, hint = "is not an IP address or CIDR network", None
        host, sep, port = text.rpartition(":")
        try:
            hint = str(ipaddress.ip_network(text, strict=False))
            what = "has host bits set"  # 10.0.0.1/8
        except ValueError:
            if text.lower() == "localhost":
                hint = "127.0.0.1/32' and '::1/128"
            elif text.lower() in ("*", "any", "all"):
                hint = "0.0.0.0/0' and '::/0"  # every client
            elif sep and host and port.isdigit():  # with a port: 127.0.0.1:9090
                try:
                    hint = str(ipaddress.ip_network(host.strip("[]"), strict=False))
                except ValueError:
                    pass
        extra = f"; did you mean '{hint}'?" if hint else " (e.g. '10.0.0.5' or '10.0.0.0/8')"
        table.fault(key, f"{entry!r} {what}{extra}")
    return tuple(out) if len(out) == len(entries) else _FAULTY


def _listen(table: _Table) -> tuple[Any, Any]:
    """``[hub] listen``: (host, port), both ``_FAULTY`` when it is faulty."""
    value = table.str("listen", "127.0.0.1:8480")
    if value is _FAULTY:
        return value, value
    host, sep, port = value.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()):
        return table.fault("listen", f"must be HOST:PORT, not {value!r}"), _FAULTY
    if not 0 < int(port) < 65536:  # 0 would listen on a port nobody is told of; above 65535 is no port
        return table.fault("listen", f"the port must be from 1 to 65535, not {port} (in {value!r})"), _FAULTY
    if not host.strip("[]"):  # bind("") listens on every interface: say so by writing 0.0.0.0 or [::]
        return table.fault("listen", f"give the host to listen on (e.g. 127.0.0.1:{int(port)}), not {value!r}"), _FAULTY
    return host.strip("[]"), int(port)


def _head_timeout(table: _Table, body_seconds: Any) -> Any:
    """``[hub] head_timeout``: more than 0 (0 would close every connection at once), and no more
    than ``body_timeout``: a head is at most 64 KiB where a body may be megabytes, and a longer
    deadline for it would only let idle or trickling connections hold the listener longer. Not
    given, it is 10 s, or ``body_timeout`` where that is shorter (as a head had before it existed)."""
    given = "head_timeout" in table.data
    value = table.float("head_timeout", HubSettings.head_timeout)
    if not isinstance(value, float) or not isinstance(body_seconds, float):
        return value
    if not given:
        return min(value, body_seconds)
    if value <= 0:
        return table.fault("head_timeout", "must be more than 0: it is the seconds a request head may take to arrive")
    if value > body_seconds:
        return table.fault("head_timeout", f"must not be more than body_timeout ({body_seconds:g} s): a request head "
                                           "(at most 64 KiB) is not given longer than a body")
    return value


def _store(table: _Table) -> Any:
    """``[hub] store``, its URL checked now (pool options, libpq parameters, SQLite's
    ``lock_timeout``), not at the first connection."""
    url = table.str("store", "sqlite:///var/hub.db")
    if url is _FAULTY:
        return url
    try:
        if url.startswith(("postgresql://", "postgres://")):
            from .store.postgres import parse_url

            parse_url(url, table.file)
        elif url.startswith("sqlite://"):
            from .store import sqlite_options

            sqlite_options(url[len("sqlite://") :], table.file)
        else:
            from .store import unsupported_store

            raise unsupported_store(url, table.file)
    except ConfigError as exc:
        table.faults.append(exc)
        return _FAULTY
    return url


def _utf8(file: str, raw: bytes) -> str:
    """The text of hub.toml, which TOML requires to be UTF-8; a byte that is not is named by its
    offset and line (an editor saving in Latin-1 or Windows-1258 is the usual cause)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(file, "", f"not UTF-8: byte 0x{raw[exc.start]:02x} at offset {exc.start} (line {line}): {exc.reason}; "
                                    "save the file as UTF-8") from None


def load_config(path: str | Path) -> Config:
    """Reads and checks the shape of ``hub.toml``. ``hub check`` goes further (see runtime)."""
    path = Path(path).resolve()
    file = str(path)
    try:
        data = tomllib.loads(_utf8(file, path.read_bytes()))
    except FileNotFoundError:
        raise ConfigError(file, "", "the configuration file does not exist (run from the folder of hub.toml, or give --config PATH)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, "", f"not valid TOML: {exc}") from None
    faults: list[ConfigError] = []  # every fault found; the file is refused with all of them at the end
    top = _Table(file, "", data, path.parent, faults)

    h = top.table("hub")
    host, port = _listen(h)
    hub = HubSettings(
        party_id=h.identity("party_id"),
        name=h.str("name", ""),
        country=h.str("country"),
        store=_store(h),
        listen_host=host,
        listen_port=port,
        key=h.path("key"),
        certificate=h.path("certificate"),
        limits=(limits := Limits(
            max_bytes=h.int("max_message_bytes", Limits.max_bytes, minimum=1),
            max_depth=h.int("max_depth", Limits.max_depth, minimum=2),
            body_seconds=h.float("body_timeout", Limits.body_seconds),
        )),
        require_signature=h.bool("require_signature", True),
        envelope_schema=h.path("envelope_schema", "xsd/envelope/envelope.xsd"),
        next_key=h.path("next_key", None),
        next_certificate=h.path("next_certificate", None),
        previous_certificate=h.path("previous_certificate", None),
        workers=h.int("workers", 1, minimum=1, maximum=MAX_WORKERS),
        pipeline_threads=h.int("pipeline_threads", HubSettings.pipeline_threads, minimum=1),
        max_connections=h.int("max_connections", HubSettings.max_connections, minimum=1),
        head_timeout=_head_timeout(h, limits.body_seconds),
        metrics_from=_networks(h, "metrics_from", METRICS_FROM),
        read_from=_networks(h, "read_from", READ_FROM),
    )
    h.done()
    if _FAULTY not in (hub.next_key, hub.next_certificate) and (hub.next_key is None) != (hub.next_certificate is None):
        h.fault("next_key", "next_key and next_certificate go together: name both or neither")

    t = top.table("trust")
    crl_cache = t.str("crl_cache", TrustSettings.crl_cache, allow_empty=True)
    trust = TrustSettings(
        crl_refresh_seconds=t.float("crl_refresh_seconds", TrustSettings.crl_refresh_seconds, minimum=1),
        crl_grace_seconds=t.float("crl_grace_seconds", TrustSettings.crl_grace_seconds),
        expiry_warning_days=t.int("expiry_warning_days", TrustSettings.expiry_warning_days),
        crl_cache=crl_cache.strip() if isinstance(crl_cache, str) else crl_cache,
    )
    t.done()

    d = top.table("dispatcher")
    dispatcher = DispatcherSettings(
        concurrency=d.int("concurrency", DispatcherSettings.concurrency, minimum=1),
        poll_interval=d.float("poll_interval", DispatcherSettings.poll_interval),
        lease_seconds=d.float("lease_seconds", DispatcherSettings.lease_seconds),
        delivery_timeout=d.float("delivery_timeout", DispatcherSettings.delivery_timeout),
    )
    d.done()

    kept = top.table("retention")
    retention = RetentionSettings(delivered_days=kept.int("delivered_days", RetentionSettings.delivered_days))
    kept.done()

    default_retry = _retry(top.table("retry"), RetryPolicy())

    s = top.table("schemas")
    schemas = {name: s.path(name) for name in list(s.data)}
    s.done()
    schema_names = _Names(schemas, listed=not s.failed)

    m = top.table("mappings")
    mappings: dict[str, MappingSpec] = {}
    for name in list(m.data):
        spec = m.table(name)
        mappings[name] = MappingSpec(name=name, stylesheet=spec.path("stylesheet"), output=spec.str("output", None))
        if schema_names.unknown(mappings[name].output):
            spec.fault("output", f"names no schema in [schemas]: {mappings[name].output!r}")
        spec.done()
    m.done()
    mapping_names = _Names(mappings, listed=not m.failed)

    agencies: dict[str, Agency] = {}
    positions: dict[str, int] = {}  # agency id -> its place among the [[agencies]], for an id used twice
    ids: list[Any] = []  # as read: _FAULTY for an id missing or unusable
    for i, a in enumerate(top.tables("agencies")):
        agency_id = a.identity("id")  # a missing or unusable id is named by the index: agencies[3].id
        ids.append(agency_id)
        if agency_id is not _FAULTY:
            a.prefix = f"agencies[{agency_id}]"  # every other fault by the id, as `hub check` and the adapters name it
        options = a.raw("options")
        if options is None:
            options = {}
        elif not isinstance(options, dict):
            options = a.fault("options", "must be a table")
        agency = Agency(
            id=agency_id,
            name=a.str("name", ""),
            country=a.str("country"),
            adapter=a.str("adapter"),
            endpoint=a.str("endpoint", ""),
            certificates=a.paths("certificates"),
            ministry=a.str("ministry", None),
            signing_key=a.path("signing_key", None),
            options=MappingProxyType(dict(options)) if options is not _FAULTY else _FAULTY,
            trust_anchors=a.paths("trust_anchors"),
            intermediates=a.paths("intermediates"),
            crl=a.list("crl", ()),
            subject=a.str("subject", None),
        )
        a.done()
        if agency_id is not _FAULTY:
            if agency_id == hub.party_id:
                a.fault("id", f"agency id {agency_id!r} is the hub's own party_id")
            if agency_id in agencies:
                a.fault("id", f"agency id {agency_id!r} is used twice (agencies[{positions[agency_id]}] and agencies[{i}], counted from 0)")
            else:
                agencies[agency_id] = agency
                positions[agency_id] = i
    # an agency whose id is missing or unusable may be the one a route names: only named ones are checked for then
    agency_names = _Names(ids, listed=isinstance(data.get("agencies", []), list))

    routes: list[Route] = []
    for r in top.tables("routes"):
        destinations: list[Destination] = []
        for t in r.tables("deliver"):
            dest = Destination(agency=t.str("agency"), mappings=t.list("mapping", ()))
            t.done()
            if agency_names.unknown(dest.agency):
                t.fault("agency", f"unknown agency {dest.agency!r}" + did_you_mean(dest.agency, agencies))
            elif dest.agency is not _FAULTY and any(d.agency == dest.agency for d in destinations):
                # two rows under one (sender, message id): the partner would take the second for a duplicate
                t.fault("agency", f"agency {dest.agency!r} is named twice in this route: both copies would carry one "
                                  "message id (give it one destination, or a second route)")
            for name in () if dest.mappings is _FAULTY else dest.mappings:
                if mapping_names.unknown(name):
                    t.fault("mapping", f"unknown mapping {name!r}")
            destinations.append(dest)
        route = Route(
            name=r.str("name"),
            sender=r.str("from", WILDCARD),
            recipient=r.str("to", WILDCARD),
            document_type=r.str("document_type", WILDCARD),
            function=r.str("function", WILDCARD),
            schema=r.str("schema", None),
            sign=r.bool("sign", True),
            destinations=tuple(destinations),
            retry=_retry(r.table("retry"), default_retry),
            require_signature=r.bool("require_signature", None),
        )
        r.done()
        if not route.destinations and not r.failed and isinstance(r.data.get("deliver", []), list):  # else a fault of its own
            r.fault("deliver", "a route needs at least one [[routes.deliver]]")
        if schema_names.unknown(route.schema):
            r.fault("schema", f"names no schema in [schemas]: {route.schema!r}")
        if route.sender != WILDCARD and agency_names.unknown(route.sender):
            r.fault("from", f"unknown agency {route.sender!r}" + did_you_mean(route.sender, agencies))
        # a recipient is an agency or the hub itself: any other name is a typo the route would never match
        if route.recipient not in (WILDCARD, hub.party_id) and hub.party_id is not _FAULTY and agency_names.unknown(route.recipient):
            known = [*agencies, hub.party_id]
            r.fault("to", f"{route.recipient!r} is neither an agency nor this hub ({hub.party_id!r})" + did_you_mean(route.recipient, known))
        # outbox rows carry the route's name, and a retry takes its policy from it
        if isinstance(route.name, str) and any(other.name == route.name for other in routes):
            r.fault("name", f"route name {route.name!r} is used twice; each route needs its own")
        if isinstance(route.name, str) and route.name.startswith("@"):
            r.fault("name", f"{route.name!r}: names starting with @ are the hub's own (status events)")
        routes.append(route)
    top.done()
    if faults:
        raise ConfigError.all_of(faults)

    return Config(
        path=path,
        hub=hub,
        dispatcher=dispatcher,
        schemas=MappingProxyType(schemas),
        mappings=MappingProxyType(mappings),
        agencies=MappingProxyType(agencies),
        routes=tuple(routes),
        trust=trust,
        retry=default_retry,
        retention=retention,
    )
