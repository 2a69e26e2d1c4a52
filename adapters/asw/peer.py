"""A member gateway as configured in ``hub.toml``: an agency with ``adapter = "asw"``.

    [[agencies]]
    id = "TH-NSW"                       # = the partner hub's own party id (its envelopes' From)
    country = "TH"
    adapter = "asw"
    endpoint = "https://gateway.example.th/as4"
    certificates = ["keys/partners/TH-NSW.crt"]   # verifies its messages and receipts
    options = { party_type = "urn:oasis:names:tc:ebcore:partyid-type:unregistered:asw",
                service = "urn:sw-hub:asw:service:e-atiga", timeout = 30, receipts = "var/receipts/TH-NSW" }

The agency id is the AS4 PartyId of the partner, and must be the partner hub's own party id: it
is the From of the envelopes the partner sends and the To of what it receives.

Options (all optional): ``party_type`` (the PartyId's type attribute, shared by both ends),
``service``, ``service_type``, ``agreement`` (eb:AgreementRef), ``actions`` (payload root local
name -> eb:Action; defaults FormD -> FORMD, FormDStatus -> FORMD-STATUS, otherwise the envelope's
document type), ``timeout`` (seconds), ``receipts`` (a folder where each signed receipt received
from this partner is kept as non-repudiation evidence). Unknown options are configuration errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from cryptography import x509

from adapters.base import seconds
from hub.config import Agency
from hub.errors import ConfigError
from hub.trust import load_certificates

DEFAULT_PARTY_TYPE = "urn:oasis:names:tc:ebcore:partyid-type:unregistered:asw"
DEFAULT_SERVICE = "urn:sw-hub:asw:service:e-atiga"
DEFAULT_AGREEMENT = "urn:sw-hub:asw:agreement:e-form-d:1"
DEFAULT_ACTIONS: Mapping[str, str] = MappingProxyType({"FormD": "FORMD", "FormDStatus": "FORMD-STATUS"})
OPTIONS = ("party_type", "service", "service_type", "agreement", "actions", "timeout", "receipts")


@dataclass(frozen=True)
class Peer:
    agency: str
    endpoint: str
    party_id: str
    party_type: str
    service: str
    service_type: str | None
    agreement: str | None
    timeout: float
    certificates: tuple[x509.Certificate, ...]
    receipts: Path | None = None
    actions: Mapping[str, str] = field(default_factory=lambda: DEFAULT_ACTIONS)

    @property
    def who(self) -> str:
        return f"member gateway {self.agency}"


def _str(options: Mapping[str, Any], key: str, default: str | None, file: str, prefix: str) -> str | None:
    value = options.get(key, default)
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ConfigError(file, f"{prefix}.{key}", f"must be a non-empty string, not {value!r}")
    return value


def load_peer(agency: Agency, base: Path, default_timeout: float, file: str = "hub.toml") -> Peer:
    prefix = f"agencies[{agency.id}].options"
    options = dict(agency.options)  # its keys checked against OPTIONS when the adapter is made (adapters.check_options)
    actions = options.get("actions", {})
    if not isinstance(actions, dict) or not all(isinstance(k, str) and isinstance(v, str) and v for k, v in actions.items()):
        raise ConfigError(file, f"{prefix}.actions", "must be a table of payload root name = action")
    timeout = seconds(options, default_timeout, file, f"{prefix}.timeout")
    receipts = _str(options, "receipts", None, file, prefix)
    certificates: list[x509.Certificate] = []
    for path in agency.certificates:
        certificates.extend(load_certificates(path, f"agencies[{agency.id}].certificates"))
    return Peer(
        agency=agency.id,
        endpoint=agency.endpoint,
        party_id=agency.id,
        party_type=_str(options, "party_type", DEFAULT_PARTY_TYPE, file, prefix) or DEFAULT_PARTY_TYPE,
        service=_str(options, "service", DEFAULT_SERVICE, file, prefix) or DEFAULT_SERVICE,
        service_type=_str(options, "service_type", None, file, prefix),
        agreement=_str(options, "agreement", DEFAULT_AGREEMENT, file, prefix),
        timeout=float(timeout),
        certificates=tuple(certificates),
        receipts=(Path(receipts) if Path(receipts).is_absolute() else base / receipts) if receipts else None,
        actions=MappingProxyType({**DEFAULT_ACTIONS, **actions}),
    )
