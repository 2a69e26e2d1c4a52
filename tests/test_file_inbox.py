"""The file adapter's inbox (FolderInbox) against the real pipeline: a name the agency reuses at
once, hidden files, what is not a message (links, FIFOs, directories, names too long, files too
large), a crash between claim and move, and two workers polling one folder."""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections import Counter
from pathlib import Path
from typing import Iterator

import pytest
from lxml import etree

import adapters.file
from adapters.file import FileAdapter, FolderInbox
from hub.envelope import Ack, read_errors, read_header
from hub.runtime import Runtime

from .support import Sender, message_id_of, wait_until, write_config


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    r = Runtime.load(write_config(tmp_path))
    yield r
    r.close()


class Recorder:
    """The pipeline's submit, recording every answer. Several inboxes in this process stand for
    `hub serve` workers, each a process of its own: they submit one at a time here (each
    worker's pipeline has its own lxml state), while claiming, locking and moving files at once."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime, self.lock = runtime, threading.Lock()
        self.acks: list[Ack] = []

    def __call__(self, data: bytes, agency: str | None) -> Ack:
        with self.lock:
            ack = self.runtime.pipeline.submit(data, agency)
            self.acks.append(ack)
        return ack


def test_a_name_reused_as_soon_as_its_ack_appears_is_submitted_too(tmp_path: Path, runtime: Runtime,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The agency writes its next message under the same fixed name the moment the ack of the first
    appears: that file is a new message, submitted at the next poll, not moved to done/ unread."""
    moit, inbox, submit = Sender(runtime.config, "VN-MOIT"), tmp_path / "inbox", Recorder(runtime)
    first, second = moit.message(), moit.message()
    box = FolderInbox(inbox, "VN-MOIT", submit, 0.05, nack=runtime.pipeline.nack)
    inbox.mkdir()
    (inbox / "outgoing.xml").write_bytes(first)
    write = adapters.file.write_durably

    def agency_writes_at_once(target: Path, data: bytes) -> Path:
        path = write(target, data)
        if target.name == "outgoing.ack.xml" and not (inbox / "outgoing.xml").exists() and len(submit.acks) == 1:
            (inbox / "outgoing.xml").write_bytes(second)
        return path

    monkeypatch.setattr(adapters.file, "write_durably", agency_writes_at_once)
    assert box.poll_once() == 1 and (inbox / "outgoing.xml").read_bytes() == second
    assert box.poll_once() == 1
    assert [(a.message_id, a.accepted, a.duplicate) for a in submit.acks] == [
        (message_id_of(first), True, False), (message_id_of(second), True, False)]
    done = {p.name: p.read_bytes() for p in (inbox / "done").iterdir()}
    assert sorted(done.values()) == sorted([first, second]) and done["outgoing.xml"] == first
    assert list(inbox.glob("*.xml")) == [] and list((inbox / "work").iterdir()) == []
    ack = read_header(etree.fromstring((inbox / "ack" / "outgoing.ack.xml").read_bytes()))
    assert ack.subject.reference == message_id_of(second)  # the agency finds the answer to its latest file


def test_a_hidden_file_is_left_alone(tmp_path: Path, runtime: Runtime) -> None:
    """``.name.xml`` is an agency's file still being written: neither read nor moved."""
    moit, inbox, submit = Sender(runtime.config, "VN-MOIT"), tmp_path / "inbox", Recorder(runtime)
    inbox.mkdir()
    (inbox / ".partial.xml").write_bytes(b"<Envelope")
    (inbox / "whole.xml").write_bytes(moit.message())
    box = FolderInbox(inbox, "VN-MOIT", submit, 0.05, nack=runtime.pipeline.nack)
    assert box.poll_once() == 1 and box.poll_once() == 0
    assert len(submit.acks) == 1 and (inbox / "done" / "whole.xml").exists()
    assert (inbox / ".partial.xml").read_bytes() == b"<Envelope"
    assert sorted(p.name for p in (inbox / "ack").iterdir()) == ["whole.ack.xml"]


def errors_in(ack: Path) -> list[tuple[str, str, str | None]]:
    """(code, sentence, location) of each error in an ack file the inbox wrote."""
    return read_errors(etree.fromstring(ack.read_bytes()))


def test_a_link_or_a_fifo_is_refused_unread_with_a_nack(tmp_path: Path, runtime: Runtime) -> None:
    """A symbolic link (to a file outside the inbox, to /dev/zero) or a FIFO is moved to
    rejected/ unread, with nothing submitted (a FIFO had blocked the inbox, a link to /dev/zero
    had filled memory), and answered like any refusal, saying why (it had no ack at all); the link
    is moved itself, never hard-linked to what it points to."""
    inbox, submit = tmp_path / "inbox", Recorder(runtime)
    inbox.mkdir()
    secret = tmp_path / "outside.xml"
    secret.write_bytes(Sender(runtime.config, "VN-MOIT").message())
    (inbox / "link.xml").symlink_to(secret)
    (inbox / "zero.xml").symlink_to("/dev/zero")
    os.mkfifo(inbox / "pipe.xml")
    box = FolderInbox(inbox, "VN-MOIT", submit, 0.05, nack=runtime.pipeline.nack)
    assert box.poll_once() == 3 and box.poll_once() == 0
    acks = {p.name: errors_in(p) for p in (inbox / "ack").iterdir()}
    assert sorted(acks) == ["link.ack.xml", "pipe.ack.xml", "zero.ack.xml"]
    assert acks["link.ack.xml"] == acks["zero.ack.xml"] == [
        ("ERR00", "the entry is a symbolic link, not a regular file: not read, moved to rejected/", None)]
    assert acks["pipe.ack.xml"] == [("ERR00", "the entry is a FIFO (named pipe), not a regular file: not read, moved to rejected/", None)]
    assert sorted(p.name for p in (inbox / "rejected").iterdir()) == ["link.xml", "pipe.xml", "zero.xml"]
    assert (inbox / "rejected" / "link.xml").is_symlink() and os.readlink(inbox / "rejected" / "link.xml") == str(secret)
    assert secret.stat().st_nlink == 1 and submit.acks == []


def test_a_file_larger_than_the_limit_is_refused_with_its_real_size(tmp_path: Path, runtime: Runtime) -> None:
    """The inbox reads one byte past the limit: the NACK says the file's size (the file system's),
    not the limit and one that the pipeline had counted, and nothing is submitted."""
    inbox, submit = tmp_path / "inbox", Recorder(runtime)
    inbox.mkdir()
    limit = runtime.config.hub.limits.max_bytes
    (inbox / "big.xml").write_bytes(b"<a>" + b" " * (limit + 200_000) + b"</a>")
    box = FolderInbox(inbox, "VN-MOIT", submit, 0.05, limit, nack=runtime.pipeline.nack)
    assert box.poll_once() == 1
    assert errors_in(inbox / "ack" / "big.ack.xml") == [("ERR11", f"the message has {limit + 200_007} bytes; the limit is {limit}", None)]
    assert [p.name for p in (inbox / "rejected").iterdir()] == ["big.xml"] and submit.acks == []


def test_a_directory_named_like_a_message_is_refused_once_and_leaks_no_descriptor(tmp_path: Path, runtime: Runtime,
                                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """``mkdir inbox/oops.xml``: the inbox never opens it (each open of it had leaked a descriptor at
    every poll, with a traceback, until the hub could not answer anyone); it is moved to rejected/
    with its contents, answered once, and a second one of that name goes beside it."""
    moit, inbox = Sender(runtime.config, "VN-MOIT"), tmp_path / "inbox"
    agency = dataclasses.replace(runtime.config.agencies["VN-MOIT"], options={"inbox": str(inbox), "poll_interval": 0.05})
    box = FileAdapter(agency, runtime.create_adapters()["VN-MOIT"].settings).inbound(runtime.pipeline.submit)  # as `hub serve` does
    assert isinstance(box, FolderInbox)
    inbox.mkdir()
    (inbox / "warm-up.xml").write_bytes(moit.message())
    assert box.poll_once() == 1  # the store's connections are open before counting
    (inbox / "oops.xml").mkdir()
    (inbox / "oops.xml" / "inside.xml").write_bytes(b"<a/>")
    before = len(os.listdir("/proc/self/fd"))
    answered = [box.poll_once() for _ in range(6)]
    assert len(os.listdir("/proc/self/fd")) == before
    assert answered == [1, 0, 0, 0, 0, 0]
    assert (inbox / "rejected" / "oops.xml" / "inside.xml").read_bytes() == b"<a/>"
    assert errors_in(inbox / "ack" / "oops.ack.xml") == [
        ("ERR00", "the entry is a directory, not a regular file: not read, moved to rejected/", None)]
    assert list((inbox / "work").iterdir()) == [] and not (inbox / "oops.xml").exists()
    (inbox / "oops.xml").mkdir()
    assert box.poll_once() == 1
    (moved,) = [p for p in (inbox / "rejected").iterdir() if p.name != "oops.xml"]
    assert moved.is_dir() and moved.name.startswith("oops.") and moved.name.endswith(".xml")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no traceback, at any poll
    assert sum("refused unread" in r.getMessage() for r in caplog.records) == 2  # one warning each


def test_a_name_too_long_to_claim_is_refused_once_under_a_shortened_name(tmp_path: Path, runtime: Runtime,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    """A name that leaves no room for the claim's token (244 bytes) had stayed in the inbox,
    unanswered, with a warning at every poll; one that left room for the token but not for its
    ack's temporary file (230 bytes) was submitted again at every poll, with a traceback. Each is
    refused once, unread, moved to rejected/ under its name cut to fit, with a NACK after that name."""
    moit, inbox, submit = Sender(runtime.config, "VN-MOIT"), tmp_path / "inbox", Recorder(runtime)
    inbox.mkdir()
    names = ["L" * 240 + ".xml", "M" * 226 + ".xml"]
    for name in names:
        (inbox / name).write_bytes(moit.message())
    (inbox / "short.xml").write_bytes(moit.message())
    box = FolderInbox(inbox, "VN-MOIT", submit, 0.05, nack=runtime.pipeline.nack)
    assert [box.poll_once() for _ in range(3)] == [3, 0, 0]
    longest = os.pathconf(inbox, "PC_NAME_MAX") - 43  # "TOKEN." in work/, ".STEM.ack.xml.HEX.part" in ack/
    shortened = ["L" * (longest - 4), "M" * (longest - 4)]
    assert sorted(p.name for p in (inbox / "rejected").iterdir()) == [f"{stem}.xml" for stem in shortened]
    for name, stem in zip(names, shortened):
        assert errors_in(inbox / "ack" / f"{stem}.ack.xml") == [(
            "ERR00", f"the file name has {len(name)} bytes, more than the {longest} the inbox takes: not read, moved to "
                     "rejected/ under a shortened name, the one this answer is named after", None)]
        assert sum(r.levelno >= logging.WARNING and name[:40] in r.getMessage() for r in caplog.records) == 1
    assert [a.accepted for a in submit.acks] == [True]  # the other file only
    assert list(inbox.glob("*.xml")) == [] and list((inbox / "work").iterdir()) == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


class Crash(BaseException):
    """The process dies: nothing in the inbox catches it."""


def test_a_file_claimed_before_a_crash_is_submitted_at_the_next_start(tmp_path: Path, runtime: Runtime) -> None:
    """The hub recorded the message and died before the ack and the move: the file waits in work/,
    and the next start submits it first; the hub answers with the original receipt."""
    moit, inbox, submit = Sender(runtime.config, "VN-MOIT"), tmp_path / "inbox", Recorder(runtime)
    message = moit.message()
    inbox.mkdir()
    (inbox / "co.xml").write_bytes(message)

    def recorded_then_crash(data: bytes, agency: str | None) -> Ack:
        submit(data, agency)
        raise Crash

    with pytest.raises(Crash):
        FolderInbox(inbox, "VN-MOIT", recorded_then_crash, 0.05, nack=runtime.pipeline.nack).poll_once()
    assert [p.name.split(".", 1)[1] for p in (inbox / "work").iterdir()] == ["co.xml"]
    assert not (inbox / "ack").joinpath("co.ack.xml").exists() and list((inbox / "done").iterdir()) == []
    box = FolderInbox(inbox, "VN-MOIT", submit, 0.05, nack=runtime.pipeline.nack)
    box.start()
    try:
        assert wait_until(lambda: (inbox / "done" / "co.xml").exists(), 10)
    finally:
        box.stop()
    original, again = submit.acks
    assert original.accepted and again.duplicate and again.message_id == message_id_of(message)
    assert (inbox / "ack" / "co.ack.xml").read_bytes() == original.xml
    assert list((inbox / "work").iterdir()) == [] and (inbox / "done" / "co.xml").read_bytes() == message


def test_two_workers_polling_one_folder_submit_each_file_exactly_once(tmp_path: Path, runtime: Runtime) -> None:
    """Two inboxes (two `hub serve` workers) poll the same folder while the agency drops files,
    some under a reused name: each file is claimed by one of them and submitted once."""
    moit, inbox, submit = Sender(runtime.config, "VN-MOIT"), tmp_path / "inbox", Recorder(runtime)
    messages = [moit.message() for _ in range(120)]
    boxes = [FolderInbox(inbox, "VN-MOIT", submit, 0.001, nack=runtime.pipeline.nack) for _ in range(2)]
    for box in boxes:
        box.start()
    try:
        for i, m in enumerate(messages):
            name = f"m{i:03}.xml" if i % 4 else "fixed.xml"
            (inbox / f".{name}").write_bytes(m)
            if i % 4 == 0:  # the fixed name: the agency waits until the hub took the previous file
                assert wait_until(lambda: not (inbox / name).exists(), 10)
            (inbox / f".{name}").rename(inbox / name)
        assert wait_until(lambda: len(list((inbox / "done").iterdir())) == len(messages), 30)
    finally:
        for box in boxes:
            box.stop()
    submitted = Counter(a.message_id for a in submit.acks)
    assert submitted == Counter(message_id_of(m) for m in messages)  # every message, once each
    assert all(a.accepted and not a.duplicate for a in submit.acks)
    assert sorted(p.read_bytes() for p in (inbox / "done").iterdir()) == sorted(messages)
    assert list((inbox / "work").iterdir()) == [] and list(inbox.glob("*.xml")) == []


def test_a_file_the_hub_fails_on_waits_in_work_and_the_others_go_on(tmp_path: Path, runtime: Runtime) -> None:
    """A fault inside the hub on one file (not a store outage) must not hold up the files behind
    it, at this poll or the next: that file waits in work/, the others are answered."""
    moit, inbox = Sender(runtime.config, "VN-MOIT"), tmp_path / "inbox"
    inbox.mkdir()
    for name in ("a", "b", "z"):
        (inbox / f"{name}.xml").write_bytes(moit.message())
    bad = (inbox / "a.xml").read_bytes()

    def submit(data: bytes, agency: str | None) -> Ack:
        if data == bad:
            raise RuntimeError("a bug in the hub")
        return runtime.pipeline.submit(data, agency)

    box = FolderInbox(inbox, "VN-MOIT", submit, 0.05, nack=runtime.pipeline.nack)
    assert box.poll_once() == 2 and box.poll_once() == 0
    assert sorted(p.name for p in (inbox / "done").iterdir()) == ["b.xml", "z.xml"]
    assert [p.name.split(".", 1)[1] for p in (inbox / "work").iterdir()] == ["a.xml"]


def test_a_fault_inside_the_hub_is_answered_with_err99_and_the_file_goes_to_rejected(tmp_path: Path, runtime: Runtime,
                                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The pipeline answers its own faults like any refusal: the agency finds an ERR99 answer."""
    moit, inbox = Sender(runtime.config, "VN-MOIT"), tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.xml").write_bytes(moit.message())
    monkeypatch.setattr(type(runtime.pipeline), "_accept", lambda self, *a: 1 / 0)
    assert FolderInbox(inbox, "VN-MOIT", runtime.pipeline.submit, 0.05, nack=runtime.pipeline.nack).poll_once() == 1
    assert [p.name for p in (inbox / "rejected").iterdir()] == ["a.xml"]
    assert b"ERR99" in (inbox / "ack" / "a.ack.xml").read_bytes()
