"""Two hubs, two countries: two real ``hub serve`` processes on loopback, each with its own keys
and hub.toml. A Form D issued by the Vietnamese ministry travels MOIT -> VN hub -(AS4)-> TH hub ->
Thai customs (folder); the Thai acceptance travels back TH hub -(AS4)-> VN hub -> MOIT (folder)
and on to the portal as MQTT status events (a real mosquitto broker). Every hop answers with a
signed receipt."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from lxml import etree

from adapters.asw import header, wss
from hub.client import Outgoing, envelope_for, recipient_for, signed_bytes
from hub.config import Config, load_config
from hub.envelope import content_of, read_header
from hub.pipeline import party_of
from hub.trust import Pinned, Verifier, load_certificates
from hub.twohubs import MOIT, TH_CUSTOMS, TH_HUB, VN_HUB, write_pair

from .mosquitto import Broker, Peer
from .support import EXAMPLES, REPO, HubProcess, Sender, free_port, message_id_of, wait_until


def _portal(broker: Broker) -> str:
    """The national portal on the VN side: an agency that only takes status events over MQTT."""
    return f"""
[[agencies]]
id = "VN-PORTAL"
name = "National single-window portal"
country = "VN"
adapter = "mqtt"
endpoint = "{broker.url}"
options = {{ events = ["received", "delivered"], status_topic = "sw-hub/status", timeout = 2, reconnect_max = 0.5 }}
"""

FORMD = "urn:sw-hub:asean:eatiga:formd:1"
STATUS = "urn:sw-hub:asean:eatiga:formd-status:1"


def _checked(data: bytes, config: Config, who: str) -> etree._Element:
    """The envelope, after checking it is signed by the hub of ``config``."""
    cert = load_certificates(config.hub.certificate)[0]
    return Verifier().verify(etree.fromstring(data), [cert], who).element


def _acceptance(form: etree._Element) -> bytes:
    """examples/formd-status-accepted.xml, about this Form D (issued by VN, accepted by TH)."""
    status = etree.parse(str(EXAMPLES / "formd-status-accepted.xml")).getroot()
    status.find(f"{{{STATUS}}}ReferenceID").text = form.findtext(f"{{{FORMD}}}ReferenceID")
    status.find(f"{{{STATUS}}}IssuingCountryCode").text = "VN"
    status.find(f"{{{STATUS}}}SenderCountryCode").text = "TH"
    return etree.tostring(status)


def _receipts(folder: Path, signer_config: Config) -> list[header.Signal]:
    cert = load_certificates(signer_config.hub.certificate)[0]
    out = []
    for path in sorted(folder.glob("*.receipt.xml")):
        verified = wss.verify(etree.parse(str(path)).getroot(), Pinned([cert]), signer_config.hub.party_id)
        out.append(header.read_messaging(verified.messaging).signals[0])
    return out


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "broker").start()
    yield b
    b.stop()


def test_a_form_d_and_its_acceptance_travel_between_two_hubs(tmp_path: Path, broker: Broker) -> None:
    portal = Peer(broker, "portal", ("sw-hub/status/#",))
    pair = write_pair(tmp_path, free_port(), free_port(), vn_extra=_portal(broker))
    vn_config, th_config = load_config(pair.vn), load_config(pair.th)
    with HubProcess(pair.vn) as vn, HubProcess(pair.th) as th, httpx.Client(timeout=30) as client:
        # 1. the ministry submits its certificate of origin to the VN hub (HTTP POST /messages)
        data = Sender(vn_config, MOIT).message(EXAMPLES / "co-certificate.xml", to=TH_HUB)
        formd_id = message_id_of(data)
        answer = vn.post(data, client)
        assert answer.status_code == 200
        assert read_header(_checked(answer.content, vn_config, "the VN hub")).subject.function == "99"

        # 2. VN -(AS4)-> TH -> Thai customs' folder: a Form D, signed by the TH hub
        delivered = tmp_path / "th" / "agencies" / TH_CUSTOMS / "inbox" / f"{VN_HUB}_{formd_id}.xml"
        assert wait_until(delivered.exists, 30), th.log.read_text()[-2000:]
        envelope = _checked(delivered.read_bytes(), th_config, "the TH hub")
        form = content_of(envelope)
        assert form is not None and form.tag == f"{{{FORMD}}}FormD"
        assert read_header(envelope).sender.identity == VN_HUB and read_header(envelope).subject.document_type == "FORMD"

        # 3. Thai customs accepts: FormDStatus ACCEPTED to the TH hub, in the same conversation
        customs = Sender(th_config, TH_CUSTOMS)
        status = envelope_for(etree.fromstring(_acceptance(form)), party_of(customs.agency), recipient_for(th_config, VN_HUB),
                              Outgoing("FORMD-STATUS", reference=formd_id))
        status_data = signed_bytes(status, customs.signer)
        status_id = message_id_of(status_data)
        answer = th.post(status_data, client)
        assert answer.status_code == 200, answer.text

        # 4. TH -(AS4)-> VN -> the ministry's folder, signed by the VN hub
        back = tmp_path / "vn" / "agencies" / MOIT / "outbox" / f"{TH_HUB}_{status_id}.xml"
        assert wait_until(back.exists, 30), vn.log.read_text()[-2000:]
        returned = content_of(_checked(back.read_bytes(), vn_config, "the VN hub"))
        assert returned is not None and returned.findtext(f"{{{STATUS}}}StatusCode") == "ACCEPTED"
        assert returned.findtext(f"{{{STATUS}}}ReferenceID") == form.findtext(f"{{{FORMD}}}ReferenceID")

        # 4b. ... and on to the portal: MQTT status events for the Form D and for its acceptance
        expected = {f"{formd_id}/received/", f"{formd_id}/delivered/{TH_HUB}", f"{status_id}/received/", f"{status_id}/delivered/{MOIT}"}
        assert wait_until(lambda: expected <= set(portal.received), 30), sorted(portal.received)

        # 5. every AS4 hop got a signed receipt, kept as evidence and named in the trace
        for hub_url, message_id, gateway in ((vn.url, formd_id, TH_HUB), (th.url, status_id, VN_HUB)):
            deliveries = client.get(f"{hub_url}/messages/{message_id}").json()["deliveries"]
            row = next(d for d in deliveries if d["destination"] == gateway)
            assert row["state"] == "delivered" and row["attempts"][-1]["detail"].startswith("AS4 receipt")
        (to_th,) = _receipts(tmp_path / "vn" / "receipts" / TH_HUB, th_config)
        (to_vn,) = _receipts(tmp_path / "th" / "receipts" / VN_HUB, vn_config)
        assert to_th.ref_to_message_id == f"{formd_id}.{TH_HUB}@{VN_HUB}" and to_th.receipt
        assert to_vn.ref_to_message_id == f"{status_id}.{VN_HUB}@{TH_HUB}" and to_vn.receipt
        assert vn.terminate() == 0 and th.terminate() == 0
    portal.close()
    assert "ERROR" not in vn.log.read_text() + th.log.read_text()


def _demo(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    """``hub demo --two-hubs`` with its temporary folder made under ``tmp_path``."""
    # Ctrl-C reaches the demo as it would from a terminal, even when the tests run as a background
    # job (whose shell ignores SIGINT in its children: Python then installs no KeyboardInterrupt)
    return subprocess.Popen([sys.executable, "-m", "hub.cli", "demo", "--two-hubs", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=REPO, env={**os.environ, "TMPDIR": str(tmp_path)},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _folder_of(first_line: str) -> Path:
    found = re.match(r"two hubs in (\S+?):? ", first_line)
    assert found, first_line
    return Path(found.group(1))


def test_hub_demo_two_hubs(tmp_path: Path) -> None:
    """Each run made a folder of keys and stores in /tmp and left it there: it goes at the end,
    unless --keep asks for it."""
    demo = _demo(tmp_path)
    out, _ = demo.communicate(timeout=180)
    assert demo.returncode == 0, out[-3000:]
    assert "demo OK" in out and "eb:Receipt" in out
    folder = _folder_of(out)
    assert folder.parent == tmp_path and "--keep keeps it" in out.splitlines()[0]
    assert not folder.exists() and list(tmp_path.iterdir()) == []

    demo = _demo(tmp_path, "--keep")
    out, _ = demo.communicate(timeout=180)
    assert demo.returncode == 0, out[-3000:]
    folder = _folder_of(out)
    assert (folder / "vn" / "hub.toml").is_file() and len(list(folder.glob("*/receipts/*/*.receipt.xml"))) == 2
    assert f"kept under {folder}/*/receipts" in out.splitlines()[-1]


def test_hub_demo_two_hubs_removes_its_folder_on_ctrl_c(tmp_path: Path) -> None:
    """Ctrl-C stops both hubs and still removes the folder; the demo says it was interrupted."""
    demo = _demo(tmp_path)
    assert demo.stdout is not None
    folder = _folder_of(demo.stdout.readline())
    assert (folder / "vn" / "hub.toml").is_file()
    demo.send_signal(signal.SIGINT)
    out, _ = demo.communicate(timeout=60)
    assert demo.returncode == 130, out[-3000:]
    assert f"demo interrupted; {folder} removed" in out and "Traceback" not in out
    assert not folder.exists() and list(tmp_path.iterdir()) == []
