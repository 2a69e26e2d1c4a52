"""The audit log's hash chain: each entry's hash covers its fields and the previous entry's hash.

Stores append entries in the same transaction as the change they record, through ``chain``;
``verify_chain`` walks the entries in order and names the first one that does not fit.
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
    problem: str | None = None


def verify_chain(entries: Iterable[AuditEntry]) -> ChainReport:
    prev, count, expected_seq = GENESIS, 0, None
    for e in entries:
        count += 1
        if expected_seq is not None and e.seq != expected_seq:
            return ChainReport(count, False, f"entry {expected_seq} is missing (next is {e.seq})")
        if e.prev_hash != prev:
            return ChainReport(count, False, f"entry {e.seq} does not link to the entry before it")
        if entry_hash(e.prev_hash, e.seq, e.at, e.message_id, e.actor, e.event, e.detail) != e.hash:
            return ChainReport(count, False, f"entry {e.seq} was altered: its hash does not match its content")
        prev, expected_seq = e.hash, e.seq + 1
    return ChainReport(count, True)
