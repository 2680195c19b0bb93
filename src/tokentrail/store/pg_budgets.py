"""The budget tables' SQL on PostgreSQL (tokentrail.store.budgets has the shared statements and
SQLite's): a pooled connection per transaction, pipelined transactions, and the statements whose lists vary with
the batch written with one array parameter each."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

from tokentrail.store.budgets import BudgetSQL, Exec, Later, Row

if TYPE_CHECKING:
    from tokentrail.store.postgres import PostgresStore


class _PgExec(Exec):
    """PostgreSQL in pipeline mode: `send` queues the statement; its rows come with the next sync
    (the first Later called, or the COMMIT)."""

    __slots__ = ("_conn", "_pipeline")

    def __init__(self, conn: Any, pipeline: Any) -> None:
        super().__init__(conn.cursor())
        self._conn = conn
        self._pipeline = pipeline

    def __call__(self, sql: str, params: Sequence[Any]) -> list[Row]:
        cur = self._cur
        cur.execute(sql, params if params else None)  # no parameters: no %-placeholder parsing
        if self._pipeline is not None:
            self._pipeline.sync()
        return cur.fetchall() if cur.description is not None else []

    def send(self, sql: str, params: Sequence[Any]) -> Later:
        if self._pipeline is None:
            return super().send(sql, params)
        cur = self._conn.cursor()
        cur.execute(sql, params if params else None)
        return cur.fetchall  # type: ignore[no-any-return]


class PostgresBudgetSQL(BudgetSQL):
    """A pooled connection for each short transaction."""

    param = "%s"
    for_update = " FOR UPDATE"

    def __init__(self, store: PostgresStore) -> None:
        self.store = store

    @contextmanager
    def _txn(self, *, read: bool = False, durable: bool = True) -> Iterator[Exec]:
        with self.store.connection() as conn, conn.transaction():
            x = _PgExec(conn, None)
            if not durable and not read:
                # a batch of reservations and voids need not wait for the WAL flush: if the server
                # crashes before it, the reservations are lost (and would expire anyway); posts wait
                x.send("SET LOCAL synchronous_commit = off", ())
            yield x

    def transaction(self, *, durable: bool) -> AbstractContextManager[Exec]:
        return self._pipelined(durable)

    @contextmanager
    def _pipelined(self, durable: bool) -> Iterator[Exec]:
        with self.store.connection() as conn, conn.pipeline() as pipeline, conn.transaction():
            x = _PgExec(conn, pipeline)
            if not durable:
                x.send("SET LOCAL synchronous_commit = off", ())
            yield x

    # The statements whose lists vary with the batch take one array parameter here instead of a
    # list of placeholders: one query text each, so psycopg parses it once and the server prepares
    # it, where a text per list length missed psycopg's query cache on most batches.

    def reserved(self, x: Exec, keys: Sequence[str], now_us: int) -> Later:
        return x.send(
            "SELECT counter_key, COALESCE(SUM(nusd), 0), COALESCE(SUM(tokens), 0) FROM budget_holds "
            "WHERE counter_key = ANY(%s::text[]) AND expires_us > %s GROUP BY counter_key",
            (list(keys), now_us),
        )

    def live_holds(self, x: Exec, hold_ids: Sequence[str], now_us: int) -> Later:
        return x.send(
            "SELECT hold_id, counter_key, nusd, tokens FROM budget_holds "
            "WHERE hold_id = ANY(%s::text[]) AND expires_us > %s",
            (list(hold_ids), now_us),
        )

    def drop_counters(self, x: Exec, keys: Sequence[str]) -> None:
        x.send("DELETE FROM budget_counters WHERE counter_key = ANY(%s::text[])", (list(keys),))

    def insert_holds(self, x: Exec, rows: Sequence[Row]) -> None:
        cols: list[list[Any]] = [[], [], [], [], [], []]
        for r in rows:
            for col, v in zip(cols, r, strict=True):
                col.append(v)
        x.send(
            "INSERT INTO budget_holds (hold_id, counter_key, nusd, tokens, expires_us, session_id) "
            "SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::bigint[], %s::bigint[], %s::text[])",
            cols,
        )

    def delete_holds(self, x: Exec, hold_ids: Sequence[str]) -> None:
        x.send("DELETE FROM budget_holds WHERE hold_id = ANY(%s::text[])", (list(hold_ids),))

    def renew(self, x: Exec, hold_ids: Sequence[str], expires_us: int, now_us: int) -> None:
        x.send(
            "UPDATE budget_holds SET expires_us = %s WHERE hold_id = ANY(%s::text[]) AND expires_us > %s",
            (expires_us, list(hold_ids), now_us),
        )

    def sweep(self, x: Exec, now_us: int) -> int:
        """Rows another transaction holds are left for the next sweep, so a sweep never waits and
        never takes part in a deadlock."""
        return len(
            x(
                "DELETE FROM budget_holds WHERE ctid IN (SELECT ctid FROM budget_holds WHERE expires_us <= %s "
                "FOR UPDATE SKIP LOCKED) RETURNING hold_id",
                (now_us,),
            )
        )
