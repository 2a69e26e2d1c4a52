"""`hub trace` numbers every attempt of a row, the ones that recorded no outcome too: a ``hub
serve`` killed while a partner holds a delivery leaves attempt 1 without an outcome; after the
restart the message goes again under the same message id, and the trace lists attempt 1 as
interrupted and attempt 2 as delivered (the store's side: tests/store_contract.py)."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from hub.config import load_config
from hub.receiver import Receiver
from hub.store import State, open_store
from hub.store.sqlite import MIGRATIONS
from hub.tracing import trace_dict

from .support import REPO, HubProcess, Sender, free_port, message_id_of, sqlite_at_schema, wait_until, write_config


def hub_trace(config: Path, *args: str) -> str:
    """`hub trace ARGS` as an operator runs it; its standard output."""
    done = subprocess.run([sys.executable, "-m", "hub.cli", "trace", *args, "--config", str(config)], capture_output=True,
                          text=True, cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def row_lines(trace: str, destination: str) -> list[str]:
    """The lines of one destination's row in `hub trace` text, from its own line on."""
    lines = [line.strip() for line in trace.splitlines()]
    start = next(i for i, line in enumerate(lines) if line.startswith(f"-> {destination} "))
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("-> ")), len(lines))
    return lines[start:end]


def test_a_delivery_cut_short_by_sigkill_is_listed_as_interrupted_and_the_redelivery_as_the_next_attempt(tmp_path: Path) -> None:
    taken, gate = threading.Event(), threading.Event()

    def hang(sender: str, message_id: str, body: bytes) -> None:  # takes the message, then does not answer
        taken.set()
        gate.wait(20)

    receiver = Receiver(port=free_port())
    receiver.on_receive = hang
    receiver.start()
    config = write_config(tmp_path, gateway_url=receiver.url, lease_seconds=8.0)
    data = Sender(load_config(config), "VN-MOIT").message()
    mid = message_id_of(data)
    store = open_store(load_config(config).hub.store, tmp_path)
    customs_state = lambda: next((r.state for r in store.rows(destination="VN-CUSTOMS") if r.message_id == mid), None)  # noqa: E731
    hub = HubProcess(config).start()
    try:
        assert hub.post(data).status_code == 200
        assert taken.wait(15), "the partner never got the message"
        assert wait_until(lambda: customs_state() is State.DELIVERED, 15)  # the file delivery ends before the kill
        hub.kill()  # SIGKILL during the delivery: leased, counted, no outcome recorded
        gate.set()
        under_way = row_lines(hub_trace(config, mid), "TH-ASW")
        assert under_way[0].endswith(": LEASED") and re.fullmatch(r"attempt 1: under way \(leased by \S+ until \S+Z\)", under_way[1]), under_way
        assert len(under_way) == 2, under_way
        hub = HubProcess(config).start()  # takes the row once the dead node's lease has run out
        assert wait_until(lambda: "DELIVERED" in row_lines(hub_trace(config, mid), "TH-ASW")[0], 40)
        served = httpx.get(f"{hub.url}/messages/{mid}", timeout=10).json()  # GET /messages/{id}: the same list
    finally:
        gate.set()
        if hub.proc is not None and hub.proc.poll() is None:
            hub.terminate()
        receiver.stop()
        store.close()
    lines = row_lines(hub_trace(config, mid), "TH-ASW")
    assert len(lines) == 3, lines
    assert lines[1] == ("attempt 1: interrupted: no outcome was recorded (the node stopped or lost its lease during the delivery); "
                        "the message was sent again with the same message id")
    assert re.fullmatch(r"attempt 2 at \S+Z \(\d+ ms\): delivered: .*", lines[2]), lines
    # the other destination's delivery had ended before the kill: its one attempt, as it was
    assert re.fullmatch(r"attempt 1 at \S+Z \(\d+ ms\): delivered: .*", row_lines(hub_trace(config, mid), "VN-CUSTOMS")[1])
    for listed in (json.loads(hub_trace(config, mid, "--json")), served):
        (th,) = [d for d in listed["deliveries"] if d["destination"] == "TH-ASW"]
        assert [(a["number"], a["outcome"]) for a in th["attempts"]] == [(1, "interrupted"), (2, "delivered")]
        assert th["attempts"][0]["detail"].startswith("interrupted: no outcome was recorded")
    # the partner got it twice, both times under the message's own id (it discards the second)
    assert sorted(n for (_, m), n in receiver.deliveries.items() if m == mid) == [2]


def test_attempts_numbered_before_schema_5_keep_their_numbers_and_the_next_goes_after_them(tmp_path: Path) -> None:
    """A store of schema 4 whose row was resent (its count started again at 0 while the numbers went
    on): after the migration the row's next attempt is numbered after its last one, and no number
    is taken for an interrupted attempt."""
    db = sqlite_at_schema(tmp_path / "hub.db", 4)
    db.execute("INSERT INTO messages (sender, message_id, received_at, document_type, function, route, receipt, conversation) "
               "VALUES ('VN-MOIT', 'old-1', 1.0, 'CO-FORMD', '9', 'r', x'00', 'old-1')")
    db.execute("INSERT INTO outbox (message_id, sender, destination, route, state, attempts, next_attempt_at, created_at, "
               "updated_at, payload) VALUES ('old-1', 'VN-MOIT', 'TH-ASW', 'r', 'pending', 1, 1.0, 1.0, 3.0, x'ab')")
    db.executemany("INSERT INTO attempts (row_id, number, owner, started_at, finished_at, outcome, detail) VALUES (1, ?, 'old', ?, ?, ?, ?)",
                   [(1, 1.0, 1.1, "dead", "HTTP 400"), (2, 2.0, 2.1, "pending", "HTTP 503")])
    db.close()
    store = open_store("sqlite:///hub.db", tmp_path)
    try:
        assert store.migrate() == MIGRATIONS[-1][0]
        (row,) = store.lease("node", "TH-ASW", 1, time.time(), 30)
        assert (row.attempts, row.attempt_base) == (2, 0)
        store.complete(row.id, "node", State.DELIVERED, "HTTP 200", 4.0, 4.1, attempt=row.attempts)
        (th,) = trace_dict(store.trace("old-1"))["deliveries"]
        assert [(a["number"], a["outcome"]) for a in th["attempts"]] == [(1, "dead"), (2, "pending"), (3, "delivered")]
    finally:
        store.close()
