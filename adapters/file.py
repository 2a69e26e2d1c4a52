"""``file``: delivers into a folder with an atomic rename; reads an inbox folder.

Delivery writes ``<sender>_<message id>.xml`` into the agency's ``endpoint`` folder: first to a
hidden temporary file of its own, fsync, then ``os.replace`` and an fsync of the folder
(``hub.files.write_durably``). A repeated delivery
of the same message replaces the same file, so a retry never leaves two copies.

Inbound (``options.inbox``): each ``*.xml`` file dropped there is submitted as coming from this
agency (the folder is the agency's own channel); the answer is written to ``<inbox>/ack/`` and the
file moves to ``<inbox>/done/`` or ``<inbox>/rejected/``. A crash between the steps only means the
file is submitted again, and the hub answers a duplicate with the original receipt.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from hub.files import write_durably

from .base import Adapter, Delivery, InboundSource, Outcome, Result, Submit

log = logging.getLogger("hub.adapters.file")


class FileAdapter(Adapter):
    alias = "file"

    @property
    def folder(self) -> Path:
        return self.settings.path(self.agency.endpoint)

    def deliver(self, delivery: Delivery) -> Result:
        name = f"{delivery.sender}_{delivery.message_id}.xml"
        try:
            path = write_durably(self.folder / name, delivery.payload)
        except OSError as exc:
            return Result(Outcome.RETRY, f"cannot write into {self.folder}: {exc.strerror or exc}")
        return Result(Outcome.DELIVERED, f"written to {path}")

    def check(self) -> list[str]:
        return [] if self.agency.endpoint else ["endpoint: a folder is required for the file adapter"]

    def inbound(self, submit: Submit) -> InboundSource | None:
        inbox = self.agency.options.get("inbox")
        if not inbox:
            return None
        interval = float(self.agency.options.get("poll_interval", 0.5))
        return FolderInbox(self.settings.path(str(inbox)), self.agency.id, submit, interval)


class FolderInbox(InboundSource):
    def __init__(self, inbox: Path, agency: str, submit: Submit, interval: float) -> None:
        self.inbox, self.agency, self.submit, self.interval = inbox, agency, submit, interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        for sub in ("ack", "done", "rejected"):
            (self.inbox / sub).mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name=f"inbox-{self.agency}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)

    def poll_once(self) -> int:
        done = 0
        for path in sorted(self.inbox.glob("*.xml")):
            if self._stop.is_set():
                break
            try:
                data = path.read_bytes()
            except OSError:
                continue
            try:
                ack = self.submit(data, self.agency)
            except Exception as exc:  # the store is down: leave the file for the next poll
                log.warning("inbox %s: %s stays for the next poll: %s", self.agency, path.name, exc)
                break
            write_durably(self.inbox / "ack" / (path.stem + ".ack.xml"), ack.xml)
            os.replace(path, self.inbox / ("done" if ack.accepted else "rejected") / path.name)
            done += 1
        return done

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:
                log.exception("inbox %s: poll failed", self.agency)
            self._stop.wait(self.interval)
