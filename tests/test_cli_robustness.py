"""The command line and the stores under conditions an operator meets: a store held or stalled by
another process, paths that cannot hold a database, a store that does not exist, a disk that is full
or a file it may not write, a PostgreSQL URL that cannot work, numbers out of range, a listen address
that is not this host's, standard output closed or cut, keys and certificates that do not fit.

Each answer must be one clear sentence and the right exit status: never a traceback, a hang, a
misleading "OK", or a store created where none was meant to be."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from hub.cli import main
from hub.config import load_config
from hub.errors import StoreError, TryAgain
from hub.keys import inventory, issue, write_certificate
from hub.store import open_store

from .support import EXAMPLES, REPO, LockHolder, free_port, write_config

CERTIFICATE = str(EXAMPLES / "co-certificate.xml")


def hub(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run([sys.executable, "-m", "hub.cli", *args], capture_output=True, text=True, cwd=REPO, timeout=60, **kwargs)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One configuration with its keys, made once: each test copies it (key generation is slow)."""
    return write_config(tmp_path_factory.mktemp("base")).parent


def copy_of(made: Path, folder: Path, store: str | None = None, listen: str | None = None) -> Path:
    """``made``'s hub.toml and keys in ``folder``, with another store URL or listen address."""
    shutil.copytree(made / "keys", folder / "keys")
    text = (made / "hub.toml").read_text().replace(str(made), str(folder))
    lines = []
    for line in text.splitlines():
        if store is not None and line.startswith("store = "):
            line = f'store = "{store}"'
        if listen is not None and line.startswith("listen = "):
            line = f'listen = "{listen}"'
        lines.append(line)
    (folder / "hub.toml").write_text("\n".join(lines) + "\n")
    return folder / "hub.toml"


def sent(config: Path) -> str:
    """Sends the example certificate as VN-MOIT in this process; its message id."""
    from hub.runtime import Runtime

    from .support import Sender

    runtime = Runtime.load(config)
    try:
        ack = runtime.pipeline.submit(Sender(runtime.config, "VN-MOIT").message())
        assert ack.accepted
        return ack.message_id
    finally:
        runtime.close()


# -- the store ----------------------------------------------------------------------------------


def test_commands_that_read_do_not_wait_for_a_stalled_writer(made: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """README: "Reads never wait for it". Opening the store took the writer's lock file (and a
    migration that had nothing to do took a write transaction), so while another process held the
    lock, or stalled holding it, `hub outbox list`, `hub trace` and `hub audit verify` failed after
    lock_timeout, `hub serve` would not start, and `hub send` said "error" (exit 1) instead of
    "try again" (75)."""
    config = copy_of(made, tmp_path, store=f"sqlite:///{tmp_path}/hub.db?lock_timeout=1")
    mid = sent(config)
    with LockHolder(tmp_path / "hub.db") as holder:
        holder.stall()
        for args in (["outbox", "list"], ["trace", mid], ["audit", "verify"], ["purge", "--older-than", "1", "--dry-run"]):
            started = time.monotonic()
            assert main([*args, "--config", str(config)]) == 0, capsys.readouterr()
            assert time.monotonic() - started < 0.9, args  # never the lock's 1 s
        out = capsys.readouterr().out
        assert "2 row(s)" in out and f"message {mid} from VN-MOIT" in out and "audit chain OK: 3 entries" in out
        loaded = load_config(config)
        open_store(loaded.hub.store, loaded.base, wait=False).close()  # `hub serve` starts (and answers 503 until it is free)
        assert main(["send", "--as", "VN-MOIT", "--config", str(config), CERTIFICATE]) == 75
        assert "not accepted, try again: the store is busy" in capsys.readouterr().err


def test_store_paths_that_cannot_hold_a_database_are_said_so(made: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A folder where the file should be ("unable to open database file"), a file in the way of its
    folder ("hub.toml: File exists"), a NUL in the path (a ValueError traceback)."""
    (tmp_path / "a").mkdir()
    config = copy_of(made, tmp_path / "a", store="sqlite:///var")
    (tmp_path / "a" / "var").mkdir()
    assert main(["check", "--config", str(config)]) == 1
    assert f"{config}: hub.store: cannot open the SQLite store {tmp_path}/a/var: it is a folder; name a database file in it" in capsys.readouterr().err
    (tmp_path / "b").mkdir()
    config = copy_of(made, tmp_path / "b", store="sqlite:///hub.toml/hub.db")
    assert main(["store", "migrate", "--config", str(config)]) == 1
    assert capsys.readouterr().err == f"error: cannot open the SQLite store {config}/hub.db: {config} is a file, not a folder\n"
    (tmp_path / "c").mkdir()
    config = copy_of(made, tmp_path / "c", store="sqlite:///x\\u0000.db")
    assert main(["store", "migrate", "--config", str(config)]) == 2
    assert "hub.store: the SQLite store's path holds a NUL character" in capsys.readouterr().err


def test_commands_that_only_look_do_not_create_a_missing_store(made: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A store URL naming the wrong file (or a volume not mounted) made a new empty database, then
    answered "no message", "0 row(s)" and even "audit chain OK: 0 entries"."""
    config = copy_of(made, tmp_path, store="sqlite:///elsewhere/hub.db")
    for args in (["trace", "6f1c1f43-3a0e-4c8e-9a52-7d1f4e1b2c3d"], ["outbox", "list"], ["outbox", "show", "1"], ["audit", "verify"]):
        assert main([*args, "--config", str(config)]) == 1, args
        said = capsys.readouterr()
        assert said.err.startswith(f"error: no SQLite store at {tmp_path}/elsewhere/hub.db: nothing was ever recorded there"), said
        assert "OK" not in said.out
    assert not (tmp_path / "elsewhere").exists()
    assert main(["store", "migrate", "--config", str(config)]) == 0  # creates it, as `hub serve` does
    assert main(["audit", "verify", "--config", str(config)]) == 0


def test_sqlite_faults_say_which_store_and_what_happened(tmp_path: Path) -> None:
    """A full disk or a file it may not write was "the store is busy or unavailable" without the
    store's path; a damaged file "store operation failed"."""
    from hub.store.sqlite import _store_error

    def error(name: str, text: str, kind: type = sqlite3.OperationalError) -> Exception:
        exc = kind(text)
        exc.sqlite_errorname = name  # as sqlite3 sets it
        return _store_error(exc, "/srv/hub.db")

    full = error("SQLITE_FULL", "database or disk is full")
    assert isinstance(full, TryAgain) and str(full) == "the store /srv/hub.db: its disk is full: database or disk is full"
    readonly = error("SQLITE_READONLY", "attempt to write a readonly database")
    assert isinstance(readonly, TryAgain) and str(readonly).startswith("the store /srv/hub.db: it cannot be written (check the owner")
    damaged = error("SQLITE_CORRUPT", "database disk image is malformed", sqlite3.DatabaseError)
    assert isinstance(damaged, StoreError) and str(damaged) == "the store /srv/hub.db: database disk image is malformed"


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) drops the root's right to write any file")
def test_hub_serve_refuses_a_store_it_cannot_write(made: Path, tmp_path: Path) -> None:
    """SQLite opens a file it may not write read-only without a word: `hub serve` started, said
    "ok" on /health and answered every sender "try again" for good."""
    config = copy_of(made, tmp_path, listen=f"127.0.0.1:{free_port()}")
    assert main(["store", "migrate", "--config", str(config)]) == 0
    os.chown(tmp_path / "hub.db", 65534, 65534)
    (tmp_path / "hub.db").chmod(0o444)
    as_user = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--", sys.executable, "-m", "hub.cli"]
    out = subprocess.run([*as_user, "serve", "--config", str(config)], capture_output=True, text=True, cwd=REPO, timeout=30)
    assert out.returncode == 1, out.stderr
    assert out.stderr.startswith(f"error: the SQLite store {tmp_path}/hub.db cannot be written by this process "
                                 "(the file is not writable by this process)"), out.stderr
    looked = subprocess.run([*as_user, "outbox", "list", "--config", str(config)], capture_output=True, text=True, cwd=REPO, timeout=30)
    assert (looked.returncode, looked.stdout) == (0, "0 row(s)\n"), looked.stderr  # reading it is still allowed


def test_postgresql_urls_that_cannot_work_are_said_at_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An unreachable server, or an option libpq refuses, took the pool's 5 s, logged each of its
    attempts (several lines each), and then said only "pool initialization incomplete after 5.0 sec";
    a server that is down is "try again" (`hub send` exits 75), a URL that cannot work is not."""
    closed = free_port()
    started = time.monotonic()
    with pytest.raises(TryAgain) as down:
        open_store(f"postgresql://hub@127.0.0.1:{closed}/hub?connect_timeout=3", tmp_path)
    assert f'port {closed} failed: Connection refused' in str(down.value) and "pool initialization" not in str(down.value)
    with pytest.raises(StoreError) as bad:
        open_store("postgresql://hub@127.0.0.1:99999/hub", tmp_path)
    assert not isinstance(bad.value, TryAgain) and 'invalid port number: "99999"' in str(bad.value)
    assert time.monotonic() - started < 3
    assert not [r for r in caplog.records if r.name.startswith("psycopg")]


# -- arguments ----------------------------------------------------------------------------------


def test_numbers_out_of_range_are_usage_errors_not_tracebacks(made: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A row id beyond SQLite's integers overflowed into a traceback; --limit 0 listed nothing and
    said "--limit shows more", -1 listed everything; `hub keys init --days -1` and `--days 99999999`
    raised out of cryptography and datetime, --days 0 wrote certificates already expired;
    `hub serve --workers 0` ran one worker and --workers 100000 forked until the machine gave in."""
    config = copy_of(made, tmp_path)
    shutil.rmtree(tmp_path / "keys")  # so that `keys init` has something to make
    huge = "99999999999999999999999"
    cases = [
        ["outbox", "show", huge], ["outbox", "resend", huge], ["outbox", "show", "0"],
        ["outbox", "list", "--limit", "0"], ["outbox", "list", "--limit", "-1"], ["outbox", "list", "--limit", huge],
        ["keys", "init", "--days", "-1"], ["keys", "init", "--days", "0"], ["keys", "init", "--days", "99999999"],
        ["serve", "--workers", "0"], ["serve", "--workers", "100000"],
    ]
    said = []
    for args in cases:
        with pytest.raises(SystemExit) as usage:
            main([*args, "--config", str(config)])
        assert usage.value.code == 2, args
        said.append(capsys.readouterr().err)
        assert "is not " in said[-1], (args, said[-1])
    assert not (tmp_path / "keys").exists()
    (tmp_path / "keys").write_text("a file where the keys' folder goes")
    assert main(["keys", "init", "--config", str(config)]) == 2
    assert f"{tmp_path}/keys is a file, not a folder" in capsys.readouterr().err  # was "error: ...: File exists"
    assert "argument --workers: 100000 is not a number of worker processes (from 1 to 256)" in said[-1]
    assert "argument --days: 0 is not a number of days a certificate is valid (from 1 to 36500)" in said[7]


def test_an_agency_that_does_not_exist_is_the_arguments_mistake(made: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`hub send --as`, `hub verify --agency` said "configuration error: hub.toml: agencies: no
    agency ..." (the configuration is fine), and `hub trace --receipt --sender` with an agency that
    does not exist said "the hub did not accept it"."""
    config = copy_of(made, tmp_path)
    mid = sent(config)
    for args in (["send", "--as", "VN-MOTI", CERTIFICATE], ["verify", "--agency", "VN-MOTI", CERTIFICATE],
                 ["trace", mid, "--receipt", "--sender", "VN-MOTI"]):
        assert main([*args, "--config", str(config)]) == 2, args
        option = args[1] if args[0] != "trace" else "--sender"
        assert capsys.readouterr().err == (f"{option} 'VN-MOTI': no such agency in {config}; did you mean 'VN-MOIT'? "
                                           "(its agencies: TH-ASW, VN-CUSTOMS, VN-MARD, VN-MOIT)\n")


def test_a_row_named_twice_is_resent_once(made: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = copy_of(made, tmp_path)
    mid = sent(config)
    assert main(["outbox", "resend", "1", "1", "--config", str(config)]) == 0
    assert capsys.readouterr().out.count("row 1 to TH-ASW: due now") == 1
    loaded = load_config(config)
    store = open_store(loaded.hub.store, loaded.base)
    try:
        assert [e.event for e in store.trace(mid).audit].count("resend") == 1
    finally:
        store.close()


def test_listen_addresses_that_cannot_work(made: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Port 0 listened on a port nobody was told of (and logged ":0"), 99999 and an address that is
    not this host's were tracebacks out of bind(), other scripts' digits were taken as a port, and
    an empty host listened on every interface."""
    for i, (listen, said) in enumerate([
        ("127.0.0.1:0", "the port must be from 1 to 65535, not 0"),
        ("127.0.0.1:99999", "the port must be from 1 to 65535, not 99999"),
        ("127.0.0.1:\uff18\uff14\uff18\uff10", "must be HOST:PORT"),
        (":8480", "give the host to listen on (e.g. 127.0.0.1:8480)"),
    ]):
        (tmp_path / str(i)).mkdir()
        config = copy_of(made, tmp_path / str(i), listen=listen)
        assert main(["check", "--config", str(config)]) == 1
        assert f"hub.listen: {said}" in capsys.readouterr().err, listen
    (tmp_path / "x").mkdir()
    config = copy_of(made, tmp_path / "x", listen="192.0.2.1:8480")  # TEST-NET-1: never an address of this host
    assert main(["serve", "--config", str(config)]) == 1
    assert capsys.readouterr().err == (f"error: cannot listen on 192.0.2.1:8480 ([hub] listen in {config}): that address is not "
                                       "one of this host's (Cannot assign requested address)\n")


def test_closed_or_cut_standard_output(made: Path, tmp_path: Path) -> None:
    """`hub outbox list | head -1` ended in a BrokenPipeError traceback (exit 1 or 120); with
    standard output closed, `hub send` recorded the message, then died on an AttributeError (exit
    1) before saying so, and `hub translate` died the same way (or, printing, said "translated" and
    exited 0 with the translation written nowhere)."""
    config = copy_of(made, tmp_path)
    for _ in range(2):
        sent(config)
    cut = subprocess.Popen([sys.executable, "-m", "hub.cli", "outbox", "list", "--config", str(config)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    assert cut.stdout is not None and cut.stderr is not None
    cut.stdout.close()  # the reader is gone before the first line
    assert cut.wait(60) == 0
    assert cut.stderr.read() == b""
    cut.stderr.close()
    closed = hub("send", "--as", "VN-MOIT", "--config", str(config), CERTIFICATE, preexec_fn=lambda: os.close(1))
    assert closed.returncode == 0, closed.stderr
    assert "accepted " in closed.stderr and "standard output was closed: the receipt was not printed (`hub trace" in closed.stderr
    assert "Traceback" not in closed.stderr
    mid = closed.stderr.split("accepted ", 1)[1].split()[0]
    assert hub("trace", mid, "--receipt", "--config", str(config)).stdout.startswith("<?xml")
    lost = hub("translate", "--mapping", "co-to-formd", "--config", str(config), CERTIFICATE, preexec_fn=lambda: os.close(1))
    assert lost.returncode == 1 and "standard output was closed: " in lost.stderr and "Traceback" not in lost.stderr, lost.stderr


# -- keys and certificates ----------------------------------------------------------------------


def test_hub_keys_judges_each_key_by_the_certificate_it_goes_with(made: Path, tmp_path: Path) -> None:
    """The key was "ok" if it matched ANY certificate of the file, while the hub signs with the
    first (`hub check` refused what `hub keys` passed); a certificate file that cannot be read was
    put down as the key's own problem; a certificate not valid yet was "WARNING: expires in N days"
    (exit 0) though every receiver refuses it until then."""
    config = copy_of(made, tmp_path)
    keys = tmp_path / "keys"
    now = datetime.now(timezone.utc)
    (keys / "both.crt").write_bytes((keys / "VN-MOIT.crt").read_bytes() + (keys / "hub.crt").read_bytes())
    text = config.read_text()
    config.write_text(text.replace(f'certificate = "{keys}/hub.crt"', f'certificate = "{keys}/both.crt"'))
    entry = next(e for e in inventory(load_config(config)) if e.role == "signing key" and e.owner == "hub")
    assert entry.status(now, 30) == "PROBLEM"
    assert entry.problem == (f"it belongs to CN=Test hub,O=VN-NSW,C=VN, not to the first certificate in {keys}/both.crt "
                             "(CN=Ministry of Industry and Trade,O=VN-MOIT,C=VN), the one that goes with it")
    config.write_text(text.replace(f'certificate = "{keys}/hub.crt"', f'certificate = "{keys}/hub.key"'))  # a key where a certificate goes
    entries = inventory(load_config(config))
    key = next(e for e in entries if e.role == "signing key" and e.owner == "hub")
    cert = next(e for e in entries if e.role == "signing certificate")
    assert key.problem is None and key.status(now, 30) == "ok"
    assert cert.status(now, 30) == "PROBLEM" and cert.problem == "the file holds a PEM PRIVATE KEY, not a certificate"
    from cryptography.hazmat.primitives import serialization

    hub_key = serialization.load_pem_private_key((keys / "hub.key").read_bytes(), None)
    write_certificate(keys / "later.crt", issue(hub_key, "VN-NSW later", days=30, not_before=now + timedelta(days=3)))  # type: ignore[arg-type]
    config.write_text(text.replace(f'certificate = "{keys}/hub.crt"', f'certificate = "{keys}/later.crt"'))
    later = next(e for e in inventory(load_config(config)) if e.role == "signing certificate")
    assert later.status(now, 30) == "PROBLEM" and later.concern(now).startswith("not valid yet: valid from ")


def test_hub_sign_says_when_the_certificate_is_not_valid_now(made: Path, tmp_path: Path) -> None:
    """It signed with an expired certificate and said only "signed": every receiver refuses that."""
    from cryptography.hazmat.primitives import serialization

    key = made / "keys" / "hub.key"
    old = tmp_path / "old.crt"
    private = serialization.load_pem_private_key(key.read_bytes(), None)
    write_certificate(old, issue(private, "old", days=1, not_before=datetime.now(timezone.utc) - timedelta(days=10)))  # type: ignore[arg-type]
    out = hub("sign", "--key", str(key), "--cert", str(old), CERTIFICATE, str(tmp_path / "signed.xml"))
    assert out.returncode == 0 and (tmp_path / "signed.xml").exists()
    assert f"warning: {old}: the certificate is not valid now (valid " in out.stderr and "a receiver refuses this signature (ERR24)" in out.stderr
