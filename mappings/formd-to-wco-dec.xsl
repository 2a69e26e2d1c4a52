<?xml version="1.0" encoding="UTF-8"?>
<!--
  formd-to-wco-dec.xsl: e-ATIGA Form D -> WCO Data Model 3.6 declaration (DEC-DMS v2) that carries
  the certificate as a supporting document for customs (VNACCS).
    from  {urn:sw-hub:asean:eatiga:formd:1}FormD                      (xsd/formd/formd.xsd)
    to    {urn:wco:datamodel:WCO:DocumentMetaData-DMS:2}MetaData wrapping
          {urn:wco:datamodel:WCO:DEC-DMS:2}Declaration                (xsd/wco/dec-dms-metadata.xsd)

  Maps   ReferenceID -> Declaration/FunctionalReferenceID, and AdditionalDocument/ID on the
         declaration and on every goods item (CategoryCode $document-category-code, TypeCode
         $certificate-type-code = UN/EDIFACT 1001 "864 preference certificate of origin",
         Name "e-ATIGA Form D", EffectiveDateTime = box 12 date, Submitter/Name = issuing authority);
         box 12 date -> IssueDateTime; box 1 -> Exporter; box 2 -> GoodsShipment/Consignee;
         box 3 -> GoodsShipment/ExitDateTime, Consignment/DepartureTransportMeans, LoadingLocation;
         box 5 -> GovernmentAgencyGoodsItem/SequenceNumeric; box 6, 7 -> Packaging, Commodity/
         Description, Classification (ID = HS code, IdentificationTypeCode "HS"); box 8 -> item
         AdditionalInformation "FD-B08" + Origin (CountryCode = box 11 producing country, TypeCode 2
         = preferential); box 9 -> GoodsMeasure/GrossMassMeasure, TariffQuantity (unitCode kept),
         FOB -> Commodity/InvoiceLine/ItemChargeAmount; box 10 -> item AdditionalDocument TypeCode
         $invoice-type-code (380) and, when all items share one invoice, GoodsShipment/Invoice;
         box 11 importing country -> Destination; IssuingCountryCode -> ExportCountry;
         box 3 port of discharge, box 4 decision and every box 13 flag that is true ->
         Declaration/AdditionalInformation (codes FD-B03-POD, FD-B04, FD-B13-*).
  Drops  box 11 place/date/signatory, box 12 place/officer, IssuingAuthority/ID, party ID
         schemeIDs, HSCode/@listVersionID, box 13 flags that are false, Invoice/IssuerCountryCode,
         and any ds:Signature. To fit the HMRC DMS facets it shortens text: party names to 70
         characters, address lines joined with ", " and cut to 70, city to 35, subdivision to 35,
         vessel/flight name to 35; it omits party IDs longer than 17 and postcodes longer than 9
         (a cut identifier would be wrong, not short).
  Defaults FunctionCode 9 (original); TypeCode "IM" when the importing country is
         $responsible-country, else "EX" (override with $declaration-type-code);
         MetaData WCODataModelVersionCode 3.6, WCOTypeName DEC, ResponsibleCountryCode
         $responsible-country (VN), ResponsibleAgencyName $responsible-agency;
         Packaging/SequenceNumeric 1; TotalPackageQuantity only when it fits 8 digits.
  XSLT 1.0, no extension functions, no document().
-->
<xsl:stylesheet version="1.0"
                xmlns:xsl="http://www.w3.org/1999/XSL/Transform"
                xmlns:fd="urn:sw-hub:asean:eatiga:formd:1"
                xmlns:md="urn:wco:datamodel:WCO:DocumentMetaData-DMS:2"
                xmlns:ds="urn:wco:datamodel:WCO:Declaration_DS:DMS:2"
                xmlns="urn:wco:datamodel:WCO:DEC-DMS:2"
                exclude-result-prefixes="fd">

  <xsl:output method="xml" encoding="UTF-8" indent="yes"/>
  <xsl:strip-space elements="*"/>

  <xsl:param name="responsible-country" select="'VN'"/>
  <xsl:param name="responsible-agency" select="'General Department of Viet Nam Customs'"/>
  <xsl:param name="declaration-type-code" select="''"/>
  <xsl:param name="document-category-code" select="'N'"/>
  <xsl:param name="certificate-type-code" select="'864'"/>
  <xsl:param name="certificate-document-name" select="'e-ATIGA Form D'"/>
  <xsl:param name="invoice-type-code" select="'380'"/>

  <xsl:template match="/">
    <xsl:if test="not(fd:FormD)">
      <xsl:message terminate="yes">formd-to-wco-dec: the root element must be {urn:sw-hub:asean:eatiga:formd:1}FormD</xsl:message>
    </xsl:if>
    <xsl:apply-templates select="fd:FormD"/>
  </xsl:template>

  <xsl:template match="fd:FormD">
    <xsl:variable name="importing" select="normalize-space(fd:ExporterDeclaration/fd:ImportingCountryCode)"/>
    <xsl:variable name="packages" select="sum(fd:GoodsItem/fd:PackageQuantity)"/>
    <xsl:variable name="first-invoice" select="normalize-space(fd:GoodsItem[1]/fd:Invoice/fd:ID)"/>
    <md:MetaData>
      <md:WCODataModelVersionCode>3.6</md:WCODataModelVersionCode>
      <md:WCOTypeName>DEC</md:WCOTypeName>
      <md:ResponsibleCountryCode><xsl:value-of select="$responsible-country"/></md:ResponsibleCountryCode>
      <md:ResponsibleAgencyName><xsl:value-of select="$responsible-agency"/></md:ResponsibleAgencyName>
      <Declaration>
        <FunctionCode>9</FunctionCode>
        <FunctionalReferenceID><xsl:value-of select="normalize-space(fd:ReferenceID)"/></FunctionalReferenceID>
        <IssueDateTime>
          <xsl:call-template name="date">
            <xsl:with-param name="value" select="fd:Certification/fd:IssueDate"/>
          </xsl:call-template>
        </IssueDateTime>
        <TypeCode>
          <xsl:choose>
            <xsl:when test="$declaration-type-code != ''"><xsl:value-of select="$declaration-type-code"/></xsl:when>
            <xsl:when test="$importing = $responsible-country">IM</xsl:when>
            <xsl:otherwise>EX</xsl:otherwise>
          </xsl:choose>
        </TypeCode>
        <GoodsItemQuantity><xsl:value-of select="count(fd:GoodsItem)"/></GoodsItemQuantity>
        <xsl:if test="$packages &lt; 100000000">
          <TotalPackageQuantity><xsl:value-of select="$packages"/></TotalPackageQuantity>
        </xsl:if>
        <AdditionalDocument>
          <CategoryCode><xsl:value-of select="$document-category-code"/></CategoryCode>
          <ID><xsl:value-of select="normalize-space(fd:ReferenceID)"/></ID>
          <TypeCode><xsl:value-of select="$certificate-type-code"/></TypeCode>
        </AdditionalDocument>
        <xsl:apply-templates select="fd:Transport/fd:DischargeLocation"/>
        <xsl:apply-templates select="fd:ImportingCustomsDecision"/>
        <xsl:apply-templates select="fd:Flags/*"/>
        <Exporter>
          <xsl:call-template name="party">
            <xsl:with-param name="party" select="fd:Exporter"/>
          </xsl:call-template>
        </Exporter>
        <GoodsShipment>
          <ExitDateTime>
            <xsl:call-template name="date">
              <xsl:with-param name="value" select="fd:Transport/fd:DepartureDate"/>
            </xsl:call-template>
          </ExitDateTime>
          <Consignee>
            <xsl:call-template name="party">
              <xsl:with-param name="party" select="fd:Consignee"/>
            </xsl:call-template>
          </Consignee>
          <Consignment>
            <DepartureTransportMeans>
              <Name><xsl:value-of select="normalize-space(substring(normalize-space(fd:Transport/fd:TransportMeansName), 1, 35))"/></Name>
              <xsl:if test="fd:Transport/fd:TransportMeansID">
                <ID><xsl:value-of select="normalize-space(fd:Transport/fd:TransportMeansID)"/></ID>
              </xsl:if>
              <ModeCode><xsl:value-of select="normalize-space(fd:Transport/fd:ModeCode)"/></ModeCode>
            </DepartureTransportMeans>
            <LoadingLocation>
              <Name><xsl:value-of select="normalize-space(fd:Transport/fd:LoadingLocation/fd:Name)"/></Name>
              <xsl:if test="fd:Transport/fd:LoadingLocation/fd:ID">
                <ID><xsl:value-of select="normalize-space(fd:Transport/fd:LoadingLocation/fd:ID)"/></ID>
              </xsl:if>
            </LoadingLocation>
          </Consignment>
          <Destination>
            <CountryCode><xsl:value-of select="$importing"/></CountryCode>
          </Destination>
          <ExportCountry>
            <ID><xsl:value-of select="normalize-space(fd:IssuingCountryCode)"/></ID>
          </ExportCountry>
          <xsl:apply-templates select="fd:GoodsItem"/>
          <xsl:if test="not(fd:GoodsItem/fd:Invoice/fd:ID[normalize-space(.) != $first-invoice])">
            <Invoice>
              <ID><xsl:value-of select="$first-invoice"/></ID>
              <IssueDateTime>
                <xsl:call-template name="date">
                  <xsl:with-param name="value" select="fd:GoodsItem[1]/fd:Invoice/fd:IssueDate"/>
                </xsl:call-template>
              </IssueDateTime>
            </Invoice>
          </xsl:if>
        </GoodsShipment>
      </Declaration>
    </md:MetaData>
  </xsl:template>

  <!-- ============================================ boxes 5 to 10: one goods item -->
  <xsl:template match="fd:GoodsItem">
    <xsl:variable name="form" select="ancestor::fd:FormD"/>
    <GovernmentAgencyGoodsItem>
      <SequenceNumeric><xsl:value-of select="normalize-space(fd:SequenceNumeric)"/></SequenceNumeric>
      <AdditionalDocument>
        <CategoryCode><xsl:value-of select="$document-category-code"/></CategoryCode>
        <EffectiveDateTime>
          <xsl:call-template name="date">
            <xsl:with-param name="value" select="$form/fd:Certification/fd:IssueDate"/>
          </xsl:call-template>
        </EffectiveDateTime>
        <ID><xsl:value-of select="normalize-space($form/fd:ReferenceID)"/></ID>
        <Name><xsl:value-of select="$certificate-document-name"/></Name>
        <TypeCode><xsl:value-of select="$certificate-type-code"/></TypeCode>
        <Submitter>
          <Name><xsl:value-of select="normalize-space(substring(normalize-space($form/fd:IssuingAuthority/fd:Name), 1, 70))"/></Name>
        </Submitter>
      </AdditionalDocument>
      <AdditionalDocument>
        <CategoryCode><xsl:value-of select="$document-category-code"/></CategoryCode>
        <EffectiveDateTime>
          <xsl:call-template name="date">
            <xsl:with-param name="value" select="fd:Invoice/fd:IssueDate"/>
          </xsl:call-template>
        </EffectiveDateTime>
        <ID><xsl:value-of select="normalize-space(fd:Invoice/fd:ID)"/></ID>
        <Name>Commercial invoice</Name>
        <TypeCode><xsl:value-of select="$invoice-type-code"/></TypeCode>
        <xsl:if test="fd:Invoice/fd:IssuerName">
          <Submitter>
            <Name><xsl:value-of select="normalize-space(substring(normalize-space(fd:Invoice/fd:IssuerName), 1, 70))"/></Name>
          </Submitter>
        </xsl:if>
      </AdditionalDocument>
      <AdditionalInformation>
        <StatementCode>FD-B08</StatementCode>
        <StatementDescription>
          <xsl:text>Form D box 8 origin criterion: </xsl:text>
          <xsl:value-of select="normalize-space(fd:OriginCriterion/fd:Code)"/>
          <xsl:if test="fd:OriginCriterion/fd:RVCPercentage">
            <xsl:text> </xsl:text>
            <xsl:value-of select="normalize-space(fd:OriginCriterion/fd:RVCPercentage)"/>
            <xsl:text>%</xsl:text>
          </xsl:if>
        </StatementDescription>
      </AdditionalInformation>
      <Commodity>
        <Description><xsl:value-of select="normalize-space(fd:Description)"/></Description>
        <Classification>
          <ID><xsl:value-of select="normalize-space(fd:HSCode)"/></ID>
          <IdentificationTypeCode>HS</IdentificationTypeCode>
        </Classification>
        <GoodsMeasure>
          <xsl:if test="fd:GrossWeightMeasure">
            <GrossMassMeasure unitCode="{normalize-space(fd:GrossWeightMeasure/@unitCode)}">
              <xsl:value-of select="normalize-space(fd:GrossWeightMeasure)"/>
            </GrossMassMeasure>
          </xsl:if>
          <xsl:if test="fd:Quantity">
            <TariffQuantity unitCode="{normalize-space(fd:Quantity/@unitCode)}">
              <xsl:value-of select="normalize-space(fd:Quantity)"/>
            </TariffQuantity>
          </xsl:if>
        </GoodsMeasure>
        <xsl:if test="fd:FOBValue">
          <InvoiceLine>
            <ItemChargeAmount currencyID="{normalize-space(fd:FOBValue/@currencyID)}">
              <xsl:value-of select="normalize-space(fd:FOBValue)"/>
            </ItemChargeAmount>
          </InvoiceLine>
        </xsl:if>
      </Commodity>
      <Origin>
        <CountryCode><xsl:value-of select="normalize-space($form/fd:ExporterDeclaration/fd:OriginCountryCode)"/></CountryCode>
        <TypeCode>2</TypeCode>
      </Origin>
      <Packaging>
        <SequenceNumeric>1</SequenceNumeric>
        <MarksNumbersID><xsl:value-of select="normalize-space(fd:MarksNumbers)"/></MarksNumbersID>
        <QuantityQuantity><xsl:value-of select="normalize-space(fd:PackageQuantity)"/></QuantityQuantity>
        <TypeCode><xsl:value-of select="normalize-space(fd:PackageTypeCode)"/></TypeCode>
      </Packaging>
    </GovernmentAgencyGoodsItem>
  </xsl:template>

  <!-- ============================ declaration-level statements (boxes 3, 4, 13) -->
  <xsl:template match="fd:DischargeLocation">
    <AdditionalInformation>
      <StatementCode>FD-B03-POD</StatementCode>
      <StatementDescription>
        <xsl:text>Form D box 3 port of discharge: </xsl:text>
        <xsl:value-of select="normalize-space(fd:Name)"/>
        <xsl:if test="fd:ID">
          <xsl:text> (</xsl:text><xsl:value-of select="normalize-space(fd:ID)"/><xsl:text>)</xsl:text>
        </xsl:if>
      </StatementDescription>
    </AdditionalInformation>
  </xsl:template>

  <xsl:template match="fd:ImportingCustomsDecision">
    <xsl:variable name="given" select="normalize-space(fd:PreferentialTreatmentGiven) = 'true' or normalize-space(fd:PreferentialTreatmentGiven) = '1'"/>
    <xsl:variable name="text">
      <xsl:text>Form D box 4: preferential treatment </xsl:text>
      <xsl:choose>
        <xsl:when test="$given">given</xsl:when>
        <xsl:otherwise>not given</xsl:otherwise>
      </xsl:choose>
      <xsl:text> on </xsl:text>
      <xsl:value-of select="normalize-space(fd:DecisionDate)"/>
      <xsl:if test="fd:Reason">
        <xsl:text>: </xsl:text><xsl:value-of select="normalize-space(fd:Reason)"/>
      </xsl:if>
    </xsl:variable>
    <AdditionalInformation>
      <StatementCode>FD-B04</StatementCode>
      <StatementDescription><xsl:value-of select="normalize-space(substring($text, 1, 512))"/></StatementDescription>
    </AdditionalInformation>
  </xsl:template>

  <xsl:template match="fd:Flags/*">
    <xsl:if test="normalize-space(.) = 'true' or normalize-space(.) = '1'">
      <AdditionalInformation>
        <StatementCode>
          <xsl:choose>
            <xsl:when test="self::fd:ThirdCountryInvoicing">FD-B13-TCI</xsl:when>
            <xsl:when test="self::fd:Exhibition">FD-B13-EXH</xsl:when>
            <xsl:when test="self::fd:BackToBack">FD-B13-B2B</xsl:when>
            <xsl:when test="self::fd:IssuedRetroactively">FD-B13-RETRO</xsl:when>
            <xsl:when test="self::fd:DeMinimis">FD-B13-DMI</xsl:when>
            <xsl:when test="self::fd:Accumulation">FD-B13-ACU</xsl:when>
            <xsl:when test="self::fd:PartialCumulation">FD-B13-PCU</xsl:when>
            <xsl:otherwise>FD-B13</xsl:otherwise>
          </xsl:choose>
        </StatementCode>
        <StatementDescription>
          <xsl:text>Form D box 13 ticked: </xsl:text>
          <xsl:value-of select="local-name()"/>
        </StatementDescription>
      </AdditionalInformation>
    </xsl:if>
  </xsl:template>

  <!-- ====================================================== helpers -->
  <!-- Exporter / Consignee content: Name, ID, Address within the DMS facets. -->
  <xsl:template name="party">
    <xsl:param name="party"/>
    <Name><xsl:value-of select="normalize-space(substring(normalize-space($party/fd:Name), 1, 70))"/></Name>
    <xsl:if test="$party/fd:ID and string-length(normalize-space($party/fd:ID)) &lt;= 17">
      <ID><xsl:value-of select="normalize-space($party/fd:ID)"/></ID>
    </xsl:if>
    <xsl:for-each select="$party/fd:Address">
      <Address>
        <xsl:if test="fd:CityName">
          <CityName><xsl:value-of select="normalize-space(substring(normalize-space(fd:CityName), 1, 35))"/></CityName>
        </xsl:if>
        <CountryCode><xsl:value-of select="normalize-space(fd:CountryCode)"/></CountryCode>
        <xsl:if test="fd:CountrySubDivisionName">
          <CountrySubDivisionName><xsl:value-of select="normalize-space(substring(normalize-space(fd:CountrySubDivisionName), 1, 35))"/></CountrySubDivisionName>
        </xsl:if>
        <xsl:variable name="lines">
          <xsl:for-each select="fd:Line">
            <xsl:if test="position() &gt; 1">, </xsl:if>
            <xsl:value-of select="normalize-space(.)"/>
          </xsl:for-each>
        </xsl:variable>
        <Line><xsl:value-of select="normalize-space(substring($lines, 1, 70))"/></Line>
        <xsl:if test="fd:PostcodeID and string-length(normalize-space(fd:PostcodeID)) &lt;= 9">
          <PostcodeID><xsl:value-of select="normalize-space(fd:PostcodeID)"/></PostcodeID>
        </xsl:if>
      </Address>
    </xsl:for-each>
  </xsl:template>

  <!-- xs:date (CCYY-MM-DD, no zone: formd.xsd guarantees it) -> DateTimeString format 102. -->
  <xsl:template name="date">
    <xsl:param name="value"/>
    <ds:DateTimeString formatCode="102"><xsl:value-of select="translate(normalize-space($value), '-', '')"/></ds:DateTimeString>
  </xsl:template>
</xsl:stylesheet>
