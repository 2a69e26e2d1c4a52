"""``hub validate`` and ``hub translate``: documents checked against the schema catalogue of hub.toml.

A document is validated by what it is: its root element's namespace and name pick the schema from
``[schemas]``, never its file name. A hub envelope is validated against the envelope schema and its
payload against the payload's own schema; the hub's own receipts and NACKs (a ``Receipt`` or an
``ErrorList`` in Content) are covered by the envelope schema itself. Validation is libxml2's
(through lxml), with every fault's line and a path of local names (``/COCertificate/GoodsItem[2]/HSCode``)
that the hub's NACKs carry too. Each report measures the parse and validation time of its document (``ms``), for benchmarks.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from lxml import etree

from .catalogue import Mapping_, SchemaCatalogue, load_mappings
from .config import Config
from .envelope import NS as ENVELOPE_NS
from .envelope import content_of
from .errors import Code, Rejected
from .xml import Limits, Schema, XmlParser, element_path, fault_node

ENVELOPE = f"{{{ENVELOPE_NS}}}Envelope"
_XSL = "{http://www.w3.org/1999/XSL/Transform}"
_LINE = re.compile(r"line (\d+)")


@dataclass(frozen=True)
class Fault:
    """One reason a document is refused: where (line, path) and why."""

    message: str
    line: int | None = None
    path: str | None = None
    code: str = Code.INVALID_DOCUMENT.value

    def text(self) -> str:
        where = " ".join(p for p in (f"line {self.line}" if self.line else "", self.path or "") if p)
        return f"{where}: {self.message}" if where else self.message

    def as_dict(self) -> dict[str, Any]:
        return {"line": self.line, "path": self.path, "message": self.message, "code": self.code}

    @classmethod
    def of(cls, exc: Rejected) -> Fault:
        m = _LINE.search(exc.location or "")
        path = (exc.location or "").partition(", ")[2] or None
        return cls(exc.message, int(m.group(1)) if m else None, path, exc.code.value)


@dataclass
class Report:
    """What ``hub validate`` found for one file."""

    file: str
    root: str | None = None
    schema: str | None = None  # the schema's name in [schemas]; "envelope+NAME" for an envelope, "envelope" for a receipt or NACK
    faults: list[Fault] = field(default_factory=list)
    ms: float = 0.0  # parse + validation, without reading the file

    @property
    def ok(self) -> bool:
        return not self.faults

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "ok": self.ok,
            "root": self.root,
            "schema": self.schema,
            "ms": round(self.ms, 3),
            "errors": [f.as_dict() for f in self.faults],
        }

    def text(self) -> str:
        if self.ok:
            return f"{self.file}: OK (schema {self.schema})"
        head = f"{self.file}: INVALID" + (f" (schema {self.schema})" if self.schema else "")
        return "\n".join([head, *(f"  {f.text()}" for f in self.faults)])


def schema_faults(schema: Schema, element: etree._Element, prefix: str = "") -> list[Fault]:
    """Every fault libxml2 reports, with the line in the parsed source and a local-name path."""
    faults = []
    for entry in schema.errors(element):
        line = entry.line or None
        found = fault_node(element, entry.path)
        if not line and found is not None:
            line = found[0].sourceline
        path = element_path(element, entry.path)
        faults.append(Fault(entry.message, line, prefix + path if path else None))
    return faults


def _root_fault(element: etree._Element, message: str, code: Code, prefix: str = "") -> Fault:
    return Fault(message, element.sourceline, f"{prefix}/{etree.QName(element).localname}", code.value)


class Validator:
    """Compiles the catalogue once, then validates any number of documents."""

    def __init__(self, config: Config, catalogue: SchemaCatalogue | None = None) -> None:
        self.config = config
        self.catalogue = catalogue or SchemaCatalogue.from_config(config)
        self.envelope = Schema("envelope", config.hub.envelope_schema, "hub.envelope_schema")
        # the hub's own answers: a receipt's Receipt and a NACK's ErrorList are declared (and checked
        # strictly inside Content) by the envelope schema, which [schemas] does not list
        self.own = self.envelope.roots - {ENVELOPE}
        self.parser = XmlParser(config.hub.limits)

    def document(self, element: etree._Element, prefix: str = "") -> tuple[str | None, list[Fault]]:
        """Validates a business document by its root; returns the schema's name and the faults."""
        tag = element.tag if isinstance(element.tag, str) else ""
        schema = self.catalogue.for_root(tag)
        if schema is None and tag in self.own:  # a Receipt or ErrorList taken out of the hub's answer
            schema = self.envelope
        if schema is None:
            return None, [_root_fault(element, self.catalogue.unknown_root(tag), Code.UNKNOWN_MESSAGE_TYPE, prefix)]
        return schema.name, schema_faults(schema, element, prefix)

    def validate_bytes(self, data: bytes, name: str = "-") -> Report:
        report = Report(name)
        start = time.perf_counter()
        try:
            root = self.parser.parse(data)
        except Rejected as exc:
            report.faults.append(Fault.of(exc))
            report.ms = (time.perf_counter() - start) * 1000
            return report
        report.root = root.tag if isinstance(root.tag, str) else None
        if root.tag == ENVELOPE:
            report.faults += schema_faults(self.envelope, root)
            payload = content_of(root)
            if payload is None:
                report.schema = "envelope"
                report.faults.append(_root_fault(root, "Body/Content carries no document", Code.INVALID_MESSAGE))
            elif payload.tag in self.own:  # a receipt or a NACK: the envelope schema has just checked it
                report.schema = "envelope"
            else:
                prefix = "/Envelope/Body/Content"
                name_, faults = self.document(payload, prefix)
                report.schema = f"envelope+{name_}" if name_ else "envelope"
                report.faults += faults
        else:
            report.schema, report.faults = self.document(root)
        report.ms = (time.perf_counter() - start) * 1000
        return report

    def validate_file(self, path: str | Path) -> Report:
        if Path(path).is_dir():  # ``expand`` leaves a folder only when it holds no *.xml
            return Report(str(path), faults=[Fault("the folder holds no *.xml file: nothing to validate", code="IO")])
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            return Report(str(path), faults=[Fault(f"cannot read the file: {exc.strerror or exc}", code="IO")])
        return self.validate_bytes(data, str(path))


def expand(paths: Iterable[str]) -> list[str]:
    """Files as given; a folder stands for every ``*.xml`` below it, in sorted order, or for itself
    when there is none, so that it is reported (nothing to validate) rather than passed over."""
    out: list[str] = []
    for p in paths:
        path = Path(p)
        out += ([str(f) for f in sorted(path.rglob("*.xml")) if f.is_file()] or [p]) if path.is_dir() else [p]
    return out


# -- translate ------------------------------------------------------------------------------------


def input_roots(mapping: Mapping_) -> list[str]:
    """The root elements a mapping takes, as Clark names: what its ``match="/"`` template applies
    templates to, else the ``from {ns}Name`` line of its header comment."""
    tree = etree.parse(str(mapping.stylesheet.path), etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False))
    top = tree.getroot()
    roots: list[str] = []
    for template in top.iterchildren(f"{_XSL}template"):
        if template.get("match") != "/":
            continue
        for apply in template.iter(f"{_XSL}apply-templates"):
            for step in (apply.get("select") or "").split("|"):
                prefix, _, local = step.strip().rpartition(":")
                if re.fullmatch(r"[\w.-]+", local) and (not prefix or prefix in top.nsmap):
                    roots.append(f"{{{top.nsmap[prefix]}}}{local}" if prefix else local)
    if roots:
        return roots
    comment = next((c.text for c in tree.getroot().itersiblings(preceding=True) if isinstance(c, etree._Comment)), "") or ""
    for line in comment.splitlines():
        if line.strip().startswith("from "):
            roots += re.findall(r"\{[^}]*\}[\w.-]+", line)
    return roots


@dataclass
class Translation:
    output: bytes | None = None  # the last document produced, valid or not
    schema: str | None = None
    faults: list[Fault] = field(default_factory=list)
    stage: str = ""  # "input", or the mapping that failed or produced an invalid document
    headline: str = ""  # what went wrong, in one sentence

    @property
    def ok(self) -> bool:
        return not self.faults and self.output is not None


def _serialize(element: etree._Element) -> bytes:
    return etree.tostring(element, xml_declaration=True, encoding="UTF-8", pretty_print=True)


class Translator:
    """Applies a mapping or a chain of mappings from hub.toml and validates every step's output."""

    def __init__(self, config: Config, validator: Validator | None = None) -> None:
        self.validator = validator or Validator(config)
        self.mappings = load_mappings(config, self.validator.catalogue)
        # a mapping's output is parsed back to give faults a line; bounded, but not by the inbound limit
        self._reparse = XmlParser(Limits(max_bytes=1 << 30, max_depth=config.hub.limits.max_depth * 4))

    def listing(self) -> list[dict[str, Any]]:
        out = []
        for name, m in self.mappings.items():
            roots = input_roots(m)
            out.append({
                "mapping": name,
                "stylesheet": str(m.stylesheet.path),
                "input": [{"root": r, "schema": s.name if (s := self.validator.catalogue.for_root(r)) else None} for r in roots],
                "output": m.output.name if m.output else None,
                "output_schema": str(m.output.path) if m.output else None,
            })
        return out

    def translate(self, data: bytes, chain: list[str]) -> Translation:
        unknown = [n for n in chain if n not in self.mappings]
        if unknown or not chain:
            known = ", ".join(sorted(self.mappings))
            return Translation(faults=[Fault(f"no mapping {unknown[0] if unknown else ''!r} in [mappings]; known: {known}", code="USAGE")],
                               stage="input", headline="unknown mapping")
        try:
            document = self.validator.parser.parse(data)
        except Rejected as exc:
            return Translation(faults=[Fault.of(exc)], stage="input", headline="the input cannot be read")
        if document.tag == ENVELOPE:
            payload = content_of(document)
            if payload is None:
                return Translation(faults=[_root_fault(document, "Body/Content carries no document", Code.INVALID_MESSAGE)],
                                   stage="input", headline="the input envelope carries no document")
            document = payload
        schema, faults = self.validator.document(document)
        if faults:
            return Translation(schema=schema, faults=faults, stage="input",
                               headline="the input is not valid" + (f" (schema {schema})" if schema else ""))
        result = Translation(schema=schema)
        for name in chain:
            mapping = self.mappings[name]
            roots = input_roots(mapping)
            if roots and document.tag not in roots:
                result.faults.append(_root_fault(
                    document, f"mapping '{name}' takes {' or '.join(roots)}, not {document.tag}", Code.MAPPING_FAILED))
                result.stage, result.headline = name, f"mapping '{name}' does not apply to this document"
                return result
            try:
                produced = mapping.stylesheet.apply(document)
            except Rejected as exc:
                result.faults.append(Fault.of(exc))
                result.stage, result.headline = name, f"mapping '{name}' failed"
                return result
            result.output = _serialize(produced)
            document = self._reparse.parse(result.output)
            result.schema = mapping.output.name if mapping.output else None
            if mapping.output is not None:
                faults = schema_faults(mapping.output, document)
                if faults:
                    result.faults += faults
                    result.stage = name
                    result.headline = f"the output of mapping '{name}' is not valid (schema {result.schema}; lines of that output)"
                    return result
        return result
