"""``GET /metrics``: the Prometheus text exposition format (0.0.4), written by hand.

    swhub_certificate_expiry_seconds{owner,role,subject,serial}   seconds until notAfter (negative once expired)
    swhub_certificate_expiring{owner,role,subject,serial}         1 within trust.expiry_warning_days or expired, else 0
    swhub_crl_next_update_seconds{location,issuer}                seconds until a CRL's nextUpdate
    swhub_crl_usable{location}                                    0 when the CRL is missing or stale past its grace
    swhub_messages_accepted_total                                 messages recorded (receipt sent)
    swhub_messages_duplicate_total                                repeats answered with the original receipt
    swhub_messages_rejected_total{code,name}                      NACKs, by error code
    swhub_outbox_rows{destination,state}                          outbox rows (one GROUP BY query per scrape)
    swhub_store_up                                                0 when that query failed
    swhub_config_last_reload_successful                           0 after a reload (SIGHUP) that was refused
    swhub_config_last_reload_success_timestamp_seconds            when keys and trust were last loaded

The certificate figures are computed at each scrape from what the hub holds now: the certificates
read at start-up or at the last reload (``Runtime.keys``), against the clock and the warning
window of that configuration. So they follow a reload and the passing days without waiting for
the daily expiry warning, and they always agree with it and with ``hub keys``.

The message counters live in ``Counters``, shared by the workers of one ``hub serve``, so that
whichever worker answers a scrape reports the totals of all of them.

The figures name certificates, CRL locations and outbox volumes, and the route sits on the
partners' listener: only clients in ``[hub] metrics_from`` (loopback by default) get them, others a
403; an empty ``metrics_from`` turns the route off (404).
"""

from __future__ import annotations

import ipaddress
import logging
import mmap
import threading
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from .errors import Code

if TYPE_CHECKING:
    from .runtime import Runtime

log = logging.getLogger("hub.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ACCEPTED, DUPLICATE = "accepted", "duplicate"


class Counters:
    """Message counters in memory shared by the worker processes of one ``hub serve``.

    An anonymous shared mapping made before the workers fork, one row of 64-bit cells per worker:
    each worker writes only its own row (under a thread lock, as the pipeline runs in several
    threads) and a scrape adds the rows up. No lock crosses processes, and a worker that is
    restarted goes on counting in its row, so the totals never go down while ``hub serve`` runs.
    """

    NAMES = (ACCEPTED, DUPLICATE, *(c.value for c in Code))

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers
        self._width = len(self.NAMES)
        self._index = {name: i for i, name in enumerate(self.NAMES)}
        self._map = mmap.mmap(-1, 8 * self._width * workers)  # MAP_SHARED | MAP_ANONYMOUS: seen by forked children
        self._cells = memoryview(self._map).cast("Q")
        self._row = 0
        self._lock = threading.Lock()

    def use_row(self, worker: int) -> None:
        """Called in a worker after the fork: its own row."""
        if not 0 <= worker < self.workers:
            raise ValueError(f"worker {worker} of {self.workers}")
        self._row = worker

    def add(self, name: str) -> None:
        cell = self._row * self._width + self._index[name]
        with self._lock:
            self._cells[cell] += 1

    def totals(self) -> dict[str, int]:
        return {name: sum(self._cells[row * self._width + i] for row in range(self.workers)) for i, name in enumerate(self.NAMES)}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(values: Mapping[str, str]) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in values.items()) + "}" if values else ""


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class _Family:
    def __init__(self, name: str, kind: str, help_: str) -> None:
        self.name, self.kind, self.help = name, kind, help_
        self.samples: dict[str, float] = {}  # one sample per label set (a file named twice is one series)

    def add(self, value: float, **labels: str) -> None:
        self.samples[_labels(labels)] = value

    def lines(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} {self.kind}"
        for labels, value in self.samples.items():
            yield f"{self.name}{labels} {_number(value)}"


def render(runtime: Runtime, now: datetime | None = None) -> str:
    """The exposition text for one scrape: one store query (outbox counts), the rest in memory."""
    now = now or datetime.now(timezone.utc)
    window = runtime.config.trust.expiry_warning_days
    expiry = _Family("swhub_certificate_expiry_seconds", "gauge", "Seconds until the certificate's notAfter (negative once expired).")
    expiring = _Family("swhub_certificate_expiring", "gauge",
                       f"1 when the certificate expires within trust.expiry_warning_days ({window}) or has expired.")
    for entry in runtime.keys:
        if entry.role == "CRL" or entry.expires is None:
            continue
        labels = {"owner": entry.owner, "role": entry.role, "subject": entry.subject, "serial": entry.serial or ""}
        expiry.add(round((entry.expires - now).total_seconds()), **labels)
        expiring.add(1 if entry.status(now, window) in ("WARNING", "EXPIRED") else 0, **labels)

    crl_next = _Family("swhub_crl_next_update_seconds", "gauge", "Seconds until the nextUpdate of the CRL read last from a location.")
    crl_usable = _Family("swhub_crl_usable", "gauge", "0 when a CRL is missing or stale past its grace: its agencies' messages are refused.")
    trust = runtime.trust
    if trust is not None:
        for source in list(trust.sources.values()):
            crl_usable.add(0 if source.unusable(now, trust.crl_grace) else 1, location=source.location)
            if source.loaded is not None:
                crl_next.add(round((source.loaded.next_update - now).total_seconds()), location=source.location,
                             issuer=source.loaded.crl.issuer.rfc4514_string())

    counts = runtime.pipeline.counters.totals()
    accepted = _Family("swhub_messages_accepted_total", "counter", "Messages recorded and answered with a receipt.")
    accepted.add(counts[ACCEPTED])
    duplicate = _Family("swhub_messages_duplicate_total", "counter", "Repeated messages answered with their original receipt.")
    duplicate.add(counts[DUPLICATE])
    rejected = _Family("swhub_messages_rejected_total", "counter", "Messages answered with a NACK, by error code.")
    for code in Code:
        rejected.add(counts[code.value], code=code.value, name=code.name)

    outbox = _Family("swhub_outbox_rows", "gauge", "Outbox rows by destination and state.")
    store_up = _Family("swhub_store_up", "gauge", "0 when the store could not be asked for the outbox counts.")
    try:
        for (destination, state), n in sorted(runtime.store.counts().items(), key=lambda kv: (kv[0][0], kv[0][1].value)):
            outbox.add(n, destination=destination, state=state.value)
        store_up.add(1)
    except Exception as exc:  # noqa: BLE001 (TryAgain, StoreError, a driver error: the scrape still reports the rest)
        log.warning("metrics: the store cannot count the outbox: %s", exc)
        store_up.add(0)

    reload_ok = _Family("swhub_config_last_reload_successful", "gauge", "0 when the last reload (SIGHUP) was refused; the previous keys and trust stay.")
    reload_ok.add(1 if runtime.reload_ok else 0)
    loaded = _Family("swhub_config_last_reload_success_timestamp_seconds", "gauge", "When keys and trust were last loaded (start-up or reload), Unix time.")
    loaded.add(round(runtime.loaded_at, 3))

    families = (expiry, expiring, crl_next, crl_usable, accepted, duplicate, rejected, outbox, store_up, reload_ok, loaded)
    return "\n".join(line for family in families for line in family.lines()) + "\n"


def scraper_allowed(host: str | None, allowed: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    """Whether the client address ``host`` lies in one of the networks ``allowed`` (an IPv4 client
    seen on a dual-stack socket, ``::ffff:10.0.0.5``, counts as ``10.0.0.5``)."""
    try:
        address = ipaddress.ip_address((host or "").split("%", 1)[0])
    except ValueError:
        return False
    candidates = [address]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        candidates.append(address.ipv4_mapped)
    return any(a.version == n.version and a in n for a in candidates for n in allowed)


def metrics_route(runtime: Runtime) -> Any:
    """``GET /metrics`` for ``runtime`` (``Runtime.listener_routes``)."""
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    allowed = runtime.config.hub.metrics_from  # set at start-up: a change needs a restart

    async def metrics(request: Request) -> Response:
        if not allowed:
            return Response("Not Found", status_code=404, media_type="text/plain")
        host = request.client.host if request.client else None
        if not scraper_allowed(host, allowed):
            return Response(f"forbidden: GET /metrics is not served to {host or 'an unknown address'} "
                            "(hub.toml: [hub] metrics_from)\n", status_code=403, media_type="text/plain")
        text = await run_in_threadpool(render, runtime)
        return Response(text, media_type=CONTENT_TYPE)

    return Route("/metrics", metrics, methods=["GET"])
