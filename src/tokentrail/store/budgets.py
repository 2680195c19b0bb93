"""The budget tables' SQL, on SQLite and PostgreSQL (the schema is migration 0006_budgets).

The statements the budget engine (tokentrail.budgets.engine) runs inside one write transaction per
batch: lock every counter the batch touches (creating those that do not exist yet), read what each
has posted and what live holds reserve on it, then write the holds, counters, window rows and
alerts the batch decided. Each store hands out its own (`SQLiteStore.budget_sql()`,
`PostgresStore.budget_sql()`; a store that can keep budgets is a `KeepsBudgets`).

- SQLite: `BEGIN IMMEDIATE` takes the database's write lock first, so no two batches (of any
  process) interleave. A batch of reservations and voids commits with `synchronous=NORMAL` (no
  fsync: a power cut that loses one also killed the call it guarded); a batch with a post with
  `synchronous=FULL`: one fsync for every call of the batch.
- PostgreSQL: each counter row is locked by an upsert in ascending key order (`INSERT … ON
  CONFLICT DO UPDATE` over keys sorted in the VALUES list), the first statement of every batch,
  so two transactions never wait on each other in a cycle: no deadlocks.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from tokentrail.store.alerts import ALERT_COLUMNS

if TYPE_CHECKING:
    pass

Row = tuple[Any, ...]
Later = Callable[[], list[Row]]  # the rows of a statement sent, once they are in
T = TypeVar("T")
FOREVER_US = 2**62  # blocked "until the session ends": a session counter is never used again
_ROWS = 500  # rows (or keys) per statement: well under either backend's limit on parameters


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
    """Shared logic; subclasses provide `_txn` (a transaction yielding an `Exec`)."""

    param = "?"
    for_update = ""  # row locks where the backend has them

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
                "updated_us, allow_unpriced FROM budgets ORDER BY name",
                (),
            )
            susp = x("SELECT scope, reason, created_us FROM budget_suspensions ORDER BY scope", ())
        return (int(v[0][0]) if v else 0), budgets, susp

    def put_budget(self, row: Row) -> None:
        p = self.param
        with self._txn() as x:
            x(
                f"INSERT INTO budgets (name, scope, period, limit_nusd, limit_tokens, alert_at, action, tz, source, "
                f"created_us, updated_us, allow_unpriced) VALUES ({', '.join([p] * 12)}) ON CONFLICT (name) DO UPDATE "
                "SET scope = excluded.scope, period = excluded.period, limit_nusd = excluded.limit_nusd, "
                "limit_tokens = excluded.limit_tokens, alert_at = excluded.alert_at, action = excluded.action, "
                "tz = excluded.tz, source = excluded.source, updated_us = excluded.updated_us, "
                "allow_unpriced = excluded.allow_unpriced",
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
            # its counters are locked first, in key order, as a batch would lock them
            keys = [
                r[0]
                for r in x(
                    f"SELECT counter_key FROM budget_counters WHERE budget = {p} ORDER BY counter_key{self.for_update}",
                    (name,),
                )
            ]
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

    # -- the engine's statements: one write transaction per batch (tokentrail.budgets.engine) ----------
    # Reads return a `Later` (call it for the rows): on PostgreSQL the statements of a batch are
    # pipelined, so the reads go out together and cost one round trip, and the writes ride with COMMIT.

    def lock(self, x: Exec, counters: list[Counter], now_us: int) -> Later:
        """Lock `counters` (sorted by key; those that do not exist are created): their stored rows,
        (counter_key, posted_nusd, posted_tokens, blocked_until_us, alerted, created). PostgreSQL:
        a no-op upsert takes each row lock in the order of the VALUES list (a row it inserted has
        no xmax). Send it before any other statement of the batch."""
        p = self.param
        return _all(
            x.send(
                "INSERT INTO budget_counters (counter_key, budget, bucket, period_start_us, period_end_us, "
                f"updated_us) VALUES {', '.join([f'({p}, {p}, {p}, {p}, {p}, {p})'] * len(part))} "
                "ON CONFLICT (counter_key) DO UPDATE SET updated_us = excluded.updated_us "
                "RETURNING counter_key, posted_nusd, posted_tokens, blocked_until_us, alerted, xmax = 0",
                [v for c in part for v in (c.key, c.budget, c.bucket, c.start_us, c.end_us, now_us)],
            )
            for part in _chunks(counters, _ROWS)
        )

    def reserved(self, x: Exec, keys: Sequence[str], now_us: int) -> Later:
        """(counter_key, nusd, tokens) that live holds reserve on each of `keys` (none: no row)."""
        p = self.param
        return _all(
            x.send(
                "SELECT counter_key, COALESCE(SUM(nusd), 0), COALESCE(SUM(tokens), 0) FROM budget_holds "
                f"WHERE counter_key IN ({', '.join([p] * len(part))}) AND expires_us > {p} GROUP BY counter_key",
                (*part, now_us),
            )
            for part in _chunks(keys, _ROWS)
        )

    def window(self, x: Exec, key: str, window_us: int, now_us: int) -> Later:
        """[(nusd, tokens, oldest ts_us)] posted on a rolling counter within its window."""
        p = self.param
        return x.send(
            "SELECT COALESCE(SUM(nusd), 0), COALESCE(SUM(tokens), 0), MIN(ts_us) FROM budget_window "
            f"WHERE counter_key = {p} AND ts_us > {p}",
            (key, now_us - window_us),
        )

    def live_holds(self, x: Exec, hold_ids: Sequence[str], now_us: int) -> Later:
        """(hold_id, counter_key, nusd, tokens) of those of `hold_ids` that still count."""
        p = self.param
        return _all(
            x.send(
                "SELECT hold_id, counter_key, nusd, tokens FROM budget_holds "
                f"WHERE hold_id IN ({', '.join([p] * len(part))}) AND expires_us > {p}",
                (*part, now_us),
            )
            for part in _chunks(hold_ids, _ROWS)
        )

    def drop_counters(self, x: Exec, keys: Sequence[str]) -> None:
        """Delete counters this transaction created and then did not use (a refused reservation
        leaves no trace)."""
        p = self.param
        for part in _chunks(keys, _ROWS):
            x.send(f"DELETE FROM budget_counters WHERE counter_key IN ({', '.join([p] * len(part))})", tuple(part))

    def insert_holds(self, x: Exec, rows: Sequence[Row]) -> None:
        """Rows of (hold_id, counter_key, nusd, tokens, expires_us, session_id)."""
        p = self.param
        for part in _chunks(rows, _ROWS):
            x.send(
                "INSERT INTO budget_holds (hold_id, counter_key, nusd, tokens, expires_us, session_id) "
                f"VALUES {', '.join([f'({p}, {p}, {p}, {p}, {p}, {p})'] * len(part))}",
                [v for r in part for v in r],
            )

    def delete_holds(self, x: Exec, hold_ids: Sequence[str]) -> None:
        p = self.param
        for part in _chunks(hold_ids, _ROWS):
            x.send(f"DELETE FROM budget_holds WHERE hold_id IN ({', '.join([p] * len(part))})", tuple(part))

    def update_counters(self, x: Exec, rows: Sequence[Row]) -> None:
        """Rows of (posted_nusd, posted_tokens, blocked_until_us, alerted, updated_us, counter_key),
        the new values of counters this transaction locked."""
        p = self.param
        for r in rows:
            x.send(
                f"UPDATE budget_counters SET posted_nusd = {p}, posted_tokens = {p}, blocked_until_us = {p}, "
                f"alerted = {p}, updated_us = {p} WHERE counter_key = {p}",
                r,
            )

    def add_window(self, x: Exec, key: str, now_us: int, nusd: int, tokens: int, window_us: int) -> None:
        """Post (nusd, tokens) at now_us on a rolling counter and drop what left its window."""
        p = self.param
        x.send(
            f"INSERT INTO budget_window (counter_key, ts_us, nusd, tokens) VALUES ({p}, {p}, {p}, {p})",
            (key, now_us, nusd, tokens),
        )
        x.send(f"DELETE FROM budget_window WHERE counter_key = {p} AND ts_us <= {p}", (key, now_us - window_us))

    def insert_alert(self, x: Exec, row: Row) -> Later:
        """Insert an alert row unless its alert_key exists: [(alert_id,)] if this call inserted it
        (and so must deliver it), else []."""
        p = self.param
        return x.send(
            f"INSERT INTO alerts ({', '.join(ALERT_COLUMNS)}) VALUES ({', '.join([p] * len(ALERT_COLUMNS))}) "
            "ON CONFLICT (alert_key) DO NOTHING RETURNING alert_id",
            row,
        )

    def renew(self, x: Exec, hold_ids: Sequence[str], expires_us: int, now_us: int) -> None:
        """Push back the expiry of holds that still count (one that expired stays expired: its
        money may already be reserved by someone else)."""
        p = self.param
        for part in _chunks(hold_ids, _ROWS):
            x.send(
                f"UPDATE budget_holds SET expires_us = {p} WHERE hold_id IN ({', '.join([p] * len(part))}) "
                f"AND expires_us > {p}",
                (expires_us, *part, now_us),
            )

    def sweep(self, x: Exec, now_us: int) -> int:
        """Delete holds that expired (they already count for nothing); return how many."""
        p = self.param
        return len(x(f"DELETE FROM budget_holds WHERE expires_us <= {p} RETURNING hold_id", (now_us,)))

    def sweep_now(self, now_us: int) -> int:
        """sweep() in a transaction of its own."""
        with self._txn(durable=False) as x:
            return self.sweep(x, now_us)

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
        by_key = {c.key: c for c in counters}
        with self._txn(read=True) as x:
            for key, n, t in self.reserved(x, list(by_key), now_us)():
                by_key[key].reserved_nusd, by_key[key].reserved_tokens = int(n), int(t)
            for c in counters:
                if c.window_us:
                    n, t, c.oldest_us = self.window(x, c.key, c.window_us, now_us)()[0]
                    c.posted_nusd, c.posted_tokens = int(n), int(t)

    # -- to implement -------------------------------------------------------------------------------

    @contextmanager
    def _txn(self, *, read: bool = False, durable: bool = True) -> Iterator[Exec]:
        """A transaction: read-only, or a write that commits durably (fsync) or not."""
        raise NotImplementedError
        yield  # pragma: no cover

    def transaction(self, *, durable: bool) -> AbstractContextManager[Exec]:
        """A write transaction for the engine's statements above."""
        return self._txn(durable=durable)

    def close(self) -> None:
        pass


def _chunks(items: Sequence[T], n: int) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _all(parts: Iterable[Later]) -> Later:
    """One Later for the rows of several statements (a long list of keys sent in chunks)."""
    pending = list(parts)
    if len(pending) == 1:
        return pending[0]
    return lambda: [row for later in pending for row in later()]


class Exec:
    """Runs statements inside one transaction: `x(sql, params)` returns the rows; `x.send(sql,
    params)` returns a Later (on SQLite the statement has run already)."""

    __slots__ = ("_cur",)

    def __init__(self, cur: Any) -> None:
        self._cur = cur

    def __call__(self, sql: str, params: Sequence[Any]) -> list[Row]:
        cur = self._cur.execute(sql, params)
        return cur.fetchall() if cur.description is not None else []

    def send(self, sql: str, params: Sequence[Any]) -> Later:
        rows = self(sql, params)
        return lambda: rows


class SQLiteBudgetSQL(BudgetSQL):
    """One connection per process, in its own file handle, shared by its threads in turn (a lock).
    Writes come from the process's budget engine, one batch at a time."""

    param = "?"

    def __init__(
        self, path: str, busy_timeout_ms: int = 30_000, write_lock: AbstractContextManager[Any] | None = None
    ) -> None:
        """`write_lock`: the store's (SQLiteStore.write_lock), so that the ledger's own writes and
        the budget batches of this process take turns without sleeping in SQLite's busy handler."""
        self.path = path
        self._lock = threading.Lock()
        self._write_lock: AbstractContextManager[Any] = (
            write_lock if write_lock is not None else contextlib.nullcontext()
        )
        # one connection (its page cache stays warm): batches of reservations and voids commit
        # without fsync (synchronous=NORMAL), batches with a post with one (FULL)
        self._conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_ms / 1000
        )
        self._conn.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._sync = ""
        self._x = Exec(self._conn)

    @contextmanager
    def _txn(self, *, read: bool = False, durable: bool = True) -> Iterator[Exec]:
        c = self._conn
        with self._lock, contextlib.nullcontext() if read else self._write_lock:
            if read:
                c.execute("BEGIN")
            else:
                mode = "FULL" if durable else "NORMAL"
                if mode != self._sync:
                    c.execute(f"PRAGMA synchronous = {mode}")
                    self._sync = mode
                c.execute("BEGIN IMMEDIATE")
            try:
                yield self._x
            except BaseException:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                raise
            c.execute("COMMIT")

    def lock(self, x: Exec, counters: list[Counter], now_us: int) -> Later:
        """BEGIN IMMEDIATE already holds the database's write lock: read the counters, and create
        the missing ones (a new period or bucket) without rewriting the others' pages."""
        rows: list[Row] = []
        for part in _chunks(counters, _ROWS):
            rows += x(
                "SELECT counter_key, posted_nusd, posted_tokens, blocked_until_us, alerted, 0 FROM budget_counters "
                f"WHERE counter_key IN ({', '.join('?' * len(part))})",
                [c.key for c in part],
            )
        if len(rows) < len(counters):
            have = {r[0] for r in rows}
            missing = [c for c in counters if c.key not in have]
            for part in _chunks(missing, _ROWS):
                x(
                    "INSERT INTO budget_counters (counter_key, budget, bucket, period_start_us, period_end_us, "
                    f"updated_us) VALUES {', '.join(['(?, ?, ?, ?, ?, ?)'] * len(part))}",
                    [v for c in part for v in (c.key, c.budget, c.bucket, c.start_us, c.end_us, now_us)],
                )
            rows += [(c.key, 0, 0, None, 0, 1) for c in missing]
        return lambda: rows

    def close(self) -> None:
        with self._lock:
            self._conn.close()


@runtime_checkable
class KeepsBudgets(Protocol):
    """A store that can keep budgets: SQLiteStore and PostgresStore (a store without this method,
    a test double of the writes only, cannot)."""

    def budget_sql(self) -> BudgetSQL:
        """The budget tables' SQL on this store, for one process (its own connection or pool)."""
        ...
