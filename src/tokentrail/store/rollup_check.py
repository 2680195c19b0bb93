"""The rollups checked against the events they sum (part of `tokentrail audit verify`), the
dimension rollups (store/dim_rollups.py: by customer, user, …, declared tags) too.

The audit chain covers the events; reports read the hourly and daily rollups. A rollup row
changed by hand (`UPDATE rollup_hourly SET cost_nusd = 0`) would make every report lie while the
chain still verifies, so `verify` recomputes the rollups from the events and compares them, one
statement per family of rollups and range of days (store/rollup_diff.py), each one snapshot:
writers committing meanwhile are never mistaken for tampering. Which days: all of them, or the
window store/rollup_window.py chooses (the default `audit verify`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tokentrail.events import from_micros
from tokentrail.exceptions import ConfigError
from tokentrail.store import dim_rollups, rollup_diff, session_rollup
from tokentrail.store.rollup_columns import (
    DAY_US,
    HOUR_US,
    ROLLUP_DIMENSIONS,
    ROLLUP_MEASURES,
    ROLLUP_SQL_DIMENSIONS,
    ROLLUP_SQL_MEASURES,
    floor_to,
)
from tokentrail.store.rollup_window import Range
from tokentrail.types import Store

ROLLUPS = (("rollup_hourly", "hour_us", HOUR_US), ("rollup_daily", "day_us", DAY_US))
MAX_SHOWN = 5
_KEYS = {
    **{t: ROLLUP_DIMENSIONS for t, _ in rollup_diff.MAIN_TABLES},
    **{t: rollup_diff.DIM_KEY for t, _ in rollup_diff.DIM_TABLES},
}


@dataclass(frozen=True, slots=True)
class RollupMismatch:
    """A rollup row that does not hold what its events add up to (`expected` None: a row with no
    events; `found` None: events the rollup lacks)."""

    table: str
    start_us: int
    group: tuple[tuple[str, str], ...]
    expected: dict[str, int] | None
    found: dict[str, int] | None

    def __str__(self) -> str:
        unit = "hour" if self.table.endswith("hourly") else "day"
        where = ", ".join(f"{k}={v!r}" for k, v in self.group if v) or "no dimension"
        head = f"{self.table}, {unit} of {from_micros(self.start_us):%Y-%m-%d %H:%M} UTC, {where}"
        if self.table == session_rollup.TABLE:
            head = f"{self.table}, {where}"
        if self.found is None:
            return f"{head}: no rollup row for events of {_show(self.expected)}"
        if self.expected is None:
            return f"{head}: a rollup row of {_show(self.found)} with no events"
        differ = [
            f"{m} {self.found[m]} (the events: {self.expected[m]})"
            for m in self.found
            if self.found[m] != self.expected.get(m)
        ]
        return f"{head}: {'; '.join(differ)}"


def check_rollups(
    store: Store,
    *,
    since_us: int | None = None,
    ranges: Sequence[Range] | None = None,
    limit: int = MAX_SHOWN,
) -> list[RollupMismatch]:
    """The rollup rows that disagree with the events, at most `limit` per table; empty when the
    rollups are right. Which rows: those of the day `ranges` (tokentrail.store.rollup_window), or
    from the UTC day of `since_us` on, or (neither) all of them."""
    if ranges is None:
        ranges = [(None, None) if since_us is None else (since_us - since_us % DAY_US, None)]
    keys = dim_rollups.tag_keys(store)  # None: the dimension rollups are not migrated
    found: dict[str, list[RollupMismatch]] = {}
    for lo, hi in ranges:
        statements = [rollup_diff.main_diff(store.dialect, lo, hi, limit)]
        if keys is not None:
            statements.append(rollup_diff.dim_diff(store.dialect, keys, lo, hi, limit))
        for sql, params in statements:
            for m in _pairs(store.query(sql, params)):
                shown = found.setdefault(m.table, [])
                if len(shown) < limit:
                    shown.append(m)
    if session_rollup.available(store):  # the session summary (0018): the sessions the ranges touch
        shown = found.setdefault(session_rollup.TABLE, [])
        for lo, hi in ranges:
            sql, params = session_rollup.check_sql(store.dialect, lo, hi, limit)
            shown += _session_pairs(store.query(sql, params), limit - len(shown))
    return [m for ms in found.values() for m in ms]


def _session_pairs(rows: Sequence[Sequence[Any]], limit: int) -> list[RollupMismatch]:
    """Mismatches of the session summary from rows `('events' | 'rollup', *key, *measures)`."""
    names, measures = session_rollup.KEY_COLUMNS, session_rollup.MEASURES
    pairs: dict[tuple[Any, ...], dict[str, dict[str, int]]] = {}
    for r in rows:
        key = tuple(r[1 : 1 + len(names)])
        pairs.setdefault(key, {})[r[0]] = {m: int(v) for m, v in zip(measures, r[1 + len(names) :], strict=True)}
    return [
        RollupMismatch(
            session_rollup.TABLE,
            (sides.get("events") or sides["rollup"])["first_us"],
            tuple(zip(names, key, strict=True)),
            sides.get("events"),
            sides.get("rollup"),
        )
        for key, sides in list(pairs.items())[: max(limit, 0)]
    ]


def _pairs(rows: Sequence[Sequence[Any]]) -> list[RollupMismatch]:
    """Mismatches from rows `('events' | 'rollup', table, time, *key, *measures)`, both sides of a
    key paired."""
    pairs: dict[tuple[Any, ...], dict[str, dict[str, int]]] = {}
    for r in rows:
        table = str(r[1])
        width = 1 + len(_KEYS[table])
        key = (table, *r[2 : 2 + width])
        pairs.setdefault(key, {})[r[0]] = {m: int(v) for m, v in zip(ROLLUP_MEASURES, r[2 + width :], strict=True)}
    return [
        RollupMismatch(
            key[0],
            int(key[1]),
            tuple(zip(_KEYS[key[0]], key[2:], strict=True)),
            sides.get("events"),
            sides.get("rollup"),
        )
        for key, sides in pairs.items()
    ]


def _show(m: dict[str, int] | None) -> str:
    return ", ".join(f"{k} {v}" for k, v in (m or {}).items() if v) or "nothing"


def rebuild_rollups(store: Store) -> int:
    """Recompute both rollups from the events, in one transaction that writers wait for; return
    the hourly rows written. The repair after `check_rollups` found rows changed by hand (on
    PostgreSQL, run it as the owner: the application role may not write the rollups)."""
    statements: list[tuple[str, Sequence[Any]]] = []
    keys = dim_rollups.tag_keys(store)
    for table, column, unit in ROLLUPS:
        cols = ", ".join((column, *ROLLUP_DIMENSIONS, *ROLLUP_MEASURES))
        groups = ", ".join(str(i) for i in range(1, len(ROLLUP_DIMENSIONS) + 2))
        statements += [
            (f"DELETE FROM {table}", ()),
            (
                f"INSERT INTO {table} ({cols}) SELECT {floor_to('ts_us', unit)}, {', '.join(ROLLUP_SQL_DIMENSIONS)}, "
                f"{', '.join(ROLLUP_SQL_MEASURES)} FROM events GROUP BY {groups}",
                (),
            ),
        ]
    if keys is not None:
        statements += dim_rollups.rebuild_statements(store.dialect, keys)
    if session_rollup.available(store):
        statements += session_rollup.rebuild_statements()
    if store.dialect.name == "postgresql":
        from tokentrail.store.postgres import PostgresStore

        if not isinstance(store, PostgresStore):
            raise TypeError(f"cannot rebuild the rollups of a {type(store).__name__}")
        from psycopg.errors import InsufficientPrivilege

        try:
            with store.connection() as pg, pg.transaction():
                pg.execute("SELECT seq FROM chain_head WHERE id = 1 FOR UPDATE")  # writers wait
                for sql, params in statements:
                    pg.execute(sql, params or None)
        except InsufficientPrivilege as e:
            # the wrong role for the job, like `migrate` run as the app role: a usage error
            raise ConfigError(f"cannot rebuild the rollups ({e}): run it as the ledger's owner") from None
    else:
        import sqlite3

        from tokentrail.store.sqlite import SQLiteStore

        if not isinstance(store, SQLiteStore):
            raise TypeError(f"cannot rebuild the rollups of a {type(store).__name__}")
        conn = sqlite3.connect(str(store.path), isolation_level=None, timeout=30)
        try:
            with store.write_lock:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for sql, params in statements:
                        conn.execute(sql, params)
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
        finally:
            conn.close()
    return int(store.query("SELECT COUNT(*) FROM rollup_hourly")[0][0])
