"""The benchmark's hub: one route, production settings, keys of the kind under test.

The settings are those of ``hub.toml`` (5 MiB limit, signatures required, outbound signed, SQLite
in WAL with fsync on every commit, dispatcher concurrency 4); the topology is the benchmark's case: the
ministry (VN-MOIT) sends a signed certificate of origin, the hub verifies it, validates it, maps it
to an e-ATIGA Form D (validated against formd.xsd), signs it for Thailand (TH-ASW, HTTP adapter to
the benchmark's receiver), records it and answers with a signed receipt.
"""

from __future__ import annotations

import os
import signal
import socket
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(folder: Path, kind: str, *, gateway_url: str = "http://127.0.0.1:9/inbox", port: int | None = None,
                 store: str | None = None, workers: int = 1, name: str = "hub.toml") -> Path:
    """A hub configuration file ``name`` in ``folder`` (keys of ``kind``, rsa or ec, generated once
    per folder and shared by every configuration written there)."""
    from hub.config import load_config
    from hub.keys import init_keys

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(
        f"""
[hub]
party_id = "VN-NSW"
name = "Viet Nam National Single Window"
country = "VN"
store = "{store or f'sqlite:///{folder}/hub.db'}"
listen = "127.0.0.1:{port or free_port()}"
key = "{folder}/keys/hub.key"
certificate = "{folder}/keys/hub.crt"
envelope_schema = "{REPO}/xsd/envelope/envelope.xsd"
max_message_bytes = 5242880
max_depth = 64
require_signature = true
{f"workers = {workers}" if workers != 1 else ""}

[dispatcher]
concurrency = 4
poll_interval = 0.2
lease_seconds = 60
delivery_timeout = 10

[retry]
max_attempts = 10
initial_delay = 2.0
max_delay = 600.0
multiplier = 2.0
jitter = 0.2

[schemas]
co = "{REPO}/xsd/national/co.xsd"
formd = "{REPO}/xsd/formd/formd.xsd"

[mappings.co-to-formd]
stylesheet = "{REPO}/mappings/co-to-formd.xsl"
output = "formd"

[[agencies]]
id = "VN-MOIT"
name = "Ministry of Industry and Trade"
country = "VN"
ministry = "BCT"
adapter = "file"
endpoint = "{folder}/moit-outbox"
certificates = ["{folder}/keys/VN-MOIT.crt"]
signing_key = "{folder}/keys/VN-MOIT.key"

[[agencies]]
id = "TH-ASW"
name = "Thailand National Single Window gateway"
country = "TH"
adapter = "http"
endpoint = "{gateway_url}"

[[routes]]
name = "formd-to-thailand"
from = "VN-MOIT"
to = "TH-ASW"
document_type = "CO-FORMD"
schema = "co"
sign = true
deliver = [{{ agency = "TH-ASW", mapping = ["co-to-formd"] }}]
""",
        encoding="utf-8",
    )
    init_keys(load_config(path), kind)
    return path


@dataclass
class Messages:
    """Signed envelopes as VN-MOIT would send them, made before the clock starts."""

    config_path: Path

    def _sender(self):  # type: ignore[no-untyped-def]
        from hub.client import Outgoing, agency_signer, envelope_for, recipient_for
        from hub.config import load_config
        from hub.pipeline import party_of

        config = load_config(self.config_path)
        agency = config.agencies["VN-MOIT"]
        signer = agency_signer(agency)
        return signer, lambda doc: envelope_for(doc, party_of(agency), recipient_for(config, "TH-ASW"), Outgoing("CO-FORMD"))

    def make(self, document: bytes, count: int, processes: int | None = None) -> list[bytes]:
        """``count`` signed messages carrying ``document``, each with its own message id."""
        processes = processes or os.cpu_count() or 1
        if count < 8 or processes == 1:
            return _make_chunk((str(self.config_path), document, count))
        import multiprocessing

        ctx = multiprocessing.get_context("fork")
        chunks = [count // processes + (1 if i < count % processes else 0) for i in range(processes)]
        # the workers leave by themselves (close + join): the runner turns SIGTERM into an exit, so a
        # pool terminated while a worker held its queue's lock would wait for that worker forever
        with ctx.Pool(processes, initializer=signal.signal, initargs=(signal.SIGTERM, signal.SIG_DFL)) as pool:
            parts = pool.map(_make_chunk, [(str(self.config_path), document, n) for n in chunks])
            pool.close()
            pool.join()
        return [m for part in parts for m in part]


def _make_chunk(args: tuple[str, bytes, int]) -> list[bytes]:
    path, document, count = args
    signer, envelope = Messages(Path(path))._sender()
    parsed = etree.fromstring(document)
    out = []
    for _ in range(count):
        root = signer.sign(envelope(_copy(parsed)))
        out.append(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))
    return out


def _copy(element: etree._Element) -> etree._Element:
    import copy

    return copy.deepcopy(element)
