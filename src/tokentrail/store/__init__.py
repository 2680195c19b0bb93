"""Ledger stores: one protocol (tokentrail.types.Store), an SQLite and a PostgreSQL backend."""

from __future__ import annotations

import os
from pathlib import Path

from tokentrail.exceptions import ConfigError
from tokentrail.types import Store

DEFAULT_DB = "~/.tokentrail/ledger.db"


def default_url() -> str:
    """TOKENTRAIL_DB, else the SQLite file ~/.tokentrail/ledger.db."""
    return os.environ.get("TOKENTRAIL_DB") or DEFAULT_DB


def sqlite_path(url: str) -> Path:
    """The file of an SQLite URL: sqlite:///relative.db, sqlite:////abs.db, or a plain path."""
    if url.startswith("sqlite://"):
        rest = url[len("sqlite://") :]
        if not rest.startswith("/"):
            raise ConfigError(f"database URL {url!r}: write sqlite:///relative/path.db or sqlite:////absolute/path.db")
        rest = rest[1:]
        if not rest:
            raise ConfigError(f"database URL {url!r} names no file")
        return Path(rest).expanduser()
    return Path(url).expanduser()


def open_store(url: str | None = None, *, read_only: bool = False) -> Store:
    """Open (and migrate) the store a URL names; `read_only` (SQLite): open an existing file
    that this process cannot write, for reading only (PostgreSQL: permissions decide)."""
    url = url or default_url()
    if url.startswith(("postgresql://", "postgres://")):
        from tokentrail.store.postgres import PostgresStore

        return PostgresStore(url)
    if "://" in url and not url.startswith("sqlite://"):
        raise ConfigError(f"database URL {url!r}: use sqlite:///path.db, a file path, or postgresql://…")
    from tokentrail.store.sqlite import SQLiteStore

    return SQLiteStore(sqlite_path(url), read_only=read_only)
