"""The ``hub`` command. Every sub-command takes ``--config PATH`` (default ``./hub.toml``)."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Sequence

from .config import MAX_WORKERS
from .errors import ConfigError, HubError, TransitionError, TryAgain
from .store import State

log = logging.getLogger("hub")
# an envelope's messageId (type MessageId in xsd/envelope/envelope.xsd)
_MESSAGE_ID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


# the largest row id either backend stores (SQLite INTEGER, PostgreSQL BIGINT): a larger number is
# refused as an argument, not sent to the database (where it overflowed into a traceback)
_MAX_ID = 2**63 - 1
# `hub keys init --days`: certificates of at least a day and at most a hundred years
MAX_DAYS = 36500


def _whole(low: int, high: int, what: str):  # type: ignore[no-untyped-def]
    """An argparse type: a whole number from ``low`` to ``high``, or a usage error naming ``what``."""

    def parse(text: str) -> int:
        try:
            number = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= number <= high:
            raise argparse.ArgumentTypeError(f"{number} is not {what} (from {low} to {high})")
        return number

    return parse


_ROW_ID = _whole(1, _MAX_ID, "an outbox row id")


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="hub.toml", help="path of hub.toml (default: ./hub.toml)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hub", description="sw-hub: a single-window integration hub")
    sub = parser.add_subparsers(dest="command", required=True)

    _config_arg(sub.add_parser("check", help="load everything the configuration names and report faults"))

    p = sub.add_parser("serve", help="run the listeners and the dispatcher until SIGTERM")
    _config_arg(p)
    p.add_argument("--no-dispatch", action="store_true", help="accept only; another node delivers")
    p.add_argument("--workers", type=_whole(1, MAX_WORKERS, "a number of worker processes"),
                   help="processes sharing the port and the store (default: [hub] workers, 1)")

    p = sub.add_parser("send", help="submit a document as an agency and print the receipt")
    _config_arg(p)
    p.add_argument("--as", dest="agency", required=True, help="the sending agency's id")
    p.add_argument("file", help="a business document (wrapped for you) or a whole envelope")
    p.add_argument("--to", help="recipient party id (default: the one recipient of the routes that take the document, else the hub)")
    p.add_argument("--document-type", help="procedure code (default: from the one route that fits)")
    p.add_argument("--function", help="business function code (default: from the route, else 01)")
    p.add_argument("--message-id", help="message id to use (default: a new UUID)")
    p.add_argument("--url", help="POST to a running hub at this base URL instead of running the pipeline here")

    p = sub.add_parser("trace", help="every hop and attempt of a message")
    _config_arg(p)
    p.add_argument("message_id")
    shown = p.add_mutually_exclusive_group()
    shown.add_argument("--json", action="store_true")
    shown.add_argument("--receipt", action="store_true", help="print the signed receipt the hub answered with, byte for byte")
    p.add_argument("--sender", metavar="AGENCY", help="with --receipt: the receipt given to this sender (a message id several used)")

    p = sub.add_parser("outbox", help="list, show and resend outbox rows")
    _config_arg(p)
    osub = p.add_subparsers(dest="action", required=True)
    o = osub.add_parser("list")
    _config_arg(o)
    o.add_argument("--state", choices=[s.value for s in State])
    o.add_argument("--destination")
    o.add_argument("--limit", type=_whole(1, _MAX_ID, "a number of rows"), default=100)
    o.add_argument("--newest", action="store_true", help="the latest rows first (default: the oldest first)")
    o = osub.add_parser("show")
    _config_arg(o)
    o.add_argument("row", type=_ROW_ID)
    o.add_argument("--payload", action="store_true", help="print the signed envelope too")
    o = osub.add_parser("resend")
    _config_arg(o)
    o.add_argument("rows", type=_ROW_ID, nargs="*")
    o.add_argument("--state", choices=["dead", "pending"],
                   help="resend every row in this state: dead rows get a new count of attempts; pending rows "
                        "(waiting out their backoff, e.g. after the partner came back) are due at once and keep theirs")
    o.add_argument("--destination")
    o.add_argument("--force", action="store_true", help="allow resending a delivered row")

    p = sub.add_parser("purge", help="retention: drop the payloads of delivered messages older than DAYS")
    _config_arg(p)
    p.add_argument("--older-than", type=int, required=True, metavar="DAYS",
                   help="messages received more than DAYS days ago (at least 1) whose rows are all delivered")
    p.add_argument("--dry-run", action="store_true", help="count what would be purged; change nothing")

    p = sub.add_parser("audit", help="the hash-chained audit log")
    _config_arg(p)
    asub = p.add_subparsers(dest="action", required=True)
    a = asub.add_parser("verify", help="walk the chain, check every message and attempt has its entries, print the head")
    _config_arg(a)
    a.add_argument("--expect-head", metavar="SEQ:HASH",
                   help="fail unless the log still holds entry SEQ with this hash (a head printed earlier, recorded elsewhere)")

    p = sub.add_parser("keys", help="list keys, certificates and CRLs with days to expiry, or generate demo ones")
    _config_arg(p)
    p.add_argument("action", nargs="?", choices=["list", "init"], default="list")
    p.add_argument("--kind", choices=["rsa", "ec"], default="rsa")
    p.add_argument("--days", type=_whole(1, MAX_DAYS, "a number of days a certificate is valid"), default=365)

    p = sub.add_parser("sign", help="sign an XML document (enveloped XML-DSig, exclusive c14n, SHA-256)")
    p.add_argument("--key", required=True, help="PEM private key (RSA or EC)")
    p.add_argument("--cert", required=True, help="PEM certificate of the key (more certificates after it: its chain)")
    p.add_argument("input", help="the document to sign")
    p.add_argument("output", help="where to write the signed document")

    p = sub.add_parser("verify", help="verify a signed XML document; print the signer's subject")
    _config_arg(p)
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--cert", help="PEM file of the certificate(s) the signer must use")
    who.add_argument("--agency", help="judge the signer by this agency's trust in hub.toml (pins, CAs, CRLs)")
    p.add_argument("file")

    p = sub.add_parser("store", help="the store's schema")
    _config_arg(p)
    ssub = p.add_subparsers(dest="action", required=True)
    _config_arg(ssub.add_parser("migrate", help="bring the store's schema to the current version (idempotent)"))

    p = sub.add_parser("bench", help="benchmark: floor, in-process, end to end, soak (`hub bench --help`)", add_help=False)
    p.add_argument("args", nargs=argparse.REMAINDER, help="options of python -m benchmarks")

    p = sub.add_parser("demo", help="run a complete e-Form D exchange on loopback")
    _config_arg(p)
    p.add_argument("--two-hubs", action="store_true", help="a VN and a TH hub, each with its own keys and hub.toml, exchanging over AS4")
    p.add_argument("--folder", help="with --two-hubs: where to write the two hubs (default: a new temporary folder, removed at the end)")
    p.add_argument("--keep", action="store_true", help="with --two-hubs: keep the temporary folder (keys, stores, receipts) for inspection")

    p = sub.add_parser("validate", help="validate documents by their root element against [schemas]")
    _config_arg(p)
    p.add_argument("files", nargs="+", metavar="FILE", help="documents or hub envelopes (a folder: every *.xml below it)")
    p.add_argument("--json", action="store_true", help="a JSON list: file, ok, root, schema, ms, errors")

    p = sub.add_parser("translate", help="apply a mapping (or a chain a,b) and validate the result")
    _config_arg(p)
    p.add_argument("file", nargs="?", metavar="FILE", help="the input document (or a hub envelope)")
    p.add_argument("--mapping", help="a mapping of [mappings], or a comma-separated chain")
    p.add_argument("-o", "--output", metavar="OUT", help="write the result here (default: stdout)")
    p.add_argument("--list", action="store_true", help="list the mappings, their input roots and output schemas")
    p.add_argument("--force", action="store_true", help="write the result even when it is not valid (exit status stays 1)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    if given[:1] == ["bench"]:  # every option goes to the benchmark's own parser
        return cmd_bench(given[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    scheduler = logging.getLogger("apscheduler")
    if scheduler.level == logging.NOTSET and not logging.getLogger().isEnabledFor(logging.DEBUG):
        # apscheduler says INFO at every job run (CRL refresh, expiry warning): half of a quiet
        # hub's log; its warnings and errors (a job that failed or missed its time) still show.
        # Logging already set up for DEBUG, or a level set for apscheduler, before main() is kept.
        scheduler.setLevel(logging.WARNING)
    if args.command != "serve":
        # a one-shot command loads every CRL once: "CRL ... loaded" lines are the running hub's
        # record, not news here; a CRL that cannot be used is still said (WARNING)
        logging.getLogger("hub.trust").setLevel(logging.WARNING)
    handler = COMMANDS[args.command]
    out = sys.stdout = _Stdout(sys.stdout)
    try:
        return _finish(handler(args), args, out)
    except ConfigError as exc:
        for fault in exc.faults:
            print(f"configuration error: {fault}", file=sys.stderr)
        return 2
    except HubError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a file named on the command line, a port in use: one line, not a traceback
        if exc.filename is None and exc.errno != errno.EADDRINUSE:
            raise
        said = f"{exc.filename}: {exc.strerror}" if exc.filename else f"{exc.strerror}: a port the command listens on is taken"
        print(f"error: {said}", file=sys.stderr)
        return 1
    finally:
        sys.stdout = out.restore()


class _Stdout:
    """Standard output that its reader may close: ``hub outbox list | head -1`` ends the pipe after
    one line, and a caller may start the hub with standard output closed. A write that finds it
    gone is dropped (the rest of the output goes nowhere), never a traceback in the middle of the
    command: the command runs to its end and its exit status still says what happened (``hub send``
    says 0 for a message it recorded, whose receipt `hub trace ID --receipt` prints again)."""

    def __init__(self, stream) -> None:  # type: ignore[no-untyped-def]
        self._stream = stream
        self.closed = self.lost = stream is None  # started with standard output closed
        self.dropped = 0  # characters written while it was closed from the start

    def write(self, text: str) -> int:
        if self.closed:
            self.dropped += len(text)
        elif not self.lost:
            try:
                self._stream.write(text)
            except (BrokenPipeError, ValueError):  # ValueError: the stream was closed
                self._lose()
        return len(text)

    def write_bytes(self, data: bytes) -> None:
        """Bytes as they are (a signed receipt, byte for byte)."""
        if self.closed:
            self.dropped += len(data)
        elif not self.lost:
            try:
                self._stream.flush()
                self._stream.buffer.write(data)
                self._stream.buffer.flush()
            except (BrokenPipeError, ValueError):
                self._lose()

    def flush(self) -> None:
        if not self.lost:
            try:
                self._stream.flush()
            except (BrokenPipeError, ValueError):
                self._lose()

    def _lose(self) -> None:
        """From now on writes go nowhere; what the stream still buffers goes to /dev/null, so the
        interpreter's last flush at exit finds nothing to complain about either."""
        self.lost = True
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self._stream.fileno())
            os.close(null)
        except (OSError, ValueError, AttributeError):
            pass

    def restore(self):  # type: ignore[no-untyped-def]
        """The stream it wrapped, flushed (or let go, if its reader is gone)."""
        self.flush()
        return self._stream

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self._stream, name)


def _finish(status: int, args: argparse.Namespace, out: _Stdout) -> int:
    """``status``, after saying what a standard output closed from the start cost. A reader that
    stops reading (``| head``) took what it wanted; a command started with nowhere to print did
    its work, but its answer (a translation, a receipt, a listing) reached nobody: exit status 1,
    except for ``hub send``, whose message is recorded and whose receipt is kept to print again."""
    out.flush()
    if not (out.closed and out.dropped):
        return status
    if args.command == "send":
        print("standard output was closed: the receipt was not printed (`hub trace MESSAGE_ID --receipt` prints it)", file=sys.stderr)
        return status
    print(f"standard output was closed: {out.dropped} characters of output were not written", file=sys.stderr)
    return status or 1


# -- commands -------------------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    from .runtime import check

    errors, warnings = check(args.config)
    for w in warnings:
        print(w)
    for e in errors:
        print(e, file=sys.stderr)
    if errors:
        print(f"{len(errors)} problem(s) in {args.config}", file=sys.stderr)
        return 1
    print(f"{args.config}: OK")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .config import load_config
    from .keys import not_valid_to_sign
    from .serve import serve
    from .trust import load_certificates

    h = load_config(args.config).hub
    problem = _listen_problem(h.listen_host, h.listen_port)
    if problem is not None:
        print(f"error: cannot listen on {h.listen_address} ([hub] listen in {args.config}): {problem}", file=sys.stderr)
        return 1
    # every receipt signed with a certificate out of its dates is refused by partners (`hub check`
    # says so too): not started, rather than running on proof nobody accepts
    problem = not_valid_to_sign(load_certificates(h.certificate, "hub.certificate")[0])
    if problem is not None:
        print(f"error: cannot serve with {h.certificate} (hub.certificate in {args.config}): {problem}; renew it "
              "(or name a valid certificate and its key) and start again", file=sys.stderr)
        return 1
    return serve(args.config, dispatch=not args.no_dispatch, workers=args.workers)


def _listen_problem(host: str, port: int) -> str | None:
    """Why ``hub serve`` could not listen on ``host:port``, found before anything starts: an address
    that is not this host's, a name that does not resolve, a port it may not take. None when a socket
    binds there, or when the port is only in use (``hub serve`` says that itself, naming the holder)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        return f"{host!r} is neither an IP address nor a name this host resolves ({getattr(exc, 'strerror', None) or exc})"
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return None
        if exc.errno == errno.EADDRNOTAVAIL:
            return "that address is not one of this host's (Cannot assign requested address)"
        if exc.errno == errno.EACCES:
            return f"port {port} is reserved for privileged processes (Permission denied)"
        return exc.strerror or str(exc)
    finally:
        sock.close()
    return None


def _open_store(config_path: str, create: bool = True):  # type: ignore[no-untyped-def]
    """``create=False``: the commands that only look at what is recorded (`hub trace`, `hub outbox
    list` and `show`, `hub audit verify`) say that a store does not exist rather than create it
    empty and report it holds nothing ("no message", "0 row(s)", "audit chain OK: 0 entries")."""
    from .config import load_config
    from .store import open_store

    config = load_config(config_path)
    return config, open_store(config.hub.store, config.base, create=create)


def cmd_send(args: argparse.Namespace) -> int:
    from .client import Outgoing, agency_signer, envelope_for, fitting_routes, guess_outgoing, recipient_for, signed_bytes
    from .envelope import DSIG, NS
    from .pipeline import party_of
    from .runtime import Runtime
    from .xml import Limits, XmlParser

    from .config import WILDCARD, load_config

    if args.message_id is not None and not _MESSAGE_ID.fullmatch(args.message_id):
        print(f"--message-id {args.message_id!r} is not a UUID (8-4-4-4-12 hexadecimal digits, "
              "the envelope's messageId)", file=sys.stderr)
        return 2
    config = load_config(args.config)
    agency = config.agencies.get(args.agency)
    if agency is None:
        print(_no_agency("--as", args.agency, config), file=sys.stderr)
        return 2
    data = Path(args.file).read_bytes()
    document = XmlParser(Limits(config.hub.limits.max_bytes, config.hub.limits.max_depth)).parse(data)
    signer = None
    if agency.signing_key is not None:
        signer = agency_signer(agency)
    if document.tag == f"{{{NS}}}Envelope":
        has_signature = document.find(f"{{{DSIG}}}Signature") is not None
        raw = data if has_signature or signer is None else signed_bytes(document, signer)
    else:
        from .catalogue import SchemaCatalogue

        roots = {name: s.roots for name, s in SchemaCatalogue.from_config(config).by_name.items()}
        routes = [r for r in fitting_routes(config, roots, agency.id, document.tag, args.to)
                  if not args.document_type or r.document_type == args.document_type]
        what = Outgoing(args.document_type, args.function or "01") if args.document_type else guess_outgoing(routes)
        if what is None:
            print(f"cannot tell the document type from the routes: {_routes_said(routes, agency.id, document.tag)}; "
                  "give --document-type (and --to)", file=sys.stderr)
            return 2
        if args.function:
            what = Outgoing(what.document_type, args.function)
        recipients = sorted({r.recipient for r in routes})
        # the one recipient the routes name, else the hub itself
        to = args.to or (recipients[0] if len(recipients) == 1 and recipients[0] != WILDCARD else None)
        if to is None and len(recipients) > 1 and WILDCARD not in recipients and config.hub.party_id not in recipients:
            print(f"the routes that take it go to {' or '.join(recipients)}: give --to", file=sys.stderr)
            return 2
        envelope = envelope_for(document, party_of(agency), recipient_for(config, to), what, args.message_id)
        raw = signed_bytes(envelope, signer)

    if args.url:
        return _post(args.url, raw, config.hub.limits)

    try:
        runtime = Runtime.build(config)  # a store that is busy or whose server is down: try again too
    except TryAgain as exc:
        print(f"not accepted, try again: {exc}", file=sys.stderr)
        return 75
    try:
        ack = runtime.pipeline.submit(raw, agency.id)
    except TryAgain as exc:
        print(f"not accepted, try again: {exc}", file=sys.stderr)
        return 75
    finally:
        runtime.close()
    sys.stdout.write(ack.xml.decode("utf-8") + "\n")
    if ack.accepted:
        print(f"accepted {ack.message_id}" + (" (duplicate: original receipt)" if ack.duplicate else ""), file=sys.stderr)
        return 0
    for err in ack.errors:
        print(f"rejected: {err}", file=sys.stderr)
    return 1


def _no_agency(option: str, given: str, config) -> str:  # type: ignore[no-untyped-def]
    """An agency named on the command line that the configuration does not have: the mistake is the
    argument's (not "configuration error"), so the sentence names the option and what it may be."""
    from .config import did_you_mean

    known = sorted(config.agencies)
    return f"{option} {given!r}: no such agency in {config.path}{did_you_mean(given, known)} (its agencies: {', '.join(known)})"


def _post(url: str, raw: bytes, limits) -> int:  # type: ignore[no-untyped-def]
    """``hub send --url``: the message posted to a running hub; its answer printed as ``hub send``
    prints its own. A URL that is not one, or a hub that does not answer, is one line."""
    import httpx

    try:
        response = httpx.post(url.rstrip("/") + "/messages", content=raw, headers={"Content-Type": "application/xml"}, timeout=30)
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        print(f"--url {url!r} is not a valid URL of a hub (e.g. http://127.0.0.1:8480): {exc}", file=sys.stderr)
        return 2
    except httpx.TransportError as exc:  # refused, unknown host, timed out: a running hub may answer later
        print(f"not sent, try again: the hub at {url} cannot be reached: {exc or type(exc).__name__}", file=sys.stderr)
        return 75
    sys.stdout.write(response.text)
    print(f"\nHTTP {response.status_code}", file=sys.stderr)
    if response.status_code != 200:
        _say_refusal(response.content, limits)
    return 0 if response.status_code == 200 else 1


def _say_refusal(body: bytes, limits) -> None:  # type: ignore[no-untyped-def]
    """The codes and sentences of a NACK from a running hub, as ``hub send`` says its own."""
    from .envelope import read_errors
    from .errors import Rejected
    from .xml import XmlParser

    try:
        errors = read_errors(XmlParser(limits).parse(body))
    except Rejected:
        errors = []
    for code, message, location in errors:
        print(f"rejected: {code}: {message}" + (f" ({location})" if location else ""), file=sys.stderr)


def _routes_said(routes: list, sender: str, tag: str) -> str:
    if not routes:
        return f"no route takes a {tag.rpartition('}')[2]} from {sender}"
    return "the routes that take it disagree (" + ", ".join(f"{r.name}: {r.document_type}/{r.function} to {r.recipient}" for r in routes) + ")"


def cmd_trace(args: argparse.Namespace) -> int:
    from .portal import receipt_of
    from .tracing import trace_dict, trace_text

    if args.sender and not args.receipt:
        print("--sender goes with --receipt", file=sys.stderr)
        return 2
    message_id = args.message_id.lower()
    config, store = _open_store(args.config, create=False)
    try:
        receipt = receipt_of(store, message_id, args.sender) if args.receipt else None
        trace = store.trace(message_id) if receipt is None else None  # a receipt found needs no trace
    finally:
        store.close()
    found = trace is None or bool(trace.message or trace.audit)
    if args.receipt:
        if receipt is None and args.sender is not None and args.sender not in config.agencies:
            # not "the hub did not accept it": the name is wrong (an agency since removed still finds its receipts)
            print(_no_agency("--sender", args.sender, config), file=sys.stderr)
            return 2
        if receipt is None:
            whose = f" from {args.sender}" if args.sender else ""
            print(f"no receipt for {args.message_id}{whose}: " + ("the hub did not accept it (`hub trace` says why)" if found else "no such message"),
                  file=sys.stderr)
            return 1
        _write_bytes(receipt)  # as given: its signature still verifies (`hub verify`)
        return 0
    assert trace is not None  # read whenever no receipt was found
    if args.json:
        print(json.dumps(trace_dict(trace), indent=2))
    else:
        print(trace_text(trace, args.message_id), file=sys.stdout if found else sys.stderr)
    return 0 if found else 1


def _write_bytes(data: bytes) -> None:
    """``data`` on standard output as it is (``_Stdout`` when run by ``main``)."""
    out = sys.stdout
    if isinstance(out, _Stdout):
        out.write_bytes(data)
    else:
        out.flush()
        out.buffer.write(data)
        out.flush()


def _row_line(r) -> str:  # type: ignore[no-untyped-def]
    from .tracing import ts

    err = f"  last error: {r.last_error}" if r.last_error and r.state is not State.DELIVERED else ""
    return f"{r.id:>6}  {r.state.value:<9}  {r.destination:<14}  {r.message_id}  attempts {r.attempts}  updated {ts(r.updated_at)}{err}"


def cmd_outbox(args: argparse.Namespace) -> int:
    from .tracing import ts

    _, store = _open_store(args.config, create=args.action == "resend")
    try:
        if args.action == "list":
            rows = store.rows(State(args.state) if args.state else None, args.destination, args.limit, newest=args.newest)
            for r in rows:
                print(_row_line(r))
            more = f" (the first {args.limit}: --limit shows more)" if len(rows) == args.limit else ""
            print(f"{len(rows)} row(s){more}")
            return 0
        if args.action == "show":
            r = store.get(args.row)
            if r is None:
                print(f"no outbox row {args.row}", file=sys.stderr)
                return 1
            for name in ("id", "message_id", "sender", "destination", "route", "state", "attempts", "lease_owner", "last_error"):
                print(f"{name:>16}: {getattr(r, name).value if name == 'state' else getattr(r, name)}")
            for name in ("next_attempt_at", "lease_until", "created_at", "updated_at"):
                print(f"{name:>16}: {ts(getattr(r, name))}")
            if r.purged_at is not None:
                print(f"{'payload':>16}: purged by retention at {ts(r.purged_at)}")
            elif args.payload:
                print(r.payload.decode("utf-8"))
            return 0
        # resend
        ids = list(args.rows)
        if args.state:
            ids += [r.id for r in store.rows(State(args.state), args.destination, limit=100000)]
        ids = list(dict.fromkeys(ids))  # a row named twice (or named and in --state) is resent once: one audit entry
        if not ids and args.state:  # nothing in that state: not a mistake of the operator's
            print(f"no {args.state} rows" + (f" to {args.destination}" if args.destination else "") + ": nothing to resend")
            return 0
        if not ids:
            print("nothing to resend: give row ids, --state dead or --state pending", file=sys.stderr)
            return 2
        failed = 0
        import getpass

        actor = f"operator:{getpass.getuser()}"
        for row_id in ids:
            try:
                r = store.resend(row_id, actor, time.time(), force=args.force)
                print(f"row {r.id} to {r.destination}: due now (message {r.message_id}, attempts so far {r.attempts})")
            except TransitionError as exc:
                print(f"row {row_id}: {exc}", file=sys.stderr)
                failed += 1
        return 1 if failed else 0
    finally:
        store.close()


def cmd_purge(args: argparse.Namespace) -> int:
    """Retention by hand (``[retention] delivered_days`` has ``hub serve`` run it daily); one
    ``purged`` audit entry per batch of rows purged."""
    import getpass

    from .retention import cutoff, report_lines

    if args.older_than < 1:
        print(f"--older-than {args.older_than}: give a number of days of at least 1; the payloads of the last day's "
              "deliveries are always kept", file=sys.stderr)
        return 2
    config, store = _open_store(args.config)
    try:
        report = store.purge(cutoff(args.older_than), dry_run=args.dry_run, actor=f"operator:{getpass.getuser()}")
    finally:
        store.close()
    for line in report_lines(report, sqlite=config.hub.store.startswith("sqlite:")):
        print(line)
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    """The chain entry by entry (``--expect-head``'s entry among them), then what the other tables
    hold without its audit entry (a cut at the chain's end leaves a chain that fits); one line per problem."""
    from .audit import parse_head, verify_chain

    expect = None
    if args.expect_head is not None:
        try:
            expect = parse_head(args.expect_head)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    _, store = _open_store(args.config, create=False)
    try:
        report = verify_chain(store.audit_entries(), expect)
        gaps = store.audit_gaps()
    finally:
        store.close()
    problems = [*report.problems, *(gap.problem for gap in gaps)]
    if not problems:
        print(f"audit chain OK: {report.entries} entries; head seq {report.head_seq} hash {report.head_hash}")
        return 0
    for problem in problems:
        print(f"audit chain BROKEN: {problem}", file=sys.stderr)
    return 1


def cmd_keys(args: argparse.Namespace) -> int:
    from datetime import datetime, timezone

    from .config import load_config
    from .keys import init_keys, inventory, warn_expiring
    from .truststore import TrustStore

    config = load_config(args.config)
    if args.action == "init":
        made = init_keys(config, args.kind, args.days)
        for line in made:
            print(line)
        if not made:
            print("every key and certificate hub.toml names exists: nothing made (`hub keys` lists them)")
        return 0
    try:
        trust = TrustStore.from_config(config)
    except ConfigError as exc:  # still list what can be read
        print(f"configuration error: {exc}", file=sys.stderr)
        trust = None
    now = datetime.now(timezone.utc)
    window = config.trust.expiry_warning_days
    entries = inventory(config, trust)
    print(f"{'OWNER':<14} {'ROLE':<20} {'DAYS':>5}  {'STATUS':<8} SUBJECT  (LOCATION)")
    for e in entries:
        days = e.days_left(now)
        print(f"{e.owner:<14} {e.role:<20} {'-' if days is None else days:>5}  {e.status(now, window):<8} {e.subject}  ({e.location})"
              + (f"  {e.problem}" if e.problem else ""))
    warnings = warn_expiring(entries, window, now)
    if warnings:
        print(f"{len(warnings)} key(s), certificate(s) or CRL(s) need attention (expired, stale, unreadable, or within {window} days)")
    failing = [e for e in entries if e.status(now, window) not in ("ok", "WARNING")]
    return 1 if failing or trust is None else 0


def cmd_sign(args: argparse.Namespace) -> int:
    from lxml import etree

    from .trust import Signer, in_date
    from .xml import Limits, XmlParser

    signer = Signer.from_files(Path(args.key), Path(args.cert), "--key", "--cert")
    document = XmlParser(Limits()).parse(Path(args.input).read_bytes())
    signed = signer.sign(document)
    Path(args.output).write_bytes(etree.tostring(signed, xml_declaration=True, encoding="UTF-8"))
    cert = signer.certificate
    print(f"signed {args.input} as {cert.subject.rfc4514_string()} -> {args.output}", file=sys.stderr)
    if not in_date(cert):  # signed all the same (a test of a receiver's refusal); said, not silent
        print(f"warning: {args.cert}: the certificate is not valid now (valid {cert.not_valid_before_utc:%Y-%m-%d %H:%M} to "
              f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC): a receiver refuses this signature (ERR24)", file=sys.stderr)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from .errors import Rejected
    from .trust import CertificatePolicy, Pinned, Verifier, load_certificates
    from .xml import Limits, XmlParser

    limits = Limits()
    policy: CertificatePolicy
    if args.cert:
        policy, who = Pinned(load_certificates(Path(args.cert), "--cert")), f"the holder of {args.cert}"
    else:
        from .config import load_config
        from .truststore import TrustStore

        config = load_config(args.config)
        if args.agency not in config.agencies:
            print(_no_agency("--agency", args.agency, config), file=sys.stderr)
            return 2
        limits = config.hub.limits
        policy, who = TrustStore.from_config(config).policy(args.agency), f"agency {args.agency}"
    try:
        verified = Verifier().verify(XmlParser(limits).parse(Path(args.file).read_bytes()), policy, who)
    except Rejected as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return 1
    print(verified.subject)
    return 0


def cmd_store(args: argparse.Namespace) -> int:
    from .config import load_config
    from .store import open_store

    config = load_config(args.config)
    store = open_store(config.hub.store, config.base, migrate=False)
    try:
        version = store.migrate()
    finally:
        store.close()
    print(f"store schema at version {version}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    if args.two_hubs:
        from .demo_two import run_two_hubs

        return run_two_hubs(args.folder, keep=args.keep)
    from .demo import run_demo

    return run_demo(args.config)


def cmd_validate(args: argparse.Namespace) -> int:
    from .config import load_config
    from .validate import Validator, expand

    validator = Validator(load_config(args.config))
    reports = [validator.validate_file(f) for f in expand(args.files)]
    if args.json:
        print(json.dumps([r.as_dict() for r in reports], indent=1, ensure_ascii=False))
    else:
        for r in reports:
            print(r.text())
    bad = sum(not r.ok for r in reports)
    if bad:
        print(f"{bad} of {len(reports)} file(s) not valid", file=sys.stderr)
    return 1 if bad or not reports else 0


def cmd_translate(args: argparse.Namespace) -> int:
    from .config import load_config
    from .validate import Translator

    translator = Translator(load_config(args.config))
    if args.list:
        for m in translator.listing():
            inputs = ", ".join(f"{i['root']}" + (f" ({i['schema']})" if i["schema"] else "") for i in m["input"]) or "(any)"
            output = f"{m['output']} ({m['output_schema']})" if m["output"] else "(not validated)"
            print(f"{m['mapping']}: {inputs} -> {output}")
        return 0
    if not args.mapping or not args.file:
        print("hub translate: give --mapping NAME[,NAME...] and FILE, or --list", file=sys.stderr)
        return 2
    chain = [n.strip() for n in args.mapping.split(",") if n.strip()]
    try:
        data = Path(args.file).read_bytes()
    except OSError as exc:
        print(f"{args.file}: cannot read the file: {exc.strerror or exc}", file=sys.stderr)
        return 1
    result = translator.translate(data, chain)
    if result.faults:
        print(f"{args.file}: {result.headline}", file=sys.stderr)
        for f in result.faults:
            print(f"  {f.text()}", file=sys.stderr)
    if result.output is not None and (result.ok or args.force):
        if args.output:
            Path(args.output).write_bytes(result.output)
        else:
            sys.stdout.write(result.output.decode("utf-8"))
    if result.ok:
        print(f"{args.file}: translated by {' -> '.join(chain)}, valid against schema {result.schema}", file=sys.stderr)
        return 0
    return 1


COMMANDS = {
    "check": cmd_check,
    "serve": cmd_serve,
    "send": cmd_send,
    "trace": cmd_trace,
    "outbox": cmd_outbox,
    "purge": cmd_purge,
    "audit": cmd_audit,
    "keys": cmd_keys,
    "sign": cmd_sign,
    "verify": cmd_verify,
    "store": cmd_store,
    "demo": cmd_demo,
    "validate": cmd_validate,
    "translate": cmd_translate,
}


def cmd_bench(argv: list[str]) -> int:
    """``hub bench``: ``python -m benchmarks`` (the package sits in the repository, next to ``hub``)."""
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    try:
        from benchmarks.run import main as bench
    except ImportError as exc:
        print(f"the benchmarks package is not here ({root}): {exc}", file=sys.stderr)
        return 2
    return bench(argv)


if __name__ == "__main__":
    sys.exit(main())
