"""Schemas and mappings named in ``hub.toml``, compiled once.

A document is validated by what it is: the catalogue finds its schema from the root element's
namespace and name, whatever the file is called.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from lxml import etree

from .config import Config
from .errors import Code, ConfigError, Rejected
from .xml import Schema, Stylesheet


class SchemaCatalogue:
    def __init__(self, schemas: Mapping[str, Schema]) -> None:
        self.by_name = dict(schemas)
        self._by_root: dict[str, Schema] = {}
        for schema in schemas.values():
            for root in schema.roots:
                self._by_root.setdefault(root, schema)

    @classmethod
    def from_config(cls, config: Config) -> SchemaCatalogue:
        return cls({name: Schema(name, path, f"schemas.{name}") for name, path in config.schemas.items()})

    def for_root(self, tag: str) -> Schema | None:
        return self._by_root.get(tag)

    def unknown_root(self, tag: str) -> str:
        """Why no schema takes a root element: its name and namespace (or that it has none), and
        where the catalogue does know an element of that local name."""
        qn = etree.QName(tag) if tag else None
        local = qn.localname if qn else "?"
        where = f"in namespace {qn.namespace}" if qn and qn.namespace else "which has no namespace"
        known = sorted(
            f"{root} (schema '{schema.name}')"
            for root, schema in self._by_root.items()
            if etree.QName(root).localname == local and root != tag
        )
        hint = f"; the catalogue knows {local} only as {', '.join(known)}" if known else ""
        return f"no schema for the root element {local}, {where}{hint}"

    def validate(self, document: etree._Element, name: str | None = None) -> Schema:
        """Validates against the named schema, or the schema that declares the document's root."""
        tag = document.tag if isinstance(document.tag, str) else ""
        if name is not None:
            schema = self.by_name[name]
            if tag not in schema.roots:
                ns = etree.QName(tag).namespace if tag else None
                raise Rejected(
                    Code.WRONG_NAMESPACE,
                    f"the document's root is {etree.QName(tag).localname if tag else '?'} in namespace "
                    f"{ns or '(none)'}; schema '{name}' expects one of: {', '.join(sorted(schema.roots))}",
                    f"line {document.sourceline}",
                )
        else:
            found = self.for_root(tag)
            if found is None:
                raise Rejected(Code.UNKNOWN_MESSAGE_TYPE, self.unknown_root(tag), f"line {document.sourceline}")
            schema = found
        schema.validate(document)
        return schema


@dataclass(frozen=True)
class Mapping_:
    stylesheet: Stylesheet
    output: Schema | None

    def apply(self, document: etree._Element) -> etree._Element:
        result = self.stylesheet.apply(document)
        if self.output is not None:
            try:
                self.output.validate(result)
            except Rejected as exc:
                raise Rejected(
                    Code.MAPPING_FAILED,
                    f"mapping '{self.stylesheet.name}' produced a document that is not valid: {exc.message}",
                    exc.location,
                ) from None
        return result


def load_mappings(config: Config, schemas: SchemaCatalogue) -> dict[str, Mapping_]:
    out = {}
    for name, spec in config.mappings.items():
        if spec.output is not None and spec.output not in schemas.by_name:
            raise ConfigError(str(config.path), f"mappings.{name}.output", f"unknown schema {spec.output!r}")
        out[name] = Mapping_(
            Stylesheet(name, spec.stylesheet, f"mappings.{name}.stylesheet"),
            schemas.by_name[spec.output] if spec.output else None,
        )
    return out
