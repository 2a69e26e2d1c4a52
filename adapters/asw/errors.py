"""ebMS 3.0 errors (ebMS 3.0 Core, section 6.7): the codes this adapter answers with.

``EbmsError`` is raised wherever an AS4 message is refused (reading, schema, signature, profile
checks). The inbound endpoint turns it into a signed ``eb:Error`` signal; the outbound side turns
a partner's ``eb:Error`` into a delivery result.
"""

from __future__ import annotations

from enum import Enum


class EbmsCode(str, Enum):
    VALUE_NOT_RECOGNIZED = "EBMS:0001"
    VALUE_INCONSISTENT = "EBMS:0003"
    OTHER = "EBMS:0004"
    FEATURE_NOT_SUPPORTED = "EBMS:0008"
    INVALID_HEADER = "EBMS:0009"
    PROCESSING_MODE_MISMATCH = "EBMS:0010"
    EXTERNAL_PAYLOAD_ERROR = "EBMS:0011"
    FAILED_AUTHENTICATION = "EBMS:0101"
    POLICY_NONCOMPLIANCE = "EBMS:0103"

    @property
    def short(self) -> str:
        """The spec's short description, e.g. ``InvalidHeader``."""
        return "".join(part.capitalize() for part in self.name.split("_"))

    @property
    def category(self) -> str:
        return "Processing" if self in (EbmsCode.FAILED_AUTHENTICATION, EbmsCode.POLICY_NONCOMPLIANCE) else "Content"


class EbmsError(Exception):
    """An AS4 message refused with an ebMS error code and a sentence a partner can act on."""

    def __init__(self, code: EbmsCode, message: str, severity: str = "failure") -> None:
        self.code, self.message, self.severity = code, message, severity
        super().__init__(f"{code.value} {code.short}: {message}")
