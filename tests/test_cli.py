"""The command line: send, the inbound folder through `hub serve`, and the demo."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lxml import etree

from hub.config import load_config
from hub.envelope import read_errors, read_header
from hub.receiver import Receiver

from .pki import pki_config
from .store_contract import accepted_and_delivered
from .support import EXAMPLES, REPO, HubProcess, Sender, free_port, wait_until, write_config


def hub(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hub.cli", *args], capture_output=True, text=True, cwd=REPO, timeout=timeout)


def invalid_certificate(folder: Path) -> Path:
    """The example certificate with an HS code that is not one (ERR05 at that element)."""
    document = etree.parse(str(EXAMPLES / "co-certificate.xml"))
    next(e for e in document.iter() if isinstance(e.tag, str) and etree.QName(e).localname == "HSCode").text = "12AB"
    document.write(str(folder / "bad.xml"))
    return folder / "bad.xml"


def test_send_prints_the_receipt_and_a_duplicate_gets_it_again(tmp_path: Path) -> None:
    config = str(write_config(tmp_path))
    mid = "6f1c1f43-3a0e-4c8e-9a52-7d1f4e1b2c3d"
    first = hub("send", "--config", config, "--as", "VN-MOIT", "--to", "TH-ASW", "--message-id", mid, str(EXAMPLES / "co-certificate.xml"))
    assert first.returncode == 0, first.stderr
    receipt = read_header(etree.fromstring(first.stdout.encode()))
    assert receipt.subject.function == "99" and receipt.subject.reference == mid
    assert f"accepted {mid}" in first.stderr
    again = hub("send", "--config", config, "--as", "VN-MOIT", "--to", "TH-ASW", "--message-id", mid, str(EXAMPLES / "co-certificate.xml"))
    assert again.returncode == 0 and "duplicate" in again.stderr and again.stdout == first.stdout
    rows = hub("outbox", "list", "--config", config)
    assert rows.stdout.count(mid) == 2 and "2 row(s)" in rows.stdout


def test_send_of_an_invalid_document_prints_the_nack(tmp_path: Path) -> None:
    config = str(write_config(tmp_path))
    bad = invalid_certificate(tmp_path)
    out = hub("send", "--config", config, "--as", "VN-MOIT", "--to", "TH-ASW", "--document-type", "CO-FORMD", str(bad))
    assert out.returncode == 1 and "rejected: ERR" in out.stderr
    errors = read_errors(etree.fromstring(out.stdout.encode()))
    assert errors[0][0] == "ERR05" and "12AB" in errors[0][1] and errors[0][2]


def test_send_refuses_bad_options_in_one_line(tmp_path: Path) -> None:
    """A message id the envelope cannot carry, a URL that is not one, a hub that does not answer:
    one line each and a non-zero exit, never a traceback."""
    config = str(write_config(tmp_path))
    send = ("send", "--config", config, "--as", "VN-MOIT", "--to", "TH-ASW")
    cases = [
        (["--message-id", "a\x01b"], 2, "--message-id 'a\\x01b' is not a UUID"),
        (["--url", "::nope"], 2, "--url '::nope' is not a valid URL of a hub"),
        (["--url", f"http://127.0.0.1:{free_port()}"], 75, "not sent, try again: the hub at http://127.0.0.1:"),
    ]
    for options, code, said in cases:
        out = hub(*send, *options, str(EXAMPLES / "co-certificate.xml"))
        assert (out.returncode, out.stdout) == (code, ""), (options, out.stderr)
        assert out.stderr.startswith(said) and out.stderr.count("\n") == 1, (options, out.stderr)
    assert "cannot be reached: " in out.stderr and "Connection refused" in out.stderr


def test_send_finds_the_recipient_in_the_routes_or_asks_for_it(tmp_path: Path) -> None:
    """Without --to the recipient is the one the routes that take the document name; routes to
    two recipients make `hub send` ask instead of sending to the hub itself (an ERR01 NACK)."""
    config = str(write_config(tmp_path))
    one = hub("send", "--config", config, "--as", "VN-MOIT", str(EXAMPLES / "co-certificate.xml"))
    assert one.returncode == 0, one.stderr
    assert read_header(etree.fromstring(one.stdout.encode())).subject.function == "99"
    assert "TH-ASW" in hub("outbox", "list", "--config", config).stdout

    two = write_config(tmp_path / "two", extra="""
[[routes]]
name = "formd-to-customs"
from = "VN-MOIT"
to = "VN-CUSTOMS"
document_type = "CO-FORMD"
schema = "co"
deliver = [{ agency = "VN-CUSTOMS", mapping = ["co-to-formd"] }]
""")
    asked = hub("send", "--config", str(two), "--as", "VN-MOIT", str(EXAMPLES / "co-certificate.xml"))
    assert asked.returncode == 2 and "the routes that take it go to TH-ASW or VN-CUSTOMS: give --to" in asked.stderr

    unknown = hub("send", "--config", config, "--as", "VN-MOIT", str(EXAMPLES / "formd.xml"))
    assert unknown.returncode == 2 and "no route takes a FormD from VN-MOIT" in unknown.stderr
    missing = hub("send", "--config", config, "--as", "VN-MOIT", str(tmp_path / "nowhere.xml"))
    assert missing.returncode == 1 and f"error: {tmp_path / 'nowhere.xml'}: No such file or directory" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_resend_of_a_state_with_no_rows_is_not_an_error(tmp_path: Path) -> None:
    config = str(write_config(tmp_path))
    out = hub("outbox", "resend", "--config", config, "--state", "dead")
    assert out.returncode == 0 and "no dead rows: nothing to resend" in out.stdout
    out = hub("outbox", "resend", "--config", config)
    assert out.returncode == 2 and "give row ids, --state dead or --state pending" in out.stderr


def test_trace_shows_the_receipt_given_and_prints_it_byte_for_byte(tmp_path: Path) -> None:
    """The sender who lost its receipt, or a dispute: `hub trace ID --receipt` prints the stored
    receipt exactly as it was given, so its signature still verifies with the hub's certificate."""
    from hub.runtime import Runtime

    path = write_config(tmp_path)
    runtime = Runtime.load(path)
    try:
        sender = Sender(runtime.config, "VN-MOIT")
        accepted = runtime.pipeline.submit(sender.message())
        refused = runtime.pipeline.submit(sender.message(sign=False))
        stored = runtime.store.trace(accepted.message_id).message.receipt  # type: ignore[arg-type, union-attr]
    finally:
        runtime.close()
    assert accepted.accepted and not refused.accepted and stored == accepted.xml
    config, mid = str(path), accepted.message_id
    out = subprocess.run([sys.executable, "-m", "hub.cli", "trace", "--config", config, mid, "--receipt"], capture_output=True, cwd=REPO)
    assert out.returncode == 0 and out.stdout == stored, out.stderr
    (tmp_path / "receipt.xml").write_bytes(out.stdout)
    verified = hub("verify", "--cert", str(tmp_path / "keys" / "hub.crt"), str(tmp_path / "receipt.xml"))
    assert verified.returncode == 0 and "VN-NSW" in verified.stdout, verified.stderr
    trace = hub("trace", "--config", config, mid)
    assert f"answered with a signed receipt ({len(stored)} bytes; `hub trace {mid} --receipt` prints it)" in trace.stdout
    # no receipt for a message refused (its NACK is no receipt) or never seen; --json and --receipt do not go together
    for unknown, said in ((refused.message_id, "the hub did not accept it"), ("00000000-0000-4000-8000-000000000000", "no such message")):
        out = hub("trace", "--config", config, unknown, "--receipt")  # type: ignore[arg-type]
        assert out.returncode == 1 and out.stdout == "" and f"no receipt for {unknown}: {said}" in out.stderr
    assert hub("trace", "--config", config, mid, "--receipt", "--json").returncode == 2


def test_inbound_folder_through_serve(tmp_path: Path) -> None:
    receiver = Receiver(port=free_port()).start()
    try:
        path = write_config(tmp_path, gateway_url=receiver.url)
        inbox = tmp_path / "moit-inbox"
        text = path.read_text().replace(
            f'signing_key = "{tmp_path}/keys/VN-MOIT.key"',
            f'signing_key = "{tmp_path}/keys/VN-MOIT.key"\noptions = {{ inbox = "{inbox}", poll_interval = 0.05 }}',
            1,
        )
        path.write_text(text)
        moit = Sender(load_config(path), "VN-MOIT")
        inbox.mkdir()
        with HubProcess(path) as serving:
            # `hub send --url` says why a running hub refused, as `hub send` says it without --url
            sent = hub("send", "--config", str(path), "--as", "VN-MOIT", "--url", serving.url, str(invalid_certificate(tmp_path)))
            assert sent.returncode == 1 and "HTTP 400" in sent.stderr and "rejected: ERR05: " in sent.stderr and "12AB" in sent.stderr
            (inbox / "good.xml").write_bytes(moit.message())
            (inbox / "unsigned.xml").write_bytes(moit.message(sign=False))
            assert wait_until(lambda: (inbox / "done" / "good.xml").exists() and (inbox / "rejected" / "unsigned.xml").exists(), 20)
            good = read_header(etree.fromstring((inbox / "ack" / "good.ack.xml").read_bytes()))
            assert good.subject.function == "99"
            nack = read_errors(etree.fromstring((inbox / "ack" / "unsigned.ack.xml").read_bytes()))
            assert nack[0][0] == "ERR21"
            assert receiver.wait_for(1, 20)
    finally:
        receiver.stop()


def test_one_shot_commands_are_quiet_about_crls_loaded_but_not_about_crl_problems(tmp_path: Path) -> None:
    """``hub keys`` and ``hub check`` load every CRL once: an INFO line per CRL before the table
    buried the output. A CRL that cannot be read is still said, and ``hub serve`` still records
    each CRL it loads."""
    path, pki = pki_config(tmp_path, moit_crl=f'["{tmp_path}/pki/gov-root.crl", "{tmp_path}/nowhere.crl"]')
    for command in ("keys", "check"):
        out = hub(command, "--config", str(path))
        assert out.returncode == 1, out.stdout + out.stderr
        assert " INFO " not in out.stderr and "loaded" not in out.stderr, out.stderr
        assert f"WARNING hub.trust: CRL {tmp_path}/nowhere.crl: cannot read" in out.stderr, out.stderr
    listed = hub("keys", "--config", str(path)).stdout
    assert "gov-root.crl" in listed and "PROBLEM" in listed and "nowhere.crl" in listed
    with HubProcess(path, "--no-dispatch") as serving:
        assert serving.terminate() == 0
    log = serving.log.read_text()
    assert f"INFO hub.trust: CRL {pki.folder}/gov-root.crl loaded" in log and "WARNING hub.trust: CRL" in log, log[-2000:]


def _audit_log(tmp_path: Path, messages: int) -> tuple[str, Path]:
    """A hub.toml and its SQLite store holding ``messages`` messages, each accepted and delivered
    (audit entries 2i+1 and 2i+2 of m-i)."""
    from hub.store import open_store

    config = write_config(tmp_path)
    loaded = load_config(config)
    store = open_store(loaded.hub.store, loaded.base)
    try:
        accepted_and_delivered(store, messages)
    finally:
        store.close()
    return str(config), tmp_path / "hub.db"


def _sql(db: Path, statement: str) -> None:
    import sqlite3

    with sqlite3.connect(db) as conn:
        conn.execute(statement)
    conn.close()


def test_audit_verify_fails_when_the_end_of_the_log_was_cut(tmp_path: Path) -> None:
    """The review's case: the tail deleted, the chain of what is left still fits; the messages and
    attempts left without their entries are named, one line each, and the exit status is 1."""
    config, db = _audit_log(tmp_path, 20)
    before = hub("audit", "verify", "--config", config)
    assert before.returncode == 0 and before.stdout.startswith("audit chain OK: 40 entries"), before.stdout + before.stderr
    _sql(db, "DELETE FROM audit WHERE seq > 30")  # m-15 .. m-19 cut, received and delivered
    out = hub("audit", "verify", "--config", config)
    assert out.returncode == 1 and out.stdout == "", out.stdout + out.stderr
    lines = out.stderr.splitlines()
    assert lines[0] == "audit chain BROKEN: audit entries missing for 5 messages (first: m-15): the log was cut or entries deleted"
    assert lines[1].startswith("audit chain BROKEN: audit entries missing for 5 delivery attempts (first: message m-15, outbox row ")
    assert lines[1].endswith(" attempt 1): the log was cut or entries deleted") and len(lines) == 2, out.stderr


def test_audit_verify_prints_the_head_and_checks_an_expected_one(tmp_path: Path) -> None:
    from hub.store import open_store

    config, db = _audit_log(tmp_path, 5)
    ok = hub("audit", "verify", "--config", config)
    assert ok.returncode == 0, ok.stderr
    loaded = load_config(config)
    store = open_store(loaded.hub.store, loaded.base)
    entries = list(store.audit_entries())
    store.close()
    assert ok.stdout == f"audit chain OK: 10 entries; head seq 10 hash {entries[-1].hash}\n"
    head = ok.stdout.split("head seq ")[1].strip().replace(" hash ", ":")
    assert head == f"10:{entries[-1].hash}"
    # the head recorded, or any earlier entry, is still there
    for expected in (head, f"4:{entries[3].hash}", f"4:{entries[3].hash.upper()}"):
        out = hub("audit", "verify", "--config", config, "--expect-head", expected)
        assert out.returncode == 0 and out.stdout == ok.stdout, out.stderr
    # entries of no other record (rejections) cut at the end: only the recorded head shows it
    store = open_store(loaded.hub.store, loaded.base)
    from hub.audit import AuditEvent

    store.record(AuditEvent(None, "unknown", "rejected", "ERR02 MALFORMED_XML"))
    store.close()
    head = hub("audit", "verify", "--config", config).stdout.split("head seq ")[1].strip().replace(" hash ", ":")
    assert head.startswith("11:")
    _sql(db, "DELETE FROM audit WHERE seq = 11")
    assert hub("audit", "verify", "--config", config).returncode == 0
    cut = hub("audit", "verify", "--config", config, "--expect-head", head)
    assert cut.returncode == 1 and cut.stdout == "", cut.stdout
    assert cut.stderr == ("audit chain BROKEN: entry 11 (--expect-head) is not in the log, which ends at entry 10: "
                          "the log was cut or rewritten\n")
    # ... and written on since: entry 11 is there again, another one
    store = open_store(loaded.hub.store, loaded.base)
    store.record(AuditEvent(None, "unknown", "rejected", "ERR02 MALFORMED_XML"))
    store.close()
    again = hub("audit", "verify", "--config", config, "--expect-head", head)
    assert again.returncode == 1 and again.stderr.count("\n") == 1, again.stderr
    assert again.stderr.startswith("audit chain BROKEN: entry 11 has hash ") and f"not the expected {head[3:]}" in again.stderr
    # a head that is not SEQ:HASH: one line, exit status 2
    for bad in ("11", "x:" + "0" * 64, "11:abc"):
        out = hub("audit", "verify", "--config", config, "--expect-head", bad)
        assert out.returncode == 2 and out.stderr.startswith(f"error: --expect-head {bad!r} is not SEQ:HASH"), out.stderr
        assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr


def test_demo_on_a_copy_of_the_shipped_config(tmp_path: Path) -> None:
    for name in ("xsd", "mappings", "examples"):
        os.symlink(REPO / name, tmp_path / name)
    text = (REPO / "hub.toml").read_text()
    text = text.replace("127.0.0.1:8480", f"127.0.0.1:{free_port()}").replace("127.0.0.1:8491", f"127.0.0.1:{free_port()}")
    (tmp_path / "hub.toml").write_text(text)
    out = hub("demo", "--config", str(tmp_path / "hub.toml"))
    assert out.returncode == 0, out.stdout + out.stderr
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("demo OK: 1 certificate accepted and delivered to 2/2 destinations")
    assert "retr" in last and "tampered copy rejected" in last
    assert "attempt 1" in out.stdout and "failed, will retry" in out.stdout
    assert (tmp_path / "keys" / "hub.key").stat().st_mode & 0o777 == 0o600
