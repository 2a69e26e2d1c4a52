from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from hub.errors import Code, Rejected
from hub.xml import Limits, XmlParser

from .support import HOSTILE, skip_unless_present

HOSTILE_FILES = sorted(p for p in HOSTILE.glob("*.xml") if not p.name.startswith("simple"))


@pytest.mark.parametrize("path", HOSTILE_FILES, ids=lambda p: p.name)
def test_hostile_documents_are_refused_before_expansion(path: Path) -> None:
    with pytest.raises(Rejected) as info:
        XmlParser(Limits()).parse(path.read_bytes())
    assert info.value.code is Code.FORBIDDEN_DTD
    assert "DOCTYPE" in info.value.message


@pytest.mark.parametrize("name", ["simple.xml", "simple-ns.xml"])
def test_controls_parse(name: str) -> None:
    assert XmlParser(Limits()).parse((HOSTILE / name).read_bytes()) is not None


def test_hostile_corpus_is_there() -> None:
    skip_unless_present(HOSTILE, "the hostile XML corpus")
    assert len(HOSTILE_FILES) >= 7


def test_size_limit_is_checked_before_parsing() -> None:
    with pytest.raises(Rejected) as info:
        XmlParser(Limits(max_bytes=100)).parse(b"<a>" + b"x" * 200 + b"</a>")
    assert info.value.code is Code.TOO_LARGE and "100" in info.value.message


def test_depth_limit() -> None:
    parser = XmlParser(Limits(max_depth=10))
    assert parser.parse(b"<a>" * 10 + b"</a>" * 10).tag == "a"
    with pytest.raises(Rejected) as info:
        parser.parse(b"<a>" * 11 + b"</a>" * 11)
    assert info.value.code is Code.TOO_DEEP


def test_malformed_xml_names_the_line() -> None:
    with pytest.raises(Rejected) as info:
        XmlParser(Limits()).parse(b"<a>\n<b>\n</a>")
    assert info.value.code is Code.MALFORMED_XML and info.value.location == "line 3"


def test_undeclared_entity_is_refused() -> None:
    with pytest.raises(Rejected) as info:
        XmlParser(Limits()).parse(b"<a>&xxe;</a>")
    assert info.value.code is Code.FORBIDDEN_DTD
    assert "Entity 'xxe' not defined" in info.value.message


@pytest.mark.parametrize(
    ("data", "line", "column"),
    [
        (b"<a>Siam & Highland</a>", 1, 9),  # no name after '&'
        (b"<a>\n  <b>AT&T</b>\n</a>", 2, 8),  # a name but no ';'
        (b'<a b="x & y"/>', 1, 9),  # in an attribute
        ("<a>Vi\u1ec7t Nam & L\u00e0o</a>".encode(), 1, 13),  # columns count characters, not bytes
    ],
)
def test_an_unescaped_ampersand_is_malformed_xml_not_an_entity(data: bytes, line: int, column: int) -> None:
    with pytest.raises(Rejected) as info:
        XmlParser(Limits()).parse(data)
    assert info.value.code is Code.MALFORMED_XML
    assert f"an unescaped '&' at line {line}, column {column} (write &amp;)" in info.value.message
    assert info.value.location == f"line {line}"


def test_a_bad_element_name_is_not_taken_for_an_ampersand() -> None:
    with pytest.raises(Rejected) as info:
        XmlParser(Limits()).parse(b"<a><1/></a>")
    assert info.value.code is Code.MALFORMED_XML and "'&'" not in info.value.message


def test_doctype_after_comment_and_declaration_is_refused() -> None:
    data = b'<?xml version="1.0"?>\n<!-- hi -->\n<!DOCTYPE a [<!ENTITY x "y">]><a>&x;</a>'
    with pytest.raises(Rejected) as info:
        XmlParser(Limits()).parse(data)
    assert info.value.code is Code.FORBIDDEN_DTD


def test_a_stylesheet_with_disable_output_escaping_is_refused(tmp_path: Path) -> None:
    """Text that turns into markup only when serialised would make what the hub signs (the tree)
    differ from what it sends (the bytes)."""
    from hub.errors import ConfigError
    from hub.xml import Stylesheet

    path = tmp_path / "raw.xsl"
    path.write_text(
        '<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">\n'
        '  <xsl:template match="/"><out>\n'
        '    <xsl:text disable-output-escaping="yes">&lt;injected/&gt;</xsl:text>\n'
        "  </out></xsl:template>\n"
        "</xsl:stylesheet>\n"
    )
    with pytest.raises(ConfigError, match="line 3: disable-output-escaping is not allowed"):
        Stylesheet("raw", path, "mappings.raw")


def test_a_document_without_a_canonical_form_is_refused_not_an_error() -> None:
    from hub.xml import canonical_digest

    assert canonical_digest(etree.fromstring(b'<a xmlns="urn:x" b="1" c="2"/>')) == canonical_digest(
        etree.fromstring(b"<a c='2' b='1' xmlns='urn:x' xmlns:u='urn:unused'/>"))
    assert canonical_digest(etree.fromstring(b"<a/>"), "x", None) != canonical_digest(etree.fromstring(b"<a/>"), "x", "")
    with pytest.raises(Rejected) as info:
        canonical_digest(etree.fromstring(b'<a xmlns="relative/ns"/>'))
    assert info.value.code is Code.WRONG_NAMESPACE and "canonical form" in info.value.message


def test_a_mapping_leaves_the_tree_it_reads_as_it_was(tmp_path: Path) -> None:
    """``xsl:strip-space`` makes libxslt remove whitespace text from its input document: the
    payload inside an envelope (which the pipeline maps once per destination) must not lose
    nodes to it."""
    from hub.xml import Stylesheet

    path = tmp_path / "strip.xsl"
    path.write_text(
        '<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">\n'
        '  <xsl:strip-space elements="*"/>\n'
        '  <xsl:template match="/"><out root="{local-name(/*)}" n="{count(/*/node())}"/></xsl:template>\n'
        "</xsl:stylesheet>\n"
    )
    sheet = Stylesheet("strip", path, "mappings.strip")
    envelope = etree.fromstring(b"<Envelope><Content>\n  <doc>\n    <a>1</a>\n    <b>2</b>\n  </doc>\n</Content></Envelope>")
    before = etree.tostring(envelope)
    payload = envelope[0][0]
    for _ in range(2):
        out = sheet.apply(payload)
        assert (out.get("root"), out.get("n")) == ("doc", "2")  # "/" is the payload, whitespace stripped
    assert etree.tostring(envelope) == before and len(payload) == 2


def test_two_threads_validating_with_one_schema_each_get_their_own_faults(tmp_path: Path) -> None:
    """lxml keeps one error log per compiled schema: without the schema's lock one sender's NACK
    named the other sender's values (about a third of the time with two threads)."""
    import threading

    from hub.xml import Schema

    xsd = tmp_path / "t.xsd"
    xsd.write_text('<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema"><xs:element name="R"><xs:complexType><xs:sequence>'
                   '<xs:element name="v" type="xs:int" maxOccurs="unbounded"/></xs:sequence></xs:complexType></xs:element></xs:schema>')
    schema = Schema("t", xsd, "schemas.t")
    parser = XmlParser(Limits())
    wrong: list[str] = []

    def validate(value: bytes) -> None:
        document = parser.parse(b"<R>" + b"<v>1</v>" * 10000 + b"<v>" + value + b"</v></R>")
        for _ in range(60):
            with pytest.raises(Rejected) as info:
                schema.validate(document)
            if value.decode() not in info.value.message:
                wrong.append(info.value.message)

    threads = [threading.Thread(target=validate, args=(v,)) for v in (b"SECRET-A", b"other-B")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads) and wrong == []
