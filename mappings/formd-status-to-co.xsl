<?xml version="1.0" encoding="UTF-8"?>
<!--
  formd-status-to-co.xsl: e-ATIGA Form D status message -> the ministry's (MOIT) status record.
    from  {urn:sw-hub:asean:eatiga:formd-status:1}FormDStatus   (xsd/formd/formd-status.xsd)
    to    {urn:sw-hub:vn:moit:co:1}COStatus                     (xsd/national/co.xsd)

  Maps   ID -> StatusID; StatusCode -> StatusCode (same code list); ReferenceID -> CertificateNumber;
         IssuingCountryCode -> IssuingCountryCode; SenderCountryCode -> ReportingCountryCode;
         IssueDateTime -> StatusDateTime;
         Receipt: ReceivedDateTime, ReceivingOffice -> Office;
         Decision: PreferentialTreatmentGiven, Reason (Code, Text), CustomsOffice -> Office,
           OfficerName, DecisionDate, ItemDecision -> GoodsItemStatus (SequenceNumeric -> ItemNumber,
           PreferentialTreatmentGiven, Reason);
         Utilisation: DeclarationID, DeclarationDate -> CustomsDeclarationID, CustomsDeclarationDate,
           CustomsOffice -> Office, UtilisedItem -> GoodsItemStatus (ItemNumber, Quantity ->
           UtilisedQuantity with its unitCode, FullyUtilised);
         VerificationRequest / VerificationReply -> Verification (RequestID; Requesting- or
           RespondingAuthorityName -> AuthorityName; ReplyDueDate; OutcomeCode; Question ->
           Question (Number, ItemNumber, Text); Answer -> Answer (QuestionNumber, Text));
         Cancellation: Reason, EffectiveDate; Replacement: ReplacementReferenceID,
           ReplacementIssueDate -> ReplacementCertificateNumber, ReplacementIssueDate, Reason.
  Drops  an enveloped ds:Signature (it signs the partner's message, not the ministry's record).
  Defaults nothing. Values are copied verbatim.
  XSLT 1.0, no extension functions, no document().
-->
<xsl:stylesheet version="1.0"
                xmlns:xsl="http://www.w3.org/1999/XSL/Transform"
                xmlns:fs="urn:sw-hub:asean:eatiga:formd-status:1"
                xmlns="urn:sw-hub:vn:moit:co:1"
                exclude-result-prefixes="fs">

  <xsl:output method="xml" encoding="UTF-8" indent="yes"/>
  <xsl:strip-space elements="*"/>

  <xsl:template match="/">
    <xsl:if test="not(fs:FormDStatus)">
      <xsl:message terminate="yes">formd-status-to-co: the root element must be {urn:sw-hub:asean:eatiga:formd-status:1}FormDStatus</xsl:message>
    </xsl:if>
    <xsl:apply-templates select="fs:FormDStatus"/>
  </xsl:template>

  <xsl:template match="fs:FormDStatus">
    <xsl:variable name="detail" select="fs:Receipt | fs:Decision | fs:Utilisation | fs:VerificationRequest
                                        | fs:VerificationReply | fs:Cancellation | fs:Replacement"/>
    <COStatus>
      <xsl:apply-templates select="fs:ID" mode="as"><xsl:with-param name="name" select="'StatusID'"/></xsl:apply-templates>
      <xsl:apply-templates select="fs:StatusCode" mode="as"><xsl:with-param name="name" select="'StatusCode'"/></xsl:apply-templates>
      <xsl:apply-templates select="fs:ReferenceID" mode="as"><xsl:with-param name="name" select="'CertificateNumber'"/></xsl:apply-templates>
      <xsl:apply-templates select="fs:IssuingCountryCode" mode="as"><xsl:with-param name="name" select="'IssuingCountryCode'"/></xsl:apply-templates>
      <xsl:apply-templates select="fs:SenderCountryCode" mode="as"><xsl:with-param name="name" select="'ReportingCountryCode'"/></xsl:apply-templates>
      <xsl:apply-templates select="fs:IssueDateTime" mode="as"><xsl:with-param name="name" select="'StatusDateTime'"/></xsl:apply-templates>
      <xsl:apply-templates select="fs:Receipt/fs:ReceivedDateTime" mode="as"><xsl:with-param name="name" select="'ReceivedDateTime'"/></xsl:apply-templates>
      <xsl:apply-templates select="$detail/fs:ReceivingOffice | $detail/fs:CustomsOffice"/>
      <xsl:apply-templates select="fs:Decision/fs:PreferentialTreatmentGiven" mode="as"><xsl:with-param name="name" select="'PreferentialTreatmentGiven'"/></xsl:apply-templates>
      <xsl:apply-templates select="$detail/fs:Reason"/>
      <xsl:apply-templates select="fs:Decision/fs:OfficerName" mode="as"><xsl:with-param name="name" select="'OfficerName'"/></xsl:apply-templates>
      <xsl:apply-templates select="fs:Decision/fs:DecisionDate" mode="as"><xsl:with-param name="name" select="'DecisionDate'"/></xsl:apply-templates>
      <xsl:apply-templates select="fs:Utilisation/fs:DeclarationID" mode="as"><xsl:with-param name="name" select="'CustomsDeclarationID'"/></xsl:apply-templates>
      <xsl:apply-templates select="fs:Utilisation/fs:DeclarationDate" mode="as"><xsl:with-param name="name" select="'CustomsDeclarationDate'"/></xsl:apply-templates>
      <xsl:apply-templates select="fs:VerificationRequest | fs:VerificationReply"/>
      <xsl:apply-templates select="fs:Cancellation/fs:EffectiveDate" mode="as"><xsl:with-param name="name" select="'EffectiveDate'"/></xsl:apply-templates>
      <xsl:apply-templates select="fs:Replacement/fs:ReplacementReferenceID" mode="as"><xsl:with-param name="name" select="'ReplacementCertificateNumber'"/></xsl:apply-templates>
      <xsl:apply-templates select="fs:Replacement/fs:ReplacementIssueDate" mode="as"><xsl:with-param name="name" select="'ReplacementIssueDate'"/></xsl:apply-templates>
      <xsl:apply-templates select="fs:Decision/fs:ItemDecision | fs:Utilisation/fs:UtilisedItem"/>
    </COStatus>
  </xsl:template>

  <xsl:template match="fs:ReceivingOffice | fs:CustomsOffice">
    <Office>
      <xsl:apply-templates select="fs:ID" mode="as"><xsl:with-param name="name" select="'ID'"/></xsl:apply-templates>
      <xsl:apply-templates select="fs:Name" mode="as"><xsl:with-param name="name" select="'Name'"/></xsl:apply-templates>
    </Office>
  </xsl:template>

  <xsl:template match="fs:Reason">
    <Reason>
      <xsl:apply-templates select="fs:Code" mode="as"><xsl:with-param name="name" select="'Code'"/></xsl:apply-templates>
      <xsl:apply-templates select="fs:Text" mode="as"><xsl:with-param name="name" select="'Text'"/></xsl:apply-templates>
    </Reason>
  </xsl:template>

  <xsl:template match="fs:ItemDecision">
    <GoodsItemStatus>
      <xsl:apply-templates select="fs:SequenceNumeric" mode="as"><xsl:with-param name="name" select="'ItemNumber'"/></xsl:apply-templates>
      <xsl:apply-templates select="fs:PreferentialTreatmentGiven" mode="as"><xsl:with-param name="name" select="'PreferentialTreatmentGiven'"/></xsl:apply-templates>
      <xsl:apply-templates select="fs:Reason"/>
    </GoodsItemStatus>
  </xsl:template>

  <xsl:template match="fs:UtilisedItem">
    <GoodsItemStatus>
      <xsl:apply-templates select="fs:SequenceNumeric" mode="as"><xsl:with-param name="name" select="'ItemNumber'"/></xsl:apply-templates>
      <xsl:apply-templates select="fs:Quantity" mode="as"><xsl:with-param name="name" select="'UtilisedQuantity'"/></xsl:apply-templates>
      <xsl:apply-templates select="fs:FullyUtilised" mode="as"><xsl:with-param name="name" select="'FullyUtilised'"/></xsl:apply-templates>
    </GoodsItemStatus>
  </xsl:template>

  <xsl:template match="fs:VerificationRequest | fs:VerificationReply">
    <Verification>
      <xsl:apply-templates select="fs:RequestID" mode="as"><xsl:with-param name="name" select="'RequestID'"/></xsl:apply-templates>
      <xsl:apply-templates select="fs:RequestingAuthorityName | fs:RespondingAuthorityName" mode="as"><xsl:with-param name="name" select="'AuthorityName'"/></xsl:apply-templates>
      <xsl:apply-templates select="fs:ReplyDueDate" mode="as"><xsl:with-param name="name" select="'ReplyDueDate'"/></xsl:apply-templates>
      <xsl:apply-templates select="fs:OutcomeCode" mode="as"><xsl:with-param name="name" select="'OutcomeCode'"/></xsl:apply-templates>
      <xsl:for-each select="fs:Question">
        <Question>
          <xsl:apply-templates select="fs:SequenceNumeric" mode="as"><xsl:with-param name="name" select="'Number'"/></xsl:apply-templates>
          <xsl:apply-templates select="fs:GoodsItemSequenceNumeric" mode="as"><xsl:with-param name="name" select="'ItemNumber'"/></xsl:apply-templates>
          <xsl:apply-templates select="fs:Text" mode="as"><xsl:with-param name="name" select="'Text'"/></xsl:apply-templates>
        </Question>
      </xsl:for-each>
      <xsl:for-each select="fs:Answer">
        <Answer>
          <xsl:apply-templates select="fs:QuestionSequenceNumeric" mode="as"><xsl:with-param name="name" select="'QuestionNumber'"/></xsl:apply-templates>
          <xsl:apply-templates select="fs:Text" mode="as"><xsl:with-param name="name" select="'Text'"/></xsl:apply-templates>
        </Answer>
      </xsl:for-each>
    </Verification>
  </xsl:template>

  <!-- a leaf under a national name: attributes (unitCode) and text verbatim -->
  <xsl:template match="fs:*" mode="as">
    <xsl:param name="name"/>
    <xsl:element name="{$name}" namespace="urn:sw-hub:vn:moit:co:1">
      <xsl:copy-of select="@*"/>
      <xsl:value-of select="."/>
    </xsl:element>
  </xsl:template>

  <xsl:template match="text()"/>
</xsl:stylesheet>
