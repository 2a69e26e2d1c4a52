"""The message path: bytes in -> receipt or NACK out, with the message durably recorded first.

    parse (size, DTD, depth) -> envelope schema -> sender authentication (signature) ->
    duplicate check -> route -> payload validation -> per-destination translation -> signing ->
    ONE store transaction (dedupe key + outbox rows + audit) -> signed receipt

Any refusal on the way raises ``Rejected`` and is answered with a signed NACK (function 00)
whose error carries a code and a sentence. ``TryAgain`` (store unavailable) passes to the
transport, which answers "try again" and never a receipt.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections import Counter
from dataclasses import replace
from datetime import datetime, timezone
from typing import Callable, Iterable, Mapping, Protocol, Sequence

from lxml import etree

from .audit import AuditEvent
from .catalogue import Mapping_, SchemaCatalogue
from .config import Agency, HubSettings, Route
from .envelope import (
    DSIG,
    FUNCTION_ERROR,
    FUNCTION_RECEIVED,
    Ack,
    Header,
    Party,
    build,
    check_is_envelope,
    content_of,
    error_content,
    now_iso,
    read_header,
    receipt_content,
    reply_header,
)
from .errors import INTERNAL_ERROR_TEXT, Code, Rejected, TryAgain
from .events import StatusEvents
from .keys import CurrentSigner
from .metrics import ACCEPTED, DUPLICATE, Counters
from .store import Acceptance, Hold, Original, OutboxItem, OutboxRow, Store
from .throttle import Tally
from .trust import Signer, Verifier
from .truststore import TrustStore
from .xml import Schema, XmlParser, canonical_digest

log = logging.getLogger("hub.pipeline")

# One INFO line per refused message (accepted ones are not logged: their volume is the store's
# business), but a sender can refuse itself at will: at most REFUSALS_LOGGED lines every
# REFUSALS_SECONDS (a flood of bad messages makes ~2 lines a second, some 35 MB a day at worst),
# the next line saying how many went unlogged; every refusal is in the audit log and the metrics.
REFUSALS_LOGGED, REFUSALS_SECONDS = 20, 10.0

# How much larger than the message a payload's canonical form (the duplicate check's digest) may be:
# a character can take 5 bytes there (a tab in an attribute is "&#x9;"), and namespace declarations
# come on top; beyond that, the form only grows by declarations repeated on element after element
CANONICAL_RATIO = 6


def party_of(agency: Agency) -> Party:
    return Party(identity=agency.id, country=agency.country, name=agency.name or None, ministry=agency.ministry)


class Handoff(Protocol):
    """The node's dispatcher as the pipeline sees it (``hub.dispatcher.Dispatcher``): it reserves
    delivery slots before the acceptance's transaction and takes the rows written leased to it."""

    def reserve(self, destinations: Iterable[str]) -> Hold | None: ...

    def hand_over(self, hold: Hold, rows: Sequence[OutboxRow]) -> None: ...


class Pipeline:
    def __init__(
        self,
        *,
        settings: HubSettings,
        parser: XmlParser,
        envelope_schema: Schema,
        schemas: SchemaCatalogue,
        mappings: Mapping[str, Mapping_],
        agencies: Mapping[str, Agency],
        routes: Sequence[Route],
        trust: TrustStore,  # who may send: each agency's pins, CA chains and CRLs
        signer: Signer | CurrentSigner,
        verifier: Verifier,
        store: Store,
        on_accept: Callable[[], None] | None = None,
        handoff: Handoff | None = None,
        clock: Callable[[], float] = time.time,
        events: StatusEvents | None = None,
        counters: Counters | None = None,
        reissuing: frozenset[str] = frozenset(),  # agencies whose adapter sends on in the hub's name
    ) -> None:
        self.settings = settings
        self.parser = parser
        self.envelope_schema = envelope_schema
        self.schemas = schemas
        self.mappings = mappings
        self.agencies = agencies
        self.routes = tuple(routes)
        self.trust = trust
        self.signer = signer
        self.verifier = verifier
        self.store = store
        self.on_accept = on_accept  # new pending rows: wake the dispatcher
        self.handoff = handoff  # the node's dispatcher, to take fresh rows already leased (``Handoff``)
        self.clock = clock
        self.events = events  # status events for subscribed agencies, recorded with the acceptance
        self.counters = counters or Counters()  # accepted, duplicates, NACKs by code: GET /metrics
        self._refusals = Tally(REFUSALS_SECONDS, REFUSALS_LOGGED)  # the log lines of NACKs, throttled
        self.party = Party(identity=settings.party_id, country=settings.country, name=settings.name or None)
        self._parties = {a.id: party_of(a) for a in agencies.values()}
        # A gateway (``reissuing``) receives every sender's messages in this hub's name, ids kept:
        # for each route to one, the routes to the same gateways, whose message ids it must not reuse
        gateways = {r.name: {d.agency for d in r.destinations} & reissuing for r in self.routes}
        self._same_gateway = {
            name: tuple(sorted(other for other, theirs in gateways.items() if theirs & ours))
            for name, ours in gateways.items() if ours
        }
        # The pipeline is CPU work under the GIL: threads beyond a few only queue for it, each hand-over
        # of the GIL costs context switches, and deliveries starve behind them (measured, one process,
        # 10 KiB: 2.5 ms of CPU a message with one thread, 3.0-3.3 with two to eight). One thread per
        # worker leaves the core idle while it waits for its commit's fsync (end to end, 4 workers:
        # 353 msg/s with one, 375-438 with two, and deliveries keep pace with two but not with four).
        self._gate = threading.BoundedSemaphore(settings.pipeline_threads)

    # -- entry point ----------------------------------------------------------------------------

    def submit(self, data: bytes, authenticated_as: str | None = None) -> Ack:
        """Takes one inbound message. Raises only ``TryAgain``; every refusal becomes a NACK, and so
        does a fault inside the hub (ERR99, logged): every channel answers it like any refusal.
        At most ``[hub] pipeline_threads`` calls run at once in one process; others wait their turn."""
        with self._gate:
            return self._submit(data, authenticated_as)

    def _submit(self, data: bytes, authenticated_as: str | None) -> Ack:
        header: Header | None = None
        try:
            root = self.parser.parse(data)
            check_is_envelope(root)
            self._validate_envelope(root)
            header = read_header(root)
            return self._accept(root, header, authenticated_as)
        except Rejected as rejected:
            return self.nack(rejected, header)
        except TryAgain:
            raise
        except Exception:  # a bug, not the sender's fault; a message already recorded gets its receipt when sent again
            log.exception("message %s: a fault inside the hub", header.message_id if header else "(no header read)")
            return self.nack(Rejected(Code.INTERNAL_ERROR, INTERNAL_ERROR_TEXT), header)

    # -- steps ----------------------------------------------------------------------------------

    def _validate_envelope(self, root: etree._Element) -> None:
        try:
            self.envelope_schema.validate(root)
        except Rejected as exc:
            raise Rejected(Code.INVALID_MESSAGE, f"the envelope is not valid: {exc.message.split(': ', 1)[-1]}", exc.location) from None

    def _check_sender(self, header: Header, authenticated_as: str | None) -> None:
        sender = header.sender.identity
        if sender not in self.agencies:
            raise Rejected(Code.UNKNOWN_SENDER, f"the sender {sender!r} is not an agency known to this hub")
        if authenticated_as is not None and authenticated_as != sender:
            raise Rejected(
                Code.SENDER_MISMATCH,
                f"the envelope says it comes from {sender!r} but the channel is authenticated as {authenticated_as!r}",
            )

    def _authenticate(self, root: etree._Element, header: Header, required: bool) -> tuple[etree._Element, Header]:
        """The signed envelope and its header, when the route requires a signature or one is present."""
        sender = header.sender.identity
        signed = root.find(f"{{{DSIG}}}Signature") is not None
        if not (required or signed):
            return root, header
        verified = self.verifier.verify(root, self.trust.policy(sender), f"agency {sender}")
        signed_header = read_header(verified.element)
        if signed_header != header:
            raise Rejected(Code.SIGNATURE_WRAPPING, "the header read is not the header that was signed")
        return verified.element, signed_header

    def _route(self, header: Header) -> Route:
        s = header.subject
        for route in self.routes:
            if route.matches(header.sender.identity, header.recipient.identity, s.document_type, s.function):
                return route
        raise Rejected(
            Code.UNKNOWN_PROCEDURE,
            f"no route for document type {s.document_type!r}, function {s.function!r} from "
            f"{header.sender.identity!r} to {header.recipient.identity!r}",
        )

    def _accept(self, received: etree._Element, header: Header, authenticated_as: str | None) -> Ack:
        """Authenticates, then takes the message (``_take``); a refusal after the sender is known
        (signature verified, or the channel's own authentication) is audited under its name."""
        self._check_sender(header, authenticated_as)
        route = self._route(header)  # from the header as received; only the signed one is used after
        required = self.settings.require_signature if route.require_signature is None else route.require_signature
        root, header = self._authenticate(received, header, required)
        try:
            return self._take(received, root, header, route)
        except Rejected as fault:
            fault.sender_authenticated = root is not received or authenticated_as == header.sender.identity
            raise

    def _take(self, received: etree._Element, root: etree._Element, header: Header, route: Route) -> Ack:
        """Checks for a duplicate, validates, translates and signs, then records the message with
        its outbox rows and receipt (``_record``)."""
        sender, message_id = header.sender.identity, header.message_id
        payload = content_of(root)
        if payload is None:
            raise Rejected(Code.INVALID_MESSAGE, "Body/Content carries no document")
        s = header.subject  # a retry carries the same document for the same recipient and purpose (not sendDate)
        digest = canonical_digest(payload, header.recipient.identity, s.document_type, s.type, s.function, s.reference, s.pre_reference,
                                  limit=CANONICAL_RATIO * self.parser.limits.max_bytes)
        original = self.store.original(sender, message_id)
        if original is not None:
            return self._duplicate(original, digest, sender, message_id)
        # (checked before the transaction: two agencies sending one id at the same moment both pass,
        # and the gateway refuses the second; it ends dead-lettered with the gateway's answer)
        routes = self._same_gateway.get(route.name)
        if routes and self.store.used_by_another(sender, message_id, routes):
            raise Rejected(
                Code.MESSAGE_ID_REUSED,
                f"the message id {message_id} was already used by another agency for this gateway, which receives every "
                "agency's messages in this hub's name: send this message with a message id of its own",
            )
        try:
            self.schemas.validate(payload, route.schema)
        except Rejected as fault:
            raise self._as_received(fault, received, payload, route.schema) from None
        key = self._key()
        items = self._translate_and_sign(payload, header, route, key)
        return self._record(header, route, items, key, digest)

    def _translate_and_sign(self, payload: etree._Element, header: Header, route: Route, key: Signer) -> list[OutboxItem]:
        """One outbox item per destination: the payload through the destination's mappings (each
        translation made once however many destinations take it), in an envelope to that agency,
        signed if the route says so."""
        translated: dict[tuple[str, ...], etree._Element] = {}
        uses = Counter(d.mappings for d in route.destinations)
        items = []
        for dest in route.destinations:
            if dest.mappings not in translated:
                document = payload
                for name in dest.mappings:
                    document = self.mappings[name].apply(document)
                translated[dest.mappings] = document
            uses[dest.mappings] -= 1
            # the last destination of a translation takes the document itself, the others a copy
            content = translated[dest.mappings] if uses[dest.mappings] == 0 else copy.deepcopy(translated[dest.mappings])
            outbound = build(replace(header, recipient=self._parties[dest.agency]), content)
            if route.sign:
                outbound = key.sign(outbound)
            items.append(OutboxItem(dest.agency, route.name, etree.tostring(outbound, xml_declaration=True, encoding="UTF-8")))
        return items

    def _record(self, header: Header, route: Route, items: list[OutboxItem], key: Signer, digest: bytes) -> Ack:
        """Builds the signed receipt and the audit entries, and records the message, its rows and
        both in one transaction (rows leased to this node's dispatcher where it has a free slot);
        the receipt is answered only once that is durable."""
        sender, message_id, s = header.sender.identity, header.message_id, header.subject
        received_at = self.clock()
        destinations = [d.agency for d in route.destinations]
        conversation = self._conversation(header)
        if self.events is not None:
            items.extend(self.events.received(message_id, sender, s.document_type, s.function, destinations, received_at, conversation))
        receipt = self._reply(
            self._parties.get(sender),
            header,
            FUNCTION_RECEIVED,
            receipt_content(message_id, now_iso(), destinations),
            key,
        )
        audit = (
            AuditEvent(message_id, sender, "received", f"{s.document_type}/{s.function} via route {route.name}"),
            *(AuditEvent(message_id, self.party.identity, "queued", d) for d in destinations),
        )
        hold = self.handoff.reserve(i.destination for i in items) if self.handoff is not None else None
        rows: tuple[OutboxRow, ...] = ()
        try:
            created, stored_receipt, rows = self.store.accept(
                Acceptance(
                    sender=sender,
                    message_id=message_id,
                    received_at=received_at,
                    document_type=s.document_type,
                    function=s.function,
                    route=route.name,
                    receipt=receipt,
                    items=tuple(items),
                    audit=audit,
                    reference=s.reference,
                    pre_reference=s.pre_reference,
                    conversation=conversation,
                    held=hold,
                    digest=digest,
                )
            )
        finally:
            if hold is not None:
                self.handoff.hand_over(hold, rows)  # type: ignore[union-attr]
        if not created:  # the same message id accepted meanwhile, through another thread or node
            found = self.store.original(sender, message_id)
            if found is None:  # never a receipt on a guess
                raise TryAgain(f"message {message_id} from {sender} is being recorded concurrently")
            return self._duplicate(found, digest, sender, message_id)
        self.counters.add(ACCEPTED)
        if self.on_accept is not None and len(rows) < len(items):  # rows left pending: wake the dispatcher
            self.on_accept()
        return Ack(stored_receipt, True, message_id)

    def _duplicate(self, original: Original, digest: bytes, sender: str, message_id: str) -> Ack:
        """A message id this sender has used before. The same document again (a retry): the
        original receipt again, nothing else written but a line in the audit log (the message's
        trace shows the sender sent it again). Another document under that id: refused, so the
        sender never holds a receipt for a document the hub did not take."""
        if original.digest is not None and original.digest != digest:
            when = datetime.fromtimestamp(original.received_at, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
            raise Rejected(
                Code.MESSAGE_ID_REUSED,
                f"the message id {message_id} was accepted from {sender} at {when} with another document (or for another "
                "recipient, function or reference); that one stays as it was: send this message with a message id of its own",
            )
        self.counters.add(DUPLICATE)
        try:
            self.store.record(AuditEvent(message_id, sender, "duplicate", "sent again; answered with the original receipt"))
        except Exception as exc:  # the original receipt is still the right answer; the gap is logged
            log.warning("could not record a duplicate in the audit log: %s", exc)
        return Ack(original.receipt, True, message_id, duplicate=True)

    def _conversation(self, header: Header) -> str:
        """The exchange a message belongs to: that of the message its preReference names (by
        reference or message id), else its own reference, else its own message id."""
        s = header.subject
        if s.pre_reference:
            earlier = self.store.conversation(s.pre_reference, limit=1)
            return (earlier[0].conversation if earlier else None) or s.pre_reference
        return s.reference or header.message_id

    def _as_received(self, fault: Rejected, received: etree._Element, payload: etree._Element, schema: str | None) -> Rejected:
        """The same fault, located in the bytes the sender sent rather than in the re-serialised
        signed copy (the content is the same: its digest matched). Only on the failure path."""
        original = content_of(received)
        if original is None or original is payload:
            return fault
        try:
            self.schemas.validate(original, schema)
        except Rejected as again:
            if again.code is fault.code:
                return again
        return fault

    def _key(self) -> Signer:
        """The hub's key for every signature of one message: a reload (SIGHUP) may swap the key of
        a running hub, and a message's outbound copies and its receipt are signed with one key."""
        return self.signer.current

    def _reply(self, to: Party | None, original: Header | None, function: str, content: etree._Element, key: Signer | None = None) -> bytes:
        envelope = (key or self._key()).sign(build(reply_header(self.party, to, original, function), content))
        return etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")

    def nack(self, rejected: Rejected, header: Header | None) -> Ack:
        to = self._parties.get(header.sender.identity) if header else None
        xml = self._reply(to or (header.sender if header else None), header, FUNCTION_ERROR, error_content([rejected]))
        detail = f"{rejected.code.value} {rejected.code.name}: {rejected.message}"
        actor = header.sender.identity if header and rejected.sender_authenticated else "unauthenticated"
        if header and actor != header.sender.identity:  # a claim, not an identity: said, not credited
            detail += f" (the envelope names {header.sender.identity} as sender)"
        self.counters.add(rejected.code.value)
        self._log_refusal(rejected, header, actor)
        try:
            self.store.record(AuditEvent(header.message_id if header else None, actor, "rejected", detail))
        except Exception as exc:  # the NACK is still the right answer; the audit gap is logged
            log.warning("could not record a rejection in the audit log: %s", exc)
        return Ack(xml, False, header.message_id if header else None, errors=(rejected,))

    def _log_refusal(self, rejected: Rejected, header: Header | None, actor: str) -> None:
        """The INFO line of one NACK (throttled: ``REFUSALS_LOGGED``), whatever the transport."""
        since = self._refusals.add()
        if not since:
            return
        if header is None:
            who = "a message (no envelope header read)"
        else:
            claimed = "" if actor == header.sender.identity else " (not authenticated)"
            who = f"message {header.message_id} from {header.sender.identity}{claimed}"
        sentence = " ".join(rejected.message.split())[:500]  # one line, whatever the fault quotes
        unlogged = f" [{since - 1} more refused since the last such line, not logged]" if since > 1 else ""
        log.info("refused %s: %s %s%s", who, rejected.code.value, sentence, unlogged)
