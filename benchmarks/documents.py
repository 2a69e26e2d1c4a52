"""Certificates of origin of a chosen size, valid against ``xsd/national/co.xsd``.

The ~1 KiB certificate is the example without the optional, ministry-only parts and with one goods
item; bigger ones repeat the example's goods items (renumbered). The schema allows at most 999 items,
so past that the items' descriptions grow (up to the 512 characters ``fd:TextType`` allows).
"""

from __future__ import annotations

import copy
from pathlib import Path

from lxml import etree

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "co-certificate.xml"
CO = "{urn:sw-hub:vn:moit:co:1}"
MAX_ITEMS = 999
MAX_TEXT = 512

SIZES = {"1KiB": 1024, "10KiB": 10 * 1024, "100KiB": 100 * 1024, "1MiB": 1024 * 1024}

_FILLER = (
    "Vietnam Robusta green coffee beans grade 1 screen 18 wet polished not roasted not decaffeinated "
    "60 kg net per jute bag stuffed in 20 ft containers under fumigation certificate and phytosanitary "
    "certificate issued by the plant protection department of the Ministry of Agriculture "
)


def _size(root: etree._Element) -> int:
    return len(etree.tostring(root, encoding="UTF-8"))


def _minimal(root: etree._Element) -> etree._Element:
    """The example without what the schema lets go: optional parts, long names, the second item."""
    root = copy.deepcopy(root)
    for path in (
        "MinistryRecord", "IssuingOffice/Code", "IssuingOffice/AuthorityID", "Exporter/ID", "Consignee/ID",
        "Transport/TransportMeansID", "Transport/LoadingLocation/ID", "Transport/DischargeLocation/ID",
    ):
        for el in root.findall("/".join(CO + p for p in path.split("/"))):
            el.getparent().remove(el)
    for party in ("Exporter", "Consignee"):
        address = root.find(f"{CO}{party}/{CO}Address")
        for el in address.findall(f"{CO}Line")[1:] + address.findall(f"{CO}PostcodeID") + address.findall(f"{CO}CityName"):
            address.remove(el)
    root.find(f"{CO}IssuingOffice/{CO}Name").text = "MOIT HCMC Import-Export Office"
    root.find(f"{CO}IssuingOffice/{CO}AuthorityName").text = "Ministry of Industry and Trade"
    for path, text in (
        ("Exporter/Name", "Tay Nguyen Agri-Export JSC"), ("Exporter/Address/Line", "186 Nguyen Tat Thanh"),
        ("Consignee/Name", "Siam Highland Coffee"),
        ("Consignee/Address/Line", "88/12 Bangna-Trad Road"), ("Transport/LoadingLocation/Name", "Cat Lai"),
        ("Transport/DischargeLocation/Name", "Laem Chabang"), ("ExporterDeclaration/SignatoryName", "Nguyen Thi Thu Ha"),
        ("Certification/OfficerName", "Tran Minh Khoa"),
        ("CertificateNumber", "VN-TH 25/00317"), ("ExporterDeclaration/PlaceName", "HCMC"), ("Certification/PlaceName", "HCMC"),
    ):
        root.find("/".join(CO + p for p in path.split("/"))).text = text
    items = root.findall(f"{CO}GoodsItem")
    for extra in items[1:]:
        root.remove(extra)
    item = items[0]
    item.find(f"{CO}Description").text = "Robusta green coffee, grade 1"
    for el in item.findall(f"{CO}ExportDeclarationID"):
        item.remove(el)
    return root


def certificate(target: int) -> bytes:
    """A valid COCertificate of about ``target`` bytes (UTF-8, no XML declaration)."""
    example = etree.parse(str(EXAMPLE), etree.XMLParser(remove_comments=True, remove_blank_text=True)).getroot()
    if target <= 2048:
        return etree.tostring(_minimal(example), encoding="UTF-8")
    templates = example.findall(f"{CO}GoodsItem")
    for item in templates:
        example.remove(item)
    anchor = example.find(f"{CO}ExporterDeclaration")
    base = _size(example)
    for item in templates:
        anchor.addprevious(item)
    per_item = (_size(example) - base) / len(templates)
    for item in templates:
        example.remove(item)
    count = max(1, round((target - base) / per_item))
    pad = 0
    if count > MAX_ITEMS:
        count = MAX_ITEMS
        pad = round((target - base) / count - per_item)
    for n in range(count):
        item = copy.deepcopy(templates[n % len(templates)])
        item.find(f"{CO}ItemNumber").text = str(n + 1)
        if pad:
            description = item.find(f"{CO}Description")
            text = (description.text + " " + _FILLER * (1 + pad // len(_FILLER)))[: len(description.text) + 1 + pad]
            description.text = text[:MAX_TEXT].rstrip()
        anchor.addprevious(item)
    return etree.tostring(example, encoding="UTF-8")


def certificates(names: list[str] | None = None) -> dict[str, bytes]:
    return {name: certificate(SIZES[name]) for name in (names or list(SIZES))}


if __name__ == "__main__":  # python -m benchmarks.documents: sizes and validity
    from hub.xml import Schema

    schema = Schema("co", REPO / "xsd" / "national" / "co.xsd", "co")
    for name, data in certificates().items():
        schema.validate(etree.fromstring(data))
        print(f"{name:>7}: {len(data):>8} bytes, {data.count(b'<GoodsItem>'):>4} goods items, valid")
