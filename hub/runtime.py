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
from .trust import Signer, Verifier, in_date, load_certificates, load_private_key, subject_of
from .xml import Schema, XmlParser


@dataclass
class Runtime:
    config: Config
    pipeline: Pipeline
    store: Store
    signer: Signer
    schemas: SchemaCatalogue
    adapters: dict[str, Adapter] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path, store: Store | None = None) -> Runtime:
        return cls.build(load_config(path), store)

    @classmethod
    def build(cls, config: Config, store: Store | None = None) -> Runtime:
        file = str(config.path)
        h = config.hub
        signer = Signer(load_private_key(h.key, "hub.key"), load_certificates(h.certificate, "hub.certificate")[0])
        schemas = SchemaCatalogue.from_config(config)
        mappings = load_mappings(config, schemas)
        certificates = {}
        events = StatusEvents.from_agencies(h.party_id, config.agencies.values(), file)
        for agency in config.agencies.values():
            kind = adapter_class(agency.adapter, file, f"agencies[{agency.id}].adapter")
            if events and agency.id in events.subscribers and not kind.carries_events:
                raise ConfigError(file, f"agencies[{agency.id}].options.events", f"the {agency.adapter!r} adapter cannot carry status events; use webhook or mqtt")
            certs = []
            for path in agency.certificates:
                certs.extend(load_certificates(path, f"agencies[{agency.id}].certificates"))
            certificates[agency.id] = tuple(certs)
        store = store or open_store(h.store, config.base)
        pipeline = Pipeline(
            settings=h,
            parser=XmlParser(h.limits),
            envelope_schema=Schema("envelope", h.envelope_schema, "hub.envelope_schema"),
            schemas=schemas,
            mappings=mappings,
            agencies=config.agencies,
            routes=config.routes,
            trust=Trust(certificates),
            signer=signer,
            verifier=Verifier(),
            store=store,
            events=events,
        )
        return cls(config, pipeline, store, signer, schemas)

    def create_adapters(self) -> dict[str, Adapter]:
        if not self.adapters:
            settings = AdapterSettings(
                timeout=self.config.dispatcher.delivery_timeout,
                base=self.config.base,
                party=self.pipeline.party,
                signer=self.signer,
                limits=self.config.hub.limits,
            )
            self.adapters = {a.id: create_adapter(a, settings, str(self.config.path)) for a in self.config.agencies.values()}
        return self.adapters

    def listener_routes(self) -> list[Any]:
        """Routes the configured adapters add to the HTTP listener (e.g. ``POST /as4``)."""
        return listener_routes(self.create_adapters(), self.pipeline.submit)

    def dispatcher(self, owner: str | None = None) -> Dispatcher:
        dispatcher = Dispatcher(
            self.store,
            self.create_adapters(),
            {r.name: r.retry for r in self.config.routes},
            self.config.dispatcher,
            owner=owner,
            events=self.pipeline.events,
        )
        self.pipeline.on_accept = dispatcher.wake
        return dispatcher

    def problems(self, warn_days: int = 30) -> list[str]:
        """What ``hub check`` reports beyond load errors: dates, adapter settings, reachability."""
        out = []
        now = datetime.now(timezone.utc)
        file = str(self.config.path)
        certs = [("hub.certificate", self.config.hub.certificate, [self.signer.certificate])]
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
        for agency_id, adapter in self.create_adapters().items():
            out.extend(f"{file}: agencies[{agency_id}].{p}" for p in adapter.check())
        senders = {r.sender for r in self.config.routes}
        for agency in self.config.agencies.values():
            if agency.id in senders and not agency.certificates and self.config.hub.require_signature:
                out.append(f"{file}: agencies[{agency.id}].certificates: the agency sends on a route but has no certificate to verify it")
        return out

    def close(self) -> None:
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
