"""A private PostgreSQL cluster for the tests (``benchmarks.pgcluster``, shared with the benchmark),
started once per session and removed at its end.

The binaries are found on PATH or under /usr/lib/postgresql/*/bin (Debian's ``postgresql``, which
scripts/test.sh installs). Without them the PostgreSQL tests are skipped, except under CI=true,
where they fail.

Use the ``pg_cluster`` fixture (import it into the test module) and ``Cluster.new_database()``.
"""

from __future__ import annotations

import atexit
import os
import time
from typing import Iterator

import pytest

from benchmarks.pgcluster import Cluster, find_bindir

__all__ = ["Cluster", "find_bindir", "pg_cluster", "shared_cluster"]


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
