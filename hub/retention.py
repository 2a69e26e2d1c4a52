"""Retention: the signed payloads of delivered messages are dropped once they are old enough.

What makes the hub's promises stays: every message's dedupe key, digest and receipt (a copy sent
again still gets its original receipt), every attempt and the audit log; rows that failed (dead)
or wait (pending, leased), and every row of a message that has one, keep their payloads
(``Store.purge``). ``hub purge`` runs it by hand; with ``[retention] delivered_days`` set,
``hub serve`` runs it once a day (``RetentionJob``).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta, timezone

from .errors import HubError
from .store import PurgeReport, Store
from .tracing import ts

log = logging.getLogger("hub.retention")

DAY = 86400.0
# the first scheduled run waits this long after `hub serve` starts: a store that was down at
# start has connected by then, and the start itself is not slowed
FIRST_RUN_AFTER = 300.0


def cutoff(days: int, now: float | None = None) -> float:
    """The ``before`` of ``Store.purge`` for messages older than ``days`` days; never before the
    epoch, which no message is older than, so days beyond the calendar purge nothing (the report
    says when ``before`` is, and a datetime cannot be before the year 1)."""
    now = time.time() if now is None else now
    return max(0.0, now - min(days, now // DAY + 1) * DAY)


def summary(report: PurgeReport) -> str:
    """One line: what a run dropped (or, dry, would drop)."""
    verb = "would purge" if report.dry_run else "purged"
    return (f"retention {verb} the payloads of {report.rows} delivered outbox row(s) of {report.messages} message(s) "
            f"received before {ts(report.before)}: {report.freed} bytes")


def report_lines(report: PurgeReport, sqlite: bool) -> list[str]:
    """``hub purge``'s answer: one line per kind, and where the space goes."""
    would = "that would be " if report.dry_run else ""
    lines = [
        f"outbox rows {would}purged: {report.rows} (delivered, of messages received before {ts(report.before)})",
        f"payload bytes {would}freed: {report.freed}",
        f"messages {would}affected: {report.messages} (their receipts, digests, attempts and audit entries are kept)",
    ]
    if report.dry_run:
        lines.append("dry run: nothing was changed")
    elif sqlite:
        lines.append("SQLite keeps the freed pages in the database file and reuses them for new rows; "
                     "VACUUM (with the hub stopped) returns them to the filesystem")
    else:
        lines.append("PostgreSQL reuses the space once (auto)vacuum has processed the outbox; "
                     "VACUUM FULL outbox returns it to the filesystem (it locks the table meanwhile)")
    return lines


class RetentionJob:
    """``hub serve``'s daily purge of delivered payloads older than ``days`` days (apscheduler), in
    one process per node (the first worker). Several nodes on one PostgreSQL each run it; their
    runs do not collide (a row is purged once, under its row lock)."""

    def __init__(self, store: Store, days: int, actor: str, first_run_after: float = FIRST_RUN_AFTER) -> None:
        self.store, self.days, self.actor, self.first_run_after = store, days, actor, first_run_after
        self._scheduler: object | None = None
        self._stopping = threading.Event()  # a run under way ends after its current batch

    def run(self) -> PurgeReport | None:
        """One purge; a store that cannot be written now is tried again at the next run."""
        try:
            report = self.store.purge(cutoff(self.days), actor=self.actor, stop=self._stopping)
        except HubError as exc:
            log.warning("retention: the purge did not finish (%s); the next run, in a day, takes up what is left", exc)
            return None
        log.info("%s", summary(report))
        return report

    def start(self) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler

        scheduler = BackgroundScheduler(timezone=timezone.utc, daemon=True)
        scheduler.add_job(self.run, "interval", days=1, id="retention", max_instances=1, coalesce=True,
                          next_run_time=datetime.now(timezone.utc) + timedelta(seconds=self.first_run_after))
        scheduler.start()
        self._scheduler = scheduler

    def stop(self) -> None:
        """Waits for a run under way to end its current batch (and record what it did), not for the whole run."""
        self._stopping.set()
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)  # type: ignore[attr-defined]
            self._scheduler = None
