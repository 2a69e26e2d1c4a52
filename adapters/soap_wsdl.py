"""The WSDL 1.1 the hub publishes at ``GET /soap?wsdl``: one operation, two bindings.

    operation Submit (document/literal wrapped, namespace urn:sw-hub:soap:1)
        in:  <Submit><env:Envelope .../></Submit>            the hub envelope, as an XML element
        out: <SubmitResponse><env:Envelope .../></SubmitResponse>   the signed receipt or NACK
    bindings: SOAP 1.1 (port HubSoap11) and SOAP 1.2 (port HubSoap12), both at /soap

The envelope is carried as ``xs:any`` in its own namespace (urn:sw-hub:envelope:1): clients pass
the signed element through untouched (re-serialising it from typed objects would break the
signature), and the hub validates it against xsd/envelope/envelope.xsd itself.
"""

from __future__ import annotations

from functools import lru_cache
from xml.sax.saxutils import quoteattr

NS = "urn:sw-hub:soap:1"
ENVELOPE_NS = "urn:sw-hub:envelope:1"
ACTION = f"{NS}#Submit"

_TEMPLATE = """<?xml version="1.0" encoding="UTF-8"?>
<wsdl:definitions name="SwHub" targetNamespace="{ns}"
    xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/"
    xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/"
    xmlns:soap12="http://schemas.xmlsoap.org/wsdl/soap12/"
    xmlns:xs="http://www.w3.org/2001/XMLSchema"
    xmlns:tns="{ns}">
  <wsdl:documentation>sw-hub single-window hub: submit a signed envelope ({env}), get the signed
    receipt (function 99) or NACK (function 00, ErrorList). Malformed requests get a SOAP fault
    (Client/Sender); a hub that cannot record the message now answers a Server/Receiver fault
    with detail code ERR50: send the same message again later.</wsdl:documentation>
  <wsdl:types>
    <xs:schema targetNamespace="{ns}" elementFormDefault="qualified">
      <xs:element name="Submit">
        <xs:complexType><xs:sequence>
          <xs:any namespace="{env}" processContents="lax"/>
        </xs:sequence></xs:complexType>
      </xs:element>
      <xs:element name="SubmitResponse">
        <xs:complexType><xs:sequence>
          <xs:any namespace="{env}" processContents="lax"/>
        </xs:sequence></xs:complexType>
      </xs:element>
      <xs:element name="HubFault">
        <xs:complexType><xs:sequence>
          <xs:element name="code" type="xs:string"/>
          <xs:element name="message" type="xs:string"/>
        </xs:sequence></xs:complexType>
      </xs:element>
    </xs:schema>
  </wsdl:types>
  <wsdl:message name="SubmitRequest"><wsdl:part name="parameters" element="tns:Submit"/></wsdl:message>
  <wsdl:message name="SubmitResponse"><wsdl:part name="parameters" element="tns:SubmitResponse"/></wsdl:message>
  <wsdl:message name="HubFault"><wsdl:part name="fault" element="tns:HubFault"/></wsdl:message>
  <wsdl:portType name="HubPortType">
    <wsdl:operation name="Submit">
      <wsdl:input message="tns:SubmitRequest"/>
      <wsdl:output message="tns:SubmitResponse"/>
      <wsdl:fault name="HubFault" message="tns:HubFault"/>
    </wsdl:operation>
  </wsdl:portType>
  <wsdl:binding name="HubSoap11Binding" type="tns:HubPortType">
    <soap:binding style="document" transport="http://schemas.xmlsoap.org/soap/http"/>
    <wsdl:operation name="Submit">
      <soap:operation soapAction="{action}" style="document"/>
      <wsdl:input><soap:body use="literal"/></wsdl:input>
      <wsdl:output><soap:body use="literal"/></wsdl:output>
      <wsdl:fault name="HubFault"><soap:fault name="HubFault" use="literal"/></wsdl:fault>
    </wsdl:operation>
  </wsdl:binding>
  <wsdl:binding name="HubSoap12Binding" type="tns:HubPortType">
    <soap12:binding style="document" transport="http://schemas.xmlsoap.org/soap/http"/>
    <wsdl:operation name="Submit">
      <soap12:operation soapAction="{action}" style="document"/>
      <wsdl:input><soap12:body use="literal"/></wsdl:input>
      <wsdl:output><soap12:body use="literal"/></wsdl:output>
      <wsdl:fault name="HubFault"><soap12:fault name="HubFault" use="literal"/></wsdl:fault>
    </wsdl:operation>
  </wsdl:binding>
  <wsdl:service name="HubService">
    <wsdl:port name="HubSoap11" binding="tns:HubSoap11Binding"><soap:address location={address}/></wsdl:port>
    <wsdl:port name="HubSoap12" binding="tns:HubSoap12Binding"><soap12:address location={address}/></wsdl:port>
  </wsdl:service>
</wsdl:definitions>
"""


@lru_cache(maxsize=16)
def wsdl(address: str) -> bytes:
    """The WSDL with ``address`` (the URL of /soap as the client reached it) in both ports."""
    return _TEMPLATE.format(ns=NS, env=ENVELOPE_NS, action=ACTION, address=quoteattr(address)).encode("utf-8")
