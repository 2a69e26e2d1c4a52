"""The composition root: everything built once from a ``Config`` and injected where it is used.

``Runtime.reload`` (``hub serve`` on SIGHUP) reads the configuration again and swaps in its keys
and trust only: the hub's key and certificates and every agency's certificates, CAs, subject and
CRLs (``RELOADED_HUB``, ``RELOADED_AGENCY``, ``[trust]``). Everything else (listen address, store,
limits, schemas, mappings, routes, adapters, agencies added or removed) is compiled into objects
that hold connections, threads or work in progress, and needs a restart; a reload names what it
left out.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any

from adapters import Adapter, AdapterSettings, adapter_class, create_adapter, listener_routes
from cryptography import x509

from .catalogue import SchemaCatalogue, load_mappings
from .config import Config, HubSettings, load_config
from .dispatcher import Dispatcher
from .errors import ConfigError, HubError
from .events import StatusEvents
from .httpio import Gate
from .pipeline import Pipeline
from .store import State, Store, open_store
from .keys import KEY_ROLES, CurrentSigner, KeyEntry, crl_entries, inventory, not_valid_to_sign, published_route, warn_expiring
from .metrics import Counters, metrics_route
from .trust import Signer, Verifier, in_date, load_certificates, subject_of
from .truststore import TrustJobs, TrustStore
from .xml import Schema, XmlParser

log = logging.getLogger("hub.runtime")

# the certificates whose dates `hub check` judges itself (an expired one is a fault, not a warning)
DATED = ("signing certificate", "next certificate", "pinned certificate")
# what a reload takes from the new hub.toml: the hub's keys, and each agency's trust
RELOADED_HUB = ("key", "certificate", "next_key", "next_certificate", "previous_certificate")
RELOADED_AGENCY = ("certificates", "trust_anchors", "intermediates", "crl", "subject", "signing_key")


def hub_signer(config: Config) -> Signer:
    """The hub's current key and certificate (+ chain); the next ones are loaded and checked too."""
    h = config.hub
    upcoming = None
    if h.next_key is not None and h.next_certificate is not None:
        upcoming = Signer.from_files(h.next_key, h.next_certificate, "hub.next_key", "hub.next_certificate").certificate
    return Signer.from_files(h.key, h.certificate, "hub.key", "hub.certificate", upcoming)


def previous_certificate(config: Config, current: x509.Certificate) -> x509.Certificate | None:
    """The hub's certificate before its last rotation (the first in ``[hub] previous_certificate``),
    published until it expires. Naming the current certificate there is refused: the rotation was
    not made, or the wrong file is named, and GET /keys would not publish the old certificate."""
    path = config.hub.previous_certificate
    if path is None:
        return None
    previous = load_certificates(path, "hub.previous_certificate")[0]  # a file with none is not readable PEM
    if previous == current:
        raise ConfigError(str(path), "hub.previous_certificate",
                          f"it is the current certificate ({subject_of(current)}, serial {current.serial_number:x}, as hub.certificate): "
                          "name the certificate the hub signed with before the rotation, or remove previous_certificate")
    return previous


def with_keys_and_trust(running: Config, new: Config) -> Config:
    """``running`` with the keys and trust of ``new``: the configuration a reload applies. An agency
    that ``new`` no longer names keeps its trust (removing it needs a restart)."""
    agencies = {}
    for agency_id, agency in running.agencies.items():
        fresh = new.agencies.get(agency_id)
        agencies[agency_id] = agency if fresh is None else replace(agency, **{f: getattr(fresh, f) for f in RELOADED_AGENCY})
    return replace(
        running,
        hub=replace(running.hub, **{f: getattr(new.hub, f) for f in RELOADED_HUB}),
        agencies=MappingProxyType(agencies),
        trust=new.trust,
    )


def needs_restart(applied: Config, new: Config) -> list[str]:
    """The keys of ``new`` that differ from the configuration a reload applied."""
    out = [f"hub.{f.name}" for f in fields(HubSettings) if getattr(applied.hub, f.name) != getattr(new.hub, f.name)]
    out += [f"[{name}]" for name in ("dispatcher", "retry", "retention", "schemas", "mappings") if getattr(applied, name) != getattr(new, name)]
    for agency_id in applied.agencies.keys() | new.agencies.keys():
        was, now = applied.agencies.get(agency_id), new.agencies.get(agency_id)
        if was is None or now is None:
            out.append(f"agencies[{agency_id}] ({'added' if was is None else 'removed'})")
        elif was != now:
            out += [f"agencies[{agency_id}].{f.name}" for f in fields(was) if getattr(was, f.name) != getattr(now, f.name)]
    if applied.routes != new.routes:
        out.append("[[routes]]")
    return sorted(out)


@dataclass
class Runtime:
    config: Config
    pipeline: Pipeline
    store: Store
    signer: CurrentSigner  # the hub's key and certificates; a reload swaps what it holds
    schemas: SchemaCatalogue
    adapters: dict[str, Adapter] = field(default_factory=dict)
    trust: TrustStore | None = None
    keys: list[KeyEntry] = field(default_factory=list)  # read at start-up and on reload: expiry warnings, metrics
    jobs: TrustJobs | None = None
    loaded_at: float = field(default_factory=time.time)  # when keys and trust were last loaded
    reload_ok: bool = True  # False after a reload that was refused (the previous keys and trust stay)
    # held by reload, start_jobs and close: one TrustJobs at a time, none after close (reentrant:
    # a reload starts the jobs again)
    _reload_lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _closed: bool = False

    @functools.cached_property
    def gate(self) -> Gate:
        """What the HTTP listener and the adapters' endpoints parse and submit through: at most
        ``[hub] pipeline_threads`` requests at once (``hub.httpio.Gate``)."""
        return Gate(self.pipeline.settings.pipeline_threads)

    @classmethod
    def load(cls, path: str | Path, store: Store | None = None, *, wait_for_store: bool = True, counters: Counters | None = None) -> Runtime:
        return cls.build(load_config(path), store, wait_for_store=wait_for_store, counters=counters)

    @classmethod
    def build(cls, config: Config, store: Store | None = None, *, wait_for_store: bool = True, counters: Counters | None = None) -> Runtime:
        """``wait_for_store=False`` (``hub serve``): start even if the store's server is down; the
        store answers "try again" until it connects (``open_store(wait=False)``)."""
        file = str(config.path)
        h = config.hub
        current = hub_signer(config)
        signer = CurrentSigner(current, previous_certificate(config, current.certificate))
        trust = TrustStore.from_config(config)
        schemas = SchemaCatalogue.from_config(config)
        mappings = load_mappings(config, schemas)
        events = StatusEvents.from_agencies(h.party_id, config.agencies.values(), file)
        reissuing = set()
        for agency in config.agencies.values():
            kind = adapter_class(agency.adapter, file, f"agencies[{agency.id}].adapter")
            if kind.reissues:
                reissuing.add(agency.id)
            if events and agency.id in events.subscribers and not kind.carries_events:
                raise ConfigError(file, f"agencies[{agency.id}].options.events", f"the {agency.adapter!r} adapter cannot carry status events; use webhook or mqtt")
        store = store or open_store(h.store, config.base, wait=wait_for_store)
        pipeline = Pipeline(
            settings=h,
            parser=XmlParser(h.limits),
            envelope_schema=Schema("envelope", h.envelope_schema, "hub.envelope_schema"),
            schemas=schemas,
            mappings=mappings,
            agencies=config.agencies,
            routes=config.routes,
            trust=trust,
            signer=signer,
            verifier=Verifier(),
            store=store,
            events=events,
            counters=counters,
            reissuing=frozenset(reissuing),
        )
        # no expiry warning logged here: `hub check` states each itself, and `hub serve` logs them
        # at start-up through its daily job (``start_jobs``), which runs at once
        return cls(config, pipeline, store, signer, schemas, trust=trust, keys=inventory(config))

    def reload(self) -> bool:
        """Reads hub.toml again and swaps in its keys and trust (``hub serve`` on SIGHUP).

        Everything is loaded and checked before anything is swapped: on any fault (a config
        error, an unreadable key, a key that does not match its certificate, a new signing
        certificate that has expired or is not valid yet) the hub goes on with
        what it holds and logs why. Messages under way finish with the key and trust they started
        with; the next ones use the new ones. Outbox rows already signed stay as they are.
        Returns True when the new keys and trust are in use.
        """
        with self._reload_lock:
            if self._closed:
                return False
            file = self.config.path
            try:
                new = load_config(file)
                applied = with_keys_and_trust(self.config, new)
                signer = hub_signer(applied)
                out_of_date = not_valid_to_sign(signer.certificate)
                if out_of_date is not None and signer.certificate != self.signer.certificate:
                    # every receipt it signed would be refused; the one in use (even if itself out of
                    # date: GET /health says so) does not keep the trust from being reloaded
                    raise ConfigError(str(applied.hub.certificate), "hub.certificate", f"{out_of_date}; renew it, then reload again")
                previous = previous_certificate(applied, signer.certificate)
                trust = TrustStore.from_config(applied)
                keys = inventory(applied)
            except Exception as exc:  # noqa: BLE001 (ConfigError names file, key and reason; OSError: e.g. a key it may not read)
                self.reload_ok = False
                reason = "; ".join(map(str, exc.faults)) if isinstance(exc, ConfigError) else f"{file}: {type(exc).__name__}: {exc}"
                log.error("reload refused, still serving with the keys and trust loaded before: %s", reason)
                return False
            if self.trust is not None:
                self.trust.adopt(trust)  # in place: the pipeline and the adapters hold this store
            else:
                self.trust = trust
            self.signer.swap(signer, previous)
            self.config, self.keys = applied, keys
            self.loaded_at, self.reload_ok = time.time(), True
            cert = signer.certificate
            upcoming = f", next certificate {subject_of(signer.next_certificate)}" if signer.next_certificate is not None else ""
            if previous is not None:
                upcoming += f", previous certificate serial {previous.serial_number:x} (published until {previous.not_valid_after_utc:%Y-%m-%d})"
            log.info("reloaded keys and trust from %s: the hub signs as %s (serial %x)%s; trust for %s agencies",
                     file, subject_of(cert), cert.serial_number, upcoming, len(applied.agencies))
            left = needs_restart(applied, new)
            if left:
                log.warning("reload: these changes in %s need a restart and were not applied: %s", file, ", ".join(left))
            if self.jobs is not None:
                # the CRL locations or their refresh interval may have changed; starting again also
                # runs the expiry warning at once, for the certificates just loaded
                self.jobs.stop()
                self.jobs = None
                self.start_jobs()
            else:
                self.warn_expiring()
            return True

    def key_entries(self, now: datetime | None = None) -> list[KeyEntry]:
        """Every key and certificate as last loaded, and every CRL as the trust store holds it now."""
        return self.keys + (crl_entries(self.trust, now) if self.trust else [])

    def warn_expiring(self) -> list[str]:
        """Logs every certificate or CRL expired, stale or within ``trust.expiry_warning_days``."""
        return warn_expiring(self.key_entries(), self.config.trust.expiry_warning_days)

    def start_jobs(self) -> None:
        """Starts the scheduled CRL refresh and the daily expiry warning (``hub serve``), once."""
        with self._reload_lock:  # a reload (SIGHUP) at the same moment must not start a second TrustJobs
            if self.jobs is None and self.trust is not None and not self._closed:
                self.jobs = TrustJobs(self.trust, self.config.trust.crl_refresh_seconds, self.warn_expiring)
                self.jobs.start()

    def create_adapters(self) -> dict[str, Adapter]:
        if not self.adapters:
            settings = AdapterSettings(
                timeout=self.config.dispatcher.delivery_timeout,
                base=self.config.base,
                party=self.pipeline.party,
                signer=self.signer,
                limits=self.config.hub.limits,
                trust=self.trust,
                config_file=str(self.config.path),
                nack=self.pipeline.nack,
            )
            self.adapters = {a.id: create_adapter(a, settings) for a in self.config.agencies.values()}
        return self.adapters

    def listener_routes(self) -> list[Any]:
        """Routes the configured adapters add to the HTTP listener (e.g. ``POST /as4``), parsing
        and submitting through ``gate`` as the listener's own (``create_app(..., gate=...)``)."""
        return [*listener_routes(self.create_adapters(), self.pipeline.submit, self.gate.run), published_route(self.signer), metrics_route(self)]

    def dispatcher(self, owner: str | None = None) -> Dispatcher:
        dispatcher = Dispatcher(
            self.store,
            self.create_adapters(),
            {r.name: r.retry for r in self.config.routes},
            self.config.dispatcher,
            owner=owner,
            events=self.pipeline.events,
            default_policy=self.config.retry,
        )
        self.pipeline.on_accept = dispatcher.wake
        self.pipeline.handoff = dispatcher  # once started, it takes fresh rows already leased
        return dispatcher

    def problems(self, warn_days: int | None = None) -> list[str]:
        """What ``hub check`` reports beyond load errors: dates, CRLs, adapter settings, reachability."""
        warn_days = self.config.trust.expiry_warning_days if warn_days is None else warn_days
        out = []
        now = datetime.now(timezone.utc)
        file = str(self.config.path)
        certs: list[tuple[str, Path | None, list[x509.Certificate]]] = [("hub.certificate", self.config.hub.certificate, [self.signer.certificate])]
        if self.signer.next_certificate is not None:
            certs.append(("hub.next_certificate", self.config.hub.next_certificate, [self.signer.next_certificate]))
        for agency in self.config.agencies.values():
            for file_path in agency.certificates:
                certs.append((f"agencies[{agency.id}].certificates", file_path, load_certificates(file_path)))
        for key, path, loaded in certs:
            for cert in loaded:
                if not in_date(cert, now):
                    out.append(f"{path}: {key}: certificate {subject_of(cert)} is not valid now "
                               f"(valid {cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d})")
                elif cert.not_valid_after_utc - now < timedelta(days=warn_days):
                    out.append(f"{path}: {key}: warning: certificate {subject_of(cert)} expires on {cert.not_valid_after_utc:%Y-%m-%d}")
        refused = self.trust.problems(now) if self.trust is not None else []
        out.extend(f"{file}: agencies[{agency_id}].crl: {reason}" for agency_id, reason in refused)
        # what else `hub keys` and the daily log warn about (private keys, chains, CAs, the previous
        # certificate, a CRL within its grace), each once: not what the loop above dated or the CRLs just refused
        said = {reason for _, reason in refused}
        for entry in self.key_entries(now):
            if (entry.role in DATED and not entry.note) or entry.problem in said or entry.status(now, warn_days) == "ok":
                continue
            what = "" if entry.role in KEY_ROLES or entry.role == "CRL" else f"{entry.role} {entry.subject}: "
            out.append(f"{entry.location}: {entry.setting}: warning: {what}{entry.concern(now)}")
        for agency in self.config.agencies.values():
            if agency.trust_anchors and not agency.crl:
                out.append(f"{file}: agencies[{agency.id}].crl: warning: certificates chain to a CA but no CRL is named; revocation is not checked")
        for agency_id, adapter in self.create_adapters().items():
            out.extend(f"{file}: agencies[{agency_id}].{p}" for p in adapter.check())
        out.extend(f"{file}: agencies: warning: {line}" for line in self.stranded())
        d = self.config.dispatcher
        if d.lease_seconds <= d.delivery_timeout:
            out.append(f"{file}: dispatcher.lease_seconds: warning: {d.lease_seconds:g} s is not longer than delivery_timeout "
                       f"({d.delivery_timeout:g} s): a delivery still waiting for its partner when its lease ends may be "
                       "taken over and delivered again by another node")
        senders = {r.sender for r in self.config.routes}
        for agency in self.config.agencies.values():
            if agency.id in senders and not (agency.certificates or agency.trust_anchors) and self.config.hub.require_signature:
                out.append(f"{file}: agencies[{agency.id}].certificates: the agency sends on a route but has no certificate or CA to verify it")
        return out

    def stranded(self) -> list[str]:
        """Outbox rows still to deliver to a destination the configuration no longer names (an
        agency removed or renamed): no dispatcher leases them, so they would wait unseen."""
        try:
            counts = self.store.counts()
        except HubError:  # the store is down: nothing to say about its rows now
            return []
        waiting: dict[str, int] = {}
        for (destination, state), n in counts.items():
            if state in (State.PENDING, State.LEASED) and destination not in self.config.agencies:
                waiting[destination] = waiting.get(destination, 0) + n
        return [f"{n} outbox row(s) to {destination!r} wait for delivery, but {destination!r} is no longer an agency "
                f"in the configuration: they are delivered once it is configured again (`hub outbox list --destination {destination}` shows them)"
                for destination, n in sorted(waiting.items())]

    def close(self) -> None:
        with self._reload_lock:  # waits for a reload under way, which must not start the jobs again
            self._closed = True
        if self.jobs is not None:
            self.jobs.stop()
            self.jobs = None
        for adapter in self.adapters.values():
            adapter.close()
        self.store.close()


def check(path: str | Path) -> tuple[list[str], list[str]]:
    """Loads everything the configuration names: (errors, warnings), both empty when all is fine."""
    try:
        runtime = Runtime.load(path)
    except ConfigError as exc:  # every fault of hub.toml, one line each
        return [str(fault) for fault in exc.faults], []
    except HubError as exc:  # the store cannot be opened (StoreError) or not now (TryAgain): a fault like the others
        return [f"{path}: hub.store: {exc}"], []
    try:
        found = runtime.problems()
    except ConfigError as exc:  # an adapter's own settings (they are read when the adapters are made)
        return [str(fault) for fault in exc.faults], []
    finally:
        runtime.close()
    return [p for p in found if ": warning: " not in p], [p for p in found if ": warning: " in p]
