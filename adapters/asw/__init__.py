"""``asw``: the e-Form D exchange between ASEAN Single Window member gateways over AS4.

AS4 here is ebMS 3.0 on SOAP 1.2, one payload in the SOAP body (no MIME packaging), signed with
WS-Security (X.509 token, exclusive c14n, RSA/ECDSA-SHA256) over ``eb:Messaging`` and the body,
answered synchronously by a signed ``eb:Receipt`` (non-repudiation information = the digests of
the received parts) or a signed ``eb:Error``.

The payload is a hub envelope (``urn:sw-hub:envelope:1``) that the sending hub re-issues in its
own name and signs: From = the sending hub's party id, documentType = the eb:Action (FORMD,
FORMD-STATUS), the message id kept end to end. The receiving hub verifies the WS-Security
signature against the member's certificate from ``hub.toml``, then hands the envelope to its
pipeline as coming from that member (the member is an agency whose id is the peer hub's party id),
where the envelope signature is verified again and duplicates are eliminated: the eb:MessageId is
``<envelope id>.<to>@<from>``, so duplicate elimination on eb:MessageId is the pipeline's dedupe.

    errors.py    the ebMS error codes
    header.py    reading eb:Messaging (user messages, receipts, errors) and its schema
    build.py     building user messages, receipts and error signals
    wss.py       WS-Security signing and verification (signxml)
    peer.py      a member gateway's settings from hub.toml
    outbound.py  re-issuing the envelope, sending, resending with the same MessageId
    answer.py    the partner's answer -> DELIVERED / RETRY / FAILED
    inbound.py   POST /as4 on the hub's listener
"""

from .adapter import AswAdapter

__all__ = ["AswAdapter"]
