"""The audit log's hash chain: each entry's hash covers its fields and the previous entry's hash.

Stores append entries in the same transaction as the change they record, through ``chain``;
``verify_chain`` walks the entries in order and names the first one that does not fit.

The chain alone cannot show a cut at its END: entries removed from the tail leave a shorter chain
that still fits. Two things catch that: the store's ``audit_gaps`` (records of the other tables,
an accepted message or a delivery attempt, whose audit entry is missing) and the head the last
verification printed (``seq:hash``), recorded elsewhere and given back as ``expect``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Iterable

GENESIS = "0" * 64


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: float
    message_id: str | None
    actor: str
    event: str
    detail: str
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class AuditEvent:
    """An entry to append; the store gives it its sequence number, time and hashes."""

    message_id: str | None
    actor: str
    event: str
    detail: str = ""


def entry_hash(prev_hash: str, seq: int, at: float, message_id: str | None, actor: str, event: str, detail: str) -> str:
    body = json.dumps([prev_hash, seq, repr(at), message_id, actor, event, detail], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def chain(prev_hash: str, seq: int, at: float, events: Iterable[AuditEvent]) -> list[tuple]:
    """The audit rows of ``events`` chained after the entry (``seq``, ``prev_hash``):
    (seq, at, message_id, actor, event, detail, prev_hash, hash) each, in the audit table's order."""
    rows = []
    for e in events:
        seq += 1
        digest = entry_hash(prev_hash, seq, at, e.message_id, e.actor, e.event, e.detail)
        rows.append((seq, at, e.message_id, e.actor, e.event, e.detail, prev_hash, digest))
        prev_hash = digest
    return rows


@dataclass(frozen=True)
class ChainReport:
    entries: int
    ok: bool
    problem: str | None = None  # the first of ``problems``
    problems: tuple[str, ...] = ()
    head_seq: int = 0  # the last entry walked that fits (0 and GENESIS: none)
    head_hash: str = GENESIS


@dataclass(frozen=True)
class AuditGap:
    """Records of one kind (``what``: "message", "delivery attempt") that the store holds without
    the audit entry written with them: ``count`` of them, the oldest described by ``first``."""

    what: str
    count: int
    first: str

    @property
    def problem(self) -> str:
        what = self.what if self.count == 1 else f"{self.what}s"
        return f"audit entries missing for {self.count} {what} (first: {self.first}): the log was cut or entries deleted"


def parse_head(value: str) -> tuple[int, str]:
    """``SEQ:HASH`` (as ``hub audit verify`` prints a head) -> (seq, hash); ``ValueError`` naming the form."""
    seq, _, digest = value.strip().partition(":")
    digest = digest.strip().lower()
    if not (seq.strip().isdigit() and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
        raise ValueError(f"--expect-head {value!r} is not SEQ:HASH (an entry's seq and its 64 hex digit hash, "
                         "as `hub audit verify` prints the head)")
    return int(seq), digest


def verify_chain(entries: Iterable[AuditEntry], expect: tuple[int, str] | None = None) -> ChainReport:
    """Walks ``entries`` (oldest first) and stops at the first that does not fit. ``expect``
    (seq, hash): an entry recorded earlier, which the chain must still hold with that hash."""
    prev, count, expected_seq, head_seq = GENESIS, 0, None, 0
    problems: list[str] = []
    seen = False
    for e in entries:
        count += 1
        if expected_seq is not None and e.seq != expected_seq:
            problems.append(f"entry {expected_seq} is missing (next is {e.seq})")
            break
        if e.prev_hash != prev:
            problems.append(f"entry {e.seq} does not link to the entry before it")
            break
        if entry_hash(e.prev_hash, e.seq, e.at, e.message_id, e.actor, e.event, e.detail) != e.hash:
            problems.append(f"entry {e.seq} was altered: its hash does not match its content")
            break
        if expect is not None and e.seq == expect[0]:
            seen = True
            if e.hash != expect[1]:
                problems.append(f"entry {e.seq} has hash {e.hash}, not the expected {expect[1]} (--expect-head): "
                                "the log was rewritten, or cut and written on since")
        prev, expected_seq, head_seq = e.hash, e.seq + 1, e.seq
    else:
        if expect is not None and not seen and expect[0] > 0:
            problems.append(f"entry {expect[0]} (--expect-head) is not in the log, which ends at entry {head_seq}: "
                            "the log was cut or rewritten")
        elif expect is not None and expect[0] == 0 and expect[1] != GENESIS:
            problems.append(f"entry 0 (--expect-head) can only have the hash {GENESIS}")
    if problems:
        return ChainReport(count, False, problems[0], tuple(problems), head_seq, prev)
    return ChainReport(count, True, None, (), head_seq, prev)
