"""``hub validate`` and ``hub translate`` as an administrator runs them (subprocesses), and the same
faults in the hub's NACKs.

- every example validates in one run, each by the schema its root element names;
- an invalid document is reported with the line and path of its first fault, in text and in JSON,
  and the NACK for the same document carries the same path and message;
- an envelope file is validated with its payload;
- the real WCO DM samples validate in one ``hub validate --json`` run, which measures each
  document (``ms``); the un-namespaced example notifications are refused with a clear reason;
- ``hub translate``: --list, a chain to a file, refused input, and a mapping whose output is invalid;
- Form D status messages reach the ministry as a national ``COStatus`` (formd-status-to-co), every
  kind of status valid and with every value carried.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.support import skip_unless_present
from lxml import etree

from hub.envelope import read_errors
from hub.errors import Code
from hub.runtime import Runtime

from .support import EXAMPLES, REPO, SHARED, Sender, write_config

CONFIG = REPO / "hub.toml"
WCO_SAMPLES = SHARED / "wco-dm" / "samples"
MD_NS = "urn:wco:datamodel:WCO:DocumentMetaData-DMS:2"

EXPECTED_SCHEMA = {
    "co-application.xml": "co",
    "co-certificate.xml": "co",
    "co-certificate-my.xml": "co",
    "formd.xml": "formd",
    "formd-status-accepted.xml": "formd-status",
    "formd-status-rejected.xml": "formd-status",
    "permit-application-plant.xml": "permits",
    "permit-decision-plant.xml": "permits",
    "permit-decision-health.xml": "permits",
}


def hub(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hub.cli", *map(str, args)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )


def validate_json(*args: str | Path) -> tuple[int, list[dict[str, Any]]]:
    run = hub("validate", "--json", *args)
    assert run.stdout.strip(), run.stderr
    return run.returncode, json.loads(run.stdout)


def bad_certificate(folder: Path) -> tuple[Path, int]:
    """co-certificate.xml with the first goods item's HS code broken; returns the file and its line."""
    text = (EXAMPLES / "co-certificate.xml").read_text(encoding="utf-8")
    text, n = re.subn(r"(<HSCode\b[^>]*>)\d+<", r"\g<1>12AB<", text, count=1)
    assert n == 1
    path = folder / "bad-certificate.xml"
    path.write_text(text, encoding="utf-8")
    line = next(i for i, l in enumerate(text.splitlines(), 1) if "12AB" in l)
    return path, line


FIRST_FAULT_PATH = "/COCertificate/GoodsItem[1]/HSCode"


# --------------------------------------------------------------------------- examples


def test_every_example_validates_in_one_run() -> None:
    files = sorted(EXAMPLES.glob("*.xml"))
    assert {f.name for f in files} == set(EXPECTED_SCHEMA), "a new example needs its schema listed here"
    code, reports = validate_json("--config", CONFIG, *files)
    assert code == 0, [r for r in reports if not r["ok"]]
    assert [Path(r["file"]).name for r in reports] == [f.name for f in files]
    for r in reports:
        assert r["ok"] and not r["errors"]
        assert r["schema"] == EXPECTED_SCHEMA[Path(r["file"]).name], r
        assert r["ms"] >= 0
    text = hub("validate", "--config", CONFIG, *files)
    assert text.returncode == 0
    assert text.stdout.splitlines() == [f"{f}: OK (schema {EXPECTED_SCHEMA[f.name]})" for f in files]


def test_schema_is_chosen_by_root_not_by_file_name(tmp_path: Path) -> None:
    disguised = tmp_path / "permit-decision-health.xml"  # a Form D under a permit's name
    disguised.write_bytes((EXAMPLES / "formd.xml").read_bytes())
    code, (report,) = validate_json("--config", CONFIG, disguised)
    assert code == 0 and report["schema"] == "formd"


# --------------------------------------------------------------------------- faults: CLI and NACK


def test_invalid_document_reports_line_and_path(tmp_path: Path) -> None:
    bad, line = bad_certificate(tmp_path)
    run = hub("validate", "--config", CONFIG, EXAMPLES / "formd.xml", bad)
    assert run.returncode == 1
    lines = run.stdout.splitlines()
    assert lines[0] == f"{EXAMPLES / 'formd.xml'}: OK (schema formd)"
    assert lines[1] == f"{bad}: INVALID (schema co)"
    assert lines[2].startswith(f"  line {line} {FIRST_FAULT_PATH}: ") and "12AB" in lines[2]

    code, (_, report) = validate_json("--config", CONFIG, EXAMPLES / "formd.xml", bad)
    assert code == 1 and not report["ok"] and report["schema"] == "co"
    first = report["errors"][0]
    assert (first["line"], first["path"], first["code"]) == (line, FIRST_FAULT_PATH, Code.INVALID_DOCUMENT.value)
    assert "12AB" in first["message"] and "pattern" in first["message"]


@pytest.fixture
def hub_env(tmp_path: Path) -> Iterator[tuple[Path, Runtime, Sender]]:
    config = write_config(tmp_path / "hub")
    runtime = Runtime.load(config)
    yield config, runtime, Sender(runtime.config, "VN-MOIT")
    runtime.close()


def test_the_nack_carries_the_same_fault(tmp_path: Path, hub_env: tuple[Path, Runtime, Sender]) -> None:
    config, runtime, moit = hub_env
    bad, _ = bad_certificate(tmp_path)
    code, (report,) = validate_json("--config", config, bad)
    assert code == 1
    first = report["errors"][0]

    ack = runtime.pipeline.submit(moit.message(bad))
    assert not ack.accepted
    (error_code, message, location) = read_errors(etree.fromstring(ack.xml))[0]
    assert error_code == first["code"] == Code.INVALID_DOCUMENT.value
    assert message == f"the document is not valid against schema 'co': {first['message']}"
    assert location is not None and re.fullmatch(rf"line \d+, {re.escape(first['path'])}", location), location


def test_an_envelope_file_is_validated_with_its_payload(tmp_path: Path, hub_env: tuple[Path, Runtime, Sender]) -> None:
    config, _, moit = hub_env
    good = tmp_path / "good-envelope.xml"
    good.write_bytes(moit.message())
    bad_doc, _ = bad_certificate(tmp_path)
    bad = tmp_path / "bad-envelope.xml"
    bad.write_bytes(moit.message(bad_doc))
    line = next(i for i, l in enumerate(bad.read_text(encoding="utf-8").splitlines(), 1) if "12AB" in l)

    code, (ok, ko) = validate_json("--config", config, good, bad)
    assert code == 1
    assert ok["ok"] and ok["schema"] == "envelope+co"
    assert not ko["ok"] and ko["schema"] == "envelope+co"
    first = ko["errors"][0]
    assert (first["line"], first["path"]) == (line, "/Envelope/Body/Content" + FIRST_FAULT_PATH)

    # a comment before the document inside Content is not the document (it was a traceback)
    commented = tmp_path / "commented-envelope.xml"
    commented.write_bytes(good.read_bytes().replace(b"<Content>", b"<Content><!-- the certificate -->", 1))
    assert b"<!-- the certificate -->" in commented.read_bytes()
    code, (ok,) = validate_json("--config", config, commented)
    assert code == 0 and ok["ok"] and ok["schema"] == "envelope+co"


def test_the_nack_line_is_the_line_in_the_bytes_sent(tmp_path: Path, hub_env: tuple[Path, Runtime, Sender]) -> None:
    _, runtime, moit = hub_env
    bad_doc, _ = bad_certificate(tmp_path)
    data = moit.message(bad_doc)
    line = next(i for i, l in enumerate(data.decode().splitlines(), 1) if "12AB" in l)
    (_, _, location) = read_errors(etree.fromstring(runtime.pipeline.submit(data).xml))[0]
    assert location is not None and location.startswith(f"line {line},")


def test_the_hubs_own_receipts_and_nacks_validate(tmp_path: Path, hub_env: tuple[Path, Runtime, Sender]) -> None:
    """An operator checks what the hub answered: no schema in [schemas] declares Receipt or
    ErrorList (it was "no schema for the root element Receipt"); the envelope schema does, so a
    receipt or NACK the hub made is OK and an altered one is refused with its line and path."""
    config, runtime, moit = hub_env
    receipt, nack = tmp_path / "receipt.xml", tmp_path / "nack.xml"
    receipt.write_bytes(runtime.pipeline.submit(moit.message()).xml)
    bad_doc, _ = bad_certificate(tmp_path)
    nack.write_bytes(runtime.pipeline.submit(moit.message(bad_doc)).xml)
    assert b"<ErrorList>" in nack.read_bytes()
    bad_receipt = tmp_path / "bad-receipt.xml"
    bad_receipt.write_bytes(receipt.read_bytes().replace(b"<receivedAt>", b"<receivedAt>yesterday ", 1))
    bad_nack = tmp_path / "bad-nack.xml"
    bad_nack.write_bytes(re.sub(rb"<ErrorCode>ERR\d+</ErrorCode>", b"", nack.read_bytes(), count=1))

    code, reports = validate_json("--config", config, receipt, nack, bad_receipt, bad_nack)
    assert code == 1
    assert [(r["ok"], r["schema"]) for r in reports] == [(True, "envelope")] * 2 + [(False, "envelope")] * 2, reports
    for report, altered, path in ((reports[2], b"yesterday", "/Envelope/Body/Content/Receipt/receivedAt"),
                                  (reports[3], b"<ErrorName>", "/Envelope/Body/Content/ErrorList/Error/ErrorName")):
        line = next(i for i, l in enumerate(Path(report["file"]).read_bytes().splitlines(), 1) if altered in l)
        (fault,) = report["errors"]
        assert (fault["line"], fault["path"]) == (line, path), fault
    text = hub("validate", "--config", config, receipt, nack)
    assert text.returncode == 0 and text.stdout.splitlines() == [f"{receipt}: OK (schema envelope)", f"{nack}: OK (schema envelope)"]


# --------------------------------------------------------------------------- WCO DM samples


def _root_of(path: Path) -> str | None:
    try:
        root = etree.parse(str(path), etree.XMLParser(resolve_entities=False, no_network=True)).getroot()
    except etree.XMLSyntaxError:
        return None
    return root.tag if isinstance(root.tag, str) else None


def test_wco_dm_samples_validate_in_one_run() -> None:
    skip_unless_present(WCO_SAMPLES, "WCO DM samples")
    files = sorted(WCO_SAMPLES.rglob("*.xml"))
    code, reports = validate_json("--config", CONFIG, *files)
    assert len(reports) == len(files)
    assert code == 1, "the un-namespaced notifications are in the set, so the run must fail"

    declarations = [r for r in reports if r["root"] == f"{{{MD_NS}}}MetaData"]
    assert declarations, "no namespaced WCO DM declaration found"
    bad = [(r["file"], r["errors"][:1]) for r in declarations if not r["ok"]]
    assert not bad, bad
    assert {r["schema"] for r in declarations} == {"wco-dec"}

    plain = [r for r in reports if r["root"] == "MetaData"]
    assert plain, "no un-namespaced MetaData example found"
    for r in plain:
        (fault,) = r["errors"]
        assert fault["code"] == Code.UNKNOWN_MESSAGE_TYPE.value and fault["path"] == "/MetaData"
        assert "root element MetaData" in fault["message"] and "no namespace" in fault["message"]
        assert MD_NS in fault["message"]  # ... and where a MetaData would be known

    assert not [r["file"] for r in reports if r["ok"] and r["root"] != f"{{{MD_NS}}}MetaData"]

    ms = sorted(r["ms"] for r in declarations)
    p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
    print(
        f"\nhub validate: {len(declarations)} WCO DM declarations valid ({len(reports)} files); "
        f"validation per document (parse + schema): mean {statistics.mean(ms):.3f} ms, "
        f"median {statistics.median(ms):.3f} ms, p95 {p95:.3f} ms, max {ms[-1]:.3f} ms"
    )


def test_unnamespaced_notifications_are_invalid_with_a_clear_reason() -> None:
    skip_unless_present(WCO_SAMPLES, "WCO DM samples")
    plain = [p for p in sorted(WCO_SAMPLES.rglob("*.xml")) if _root_of(p) == "MetaData"][:3]
    assert plain
    run = hub("validate", "--config", CONFIG, *plain)
    assert run.returncode == 1
    out = run.stdout.splitlines()
    for path in plain:
        i = out.index(f"{path}: INVALID")
        assert re.match(r"  line \d+ /MetaData: no schema for the root element MetaData, which has no namespace", out[i + 1]), out[i + 1]


def test_a_folder_stands_for_its_xml_files(tmp_path: Path) -> None:
    for name in ("formd.xml", "co-application.xml"):
        (tmp_path / name).write_bytes((EXAMPLES / name).read_bytes())
    (tmp_path / "notes.txt").write_text("not a document")
    code, reports = validate_json("--config", CONFIG, tmp_path)
    assert code == 0 and [Path(r["file"]).name for r in reports] == ["co-application.xml", "formd.xml"]


def test_a_folder_without_xml_files_is_said_not_passed_over(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a document")
    run = hub("validate", "--config", CONFIG, tmp_path)
    assert run.returncode == 1 and run.stdout == f"{tmp_path}: INVALID\n  the folder holds no *.xml file: nothing to validate\n"
    # a folder among files is reported as well: the files are validated, the run fails
    code, (empty, formd) = validate_json("--config", CONFIG, tmp_path, EXAMPLES / "formd.xml")
    assert code == 1 and formd["ok"] and empty["errors"][0]["message"].endswith("nothing to validate")


# --------------------------------------------------------------------------- translate


def test_translate_list() -> None:
    run = hub("translate", "--list", "--config", CONFIG)
    assert run.returncode == 0, run.stderr
    lines = dict(line.split(": ", 1) for line in run.stdout.splitlines())
    assert set(lines) == {"co-to-formd", "formd-to-wco", "formd-to-co", "permit-to-wco", "formd-status-to-co"}
    assert lines["co-to-formd"].startswith("{urn:sw-hub:vn:moit:co:1}COCertificate (co) -> formd (")
    assert lines["formd-to-wco"].startswith("{urn:sw-hub:asean:eatiga:formd:1}FormD (formd) -> wco-dec (")
    assert lines["permit-to-wco"].startswith("{urn:sw-hub:vn:permits:1}PermitDecision (permits) -> wco-dec (")
    assert lines["formd-status-to-co"].startswith("{urn:sw-hub:asean:eatiga:formd-status:1}FormDStatus (formd-status) -> co (")


def test_translate_a_chain_to_a_file_and_to_stdout(tmp_path: Path) -> None:
    out = tmp_path / "customs.xml"
    run = hub("translate", "--config", CONFIG, "--mapping", "co-to-formd,formd-to-wco", EXAMPLES / "co-certificate.xml", "-o", out)
    assert run.returncode == 0, run.stderr
    assert etree.QName(etree.parse(str(out)).getroot()).localname == "MetaData"
    code, (report,) = validate_json("--config", CONFIG, out)
    assert code == 0 and report["schema"] == "wco-dec"

    run = hub("translate", "--config", CONFIG, "--mapping", "co-to-formd", EXAMPLES / "co-certificate.xml")
    assert run.returncode == 0 and etree.fromstring(run.stdout.encode()).tag == "{urn:sw-hub:asean:eatiga:formd:1}FormD"


def test_translate_refuses_an_invalid_input_with_line_and_path(tmp_path: Path) -> None:
    bad, line = bad_certificate(tmp_path)
    out = tmp_path / "out.xml"
    run = hub("translate", "--config", CONFIG, "--mapping", "co-to-formd", bad, "-o", out)
    assert run.returncode == 1 and not out.exists()
    assert f"line {line} {FIRST_FAULT_PATH}: " in run.stderr

    run = hub("translate", "--config", CONFIG, "--mapping", "formd-to-co", EXAMPLES / "co-certificate.xml")
    assert run.returncode == 1 and "takes {urn:sw-hub:asean:eatiga:formd:1}FormD" in run.stderr

    run = hub("translate", "--config", CONFIG, "--mapping", "no-such-mapping", EXAMPLES / "co-certificate.xml")
    assert run.returncode == 1 and "no mapping 'no-such-mapping'" in run.stderr


BROKEN_XSL = """<?xml version="1.0" encoding="UTF-8"?>
<!-- broken: keeps only the Form D reference number, so the output is not a valid Form D -->
<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform"
                xmlns:co="urn:sw-hub:vn:moit:co:1" xmlns="urn:sw-hub:asean:eatiga:formd:1"
                exclude-result-prefixes="co">
  <xsl:template match="/"><xsl:apply-templates select="co:COCertificate"/></xsl:template>
  <xsl:template match="co:COCertificate">
    <FormD><ReferenceID><xsl:value-of select="co:CertificateNumber"/></ReferenceID><Bogus/></FormD>
  </xsl:template>
</xsl:stylesheet>
"""


def test_translate_reports_an_invalid_output(tmp_path: Path) -> None:
    (tmp_path / "broken.xsl").write_text(BROKEN_XSL, encoding="utf-8")
    config = write_config(tmp_path / "hub", extra=f'\n[mappings.broken]\nstylesheet = "{tmp_path}/broken.xsl"\noutput = "formd"\n')
    out = tmp_path / "out.xml"
    run = hub("translate", "--config", config, "--mapping", "broken", EXAMPLES / "co-certificate.xml", "-o", out)
    assert run.returncode == 1 and not out.exists()
    assert "the output of mapping 'broken' is not valid (schema formd" in run.stderr
    assert re.search(r"  line \d+ /FormD/Bogus: ", run.stderr), run.stderr

    run = hub("translate", "--config", config, "--mapping", "broken", EXAMPLES / "co-certificate.xml", "-o", out, "--force")
    assert run.returncode == 1 and out.exists()
    line = int(re.search(r"  line (\d+) /FormD/Bogus", run.stderr).group(1))  # type: ignore[union-attr]
    assert "Bogus" in out.read_text(encoding="utf-8").splitlines()[line - 1]


# --------------------------------------------------------------------------- Form D status -> ministry

FS = "urn:sw-hub:asean:eatiga:formd-status:1"
CO = "urn:sw-hub:vn:moit:co:1"
STATUS_HEAD = """<FormDStatus xmlns="urn:sw-hub:asean:eatiga:formd-status:1"><StatusCode>{code}</StatusCode>
<ReferenceID>VN-TH 25/02/00317</ReferenceID><IssuingCountryCode>VN</IssuingCountryCode>
<SenderCountryCode>{sender}</SenderCountryCode><IssueDateTime>2025-04-02T09:00:00+07:00</IssueDateTime>
{detail}</FormDStatus>"""
STATUS_DETAILS = {
    "RECEIVED": ("TH", "<Receipt><ReceivedDateTime>2025-03-12T08:01:00+07:00</ReceivedDateTime>"
                       "<ReceivingOffice><Name>Thai Customs e-Form D desk</Name></ReceivingOffice></Receipt>"),
    "UTILISED": ("TH", "<Utilisation><DeclarationID>A0012503140099</DeclarationID><DeclarationDate>2025-03-14</DeclarationDate>"
                       "<UtilisedItem><SequenceNumeric>1</SequenceNumeric><Quantity unitCode=\"KGM\">12000</Quantity>"
                       "<FullyUtilised>true</FullyUtilised></UtilisedItem></Utilisation>"),
    "VERIFICATION_REQUEST": ("TH", "<VerificationRequest><RequestID>TH-VR-2025-0042</RequestID>"
                                   "<RequestingAuthorityName>Thai Customs Department</RequestingAuthorityName>"
                                   "<ReplyDueDate>2025-06-12</ReplyDueDate><Question><SequenceNumeric>1</SequenceNumeric>"
                                   "<GoodsItemSequenceNumeric>2</GoodsItemSequenceNumeric><Text>Please send the RVC cost statement.</Text>"
                                   "</Question></VerificationRequest>"),
    "VERIFICATION_REPLY": ("VN", "<VerificationReply><RequestID>TH-VR-2025-0042</RequestID>"
                                 "<RespondingAuthorityName>MOIT Import-Export Department</RespondingAuthorityName>"
                                 "<OutcomeCode>ORIGIN_CONFIRMED</OutcomeCode><Answer><QuestionSequenceNumeric>1</QuestionSequenceNumeric>"
                                 "<Text>Cost statement attached: RVC 47.2%.</Text></Answer></VerificationReply>"),
    "CANCELLED": ("VN", "<Cancellation><Reason><Code>ISSUED-IN-ERROR</Code><Text>Wrong consignee.</Text></Reason>"
                        "<EffectiveDate>2025-03-20</EffectiveDate></Cancellation>"),
    "REPLACED": ("VN", "<Replacement><ReplacementReferenceID>VN-TH 25/02/00401</ReplacementReferenceID>"
                       "<ReplacementIssueDate>2025-03-21</ReplacementIssueDate></Replacement>"),
}


def test_status_examples_reach_the_ministry_as_co_status(tmp_path: Path) -> None:
    for name in ("formd-status-accepted.xml", "formd-status-rejected.xml"):
        out = tmp_path / f"co-{name}"
        run = hub("translate", "--config", CONFIG, "--mapping", "formd-status-to-co", EXAMPLES / name, "-o", out)
        assert run.returncode == 0, run.stderr
        status = etree.parse(str(EXAMPLES / name)).getroot()
        record = etree.parse(str(out)).getroot()
        assert record.tag == f"{{{CO}}}COStatus"
        f = lambda p: status.xpath(p, namespaces={"fs": FS})  # noqa: E731
        c = lambda p: record.xpath(p, namespaces={"co": CO})  # noqa: E731
        assert c("string(co:CertificateNumber)") == f("string(fs:ReferenceID)")
        assert c("string(co:StatusCode)") == f("string(fs:StatusCode)")
        assert c("string(co:ReportingCountryCode)") == f("string(fs:SenderCountryCode)")
        assert c("co:Reason/co:Text/text()") == f("fs:Decision/fs:Reason/fs:Text/text()")
        assert c("co:GoodsItemStatus/co:ItemNumber/text()") == f("fs:Decision/fs:ItemDecision/fs:SequenceNumeric/text()")
        assert c("string(co:Office/co:Name)") == f("string(fs:Decision/fs:CustomsOffice/fs:Name)")
        texts = lambda root: sorted(t.strip() for t in root.itertext() if t.strip())  # noqa: E731
        assert texts(record) == texts(status), "every value of the status reaches the record"
    code, reports = validate_json("--config", CONFIG, *sorted(tmp_path.glob("co-*.xml")))
    assert code == 0 and {r["schema"] for r in reports} == {"co"}


@pytest.mark.parametrize("status_code", sorted(STATUS_DETAILS))
def test_every_status_kind_maps_to_a_valid_co_status(status_code: str) -> None:
    from hub.config import load_config
    from hub.validate import Translator

    translator = _translator(load_config, Translator)
    sender, detail = STATUS_DETAILS[status_code]
    data = STATUS_HEAD.format(code=status_code, sender=sender, detail=detail).encode()
    result = translator.translate(data, ["formd-status-to-co"])
    assert result.ok, [f.text() for f in result.faults]
    record = etree.fromstring(result.output)
    texts = lambda root: sorted(t.strip() for t in root.itertext() if t.strip())  # noqa: E731
    assert texts(record) == texts(etree.fromstring(data)), "every value of the status reaches the record"


_TRANSLATOR: list[Any] = []


def _translator(load_config: Any, translator: Any) -> Any:
    if not _TRANSLATOR:
        _TRANSLATOR.append(translator(load_config(CONFIG)))
    return _TRANSLATOR[0]
