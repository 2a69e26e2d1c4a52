"""Files written so that a crash leaves either the old content or the new, never a torn file.

The data goes to a temporary file of its own in the target's folder (unique across threads,
workers and nodes sharing the folder), is fsynced, renamed over the target, and the folder is
fsynced so that the rename itself is on disk. A failed write leaves no temporary file behind.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def fsync_folder(folder: Path) -> None:
    """Makes a link, rename or removal in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(target: Path, data: bytes, mode: int | None = None, folder_mode: int = 0o777) -> Path:
    """Writes ``data`` to ``target`` (its folder created with ``folder_mode`` if missing); returns
    ``target``. The file gets ``mode``, by default what ``open`` would give it (0o666 less the
    umask: an agency's pickup process may run under another account). Raises ``OSError`` when it
    cannot, with nothing left behind."""
    folder = target.parent
    folder.mkdir(mode=folder_mode, parents=True, exist_ok=True)
    part = folder / f".{target.name}.{uuid.uuid4().hex}.part"
    # created as open() creates files (the umask and the folder's default ACL apply), unless told
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 if mode is None else mode)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(part, target)
    except BaseException:
        try:
            os.unlink(part)
        except OSError:
            pass
        raise
    fsync_folder(folder)
    return target
