"""A private PostgreSQL cluster for the tests: initdb into a temporary folder, listening only on
127.0.0.1 on a free port, started once per session and removed at its end.

The binaries are found on PATH or under /usr/lib/postgresql/*/bin (Debian's ``postgresql``, which
scripts/test.sh installs). Without them the PostgreSQL tests are skipped, except under CI=true,
where they fail. As root the cluster runs as the ``postgres`` OS user (initdb refuses root).

Use the ``pg_cluster`` fixture (import it into the test module) and ``Cluster.new_database()``.
"""

from __future__ import annotations

import atexit
import glob
import itertools
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

from .support import free_port


def find_bindir() -> Path | None:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


class Cluster:
    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="hub-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self._as: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]
        self._names = itertools.count(1)
        self.running = False

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self._as, *args], capture_output=True, text=True, check=check, cwd=self.root)

    def init(self) -> Cluster:
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--locale=C", "--no-sync")
        with open(self.data / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write(
                f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\nunix_socket_directories = '{self.root}'\n"
                "max_connections = 300\nshared_buffers = 64MB\nfsync = off\nfull_page_writes = off\n"
                "log_min_messages = warning\n"
            )
        return self

    def start(self) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "30", "start")
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop", check=False)
        self.running = False

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def destroy(self) -> None:
        if self.running:
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def sql(self, statement: str, database: str = "postgres") -> list[tuple]:
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True, connect_timeout=5) as conn:
            cur = conn.execute(statement)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []

    def new_database(self) -> str:
        """A fresh empty database; returns its URL."""
        name = f"hub_test_{os.getpid()}_{next(self._names)}"
        self.sql(f"CREATE DATABASE {name}")
        return self.url(name)

    def terminate_backends(self, url: str) -> int:
        """Ends every server process connected to the database of ``url`` (a connection loss)."""
        database = url.rsplit("/", 1)[1]
        rows = self.sql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            f"WHERE datname = '{database}' AND pid <> pg_backend_pid()"
        )
        return int(rows[0][0])


_shared: Cluster | None = None


def shared_cluster() -> Cluster:
    """The session's cluster, started on first use (skips, or fails under CI=true, without binaries)."""
    global _shared
    if _shared is None:
        bindir = find_bindir()
        if bindir is None:
            reason = "PostgreSQL binaries not found (initdb on PATH or /usr/lib/postgresql/*/bin)"
            if os.environ.get("CI") == "true":
                pytest.fail(f"{reason}; CI must run the PostgreSQL tests (scripts/test.sh installs postgresql)", pytrace=False)
            pytest.skip(reason)
        cluster = Cluster(bindir).init()
        started = time.monotonic()
        cluster.start()
        _shared = cluster
        atexit.register(cluster.destroy)
        print(f"\nPostgreSQL {bindir} on 127.0.0.1:{cluster.port} started in {time.monotonic() - started:.1f}s")
    elif not _shared.running:
        _shared.start()
    return _shared


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    cluster = shared_cluster()
    yield cluster
    cluster.destroy()
