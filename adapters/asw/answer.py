"""What the partner's synchronous answer to a user message means for the outbox.

    a signed eb:Receipt, by the partner's certificate, referencing our MessageId and echoing the
      digests of what we signed                                 -> DELIVERED
    a signed eb:Error with severity "failure", by the partner's certificate, about our MessageId
                                                                -> FAILED, with the partner's text
    no receipt, a receipt that does not check out, an eb:Error that is unsigned, does not check
      out or is about another message, HTTP 408/425/429/5xx,
      a time-out or a refused connection (decided by the caller)-> RETRY (same MessageId)
    any other HTTP 4xx without an eb:Error                      -> FAILED

The HTTP status is judged as for any HTTP partner (``adapters.base.retryable_status``) with two
differences that AS4 makes: the partner's signals come first (an eb:Error fails the message
whatever status it came with), and a 2xx is no delivery without the receipt.

An answer ends a delivery only when the partner signed it: anything between the hub and the
gateway could answer with an unsigned eb:Error, or replay a signed one about another message, and
so dead-letter a certificate of origin. Such an error is sent again (its text in the attempt's
log), and the retry policy dead-letters it with that text if the partner keeps answering so.
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from adapters.base import Outcome, Result, retryable_status
from hub.errors import Rejected
from hub.files import write_durably
from hub.trust import CertificatePolicy
from hub.xml import XmlParser

from . import header, wss
from .errors import EbmsError
from .peer import Peer


@dataclass(frozen=True)
class Sent:
    message_id: str  # our eb:MessageId
    digests: frozenset[tuple[str, str]]  # (reference URI, digest value) of our signature


def _digests(references: tuple[etree._Element, ...] | list[etree._Element]) -> frozenset[tuple[str, str]]:
    ds = header.DS
    return frozenset((r.get("URI", ""), "".join((r.findtext(f"{{{ds}}}DigestValue") or "").split())) for r in references)


def sent(message_id: str, references: tuple[etree._Element, ...]) -> Sent:
    return Sent(message_id, _digests(references))


def _signals(root: etree._Element | None) -> tuple[header.Signal, ...] | None:
    if root is None:
        return None
    try:
        return header.read(root).signals
    except EbmsError:
        return None


def judge(status: int, body: bytes, what: Sent, peer: Peer, policy: CertificatePolicy, parser: XmlParser) -> Result:
    root = None
    if body.lstrip()[:1] == b"<":
        try:
            root = parser.parse(body)
        except Rejected:
            root = None
    signals = _signals(root)
    if root is not None and signals:
        failures = [e for s in signals for e in s.errors if e.failure]
        if failures:
            return _failure(root, failures, what, peer, policy)
        if any(s.receipt is not None for s in signals) and 200 <= status < 300:
            return _receipt(root, body, what, peer, policy)
    text = body[:300].decode("utf-8", "replace").strip()
    if retryable_status(status):
        return Result(Outcome.RETRY, f"HTTP {status} from {peer.endpoint}: {text}")
    if 200 <= status < 300:  # AS4: only a receipt that checks out delivers (above)
        return Result(Outcome.RETRY, f"HTTP {status} but no AS4 receipt for {what.message_id}")
    return Result(Outcome.FAILED, f"HTTP {status} from {peer.endpoint}: {text}")


def _failure(root: etree._Element, failures: list[header.SignalError], what: Sent, peer: Peer, policy: CertificatePolicy) -> Result:
    said = "; ".join(e.text() for e in failures)
    if not wss.is_signed(root):
        return Result(Outcome.RETRY, f"an unsigned AS4 error came back from {peer.agency} ({said}); only a signed one ends the delivery: sending again")
    try:
        verified = wss.verify(root, policy, peer.who)
        signals = header.read_messaging(verified.messaging).signals
    except EbmsError as exc:
        return Result(Outcome.RETRY, f"an AS4 error came back whose signature does not check out ({exc}): {said}; sending again")
    ours = [e for s in signals for e in s.errors if e.failure and what.message_id in (s.ref_to_message_id, e.ref_to_message_in_error)]
    if not ours:
        named = {n for s in signals for n in (s.ref_to_message_id, *(e.ref_to_message_in_error for e in s.errors)) if n}
        about = f"about {', '.join(sorted(named))}, not {what.message_id}" if named else f"naming no message (not {what.message_id})"
        return Result(Outcome.RETRY, f"a signed AS4 error came back {about} ({said}); sending again")
    return Result(Outcome.FAILED, f"AS4 error from {peer.agency}: " + "; ".join(e.text() for e in ours))


def _receipt(root: etree._Element, body: bytes, what: Sent, peer: Peer, policy: CertificatePolicy) -> Result:
    try:
        verified = wss.verify(root, policy, peer.who)
        signal = next(s for s in header.read_messaging(verified.messaging).signals if s.receipt is not None)
    except (EbmsError, StopIteration) as exc:
        return Result(Outcome.RETRY, f"the receipt does not check out: {exc}")
    if signal.ref_to_message_id != what.message_id:
        return Result(Outcome.RETRY, f"the receipt refers to {signal.ref_to_message_id!r}, not to {what.message_id!r}")
    echoed = frozenset((r.uri, r.digest_value) for r in signal.receipt or ())
    if not what.digests <= echoed:
        return Result(Outcome.RETRY, "the receipt's non-repudiation information does not match the digests of what was sent")
    kept = ""
    if peer.receipts is not None:
        name = f"{what.message_id}.receipt.xml".replace("/", "_")
        kept = f", kept in {write_durably(peer.receipts / name, body)}"
    return Result(Outcome.DELIVERED, f"AS4 receipt {signal.message_id} for {what.message_id}, signed by {verified.subject}{kept}")
