"""What the tests share: a hub configuration in a temporary folder, signing as an agency,
and a real ``hub serve`` process on loopback."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx
from lxml import etree

from hub.client import Outgoing, agency_signer, envelope_for, recipient_for, signed_bytes
from hub.config import Config, load_config
from hub.demo import tampered as tampered  # re-exported for the tests
from hub.keys import init_keys
from hub.pipeline import party_of

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
EXAMPLES = REPO / "examples"
HOSTILE = SHARED / "conformance" / "hostile-xml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(
    folder: Path,
    *,
    gateway_url: str = "http://127.0.0.1:9/inbox",
    port: int | None = None,
    max_attempts: int = 6,
    initial_delay: float = 0.05,
    max_delay: float = 0.5,
    max_bytes: int = 1_000_000,
    lease_seconds: float = 5.0,
    concurrency: int = 4,
    extra: str = "",
    store: str | None = None,
) -> Path:
    """A small topology: VN-MOIT sends certificates of origin, TH-ASW (HTTP) and VN-CUSTOMS (file)
    receive them; keys are generated into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "hub.toml"
    path.write_text(
        f"""
[hub]
party_id = "VN-NSW"
name = "Test hub"
country = "VN"
store = "{store or f'sqlite:///{folder}/hub.db'}"
listen = "127.0.0.1:{port or free_port()}"
key = "{folder}/keys/hub.key"
certificate = "{folder}/keys/hub.crt"
envelope_schema = "{REPO}/xsd/envelope/envelope.xsd"
max_message_bytes = {max_bytes}
max_depth = 40

[dispatcher]
concurrency = {concurrency}
poll_interval = 0.05
lease_seconds = {lease_seconds}
delivery_timeout = 3

[retry]
max_attempts = {max_attempts}
initial_delay = {initial_delay}
max_delay = {max_delay}
jitter = 0.1

[schemas]
co = "{REPO}/xsd/national/co.xsd"
formd = "{REPO}/xsd/formd/formd.xsd"
wco-dec = "{REPO}/xsd/wco/dec-dms-metadata.xsd"

[mappings.co-to-formd]
stylesheet = "{REPO}/mappings/co-to-formd.xsl"
output = "formd"

[mappings.formd-to-wco]
stylesheet = "{REPO}/mappings/formd-to-wco-dec.xsl"
output = "wco-dec"

[[agencies]]
id = "VN-MOIT"
name = "Ministry of Industry and Trade"
country = "VN"
adapter = "file"
endpoint = "{folder}/moit-outbox"
certificates = ["{folder}/keys/VN-MOIT.crt"]
signing_key = "{folder}/keys/VN-MOIT.key"

[[agencies]]
id = "VN-MARD"
name = "Ministry of Agriculture"
country = "VN"
adapter = "file"
endpoint = "{folder}/mard-outbox"
certificates = ["{folder}/keys/VN-MARD.crt"]
signing_key = "{folder}/keys/VN-MARD.key"

[[agencies]]
id = "TH-ASW"
name = "Thailand gateway"
country = "TH"
adapter = "http"
endpoint = "{gateway_url}"

[[agencies]]
id = "VN-CUSTOMS"
name = "Customs"
country = "VN"
adapter = "file"
endpoint = "{folder}/customs-inbox"

[[routes]]
name = "formd-to-thailand"
from = "VN-MOIT"
to = "TH-ASW"
document_type = "CO-FORMD"
schema = "co"
deliver = [
  {{ agency = "TH-ASW", mapping = ["co-to-formd"] }},
  {{ agency = "VN-CUSTOMS", mapping = ["co-to-formd", "formd-to-wco"] }},
]
{extra}
""",
        encoding="utf-8",
    )
    init_keys(load_config(path))
    return path


class Sender:
    """Signs documents as an agency of a test configuration."""

    def __init__(self, config: Config, agency_id: str) -> None:
        self.config = config
        self.agency = config.agencies[agency_id]
        self.signer = agency_signer(self.agency)

    def envelope(self, document: Path | bytes | etree._Element = EXAMPLES / "co-certificate.xml", *, to: str = "TH-ASW",
                 document_type: str = "CO-FORMD", message_id: str | None = None) -> etree._Element:
        if isinstance(document, Path):
            document = document.read_bytes()
        if isinstance(document, bytes):
            document = etree.fromstring(document)
        return envelope_for(document, party_of(self.agency), recipient_for(self.config, to), Outgoing(document_type), message_id)

    def message(self, *args, sign: bool = True, **kwargs) -> bytes:  # type: ignore[no-untyped-def]
        return signed_bytes(self.envelope(*args, **kwargs), self.signer if sign else None)


def message_id_of(data: bytes) -> str:
    return etree.fromstring(data).findtext(".//{urn:sw-hub:envelope:1}messageId")  # type: ignore[return-value]


class HubProcess:
    """A real ``hub serve`` on loopback, started and stopped by the test."""

    def __init__(self, config_path: Path, *args: str) -> None:
        self.config_path = config_path
        self.args = args  # more options of `hub serve`, e.g. "--workers", "2"
        config = load_config(config_path)
        self.url = f"http://{config.hub.listen_host}:{config.hub.listen_port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = config_path.parent / "serve.log"

    def start(self, timeout: float = 20.0, healthy: bool = True) -> HubProcess:
        """Returns once /health answers 200 (``healthy=False``: once it answers at all)."""
        logfile = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hub.cli", "serve", "--config", str(self.config_path), *self.args],
            stdout=logfile, stderr=subprocess.STDOUT, cwd=REPO,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hub serve exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200 or not healthy:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"hub serve did not come up: {self.log.read_text()[-2000:]}")

    def post(self, data: bytes, client: httpx.Client | None = None) -> httpx.Response:
        return (client or httpx).post(self.url + "/messages", content=data, timeout=30)  # type: ignore[union-attr]

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def __enter__(self) -> HubProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def wait_until(condition, timeout: float, interval: float = 0.05) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())




class LockHolder:
    """Another process holding the SQLite store's writer lock file (``hub.db-writer.lock``), as a
    ``hub`` process does during its transaction; ``stall()`` stops it there (SIGSTOP), as a
    process swapped out or stopped in a debugger would be."""

    SCRIPT = (
        "import fcntl, os, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('locked', flush=True)\n"
        "time.sleep(float(sys.argv[2]))\n"
    )

    def __init__(self, database: Path, seconds: float = 60.0, within: float = 20.0) -> None:
        """Returns once the process holds the lock; fails if it has not got it ``within`` seconds."""
        import select

        self.proc = subprocess.Popen([sys.executable, "-c", self.SCRIPT, f"{database}-writer.lock", str(seconds)],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], within)
        if not ready:
            self.end()
            raise AssertionError(f"another process did not get the lock file within {within} s")
        assert self.proc.stdout.readline().strip() == "locked"

    def stall(self) -> LockHolder:
        self.proc.send_signal(signal.SIGSTOP)
        return self

    def end(self) -> None:
        """Kills it: the kernel lets its lock go."""
        self.proc.send_signal(signal.SIGCONT)
        self.proc.kill()
        self.proc.wait(10)

    def __enter__(self) -> LockHolder:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.end()


def skip_unless_present(path: Path, what: str) -> None:
    """Skips a test whose material is missing; under CI=true a missing part is a failure."""
    if path.exists():
        return
    import pytest

    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} not found at {path}; CI=true, so this is a failure")
    pytest.skip(f"{what} not found at {path}")


@contextmanager
def mounted_tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """``folder`` (created) with a tmpfs of ``size`` (``mount -o size=``) on it, unmounted afterwards
    whatever happens. Mounting needs root: skipped where it cannot be done, except under CI=true,
    where that is a failure."""
    import pytest

    folder.mkdir(parents=True, exist_ok=True)
    mounted = os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                                                   capture_output=True).returncode == 0
    if not mounted:
        if os.environ.get("CI") == "true":
            pytest.fail("cannot mount a tmpfs (root and CAP_SYS_ADMIN are needed); CI=true, so this is a failure")
        pytest.skip("mounting a tmpfs needs root (CAP_SYS_ADMIN)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def sqlite_at_schema(path: Path, version: int) -> sqlite3.Connection:
    """A SQLite store file at ``path`` with the schema of ``version`` (the first ``version``
    migrations), as a release before the current one left it; the caller adds rows and closes it."""
    from hub.store.sqlite import MIGRATIONS

    db = sqlite3.connect(path, isolation_level=None)
    db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for number, script in MIGRATIONS[:version]:
        for statement in filter(str.strip, script.split(";")):
            db.execute(statement)
        db.execute("INSERT INTO schema_version (version) VALUES (?)", (number,))
    return db
