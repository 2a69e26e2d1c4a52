<?xml version="1.0" encoding="UTF-8"?>
<!--
  formd-to-co.xsl: ASEAN e-ATIGA Form D -> national certificate of origin (for inbound Form Ds,
  and the reverse of co-to-formd.xsl).
    from  {urn:sw-hub:asean:eatiga:formd:1}FormD        (xsd/formd/formd.xsd)
    to    {urn:sw-hub:vn:moit:co:1}COCertificate        (xsd/national/co.xsd)

  Maps   every Form D field: ReferenceID -> CertificateNumber; IssuingCountryCode ->
         IssuingOffice/CountryCode; IssuingAuthority/ID, Name -> IssuingOffice/AuthorityID,
         AuthorityName; Certification/AuthorityName -> IssuingOffice/Name;
         Certification/IssueDate -> IssueDate; Certification/PlaceName, OfficerName ->
         Certification; GoodsItem fields renamed back (see co-to-formd.xsl); the rest copied.
  Drops  an enveloped ds:Signature (it signs the Form D, not the national document).
  Defaults FormTypeCode = "D". The ministry-only data (MinistryRecord, IssuingOffice/Code,
         GoodsItem/ExportDeclarationID) is absent: a foreign certificate has none.
  Values are copied verbatim, so FormD -> COCertificate -> FormD is the identity.
  XSLT 1.0, no extension functions, no document().
-->
<xsl:stylesheet version="1.0"
                xmlns:xsl="http://www.w3.org/1999/XSL/Transform"
                xmlns:fd="urn:sw-hub:asean:eatiga:formd:1"
                xmlns="urn:sw-hub:vn:moit:co:1"
                exclude-result-prefixes="fd">

  <xsl:output method="xml" encoding="UTF-8" indent="yes"/>
  <xsl:strip-space elements="*"/>

  <xsl:template match="/">
    <xsl:if test="not(fd:FormD)">
      <xsl:message terminate="yes">formd-to-co: the root element must be {urn:sw-hub:asean:eatiga:formd:1}FormD</xsl:message>
    </xsl:if>
    <xsl:apply-templates select="fd:FormD"/>
  </xsl:template>

  <xsl:template match="fd:FormD">
    <COCertificate>
      <CertificateNumber><xsl:value-of select="fd:ReferenceID"/></CertificateNumber>
      <FormTypeCode>D</FormTypeCode>
      <IssueDate><xsl:value-of select="fd:Certification/fd:IssueDate"/></IssueDate>
      <IssuingOffice>
        <Name><xsl:value-of select="fd:Certification/fd:AuthorityName"/></Name>
        <xsl:apply-templates select="fd:IssuingAuthority/fd:ID" mode="rename">
          <xsl:with-param name="name" select="'AuthorityID'"/>
        </xsl:apply-templates>
        <AuthorityName><xsl:value-of select="fd:IssuingAuthority/fd:Name"/></AuthorityName>
        <CountryCode><xsl:value-of select="fd:IssuingCountryCode"/></CountryCode>
      </IssuingOffice>
      <xsl:apply-templates select="fd:Exporter | fd:Consignee | fd:Transport | fd:ImportingCustomsDecision"/>
      <xsl:apply-templates select="fd:GoodsItem"/>
      <xsl:apply-templates select="fd:ExporterDeclaration"/>
      <Certification>
        <PlaceName><xsl:value-of select="fd:Certification/fd:PlaceName"/></PlaceName>
        <OfficerName><xsl:value-of select="fd:Certification/fd:OfficerName"/></OfficerName>
      </Certification>
      <xsl:apply-templates select="fd:Flags"/>
    </COCertificate>
  </xsl:template>

  <xsl:template match="fd:GoodsItem">
    <GoodsItem>
      <ItemNumber><xsl:value-of select="fd:SequenceNumeric"/></ItemNumber>
      <MarksAndNumbers><xsl:value-of select="fd:MarksNumbers"/></MarksAndNumbers>
      <Packaging>
        <Quantity><xsl:value-of select="fd:PackageQuantity"/></Quantity>
        <TypeCode><xsl:value-of select="fd:PackageTypeCode"/></TypeCode>
      </Packaging>
      <xsl:apply-templates select="fd:Description | fd:HSCode"/>
      <OriginCriterionCode><xsl:value-of select="fd:OriginCriterion/fd:Code"/></OriginCriterionCode>
      <xsl:apply-templates select="fd:OriginCriterion/fd:RVCPercentage"/>
      <xsl:apply-templates select="fd:GrossWeightMeasure" mode="rename">
        <xsl:with-param name="name" select="'GrossWeight'"/>
      </xsl:apply-templates>
      <xsl:apply-templates select="fd:Quantity | fd:FOBValue"/>
      <Invoice>
        <Number><xsl:value-of select="fd:Invoice/fd:ID"/></Number>
        <Date><xsl:value-of select="fd:Invoice/fd:IssueDate"/></Date>
        <xsl:apply-templates select="fd:Invoice/fd:IssuerName" mode="rename">
          <xsl:with-param name="name" select="'ThirdPartyName'"/>
        </xsl:apply-templates>
        <xsl:apply-templates select="fd:Invoice/fd:IssuerCountryCode" mode="rename">
          <xsl:with-param name="name" select="'ThirdPartyCountryCode'"/>
        </xsl:apply-templates>
      </Invoice>
    </GoodsItem>
  </xsl:template>

  <xsl:template match="fd:*">
    <xsl:element name="{local-name()}" namespace="urn:sw-hub:vn:moit:co:1">
      <xsl:copy-of select="@*"/>
      <xsl:apply-templates select="node()"/>
    </xsl:element>
  </xsl:template>

  <xsl:template match="fd:*" mode="rename">
    <xsl:param name="name"/>
    <xsl:element name="{$name}" namespace="urn:sw-hub:vn:moit:co:1">
      <xsl:copy-of select="@*"/>
      <xsl:apply-templates select="node()"/>
    </xsl:element>
  </xsl:template>

  <xsl:template match="text()">
    <xsl:value-of select="."/>
  </xsl:template>

  <xsl:template match="comment() | processing-instruction()"/>
</xsl:stylesheet>
