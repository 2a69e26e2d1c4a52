"""Adapters, one module per protocol, resolved from a short alias named in ``hub.toml``."""

from __future__ import annotations

import difflib
import importlib
from typing import Any, Mapping

from hub.config import Agency
from hub.errors import ConfigError

from .base import Adapter, AdapterSettings, Delivery, InboundSource, Outcome, Result, Run, Submit

# alias -> "module:class"; the one table that maps config names to code.
ADAPTERS: dict[str, str] = {
    "file": "adapters.file:FileAdapter",
    "http": "adapters.http:HttpAdapter",
    "asw": "adapters.asw:AswAdapter",
    "soap": "adapters.soap:SoapAdapter",
    "mqtt": "adapters.mqtt:MqttAdapter",
    "webhook": "adapters.webhook:WebhookAdapter",
}


def adapter_class(alias: str, file: str = "hub.toml", key: str = "adapter") -> type[Adapter]:
    target = ADAPTERS.get(alias)
    if target is None:
        hint = difflib.get_close_matches(alias, list(ADAPTERS), n=1)
        extra = f"; did you mean '{hint[0]}'?" if hint else f"; known adapters: {', '.join(sorted(ADAPTERS))}"
        raise ConfigError(file, key, f"unknown adapter {alias!r}{extra}")
    module, _, name = target.partition(":")
    cls: type[Adapter] = getattr(importlib.import_module(module), name)
    return cls


def create_adapter(agency: Agency, settings: AdapterSettings) -> Adapter:
    cls = adapter_class(agency.adapter, settings.config_file, f"agencies[{agency.id}].adapter")
    check_options(agency, cls, settings.config_file)
    return cls(agency, settings)


def check_options(agency: Agency, cls: type[Adapter], file: str = "hub.toml") -> None:
    """Refuses an option the agency's adapter does not read (with the closest one it does)."""
    known = sorted(cls.option_names | ({"events"} if cls.carries_events else set()))
    for key in agency.options:
        if key not in known:
            hint = difflib.get_close_matches(key, known, n=1)
            said = f"did you mean '{hint[0]}'?" if hint else (f"its options are {', '.join(known)}" if known else "it takes none")
            raise ConfigError(file, f"agencies[{agency.id}].options.{key}", f"unknown option of the {cls.alias} adapter; {said}")


def listener_routes(adapters: Mapping[str, Adapter], submit: Submit, run: Run) -> list[Any]:
    """The routes every kind of configured adapter adds to the hub's listener, built once per kind."""
    kinds: dict[type[Adapter], list[Adapter]] = {}
    for adapter in adapters.values():
        kinds.setdefault(type(adapter), []).append(adapter)
    return [route for cls, group in kinds.items() for route in cls.listener_routes(group, submit, run)]


__all__ = ["ADAPTERS", "Adapter", "AdapterSettings", "Delivery", "InboundSource", "Outcome", "Result", "adapter_class", "check_options", "create_adapter", "listener_routes"]
