"""The hub's exceptions and the error codes it answers with.

    HubError                      anything the hub raises on purpose
    ├── ConfigError               hub.toml or a file it names is wrong (file, key, reason; faults: all of hub.toml's)
    ├── Rejected                  an inbound message is refused: answered with a NACK (code, sentence)
    ├── TryAgain                  the hub cannot take the message now (store down): no receipt, retry
    └── StoreError                a store operation failed
        └── TransitionError       an outbox row was asked for a transition its state forbids

Library errors (lxml, signxml, sqlite3, httpx) are mapped to these at the module boundary with
``raise ... from``, so callers never see a backend's exception.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Sequence


class Code(str, Enum):
    """Machine-readable error codes carried in a NACK's ``ErrorList``.

    ERR00..ERR05 follow the national single window's codes; the ERR1x..ERR6x codes are the hub's
    own finer causes, one per way a message can be refused.
    """

    INVALID_MESSAGE = "ERR00"  # the envelope does not match the envelope schema
    UNKNOWN_PROCEDURE = "ERR01"  # no route for this sender / recipient / document type / function
    MALFORMED_XML = "ERR02"  # the bytes are not well-formed XML
    UNKNOWN_MESSAGE_TYPE = "ERR03"  # the payload's root element is not a known document
    WRONG_NAMESPACE = "ERR04"  # envelope or payload in a namespace the route does not accept
    INVALID_DOCUMENT = "ERR05"  # the payload does not validate against its schema
    FORBIDDEN_DTD = "ERR10"  # a DOCTYPE, entity declaration or external reference
    TOO_LARGE = "ERR11"  # more bytes than the configured limit
    TOO_DEEP = "ERR12"  # more element nesting than the configured limit
    UNKNOWN_SENDER = "ERR20"  # the envelope's sender is not a configured agency
    SIGNATURE_MISSING = "ERR21"  # the sender must sign and did not
    SIGNATURE_INVALID = "ERR22"  # the signed content changed after signing (digest), or an unusable signature
    WRONG_SIGNER = "ERR23"  # signed by a certificate of another agency
    CERTIFICATE_EXPIRED = "ERR24"  # the signer's certificate is out of its validity period
    WEAK_ALGORITHM = "ERR25"  # SHA-1 or another refused algorithm
    SIGNATURE_WRAPPING = "ERR26"  # content outside the signed part (signature wrapping)
    SENDER_MISMATCH = "ERR27"  # authenticated channel identity differs from the envelope's sender
    SIGNATURE_VALUE_INVALID = "ERR28"  # the signature value does not verify with the signer's key
    UNKNOWN_SIGNER = "ERR29"  # signed by a certificate no agency's trust accepts
    MAPPING_FAILED = "ERR30"  # a translation failed or produced an invalid document
    CERTIFICATE_REVOKED = "ERR40"  # the signer's certificate (or a CA above it) is on a CRL
    UNTRUSTED_CHAIN = "ERR41"  # the certificate does not chain to the sender's configured CAs
    CRL_UNAVAILABLE = "ERR42"  # a CRL the sender's trust needs is missing or stale: fail closed
    TRY_AGAIN = "ERR50"  # the hub cannot record the message now; nothing was accepted
    MESSAGE_ID_REUSED = "ERR60"  # the sender's message id was accepted before with another document or purpose
    INTERNAL_ERROR = "ERR99"  # a fault inside the hub (logged); send the message again

INTERNAL_ERROR_TEXT = (
    "the hub failed to process the message (an internal error, logged); send it again: a message "
    "it had already recorded is answered with its original receipt"
)
# the sentence of every "try again" answer (ERR50): the NACK, the SOAP Server/Receiver fault, the AS4 eb:Error
TRY_AGAIN_TEXT = "the hub cannot record the message now; send it again later"


class HubError(Exception):
    """Base of every error the hub raises on purpose."""


class ConfigError(HubError):
    """A fault in the configuration: names the file, the key and what is wrong.

    Loading hub.toml reports every independent fault of the file at once (``all_of``), so an
    operator fixes them in one round: ``faults`` holds each fault (a single one: just this error),
    ``file``, ``key`` and ``reason`` are the first's, and the message has one line per fault."""

    def __init__(self, file: str, key: str, reason: str, faults: Sequence[ConfigError] = ()) -> None:
        self.file, self.key, self.reason = file, key, reason
        self.faults: tuple[ConfigError, ...] = tuple(faults) or (self,)
        line = f"{file}: {key}: {reason}" if key else f"{file}: {reason}"
        super().__init__("\n".join(str(f) for f in faults) if faults else line)

    @classmethod
    def all_of(cls, faults: Sequence[ConfigError]) -> ConfigError:
        """One error for ``faults`` (at least one): the fault itself when it is the only one."""
        found = [one for fault in faults for one in fault.faults]
        if len(found) == 1:
            return found[0]
        return cls(found[0].file, found[0].key, found[0].reason, found)


# the characters XML 1.0 cannot carry: C0 controls but tab, LF and CR; lone surrogates; U+FFFE, U+FFFF
_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_safe(text: str) -> str:
    """``text`` with each character XML cannot carry written as its escape (``\\x07``)."""
    return _NOT_XML.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


class Rejected(HubError):
    """A message refused with a NACK. ``location`` is a line and/or path where one is known.

    The sentence quotes what the sender sent (a certificate's subject, a library's complaint about
    its bytes) and every channel answers it in XML: characters XML cannot carry are escaped here,
    or building the NACK would fail and the sender get no answer at all."""

    # set by the pipeline once the sender is known to be who the envelope says (its signature
    # verified, or the channel authenticated it): only then is a refusal audited under its name
    sender_authenticated: bool = False

    def __init__(self, code: Code, message: str, location: str | None = None) -> None:
        message, location = xml_safe(message), xml_safe(location) if location is not None else None
        self.code, self.message, self.location = code, message, location
        super().__init__(f"{code.value} {code.name}: {message}" + (f" ({location})" if location else ""))


class TryAgain(HubError):
    """The hub could not durably record the message; the sender must retry (no receipt given)."""


class StoreError(HubError):
    """A store operation failed."""


class TransitionError(StoreError):
    """An outbox row was asked for a transition that its current state forbids."""
