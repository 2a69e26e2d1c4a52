"""Retention: `hub purge`, `[retention] delivered_days` and the daily job of `hub serve`, and what a
purged message still answers (its original receipt) and shows (purged, not an empty payload)."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import pytest
from lxml import etree

from hub.cli import main
from hub.config import load_config
from hub.envelope import read_errors
from hub.errors import ConfigError
from hub.retention import RetentionJob
from hub.runtime import Runtime
from hub.store import open_store
from hub.tracing import trace_dict, trace_text

from .store_contract import BOTH_DELIVERED, DAY, acceptance, settle
from .support import EXAMPLES, Sender, wait_until, write_config


def test_a_purged_message_sent_again_through_the_pipeline_gets_its_original_receipt(tmp_path: Path) -> None:
    runtime = Runtime.load(write_config(tmp_path))
    try:
        moit = Sender(runtime.config, "VN-MOIT")
        data = moit.message()
        first = runtime.pipeline.submit(data)
        assert first.accepted and not first.duplicate
        settle(runtime.store, {first.message_id: BOTH_DELIVERED})
        assert runtime.store.purge(time.time() + 1).rows == 2
        again = runtime.pipeline.submit(data)
        assert again.accepted and again.duplicate and again.xml == first.xml
        amended = (EXAMPLES / "co-certificate.xml").read_bytes().replace(b"</", b" (amended)</", 1)
        reused = runtime.pipeline.submit(moit.message(amended, message_id=first.message_id))  # the digest stayed
        assert not reused.accepted and [code for code, _, _ in read_errors(etree.fromstring(reused.xml))] == ["ERR60"]
        rows = runtime.store.rows()
        assert len(rows) == 2 and all(r.payload == b"" and r.purged_at is not None for r in rows)
        trace = runtime.store.trace(first.message_id)
        assert trace_text(trace, first.message_id).count("payload purged by retention at ") == 2
        assert all(d["payload_purged_at"] is not None for d in trace_dict(trace)["deliveries"])
    finally:
        runtime.close()


def _old_deliveries(tmp_path: Path) -> str:
    """A hub.toml whose store holds m-0 and m-1, received ten days ago and delivered to both destinations."""
    config = write_config(tmp_path)
    loaded = load_config(config)
    store = open_store(loaded.hub.store, loaded.base)
    try:
        for message_id in ("m-0", "m-1"):
            store.accept(acceptance(message_id, at=time.time() - 10 * DAY))
        settle(store, {"m-0": BOTH_DELIVERED, "m-1": BOTH_DELIVERED})
    finally:
        store.close()
    return str(config)


def test_hub_purge_dry_run_then_for_real_and_a_purged_row_is_shown_and_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _old_deliveries(tmp_path)
    freed = 2 * len(b"payload-TH-ASW-m-0") + 2 * len(b"payload-VN-CUSTOMS-m-0")
    assert main(["purge", "--older-than", "0", "--config", config]) == 2
    assert "--older-than 0: give a number of days of at least 1" in capsys.readouterr().err

    assert main(["purge", "--older-than", "11", "--config", config]) == 0  # older than the messages: nothing
    assert capsys.readouterr().out.splitlines()[0].startswith("outbox rows purged: 0 ")

    assert main(["purge", "--older-than", "1", "--dry-run", "--config", config]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"outbox rows that would be purged: 4 \(delivered, of messages received before \S+Z\)", lines[0])
    assert lines[1:] == [f"payload bytes that would be freed: {freed}",
                         "messages that would be affected: 2 (their receipts, digests, attempts and audit entries are kept)",
                         "dry run: nothing was changed"]

    assert main(["purge", "--older-than", "1", "--config", config]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("outbox rows purged: 4 (") and lines[1] == f"payload bytes freed: {freed}"
    assert lines[2].startswith("messages affected: 2 ") and lines[3].startswith("SQLite keeps the freed pages in the database file")

    assert main(["outbox", "show", "1", "--payload", "--config", config]) == 0
    shown = capsys.readouterr().out
    assert re.search(r"^ +payload: purged by retention at \d{4}-\d\d-\d\dT", shown, re.M) and "payload-" not in shown
    assert main(["outbox", "resend", "--force", "1", "--config", config]) == 1
    assert re.fullmatch(r"row 1: outbox row 1 cannot be resent: its payload was purged by retention on \d{4}-\d\d-\d\d\n",
                        capsys.readouterr().err)
    assert main(["trace", "m-0", "--config", config]) == 0
    assert capsys.readouterr().out.count("payload purged by retention at ") == 2
    assert main(["audit", "verify", "--config", config]) == 0
    # 2 received, 4 delivered, and one purged entry for the one batch that purged rows
    assert capsys.readouterr().out.startswith("audit chain OK: 7 entries")


def test_a_purge_older_than_the_calendar_purges_nothing_and_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Days beyond the epoch (or beyond a float) purge nothing; the report, which says when its
    cut-off is, is still printed (a cut-off before the year 1 raised ValueError, or OverflowError)."""
    config = _old_deliveries(tmp_path)
    for days in ("1000000", str(10**400)):
        assert main(["purge", "--older-than", days, "--config", config]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0] == "outbox rows purged: 0 (delivered, of messages received before 1970-01-01T00:00:00.000Z)", days
    loaded = load_config(config)
    store = open_store(loaded.hub.store, loaded.base)
    try:
        report = RetentionJob(store, 1_000_000, "VN-NSW").run()  # [retention] delivered_days takes any int
        assert report is not None and report.rows == 0
    finally:
        store.close()


def test_the_retention_section_is_checked(tmp_path: Path) -> None:
    assert load_config(write_config(tmp_path)).retention.delivered_days == 0  # by default: kept forever
    assert load_config(write_config(tmp_path, extra="[retention]\ndelivered_days = 30\n")).retention.delivered_days == 30
    for given, says in (("delivered_day = 30", "retention.delivered_day: unknown key; did you mean 'delivered_days'?"),
                        ("delivered_days = -1", "retention.delivered_days: must be at least 0"),
                        ('delivered_days = "30"', "retention.delivered_days: must be int, not '30'")):
        with pytest.raises(ConfigError) as caught:
            write_config(tmp_path, extra=f"[retention]\n{given}\n")
            load_config(tmp_path / "hub.toml")
        assert says in str(caught.value), given


def test_the_daily_job_purges_and_logs_one_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = load_config(_old_deliveries(tmp_path))
    store = open_store(config.hub.store, config.base)
    job = RetentionJob(store, 1, "VN-NSW", first_run_after=0.05)
    caplog.set_level(logging.INFO, logger="hub.retention")
    try:
        job.start()
        assert wait_until(lambda: any(r.purged_at for r in store.rows()), 10)
        assert wait_until(lambda: caplog.records, 5)
    finally:
        job.stop()
        store.close()
    (record,) = caplog.records
    assert record.levelno == logging.INFO
    assert re.fullmatch(r"retention purged the payloads of 4 delivered outbox row\(s\) of 2 message\(s\) received before \S+: \d+ bytes",
                        record.getMessage())
