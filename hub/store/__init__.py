"""Store backends, chosen by the store URL in ``hub.toml``."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .base import Accepted, Acceptance, Attempt, Hold, MessageRecord, OutboxItem, OutboxRow, State, Store, Trace


def open_store(url: str, base: Path, migrate: bool = True, wait: bool = True) -> Store:
    """``sqlite:///relative/path.db`` (relative to ``base``), ``sqlite:////absolute/path.db``,
    ``postgresql://user@host:port/database`` (libpq URL; ``postgres://`` too; pool options in its
    query, see ``postgres.parse_url``).

    ``wait=False`` (``hub serve``): a PostgreSQL store whose server cannot be reached is returned
    all the same; it answers ``TryAgain`` until it has connected by itself and (with ``migrate``)
    migrated its schema."""
    if url.startswith("sqlite://"):
        from .sqlite import SQLiteStore

        raw = url[len("sqlite://") :]
        if raw.startswith("/"):
            raw = raw[1:]
        path = Path(raw)
        store: Store = SQLiteStore(path if path.is_absolute() else base / path)
    elif url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore, parse_url

        conninfo, pool = parse_url(url)
        if not wait:
            return PostgresStore(conninfo, **pool, wait=False, migrate_on_connect=migrate)
        store = PostgresStore(conninfo, **pool)
    else:
        raise ConfigError(
            "hub.toml", "hub.store", f"unsupported store URL {url!r}; use sqlite:///PATH or postgresql://HOST/DATABASE"
        )
    if migrate:
        try:
            store.migrate()
        except BaseException:
            store.close()
            raise
    return store


__all__ = ["Accepted", "Acceptance", "Attempt", "Hold", "MessageRecord", "OutboxItem", "OutboxRow", "State", "Store", "Trace", "open_store"]
