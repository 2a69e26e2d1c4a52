"""SOAP: zeep as the client of the hub's WSDL; the outbound adapter against a ministry's own WSDL;
SOAP faults and time-outs mapped onto the outbox; a second ministry added by hub.toml alone."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import zeep
from lxml import etree
from starlette.applications import Starlette

from hub.config import load_config
from hub.envelope import read_errors, read_header
from hub.errors import TryAgain
from hub.runtime import Runtime
from hub.store import State
from hub.xml import Limits
from adapters.soap_listener import SOAP11, SOAP12, soap_routes  # after hub: the hub package imports the adapters

from .soap_peer import MinistryService
from .support import EXAMPLES, REPO, HubProcess, Sender, message_id_of, wait_until, write_config

HUB = "urn:sw-hub:soap:1"


def ministry_agency(agency_id: str, service: MinistryService | str, *, port: str = "MinistrySoap11", operation: str = "ReceiveDocument",
                    timeout: float = 1.0, endpoint: str = "") -> str:
    wsdl = service if isinstance(service, str) else service.wsdl_url
    return f"""
[[agencies]]
id = "{agency_id}"
name = "Ministry {agency_id}"
country = "VN"
adapter = "soap"
endpoint = "{endpoint}"
options = {{ wsdl = "{wsdl}", service = "MinistryService", port = "{port}", operation = "{operation}", timeout = {timeout} }}

[[routes]]
name = "co-to-{agency_id}"
from = "VN-MOIT"
to = "{agency_id}"
document_type = "CO-FORMD"
schema = "co"
deliver = [{{ agency = "{agency_id}" }}]
"""


@pytest.fixture
def ministry() -> Iterator[MinistryService]:
    service = MinistryService().start()
    yield service
    service.stop()


# -- inbound: the hub's WSDL, with zeep as the client ---------------------------------------------


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HubProcess, Sender]]:
    folder = tmp_path_factory.mktemp("soap-hub")
    config = write_config(folder)
    with HubProcess(config) as process:
        yield process, Sender(load_config(config), "VN-MOIT")


def soap_post(url: str, body: bytes, version: int = 11) -> httpx.Response:
    media = "application/soap+xml; charset=utf-8" if version == 12 else "text/xml; charset=utf-8"
    return httpx.post(url + "/soap", content=body, headers={"Content-Type": media}, timeout=10)


def fault_of(response: httpx.Response) -> tuple[str, str, str]:
    """(fault code, reason, hub error code) of a SOAP 1.1 or 1.2 fault."""
    root = etree.fromstring(response.content)
    ns = etree.QName(root).namespace
    fault = root.find(f"{{{ns}}}Body/{{{ns}}}Fault")
    assert fault is not None, response.text
    if ns == SOAP11:
        code, reason = fault.findtext("faultcode"), fault.findtext("faultstring")
    else:
        code, reason = fault.findtext(f"{{{ns}}}Code/{{{ns}}}Value"), fault.findtext(f"{{{ns}}}Reason/{{{ns}}}Text")
    return code.split(":")[-1], reason, root.findtext(f".//{{{HUB}}}code")  # type: ignore[union-attr]


def envelope_in_answer(answer: object) -> etree._Element:
    element = answer if isinstance(answer, etree._Element) else getattr(answer, "_value_1", None)
    assert isinstance(element, etree._Element), answer
    return element


@pytest.mark.parametrize("port", ["HubSoap11", "HubSoap12"])
def test_zeep_submits_through_the_hubs_wsdl(hub: tuple[HubProcess, Sender], port: str) -> None:
    process, moit = hub
    client = zeep.Client(f"{process.url}/soap?wsdl")
    service = client.bind("HubService", port)
    data = moit.message()
    receipt = envelope_in_answer(service.Submit(_value_1=etree.fromstring(data)))
    header = read_header(receipt)
    assert header.subject.function == "99" and header.subject.reference == message_id_of(data)
    again = envelope_in_answer(service.Submit(_value_1=etree.fromstring(data)))
    assert etree.tostring(again) == etree.tostring(receipt)  # a duplicate gets the original receipt
    nack = envelope_in_answer(service.Submit(_value_1=etree.fromstring(moit.message(sign=False))))
    assert read_header(nack).subject.function == "00" and read_errors(nack)[0][0] == "ERR21"
    status = httpx.get(f"{process.url}/messages/{message_id_of(data)}/status").json()
    assert status["sender"] == "VN-MOIT" and {d["agency"] for d in status["destinations"]} == {"TH-ASW", "VN-CUSTOMS"}


def test_wsdl_has_both_bindings_at_the_listener(hub: tuple[HubProcess, Sender]) -> None:
    process, _ = hub
    wsdl = etree.fromstring(httpx.get(f"{process.url}/soap?wsdl").content)
    addresses = {e.get("location") for e in wsdl.iter() if isinstance(e.tag, str) and etree.QName(e).localname == "address"}
    assert addresses == {f"{process.url}/soap"}
    bindings = {etree.QName(e[0]).namespace for e in wsdl.iter("{http://schemas.xmlsoap.org/wsdl/}binding")}
    assert bindings == {"http://schemas.xmlsoap.org/wsdl/soap/", "http://schemas.xmlsoap.org/wsdl/soap12/"}
    assert httpx.get(f"{process.url}/soap").status_code == 400


def _soap(ns: str, body: str, header: str = "") -> bytes:
    return f'<s:Envelope xmlns:s="{ns}">{header}<s:Body>{body}</s:Body></s:Envelope>'.encode()


@pytest.mark.parametrize("version,ns,status,client_code", [(11, SOAP11, 500, "Client"), (12, SOAP12, 400, "Sender")])
def test_malformed_requests_get_client_faults(hub: tuple[HubProcess, Sender], version: int, ns: str, status: int, client_code: str) -> None:
    process, moit = hub
    signed = moit.message().split(b"?>", 1)[1].decode()
    cases = {
        "ERR02": b"this is not XML",
        "ERR10": b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]>' + _soap(ns, "<x/>"),
        "ERR00": f'<s:Envelope xmlns:s="{ns}"><s:Header/></s:Envelope>'.encode(),  # no Body
        "ERR00-op": _soap(ns, f'<h:Cancel xmlns:h="{HUB}">{signed}</h:Cancel>'),  # wrong operation
        "ERR04": _soap(ns, f'<h:Submit xmlns:h="{HUB}"><other xmlns="urn:x"/></h:Submit>'),  # no hub envelope
    }
    for name, body in cases.items():
        r = soap_post(process.url, body, version)
        code, reason, hub_code = fault_of(r)
        assert (r.status_code, code, hub_code) == (status, client_code, name.split("-")[0]), (name, r.text)
        assert reason
    r = soap_post(process.url, b'<Envelope xmlns="urn:not-soap"/>', version)
    assert (r.status_code, fault_of(r)[0]) == (500, "VersionMismatch")
    _, reason, _ = fault_of(soap_post(process.url, cases["ERR00-op"], version))
    assert "unknown operation" in reason and "Cancel" in reason
    r = soap_post(process.url, _soap(ns, f'<h:Submit xmlns:h="{HUB}">{signed}</h:Submit>',
                                      f'<s:Header><x:Security xmlns:x="urn:x" s:mustUnderstand="{1 if version == 11 else "true"}"/></s:Header>'), version)
    assert fault_of(r)[0] == "MustUnderstand"
    # the other version's envelope in a SOAP 1.2 request, and a well-formed request that works
    ok = soap_post(process.url, _soap(ns, f'<h:Submit xmlns:h="{HUB}">{signed}</h:Submit>'), version)
    assert ok.status_code == 200 and etree.fromstring(ok.content).find(f".//{{{HUB}}}SubmitResponse") is not None


def test_store_unavailable_is_a_server_fault_with_retry_after() -> None:
    def submit(data: bytes, who: str | None):  # type: ignore[no-untyped-def]
        raise TryAgain("database is down")

    app = Starlette(routes=soap_routes(submit, Limits()))
    body = _soap(SOAP11, f'<h:Submit xmlns:h="{HUB}"><Envelope xmlns="urn:sw-hub:envelope:1"/></h:Submit>')

    async def post(data: bytes, media: str) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as client:
            return await client.post("/soap", content=data, headers={"Content-Type": media})

    r = asyncio.run(post(body, "text/xml"))
    assert r.status_code == 500 and r.headers["Retry-After"] == "1"
    assert fault_of(r)[0] == "Server" and fault_of(r)[2] == "ERR50"
    r = asyncio.run(post(body.replace(SOAP11.encode(), SOAP12.encode()), "application/soap+xml"))
    assert r.status_code == 500 and fault_of(r)[0] == "Receiver"


def test_a_fault_inside_the_hub_is_a_server_fault_with_its_code() -> None:
    def submit(data: bytes, who: str | None):  # type: ignore[no-untyped-def]
        raise RuntimeError("a bug")

    app = Starlette(routes=soap_routes(submit, Limits()))
    body = _soap(SOAP11, f'<h:Submit xmlns:h="{HUB}"><Envelope xmlns="urn:sw-hub:envelope:1"/></h:Submit>')

    async def post() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as client:
            return await client.post("/soap", content=body, headers={"Content-Type": "text/xml"})

    r = asyncio.run(post())
    kind, text, code = fault_of(r)
    assert r.status_code == 500 and kind == "Server" and code == "ERR99" and "send it again" in text


def test_submit_runs_through_the_given_runner() -> None:
    """``hub serve`` passes its gate: a SOAP message waits for a slot on the event loop, like
    POST /messages, before it is parsed and before it is submitted, instead of holding a thread
    of the shared pool (and a parsed tree) while it waits."""
    ran: list[str] = []

    def submit(data: bytes, who: str | None):  # type: ignore[no-untyped-def]
        raise TryAgain("database is down")

    async def run(func, *args):  # type: ignore[no-untyped-def]
        ran.append(func.__name__)
        return func(*args)

    app = Starlette(routes=soap_routes(submit, Limits(), run=run))
    body = _soap(SOAP11, f'<h:Submit xmlns:h="{HUB}"><Envelope xmlns="urn:sw-hub:envelope:1"/></h:Submit>')

    async def post() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as client:
            return await client.post("/soap", content=body, headers={"Content-Type": "text/xml"})

    assert asyncio.run(post()).status_code == 500 and ran == ["unwrap", "submit"]


class RecordingTransport(zeep.Transport):
    """zeep's transport, keeping the bytes of the last request it sent."""

    sent = b""

    def post(self, address, message, headers):  # type: ignore[no-untyped-def]
        self.sent = message
        return super().post(address, message, headers)


def _line_of(data: bytes, text: bytes) -> int:
    return data[:data.index(text)].count(b"\n") + 1


@pytest.mark.parametrize("port", ["HubSoap11", "HubSoap12"])
def test_a_payload_fault_is_reported_on_the_line_the_client_sent(hub: tuple[HubProcess, Sender], port: str) -> None:
    """The NACK's line is the request's, not the line inside the hub envelope taken out of it:
    zeep's request, and a pretty-printed one with lines before the envelope."""
    process, moit = hub
    co = (EXAMPLES / "co-certificate.xml").read_bytes()
    bad = moit.message(co.replace(b">090111</HSCode>", b">09X111</HSCode>", 1))
    transport = RecordingTransport()
    service = zeep.Client(f"{process.url}/soap?wsdl", transport=transport).bind("HubService", port)
    nack = envelope_in_answer(service.Submit(_value_1=etree.fromstring(bad)))
    path = "/COCertificate/GoodsItem[1]/HSCode"
    (code, _, location), = read_errors(nack)
    assert (code, location) == ("ERR05", f"line {_line_of(transport.sent, b'09X111')}, {path}")
    ns = SOAP11 if port == "HubSoap11" else SOAP12
    pretty = (f'<?xml version="1.0" encoding="UTF-8"?>\n<!-- one -->\n<!-- two -->\n<s:Envelope xmlns:s="{ns}">\n  <s:Header/>\n'
              f'  <s:Body>\n    <h:Submit xmlns:h="{HUB}">\n').encode() + bad.split(b"?>", 1)[1].lstrip() + b"\n    </h:Submit>\n  </s:Body>\n</s:Envelope>\n"
    r = soap_post(process.url, pretty, 11 if port == "HubSoap11" else 12)
    nack = etree.fromstring(r.content).find(f".//{{{HUB}}}SubmitResponse")[0]
    assert r.status_code == 200 and read_errors(nack)[0][2] == f"line {_line_of(pretty, b'09X111')}, {path}"


def test_refusals_state_the_configured_limits_and_where_the_request_is_broken() -> None:
    """The SOAP wrapper's allowances (bytes, depth) are the hub's business: a fault states the
    configured limits; a parse fault names its line."""
    def submit(data: bytes, who: str | None):  # type: ignore[no-untyped-def]
        raise AssertionError("nothing here reaches the pipeline")

    app = Starlette(routes=soap_routes(submit, Limits(max_bytes=1_000_000, max_depth=40)))

    async def post(data: bytes) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as client:
            return await client.post("/soap", content=data, headers={"Content-Type": "text/xml"})

    def reason(data: bytes, code: str) -> str:
        _, text, hub_code = fault_of(asyncio.run(post(data)))
        assert hub_code == code, text
        return text

    deep = reason(_soap(SOAP11, "<a>" * 50 + "</a>" * 50), "ERR12")
    assert "limit of 40 for the hub envelope" in deep and "43" not in deep, deep
    large = reason(b"<x>" + b"a" * 1_100_000 + b"</x>", "ERR11")
    assert "larger than 1000000 bytes, the limit for a message" in large and "1065536" not in large, large
    broken = reason(f'<s:Envelope xmlns:s="{SOAP11}">\n<s:Body>\n<oops></s:Body></s:Envelope>'.encode(), "ERR02")
    assert "line 3" in broken, broken
    doctype = reason(b'<?xml version="1.0"?>\n<!DOCTYPE x>' + _soap(SOAP11, "<x/>"), "ERR10")
    assert doctype.endswith("(line 1)"), doctype


# -- outbound: the adapter against a ministry's WSDL -----------------------------------------------


def runtime_with(tmp_path: Path, extra: str, **kwargs) -> tuple[Runtime, Sender]:  # type: ignore[no-untyped-def]
    runtime = Runtime.load(write_config(tmp_path, extra=extra, **kwargs))
    return runtime, Sender(runtime.config, "VN-MOIT")


def deliver_all(runtime: Runtime, count: int, to: str, timeout: float = 30) -> list[str]:
    moit = Sender(runtime.config, "VN-MOIT")
    ids = []
    for _ in range(count):
        ack = runtime.pipeline.submit(moit.message(to=to))
        assert ack.accepted, ack.errors
        ids.append(ack.message_id)
    dispatcher = runtime.dispatcher()
    assert dispatcher.drain(timeout)
    dispatcher.stop()
    return ids  # type: ignore[return-value]


def test_delivers_the_signed_envelope_through_the_ministrys_wsdl(tmp_path: Path, ministry: MinistryService) -> None:
    runtime, _ = runtime_with(tmp_path, ministry_agency("VN-MOH", ministry))
    ids = deliver_all(runtime, 5, "VN-MOH")
    assert set(ministry.received) == set(ids) and ministry.unique == 5
    rows = runtime.store.rows(destination="VN-MOH")
    assert all(r.state is State.DELIVERED and r.attempts == 1 for r in rows)
    attempt = runtime.store.trace(ids[0]).attempts[0]
    assert "SOAP ReceiveDocument" in attempt.detail and "ACCEPTED" in attempt.detail
    delivered = etree.fromstring(ministry.bodies[ids[0]])
    assert delivered.find("{http://www.w3.org/2000/09/xmldsig#}Signature") is not None  # the hub's signature travels
    runtime.close()


@pytest.mark.parametrize("port", ["MinistrySoap11", "MinistrySoap12"])
def test_client_fault_is_dead_lettered_with_the_ministrys_text(tmp_path: Path, ministry: MinistryService, port: str) -> None:
    ministry.mode = "client-fault"
    runtime, _ = runtime_with(tmp_path, ministry_agency("VN-MOH", ministry, port=port))
    deliver_all(runtime, 2, "VN-MOH")
    rows = runtime.store.rows(destination="VN-MOH")
    assert [r.state for r in rows] == [State.DEAD, State.DEAD] and all(r.attempts == 1 for r in rows)
    assert "MOH-E17: the permit number is not known to the ministry" in rows[0].last_error  # type: ignore[operator]
    assert ("Client" if port.endswith("11") else "Sender") in rows[0].last_error  # type: ignore[operator]
    runtime.close()


@pytest.mark.parametrize("port", ["MinistrySoap11", "MinistrySoap12"])
def test_server_faults_are_retried_then_delivered(tmp_path: Path, ministry: MinistryService, port: str) -> None:
    ministry.fail_first = 4
    runtime, _ = runtime_with(tmp_path, ministry_agency("VN-MOH", ministry, port=port), concurrency=1)
    ids = deliver_all(runtime, 2, "VN-MOH")
    rows = runtime.store.rows(destination="VN-MOH")
    assert all(r.state is State.DELIVERED for r in rows) and sum(r.attempts for r in rows) == 6
    assert set(ministry.received) == set(ids)
    details = [a.detail for a in runtime.store.trace(ids[0]).attempts if a.outcome is State.PENDING]
    assert details and ("Server" if port.endswith("11") else "Receiver") in details[0] and "database unavailable" in details[0]
    runtime.close()


def test_timeouts_and_503_are_retried(tmp_path: Path, ministry: MinistryService) -> None:
    ministry.mode, ministry.delay = "slow", 1.5
    runtime, moit = runtime_with(tmp_path, ministry_agency("VN-MOH", ministry, timeout=0.3), max_attempts=50, max_delay=0.2)
    ack = runtime.pipeline.submit(moit.message(to="VN-MOH"))
    dispatcher = runtime.dispatcher()
    dispatcher.start()
    try:
        assert wait_until(lambda: runtime.store.rows(destination="VN-MOH")[0].attempts >= 2, 10)
        ministry.mode = "http-503"
        assert wait_until(lambda: any("HTTP 503" in a.detail for a in runtime.store.trace(ack.message_id).attempts), 10)  # type: ignore[arg-type]
        ministry.mode = "ok"
        assert wait_until(lambda: runtime.store.rows(destination="VN-MOH")[0].state is State.DELIVERED, 10)
    finally:
        dispatcher.stop()
    details = [a.detail for a in runtime.store.trace(ack.message_id).attempts]  # type: ignore[arg-type]
    assert any("time-out" in d for d in details), details
    runtime.close()


def test_an_answer_larger_than_the_limit_is_not_read_and_the_call_is_retried(tmp_path: Path, ministry: MinistryService) -> None:
    """A ministry answering more than ``[hub] max_bytes`` is cut off there: the hub never holds
    an unbounded answer in memory; the call is tried again (same message id) until it answers."""
    ministry.mode = "huge"
    runtime, moit = runtime_with(tmp_path, ministry_agency("VN-MOH", ministry), max_attempts=50, max_delay=0.2)
    limit = runtime.config.hub.limits.max_bytes
    ministry.huge_bytes = limit + 1
    ack = runtime.pipeline.submit(moit.message(to="VN-MOH"))
    dispatcher = runtime.dispatcher()
    dispatcher.start()
    try:
        assert wait_until(lambda: runtime.store.rows(destination="VN-MOH")[0].attempts >= 2, 10)
        ministry.mode = "ok"
        assert wait_until(lambda: runtime.store.rows(destination="VN-MOH")[0].state is State.DELIVERED, 10)
    finally:
        dispatcher.stop()
    details = [a.detail for a in runtime.store.trace(ack.message_id).attempts]  # type: ignore[arg-type]
    assert any(f"larger than {limit:,} bytes" in d for d in details), details
    assert set(ministry.received) == {ack.message_id}
    runtime.close()


def test_ministry_down_at_start_is_retried(tmp_path: Path) -> None:
    ministry = MinistryService().start()
    port = int(ministry.base.rsplit(":", 1)[1])
    wsdl_url = ministry.wsdl_url
    ministry.stop()
    runtime, moit = runtime_with(tmp_path, ministry_agency("VN-MOH", wsdl_url), max_attempts=100, max_delay=0.2)
    ack = runtime.pipeline.submit(moit.message(to="VN-MOH"))
    dispatcher = runtime.dispatcher()
    dispatcher.start()
    try:
        assert wait_until(lambda: runtime.store.rows(destination="VN-MOH")[0].attempts >= 2, 10)
        assert "cannot load the WSDL" in (runtime.store.rows(destination="VN-MOH")[0].last_error or "")
        ministry = MinistryService().start(port)
        assert wait_until(lambda: runtime.store.rows(destination="VN-MOH")[0].state is State.DELIVERED, 10)
        assert list(ministry.received) == [ack.message_id]
    finally:
        dispatcher.stop()
        ministry.stop()
        runtime.close()


def test_zeep_reaches_only_configured_places(tmp_path: Path, ministry: MinistryService) -> None:
    """A local WSDL whose address points elsewhere is refused unless the agency names the endpoint;
    a WSDL that imports a schema from the network is refused."""
    other = MinistryService().start()
    try:
        wsdl = tmp_path / "moh.wsdl"
        wsdl.write_bytes(other.wsdl())  # its soap:address is the other service's
        runtime, _ = runtime_with(tmp_path / "a", ministry_agency("VN-MOH", str(wsdl)))
        deliver_all(runtime, 1, "VN-MOH")
        row = runtime.store.rows(destination="VN-MOH")[0]
        assert row.state is State.DEAD and "refused" in (row.last_error or "") and other.requests == 0
        runtime.close()

        runtime, _ = runtime_with(tmp_path / "b", ministry_agency("VN-MOH", str(wsdl), endpoint=f"{ministry.base}/ministry/soap11"))
        deliver_all(runtime, 1, "VN-MOH")
        assert runtime.store.rows(destination="VN-MOH")[0].state is State.DELIVERED and ministry.unique == 1
        runtime.close()

        importing = tmp_path / "importing.wsdl"
        importing.write_bytes(other.wsdl().replace(b"<wsdl:types>", f'<wsdl:import namespace="urn:x" location="{other.base}/x.wsdl"/><wsdl:types>'.encode()))
        runtime, _ = runtime_with(tmp_path / "c", ministry_agency("VN-MOH", str(importing), endpoint=f"{ministry.base}/ministry/soap11"))
        deliver_all(runtime, 1, "VN-MOH")
        row = runtime.store.rows(destination="VN-MOH")[0]
        assert row.state is State.DEAD and other.wsdl_fetches == 0
        runtime.close()
    finally:
        other.stop()


# -- a second ministry is a hub.toml entry ---------------------------------------------------------


def test_a_second_soap_ministry_is_only_a_config_entry(tmp_path: Path) -> None:
    """Two ministries with different WSDLs, namespaces, operations and SOAP versions, added by
    hub.toml alone; MOIT submits over SOAP (zeep) and each ministry gets its own copy over SOAP."""
    moh = MinistryService().start()
    mot = MinistryService(namespace="urn:vn:mot:motcua:2", operation="NhanHoSo").start()
    try:
        extra = ministry_agency("VN-MOH", moh) + ministry_agency("VN-MOT", mot, port="MinistrySoap12", operation="NhanHoSo")
        config = write_config(tmp_path, extra=extra)
        check = subprocess.run([sys.executable, "-m", "hub.cli", "check", "--config", str(config)], capture_output=True, text=True, cwd=REPO)
        assert check.returncode == 0, check.stderr
        moit = Sender(load_config(config), "VN-MOIT")
        with HubProcess(config) as process:
            service = zeep.Client(f"{process.url}/soap?wsdl").bind("HubService", "HubSoap12")
            sent = {to: [message_id_of(m) for m in (moit.message(to=to) for _ in range(3))
                         if read_header(envelope_in_answer(service.Submit(_value_1=etree.fromstring(m)))).subject.function == "99"]
                    for to in ("VN-MOH", "VN-MOT")}
            assert wait_until(lambda: moh.unique == 3 and mot.unique == 3, 20)
        assert set(moh.received) == set(sent["VN-MOH"]) and set(mot.received) == set(sent["VN-MOT"])
    finally:
        moh.stop()
        mot.stop()



# -- mutual TLS ------------------------------------------------------------------------------------


def _tls_files(folder: Path) -> dict[str, str]:
    """A CA, the ministry's server certificate for 127.0.0.1 and the hub's client certificate."""
    import ipaddress
    from datetime import datetime, timedelta, timezone

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    from hub.keys import Issuer, issue, new_key, write_certificate, write_private_key

    ca_key = new_key("ec")
    ca = Issuer(ca_key, issue(ca_key, "Test NSW TLS CA", ca=True))
    server_key = new_key("ec")
    now = datetime.now(timezone.utc)
    server = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ministry.test")]))
              .issuer_name(ca.certificate.subject).public_key(server_key.public_key())
              .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
              .not_valid_after(now + timedelta(days=1))
              .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
              .sign(ca_key, hashes.SHA256()))
    client_key = new_key("ec")
    client = issue(client_key, "VN-NSW hub client", organization="VN-NSW", issuer=ca)
    files = {}
    for name, key, cert in (("server", server_key, server), ("client", client_key, client)):
        write_private_key(folder / f"{name}.key", key)
        write_certificate(folder / f"{name}.crt", cert)
        files[name] = str(folder / f"{name}.crt")
        files[f"{name}_key"] = str(folder / f"{name}.key")
    write_certificate(folder / "ca.crt", ca.certificate)
    files["ca"] = str(folder / "ca.crt")
    return files


def test_mutual_tls_with_the_configured_client_certificate(tmp_path: Path) -> None:
    files = _tls_files(tmp_path / "tls")
    ministry = MinistryService().start(tls=(files["server"], files["server_key"], files["ca"]))
    try:
        tls = f', client_cert = "{files["client"]}", client_key = "{files["client_key"]}", ca = "{files["ca"]}" }}'
        runtime, _ = runtime_with(tmp_path / "a", ministry_agency("VN-MOH", ministry).replace(" }\n", tls + "\n", 1))
        ids = deliver_all(runtime, 2, "VN-MOH")
        assert set(ministry.received) == set(ids) and ministry.client_subjects == {"VN-NSW hub client"}
        runtime.close()
        # without the client certificate the handshake fails: retried, never delivered
        no_cert = f', ca = "{files["ca"]}" }}'
        runtime, _ = runtime_with(tmp_path / "b", ministry_agency("VN-MOH", ministry).replace(" }\n", no_cert + "\n", 1), max_attempts=2)
        deliver_all(runtime, 1, "VN-MOH")
        row = runtime.store.rows(destination="VN-MOH")[0]
        assert row.state is State.DEAD and row.attempts == 2 and "gave up" in (row.last_error or "")
        runtime.close()
    finally:
        ministry.stop()
