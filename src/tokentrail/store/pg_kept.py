"""The PostgreSQL connection the budget engine keeps between its batches.

A connection checked out of psycopg's pool for every batch costs a liveness round trip (the pool's
`check`) before the batch's own: at c=32 that doubled the round trips of each budget decision. The
engine runs one batch at a time, so it keeps one pooled connection instead, and checks it only
when it has sat idle for `idle_check_s` (a server or PgBouncer restart while the process was quiet
is then noticed before a batch, as the pool would). A connection that breaks during a batch fails
that batch (the calls follow fail-open/fail-closed, never skipped silently) and is given back to
the pool, which discards it; the next batch takes a fresh one.

The connection is one of the pool's (`max_size`), so a process's connection count is unchanged; a
pool of one is never kept from the others (each batch checks a connection out, as before), and a
second thread that wants the kept connection while a batch holds it checks one out of the pool.
Behind PgBouncer in transaction mode it is a client connection like any other: the server
connection is only bound for the length of each transaction.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tokentrail.store.postgres import PostgresStore


class KeptConnection:
    """`with kept.connection() as conn:` the kept connection (or, when it is busy or the pool too
    small to spare one, a pooled one)."""

    idle_check_s = 5.0  # idle longer than this: the pool checks it (one round trip) before use

    def __init__(self, store: PostgresStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._conn: Any = None
        self._used_at = 0.0
        self._pid = os.getpid()

    @contextmanager
    def connection(self) -> Iterator[Any]:
        if self.store.pool_max_size < 2 or self._pid != os.getpid() or not self._lock.acquire(blocking=False):
            with self.store.connection() as conn:
                yield conn
            return
        try:
            conn = self._conn
            idle = time.monotonic() - self._used_at > self.idle_check_s
            if conn is not None and (conn.closed or conn.broken or idle):
                self._give_back()  # the pool checks it when it is next handed out
                conn = self._conn = self.store.take_connection()
            elif conn is None:
                conn = self._conn = self.store.take_connection()
            try:
                yield conn
            finally:
                self._used_at = time.monotonic()
                if conn.closed or conn.broken or conn.info.transaction_status != _IDLE:
                    self._give_back()  # the pool discards a broken one, rolls back an unfinished one
        finally:
            self._lock.release()

    def _give_back(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self.store.give_back(conn)

    def close(self) -> None:
        if self._pid != os.getpid():
            return
        with self._lock:
            self._give_back()


_IDLE = 0  # psycopg.pq.TransactionStatus.IDLE (not imported here: psycopg loads lazily)
