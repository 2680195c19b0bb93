"""The budget tables' SQL, on SQLite and PostgreSQL (the schema is migration 0006_budgets).

A reservation is one transaction: lock every counter it touches (creating those that do not exist
yet), read what each has posted and what live holds reserve on it, let the caller decide, then
insert the holds (all or none) and commit.

- SQLite: `BEGIN IMMEDIATE` takes the database's write lock first, so no two reservations (of
  any process) interleave; threads of one process take turns on one connection. Reservations and
  voids commit with `synchronous=NORMAL` (no fsync: a power cut that loses one also killed the
  call it guarded), posts with `synchronous=FULL`: one fsync per metered call.
- PostgreSQL: each counter row is locked by an upsert in ascending key order (`INSERT … ORDER BY
  counter_key ON CONFLICT DO UPDATE`), by reservations and posts alike, so two transactions never
  wait on each other in a cycle: no deadlocks.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tokentrail.alerts import ALERT_COLUMNS

Row = tuple[Any, ...]
FOREVER_US = 2**62


@dataclass(slots=True)
class Counter:
    """One budget counter a call touches, and what it holds (filled in under lock)."""

    key: str
    budget: str
    bucket: str
    start_us: int | None
    end_us: int | None
    window_us: int  # > 0: a rolling window
    enforce: bool  # False: an alert-only budget (posted, never checked)
    posted_nusd: int = 0
    posted_tokens: int = 0
    reserved_nusd: int = 0
    reserved_tokens: int = 0
    blocked_until_us: int | None = None
    alerted: int = 0
    oldest_us: int | None = None  # rolling: the oldest post still in the window
    extra: Any = field(default=None, repr=False)


class BudgetSQL:
    """Shared logic; subclasses provide `_txn` (a transaction yielding an execute function)."""

    param = "?"

    # -- definitions ----------------------------------------------------------------------------

    def version(self) -> int:
        with self._txn(read=True) as x:
            rows = x("SELECT version FROM budget_meta WHERE id = 1", ())
        return int(rows[0][0]) if rows else 0

    def load(self) -> tuple[int, list[Row], list[Row]]:
        with self._txn(read=True) as x:
            v = x("SELECT version FROM budget_meta WHERE id = 1", ())
            budgets = x(
                "SELECT name, scope, period, limit_nusd, limit_tokens, alert_at, action, tz, source, created_us, "
                "updated_us FROM budgets ORDER BY name",
                (),
            )
            susp = x("SELECT scope, reason, created_us FROM budget_suspensions ORDER BY scope", ())
        return (int(v[0][0]) if v else 0), budgets, susp

    def put_budget(self, row: Row) -> None:
        p = self.param
        with self._txn() as x:
            x(
                f"INSERT INTO budgets (name, scope, period, limit_nusd, limit_tokens, alert_at, action, tz, source, "
                f"created_us, updated_us) VALUES ({', '.join([p] * 11)}) ON CONFLICT (name) DO UPDATE SET "
                "scope = excluded.scope, period = excluded.period, limit_nusd = excluded.limit_nusd, "
                "limit_tokens = excluded.limit_tokens, alert_at = excluded.alert_at, action = excluded.action, "
                "tz = excluded.tz, source = excluded.source, updated_us = excluded.updated_us",
                row,
            )
            x("UPDATE budget_meta SET version = version + 1 WHERE id = 1", ())

    def remove_budget(self, name: str) -> bool:
        p = self.param
        with self._txn() as x:
            found = x(f"SELECT name FROM budgets WHERE name = {p}", (name,))
            if not found:
                return False
            x(f"DELETE FROM budgets WHERE name = {p}", (name,))
            keys = [r[0] for r in x(f"SELECT counter_key FROM budget_counters WHERE budget = {p}", (name,))]
            for key in keys:
                x(f"DELETE FROM budget_holds WHERE counter_key = {p}", (key,))
                x(f"DELETE FROM budget_window WHERE counter_key = {p}", (key,))
            x(f"DELETE FROM budget_counters WHERE budget = {p}", (name,))
            x("UPDATE budget_meta SET version = version + 1 WHERE id = 1", ())
        return True

    def put_suspension(self, scope: str, reason: str | None, now_us: int) -> None:
        p = self.param
        with self._txn() as x:
            x(
                f"INSERT INTO budget_suspensions (scope, reason, created_us) VALUES ({p}, {p}, {p}) "
                "ON CONFLICT (scope) DO UPDATE SET reason = excluded.reason",
                (scope, reason, now_us),
            )
            x("UPDATE budget_meta SET version = version + 1 WHERE id = 1", ())

    def remove_suspension(self, scope: str) -> bool:
        p = self.param
        with self._txn() as x:
            found = x(f"SELECT scope FROM budget_suspensions WHERE scope = {p}", (scope,))
            if found:
                x(f"DELETE FROM budget_suspensions WHERE scope = {p}", (scope,))
                x("UPDATE budget_meta SET version = version + 1 WHERE id = 1", ())
        return bool(found)

    # -- the hot path -----------------------------------------------------------------------------

    def reserve(
        self,
        counters: list[Counter],
        hold_id: str,
        nusd: int,
        tokens: int,
        expires_us: int,
        session_id: str | None,
        now_us: int,
        decide: Callable[[list[Counter]], object],
    ) -> object:
        """Lock and read `counters`, ask `decide`; if it returns None, reserve (nusd, tokens) on each
        of them under `hold_id`, else roll back and return its refusal."""
        counters = sorted(counters, key=lambda c: c.key)
        try:
            self._reserve(counters, hold_id, nusd, tokens, expires_us, session_id, now_us, decide)
        except _Refused as r:
            return r.refusal
        return None

    def _reserve(
        self,
        counters: list[Counter],
        hold_id: str,
        nusd: int,
        tokens: int,
        expires_us: int,
        session_id: str | None,
        now_us: int,
        decide: Callable[[list[Counter]], object],
    ) -> None:
        p = self.param
        with self._txn(durable=False) as x:
            rows = self._lock_counters(x, counters, now_us)
            _fill(counters, rows)
            self._read_live(x, counters, now_us)
            refusal = decide(counters)
            if refusal is not None:
                raise _Refused(refusal)
            x(
                "INSERT INTO budget_holds (hold_id, counter_key, nusd, tokens, expires_us, session_id) "
                f"VALUES {', '.join([f'({p}, {p}, {p}, {p}, {p}, {p})'] * len(counters))}",
                [v for c in counters for v in (hold_id, c.key, nusd, tokens, expires_us, session_id)],
            )

    def _lock_counters(self, x: Any, counters: list[Counter], now_us: int) -> list[Row]:
        """Lock `counters` (creating those that do not exist) in key order; their stored rows.
        PostgreSQL: a no-op upsert takes each row lock in the order of the VALUES list."""
        p = self.param
        return x(  # type: ignore[no-any-return]
            "INSERT INTO budget_counters (counter_key, budget, bucket, period_start_us, period_end_us, updated_us) "
            f"VALUES {', '.join([f'({p}, {p}, {p}, {p}, {p}, {p})'] * len(counters))} "
            "ON CONFLICT (counter_key) DO UPDATE SET updated_us = excluded.updated_us "
            "RETURNING counter_key, posted_nusd, posted_tokens, blocked_until_us, alerted",
            [v for c in counters for v in (c.key, c.budget, c.bucket, c.start_us, c.end_us, now_us)],
        )

    def _read_live(self, x: Any, counters: list[Counter], now_us: int) -> None:
        p = self.param
        marks = ", ".join([p] * len(counters))
        by_key = {c.key: c for c in counters}
        for key, n, t in x(
            "SELECT counter_key, COALESCE(SUM(nusd), 0), COALESCE(SUM(tokens), 0) FROM budget_holds "
            f"WHERE counter_key IN ({marks}) AND expires_us > {p} GROUP BY counter_key",
            (*by_key, now_us),
        ):
            c = by_key[key]
            c.reserved_nusd, c.reserved_tokens = int(n), int(t)
        for c in counters:
            if c.window_us:
                n, t, oldest = x(
                    "SELECT COALESCE(SUM(nusd), 0), COALESCE(SUM(tokens), 0), MIN(ts_us) FROM budget_window "
                    f"WHERE counter_key = {p} AND ts_us > {p}",
                    (c.key, now_us - c.window_us),
                )[0]
                c.posted_nusd, c.posted_tokens, c.oldest_us = int(n), int(t), oldest

    def post(
        self,
        counters: list[Counter],
        hold_id: str | None,
        nusd: int,
        tokens: int,
        now_us: int,
        blocks: dict[str, int],
        alerts_for: Callable[[Counter], list[tuple[Row, int]]],
    ) -> list[Row]:
        """Add (nusd, tokens) to each counter (setting `blocks[key]` as its blocked-until when
        given), drop the hold, and insert the alerts `alerts_for` says are due; return the alert
        rows this call inserted (those it must deliver)."""
        counters = sorted(counters, key=lambda c: c.key)
        p = self.param
        fired: list[Row] = []
        with self._txn(durable=True) as x:
            rows = x(
                "INSERT INTO budget_counters (counter_key, budget, bucket, period_start_us, period_end_us, "
                "posted_nusd, posted_tokens, blocked_until_us, updated_us) "
                f"VALUES {', '.join([f'({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p})'] * len(counters))} "
                "ON CONFLICT (counter_key) DO UPDATE SET "
                "posted_nusd = budget_counters.posted_nusd + excluded.posted_nusd, "
                "posted_tokens = budget_counters.posted_tokens + excluded.posted_tokens, "
                "blocked_until_us = CASE WHEN excluded.blocked_until_us IS NULL "
                "THEN budget_counters.blocked_until_us "
                "WHEN budget_counters.blocked_until_us IS NULL "
                "OR budget_counters.blocked_until_us < excluded.blocked_until_us "
                "THEN excluded.blocked_until_us ELSE budget_counters.blocked_until_us END, "
                "updated_us = excluded.updated_us "
                "RETURNING counter_key, posted_nusd, posted_tokens, blocked_until_us, alerted",
                [
                    v
                    for c in counters
                    for v in (c.key, c.budget, c.bucket, c.start_us, c.end_us, nusd, tokens, blocks.get(c.key), now_us)
                ],
            )
            _fill(counters, rows)
            for c in counters:
                if c.window_us:
                    x(
                        f"INSERT INTO budget_window (counter_key, ts_us, nusd, tokens) VALUES ({p}, {p}, {p}, {p})",
                        (c.key, now_us, nusd, tokens),
                    )
                    x(
                        f"DELETE FROM budget_window WHERE counter_key = {p} AND ts_us <= {p}",
                        (c.key, now_us - c.window_us),
                    )
                    n, t = x(
                        "SELECT COALESCE(SUM(nusd), 0), COALESCE(SUM(tokens), 0) FROM budget_window "
                        f"WHERE counter_key = {p}",
                        (c.key,),
                    )[0]
                    c.posted_nusd, c.posted_tokens = int(n), int(t)
                due = alerts_for(c)
                bits = 0
                for alert_row, bit in due:
                    if self._insert_alert(x, alert_row):
                        fired.append(alert_row)
                    bits |= bit
                if bits & ~c.alerted:
                    x(
                        f"UPDATE budget_counters SET alerted = alerted | {p} WHERE counter_key = {p}",
                        (bits, c.key),
                    )
            if hold_id is not None:
                x(f"DELETE FROM budget_holds WHERE hold_id = {p}", (hold_id,))
        return fired

    def insert_alert(self, row: Row) -> bool:
        with self._txn(durable=True) as x:
            return self._insert_alert(x, row)

    def _insert_alert(self, x: Any, row: Row) -> bool:
        p = self.param
        got = x(
            f"INSERT INTO alerts ({', '.join(ALERT_COLUMNS)}) VALUES ({', '.join([p] * len(ALERT_COLUMNS))}) "
            "ON CONFLICT (alert_key) DO NOTHING RETURNING alert_id",
            row,
        )
        return bool(got)

    def void(self, hold_ids: Sequence[str]) -> None:
        if not hold_ids:
            return
        p = self.param
        with self._txn(durable=False) as x:
            x(f"DELETE FROM budget_holds WHERE hold_id IN ({', '.join([p] * len(hold_ids))})", tuple(hold_ids))

    def renew(self, hold_ids: Sequence[str], expires_us: int) -> None:
        if not hold_ids:
            return
        p = self.param
        with self._txn(durable=False) as x:
            x(
                f"UPDATE budget_holds SET expires_us = {p} WHERE hold_id IN ({', '.join([p] * len(hold_ids))})",
                (expires_us, *hold_ids),
            )

    def sweep(self, now_us: int) -> int:
        """Delete holds that expired (they already count for nothing); return how many."""
        p = self.param
        with self._txn(durable=False) as x:
            rows = x(f"DELETE FROM budget_holds WHERE expires_us <= {p} RETURNING hold_id", (now_us,))
        return len(rows)

    # -- reading ----------------------------------------------------------------------------------

    def counters_of(self, budget: str, limit: int = 200) -> list[Row]:
        """(counter_key, bucket, period_start_us, period_end_us, posted_nusd, posted_tokens, blocked_until_us),
        most recently used first."""
        p = self.param
        with self._txn(read=True) as x:
            return x(
                "SELECT counter_key, bucket, period_start_us, period_end_us, posted_nusd, posted_tokens, "
                f"blocked_until_us FROM budget_counters WHERE budget = {p} ORDER BY updated_us DESC LIMIT {int(limit)}",
                (budget,),
            )

    def live(self, counters: list[Counter], now_us: int) -> None:
        """Fill reserved (and, for rolling windows, posted) of `counters` without locking."""
        if not counters:
            return
        with self._txn(read=True) as x:
            self._read_live(x, counters, now_us)

    def holds(self, now_us: int) -> list[Row]:
        """Every live hold: (hold_id, counter_key, nusd, tokens, expires_us, session_id)."""
        p = self.param
        with self._txn(read=True) as x:
            return x(
                "SELECT hold_id, counter_key, nusd, tokens, expires_us, session_id FROM budget_holds "
                f"WHERE expires_us > {p}",
                (now_us,),
            )

    # -- to implement -------------------------------------------------------------------------------

    @contextmanager
    def _txn(self, *, read: bool = False, durable: bool = True) -> Iterator[Callable[[str, Sequence[Any]], list[Row]]]:
        raise NotImplementedError
        yield  # pragma: no cover

    def close(self) -> None:
        pass


def _fill(counters: list[Counter], rows: list[Row]) -> None:
    by_key = {c.key: c for c in counters}
    for key, posted, tokens, blocked, alerted in rows:
        c = by_key[key]
        c.posted_nusd, c.posted_tokens, c.blocked_until_us, c.alerted = int(posted), int(tokens), blocked, int(alerted)


class _Refused(Exception):
    def __init__(self, refusal: object) -> None:
        super().__init__("refused")
        self.refusal = refusal


class SQLiteBudgetSQL(BudgetSQL):
    """One connection per process, shared by its threads in turn (a lock), in its own file handle."""

    param = "?"

    def __init__(self, path: str, busy_timeout_ms: int = 30_000) -> None:
        self.path = path
        self._lock = threading.Lock()
        # one connection (its page cache stays warm): reservations and voids commit without fsync
        # (synchronous=NORMAL), posts with one (FULL)
        self._conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_ms / 1000
        )
        self._conn.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._sync = ""
        self.owner: int | None = None  # the thread inside a transaction, if any

    @contextmanager
    def _txn(self, *, read: bool = False, durable: bool = True) -> Iterator[Callable[[str, Sequence[Any]], list[Row]]]:
        c = self._conn

        def x(sql: str, params: Sequence[Any]) -> list[Row]:
            return c.execute(sql, params).fetchall()

        with self._lock:
            self.owner = threading.get_ident()
            try:
                if read:
                    c.execute("BEGIN")
                else:
                    mode = "FULL" if durable else "NORMAL"
                    if mode != self._sync:
                        c.execute(f"PRAGMA synchronous = {mode}")
                        self._sync = mode
                    c.execute("BEGIN IMMEDIATE")
                try:
                    yield x
                except BaseException:
                    if c.in_transaction:
                        c.execute("ROLLBACK")
                    raise
                c.execute("COMMIT")
            finally:
                self.owner = None

    def _lock_counters(self, x: Any, counters: list[Counter], now_us: int) -> list[Row]:
        """BEGIN IMMEDIATE already holds the database's write lock: read the counters, and create
        the missing ones (a new period or bucket) without rewriting the others' pages."""
        marks = ", ".join("?" * len(counters))
        sql = (
            "SELECT counter_key, posted_nusd, posted_tokens, blocked_until_us, alerted FROM budget_counters "
            f"WHERE counter_key IN ({marks})"
        )
        rows: list[Row] = x(sql, [c.key for c in counters])
        if len(rows) < len(counters):
            have = {r[0] for r in rows}
            x(
                "INSERT INTO budget_counters (counter_key, budget, bucket, period_start_us, period_end_us, updated_us) "
                f"VALUES {', '.join(['(?, ?, ?, ?, ?, ?)'] * (len(counters) - len(have)))}",
                [
                    v
                    for c in counters
                    if c.key not in have
                    for v in (c.key, c.budget, c.bucket, c.start_us, c.end_us, now_us)
                ],
            )
            rows = x(sql, [c.key for c in counters])
        return rows

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class PostgresBudgetSQL(BudgetSQL):
    """Connections from the store's pool, one short transaction each."""

    param = "%s"

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self.owner: int | None = None

    @contextmanager
    def _txn(self, *, read: bool = False, durable: bool = True) -> Iterator[Callable[[str, Sequence[Any]], list[Row]]]:
        with self._pool.connection() as conn, conn.transaction():
            cur = conn.cursor()
            if not durable and not read:
                # a reservation or a void need not wait for the WAL flush: if the server crashes
                # before it, the reservation is lost (and expires anyway); a post waits for it
                cur.execute("SET LOCAL synchronous_commit = off")

            def x(sql: str, params: Sequence[Any]) -> list[Row]:
                cur.execute(sql, params if params else None)
                return cur.fetchall() if cur.description is not None else []

            yield x


def backend_for(store: Any) -> BudgetSQL | None:
    """The budget SQL of a store, or None for a store that cannot keep budgets."""
    name = getattr(getattr(store, "dialect", None), "name", None)
    if name == "sqlite" and getattr(store, "path", None) is not None:
        return SQLiteBudgetSQL(str(store.path))
    if name == "postgresql" and getattr(store, "_pool", None) is not None:
        return PostgresBudgetSQL(store._pool)
    return None
