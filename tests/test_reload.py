"""Reloading keys and trust on SIGHUP, and ``GET /metrics``, on a real ``hub serve`` process."""

from __future__ import annotations

import base64
import logging
import os
import signal
import threading
import time
import warnings
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from lxml import etree

from hub.client import signed_bytes
from hub.config import load_config
from hub.envelope import read_errors
from hub.errors import Code, Rejected
from hub.keys import init_keys, issue, new_key, write_certificate, write_private_key
from hub.metrics import ACCEPTED, DUPLICATE, Counters
from hub.runtime import Runtime
from hub.server import create_app
from hub.trust import DSIG, Signer, Verifier, load_certificates, subject_of

from .pki import pki_config, signed
from .support import HubProcess, Sender, tampered, wait_until, write_config


def code_of(response: httpx.Response) -> str:
    errors = read_errors(etree.fromstring(response.content))
    assert errors and errors[0][1], response.text
    return errors[0][0]


def signing_certificate(answer: bytes) -> x509.Certificate:
    """The certificate in the KeyInfo of a receipt or NACK."""
    text = etree.fromstring(answer).findtext(f"{{{DSIG}}}Signature/{{{DSIG}}}KeyInfo/{{{DSIG}}}X509Data/{{{DSIG}}}X509Certificate")
    assert text, "the hub signs its answers"
    return x509.load_der_x509_certificate(base64.b64decode("".join(text.split())))


def published(hub: HubProcess) -> list[x509.Certificate]:
    response = httpx.get(hub.url + "/keys", timeout=10)
    assert response.status_code == 200
    return x509.load_pem_x509_certificates(response.content)


def sighup(hub: HubProcess, line: str, times: int = 1) -> None:
    """Sends SIGHUP and waits until the log shows ``line`` ``times`` more times than before."""
    assert hub.proc is not None
    before = hub.log.read_text().count(line)
    hub.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: hub.log.read_text().count(line) >= before + times, 20), hub.log.read_text()[-3000:]


RELOADED = "reloaded keys and trust from"
REFUSED = "reload refused, still serving with the keys and trust loaded before"


def metrics(hub: HubProcess) -> dict[str, float]:
    """Each sample of ``GET /metrics`` (name and labels) -> its value."""
    response = httpx.get(hub.url + "/metrics", timeout=10)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain; version=0.0.4")
    out = {}
    for line in response.text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def sample(found: dict[str, float], metric: str, **labels: str) -> float:
    """The one sample of ``metric`` whose labels include ``labels``."""
    hits = [value for key, value in found.items()
            if key.split("{")[0] == metric and all(f'{label}="{want}"' in key for label, want in labels.items())]
    assert len(hits) == 1, (metric, labels, [k for k in found if k.startswith(metric)])
    return hits[0]


def new_moit_certificate(tmp_path: Path, config: Path) -> Signer:
    """A second signing key of VN-MOIT, which no configuration trusts yet."""
    key = new_key("ec")
    cert = issue(key, "Ministry of Industry and Trade 2", country="VN", organization="VN-MOIT")
    write_certificate(tmp_path / "keys" / "VN-MOIT-2.crt", cert)
    return Signer(key, cert)


def trust_it(tmp_path: Path, config: Path) -> None:
    pinned = f'certificates = ["{tmp_path}/keys/VN-MOIT.crt"]'
    assert pinned in config.read_text()
    config.write_text(config.read_text().replace(pinned, f'certificates = ["{tmp_path}/keys/VN-MOIT.crt", "{tmp_path}/keys/VN-MOIT-2.crt"]'))


def test_sighup_trusts_a_new_agency_certificate_while_requests_flow(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    moit = Sender(load_config(config), "VN-MOIT")
    new = new_moit_certificate(tmp_path, config)
    old_signed = [moit.message() for _ in range(60)]
    with HubProcess(config) as hub:
        refused = hub.post(signed_bytes(moit.envelope(), new))
        assert refused.status_code == 400 and code_of(refused) == "ERR29"  # UNKNOWN_SIGNER

        statuses: list[int] = []

        def stream() -> None:  # requests in flight while the hub reloads
            with httpx.Client(timeout=30) as client:
                statuses.extend(hub.post(m, client).status_code for m in old_signed)

        t = threading.Thread(target=stream)
        t.start()
        trust_it(tmp_path, config)
        sighup(hub, RELOADED)
        t.join()
        assert statuses == [200] * len(old_signed)

        accepted = hub.post(signed_bytes(moit.envelope(), new))  # the same document, a new message id
        assert accepted.status_code == 200, accepted.text
        assert hub.post(moit.message()).status_code == 200  # the old certificate is still pinned too
        log = hub.log.read_text()
        assert "need a restart" not in log and REFUSED not in log
        assert sample(metrics(hub), "swhub_config_last_reload_successful") == 1


def test_a_broken_reload_keeps_the_running_keys_and_says_why(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    moit = Sender(load_config(config), "VN-MOIT")
    hub_cert = load_certificates(tmp_path / "keys" / "hub.crt")[0]
    text = config.read_text()
    with HubProcess(config) as hub:
        config.write_text(text + "\n[[routes]\n")  # not TOML
        sighup(hub, REFUSED)
        assert "not valid TOML" in hub.log.read_text()

        config.write_text(text)
        write_private_key(tmp_path / "keys" / "hub.key", new_key("ec"))  # the key no longer matches hub.crt
        sighup(hub, REFUSED)
        refusal = [line for line in hub.log.read_text().splitlines() if REFUSED in line][-1]
        assert f"{tmp_path}/keys/hub.key: hub.key: the private key does not belong to the certificate" in refusal

        answer = hub.post(moit.message())
        assert answer.status_code == 200
        assert signing_certificate(answer.content) == hub_cert
        Verifier().verify(etree.fromstring(answer.content), [hub_cert], "the hub")
        assert published(hub) == [hub_cert]
        assert sample(metrics(hub), "swhub_config_last_reload_successful") == 0


def test_a_rotated_hub_key_signs_receipts_after_sighup(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    keys = tmp_path / "keys"
    config.write_text(config.read_text().replace("max_depth = 40\n", f'max_depth = 40\nnext_key = "{keys}/hub-next.key"\n'
                                                 f'next_certificate = "{keys}/hub-next.crt"\n'))
    init_keys(load_config(config))
    current, upcoming = load_certificates(keys / "hub.crt")[0], load_certificates(keys / "hub-next.crt")[0]
    moit = Sender(load_config(config), "VN-MOIT")
    with HubProcess(config) as hub:
        assert published(hub) == [current, upcoming]
        assert signing_certificate(hub.post(moit.message()).content) == current

        # the rotation: the next key signs from now on, the old certificate stays published as the previous one
        text = config.read_text()
        text = text.replace(f'next_key = "{keys}/hub-next.key"\nnext_certificate = "{keys}/hub-next.crt"\n',
                            f'previous_certificate = "{keys}/hub.crt"\n')
        config.write_text(text.replace(f'key = "{keys}/hub.key"\ncertificate = "{keys}/hub.crt"',
                                       f'key = "{keys}/hub-next.key"\ncertificate = "{keys}/hub-next.crt"'))
        sighup(hub, RELOADED)

        assert published(hub) == [upcoming, current]  # what the outbox still holds signed by the old key stays trusted
        assert f"previous certificate serial {current.serial_number:x}" in hub.log.read_text()
        receipt = hub.post(moit.message())
        assert receipt.status_code == 200 and signing_certificate(receipt.content) == upcoming
        Verifier().verify(etree.fromstring(receipt.content), [upcoming], "the hub")
        nack = hub.post(tampered(moit.message()))
        assert nack.status_code == 400 and signing_certificate(nack.content) == upcoming
        assert "need a restart" not in hub.log.read_text()


def test_every_worker_reloads_when_the_parent_gets_sighup(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    moit = Sender(load_config(config), "VN-MOIT")
    new = new_moit_certificate(tmp_path, config)
    with HubProcess(config, "--workers", "2") as hub:
        assert code_of(hub.post(signed_bytes(moit.envelope(), new))) == "ERR29"
        trust_it(tmp_path, config)
        sighup(hub, RELOADED, times=2)  # one line per worker
        # a new connection per message: the kernel spreads them over both workers
        answers = [hub.post(signed_bytes(moit.envelope(), new)) for _ in range(12)]
        assert [a.status_code for a in answers] == [200] * 12
        # the counters are shared: whichever worker answers the scrape reports both workers' messages
        for _ in range(4):
            found = metrics(hub)
            assert sample(found, "swhub_messages_accepted_total") == 12
            assert sample(found, "swhub_messages_rejected_total", code="ERR29") == 1


def test_metrics_show_certificates_near_expiry_and_follow_a_reload(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    mard = tmp_path / "keys" / "VN-MARD.crt"
    soon_key = new_key("ec")
    soon = issue(soon_key, "VN-MARD", organization="VN-MARD", days=10)  # within the default 30-day window
    write_certificate(mard, soon)
    moit = Sender(load_config(config), "VN-MOIT")
    hub_cert = load_certificates(tmp_path / "keys" / "hub.crt")[0]
    with HubProcess(config) as hub:
        message = moit.message()
        assert hub.post(moit.message()).status_code == 200 and hub.post(message).status_code == 200
        assert code_of(hub.post(tampered(moit.message()))) == "ERR22"

        found = metrics(hub)
        mard_labels = {"owner": "VN-MARD", "subject": subject_of(soon), "serial": f"{soon.serial_number:x}"}
        assert sample(found, "swhub_certificate_expiring", **mard_labels) == 1
        assert 8 * 86400 < sample(found, "swhub_certificate_expiry_seconds", **mard_labels) <= 10 * 86400
        hub_labels = {"owner": "hub", "role": "signing certificate", "serial": f"{hub_cert.serial_number:x}"}
        assert sample(found, "swhub_certificate_expiring", **hub_labels) == 0
        assert sample(found, "swhub_certificate_expiry_seconds", **hub_labels) > 300 * 86400
        assert sample(found, "swhub_messages_accepted_total") == 2
        assert sample(found, "swhub_messages_duplicate_total") == 0
        assert sample(found, "swhub_messages_rejected_total", code="ERR22", name="SIGNATURE_INVALID") == 1
        assert sample(found, "swhub_messages_rejected_total", code="ERR29") == 0
        assert sum(v for k, v in found.items() if k.startswith("swhub_outbox_rows{")) == 4  # 2 messages x 2 destinations
        assert sample(found, "swhub_store_up") == 1

        assert hub.post(message).status_code == 200  # a repeat: answered with the original receipt
        assert sample(metrics(hub), "swhub_messages_duplicate_total") == 1

        renewed = issue(soon_key, "VN-MARD", organization="VN-MARD", days=365)
        write_certificate(mard, renewed)
        sighup(hub, RELOADED)
        found = metrics(hub)
        assert sample(found, "swhub_certificate_expiring", owner="VN-MARD", serial=f"{renewed.serial_number:x}") == 0
        assert not [k for k in found if f'serial="{soon.serial_number:x}"' in k]


def test_serve_logs_each_expiry_warning_once_at_start_up(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    soon = new_key("ec")
    write_certificate(tmp_path / "keys" / "VN-MARD.crt", issue(soon, "VN-MARD", organization="VN-MARD", days=10))
    write_private_key(tmp_path / "keys" / "VN-MARD.key", soon)
    line = f"WARNING: VN-MARD pinned certificate CN=VN-MARD,O=VN-MARD ({tmp_path}/keys/VN-MARD.crt): expires in 9 day(s)"
    with HubProcess(config) as hub:
        assert wait_until(lambda: line in hub.log.read_text(), 20), hub.log.read_text()[-3000:]
        time.sleep(0.5)  # a second line would follow at once
        assert hub.log.read_text().count(line) == 1, hub.log.read_text()[-3000:]


def test_a_reload_applies_keys_and_trust_and_names_what_needs_a_restart(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = write_config(tmp_path)
    moit = Sender(load_config(config), "VN-MOIT")
    new = new_moit_certificate(tmp_path, config)
    runtime = Runtime.load(config)
    try:
        port = runtime.config.hub.listen_port
        assert not runtime.pipeline.submit(signed_bytes(moit.envelope(), new)).accepted
        trust_it(tmp_path, config)
        text = config.read_text().replace(f"127.0.0.1:{port}", f"127.0.0.1:{port + 1}").replace("max_attempts = 6", "max_attempts = 7")
        config.write_text(text.replace('name = "Customs"', 'name = "General Department of Customs"'))
        with caplog.at_level(logging.INFO, logger="hub.runtime"):
            assert runtime.reload()
        assert runtime.pipeline.submit(signed_bytes(moit.envelope(), new)).accepted
        assert runtime.config.hub.listen_port == port and runtime.config.agencies["VN-CUSTOMS"].name == "Customs"
        warning = next(r.getMessage() for r in caplog.records if "need a restart" in r.getMessage())
        assert "hub.listen_port" in warning and "agencies[VN-CUSTOMS].name" in warning and "[[routes]]" in warning and "[retry]" in warning
        assert "VN-MOIT" not in warning  # its certificates were applied
    finally:
        runtime.close()


def test_counters_add_up_over_forked_workers() -> None:
    counters = Counters(workers=3)
    pids = []
    for worker in (1, 2):
        with warnings.catch_warnings():  # Python 3.12+ warns about fork() when other tests left threads behind
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # a worker: counts into its own row of the shared mapping
            counters.use_row(worker)
            for _ in range(worker * 10):
                counters.add(ACCEPTED)
            counters.add("ERR22")
            os._exit(0)
        pids.append(pid)
    counters.add(ACCEPTED)
    for pid in pids:
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    totals = counters.totals()
    assert totals[ACCEPTED] == 31 and totals["ERR22"] == 2 and totals[DUPLICATE] == 0


def test_a_reload_takes_new_cas_and_crls_and_keeps_the_last_good_crl(tmp_path: Path) -> None:
    path, pki = pki_config(tmp_path)
    p = pki.folder
    runtime = Runtime.load(path)
    try:
        policy = runtime.trust.policy("VN-MOIT")  # type: ignore[union-attr]  # held like an adapter holds it
        moved = pki.leaf(pki.rogue, "VN-MOIT")  # VN-MOIT moves to another CA
        with pytest.raises(Rejected) as info:
            Verifier().verify(signed(path, moved), policy, "agency VN-MOIT")
        assert info.value.code is Code.UNTRUSTED_CHAIN
        pki.revoke("rogue-root.crl", pki.rogue)
        text = path.read_text()
        path.write_text(text.replace(f'trust_anchors = ["{p}/gov-root.crt"]', f'trust_anchors = ["{p}/gov-root.crt", "{p}/rogue-root.crt"]')
                            .replace(f'"file://{p}/gov-issuing.crl"]', f'"file://{p}/gov-issuing.crl", "{p}/rogue-root.crl"]'))
        (p / "gov-issuing.crl").unlink()  # unreadable at the reload: the CRL read before still serves
        assert runtime.reload()
        assert Verifier().verify(signed(path, moved), policy, "agency VN-MOIT").certificate == moved.certificate
        assert Verifier().verify(signed(path, pki.moit), policy, "agency VN-MOIT").certificate == pki.moit.certificate
        assert [e.location for e in runtime.keys if e.owner == "VN-MOIT" and e.role == "trust anchor"] == [f"{p}/gov-root.crt", f"{p}/rogue-root.crt"]
    finally:
        runtime.close()


def test_metrics_are_served_only_to_the_clients_in_metrics_from(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    with HubProcess(config) as hub:  # the default: loopback may scrape
        assert sample(metrics(hub), "swhub_store_up") == 1
    text = config.read_text()
    config.write_text(text.replace("max_depth = 40\n", 'max_depth = 40\nmetrics_from = ["10.0.0.0/8"]\n'))
    with HubProcess(config) as hub:  # the same loopback client, no longer allowed
        refused = httpx.get(hub.url + "/metrics", timeout=10)
        assert refused.status_code == 403 and refused.headers["content-type"].startswith("text/plain")
        assert "not served to 127.0.0.1" in refused.text and "swhub_" not in refused.text
        assert httpx.get(hub.url + "/health", timeout=10).status_code == 200  # the rest of the listener is not affected


@pytest.mark.parametrize(
    ("metrics_from", "client", "status"),
    [
        (None, "::1", 200),
        (None, "::ffff:127.0.0.1", 200),  # IPv4 on a dual-stack socket
        (None, "10.1.2.3", 403),
        (None, "testclient", 403),  # not an address at all
        ('["10.0.0.0/8", "2001:db8::/32"]', "10.1.2.3", 200),
        ('["10.0.0.0/8", "2001:db8::/32"]', "2001:db8::7", 200),
        ('["10.0.0.0/8", "2001:db8::/32"]', "127.0.0.1", 403),
        ("[]", "127.0.0.1", 404),
    ],
)
def test_metrics_from_decides_by_the_client_address(tmp_path: Path, metrics_from: str | None, client: str, status: int) -> None:
    import asyncio

    config = write_config(tmp_path)
    if metrics_from is not None:
        config.write_text(config.read_text().replace("max_depth = 40\n", f"max_depth = 40\nmetrics_from = {metrics_from}\n"))
    runtime = Runtime.load(config)
    try:
        app = create_app(runtime.pipeline, runtime.store, runtime.listener_routes(), runtime.gate)

        async def scrape() -> httpx.Response:  # the app in process, as seen from ``client``
            transport = httpx.ASGITransport(app=app, client=(client, 50000))
            async with httpx.AsyncClient(transport=transport, base_url="http://hub") as http:
                return await http.get("/metrics")

        response = asyncio.run(scrape())
        assert response.status_code == status, response.text
        assert ("swhub_store_up 1" in response.text) == (status == 200)
    finally:
        runtime.close()


class _SlowReload:
    """Stands in for a Runtime: each reload is counted and, while ``hold`` is clear, blocks."""

    def __init__(self) -> None:
        self.calls = 0
        self.started = threading.Event()
        self.hold = threading.Event()

    def reload(self) -> bool:
        self.calls += 1
        self.started.set()
        self.hold.wait(10)
        return True


def test_sighups_during_a_reload_make_exactly_one_more() -> None:
    from hub.serve import _poke, _reloader, _wakeup_pipe

    read, write = _wakeup_pipe()
    runtime = _SlowReload()
    thread = _reloader(runtime, read)  # type: ignore[arg-type]
    try:
        for _ in range(3):  # before the reloader looks: one reload for all of them
            _poke(write)
        assert runtime.started.wait(5)
        for _ in range(50):  # while it reloads
            _poke(write)
        runtime.hold.set()
        assert wait_until(lambda: runtime.calls == 2, 5)
        time.sleep(0.3)
        assert runtime.calls == 2
        runtime.hold.clear()
        runtime.started.clear()
        _poke(write)
        assert runtime.started.wait(5) and runtime.calls == 3
        for _ in range(100_000):  # a full pipe (64 KiB) while it reloads: the handler neither blocks nor raises
            _poke(write)
        runtime.hold.set()
        assert wait_until(lambda: runtime.calls == 4, 5)
        time.sleep(0.3)
        assert runtime.calls == 4
    finally:
        runtime.hold.set()
        os.close(write)  # the write end closed: the reloader ends and closes its end
        thread.join(5)
    assert not thread.is_alive()


def test_a_burst_of_sighups_neither_hangs_nor_kills_the_hub(tmp_path: Path) -> None:
    """``pkill -HUP`` reaches the parent and the workers, so a worker gets two signals back to back;
    here many more, as fast as they can be sent."""
    config = write_config(tmp_path)
    moit = Sender(load_config(config), "VN-MOIT")
    with HubProcess(config) as hub:
        assert hub.proc is not None
        for _ in range(200):
            os.kill(hub.proc.pid, signal.SIGHUP)
        assert wait_until(lambda: RELOADED in hub.log.read_text(), 20), hub.log.read_text()[-3000:]
        assert hub.post(moit.message()).status_code == 200
        assert hub.proc.poll() is None
        time.sleep(1)
        bursts = hub.log.read_text().count(RELOADED)
        assert 1 <= bursts < 200
        sighup(hub, RELOADED)  # still listening for the next signal
        assert sample(metrics(hub), "swhub_config_last_reload_successful") == 1


def test_a_sighup_while_the_hub_loads_reloads_once_after_the_jobs_started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reloader starts after ``start_jobs``: a SIGHUP before that is kept and honoured then, once,
    and never races ``start_jobs`` into a second TrustJobs."""
    import uvicorn

    from hub import serve as serve_module
    from hub.truststore import TrustJobs

    config = write_config(tmp_path)
    events: list[tuple[str, object]] = []
    running: list[TrustJobs] = []
    real_start_jobs, real_reload = Runtime.start_jobs, Runtime.reload
    real_jobs_start, real_jobs_stop = TrustJobs.start, TrustJobs.stop

    def start_jobs(self: Runtime) -> None:
        if not events:  # at start-up, before the reloader exists: two signals back to back
            os.kill(os.getpid(), signal.SIGHUP)
            os.kill(os.getpid(), signal.SIGHUP)
        real_start_jobs(self)
        events.append(("jobs started", self.jobs))

    def reload(self: Runtime) -> bool:
        events.append(("reload with jobs", self.jobs))
        return real_reload(self)

    def jobs_start(self: TrustJobs) -> None:
        running.append(self)
        real_jobs_start(self)

    def jobs_stop(self: TrustJobs) -> None:
        running.remove(self)
        real_jobs_stop(self)

    def run(self: uvicorn.Server, sockets: object = None) -> None:  # the listener: until the reload is done
        assert wait_until(lambda: any(e[0] == "reload with jobs" for e in events) and len(events) >= 3, 20), events
        time.sleep(0.5)  # no second reload follows

    monkeypatch.setattr(Runtime, "start_jobs", start_jobs)
    monkeypatch.setattr(Runtime, "reload", reload)
    monkeypatch.setattr(TrustJobs, "start", jobs_start)
    monkeypatch.setattr(TrustJobs, "stop", jobs_stop)
    monkeypatch.setattr(uvicorn.Server, "run", run)
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)}
    try:
        assert serve_module.serve(str(config), dispatch=False) == 0
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    first = events[0][1]
    assert events[0][0] == "jobs started" and first is not None
    assert [e[0] for e in events] == ["jobs started", "reload with jobs", "jobs started"], events
    assert events[1][1] is first  # the reload came after the jobs had started, and replaced them
    assert running == []  # every TrustJobs started was stopped
