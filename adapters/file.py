"""``file``: delivers into a folder with an atomic rename; reads an inbox folder.

Delivery writes ``<sender>_<message id>.xml`` into the agency's ``endpoint`` folder: first to a
hidden temporary file of its own, fsync, then ``os.replace`` and an fsync of the folder
(``hub.files.write_durably``). A repeated delivery
of the same message replaces the same file, so a retry never leaves two copies.

Inbound (``options.inbox``): each ``*.xml`` file dropped there is submitted as coming from this
agency (the folder is the agency's own channel). Hidden files (``.name.xml``) are left alone, so
an agency can write a file under a hidden name and rename it once whole. A file is first claimed:
renamed into ``<inbox>/work/`` under a name of its own (``<token>.<name>``), so that the agency
may write its next file under the same name at once, and so that of several workers (``hub serve
--workers``, nodes) polling one inbox only the one whose rename succeeds takes it. Then it is
submitted, the answer is written to ``<inbox>/ack/<stem>.ack.xml`` (after the original name; the
answer to a reused name replaces the earlier answer) and
the file moves to ``<inbox>/done/`` or ``<inbox>/rejected/``, under its own name or, if the agency
reused a name already there, ``<stem>.<token>.xml``. A worker holds a lock (``flock``) on the file
it answers; a claimed file that nobody holds was left by a crash and is submitted again first, at
the next poll of any worker: the hub answers a duplicate with the original receipt.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
import threading
import uuid
from pathlib import Path

from hub.errors import TryAgain
from hub.files import write_durably
from hub.xml import Limits

from .base import Adapter, Delivery, InboundSource, Outcome, Result, Submit

log = logging.getLogger("hub.adapters.file")


class FileAdapter(Adapter):
    alias = "file"
    option_names = frozenset({"inbox", "poll_interval"})

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
        return FolderInbox(self.settings.path(str(inbox)), self.agency.id, submit, interval, self.settings.limits.max_bytes)


class FolderInbox(InboundSource):
    """Submits the regular files dropped in a folder. A symbolic link, a FIFO or a device is not
    a message (the hub would read whatever it points to, or wait for ever): it is moved to
    rejected/ unread, with a warning; a file is read up to one byte beyond ``max_bytes`` (the
    pipeline refuses it as too large)."""

    def __init__(self, inbox: Path, agency: str, submit: Submit, interval: float, max_bytes: int = Limits.max_bytes) -> None:
        self.inbox, self.agency, self.submit, self.interval = inbox, agency, submit, interval
        self.max_bytes = max_bytes
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._folders()
        self._thread = threading.Thread(target=self._run, name=f"inbox-{self.agency}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)

    def poll_once(self) -> int:
        """Answers what a crash left in work/, then the new files; returns how many it answered."""
        work = self._folders()
        done = 0
        for path in sorted(work.glob("*.xml")) + sorted(p for p in self.inbox.glob("*.xml") if not p.name.startswith(".")):
            if self._stop.is_set():
                break
            claimed = path
            if path.parent != work:
                claimed = work / f"{uuid.uuid4().hex[:16]}.{path.name}"
                try:
                    os.replace(path, claimed)
                except FileNotFoundError:
                    continue  # another worker claimed it
                except OSError as exc:  # e.g. a name too long for work/: the others go on
                    log.warning("inbox %s: cannot claim %s: %s", self.agency, path.name, exc)
                    continue
            try:
                done += self._answer(claimed)
            except TryAgain as exc:  # the store is down: the claimed file waits in work/ for the next poll
                log.warning("inbox %s: %s stays for the next poll: %s", self.agency, path.name, exc)
                break
            except Exception:  # unreadable, unmovable, or a fault in the hub: it waits in work/, the others go on
                log.exception("inbox %s: %s stays in work/ for the next poll", self.agency, path.name)
        return done

    def _folders(self) -> Path:
        """Makes the subfolders (again at each poll: a claim into a missing work/ would look like
        a file another worker took); returns work/."""
        for sub in ("ack", "done", "rejected", "work"):
            (self.inbox / sub).mkdir(parents=True, exist_ok=True)
        return self.inbox / "work"

    def _answer(self, claimed: Path) -> bool:
        """Submits a claimed file, writes its ack and moves it out of work/, holding its lock
        throughout: False when another worker holds it (it is answering it) or has just moved it."""
        try:
            fd = os.open(claimed, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return False
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            return self._refuse(claimed, "a symbolic link")
        file = os.fdopen(fd, "rb")
        with file:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return self._refuse(claimed, "not a regular file")
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if not os.path.samestat(os.fstat(file.fileno()), os.stat(claimed)):
                    return False  # answered and moved out between our listing and our lock
            except (BlockingIOError, FileNotFoundError):
                return False
            ack = self.submit(file.read(self.max_bytes + 1), self.agency)
            write_durably(self.inbox / "ack" / f"{Path(_given_name(claimed)).stem}.ack.xml", ack.xml)
            _file_away(claimed, self.inbox / ("done" if ack.accepted else "rejected"))
        return True

    def _refuse(self, claimed: Path, what: str) -> bool:
        folder = self.inbox / "rejected"
        log.warning("inbox %s: %s is %s, not a message: moved to %s unread", self.agency, _given_name(claimed), what, folder)
        _file_away(claimed, folder)
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:
                log.exception("inbox %s: poll failed", self.agency)
            self._stop.wait(self.interval)


def _given_name(claimed: Path) -> str:
    """The agency's name of a file claimed into work/ as ``TOKEN.NAME``."""
    return claimed.name.split(".", 1)[1]


def _file_away(claimed: Path, folder: Path) -> None:
    """Moves a claimed file to ``folder`` under the agency's name, or as ``STEM.TOKEN.xml`` when an
    earlier file holds that name."""
    token, name = claimed.name.split(".", 1)
    _move_aside(claimed, (folder / name, folder / f"{Path(name).stem}.{token}.xml"))


def _move_aside(claimed: Path, targets: tuple[Path, Path]) -> None:
    """Moves an answered file out of work/ to the first of ``targets`` that holds no earlier file.
    A hard link never replaces one (a rename would); where there are no hard links (vfat, some
    network mounts, or another account's file under ``fs.protected_hardlinks``) the name is taken
    with an exclusive create and the file renamed onto it."""
    for target in targets:
        try:
            os.link(claimed, target)
        except FileExistsError:
            if os.path.samefile(claimed, target):  # linked by an attempt that crashed before the unlink
                break
            continue
        except OSError:  # no hard links here, or none allowed to this file (fs.protected_hardlinks)
            try:  # the name reserved first, so a rename never replaces another worker's file
                os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except FileExistsError:
                continue
            os.replace(claimed, target)
            return
        break
    else:
        raise FileExistsError(f"{targets[0].parent}: both {targets[0].name} and {targets[1].name} are taken")
    os.unlink(claimed)
