"""Fuzzing the message path in-process (``Pipeline.submit``), bounded and deterministic.

Two kinds of input, both from a valid signed certificate of origin:

* mutated, then signed with the sender's real key: the envelope's header and the payload are
  changed as a tree (elements deleted, duplicated, swapped; texts emptied, padded, made huge or
  odd; unknown attributes and elements, other namespaces, comments, processing instructions,
  ``Id`` attributes), so the signature verifies and the input reaches every later stage;
* signed, then mutated: bytes and tree changed after signing (flips, truncation, something
  before the root, a second signature, the payload moved, other encodings, BOMs, CRLF).

Every answer must be a signed receipt or a signed NACK with a known code and a sentence, never
an exception, never ERR99 (each input is the sender's doing), and the same input twice must get
the same answer. What the hub accepts must really be valid, and its outbound rows signed. A
longer campaign, outside the suite, drives the same generators (``Campaign``, ``MUTATIONS``,
``AFTER``) with a seeded random source and tens of thousands of cases; the tests at the end of
this file are the inputs it found answered wrongly.
"""

from __future__ import annotations

import codecs
import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from hub.envelope import NS, content_of, read_errors, read_header
from hub.errors import Code
from hub.runtime import Runtime
from hub.trust import Verifier, load_certificates

from .support import Sender, write_config

E = f"{{{NS}}}"
DSIG = "http://www.w3.org/2000/09/xmldsig#"
XML_NS = "http://www.w3.org/XML/1998/namespace"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
CO = "urn:sw-hub:vn:moit:co:1"
KNOWN_CODES = frozenset(c.value for c in Code)
# codes that are never the sender's doing in this campaign: the store is up, the hub is sound
HUB_FAULTS = frozenset({Code.INTERNAL_ERROR.value, Code.TRY_AGAIN.value})

ODD_TEXTS: tuple[str, ...] = (
    "",
    " ",
    " \t\n ",
    "x" * 10_000,
    "\u202eCO-FORMD\u202c",  # right-to-left override
    "\u05e2\u05d1\u05e8\u05d9\u05ea \u0627\u0644\u0639\u0631\u0628\u064a\u0629",  # Hebrew, Arabic
    "e\u0301\u0302\u0303",  # combining marks
    "\U0001f600\U00010348\U0010fffd",  # astral
    "\u00a0\u2028\u2029\ufeff",  # odd spaces, a BOM inside a text
    "0000-00-00",
    "9999-12-31T99:99:99",
    "9999-12-31T23:59:59.999999999+14:00",
    "-0001",
    "99999999999999999999999999999999999999",
    "-1",
    "1e309",
    "NaN",
    "0.0000000000000000000000000001",
    "&<>\"']]>",
    "VN-MOIT",
    "CO-FORMD",
    "01",
    "D",
    "00000000-0000-0000-0000-000000000000",
    "A" * 33,
    "A" * 257,
)
ODD_ATTRIBUTES: tuple[str, ...] = (
    "unknown",
    "{urn:example:other}unknown",
    f"{{{XML_NS}}}id",
    "Id",
    "ID",
    "id",
    f"{{{XML_NS}}}lang",
    f"{{{XML_NS}}}space",
    f"{{{DSIG}}}Id",
    f"{{{XSI}}}type",
    f"{{{XSI}}}nil",
    f"{{{XSI}}}schemaLocation",
    f"{{{XSI}}}noNamespaceSchemaLocation",
)
XSI_VALUES = ("xs:string", "xs:anyType", "true", "urn:x http://127.0.0.1:9/x.xsd", "co:COCertificateType", "1")
ODD_TAGS: tuple[str, ...] = (
    f"{E}Unknown",
    "{urn:example:other}Extra",
    "NoNamespace",
    f"{{{CO}}}Extra",
    f"{{{DSIG}}}Signature",
    f"{{{DSIG}}}Object",
    f"{E}Envelope",
)
OTHER_NAMESPACES: tuple[str | None, ...] = (None, "urn:example:other", NS, CO, "urn:sw-hub:asean:eatiga:formd:1", DSIG, "urn:SW-HUB:ENVELOPE:1", "relative/ns")


# -- the tree mutations (before signing) ---------------------------------------------------------

def _region(root: etree._Element, where: int) -> list[etree._Element]:
    """The elements one mutation may touch: the header's, the payload's, or the envelope's frame."""
    header, payload = root.find(f"{E}Header"), content_of(root)
    choice = where % 4  # the payload twice as often: it has most to reach (validation, mapping, signing)
    if choice == 0 and header is not None:
        return list(header.iter(etree.Element))
    if choice in (1, 3) and payload is not None:
        return list(payload.iter(etree.Element))
    return [e for e in (root, root.find(f"{E}Header"), root.find(f"{E}Body"), root.find(f"{E}Body/{E}Content")) if e is not None]


def _pick(root: etree._Element, where: int, which: int, leaves: bool = False) -> etree._Element:
    elements = _region(root, where)
    if leaves:
        elements = [e for e in elements if not len(e)] or elements
    return elements[which % len(elements)]


def m_delete(root: etree._Element, where: int, which: int, value: int) -> None:
    el = _pick(root, where, which)
    if el.getparent() is not None:
        el.getparent().remove(el)


def m_duplicate(root: etree._Element, where: int, which: int, value: int) -> None:
    el = _pick(root, where, which)
    if el.getparent() is not None:
        el.addnext(copy.deepcopy(el))


def m_swap(root: etree._Element, where: int, which: int, value: int) -> None:
    el = _pick(root, where, which)
    after = el.getnext()
    while after is not None and not isinstance(after.tag, str):
        after = after.getnext()
    if after is not None:
        after.addnext(el)


def m_text(root: etree._Element, where: int, which: int, value: int) -> None:
    _pick(root, where, which, leaves=True).text = ODD_TEXTS[value % len(ODD_TEXTS)]


def m_pad(root: etree._Element, where: int, which: int, value: int) -> None:
    el = _pick(root, where, which, leaves=True)
    pad = (" ", "\t", "\n  ", "\u00a0", "\r\n")[value % 5]
    el.text = pad + (el.text or "") + pad


def _variants(text: str) -> list[str]:
    """Values near ``text``: the same value spelled otherwise, or just out of its range."""
    t = text.strip()
    out = [t.lower(), t.upper(), t + t, t[:1], t[:-1], "0" + t, "+" + t, "-" + t, t + ".0", t + ".000001", t + "e0", t + "Z",
           t + "+14:00", t + "-14:00", t + "T00:00:00", t.replace("-", "/"), t.replace(" ", "  "), t.replace("-", "\u2011"),
           "\u200b" + t, t + "\u0301", "1" + t.lstrip("0123456789"), t[::-1]]
    for n in (2, 3, 6, 17, 35, 70, 256, 512, 2000):  # at the lengths the schemas bound
        out.append((t or "x") * (n // max(1, len(t)) + 1))
        out[-1] = out[-1][:n]
    out += ["999", "1000", "99999999", "100000000", "0.01", "0.001", "100", "100.01", "9999999999.999999", "12345678901234567", "0"]
    if t[:4].isdigit():
        out += ["0000" + t[4:], "9999" + t[4:], "1999" + t[4:], "2100" + t[4:], t[:5] + "02-29", t[:5] + "13-01", t[:8] + "32"]
    return out


def m_variant(root: etree._Element, where: int, which: int, value: int) -> None:
    el = _pick(root, where, which, leaves=True)
    variants = _variants(el.text or "x")
    el.text = variants[value % len(variants)]


def m_attribute(root: etree._Element, where: int, which: int, value: int) -> None:
    el = _pick(root, where, which)
    name = ODD_ATTRIBUTES[value % len(ODD_ATTRIBUTES)]
    values = XSI_VALUES if name.startswith(f"{{{XSI}}}") else ("", "x", " ", "Signature", "#", "preserve")
    if name.startswith(f"{{{XSI}}}") and "xs" not in (el.nsmap or {}):
        wrapper = etree.Element(el.tag, nsmap={**el.nsmap, "xs": "http://www.w3.org/2001/XMLSchema", "co": CO})
        _with_namespaces(el, wrapper, name, values[value // len(ODD_ATTRIBUTES) % len(values)])
        return
    el.set(name, values[value // len(ODD_ATTRIBUTES) % len(values)])


def _with_namespaces(el: etree._Element, replacement: etree._Element, name: str, value: str) -> None:
    """``el`` replaced by a copy declaring the prefixes an ``xsi:type`` value names."""
    replacement.text, replacement.tail = el.text, el.tail
    for key, attr in el.attrib.items():
        replacement.set(key, attr)
    for child in list(el):
        replacement.append(child)
    replacement.set(name, value)
    parent = el.getparent()
    if parent is None:  # the root itself: only its attribute, without the prefixes
        el.set(name, value)
        return
    parent.replace(el, replacement)


def m_child(root: etree._Element, where: int, which: int, value: int) -> None:
    el = _pick(root, where, which)
    child = etree.Element(ODD_TAGS[value % len(ODD_TAGS)])
    child.text = ODD_TEXTS[value % len(ODD_TEXTS)][:40]
    el.insert(value % (len(el) + 1), child)


def m_namespace(root: etree._Element, where: int, which: int, value: int) -> None:
    el = _pick(root, where, which)
    namespace = OTHER_NAMESPACES[value % len(OTHER_NAMESPACES)]
    local = etree.QName(el).localname
    el.tag = f"{{{namespace}}}{local}" if namespace else local


def m_comment(root: etree._Element, where: int, which: int, value: int) -> None:
    el = _pick(root, where, which)
    kind = value % 4
    node = etree.Comment(" c ") if kind % 2 == 0 else etree.ProcessingInstruction("note", "x")
    if kind < 2:
        el.insert(value % (len(el) + 1), node)
    elif el.getparent() is not None:
        el.addprevious(node)
    else:
        root.addprevious(node)  # before the root element, in the prolog


def m_split_text(root: etree._Element, where: int, which: int, value: int) -> None:
    """A comment or processing instruction inside a value: ``VN<!-- -->-MOIT``. Still one text as
    far as the infoset's string value and the signature go."""
    el = _pick(root, where, which, leaves=True)
    text = el.text or ""
    if len(text) < 2 or len(el):
        return
    cut = 1 + value % (len(text) - 1)
    node = etree.Comment("x") if value % 2 == 0 else etree.ProcessingInstruction("p")
    el.text = text[:cut]
    el.append(node)
    node.tail = text[cut:]


def m_tail(root: etree._Element, where: int, which: int, value: int) -> None:
    el = _pick(root, where, which)
    if el.getparent() is not None:
        el.tail = ("mixed", " ", "\n")[value % 3]


def m_cdata(root: etree._Element, where: int, which: int, value: int) -> None:
    el = _pick(root, where, which, leaves=True)
    el.text = etree.CDATA(el.text or ODD_TEXTS[value % len(ODD_TEXTS)])


def m_message_id(root: etree._Element, where: int, which: int, value: int) -> None:
    mid = root.find(f"{E}Header/{E}Reference/{E}messageId")
    if mid is None or not mid.text:
        return
    mid.text = (mid.text.upper(), f" {mid.text} ", "{" + mid.text + "}", mid.text.replace("-", ""), mid.text + "0")[value % 5]


def m_prefix(root: etree._Element, where: int, which: int, value: int) -> None:
    """The payload written with a prefix instead of the default namespace (the same document)."""
    payload = content_of(root)
    if payload is None or not etree.QName(payload).namespace:
        return

    def rebuilt(element: etree._Element, parent: etree._Element | None) -> etree._Element:
        made = etree.Element(element.tag, nsmap={"co": CO}) if parent is None else etree.SubElement(parent, element.tag)
        made.text, made.tail = element.text, element.tail
        for name, attr in element.attrib.items():
            made.set(name, attr)
        for child in element:
            if isinstance(child.tag, str):
                rebuilt(child, made)
            else:
                made.append(copy.deepcopy(child))
        return made

    payload.getparent().replace(payload, rebuilt(payload, None))


MUTATIONS: dict[str, Callable[[etree._Element, int, int, int], None]] = {
    "delete": m_delete,
    "duplicate": m_duplicate,
    "swap": m_swap,
    "text": m_text,
    "pad": m_pad,
    "variant": m_variant,
    "attribute": m_attribute,
    "child": m_child,
    "namespace": m_namespace,
    "comment": m_comment,
    "split_text": m_split_text,
    "tail": m_tail,
    "cdata": m_cdata,
    "message_id": m_message_id,
    "prefix": m_prefix,
}
Op = tuple[str, int, int, int]


def mutated_then_signed(sender: Sender, ops: Sequence[Op], message_id: str, sign: bool = True, document_type: str = "CO-FORMD") -> bytes | None:
    """A fresh envelope with ``ops`` applied, signed as the sender (``sign``); None when signxml
    cannot sign the result (the sender could not have sent it)."""
    root = sender.envelope(message_id=message_id, document_type=document_type)
    for name, where, which, value in ops:
        MUTATIONS[name](root, where, which, value)
    signed = root
    if sign:
        try:
            signed = sender.signer.sign(root)
        except Exception:  # noqa: BLE001 - the client's own failure: nothing to send
            return None
    prolog = b""
    before = root.getprevious()
    while before is not None:  # nodes before the root travel in the prolog
        prolog = etree.tostring(before) + prolog
        before = before.getprevious()
    return b"<?xml version='1.0' encoding='UTF-8'?>\n" + prolog + etree.tostring(signed, encoding="UTF-8")


# -- the changes after signing ---------------------------------------------------------------------

@dataclass(frozen=True)
class After:
    """A change to signed bytes and the answers it may get: ``codes`` (refused with one of them)
    and/or ``same`` (accepted, because the document the signature covers is unchanged)."""

    name: str
    change: Callable[[bytes, int], bytes]
    codes: frozenset[str] = frozenset()
    same: bool = False  # the change leaves the signed infoset as it was: accepted


def _flip(data: bytes, at: int) -> bytes:
    i = at % len(data)
    return data[:i] + bytes([data[i] ^ (1 << (at // len(data) % 8))]) + data[i + 1:]


def _payload_text(data: bytes, at: int) -> bytes:
    """One letter of a payload text changed to another letter."""
    start = data.index(b"<CertificateNumber>") + len(b"<CertificateNumber>")
    i = start + at % 5
    return data[:i] + (b"Q" if data[i:i + 1] != b"Q" else b"R") + data[i + 1:]


def _in_element(tag: bytes) -> Callable[[bytes, int], bytes]:
    def change(data: bytes, at: int) -> bytes:
        start = data.index(tag) + len(tag)
        end = data.index(b"<", start)
        i = start + at % max(1, end - start - 4)  # base64 text: away from the '=' padding
        new = b"A" if data[i:i + 1] != b"A" else b"B"
        return data[:i] + new + data[i + 1:]
    return change


def _truncate(data: bytes, at: int) -> bytes:
    return data[: at % (len(data) - 1) + 1]


def _before_root(junk: bytes) -> Callable[[bytes, int], bytes]:
    def change(data: bytes, at: int) -> bytes:
        i = data.index(b"<Envelope")
        return data[:i] + junk + data[i:]
    return change


def _tree(edit: Callable[[etree._Element], None]) -> Callable[[bytes, int], bytes]:
    def change(data: bytes, at: int) -> bytes:
        root = etree.fromstring(data)
        edit(root)
        return etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    return change


def _second_signature(root: etree._Element) -> None:
    root.append(copy.deepcopy(root[-1]))


def _signature_first(root: etree._Element) -> None:
    root.insert(0, root[-1])


def _signature_in_payload(root: etree._Element) -> None:
    content_of(root).append(root[-1])  # type: ignore[union-attr]


def _wrapped(root: etree._Element) -> None:
    """The signed envelope hidden in an unknown element, a forged payload in its place."""
    original = copy.deepcopy(root)
    signature = root[-1]
    hidden = etree.SubElement(root.find(f"{E}Header"), "{urn:example:hide}Hidden")
    hidden.append(original)
    root.append(signature)
    payload = content_of(root)
    payload.find(f"{{{CO}}}CertificateNumber").text = "FORGED"  # type: ignore[union-attr]


def _moved_payload(root: etree._Element) -> None:
    """The signed payload moved out of Content, a forged one in its place."""
    payload = content_of(root)
    forged = copy.deepcopy(payload)
    forged.find(f"{{{CO}}}CertificateNumber").text = "FORGED"  # type: ignore[union-attr]
    payload.getparent().replace(payload, forged)  # type: ignore[union-attr]
    root.find(f"{E}Body").append(payload)


def _attribute_on_root(root: etree._Element) -> None:
    root.set("Id", "x")


def _recode(codec: str, declared: str | None, bom: bytes = b"") -> Callable[[bytes, int], bytes]:
    def change(data: bytes, at: int) -> bytes:
        text = data.decode("utf-8")
        text = re.sub(r"^<\?xml[^?]*\?>", f"<?xml version='1.0' encoding='{declared}'?>" if declared else "", text)
        return bom + text.encode(codec)
    return change


def _declare(encoding: bytes) -> Callable[[bytes, int], bytes]:
    def change(data: bytes, at: int) -> bytes:
        return re.sub(rb"encoding=['\"][^'\"]*['\"]", b"encoding='" + encoding + b"'", data, count=1)
    return change


def _crlf(data: bytes, at: int) -> bytes:
    return data.replace(b"\n", b"\r\n")


def _respell(data: bytes, at: int) -> bytes:
    """The same infoset written otherwise: a character reference, an unused namespace
    declaration on the payload, double quotes in the declaration."""
    data = data.replace("ò".encode(), b"&#242;", 1)
    data = data.replace(b'<COCertificate xmlns="', b'<COCertificate xmlns:unused="urn:example:unused" xmlns="', 1)
    return data.replace(b"<?xml version='1.0' encoding='UTF-8'?>", b'<?xml version="1.0" encoding="UTF-8"?>', 1)


def _no_declaration(data: bytes, at: int) -> bytes:
    return re.sub(rb"^<\?xml[^?]*\?>\s*", b"", data)


def _comment_in_value(data: bytes, at: int) -> bytes:
    """A comment inside a header value: the signature (c14n without comments) still holds."""
    return data.replace(b"<identity>VN-MOIT</identity>", b"<identity>VN<!-- x -->-MOIT</identity>", 1)


def _replace(old: bytes, new: bytes) -> Callable[[bytes, int], bytes]:
    def change(data: bytes, at: int) -> bytes:
        if old not in data:
            raise ValueError(f"{old!r} is not in the message")
        return data.replace(old, new, 1)
    return change


def _between(start: bytes, end: bytes, new: Callable[[bytes], bytes]) -> Callable[[bytes, int], bytes]:
    """The text between ``start`` and ``end`` replaced by ``new(text)``."""
    def change(data: bytes, at: int) -> bytes:
        i = data.index(start) + len(start)
        j = data.index(end, i)
        return data[:i] + new(data[i:j]) + data[j:]
    return change


def _wrapped_lines(text: bytes) -> bytes:
    return b"\n".join(text[i:i + 20] for i in range(0, len(text), 20))


def _nested(depth: int) -> Callable[[bytes, int], bytes]:
    return _replace(b"<FormTypeCode>", b"<x>" * depth + b"</x>" * depth + b"<FormTypeCode>")


SIGNATURE_CODES = frozenset({Code.SIGNATURE_INVALID.value, Code.SIGNATURE_VALUE_INVALID.value, Code.SIGNATURE_WRAPPING.value})
BYTE_CODES = frozenset(KNOWN_CODES - HUB_FAULTS)

AFTER: tuple[After, ...] = (
    After("flip", _flip, BYTE_CODES, same=True),
    After("payload-text", _payload_text, frozenset({Code.SIGNATURE_INVALID.value})),
    After("signature-value", _in_element(b"<ds:SignatureValue>"), frozenset({Code.SIGNATURE_VALUE_INVALID.value})),
    After("digest-value", _in_element(b"<ds:DigestValue>"), frozenset({Code.SIGNATURE_VALUE_INVALID.value})),
    After("certificate", _in_element(b"<ds:X509Certificate>"), frozenset({Code.UNKNOWN_SIGNER.value, Code.SIGNATURE_INVALID.value})),
    After("truncate", _truncate, frozenset({Code.MALFORMED_XML.value})),
    After("whitespace-before-root", _before_root(b"\n \t\n"), same=True),
    After("comment-before-root", _before_root(b"<!-- before -->"), same=True),
    After("pi-before-root", _before_root(b"<?note before?>"), same=True),
    After("text-before-root", _before_root(b"junk"), frozenset({Code.MALFORMED_XML.value})),
    After("element-before-root", _before_root(b"<x/>"), frozenset({Code.MALFORMED_XML.value})),
    After("declaration-again", _before_root(b"<?xml version='1.0'?>"), frozenset({Code.MALFORMED_XML.value})),
    After("bom-inside", _before_root(codecs.BOM_UTF8), frozenset({Code.MALFORMED_XML.value})),
    After("doctype", _before_root(b"<!DOCTYPE Envelope>"), frozenset({Code.FORBIDDEN_DTD.value})),
    After("second-signature", _tree(_second_signature), frozenset({Code.INVALID_MESSAGE.value, Code.SIGNATURE_WRAPPING.value})),
    After("signature-first", _tree(_signature_first), frozenset({Code.INVALID_MESSAGE.value})),
    After("signature-in-payload", _tree(_signature_in_payload), frozenset({Code.SIGNATURE_WRAPPING.value})),
    After("wrapped", _tree(_wrapped), frozenset({Code.INVALID_MESSAGE.value, *SIGNATURE_CODES})),
    After("moved-payload", _tree(_moved_payload), frozenset({Code.INVALID_MESSAGE.value, *SIGNATURE_CODES})),
    After("attribute-on-root", _tree(_attribute_on_root), frozenset({Code.INVALID_MESSAGE.value, Code.SIGNATURE_INVALID.value})),
    After("utf-8-bom", _recode("utf-8", "UTF-8", codecs.BOM_UTF8), same=True),
    After("utf-16", _recode("utf-16", "UTF-16"), same=True),  # Python's utf-16 writes a BOM
    After("utf-16le-no-bom-declared", _recode("utf-16-le", "UTF-16LE"), same=True),
    After("utf-16-undeclared", _recode("utf-16", None), same=True),
    After("latin-1-declared", _declare(b"ISO-8859-1"), frozenset({Code.SIGNATURE_INVALID.value})),
    After("ascii-declared", _declare(b"US-ASCII"), frozenset({Code.MALFORMED_XML.value})),
    After("utf-16-declared-utf-8-bytes", _declare(b"UTF-16"), frozenset({Code.MALFORMED_XML.value})),
    After("unknown-encoding", _declare(b"x-no-such-encoding"), frozenset({Code.MALFORMED_XML.value})),
    After("crlf", _crlf, same=True),
    After("signature-removed", _tree(lambda root: root.remove(root[-1])), frozenset({Code.SIGNATURE_MISSING.value})),
    After("key-info-removed", _tree(lambda root: root[-1].remove(root[-1][-1])), same=True),  # one certificate pinned: it is that one
    After("sha1-digest", _replace(b"http://www.w3.org/2001/04/xmlenc#sha256", b"http://www.w3.org/2000/09/xmldsig#sha1"),
          frozenset({Code.WEAK_ALGORITHM.value})),
    After("reference-to-an-id", _replace(b'URI=""', b'URI="#x"'), frozenset({Code.SIGNATURE_WRAPPING.value})),
    After("empty-signature-value", _between(b"<ds:SignatureValue>", b"</ds:SignatureValue>", lambda text: b""),
          frozenset({Code.SIGNATURE_INVALID.value})),
    After("signature-value-in-lines", _between(b"<ds:SignatureValue>", b"</ds:SignatureValue>", _wrapped_lines), same=True),
    After("nul-byte", _replace(b"<FormTypeCode>D", b"<FormTypeCode>\x00D"), frozenset({Code.MALFORMED_XML.value})),
    After("invalid-utf-8", _replace(b"<FormTypeCode>D", b"<FormTypeCode>\xff\xfeD"), frozenset({Code.MALFORMED_XML.value})),
    After("overlong-utf-8", _replace(b"<FormTypeCode>D", b"<FormTypeCode>\xc1\x84"), frozenset({Code.MALFORMED_XML.value})),
    After("xml-1.1", _replace(b"version='1.0'", b"version='1.1'"), frozenset({Code.MALFORMED_XML.value}), same=True),
    After("standalone", _replace(b"encoding='UTF-8'?>", b"encoding='UTF-8' standalone='yes'?>"), same=True),
    After("utf8-spelled-lower", _declare(b"utf8"), same=True),
    After("deeper-than-the-limit", _nested(50), frozenset({Code.TOO_DEEP.value})),
    After("larger-than-the-limit", _replace(b"</Envelope>", b"<!--" + b"x" * 1_000_001 + b"--></Envelope>"), frozenset({Code.TOO_LARGE.value})),
    After("respelled", _respell, same=True),
    After("no-declaration", _no_declaration, same=True),
    After("comment-in-value", _comment_in_value, same=True),
)
# "flip" may hit a comment-free place that changes nothing the signature covers (the declaration's
# quotes): accepted then, but only with the signed document intact (``Campaign.after``)


# -- the checks ----------------------------------------------------------------------------------

@dataclass
class Campaign:
    """One hub and the checks every answer must pass; ``failures`` collects what broke."""

    runtime: Runtime
    moit: Sender  # signs, on a route that requires it
    mard: Sender  # does not sign, on a route that does not require it (``OPEN_ROUTE``)
    failures: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    answers: list[tuple[str, str, str, bytes]] = field(default_factory=list)  # (label, code, sentence, input)

    def __post_init__(self) -> None:
        self.hub_certificates = load_certificates(self.runtime.config.hub.certificate)
        self.verifier = Verifier()
        self.schemas = self.runtime.pipeline.schemas

    def fail(self, what: str, data: bytes) -> None:
        self.failures.append(f"{what}\n  input: {data[:600]!r}")

    def answer(self, data: bytes, label: str) -> tuple[bool, str | None, bytes] | None:
        """Submits ``data`` and checks the answer's form; (accepted, code, xml), or None on failure."""
        try:
            ack = self.runtime.pipeline.submit(data)
        except Exception as exc:  # noqa: BLE001 - the finding itself
            self.fail(f"{label}: submit raised {type(exc).__name__}: {exc}", data)
            return None
        try:
            signed = self.verifier.verify(etree.fromstring(ack.xml), self.hub_certificates, "hub").element
        except Exception as exc:  # noqa: BLE001
            self.fail(f"{label}: the answer's signature does not verify: {exc}", data)
            return None
        function = read_header(signed).subject.function
        if ack.accepted != (function == "99") or function not in ("99", "00"):
            self.fail(f"{label}: answer function {function} with accepted={ack.accepted}", data)
            return None
        code = None
        if not ack.accepted:
            errors = read_errors(signed)
            if len(errors) != 1 or errors[0][0] not in KNOWN_CODES or not errors[0][1].strip() or errors[0][0] != ack.code:
                self.fail(f"{label}: a NACK without one known code and a sentence: {errors}", data)
                return None
            code = errors[0][0]
            if code in HUB_FAULTS:
                self.fail(f"{label}: {code} for the sender's input: {errors[0][1][:300]}", data)
        key = "accepted" if ack.accepted else str(code)
        self.counts[key] = self.counts.get(key, 0) + 1
        if self.counts[key] <= 20:  # a sample of each answer, for the campaign's report
            self.answers.append((label, key, ack.errors[0].message if ack.errors else "", data))
        return ack.accepted, code, ack.xml

    def twice(self, data: bytes, label: str) -> tuple[bool, str | None] | None:
        first = self.answer(data, label)
        if first is None:
            return None
        again = self.answer(data, label + "/again")
        if again is None:
            return None
        accepted, code, xml = first
        if accepted and not (again[0] and again[2] == xml):
            self.fail(f"{label}: accepted, but sent again answered {again[1] or 'another receipt'}", data)
        if not accepted and again[1] != code:
            self.fail(f"{label}: refused {code}, but sent again answered {again[1] or 'a receipt'}", data)
        return accepted, code

    def check_accepted(self, data: bytes, label: str, expected_payload: bytes | None = None) -> None:
        """What was accepted is a valid envelope, its payload valid against the route's schema
        (and, where given, the document that was signed); its outbound rows are signed by the hub
        and their documents valid."""
        root = etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True))
        try:
            self.runtime.pipeline.envelope_schema.validate(root)
            self.schemas.validate(content_of(root), "co")
        except Exception as exc:  # noqa: BLE001
            self.fail(f"{label}: accepted, but invalid: {exc}", data)
            return
        if expected_payload is not None and etree.tostring(content_of(root), method="c14n", exclusive=True) != expected_payload:
            self.fail(f"{label}: accepted with another document than the one signed", data)
        message_id = read_header(root).message_id
        rows = [r for r in self.runtime.store.rows(newest=True, limit=2) if r.message_id == message_id]
        if len(rows) != 2:
            self.fail(f"{label}: accepted with {len(rows)} outbound rows", data)
        for row in rows:
            try:
                out = self.verifier.verify(etree.fromstring(row.payload), self.hub_certificates, "hub").element
                self.schemas.validate(content_of(out))
            except Exception as exc:  # noqa: BLE001
                self.fail(f"{label}: outbound row to {row.destination} is not signed and valid: {exc}", data)

    def mutated(self, ops: Sequence[Op], message_id: str, sign: bool = True) -> None:
        """``sign``: as VN-MOIT, on a route that requires a signature; else unsigned, as VN-MARD on
        one that does not, where the document as received goes on (no canonical copy of it)."""
        if sign:
            data = mutated_then_signed(self.moit, ops, message_id)
        else:
            data = mutated_then_signed(self.mard, ops, message_id, sign=False, document_type="CO-OPEN")
        if data is None:
            return
        label = ("" if sign else "unsigned:") + "+".join(name for name, *_ in ops)
        result = self.twice(data, label)
        if result is not None and result[0]:
            self.check_accepted(data, label)

    def after(self, change: After, at: int, message_id: str) -> None:
        original = self.moit.message(message_id=message_id)
        signed_payload = etree.tostring(content_of(etree.fromstring(original)), method="c14n", exclusive=True)
        try:
            data = change.change(original, at)
        except (ValueError, etree.XMLSyntaxError):
            return
        result = self.twice(data, change.name)
        if result is None:
            return
        accepted, code = result
        if accepted:
            if not change.same:
                self.fail(f"{change.name}: accepted, expected one of {sorted(change.codes)}", data)
            self.check_accepted(data, change.name, signed_payload)
        elif code not in change.codes:
            self.fail(f"{change.name}: refused {code}, expected {'acceptance' if change.same else ''} {sorted(change.codes)}", data)

    def still_serving(self) -> None:
        ack = self.runtime.pipeline.submit(self.moit.message())
        if not ack.accepted:
            self.failures.append(f"after the campaign a valid message is refused: {ack.code}")


# certificates of origin from VN-MARD need no signature: its documents reach validation and the
# mappings as they were received; its Form Ds (signed) are taken as the gateways send them
OPEN_ROUTE = """
[[routes]]
name = "open-certificates"
from = "VN-MARD"
document_type = "CO-OPEN"
schema = "co"
require_signature = false
deliver = [
  { agency = "TH-ASW", mapping = ["co-to-formd"] },
  { agency = "VN-CUSTOMS", mapping = ["co-to-formd", "formd-to-wco"] },
]

[[routes]]
name = "formd-in"
from = "VN-MARD"
document_type = "FORMD"
schema = "formd"
deliver = [{ agency = "VN-CUSTOMS", mapping = ["formd-to-wco"] }, { agency = "TH-ASW" }]
"""


def open_campaign(folder: Path) -> Campaign:
    runtime = Runtime.load(write_config(folder, extra=OPEN_ROUTE))
    return Campaign(runtime, Sender(runtime.config, "VN-MOIT"), Sender(runtime.config, "VN-MARD"))


@pytest.fixture
def campaign(tmp_path: Path) -> Iterator[Campaign]:
    opened = open_campaign(tmp_path)
    try:
        yield opened
    finally:
        opened.runtime.close()


def message_ids() -> Iterator[str]:
    n = 0
    while True:
        n += 1
        yield f"00000000-0000-4000-8000-{n:012x}"


OPS = st.tuples(st.sampled_from(sorted(MUTATIONS)), st.integers(0, 3), st.integers(0, 200), st.integers(0, 1000))


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
def test_mutated_then_signed(campaign: Campaign, signed: bool) -> None:
    """Signed: every mutation reaches the stages after the signature check. Unsigned (a route that
    needs no signature): the document as received goes on, comments and all."""
    ids = message_ids()

    @settings(derandomize=True, max_examples=400 if signed else 200, deadline=None, database=None)
    @given(st.lists(OPS, min_size=1, max_size=3))
    def one(ops: list[Op]) -> None:
        campaign.mutated(ops, next(ids), sign=signed)

    one()
    campaign.still_serving()
    assert not campaign.failures, "\n".join(campaign.failures[:10])
    # the inputs get through every stage (accepted), and are refused by the envelope schema and the payload's
    assert campaign.counts.get("accepted", 0) > 20 and {"ERR00", "ERR05"} <= set(campaign.counts), campaign.counts


def test_signed_then_mutated(campaign: Campaign) -> None:
    ids = message_ids()
    for change in AFTER:
        for at in range(0, 12 * 7919, 7919)[: 12 if change.name in ("flip", "truncate", "payload-text", "signature-value") else 1]:
            campaign.after(change, at, next(ids))
    campaign.still_serving()
    assert not campaign.failures, "\n".join(campaign.failures[:10])


# -- what the campaign found: one test each ------------------------------------------------------

def refusal(campaign: Campaign, data: bytes) -> tuple[str, str]:
    """(code, sentence) of the NACK ``data`` gets: signed, with one error, never an exception."""
    answer = campaign.answer(data, "regression")
    assert answer is not None and not answer[0], campaign.failures or "accepted"
    (error,) = read_errors(etree.fromstring(answer[2]))
    return error[0], error[1]


@pytest.mark.parametrize(("field", "node"), [("From/identity", etree.Comment(" a comment ")), ("Subject/documentType", etree.ProcessingInstruction("pi", "x"))])
def test_a_comment_inside_a_header_value_is_not_the_end_of_the_value(campaign: Campaign, field: str, node: etree._Element) -> None:
    """The header was read from each element's first text node: ``VN<!-- -->-MOIT`` was sender
    'VN' (ERR20), ``CO-<?pi x?>FORMD`` document type 'CO-' (ERR01), though the schema and the
    signature saw VN-MOIT and CO-FORMD."""
    envelope = campaign.moit.envelope()
    value = envelope.find(f"{E}Header/{E}{field.replace('/', f'/{E}')}")
    assert value is not None and value.text
    text, value.text = value.text, value.text[:3]
    value.append(copy.deepcopy(node))
    value[0].tail = text[3:]
    data = etree.tostring(campaign.moit.signer.sign(envelope))
    assert b"VN-MOIT</identity>" not in data or b"CO-FORMD</documentType>" not in data
    ack = campaign.runtime.pipeline.submit(data)
    assert ack.accepted, ack.errors
    # and a comment put in after signing: canonical XML leaves comments out, the signature holds
    if isinstance(node, etree._Comment):
        plain = etree.tostring(campaign.moit.signer.sign(campaign.moit.envelope()))
        assert campaign.runtime.pipeline.submit(plain.replace(b">VN-MOIT<", b">VN<!-- x -->-MOIT<", 1)).accepted


def _embedded_certificate(data: bytes, edit: Callable[[bytes], bytes]) -> bytes:
    """``data`` with the DER of the certificate in its KeyInfo changed by ``edit``."""
    import base64

    start = data.index(b"<ds:X509Certificate>") + len(b"<ds:X509Certificate>")
    end = data.index(b"</ds:X509Certificate>")
    der = base64.b64decode(b"".join(data[start:end].split()))
    changed = edit(der)
    assert changed != der
    return data[:start] + base64.b64encode(changed) + data[end:]


@pytest.mark.parametrize(
    ("what", "edit"),
    [
        ("version 7", lambda der: der.replace(b"\xa0\x03\x02\x01\x02", b"\xa0\x03\x02\x01\x06", 1)),  # cryptography: InvalidVersion
        # basicConstraints (2.5.29.19) renamed keyUsage (2.5.29.15): read lazily, DuplicateExtension
        ("two keyUsage extensions", lambda der: der.replace(b"\x06\x03\x55\x1d\x13", b"\x06\x03\x55\x1d\x0f", 1)),
    ],
)
def test_a_certificate_cryptography_cannot_read_is_the_senders_fault(campaign: Campaign, what: str, edit: Callable[[bytes], bytes]) -> None:
    """Not every failure to read a certificate is a ValueError: these were ERR99 (a fault inside
    the hub) for bytes anyone can put in KeyInfo."""
    code, sentence = refusal(campaign, _embedded_certificate(campaign.moit.message(), edit))
    assert code == Code.SIGNATURE_INVALID.value and "cannot be read" in sentence, (what, code, sentence)


def test_a_sentence_quoting_control_characters_still_makes_a_nack(campaign: Campaign) -> None:
    """A certificate's subject may hold characters XML cannot carry; quoted in the NACK's sentence
    they made building the NACK raise, and the exception escaped ``submit``: no answer at all."""
    from hub.keys import issue, new_key
    from hub.trust import Signer

    key = new_key("ec")
    stranger = Signer(key, issue(key, "Bell\x07 and \x1b[31mescape", organization="VN-MOIT"))
    code, sentence = refusal(campaign, etree.tostring(stranger.sign(campaign.moit.envelope())))
    assert code == Code.UNKNOWN_SIGNER.value and "Bell\\x07 and \\x1b[31mescape" in sentence


def test_an_xml_id_that_is_not_a_name_is_a_schema_fault_not_a_signature_that_covers_nothing(campaign: Campaign) -> None:
    """signxml parsed the signed content back with its own parser, which refuses an ``xml:id``
    that is not a name (or one used twice): the hub said the signature did not cover the
    envelope (ERR26). The content is what the schema judges."""
    for value in ("", "not a name", "x"):
        envelope = campaign.moit.envelope()
        payload = content_of(envelope)
        payload.set(f"{{{XML_NS}}}id", value)  # type: ignore[union-attr]
        payload[0].set(f"{{{XML_NS}}}id", value if value == "x" else "y")  # type: ignore[index]
        code, sentence = refusal(campaign, etree.tostring(campaign.moit.signer.sign(envelope)))
        assert code == Code.INVALID_DOCUMENT.value and "id" in sentence, (value, code, sentence)


def test_malformed_xml_naming_an_element_identity_is_not_an_entity(campaign: Campaign) -> None:
    """libxml2's message about a tag ``identity`` was taken for one about an entity (ERR10)."""
    data = campaign.moit.message()
    code, sentence = refusal(campaign, data[: data.index(b"<identity>") + len(b"<identity>")])
    assert code == Code.MALFORMED_XML.value and "identity" in sentence


@pytest.mark.parametrize("codec", ["utf-16", "utf-32", "utf-16-le"])
def test_a_doctype_in_utf_16_or_utf_32_is_refused_as_one(codec: str) -> None:
    """The DOCTYPE check read the prolog as UTF-8 only: in UTF-16 or UTF-32 the parser met the
    DOCTYPE itself, tried to load an external DTD (stopped by no_network) or expanded entities
    until its amplification limit. Those were ERR10 only because libxml2's sentence happened to
    hold the word "entity" (which also made a tag named ``identity`` an entity attack)."""
    from hub.xml import Limits, XmlParser

    from .support import HOSTILE

    for path in sorted(HOSTILE.glob("*.xml")):
        if path.name.startswith("simple"):
            continue
        text = re.sub(r"encoding=['\"][^'\"]*['\"]", f"encoding='{codec.upper()}'", path.read_text(encoding="utf-8"))
        with pytest.raises(Exception) as info:
            XmlParser(Limits()).parse(text.encode(codec))
        assert getattr(info.value, "code", None) is Code.FORBIDDEN_DTD, (path.name, info.value)


def test_a_payload_whose_canonical_form_explodes_is_refused_early(campaign: Campaign) -> None:
    """Exclusive c14n declares a namespace on every element using it whose parent did not: 20 KB
    of namespace name and 1,000 six-byte elements made a 20 MB canonical form for the duplicate
    check, in memory, before anything looked at the document (an unsigned route: anyone can send
    it). The digest is now computed as the form is written and stops at its limit (ERR11)."""
    import time

    name = "urn:" + "n" * 20_000
    document = etree.fromstring(f'<COCertificate xmlns="{CO}" xmlns:p="{name}">{"<p:b/>" * 1000}</COCertificate>'.encode())
    data = etree.tostring(campaign.mard.envelope(document, document_type="CO-OPEN"))
    assert len(data) < 40_000
    started = time.perf_counter()
    code, sentence = refusal(campaign, data)
    assert code == Code.TOO_LARGE.value and "canonical form" in sentence
    assert time.perf_counter() - started < 2.0


def test_the_digest_written_as_it_goes_is_the_digest_of_the_canonical_form() -> None:
    """Digests recorded before the streamed digest must still match (a retry of an old message)."""
    import hashlib

    from hub.xml import canonical_digest

    def whole(element: etree._Element) -> bytes:
        return hashlib.sha256(etree.tostring(element, method="c14n", exclusive=True)).digest()

    document = etree.fromstring(b"<!--before--><?pi x?><a xmlns='urn:a' xmlns:u='urn:u'><!--c--><b x='1'>t</b><u:c/></a><!--after-->")
    envelope = etree.fromstring(b"<e xmlns='urn:e' xmlns:u='urn:u'><c>" + etree.tostring(document) + b"</c></e>")
    for element in (document, envelope[0][0], envelope):
        assert canonical_digest(element) == whole(element)
    with pytest.raises(Exception) as info:
        canonical_digest(envelope, limit=40)
    assert getattr(info.value, "code", None) is Code.TOO_LARGE


def test_a_form_d_signed_by_its_issuer_inside_a_signed_envelope_is_accepted(campaign: Campaign) -> None:
    """formd.xsd makes room for the issuing member's enveloped signature in a Form D; the envelope's
    own signature check counted it and refused every such certificate (ERR26, "exactly one
    signature"). The envelope's signature is still the one checked, and the only one that counts."""
    from hub.keys import issue, new_key
    from hub.trust import Signer

    from .support import EXAMPLES

    key = new_key("ec")
    issuer = Signer(key, issue(key, "TH issuing authority", organization="TH-MOC"))
    formd = issuer.sign(etree.fromstring((EXAMPLES / "formd.xml").read_bytes()))
    assert etree.QName(formd[-1]).localname == "Signature"
    mard = campaign.mard
    ack = campaign.runtime.pipeline.submit(mard.message(formd, to="VN-CUSTOMS", document_type="FORMD"))
    assert ack.accepted, ack.errors
    rows = {r.destination: r for r in campaign.runtime.store.rows(newest=True, limit=2)}
    as_sent = campaign.verifier.verify(etree.fromstring(rows["TH-ASW"].payload), campaign.hub_certificates, "hub").element
    inner = content_of(as_sent)
    assert inner is not None and etree.QName(inner[-1]).localname == "Signature"  # handed on as the issuer signed it
    campaign.verifier.verify(copy.deepcopy(inner), [issuer.certificate], "the issuer")  # and still verifies

    # the envelope's own signature is what is checked: a header changed after signing is refused ...
    data = mard.message(copy.deepcopy(formd), to="VN-CUSTOMS", document_type="FORMD")
    code, _ = refusal(campaign, data.replace(b"<type>FormD</type>", b"<type>FormDX</type>", 1))
    assert code in (Code.SIGNATURE_INVALID.value, Code.SIGNATURE_VALUE_INVALID.value)
    # ... and an envelope with no signature of its own is not signed by the one inside it
    code, sentence = refusal(campaign, mard.message(copy.deepcopy(formd), to="VN-CUSTOMS", document_type="FORMD", sign=False))
    assert code == Code.SIGNATURE_WRAPPING.value and "inside what the message carries" in sentence
