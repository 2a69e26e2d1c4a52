<?xml version="1.0" encoding="UTF-8"?>
<!--
  co-to-formd.xsl: national certificate of origin -> ASEAN e-ATIGA Form D.
    from  {urn:sw-hub:vn:moit:co:1}COCertificate        (xsd/national/co.xsd)
    to    {urn:sw-hub:asean:eatiga:formd:1}FormD        (xsd/formd/formd.xsd)

  Maps   CertificateNumber -> ReferenceID; IssuingOffice/CountryCode -> IssuingCountryCode;
         IssuingOffice/AuthorityID, AuthorityName -> IssuingAuthority/ID, Name;
         IssuingOffice/Name -> Certification/AuthorityName; IssueDate -> Certification/IssueDate;
         Exporter, Consignee, Transport, ImportingCustomsDecision, ExporterDeclaration, Flags:
         same structure, copied; GoodsItem: ItemNumber -> SequenceNumeric,
         MarksAndNumbers -> MarksNumbers, Packaging/Quantity, TypeCode -> PackageQuantity,
         PackageTypeCode, OriginCriterionCode + RVCPercentage -> OriginCriterion/Code,
         RVCPercentage, GrossWeight -> GrossWeightMeasure, Invoice/Number, Date, ThirdPartyName,
         ThirdPartyCountryCode -> Invoice/ID, IssueDate, IssuerName, IssuerCountryCode.
  Drops  the ministry-only data: MinistryRecord (dossier number, application id, applicant tax
         code, fee receipt, officer, notes), IssuingOffice/Code, GoodsItem/ExportDeclarationID.
  Defaults nothing. Values are copied verbatim (no trimming), so every Form D field survives
         the round trip through formd-to-co.xsl.
  Refuses a certificate whose FormTypeCode is not "D" (xsl:message terminate="yes").
  XSLT 1.0, no extension functions, no document().
-->
<xsl:stylesheet version="1.0"
                xmlns:xsl="http://www.w3.org/1999/XSL/Transform"
                xmlns:co="urn:sw-hub:vn:moit:co:1"
                xmlns="urn:sw-hub:asean:eatiga:formd:1"
                exclude-result-prefixes="co">

  <xsl:output method="xml" encoding="UTF-8" indent="yes"/>
  <xsl:strip-space elements="*"/>

  <xsl:template match="/">
    <xsl:if test="not(co:COCertificate)">
      <xsl:message terminate="yes">co-to-formd: the root element must be {urn:sw-hub:vn:moit:co:1}COCertificate</xsl:message>
    </xsl:if>
    <xsl:apply-templates select="co:COCertificate"/>
  </xsl:template>

  <xsl:template match="co:COCertificate">
    <xsl:if test="normalize-space(co:FormTypeCode) != 'D'">
      <xsl:message terminate="yes">co-to-formd: FormTypeCode is '<xsl:value-of select="co:FormTypeCode"/>', only form D maps to an e-ATIGA Form D</xsl:message>
    </xsl:if>
    <FormD>
      <ReferenceID><xsl:value-of select="co:CertificateNumber"/></ReferenceID>
      <IssuingCountryCode><xsl:value-of select="co:IssuingOffice/co:CountryCode"/></IssuingCountryCode>
      <IssuingAuthority>
        <xsl:apply-templates select="co:IssuingOffice/co:AuthorityID" mode="rename">
          <xsl:with-param name="name" select="'ID'"/>
        </xsl:apply-templates>
        <Name><xsl:value-of select="co:IssuingOffice/co:AuthorityName"/></Name>
      </IssuingAuthority>
      <xsl:apply-templates select="co:Exporter | co:Consignee | co:Transport | co:ImportingCustomsDecision"/>
      <xsl:apply-templates select="co:GoodsItem"/>
      <xsl:apply-templates select="co:ExporterDeclaration"/>
      <Certification>
        <PlaceName><xsl:value-of select="co:Certification/co:PlaceName"/></PlaceName>
        <IssueDate><xsl:value-of select="co:IssueDate"/></IssueDate>
        <OfficerName><xsl:value-of select="co:Certification/co:OfficerName"/></OfficerName>
        <AuthorityName><xsl:value-of select="co:IssuingOffice/co:Name"/></AuthorityName>
      </Certification>
      <xsl:apply-templates select="co:Flags"/>
    </FormD>
  </xsl:template>

  <xsl:template match="co:GoodsItem">
    <GoodsItem>
      <SequenceNumeric><xsl:value-of select="co:ItemNumber"/></SequenceNumeric>
      <MarksNumbers><xsl:value-of select="co:MarksAndNumbers"/></MarksNumbers>
      <PackageQuantity><xsl:value-of select="co:Packaging/co:Quantity"/></PackageQuantity>
      <PackageTypeCode><xsl:value-of select="co:Packaging/co:TypeCode"/></PackageTypeCode>
      <xsl:apply-templates select="co:Description | co:HSCode"/>
      <OriginCriterion>
        <Code><xsl:value-of select="co:OriginCriterionCode"/></Code>
        <xsl:apply-templates select="co:RVCPercentage"/>
      </OriginCriterion>
      <xsl:apply-templates select="co:GrossWeight" mode="rename">
        <xsl:with-param name="name" select="'GrossWeightMeasure'"/>
      </xsl:apply-templates>
      <xsl:apply-templates select="co:Quantity | co:FOBValue"/>
      <Invoice>
        <ID><xsl:value-of select="co:Invoice/co:Number"/></ID>
        <IssueDate><xsl:value-of select="co:Invoice/co:Date"/></IssueDate>
        <xsl:apply-templates select="co:Invoice/co:ThirdPartyName" mode="rename">
          <xsl:with-param name="name" select="'IssuerName'"/>
        </xsl:apply-templates>
        <xsl:apply-templates select="co:Invoice/co:ThirdPartyCountryCode" mode="rename">
          <xsl:with-param name="name" select="'IssuerCountryCode'"/>
        </xsl:apply-templates>
      </Invoice>
    </GoodsItem>
  </xsl:template>

  <!-- Same structure on both sides: move the element (and its attributes) into the Form D namespace. -->
  <xsl:template match="co:*">
    <xsl:element name="{local-name()}" namespace="urn:sw-hub:asean:eatiga:formd:1">
      <xsl:copy-of select="@*"/>
      <xsl:apply-templates select="node()"/>
    </xsl:element>
  </xsl:template>

  <xsl:template match="co:*" mode="rename">
    <xsl:param name="name"/>
    <xsl:element name="{$name}" namespace="urn:sw-hub:asean:eatiga:formd:1">
      <xsl:copy-of select="@*"/>
      <xsl:apply-templates select="node()"/>
    </xsl:element>
  </xsl:template>

  <xsl:template match="text()">
    <xsl:value-of select="."/>
  </xsl:template>

  <xsl:template match="comment() | processing-instruction()"/>
</xsl:stylesheet>
