"""``file``: delivers into a folder with an atomic rename; reads an inbox folder.

Delivery writes ``<sender>_<message id>.xml`` into the agency's ``endpoint`` folder: first to a
hidden temporary file of its own, fsync, then a hard link under its name and an fsync of the
folder, so the agency never sees a partial file, and a crash or a full disk leaves at most a
hidden ``.part`` (removed when the write fails). The link never replaces a file already there:
a repeated delivery whose file is still there with the same content is delivered without
touching it (the agency may be reading it), and a different file under that name (two
destinations that share a folder, a file the agency edited) is never overwritten: the row is
dead-lettered saying so. Where the file system has no hard links the name is checked, then the
file renamed onto it. The folder is created if missing, except where it has gone with the file
system it was on: once a delivery went into a mounted file system (a share), deliveries wait
while that file system is not mounted rather than write into the empty folder underneath, where
nobody would look and where the files would vanish when it is mounted again.

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
the next poll of any worker: the hub answers a duplicate with the original receipt. What is not a
message (a link, a FIFO, a directory, a file too large or whose name is too long to claim) is
refused once, unread, with a NACK in ack/ and moved to rejected/ (``FolderInbox``).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from hub.config import Agency
from hub.envelope import Ack
from hub.errors import Code, ConfigError, Rejected, TryAgain
from hub.files import fsync_folder, write_durably
from hub.xml import Limits

from .base import Adapter, AdapterSettings, Delivery, InboundSource, Outcome, Result, Submit, seconds

log = logging.getLogger("hub.adapters.file")

# ``Pipeline.nack``: the hub's answer to what the inbox refuses itself, as (refusal, None)
Nack = Callable[[Rejected, None], Ack]
# The bytes of the file system's longest name that an agency's name must leave free: its ack
# (STEM.ack.xml, 4 more) is written under a temporary name 39 longer still (``write_durably``);
# the claim (TOKEN.NAME) and a second file of one name in done/ (STEM.TOKEN.xml) need 17
NAME_ROOM = 43


class FileAdapter(Adapter):
    alias = "file"
    option_names = frozenset({"inbox", "poll_interval"})

    def __init__(self, agency: Agency, settings: AdapterSettings) -> None:
        super().__init__(agency, settings)
        self._mount: Path | None = None  # the mount point that held the folder at the last delivery

    @property
    def folder(self) -> Path:
        return self.settings.path(self.agency.endpoint)

    def deliver(self, delivery: Delivery) -> Result:
        folder = self.folder
        unmounted = self._unmounted()
        if unmounted:
            return Result(Outcome.RETRY, unmounted)
        try:
            result = place(folder / f"{delivery.sender}_{delivery.message_id}.xml", delivery.payload, delivery.row_id)
        except OSError as exc:
            return Result(Outcome.RETRY, f"cannot write into {folder}: {exc.strerror or exc}")
        if self._mount is None:
            self._mount = _mount_point(folder)
        return result

    def _unmounted(self) -> str | None:
        """Why not to write now: the file system that held the folder is no longer mounted."""
        mount = self._mount
        if mount is None or mount == Path(mount.anchor) or os.path.ismount(mount):
            return None
        return (f"{mount} is no longer mounted (the folder {self.folder} was on it): deliveries wait until it is mounted "
                "again, rather than go into the folder underneath, where nobody would see them")

    def check(self) -> list[str]:
        faults = [] if self.agency.endpoint else ["endpoint: a folder is required for the file adapter"]
        inbox = self.agency.options.get("inbox")
        if inbox is not None and not (isinstance(inbox, str) and inbox.strip()):
            faults.append(f"options.inbox: must be the path of a folder, not {inbox!r}")
        try:
            self._interval()
        except ConfigError as exc:
            faults.append(f"options.poll_interval: {exc.reason}")
        return faults

    def _interval(self) -> float:
        key = f"agencies[{self.agency.id}].options.poll_interval"
        return seconds(self.agency.options, 0.5, self.settings.config_file, key, "poll_interval")

    def inbound(self, submit: Submit) -> InboundSource | None:
        inbox = self.agency.options.get("inbox")
        if inbox is None:
            return None
        return FolderInbox(self.settings.path(inbox), self.agency.id, submit, self._interval(), self.settings.limits.max_bytes,
                           nack=self._nack())

    def _nack(self) -> Nack:
        if self.settings.nack is None:  # the runtime always gives it (``Runtime.create_adapters``)
            raise TypeError("a folder inbox needs the hub's NACK (AdapterSettings.nack) to answer what it refuses unread")
        return self.settings.nack


def place(target: Path, data: bytes, row: int = 0) -> Result:
    """Puts ``data`` under ``target`` whole, never over another file (see the module's docstring):
    delivered when it is written or already there with the same bytes, failed when a different
    file holds the name (``row``: the outbox row, named in what to do). ``OSError`` when it cannot
    be written, with no file left behind."""
    folder = target.parent
    folder.mkdir(parents=True, exist_ok=True)
    part = folder / f".{target.name}.{uuid.uuid4().hex}.part"
    # created as open() creates files (the umask and the folder's default ACL apply): the agency's
    # pickup process may run under another account
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    result = Result(Outcome.DELIVERED, f"written to {target}")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(part, target)  # unlike a rename, never replaces what holds the name
        except FileExistsError:
            result = _already_there(target, data, row)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
                raise
            if os.path.lexists(target):  # no hard links here: look first, then rename
                result = _already_there(target, data, row)
            else:
                os.replace(part, target)
    finally:
        try:
            os.unlink(part)
        except FileNotFoundError:
            pass
    fsync_folder(folder)  # also a file an attempt that crashed had linked: delivered means on disk
    return result


def _already_there(target: Path, data: bytes, row: int) -> Result:
    """The outcome when a file already holds ``target``'s name: delivered if it is this very
    document (a repeated delivery), left as it is and failed otherwise."""
    why = "it is not a regular file"
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        fd = -1  # a link, or something that cannot be opened: not this document
    if fd >= 0:
        try:
            kept = os.fstat(fd)
            if stat.S_ISREG(kept.st_mode):
                if kept.st_size == len(data) and _read(fd, len(data) + 1) == data:
                    return Result(Outcome.DELIVERED, f"already in {target} with this content (a repeated delivery; left as it was)")
                why = f"it holds {kept.st_size} bytes of something else"
        finally:
            os.close(fd)
    return Result(Outcome.FAILED, f"{target} is already there and {why}: not replaced. Move it away (`hub outbox show "
                                  f"{row} --payload` shows this row's document), then resend the row")


def _read(fd: int, size: int) -> bytes:
    """Up to ``size`` bytes from ``fd``, fewer only at its end."""
    chunks, left = [], size
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _mount_point(folder: Path) -> Path:
    """The mount point of the file system that holds ``folder``."""
    path = folder.resolve()
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


class FolderInbox(InboundSource):
    """Submits the regular files dropped in a folder. Anything else is refused once, unread, and
    answered like any refusal (a NACK in ack/, from ``nack``: the pipeline's), so that the agency
    learns why and no poll tries it again: a symbolic link (the hub would read whatever it points
    to), a FIFO or a device (it would wait for ever), a directory, and a file whose name is too long
    to claim. A file is read up to one byte beyond ``max_bytes``: one larger is refused with its
    size as the file system tells it."""

    def __init__(self, inbox: Path, agency: str, submit: Submit, interval: float, max_bytes: int = Limits.max_bytes, *,
                 nack: Nack) -> None:
        self.inbox, self.agency, self.submit, self.nack, self.interval = inbox, agency, submit, nack, interval
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
            claimed, refusal = (path, None) if path.parent == work else self._claim(path, work)
            if claimed is None:
                continue
            try:
                done += self._answer(claimed, refusal)
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

    def _claim(self, path: Path, work: Path) -> tuple[Path | None, Rejected | None]:
        """Renames a new file into work/ as ``TOKEN.NAME``: None when another worker took it first or
        it cannot be moved (logged; the others go on). A name too long for the names made from it
        (``NAME_ROOM``) is claimed shortened, with the refusal that answers it: left in the inbox, or
        answered under a name that cannot be written, it would be tried again at every poll and the
        agency never told why. (Should the hub stop before answering it, the next poll submits it
        under the shortened name.)"""
        token = uuid.uuid4().hex[:16]
        longest = os.pathconf(work, "PC_NAME_MAX") - NAME_ROOM
        name, refusal = path.name, None
        if len(os.fsencode(name)) > longest:
            name, refusal = _shortened(name, longest), _too_long(name, longest)
        claimed = work / f"{token}.{name}"
        try:
            os.replace(path, claimed)
        except FileNotFoundError:
            return None, None  # another worker claimed it
        except OSError as exc:  # e.g. no permission: the others go on
            log.warning("inbox %s: cannot claim %s: %s", self.agency, path.name, exc)
            return None, None
        return claimed, refusal

    def _answer(self, claimed: Path, refusal: Rejected | None = None) -> bool:
        """Submits a claimed file (or answers it with ``refusal``), writes its ack and moves it out of
        work/, holding its lock throughout: False when another worker holds it (it is answering it)
        or has just moved it. Only a regular file is opened: a directory cannot be read as one, and
        the descriptor of a failed open would be lost at every poll."""
        try:
            entry = os.lstat(claimed)
        except FileNotFoundError:
            return False
        if not stat.S_ISREG(entry.st_mode):
            return self._set_aside(claimed, entry)
        try:
            file = open(claimed, "rb", opener=_unfollowed)
        except FileNotFoundError:
            return False
        with file:  # closed whatever happens below
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            if not (os.path.samestat(os.fstat(file.fileno()), entry) and _unchanged(claimed, entry)):
                return False  # answered and moved out between our listing and our lock
            self._reply(claimed, self._refuse(claimed, refusal) if refusal else self._submit(file))
        return True

    def _submit(self, file: BinaryIO) -> Ack:
        """Submits a file's bytes. One larger than ``max_bytes`` is refused here, with its size from
        the file system: the pipeline would count only the bytes read (the limit and one)."""
        data = file.read(self.max_bytes + 1)
        if len(data) <= self.max_bytes:
            return self.submit(data, self.agency)
        size = max(os.fstat(file.fileno()).st_size, len(data))
        return self.nack(Rejected(Code.TOO_LARGE, f"the message has {size} bytes; the limit is {self.max_bytes}"), None)

    def _set_aside(self, claimed: Path, entry: os.stat_result) -> bool:
        """Refuses an entry that is not a regular file, without opening it. It cannot be locked
        itself, so a lock on work/ keeps two workers from both answering it: False when another
        worker holds that lock or the entry has gone since ``entry`` was read."""
        refusal = Rejected(Code.INVALID_MESSAGE, f"the entry is {_kind(entry.st_mode)}, not a regular file: not read, moved to rejected/")
        try:
            with _locked(claimed.parent):
                if not _unchanged(claimed, entry):
                    return False
                self._reply(claimed, self._refuse(claimed, refusal))
        except BlockingIOError:
            return False
        return True

    def _refuse(self, claimed: Path, refusal: Rejected) -> Ack:
        """The pipeline's NACK for what the inbox refuses unread, logged once: the entry leaves work/."""
        log.warning("inbox %s: %s refused unread: %s", self.agency, _given_name(claimed), refusal.message)
        return self.nack(refusal, None)

    def _reply(self, claimed: Path, ack: Ack) -> None:
        """Writes the answer after the agency's name, then moves the entry to done/ or rejected/."""
        write_durably(self.inbox / "ack" / f"{Path(_given_name(claimed)).stem}.ack.xml", ack.xml)
        _file_away(claimed, self.inbox / ("done" if ack.accepted else "rejected"))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:
                log.exception("inbox %s: poll failed", self.agency)
            self._stop.wait(self.interval)


def _unfollowed(path: str | Path, flags: int) -> int:
    """``open``'s opener for a claimed file: never through a symbolic link put in its place since
    it was listed, never waiting for a writer should a FIFO have taken its place."""
    return os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK)


def _unchanged(path: Path, entry: os.stat_result) -> bool:
    """Whether ``path`` still names the entry ``entry`` was read from (not followed if a link)."""
    try:
        return os.path.samestat(os.lstat(path), entry)
    except FileNotFoundError:
        return False


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Holds an exclusive lock on a folder; ``BlockingIOError`` at once when another worker holds it."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    finally:
        os.close(fd)


def _kind(mode: int) -> str:
    """What an inbox entry that is not a regular file is, for its refusal."""
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    return "a device or a socket"


def _shortened(name: str, longest: int) -> str:
    """``name`` (``STEM.xml``) with its stem cut to fit in ``longest`` bytes, whole characters only."""
    stem = name[: -len(".xml")]
    while len(os.fsencode(f"{stem}.xml")) > longest:
        stem = stem[:-1]
    return f"{stem}.xml"


def _too_long(name: str, longest: int) -> Rejected:
    """The refusal of a name too long to answer under, in bytes (what the file system counts)."""
    return Rejected(Code.INVALID_MESSAGE, f"the file name has {len(os.fsencode(name))} bytes, more than the {longest} the inbox "
                    "takes: not read, moved to rejected/ under a shortened name, the one this answer is named after")


def _given_name(claimed: Path) -> str:
    """The agency's name of a file claimed into work/ as ``TOKEN.NAME``."""
    return claimed.name.split(".", 1)[1]


def _file_away(claimed: Path, folder: Path) -> None:
    """Moves a claimed entry to ``folder`` under the agency's name, or as ``STEM.TOKEN.xml`` when an
    earlier one holds that name."""
    token, name = claimed.name.split(".", 1)
    _move_aside(claimed, (folder / name, folder / f"{Path(name).stem}.{token}.xml"))


def _move_aside(claimed: Path, targets: tuple[Path, Path]) -> None:
    """Moves an answered entry out of work/ to the first of ``targets`` that holds no earlier one.
    A hard link never replaces one (a rename would); where there are no hard links (vfat, some
    network mounts, another account's file under ``fs.protected_hardlinks``, a directory) the
    name is taken with an exclusive create (a directory's with a mkdir) and the entry renamed
    onto it."""
    directory = stat.S_ISDIR(os.lstat(claimed).st_mode)
    for target in targets:
        linked = None if directory else _link(claimed, target)
        if linked is False:
            continue
        if linked:
            os.unlink(claimed)
            return
        try:  # the name reserved first, so a rename never replaces another worker's entry
            if directory:
                os.mkdir(target, 0o700)  # an empty directory, which a rename of a directory replaces
            else:
                os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            continue
        os.replace(claimed, target)
        return
    raise FileExistsError(f"{targets[0].parent}: both {targets[0].name} and {targets[1].name} are taken")


def _link(claimed: Path, target: Path) -> bool | None:
    """Links ``claimed`` (a symbolic link itself, not what it points to) as ``target``: True once it
    is there, False when an earlier entry holds that name, None where no hard link can be made
    (no hard links here, or none allowed to this file)."""
    try:
        os.link(claimed, target, follow_symlinks=False)
    except FileExistsError:
        return _unchanged(target, os.lstat(claimed))  # linked by an attempt that crashed before the unlink
    except OSError:
        return None
    return True
