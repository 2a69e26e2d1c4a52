"""Two hubs, two countries: the configuration of a Vietnamese and a Thai hub on loopback.

``write_pair(folder, vn_port, th_port)`` writes ``folder/vn/hub.toml`` and ``folder/th/hub.toml``
and generates each hub's own keys (plus the demo keys of the ministry and customs that sign what
they submit). Each hub knows the other as an ``asw`` agency whose id is the other's party id and
whose certificate is the other hub's certificate.

    VN-MOIT -(HTTP POST /messages)-> VN-NSW -(AS4)-> TH-NSW -> TH-CUSTOMS (folder)
    TH-CUSTOMS -(HTTP POST /messages)-> TH-NSW -(AS4)-> VN-NSW -> VN-MOIT (folder)

The portal's status events (MQTT) plug in on the VN side as one more agency subscribed to
events: pass its ``[[agencies]]`` table as ``vn_extra``, e.g. ``adapter = "mqtt"`` with
``options = { events = ["received", "delivered"] }``; nothing else changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .config import load_config
from .keys import init_keys

REPO = Path(__file__).resolve().parents[1]

MOIT, VN_CUSTOMS, VN_HUB = "VN-MOIT", "VN-CUSTOMS", "VN-NSW"
TH_CUSTOMS, TH_HUB = "TH-CUSTOMS", "TH-NSW"

_COMMON = """
key = "keys/hub.key"
certificate = "keys/hub.crt"
store = "sqlite:///var/hub.db"
envelope_schema = "{repo}/xsd/envelope/envelope.xsd"

[dispatcher]
concurrency = 4
poll_interval = 0.05
lease_seconds = 10
delivery_timeout = 5

[retry]
max_attempts = {max_attempts}
initial_delay = {initial_delay}
max_delay = 2.0
jitter = 0.1

[schemas]
co = "{repo}/xsd/national/co.xsd"
formd = "{repo}/xsd/formd/formd.xsd"
formd-status = "{repo}/xsd/formd/formd-status.xsd"
wco-dec = "{repo}/xsd/wco/dec-dms-metadata.xsd"
"""

_VN = """
[hub]
party_id = "VN-NSW"
name = "Viet Nam National Single Window"
country = "VN"
listen = "127.0.0.1:{vn_port}"
{common}
[mappings.co-to-formd]
stylesheet = "{repo}/mappings/co-to-formd.xsl"
output = "formd"

[mappings.formd-to-wco]
stylesheet = "{repo}/mappings/formd-to-wco-dec.xsl"
output = "wco-dec"

[[agencies]]
id = "VN-MOIT"
name = "Ministry of Industry and Trade"
country = "VN"
ministry = "BCT"
adapter = "file"
endpoint = "agencies/VN-MOIT/outbox"
certificates = ["keys/demo/VN-MOIT.crt"]
signing_key = "keys/demo/VN-MOIT.key"

[[agencies]]
id = "VN-CUSTOMS"
name = "General Department of Viet Nam Customs"
country = "VN"
adapter = "file"
endpoint = "agencies/VN-CUSTOMS/inbox"

[[agencies]]
id = "TH-NSW"
name = "Thailand National Single Window"
country = "TH"
adapter = "asw"
endpoint = "http://127.0.0.1:{th_port}/as4"
certificates = ["../th/keys/hub.crt"]
options = {{ receipts = "receipts/TH-NSW" }}
{vn_extra}
[[routes]]
name = "formd-to-thailand"
from = "VN-MOIT"
to = "TH-NSW"
document_type = "CO-FORMD"
schema = "co"
deliver = [
  {{ agency = "TH-NSW", mapping = ["co-to-formd"] }},
  {{ agency = "VN-CUSTOMS", mapping = ["co-to-formd", "formd-to-wco"] }},
]

[[routes]]
name = "formd-status-from-thailand"
from = "TH-NSW"
document_type = "FORMD-STATUS"
schema = "formd-status"
deliver = [{{ agency = "VN-MOIT" }}]
"""

_TH = """
[hub]
party_id = "TH-NSW"
name = "Thailand National Single Window"
country = "TH"
listen = "127.0.0.1:{th_port}"
{common}
[[agencies]]
id = "TH-CUSTOMS"
name = "Thai Customs Department"
country = "TH"
adapter = "file"
endpoint = "agencies/TH-CUSTOMS/inbox"
certificates = ["keys/demo/TH-CUSTOMS.crt"]
signing_key = "keys/demo/TH-CUSTOMS.key"

[[agencies]]
id = "VN-NSW"
name = "Viet Nam National Single Window"
country = "VN"
adapter = "asw"
endpoint = "http://127.0.0.1:{vn_port}/as4"
certificates = ["../vn/keys/hub.crt"]
options = {{ receipts = "receipts/VN-NSW" }}

[[routes]]
name = "formd-from-viet-nam"
from = "VN-NSW"
document_type = "FORMD"
schema = "formd"
deliver = [{{ agency = "TH-CUSTOMS" }}]

[[routes]]
name = "formd-status-to-viet-nam"
from = "TH-CUSTOMS"
to = "VN-NSW"
document_type = "FORMD-STATUS"
schema = "formd-status"
deliver = [{{ agency = "VN-NSW" }}]
"""


@dataclass(frozen=True)
class Pair:
    vn: Path  # hub.toml of the Vietnamese hub
    th: Path  # hub.toml of the Thai hub


def write_pair(folder: Path, vn_port: int, th_port: int, *, vn_extra: str = "", max_attempts: int = 20,
               initial_delay: float = 0.2) -> Pair:
    common = _COMMON.format(repo=REPO, max_attempts=max_attempts, initial_delay=initial_delay)
    values = {"repo": REPO, "vn_port": vn_port, "th_port": th_port, "common": common, "vn_extra": vn_extra}
    pair = Pair(folder / "vn" / "hub.toml", folder / "th" / "hub.toml")
    for path, text in ((pair.vn, _VN), (pair.th, _TH)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.format(**values), encoding="utf-8")
    for path in (pair.vn, pair.th):
        init_keys(load_config(path))
    return pair
