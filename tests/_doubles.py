"""Store doubles shared by the tests."""

from __future__ import annotations

import sqlite3
from typing import Any

from tokentrail.store import open_store


class Outage:
    """A real store that fails like its backend does when it is down (I/O errors, a dropped
    connection), until `up` is set: the ledger spools meanwhile."""

    def __init__(self, url: str) -> None:
        self.inner = open_store(url)
        self.url, self.dialect, self.up = self.inner.url, self.inner.dialect, False

    def write_events(self, rows: Any) -> int:
        if not self.up:
            if self.dialect.name == "sqlite":
                raise sqlite3.OperationalError("disk I/O error")
            import psycopg

            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return int(self.inner.write_events(rows))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
