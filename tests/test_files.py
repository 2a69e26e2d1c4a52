"""hub.files.write_durably: whole files or nothing, from any number of writers at once."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from hub.files import write_durably


def test_writes_creates_the_folder_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "x.xml"
    assert write_durably(target, b"one") == target and target.read_bytes() == b"one"
    write_durably(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["x.xml"]


def test_a_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    (tmp_path / "x.xml").mkdir()  # a folder in the way: the rename fails
    with pytest.raises(OSError):
        write_durably(tmp_path / "x.xml", b"data")
    assert [p.name for p in tmp_path.iterdir()] == ["x.xml"]


def test_concurrent_writers_of_one_name_never_tear_the_file(tmp_path: Path) -> None:
    target = tmp_path / "same.xml"
    bodies = [bytes([65 + i]) * 200_000 for i in range(8)]
    threads = [threading.Thread(target=write_durably, args=(target, body)) for body in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert target.read_bytes() in bodies
    assert [p.name for p in tmp_path.iterdir()] == ["same.xml"]


def test_a_written_file_has_the_mode_open_would_give_it_unless_told(tmp_path: Path) -> None:
    """Deliveries into an agency's folder are read by the agency's own account: not 0600."""
    import os

    umask = os.umask(0)
    os.umask(umask)
    assert (write_durably(tmp_path / "a.xml", b"x").stat().st_mode & 0o777) == 0o666 & ~umask
    assert (write_durably(tmp_path / "b.xml", b"x", mode=0o600).stat().st_mode & 0o777) == 0o600
