"""Sending one outbox row to a member gateway as a signed AS4 user message.

The outbox row holds the hub envelope the pipeline signed for this destination (From = the
national sender, e.g. VN-MOIT). Across the border the sender is this hub, so the envelope is
re-issued: same message id, From = this hub's party, documentType = the eb:Action of the payload
(FORMD, FORMD-STATUS, ...), signed again with the hub key. That envelope is the AS4 payload.

The eb:MessageId is derived from the envelope's id and both parties,
``<envelope id>.<to party>@<from party>``, so every resend of the row carries the same
MessageId and the receiver's duplicate check on it is its duplicate check on the envelope.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import httpx
from lxml import etree

from adapters.base import Delivery, Outcome, Result
from hub.envelope import Header, Party, build, content_of, now_iso, read_header
from hub.errors import Rejected
from hub.httpio import TooLarge, read_capped
from hub.keys import CurrentSigner
from hub.trust import CertificatePolicy, Signer
from hub.xml import XmlParser

from . import answer, build as as4
from .build import ROLE_INITIATOR, ROLE_RESPONDER, Collaboration
from .header import Party as EbParty
from .header import PartyId, Property
from .peer import Peer
from .wss import WssSigner

CONTENT_TYPE = "application/soap+xml; charset=utf-8"


def ebms_message_id(envelope_id: str, sender: str, recipient: str) -> str:
    return f"{envelope_id}.{recipient}@{sender}"


def reissue(payload: bytes, hub: Party, peer: Peer, signer: Signer | CurrentSigner, parser: XmlParser) -> tuple[etree._Element, Header, str]:
    """(the envelope signed in the hub's name, its header, the eb:Action)."""
    root = parser.parse(payload)
    original = read_header(root)
    content = content_of(root)
    if content is None:
        raise ValueError("the outbox row carries no document")
    root_name = etree.QName(content).localname
    action = peer.actions.get(root_name, original.subject.document_type)
    subject = replace(original.subject, document_type=action, type=root_name)
    header = replace(original, sender=hub, subject=subject)
    return signer.sign(build(header, copy.deepcopy(content))), header, action


class Outbound:
    def __init__(self, peer: Peer, policy: CertificatePolicy, hub: Party, signer: Signer | CurrentSigner, parser: XmlParser) -> None:
        self.peer, self.policy, self.hub, self.signer, self.parser = peer, policy, hub, signer, parser
        self._wss = WssSigner(signer)
        # answers uncompressed: a gzip chunk would be decompressed whole before the size bound counts it
        headers = {"Content-Type": CONTENT_TYPE, "Accept-Encoding": "identity"}
        self._client = httpx.Client(timeout=peer.timeout, headers=headers, trust_env=False)

    def message(self, delivery: Delivery) -> tuple[bytes, answer.Sent]:
        envelope, header, action = reissue(delivery.payload, self.hub, self.peer, self.signer, self.parser)
        message_id = ebms_message_id(header.message_id, self.hub.identity, self.peer.party_id)
        s = header.subject
        message = as4.user_message(
            message_id=message_id,
            timestamp=now_iso(),
            sender=EbParty((PartyId(self.hub.identity, self.peer.party_type),), ROLE_INITIATOR),
            recipient=EbParty((PartyId(self.peer.party_id, self.peer.party_type),), ROLE_RESPONDER),
            collaboration=Collaboration(
                service=self.peer.service,
                service_type=self.peer.service_type,
                action=action,
                conversation_id=s.reference or header.message_id,
                agreement=self.peer.agreement,
            ),
            payload=envelope,
            properties=(Property("originalSender", delivery.sender), Property("finalRecipient", header.recipient.identity)),
        )
        references = self._wss.sign(message)
        return etree.tostring(message, xml_declaration=True, encoding="UTF-8"), answer.sent(message_id, references)

    def deliver(self, delivery: Delivery) -> Result:
        try:
            data, sent = self.message(delivery)
        except (Rejected, ValueError, KeyError, IndexError) as exc:
            return Result(Outcome.FAILED, f"cannot build the AS4 message: {exc}")
        try:
            with self._client.stream("POST", self.peer.endpoint, content=data) as response:
                what = f"the answer of {self.peer.endpoint}"
                body = read_capped(response.iter_bytes(), self.parser.limits.max_bytes, what, self.peer.timeout)
        except httpx.TimeoutException as exc:
            return Result(Outcome.RETRY, f"time-out talking to {self.peer.endpoint} ({type(exc).__name__}); no receipt for {sent.message_id}")
        except httpx.TransportError as exc:
            return Result(Outcome.RETRY, f"cannot reach {self.peer.endpoint}: {exc}")
        except TooLarge as exc:  # no receipt the hub can read: sent again (same MessageId) until one comes
            return Result(Outcome.RETRY, f"{exc}; no receipt for {sent.message_id}")
        return answer.judge(response.status_code, body, sent, self.peer, self.policy, self.parser)

    def close(self) -> None:
        self._client.close()
