<?xml version="1.0" encoding="UTF-8"?>
<!--
  permit-decision-to-wco.xsl: ministry permit decision -> WCO Data Model 3.6 declaration (DEC-DMS v2)
  that carries the permit as a supporting document for customs (VNACCS).
    from  {urn:sw-hub:vn:permits:1}PermitDecision                     (xsd/national/permits.xsd)
    to    {urn:wco:datamodel:WCO:DocumentMetaData-DMS:2}MetaData wrapping
          {urn:wco:datamodel:WCO:DEC-DMS:2}Declaration                (xsd/wco/dec-dms-metadata.xsd)

  Only ISSUED decisions reach customs: REJECTED and MORE_INFORMATION_NEEDED stop the transform
  (xsl:message terminate="yes"), and an ISSUED decision without a Permit does too.

  Maps   ApplicationID -> FunctionalReferenceID; Permit/PermitNumber -> AdditionalDocument/ID on the
         declaration and on each goods item (TypeCode from PermitTypeCode: UN/EDIFACT 1001 "911"
         import licence, or "851" phytosanitary certificate; Name = short permit name;
         EffectiveDateTime = ValidFrom; Submitter/Name = Agency/Name); Permit/IssueDate ->
         IssueDateTime; validity period, entry point and each Condition -> AdditionalInformation
         (PERMIT-VALIDITY, PERMIT-ENTRY, PERMIT-COND); Applicant -> GoodsShipment/Importer (or
         Declaration/Exporter for an export-side certificate); GoodsItem -> GovernmentAgencyGoodsItem
         (SequenceNumeric, Commodity/Description, Classification HS, GoodsMeasure/TariffQuantity with
         unitCode, Origin CountryCode with TypeCode 1 = non-preferential).
  Drops  DecisionCode/DecisionDateTime (implied: ISSUED), Agency codes, SignatoryName/Title,
         Reason, ReplyDueDate, ScientificName, RegistrationNumber, HSCode/@listVersionID.
         It shortens text to the HMRC DMS facets: names to 70 characters, conditions to 512.
  Defaults FunctionCode 9; TypeCode "IM" (or "EX" for PHYTOSANITARY_CERTIFICATE; override with
         $declaration-type-code); CategoryCode $document-category-code ("N"); MetaData as in
         formd-to-wco-dec.xsl.
  XSLT 1.0, no extension functions, no document().
-->
<xsl:stylesheet version="1.0"
                xmlns:xsl="http://www.w3.org/1999/XSL/Transform"
                xmlns:pm="urn:sw-hub:vn:permits:1"
                xmlns:md="urn:wco:datamodel:WCO:DocumentMetaData-DMS:2"
                xmlns:ds="urn:wco:datamodel:WCO:Declaration_DS:DMS:2"
                xmlns="urn:wco:datamodel:WCO:DEC-DMS:2"
                exclude-result-prefixes="pm">

  <xsl:output method="xml" encoding="UTF-8" indent="yes"/>
  <xsl:strip-space elements="*"/>

  <xsl:param name="responsible-country" select="'VN'"/>
  <xsl:param name="responsible-agency" select="'General Department of Viet Nam Customs'"/>
  <xsl:param name="declaration-type-code" select="''"/>
  <xsl:param name="document-category-code" select="'N'"/>

  <xsl:template match="/">
    <xsl:if test="not(pm:PermitDecision)">
      <xsl:message terminate="yes">permit-decision-to-wco: the root element must be {urn:sw-hub:vn:permits:1}PermitDecision</xsl:message>
    </xsl:if>
    <xsl:apply-templates select="pm:PermitDecision"/>
  </xsl:template>

  <xsl:template match="pm:PermitDecision">
    <xsl:if test="normalize-space(pm:DecisionCode) != 'ISSUED' or not(pm:Permit)">
      <xsl:message terminate="yes">permit-decision-to-wco: decision '<xsl:value-of select="normalize-space(pm:DecisionCode)"/>' carries no permit; only ISSUED decisions with a Permit are forwarded to customs</xsl:message>
    </xsl:if>
    <xsl:variable name="permit-type" select="normalize-space(pm:PermitTypeCode)"/>
    <xsl:variable name="export-side" select="$permit-type = 'PHYTOSANITARY_CERTIFICATE'"/>
    <xsl:variable name="type-code">
      <xsl:choose>
        <xsl:when test="$export-side">851</xsl:when>
        <xsl:otherwise>911</xsl:otherwise>
      </xsl:choose>
    </xsl:variable>
    <xsl:variable name="doc-name">
      <xsl:choose>
        <xsl:when test="$permit-type = 'PLANT_QUARANTINE_IMPORT_PERMIT'">Plant quarantine import permit</xsl:when>
        <xsl:when test="$permit-type = 'PHYTOSANITARY_CERTIFICATE'">Phytosanitary certificate</xsl:when>
        <xsl:when test="$permit-type = 'DRUG_IMPORT_LICENCE'">Drug import licence</xsl:when>
        <xsl:when test="$permit-type = 'MEDICAL_DEVICE_IMPORT_LICENCE'">Medical device import licence</xsl:when>
        <xsl:otherwise>Permit</xsl:otherwise>
      </xsl:choose>
    </xsl:variable>
    <xsl:variable name="permit" select="pm:Permit"/>
    <md:MetaData>
      <md:WCODataModelVersionCode>3.6</md:WCODataModelVersionCode>
      <md:WCOTypeName>DEC</md:WCOTypeName>
      <md:ResponsibleCountryCode><xsl:value-of select="$responsible-country"/></md:ResponsibleCountryCode>
      <md:ResponsibleAgencyName><xsl:value-of select="$responsible-agency"/></md:ResponsibleAgencyName>
      <Declaration>
        <FunctionCode>9</FunctionCode>
        <FunctionalReferenceID><xsl:value-of select="normalize-space(pm:ApplicationID)"/></FunctionalReferenceID>
        <IssueDateTime>
          <xsl:call-template name="date">
            <xsl:with-param name="value" select="$permit/pm:IssueDate"/>
          </xsl:call-template>
        </IssueDateTime>
        <TypeCode>
          <xsl:choose>
            <xsl:when test="$declaration-type-code != ''"><xsl:value-of select="$declaration-type-code"/></xsl:when>
            <xsl:when test="$export-side">EX</xsl:when>
            <xsl:otherwise>IM</xsl:otherwise>
          </xsl:choose>
        </TypeCode>
        <xsl:if test="pm:GoodsItem">
          <GoodsItemQuantity><xsl:value-of select="count(pm:GoodsItem)"/></GoodsItemQuantity>
        </xsl:if>
        <AdditionalDocument>
          <CategoryCode><xsl:value-of select="$document-category-code"/></CategoryCode>
          <ID><xsl:value-of select="normalize-space($permit/pm:PermitNumber)"/></ID>
          <TypeCode><xsl:value-of select="$type-code"/></TypeCode>
        </AdditionalDocument>
        <AdditionalInformation>
          <StatementCode>PERMIT-VALIDITY</StatementCode>
          <StatementDescription>
            <xsl:value-of select="$doc-name"/>
            <xsl:text> </xsl:text>
            <xsl:value-of select="normalize-space($permit/pm:PermitNumber)"/>
            <xsl:text> valid from </xsl:text>
            <xsl:value-of select="normalize-space($permit/pm:ValidFrom)"/>
            <xsl:text> until </xsl:text>
            <xsl:value-of select="normalize-space($permit/pm:ValidUntil)"/>
          </StatementDescription>
        </AdditionalInformation>
        <xsl:for-each select="$permit/pm:EntryPoint">
          <AdditionalInformation>
            <StatementCode>PERMIT-ENTRY</StatementCode>
            <StatementDescription>
              <xsl:text>Entry point: </xsl:text>
              <xsl:value-of select="normalize-space(substring(normalize-space(pm:Name), 1, 400))"/>
              <xsl:if test="pm:ID">
                <xsl:text> (</xsl:text><xsl:value-of select="normalize-space(pm:ID)"/><xsl:text>)</xsl:text>
              </xsl:if>
            </StatementDescription>
          </AdditionalInformation>
        </xsl:for-each>
        <xsl:for-each select="$permit/pm:Condition">
          <AdditionalInformation>
            <StatementCode>PERMIT-COND</StatementCode>
            <StatementDescription><xsl:value-of select="normalize-space(substring(normalize-space(.), 1, 512))"/></StatementDescription>
          </AdditionalInformation>
        </xsl:for-each>
        <xsl:if test="$export-side">
          <Exporter>
            <xsl:apply-templates select="pm:Applicant"/>
          </Exporter>
        </xsl:if>
        <GoodsShipment>
          <xsl:apply-templates select="pm:GoodsItem">
            <xsl:with-param name="type-code" select="$type-code"/>
            <xsl:with-param name="doc-name" select="$doc-name"/>
          </xsl:apply-templates>
          <xsl:if test="not($export-side)">
            <Importer>
              <xsl:apply-templates select="pm:Applicant"/>
            </Importer>
          </xsl:if>
        </GoodsShipment>
      </Declaration>
    </md:MetaData>
  </xsl:template>

  <xsl:template match="pm:Applicant">
    <Name><xsl:value-of select="normalize-space(substring(normalize-space(pm:Name), 1, 70))"/></Name>
    <ID><xsl:value-of select="normalize-space(pm:TaxCode)"/></ID>
  </xsl:template>

  <xsl:template match="pm:GoodsItem">
    <xsl:param name="type-code"/>
    <xsl:param name="doc-name"/>
    <xsl:variable name="decision" select="ancestor::pm:PermitDecision"/>
    <GovernmentAgencyGoodsItem>
      <SequenceNumeric><xsl:value-of select="normalize-space(pm:SequenceNumeric)"/></SequenceNumeric>
      <AdditionalDocument>
        <CategoryCode><xsl:value-of select="$document-category-code"/></CategoryCode>
        <EffectiveDateTime>
          <xsl:call-template name="date">
            <xsl:with-param name="value" select="$decision/pm:Permit/pm:ValidFrom"/>
          </xsl:call-template>
        </EffectiveDateTime>
        <ID><xsl:value-of select="normalize-space($decision/pm:Permit/pm:PermitNumber)"/></ID>
        <Name><xsl:value-of select="$doc-name"/></Name>
        <TypeCode><xsl:value-of select="$type-code"/></TypeCode>
        <Submitter>
          <Name><xsl:value-of select="normalize-space(substring(normalize-space($decision/pm:Agency/pm:Name), 1, 70))"/></Name>
        </Submitter>
      </AdditionalDocument>
      <Commodity>
        <Description><xsl:value-of select="normalize-space(pm:Description)"/></Description>
        <Classification>
          <ID><xsl:value-of select="normalize-space(pm:HSCode)"/></ID>
          <IdentificationTypeCode>HS</IdentificationTypeCode>
        </Classification>
        <GoodsMeasure>
          <TariffQuantity unitCode="{normalize-space(pm:Quantity/@unitCode)}">
            <xsl:value-of select="normalize-space(pm:Quantity)"/>
          </TariffQuantity>
        </GoodsMeasure>
      </Commodity>
      <xsl:if test="pm:OriginCountryCode">
        <Origin>
          <CountryCode><xsl:value-of select="normalize-space(pm:OriginCountryCode)"/></CountryCode>
          <TypeCode>1</TypeCode>
        </Origin>
      </xsl:if>
    </GovernmentAgencyGoodsItem>
  </xsl:template>

  <!-- xs:date (CCYY-MM-DD, no zone: permits.xsd guarantees it) -> DateTimeString format 102. -->
  <xsl:template name="date">
    <xsl:param name="value"/>
    <ds:DateTimeString formatCode="102"><xsl:value-of select="translate(normalize-space($value), '-', '')"/></ds:DateTimeString>
  </xsl:template>
</xsl:stylesheet>
