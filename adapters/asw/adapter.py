"""``asw``: a member gateway of the ASEAN Single Window, reached over AS4 (see the package docstring)."""

from __future__ import annotations

from typing import Any, Sequence

from starlette.routing import Route

from adapters.base import Adapter, AdapterSettings, Delivery, Result, Run, Submit
from hub.config import Agency
from hub.errors import ConfigError
from hub.trust import CertificatePolicy, Pinned
from hub.xml import XmlParser

from .answer import Sent, judge
from .inbound import Inbound
from .outbound import Outbound
from .peer import OPTIONS, load_peer

PATH = "/as4"


class AswAdapter(Adapter):
    alias = "asw"
    reissues = True
    option_names = frozenset(OPTIONS)

    def __init__(self, agency: Agency, settings: AdapterSettings) -> None:
        super().__init__(agency, settings)
        if settings.signer is None or settings.party is None:
            raise ConfigError(settings.config_file, f"agencies[{agency.id}].adapter", "the asw adapter needs the hub's key and party id")
        self.peer = load_peer(agency, settings.base, settings.timeout, settings.config_file)
        # who may sign for this gateway: the trust store's entry (pins, CA chains, CRLs), else the pins
        self.policy: CertificatePolicy = settings.trust.policy(agency.id) if settings.trust else Pinned(self.peer.certificates)
        self._outbound = Outbound(self.peer, self.policy, settings.party, settings.signer, XmlParser(settings.limits))

    def deliver(self, delivery: Delivery) -> Result:
        return self._outbound.deliver(delivery)

    def message(self, delivery: Delivery) -> tuple[bytes, Sent]:
        """The signed AS4 user message ``deliver`` sends for this row, and what its receipt must echo."""
        return self._outbound.message(delivery)

    def judge(self, status: int, body: bytes, sent: Sent) -> Result:
        """What the partner's answer (HTTP status and body) to that message means for the outbox."""
        return judge(status, body, sent, self.peer, self.policy, self._outbound.parser)

    @classmethod
    def listener_routes(cls, adapters: Sequence[Adapter], submit: Submit, run: Run) -> list[Any]:
        gateways = [a for a in adapters if isinstance(a, AswAdapter)]
        if not gateways:
            return []
        return [Route(PATH, Inbound(gateways, submit, run).endpoint, methods=["POST"])]

    def check(self) -> list[str]:
        problems = []
        if not self.agency.endpoint.startswith(("http://", "https://")):
            problems.append(f"endpoint: {self.agency.endpoint!r} is not an http(s) URL of the gateway's AS4 endpoint")
        if not (self.peer.certificates or self.agency.trust_anchors):
            problems.append("certificates: a member gateway needs a certificate (or a CA) to verify its messages and receipts")
        # the certificates' dates are not checked here: `hub check` reports them for every
        # agency's certificates (Runtime.problems), an expired one as a fault
        return problems

    def close(self) -> None:
        self._outbound.close()
