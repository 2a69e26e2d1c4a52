"""The composition root: everything built once from a ``Config`` and injected where it is used."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from adapters import Adapter, AdapterSettings, adapter_class, create_adapter, listener_routes

from .catalogue import SchemaCatalogue, load_mappings
from .config import Config, load_config
from .dispatcher import Dispatcher
from .errors import ConfigError
from .events import StatusEvents
from .pipeline import Pipeline, Trust
from .store import Store, open_store
from .keys import KeyEntry, crl_entries, inventory, published_route, warn_expiring
from .trust import Signer, Verifier, in_date, load_certificates, subject_of
from .truststore import TrustJobs, TrustStore
from .xml import Schema, XmlParser


def hub_signer(config: Config) -> Signer:
    """The hub's current key and certificate (+ chain); the next ones are loaded and checked too."""
    h = config.hub
    upcoming = None
    if h.next_key is not None and h.next_certificate is not None:
        upcoming = Signer.from_files(h.next_key, h.next_certificate, "hub.next_key", "hub.next_certificate").certificate
    return Signer.from_files(h.key, h.certificate, "hub.key", "hub.certificate", upcoming)


@dataclass
class Runtime:
    config: Config
    pipeline: Pipeline
    store: Store
    signer: Signer
    schemas: SchemaCatalogue
    adapters: dict[str, Adapter] = field(default_factory=dict)
    trust: TrustStore | None = None
    keys: list[KeyEntry] = field(default_factory=list)  # read once at start-up, for the expiry warnings
    jobs: TrustJobs | None = None

    @classmethod
    def load(cls, path: str | Path, store: Store | None = None) -> Runtime:
        return cls.build(load_config(path), store)

    @classmethod
    def build(cls, config: Config, store: Store | None = None) -> Runtime:
        file = str(config.path)
        h = config.hub
        signer = hub_signer(config)
        trust = TrustStore.from_config(config)
        schemas = SchemaCatalogue.from_config(config)
        mappings = load_mappings(config, schemas)
        events = StatusEvents.from_agencies(h.party_id, config.agencies.values(), file)
        for agency in config.agencies.values():
            kind = adapter_class(agency.adapter, file, f"agencies[{agency.id}].adapter")
            if events and agency.id in events.subscribers and not kind.carries_events:
                raise ConfigError(file, f"agencies[{agency.id}].options.events", f"the {agency.adapter!r} adapter cannot carry status events; use webhook or mqtt")
        store = store or open_store(h.store, config.base)
        pipeline = Pipeline(
            settings=h,
            parser=XmlParser(h.limits),
            envelope_schema=Schema("envelope", h.envelope_schema, "hub.envelope_schema"),
            schemas=schemas,
            mappings=mappings,
            agencies=config.agencies,
            routes=config.routes,
            trust=Trust(store=trust),
            signer=signer,
            verifier=Verifier(),
            store=store,
            events=events,
        )
        runtime = cls(config, pipeline, store, signer, schemas, trust=trust, keys=inventory(config))
        runtime.warn_expiring()
        return runtime

    def warn_expiring(self) -> list[str]:
        """Logs every certificate or CRL expired, stale or within ``trust.expiry_warning_days``."""
        entries = self.keys + (crl_entries(self.trust) if self.trust else [])
        return warn_expiring(entries, self.config.trust.expiry_warning_days)

    def start_jobs(self) -> None:
        """Starts the scheduled CRL refresh and the daily expiry warning (``hub serve``)."""
        if self.jobs is None and self.trust is not None:
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
            )
            self.adapters = {a.id: create_adapter(a, settings, str(self.config.path)) for a in self.config.agencies.values()}
        return self.adapters

    def listener_routes(self) -> list[Any]:
        """Routes the configured adapters add to the HTTP listener (e.g. ``POST /as4``)."""
        return [*listener_routes(self.create_adapters(), self.pipeline.submit), published_route(self.signer)]

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
        return dispatcher

    def problems(self, warn_days: int | None = None) -> list[str]:
        """What ``hub check`` reports beyond load errors: dates, CRLs, adapter settings, reachability."""
        warn_days = self.config.trust.expiry_warning_days if warn_days is None else warn_days
        out = []
        now = datetime.now(timezone.utc)
        file = str(self.config.path)
        certs = [("hub.certificate", self.config.hub.certificate, [self.signer.certificate])]
        if self.signer.next_certificate is not None:
            certs.append(("hub.next_certificate", self.config.hub.next_certificate, [self.signer.next_certificate]))
        for agency in self.config.agencies.values():
            for path in agency.certificates:
                certs.append((f"agencies[{agency.id}].certificates", path, load_certificates(path)))
        for key, path, loaded in certs:
            for cert in loaded:
                if not in_date(cert, now):
                    out.append(f"{path}: {key}: certificate {subject_of(cert)} is not valid now "
                               f"(valid {cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d})")
                elif cert.not_valid_after_utc - now < timedelta(days=warn_days):
                    out.append(f"{path}: {key}: warning: certificate {subject_of(cert)} expires on {cert.not_valid_after_utc:%Y-%m-%d}")
        if self.trust is not None:
            out.extend(f"{file}: agencies[{agency_id}].crl: {reason}" for agency_id, reason in self.trust.problems(now))
        for agency in self.config.agencies.values():
            if agency.trust_anchors and not agency.crl:
                out.append(f"{file}: agencies[{agency.id}].crl: warning: certificates chain to a CA but no CRL is named; revocation is not checked")
        for agency_id, adapter in self.create_adapters().items():
            out.extend(f"{file}: agencies[{agency_id}].{p}" for p in adapter.check())
        senders = {r.sender for r in self.config.routes}
        for agency in self.config.agencies.values():
            if agency.id in senders and not (agency.certificates or agency.trust_anchors) and self.config.hub.require_signature:
                out.append(f"{file}: agencies[{agency.id}].certificates: the agency sends on a route but has no certificate or CA to verify it")
        return out

    def close(self) -> None:
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
    except ConfigError as exc:
        return [str(exc)], []
    try:
        found = runtime.problems()
    finally:
        runtime.close()
    return [p for p in found if ": warning: " not in p], [p for p in found if ": warning: " in p]
