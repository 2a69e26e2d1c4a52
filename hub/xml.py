"""The one place where the hub parses XML, and the compiled schemas and stylesheets it uses.

Every parser here refuses DTDs, entities and network access; inbound bytes are bounded in size and
element depth before anything else looks at them. Schemas and stylesheets are compiled once, when
the configuration is loaded, never per message.
"""

from __future__ import annotations

import codecs
import copy
import hashlib
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from .errors import Code, ConfigError, Rejected


@dataclass(frozen=True)
class Limits:
    """Bounds applied to every inbound document before it is trusted with anything."""

    max_bytes: int = 5 * 1024 * 1024
    max_depth: int = 64
    body_seconds: float = 60.0  # the time a listener waits for a request's whole body (``hub.httpio``, ``hub.serve``; heads: ``head_timeout``)


# A DOCTYPE can only stand in the prolog: refuse it before libxml2 reads any declaration in it.
# Atomic and possessive, so a failed match never backtracks into the lazy PI or comment to look
# for a later "?>" or "-->": the check reads the prolog only, not the whole message.
_PROLOG_DOCTYPE = re.compile(rb"^(?:\xef\xbb\xbf)?(?>\s+|<\?.*?\?>|<!--.*?-->)*+<!DOCTYPE", re.S)


# UTF-32 and UTF-16 told by their first bytes, with or without a byte order mark (XML 1.0,
# appendix F; UTF-32's marks first: FF FE 00 00 also starts like UTF-16's FF FE)
_WIDE_ENCODINGS = (
    (codecs.BOM_UTF32_BE, "utf-32-be"), (codecs.BOM_UTF32_LE, "utf-32-le"), (b"\x00\x00\x00<", "utf-32-be"), (b"<\x00\x00\x00", "utf-32-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"), (codecs.BOM_UTF16_LE, "utf-16-le"), (b"\x00<", "utf-16-be"), (b"<\x00", "utf-16-le"),
)


def _as_utf8(data: bytes) -> bytes:
    """``data`` in UTF-8 when it is in UTF-16 or UTF-32, for the prolog's DOCTYPE check to read
    (libxml2 reads both: a DOCTYPE in them would otherwise reach the parser, which tries to load
    an external DTD or expands entities until it gives up, and is refused as malformed XML)."""
    for mark, codec in _WIDE_ENCODINGS:
        if data.startswith(mark):
            return data.decode(codec, "replace").encode("utf-8")
    return data


def hardened_parser() -> etree.XMLParser:
    """A parser for bytes from outside, or of what was made of them (the signed content that
    signxml parses back from its canonical form).
    ``collect_ids=False``: an ``xml:id`` that is not a name, or two of one value, is a fault for
    the schema to name, not a reason to refuse the document's bytes as XML."""
    return etree.XMLParser(
        resolve_entities=False,
        load_dtd=False,
        dtd_validation=False,
        no_network=True,
        huge_tree=False,
        remove_comments=False,
        collect_ids=False,
    )


class XmlParser:
    """Parses untrusted bytes: size, DTD, entity and depth checks; errors become ``Rejected``."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        # True when some element sits deeper than the limit: /*/*/.../* with max_depth + 1 steps,
        # evaluated by libxml2 in one pass instead of a Python walk over every element.
        self._too_deep = etree.XPath("boolean(" + "/*" * (limits.max_depth + 1) + ")")
        self._parser = hardened_parser()

    def parse(self, data: bytes) -> etree._Element:
        if len(data) > self.limits.max_bytes:
            raise Rejected(
                Code.TOO_LARGE,
                f"the message has {len(data)} bytes; the limit is {self.limits.max_bytes}",
            )
        if _PROLOG_DOCTYPE.match(_as_utf8(data)):
            raise Rejected(Code.FORBIDDEN_DTD, "a DOCTYPE declaration is not allowed", "line 1")
        try:
            root = etree.fromstring(data, self._parser)
        except etree.XMLSyntaxError as exc:
            line = exc.lineno if exc.lineno else None
            message = exc.msg or str(exc)
            if _unescaped_ampersand(exc):
                column = _ampersand_column(data, line, exc.position[1])
                raise Rejected(
                    Code.MALFORMED_XML,
                    f"the message is not well-formed XML: an unescaped '&' at line {line}, column {column} (write &amp;)",
                    f"line {line}" if line else None,
                ) from None
            # an entity reference libxml2 cannot resolve: with DTDs refused, that is an entity attack
            # (told by its error code: a message quoting a name such as "identity" is no entity)
            if exc.code in _ENTITY_ERRORS:
                raise Rejected(
                    Code.FORBIDDEN_DTD,
                    f"entity references are not allowed: {message}",
                    f"line {line}" if line else None,
                ) from None
            raise Rejected(
                Code.MALFORMED_XML,
                f"the message is not well-formed XML: {message}",
                f"line {line}" if line else None,
            ) from None
        docinfo = root.getroottree().docinfo
        if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
            raise Rejected(Code.FORBIDDEN_DTD, "a DOCTYPE declaration is not allowed", "line 1")
        if self._too_deep(root):
            raise Rejected(
                Code.TOO_DEEP,
                f"elements are nested deeper than the limit of {self.limits.max_depth}",
            )
        return root


# libxml2's errors about entities and parameter entities (an unescaped '&' is told apart first)
_ENTITY_ERRORS = frozenset(
    code for name, code in vars(etree.ErrorTypes).items()
    if name.startswith(("ERR_", "WAR_")) and ("ENTITY" in name or "PEREF" in name) and isinstance(code, int)
)


def _unescaped_ampersand(exc: etree.XMLSyntaxError) -> bool:
    """A '&' that starts no entity reference: "Siam & Highland" (no name after it) or "AT&T"
    (no ';'). Text, not an entity attack, though libxml2's message names an entity either way;
    a complete reference to an undeclared entity ("&x;") is still refused as one."""
    if exc.code == etree.ErrorTypes.ERR_ENTITYREF_SEMICOL_MISSING:
        return True
    # ERR_NAME_REQUIRED is also a bad element or attribute name; only xmlParseEntityRef's is a '&'
    return exc.code == etree.ErrorTypes.ERR_NAME_REQUIRED and "EntityRef" in (exc.msg or "")


def _ampersand_column(data: bytes, line: int | None, column: int) -> int:
    """The column of the '&' itself: libxml2 points after it, or after the name that follows it.
    Its columns count characters, so the line is decoded (as UTF-8; libxml2's column otherwise)."""
    lines = data.split(b"\n")
    if not line or line > len(lines):
        return column
    found = lines[line - 1].decode("utf-8", "replace").rfind("&", 0, column)
    return found + 1 if found >= 0 else column


def _load_file(path: Path, what: str, key: str) -> etree._ElementTree:
    """Parses a schema or stylesheet named by the configuration (local files only)."""
    try:
        return etree.parse(str(path), hardened_parser())
    except OSError as exc:
        raise ConfigError(str(path), key, f"cannot read the {what}: {exc}") from None
    except etree.XMLSyntaxError as exc:
        raise ConfigError(str(path), key, f"the {what} is not well-formed XML: {exc}") from None


def describe_error(entry: etree._LogEntry, top: etree._Element | None = None) -> str:
    """``line N, /Root/Child[2]/Leaf``: the path in local names when ``top`` (the element that was
    validated) is given, else libxml2's own path."""
    path = element_path(top, entry.path) if top is not None else entry.path
    return f"line {entry.line}" + (f", {path}" if path else "")


_PATH_STEP = re.compile(r"^(@)?(?:([^\s:\[\]/]+):)?([^\s:\[\]/]+)(?:\[(\d+)\])?$")


def fault_node(top: etree._Element, raw: str | None) -> tuple[etree._Element, str | None] | None:
    """The element (and attribute name, if any) that libxml2's path of a validation fault points to.
    libxml2 writes ``*[n]`` for an element in a default namespace (n counts every element sibling)
    and ``prefix:name[n]`` otherwise; the first step is the validated element itself."""
    if not raw or not raw.startswith("/"):
        return None
    if isinstance(top, etree._ElementTree):
        top = top.getroot()
    steps = raw.split("/")[2:]
    node = top
    for i, step in enumerate(steps):
        m = _PATH_STEP.match(step)
        if m is None:
            return None
        attribute, prefix, name, index = m.group(1), m.group(2), m.group(3), int(m.group(4) or 1)
        if attribute:
            return (node, f"{prefix}:{name}" if prefix else name) if i == len(steps) - 1 else None
        children = [c for c in node if isinstance(c.tag, str)]
        if name != "*":
            children = [
                c for c in children
                if etree.QName(c).localname == name
                and (c.prefix == prefix if prefix else etree.QName(c).namespace is None)
            ]
        if not 0 < index <= len(children):
            return None
        node = children[index - 1]
    return node, None


def element_path(top: etree._Element, raw: str | None) -> str | None:
    """libxml2's path of a fault (``/*/*[8]/*[5]``, relative to the validated element ``top``) as local
    names, with a position where siblings share the name: ``/COCertificate/GoodsItem[2]/HSCode``.
    Falls back to libxml2's path when it does not resolve."""
    found = fault_node(top, raw)
    if found is None:
        return raw
    node, attribute = found
    steps = []
    while node is not None:
        step = etree.QName(node).localname
        parent = node.getparent() if node is not top else None
        if parent is not None:
            same = [c for c in parent if c.tag == node.tag]
            if len(same) > 1:
                step += f"[{same.index(node) + 1}]"
        steps.append(step)
        node = parent
    return "/" + "/".join(reversed(steps)) + (f"/@{attribute}" if attribute else "")


class Schema:
    """A compiled XSD with the qualified names of the root elements it declares.

    lxml keeps one error log per compiled schema, cleared and filled by every validation: two
    threads validating at once would read each other's faults (one sender's NACK naming another
    sender's values) or none. A validation and the reading of its log hold the schema's lock.
    """

    def __init__(self, name: str, path: Path, key: str) -> None:
        self.name, self.path = name, path
        tree = _load_file(path, "schema", key)
        try:
            self._schema = etree.XMLSchema(tree)
        except etree.XMLSchemaParseError as exc:
            raise ConfigError(str(path), key, f"the schema does not compile: {exc}") from None
        self.roots = frozenset(_declared_roots(tree))
        self._lock = threading.Lock()

    def validate(self, element: etree._Element) -> None:
        """Raises ``Rejected`` with the line and path of the first fault."""
        with self._lock:
            if self._schema.validate(element):
                return
            entry = self._schema.error_log[0]
        raise Rejected(
            Code.INVALID_DOCUMENT,
            f"the document is not valid against schema '{self.name}': {entry.message}",
            describe_error(entry, element),
        )

    def errors(self, element: etree._Element) -> list[etree._LogEntry]:
        with self._lock:
            self._schema.validate(element)
            return list(self._schema.error_log)


def _declared_roots(tree: etree._ElementTree) -> set[str]:
    """Global elements of a schema, as Clark names. A wrapper schema that declares none of its own
    stands for the global elements of the schemas it imports."""
    xs = "{http://www.w3.org/2001/XMLSchema}"

    def own(top: etree._Element) -> set[str]:
        ns = top.get("targetNamespace")
        names = (el.get("name") for el in top.iterchildren(xs + "element"))
        return {f"{{{ns}}}{n}" if ns else n for n in names if n}

    top = tree.getroot()
    roots = own(top)
    if roots:
        return roots
    base = Path(tree.docinfo.URL or ".").parent
    for imp in top.iterchildren(xs + "import", xs + "include"):
        location = imp.get("schemaLocation")
        if location and "://" not in location:
            try:
                roots |= own(etree.parse(str(base / location), hardened_parser()).getroot())
            except (OSError, etree.XMLSyntaxError):
                pass
    return roots


class Stylesheet:
    """A compiled XSLT 1.0 mapping; it may read no file and reach no network."""

    _access = etree.XSLTAccessControl.DENY_ALL

    def __init__(self, name: str, path: Path, key: str) -> None:
        self.name, self.path = name, path
        tree = _load_file(path, "stylesheet", key)
        raw = tree.xpath("//@disable-output-escaping[normalize-space(.) = 'yes']")
        if raw:
            # the result tree would hold markup as text that becomes markup only when serialised:
            # what the hub signs (the tree) would not be what it sends (the bytes)
            raise ConfigError(str(path), key, f"line {raw[0].getparent().sourceline}: disable-output-escaping is not allowed; "
                              "build elements with xsl:element or literal result elements instead")
        try:
            self._xslt = etree.XSLT(tree, access_control=self._access)
        except etree.XSLTParseError as exc:
            raise ConfigError(str(path), key, f"the stylesheet does not compile: {exc}") from None
        self._lock = threading.Lock()  # its error log (xsl:message) is one per stylesheet, as a schema's (``Schema``)

    def apply(self, element: etree._Element) -> etree._Element:
        if element.getparent() is not None:
            # XSLT's "/" is the element's whole document: give the stylesheet a document of its own.
            # A copy, not lxml's stand-in document around the element: xsl:strip-space makes libxslt
            # remove whitespace from its input, which would cut nodes out of the caller's tree.
            element = copy.deepcopy(element)
        try:
            with self._lock:
                result = self._xslt(element)
        except etree.XSLTApplyError as exc:
            raise Rejected(Code.MAPPING_FAILED, f"mapping '{self.name}' failed: {exc}") from None
        root = result.getroot()
        if root is None:
            raise Rejected(Code.MAPPING_FAILED, f"mapping '{self.name}' produced no document")
        return root


def qname(element: etree._Element) -> str:
    """The element's Clark name, ``{namespace}local``."""
    return element.tag if isinstance(element.tag, str) else ""


class _CanonicalTooLong(Exception):
    """The canonical form went past its limit (``_Digesting``)."""


class _Digesting:
    """Where ``canonical_digest`` writes the canonical form: hashed as libxml2 writes it, never held
    whole, and stopped past ``limit`` bytes."""

    def __init__(self, digest: hashlib._Hash, limit: int | None) -> None:
        self.digest, self.limit, self.written = digest, limit, 0

    def write(self, data: bytes) -> None:
        self.written += len(data)
        if self.limit is not None and self.written > self.limit:
            raise _CanonicalTooLong
        self.digest.update(data)


def canonical_digest(element: etree._Element, *context: str | None, limit: int | None = None) -> bytes:
    """SHA-256 of the strings ``context`` (each length-prefixed, None told apart from "") and of
    ``element``'s exclusive canonical form (C14N 1.0; comments included, though a signed document,
    as signxml returns it, has none): the same for the same document whatever its attribute order,
    quoting or namespace declarations its names do not use (not across other prefixes or
    indentation). A document that has no canonical form (a relative namespace URI) is refused.

    The canonical form can be far larger than the document: it declares a namespace on every
    element that uses it and whose parent did not, so ``<a xmlns:p="(100 KB)"><p:b/><p:b/>...``
    (6 bytes an element) becomes 100 KB an element. It is hashed as it is written, and refused
    (ERR11) past ``limit`` bytes instead of filling the memory."""
    digest = hashlib.sha256()
    for value in context:
        data = b"\x00" if value is None else b"\x01" + value.encode()
        digest.update(len(data).to_bytes(4, "big") + data)
    if element.getparent() is None and (element.getprevious() is not None or element.getnext() is not None):
        element = copy.deepcopy(element)  # a root's tree would write the comments beside it too: the element alone
    try:
        etree.ElementTree(element).write_c14n(_Digesting(digest, limit), exclusive=True)
    except etree.C14NError as exc:
        raise Rejected(Code.WRONG_NAMESPACE, f"the document has no canonical form (a relative namespace URI?): {exc}") from None
    except _CanonicalTooLong:
        raise Rejected(
            Code.TOO_LARGE,
            f"the document's canonical form (what the duplicate check is computed over) is more than {limit} bytes: "
            "namespace declarations repeated on element after element?",
        ) from None
    return digest.digest()
