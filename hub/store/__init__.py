"""Store backends, chosen by the store URL in ``hub.toml``."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError, StoreError
from .base import Accepted, Acceptance, Attempt, Hold, MessageRecord, Original, OutboxItem, OutboxRow, PurgeReport, State, Store, Trace


def open_store(url: str, base: Path, migrate: bool = True, wait: bool = True, create: bool = True) -> Store:
    """``sqlite:///relative/path.db`` (relative to ``base``), ``sqlite:////absolute/path.db``,
    ``postgresql://user@host:port/database`` (libpq URL; ``postgres://`` too; pool options in its
    query, see ``postgres.parse_url``).

    ``wait=False`` (``hub serve``): a PostgreSQL store whose server cannot be reached is returned
    all the same; it answers ``TryAgain`` until it has connected by itself and (with ``migrate``)
    migrated its schema. A SQLite store this process cannot write is a ``StoreError`` then (the
    commands that only read it may still open it).

    ``create=False`` (the commands that only look: `hub trace`, `hub outbox list`, `hub audit
    verify`): a SQLite file that does not exist is a ``StoreError``, not a new empty store, so a
    store URL that names the wrong file (or a volume not mounted) is said, not answered with "no
    such message" or "audit chain OK: 0 entries"."""
    if url.startswith("sqlite://"):
        from .sqlite import SQLiteStore

        raw, lock_timeout = sqlite_options(url[len("sqlite://") :])
        if raw.startswith("/"):
            raw = raw[1:]
        path = Path(raw) if Path(raw).is_absolute() else base / raw
        if not create and not path.exists():
            raise StoreError(f"no SQLite store at {path}: nothing was ever recorded there (is hub.store the right file, "
                             "its volume mounted?); `hub serve` or `hub store migrate` creates it")
        sqlite = SQLiteStore(path, busy_timeout_ms=int(lock_timeout * 1000))
        problem = None if wait else sqlite.unwritable()
        if problem is not None:  # `hub serve`: it would answer every sender "try again" for good
            sqlite.close()
            raise StoreError(f"the SQLite store {path} cannot be written by this process ({problem}): check the owner and "
                             "mode of the file and its folder, and that its file system is not mounted read-only")
        store: Store = sqlite
    elif url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore, parse_url

        conninfo, pool = parse_url(url)
        if not wait:
            return PostgresStore(conninfo, **pool, wait=False, migrate_on_connect=migrate)
        store = PostgresStore(conninfo, **pool)
    else:
        raise unsupported_store(url, "hub.toml")
    if migrate:
        try:
            store.migrate()
        except BaseException:
            store.close()
            raise
    return store


__all__ = ["Accepted", "Acceptance", "Attempt", "Hold", "MessageRecord", "Original", "OutboxItem", "OutboxRow", "PurgeReport", "State", "Store", "Trace", "open_store"]


def unsupported_store(url: str, file: str) -> ConfigError:
    return ConfigError(file, "hub.store", f"unsupported store URL {url!r}; use sqlite:///PATH or postgresql://HOST/DATABASE")


def sqlite_options(rest: str, file: str = "hub.toml") -> tuple[str, float]:
    """``/var/hub.db?lock_timeout=10``: the path, and the seconds a write waits for another
    process's transaction (the lock file, then SQLite's busy handler) before answering "try again"."""
    path, _, query = rest.partition("?")
    if "\0" in path:
        raise ConfigError(file, "hub.store", "the SQLite store's path holds a NUL character, which no file name can")
    timeout = 10.0
    for part in filter(None, query.split("&")):
        key, _, value = part.partition("=")
        if key != "lock_timeout":
            raise ConfigError(file, "hub.store", f"unknown option {key!r} in the SQLite store URL; the one option is lock_timeout (seconds)")
        try:
            timeout = float(value)
        except ValueError:
            timeout = 0.0
        if not 0 < timeout < 3600:
            raise ConfigError(file, "hub.store", f"lock_timeout (seconds a write waits for another process) must be a positive number below 3600, not {value!r}")
    return path, timeout
