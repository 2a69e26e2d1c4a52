"""The portal's side: status and conversations over REST, the OpenAPI document, and signed
status webhooks delivered through the durable outbox (a portal outage and a hub crash lose none)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from lxml import etree

from hub.client import signed_bytes
from hub.config import load_config
from hub.errors import ConfigError
from hub.receiver import Receiver
from hub.runtime import Runtime
from hub.server import create_app
from adapters.webhook import HEADER, sign, verify  # after hub: the hub package imports the adapters

from .support import REPO, HubProcess, Sender, free_port, message_id_of, wait_until, write_config

NS = "urn:sw-hub:envelope:1"
SECRET = b"portal-shared-secret-for-tests-0123456789"


class Portal:
    """The national portal's callback endpoint: checks every signature, answers ``status``."""

    def __init__(self) -> None:
        self.status = 200
        self.events: dict[str, dict[str, Any]] = {}  # event_id -> event
        self.calls = 0
        self.bad_signatures = 0
        self.lock = threading.Lock()
        portal = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with portal.lock:
                    portal.calls += 1
                    ok = verify(SECRET, body, self.headers.get(HEADER, ""))
                    if not ok:
                        portal.bad_signatures += 1
                    status = portal.status if ok else 401
                    if status == 200:
                        event = json.loads(body)
                        portal.events[event["event_id"]] = event
                        if self.headers.get("X-Hub-Event-Id") != event["event_id"]:
                            portal.bad_signatures += 1  # the header a portal dedupes on names another event
                answer = b"ok" if status == 200 else b"portal: cannot take callbacks now"
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def kinds(self, message_id: str) -> list[tuple[str, str]]:
        with self.lock:
            return sorted((e["event"], e.get("destination", "")) for e in self.events.values() if e["message_id"] == message_id)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def portal_agency(folder: Path, url: str, events: str = '"all"') -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "portal.secret").write_bytes(SECRET + b"\n")
    return f"""
[[agencies]]
id = "VN-PORTAL"
name = "National single-window portal"
country = "VN"
adapter = "webhook"
endpoint = "{url}"
options = {{ secret_file = "portal.secret", events = {events}, timeout = 2 }}
"""


@pytest.fixture
def portal() -> Iterator[Portal]:
    p = Portal()
    yield p
    p.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(port=free_port()).start()
    yield r
    r.stop()


def with_references(sender: Sender, reference: str | None = None, pre_reference: str | None = None, **kwargs: Any) -> bytes:
    envelope = sender.envelope(**kwargs)
    function = envelope.find(f"{{{NS}}}Header/{{{NS}}}Subject/{{{NS}}}function")
    assert function is not None
    at = function
    for tag, value in (("reference", reference), ("preReference", pre_reference)):
        if value is not None:
            element = etree.Element(f"{{{NS}}}{tag}")
            element.text = value
            at.addnext(element)
            at = element
    return signed_bytes(envelope, sender.signer)


# -- webhooks ----------------------------------------------------------------------------------------


def test_signatures_check_body_secret_and_age() -> None:
    body = b'{"event":"delivered"}'
    header = sign(SECRET, body)
    assert verify(SECRET, body, header)
    assert not verify(SECRET, body + b" ", header)
    assert not verify(b"another secret of enough length", body, header)
    assert not verify(SECRET, body, sign(SECRET, body, at=int(time.time()) - 3600))  # a replay, an hour later
    assert not verify(SECRET, body, "sha256=abc")


def test_webhooks_are_signed_and_survive_a_portal_outage_and_a_hub_crash(tmp_path: Path, portal: Portal, receiver: Receiver) -> None:
    portal.status = 503  # the portal is down when the traffic starts
    config = write_config(tmp_path, gateway_url=receiver.url, extra=portal_agency(tmp_path, portal.url), max_attempts=50, max_delay=0.3)
    moit = Sender(load_config(config), "VN-MOIT")
    process = HubProcess(config).start()
    ids = [message_id_of(m) for m in (moit.message() for _ in range(5)) if process.post(m).status_code == 200]
    assert len(ids) == 5 and receiver.wait_for(5, 20)
    assert wait_until(lambda: portal.calls >= 10, 20)  # callbacks tried and refused
    process.kill()  # the hub crashes with every event still undelivered
    portal.status = 200
    process = HubProcess(config).start()
    try:
        expected = [("delivered", "TH-ASW"), ("delivered", "VN-CUSTOMS"), ("received", "")]
        assert wait_until(lambda: all(portal.kinds(mid) == expected for mid in ids), 30), [portal.kinds(mid) for mid in ids]
        status = httpx.get(f"{process.url}/messages/{ids[0]}/status").json()
        assert status["status"] == "delivered"
        assert {d["agency"] for d in status["destinations"]} == {"TH-ASW", "VN-CUSTOMS"}  # event rows are not the message's status
        trace = httpx.get(f"{process.url}/messages/{ids[0]}").json()
        portal_rows = [d for d in trace["deliveries"] if d["destination"] == "VN-PORTAL"]
        assert len(portal_rows) == 3 and all(d["state"] == "delivered" for d in portal_rows)
        assert any(a["outcome"] == "pending" and "HTTP 503" in a["detail"] for d in portal_rows for a in d["attempts"])
    finally:
        process.terminate()
    assert portal.bad_signatures == 0


def test_a_portal_refusing_callbacks_dead_letters_them_with_its_answer(tmp_path: Path, portal: Portal, receiver: Receiver) -> None:
    portal.status = 400
    runtime = Runtime.load(write_config(tmp_path, gateway_url=receiver.url, extra=portal_agency(tmp_path, portal.url, '["dead", "delivered"]')))
    moit = Sender(runtime.config, "VN-MOIT")
    mid = runtime.pipeline.submit(moit.message()).message_id
    dispatcher = runtime.dispatcher()
    assert dispatcher.drain(20)
    dispatcher.stop()
    rows = runtime.store.rows(destination="VN-PORTAL")
    assert len(rows) == 2 and all(r.state.value == "dead" and "portal: cannot take callbacks now" in (r.last_error or "") for r in rows)
    assert all(r.message_id == mid for r in rows)
    runtime.close()


def test_events_need_an_adapter_that_carries_them_and_webhooks_a_secret(tmp_path: Path) -> None:
    bad = tmp_path / "a"
    config = write_config(bad, extra="")
    text = config.read_text().replace('endpoint = "' + str(bad) + '/mard-outbox"', 'endpoint = "' + str(bad) + '/mard-outbox"\noptions = { events = "all" }')
    config.write_text(text)
    with pytest.raises(ConfigError, match="cannot carry status events"):
        Runtime.load(config)
    config = write_config(tmp_path / "b", extra=portal_agency(tmp_path / "b", "http://127.0.0.1:9/hooks").replace('secret_file = "portal.secret", ', ""))
    runtime = Runtime.load(config)
    with pytest.raises(ConfigError, match="secret"):
        runtime.create_adapters()
    runtime.close()


# -- status, conversations, OpenAPI -----------------------------------------------------------------


def test_status_and_conversations(tmp_path: Path, receiver: Receiver) -> None:
    config = write_config(tmp_path, gateway_url=receiver.url)
    moit = Sender(load_config(config), "VN-MOIT")
    application = with_references(moit, reference="APP-2025-0042")
    licence = with_references(moit, reference="LIC-77", pre_reference="APP-2025-0042")
    amendment = with_references(moit, pre_reference="LIC-77")
    unrelated = moit.message()
    with HubProcess(config) as process, httpx.Client(base_url=process.url, timeout=10) as client:
        for m in (application, licence, amendment, unrelated):
            assert process.post(m).status_code == 200
        expected = [message_id_of(m) for m in (application, licence, amendment)]
        for key in ("APP-2025-0042", "LIC-77", expected[2], expected[0]):
            found = client.get(f"/conversations/{key}").json()
            assert found["conversation"] == "APP-2025-0042" and [m["message_id"] for m in found["messages"]] == expected, key
        assert [m["message_id"] for m in client.get(f"/conversations/{message_id_of(unrelated)}").json()["messages"]] == [message_id_of(unrelated)]
        assert client.get("/conversations/NO-SUCH-REF").status_code == 404
        assert wait_until(lambda: client.get(f"/messages/{expected[0]}/status").json()["status"] == "delivered", 20)
        first = client.get(f"/messages/{expected[1]}/status").json()
        assert first["reference"] == "LIC-77" and first["pre_reference"] == "APP-2025-0042"

        unsigned = moit.message(sign=False)
        assert process.post(unsigned).status_code == 400
        rejected = client.get(f"/messages/{message_id_of(unsigned)}/status").json()
        assert rejected["status"] == "rejected" and "ERR21" in rejected["detail"]
        assert client.get("/messages/00000000-0000-4000-8000-000000000000/status").status_code == 404

        receiver.status = 400
        refused = moit.message()
        process.post(refused)
        assert wait_until(lambda: client.get(f"/messages/{message_id_of(refused)}/status").json()["status"] == "failed", 20)
        failed = client.get(f"/messages/{message_id_of(refused)}/status").json()
        assert next(d for d in failed["destinations"] if d["agency"] == "TH-ASW")["last_error"].startswith("permanent failure: HTTP 400")


def test_openapi_document_covers_the_listener(tmp_path: Path) -> None:
    runtime = Runtime.load(write_config(tmp_path))
    app = create_app(runtime.pipeline, runtime.store, runtime.listener_routes(), runtime.gate)  # as `hub serve` builds it
    served = {getattr(r, "path", None) for r in app.routes}
    with HubProcess(runtime.config.path) as process:
        document = httpx.get(f"{process.url}/openapi.json").json()
    runtime.close()
    assert document["openapi"].startswith("3.1")
    paths = set(document["paths"])
    assert paths <= served, paths - served
    assert {"/messages", "/messages/{message_id}", "/messages/{message_id}/status", "/messages/{message_id}/receipt", "/conversations/{key}",
            "/soap", "/openapi.json"} <= paths
    signature = document["webhooks"]["status"]["post"]["parameters"][0]
    assert signature["name"] == HEADER and signature["required"]

    def refs(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "$ref":
                    yield v
                else:
                    yield from refs(v)
        elif isinstance(node, list):
            for v in node:
                yield from refs(v)

    for ref in refs(document):
        target: Any = document
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]
        assert isinstance(target, dict)


def test_a_fault_inside_the_hub_gets_a_nack_and_the_next_message_goes_through(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug on one message's path (here: the mapping step raising) is answered with HTTP 500 and
    a signed NACK carrying ERR99, not a bare error page; the next message is accepted as usual."""
    import asyncio

    from hub.envelope import read_errors

    runtime = Runtime.load(write_config(tmp_path))
    moit = Sender(runtime.config, "VN-MOIT")
    app = create_app(runtime.pipeline, runtime.store, runtime.listener_routes(), runtime.gate)
    calls = {"n": 0}
    original = type(runtime.pipeline)._accept

    def failing_once(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("a bug in the hub")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(runtime.pipeline), "_accept", failing_once)

    async def post(data: bytes) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://hub") as http:
            return await http.post("/messages", content=data)

    try:
        first = asyncio.run(post(moit.message()))
        assert first.status_code == 500 and first.headers["content-type"].startswith("application/xml")
        errors = read_errors(etree.fromstring(first.content))
        assert [code for code, _, _ in errors] == ["ERR99"] and "send it again" in errors[0][1]
        second = asyncio.run(post(moit.message()))
        assert second.status_code == 200, second.text
    finally:
        runtime.close()


# -- who may read, and what ----------------------------------------------------------------------


def _get_as(app: Any, client: str, paths: list[str]) -> list[httpx.Response]:
    """GETs against the app in process, as seen from the address ``client``."""
    import asyncio

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app, client=(client, 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as http:
            return [await http.get(p) for p in paths]

    return asyncio.run(run())


@pytest.mark.parametrize(
    ("read_from", "client", "status"),
    [
        (None, "127.0.0.1", 200),  # the default: loopback only
        (None, "::1", 200),
        (None, "10.1.2.3", 403),
        ('["10.0.0.0/8"]', "10.1.2.3", 200),
        ('["10.0.0.0/8"]', "127.0.0.1", 403),  # loopback too is refused once it is not listed
        ("[]", "127.0.0.1", 403),
    ],
)
def test_traces_status_and_conversations_are_served_only_to_the_clients_in_read_from(
    tmp_path: Path, read_from: str | None, client: str, status: int
) -> None:
    config = write_config(tmp_path)
    if read_from is not None:
        config.write_text(config.read_text().replace("max_depth = 40\n", f"max_depth = 40\nread_from = {read_from}\n"))
    runtime = Runtime.load(config)
    try:
        message = Sender(runtime.config, "VN-MOIT").message()
        assert runtime.pipeline.submit(message).accepted
        mid = message_id_of(message)
        app = create_app(runtime.pipeline, runtime.store, runtime.listener_routes(), runtime.gate)
        answers = _get_as(app, client, [f"/messages/{mid}", f"/messages/{mid}/status", f"/messages/{mid}/receipt", f"/conversations/{mid}",
                                        "/health", "/openapi.json"])
        for r in answers[:4]:
            assert r.status_code == status, (r.request.url, r.text)
            if status == 403:
                assert "[hub] read_from" in r.json()["error"] and mid not in r.text and "VN-MOIT" not in r.text
            else:
                assert mid in r.text
        assert [r.status_code for r in answers[4:]] == [200, 200]  # the rest of the listener is not affected
    finally:
        runtime.close()


def test_the_receipt_given_is_served_byte_for_byte_and_verifies(tmp_path: Path) -> None:
    """GET /messages/{id}/receipt: the stored signed receipt as it was given (a sender that lost it,
    a dispute); none for a message refused or never seen (404, the read API's JSON error)."""
    from hub.trust import Pinned, Verifier, load_certificates
    from hub.xml import Limits, XmlParser

    runtime = Runtime.load(write_config(tmp_path))
    try:
        sender = Sender(runtime.config, "VN-MOIT")
        accepted = runtime.pipeline.submit(sender.message())
        refused = runtime.pipeline.submit(sender.message(sign=False))
        assert accepted.accepted and not refused.accepted
        app = create_app(runtime.pipeline, runtime.store, runtime.listener_routes(), runtime.gate)
        found, nack, unknown = _get_as(app, "127.0.0.1", [f"/messages/{m}/receipt" for m in
                                                          (accepted.message_id, refused.message_id, "00000000-0000-4000-8000-000000000000")])
        assert found.status_code == 200 and found.headers["content-type"] == "application/xml"
        assert found.content == accepted.xml == runtime.store.trace(accepted.message_id).message.receipt  # type: ignore[arg-type, union-attr]
        pinned = Pinned(load_certificates(runtime.config.hub.certificate))
        assert "VN-NSW" in Verifier().verify(XmlParser(Limits()).parse(found.content), pinned, "the hub").subject
        for r, mid in ((nack, refused.message_id), (unknown, "00000000-0000-4000-8000-000000000000")):
            assert r.status_code == 404 and r.json() == {"error": f"no receipt for message {mid}: not accepted"}
        trace = _get_as(app, "127.0.0.1", [f"/messages/{accepted.message_id}"])[0].json()
        assert trace["message"]["receipt_bytes"] == len(accepted.xml)
    finally:
        runtime.close()


def test_the_receipt_of_a_message_id_two_senders_used_is_asked_for_by_sender(tmp_path: Path) -> None:
    """Without ``sender`` the first sender's receipt (as GET /messages/{id}); with it, that sender's
    own, which `hub trace --receipt --sender` prints too; a sender that did not use the id: 404."""
    extra = ('[[routes]]\nname = "mard"\nfrom = "VN-MARD"\nto = "TH-ASW"\ndocument_type = "CO-FORMD"\nschema = "co"\n'
             'deliver = [{ agency = "TH-ASW", mapping = ["co-to-formd"] }]\n')
    config = write_config(tmp_path, extra=extra)
    runtime = Runtime.load(config)
    try:
        mid = "6f1c2a9e-0000-4000-8000-000000000001"
        first = runtime.pipeline.submit(Sender(runtime.config, "VN-MOIT").message(message_id=mid))
        second = runtime.pipeline.submit(Sender(runtime.config, "VN-MARD").message(message_id=mid))
        assert first.accepted and second.accepted and first.xml != second.xml
        app = create_app(runtime.pipeline, runtime.store, runtime.listener_routes(), runtime.gate)
        plain, moit, mard, other = _get_as(app, "127.0.0.1", [f"/messages/{mid}/receipt", f"/messages/{mid}/receipt?sender=VN-MOIT",
                                                              f"/messages/{mid}/receipt?sender=VN-MARD", f"/messages/{mid}/receipt?sender=VN-CUSTOMS"])
        assert (plain.content, moit.content, mard.content) == (first.xml, first.xml, second.xml)
        assert other.status_code == 404 and other.json() == {"error": f"no receipt for message {mid} from VN-CUSTOMS: not accepted"}
    finally:
        runtime.close()
    cli = [sys.executable, "-m", "hub.cli", "trace", "--config", str(config), mid, "--receipt"]
    assert subprocess.run([*cli, "--sender", "VN-MARD"], capture_output=True, cwd=REPO).stdout == second.xml
    assert subprocess.run(cli, capture_output=True, cwd=REPO).stdout == first.xml
    refused = subprocess.run([*cli[:-1], "--sender", "VN-MARD"], capture_output=True, text=True, cwd=REPO)
    assert refused.returncode == 2 and "--sender goes with --receipt" in refused.stderr


def test_the_trace_and_status_over_http_carry_no_file_system_paths_of_the_hub(tmp_path: Path) -> None:
    """The file adapter's "cannot write into /srv/..." and "written to /srv/.../X.xml" stay in
    `hub trace`; the HTTP answers say only the last part of the path."""
    from hub.portal import without_paths
    from hub.tracing import trace_text

    runtime = Runtime.load(write_config(tmp_path))
    customs = tmp_path / "customs-inbox"
    customs.write_text("a file where the agency's folder should be")  # the first delivery fails
    dispatcher = runtime.dispatcher()
    try:
        message = Sender(runtime.config, "VN-MOIT").message()
        assert runtime.pipeline.submit(message).accepted
        mid = message_id_of(message)
        app = create_app(runtime.pipeline, runtime.store, runtime.listener_routes(), runtime.gate)
        dispatcher.start()

        def customs_row() -> dict[str, Any]:
            status = _get_as(app, "127.0.0.1", [f"/messages/{mid}/status"])[0].json()
            return next(d for d in status["destinations"] if d["agency"] == "VN-CUSTOMS")

        assert wait_until(lambda: customs_row()["last_error"] is not None, 20)
        assert customs_row()["last_error"] == "cannot write into …/customs-inbox: File exists"
        customs.unlink()
        assert wait_until(lambda: customs_row()["state"] == "delivered", 20)
        trace = _get_as(app, "127.0.0.1", [f"/messages/{mid}"])[0]
        assert str(tmp_path) not in trace.text
        attempts = next(d for d in trace.json()["deliveries"] if d["destination"] == "VN-CUSTOMS")["attempts"]
        *failed, delivered = [a["detail"] for a in attempts]  # one failed attempt or more, as the retries went
        assert failed and set(failed) == {"cannot write into …/customs-inbox: File exists"}
        assert delivered == f"written to …/VN-MOIT_{mid}.xml"
        assert f"written to {customs}/VN-MOIT_{mid}.xml" in trace_text(runtime.store.trace(mid), mid)  # the operator's view keeps it
    finally:
        dispatcher.stop()
        runtime.close()
    assert without_paths({"a": ["see '/etc/hub/keys/x.crl' and file:///var/lib/hub/y.crl"]}) == {"a": ["see '…/x.crl' and …/y.crl"]}
    kept = ["HTTP 400 from http://10.0.0.5:8080/asw/inbox", "at /co:Certificate/co:Goods", "POST /as4", "CO-FORMD/01 via route r", "text/xml"]
    assert [without_paths(s) for s in kept] == kept
