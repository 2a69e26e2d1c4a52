"""A ministry's own SOAP web service on loopback, for the outbound ``soap`` adapter's tests.

It serves its WSDL (``GET /ministry?wsdl``: one operation, SOAP 1.1 and 1.2 ports) and answers the
operation, or faults on demand: ``mode`` is ``ok``, ``client-fault``, ``server-fault``, ``slow``
(answers after ``delay`` seconds), ``http-503`` or ``huge`` (a 200 answer of ``huge_bytes``); ``fail_first`` server faults come before the
normal answers. Like a real receiver it deduplicates on the envelope's message id.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from xml.sax.saxutils import escape

from lxml import etree

SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
HUB_NS = "urn:sw-hub:envelope:1"

WSDL = """<?xml version="1.0" encoding="UTF-8"?>
<wsdl:definitions targetNamespace="{ns}" xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/"
    xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/" xmlns:soap12="http://schemas.xmlsoap.org/wsdl/soap12/"
    xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:tns="{ns}">
  <wsdl:types>
    <xs:schema targetNamespace="{ns}" elementFormDefault="qualified">
      <xs:element name="{op}">
        <xs:complexType><xs:sequence><xs:any namespace="{hub}" processContents="lax"/></xs:sequence></xs:complexType>
      </xs:element>
      <xs:element name="{op}Response">
        <xs:complexType><xs:sequence>
          <xs:element name="status" type="xs:string"/><xs:element name="ticket" type="xs:string"/>
        </xs:sequence></xs:complexType>
      </xs:element>
    </xs:schema>
  </wsdl:types>
  <wsdl:message name="In"><wsdl:part name="parameters" element="tns:{op}"/></wsdl:message>
  <wsdl:message name="Out"><wsdl:part name="parameters" element="tns:{op}Response"/></wsdl:message>
  <wsdl:portType name="MinistryPortType">
    <wsdl:operation name="{op}"><wsdl:input message="tns:In"/><wsdl:output message="tns:Out"/></wsdl:operation>
  </wsdl:portType>
  <wsdl:binding name="Soap11" type="tns:MinistryPortType">
    <soap:binding style="document" transport="http://schemas.xmlsoap.org/soap/http"/>
    <wsdl:operation name="{op}"><soap:operation soapAction="{ns}#{op}"/>
      <wsdl:input><soap:body use="literal"/></wsdl:input><wsdl:output><soap:body use="literal"/></wsdl:output>
    </wsdl:operation>
  </wsdl:binding>
  <wsdl:binding name="Soap12" type="tns:MinistryPortType">
    <soap12:binding style="document" transport="http://schemas.xmlsoap.org/soap/http"/>
    <wsdl:operation name="{op}"><soap12:operation soapAction="{ns}#{op}"/>
      <wsdl:input><soap12:body use="literal"/></wsdl:input><wsdl:output><soap12:body use="literal"/></wsdl:output>
    </wsdl:operation>
  </wsdl:binding>
  <wsdl:service name="MinistryService">
    <wsdl:port name="MinistrySoap11" binding="tns:Soap11"><soap:address location="{base}/ministry/soap11"/></wsdl:port>
    <wsdl:port name="MinistrySoap12" binding="tns:Soap12"><soap12:address location="{base}/ministry/soap12"/></wsdl:port>
  </wsdl:service>
</wsdl:definitions>
"""

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


class MinistryService:
    def __init__(self, namespace: str = "urn:vn:moh:nsw:1", operation: str = "ReceiveDocument") -> None:
        self.namespace, self.operation = namespace, operation
        self.mode = "ok"
        self.huge_bytes = 6 * 1024 * 1024
        self.delay = 0.0
        self.fail_first = 0
        self.fault_text = "MOH-E17: the permit number is not known to the ministry"
        self.received: Counter[str] = Counter()  # message id -> times processed (answered ok)
        self.bodies: dict[str, bytes] = {}
        self.requests = 0
        self.wsdl_fetches = 0
        self.client_subjects: set[str] = set()  # TLS client certificates seen (mutual TLS)
        self.scheme = "http"
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def base(self) -> str:
        assert self._server is not None
        return f"{self.scheme}://127.0.0.1:{self._server.server_address[1]}"

    @property
    def wsdl_url(self) -> str:
        return f"{self.base}/ministry?wsdl"

    def wsdl(self) -> bytes:
        return WSDL.format(ns=self.namespace, op=self.operation, hub=HUB_NS, base=self.base).encode()

    def answer(self, soap_ns: str, body: bytes) -> tuple[int, bytes]:
        with self._lock:
            self.requests += 1
            fail = self.fail_first > 0
            if fail:
                self.fail_first -= 1
        mode = "server-fault" if fail else self.mode
        if mode == "slow":
            time.sleep(self.delay)
        if mode == "http-503":
            return 503, b"<html>maintenance</html>"
        if mode == "huge":
            return 200, b"<x>" + b" " * self.huge_bytes + b"</x>"
        if mode in ("client-fault", "server-fault"):
            return 500, fault(soap_ns, mode == "client-fault", self.fault_text if mode == "client-fault" else "database unavailable")
        root = etree.fromstring(body, _PARSER)
        envelope = root.find(f".//{{{HUB_NS}}}Envelope")
        message_id = envelope.findtext(f"{{{HUB_NS}}}Header/{{{HUB_NS}}}Reference/{{{HUB_NS}}}messageId") if envelope is not None else None
        if message_id is None:
            return 500, fault(soap_ns, True, "no hub envelope in the request")
        with self._lock:
            self.received[message_id] += 1
            self.bodies.setdefault(message_id, etree.tostring(envelope))
        response = (f'<s:Envelope xmlns:s="{soap_ns}"><s:Body><m:{self.operation}Response xmlns:m="{self.namespace}">'
                    f"<m:status>ACCEPTED</m:status><m:ticket>T-{message_id[:8]}</m:ticket></m:{self.operation}Response></s:Body></s:Envelope>")
        return 200, response.encode()

    def start(self, port: int = 0, tls: tuple[str, str, str] | None = None) -> MinistryService:
        """``tls``: (certificate, key, CA of the clients): HTTPS that requires a client certificate."""
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _send(self, status: int, body: bytes, media: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", media)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802
                if self.path.lower().endswith("?wsdl"):
                    with service._lock:
                        service.wsdl_fetches += 1
                    self._send(200, service.wsdl(), "text/xml")
                else:
                    self._send(404, b"not found", "text/plain")

            def do_POST(self) -> None:  # noqa: N802
                if tls:
                    subject = dict(x[0] for x in self.connection.getpeercert()["subject"])  # type: ignore[attr-defined, index]
                    with service._lock:
                        service.client_subjects.add(subject.get("commonName", ""))
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                soap_ns = SOAP12 if self.path.endswith("soap12") else SOAP11
                status, answer = service.answer(soap_ns, body)
                media = "application/soap+xml" if soap_ns == SOAP12 else "text/xml"
                try:
                    self._send(status, answer, "text/html" if status == 503 else media)
                except OSError:
                    pass  # the client gave up (time-out test)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls[0], tls[1])
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(tls[2])
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
            self.scheme = "https"
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def unique(self) -> int:
        with self._lock:
            return len(self.received)


def fault(soap_ns: str, client: bool, text: str) -> bytes:
    if soap_ns == SOAP11:
        inner = f"<faultcode>s:{'Client' if client else 'Server'}</faultcode><faultstring>{escape(text)}</faultstring>"
    else:
        inner = (f"<s:Code><s:Value>s:{'Sender' if client else 'Receiver'}</s:Value></s:Code>"
                 f'<s:Reason><s:Text xml:lang="en">{escape(text)}</s:Text></s:Reason>')
    return f'<s:Envelope xmlns:s="{soap_ns}"><s:Body><s:Fault>{inner}</s:Fault></s:Body></s:Envelope>'.encode()
