"""What one AS4 exchange costs: ``python -m benchmarks.as4 [N]``.

Per message, in one process, on the VN/TH pair of ``hub.twohubs`` (RSA-2048 keys):

    send     re-issue the envelope (parse + enveloped signature) + build the user message + WS-Security signature
    receive  the TH hub's POST /as4 handler without HTTP: parse, ebMS schema, WS-Security verification,
             the pipeline (envelope signature, Form D schema, dedupe, one SQLite commit) + the signed receipt
    receipt  the VN side checking that receipt: parse, schema, signature, RefToMessageId, NRI digests

then ``loopback``: N certificates submitted to the VN hub over HTTP, delivered over AS4 to the TH
hub and into Thai customs' folder, both hubs in this process (so one GIL for both), messages/s.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx


def _ms(samples: list[float]) -> str:
    samples = sorted(samples)
    return f"median {statistics.median(samples) * 1000:.2f} ms, p95 {samples[int(len(samples) * 0.95) - 1] * 1000:.2f} ms"


def _certificates(config_path: Path, n: int) -> list[bytes]:
    """``n`` certificates of origin for Thailand, signed by VN-MOIT's demo key."""
    from lxml import etree

    from hub.client import Outgoing, envelope_for, recipient_for, signed_bytes
    from hub.config import load_config
    from hub.pipeline import party_of
    from hub.client import agency_signer
    from hub.twohubs import MOIT, REPO, TH_HUB

    config = load_config(config_path)
    moit = config.agencies[MOIT]
    signer = agency_signer(moit)
    document = etree.parse(str(REPO / "examples" / "co-certificate.xml")).getroot()
    return [signed_bytes(envelope_for(document, party_of(moit), recipient_for(config, TH_HUB), Outgoing("CO-FORMD")), signer)
            for _ in range(n)]


def steps(n: int, folder: Path) -> None:
    import hub  # noqa: F401
    from adapters.asw import AswAdapter
    from adapters.asw.inbound import Inbound
    from adapters.base import Delivery
    from hub.runtime import Runtime
    from hub.twohubs import TH_HUB, write_pair

    pair = write_pair(folder, 9, 9)
    vn, th = Runtime.load(pair.vn), Runtime.load(pair.th)
    gateway = vn.create_adapters()[TH_HUB]
    inbound = Inbound([a for a in th.create_adapters().values() if isinstance(a, AswAdapter)], th.pipeline.submit)
    for data in _certificates(pair.vn, n):
        assert vn.pipeline.submit(data, None).accepted
    rows = vn.store.rows(destination=TH_HUB, limit=n)
    send, receive, check = [], [], []
    for row in rows:
        t0 = time.perf_counter()
        data, sent = gateway.message(Delivery(row.id, row.message_id, row.sender, row.destination, row.payload, 1))  # type: ignore[attr-defined]
        t1 = time.perf_counter()
        status, body = inbound.handle(data)
        t2 = time.perf_counter()
        result = gateway.judge(status, body, sent)  # type: ignore[attr-defined]
        t3 = time.perf_counter()
        assert result.outcome.value == "delivered", result.detail
        send.append(t1 - t0)
        receive.append(t2 - t1)
        check.append(t3 - t2)
    print(f"AS4 message {len(data)} bytes, receipt {len(body)} bytes; {n} messages")
    print(f"  send     {_ms(send)}")
    print(f"  receive  {_ms(receive)}")
    print(f"  receipt  {_ms(check)}")
    vn.close()
    th.close()


def loopback(n: int, folder: Path) -> None:
    from hub.demo_two import _free_port, _Hub
    from hub.twohubs import TH_CUSTOMS, write_pair

    pair = write_pair(folder, _free_port(), _free_port())
    messages = _certificates(pair.vn, n)
    vn, th = _Hub(pair.vn), _Hub(pair.th)
    assert vn.start() and th.start()
    inbox = folder / "th" / "agencies" / TH_CUSTOMS / "inbox"
    try:
        start = time.perf_counter()
        with httpx.Client(timeout=30) as client:
            for m in messages:
                assert client.post(f"{vn.url}/messages", content=m).status_code == 200
        while len(list(inbox.glob("*.xml"))) < n:
            time.sleep(0.01)
        elapsed = time.perf_counter() - start
        print(f"loopback: {n} certificates MOIT -> VN -(AS4)-> TH -> folder in {elapsed:.2f} s: {n / elapsed:.0f} messages/s "
              "(accepting, mapping, signing, AS4 both ways and two SQLite hubs in one process)")
    finally:
        th.stop()
        vn.stop()


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    with tempfile.TemporaryDirectory() as tmp:
        steps(count, Path(tmp) / "steps")
        loopback(count, Path(tmp) / "loopback")
