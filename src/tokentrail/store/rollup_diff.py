"""SQL listing where the rollups and the events disagree over a range of whole UTC days.

One statement per family of rollups (the main one; the dimension ones of store/dim_rollups.py)
and per range, each one snapshot: the events of the range are grouped by hour once, the daily
rows are summed from that hourly result (never a second scan), and each table is compared both
ways with EXCEPT. The dimension statement groups the events once by every column its dimensions
read and spreads each group over them, as the PostgreSQL trigger writes them, instead of one scan
per dimension. Every row is `('events' | 'rollup', table, time, *key, *measures)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tokentrail.store._dim_rollup import DIM_COLUMNS, SCOPE_COLUMNS
from tokentrail.store.rollup_columns import (
    DAY_US,
    HOUR_US,
    ROLLUP_DIMENSIONS,
    ROLLUP_MEASURES,
    ROLLUP_SQL_MEASURES,
    floor_to,
)
from tokentrail.types import SQLDialect

MAIN_TABLES = (("rollup_hourly", "hour_us"), ("rollup_daily", "day_us"))
DIM_TABLES = (("rollup_dim_hourly", "hour_us"), ("rollup_dim_daily", "day_us"))
DIM_KEY = (*SCOPE_COLUMNS, "dim", "value")
Stmt = tuple[str, list[Any]]


def _between(d: SQLDialect, column: str, lo: int | None, hi: int | None) -> tuple[list[str], list[Any]]:
    conds: list[str] = []
    params: list[Any] = []
    for bound, op in ((lo, ">="), (hi, "<")):
        if bound is not None:
            conds.append(f"{column} {op} {d.param}")
            params.append(bound)
    return conds, params


def _where(conds: Sequence[str]) -> str:
    return f" WHERE {' AND '.join(conds)}" if conds else ""


def _compare(ctes: list[str], params: list[Any], pairs: Sequence[tuple[str, str, str]], limit: int) -> Stmt:
    """The final SELECT: for each (table, expected CTE, found CTE), both EXCEPTs, `limit` rows each."""
    parts: list[str] = []
    for table, exp, found in pairs:
        for side, a, b in (("events", exp, found), ("rollup", found, exp)):
            parts.append(
                f"SELECT * FROM (SELECT '{side}' AS side, '{table}' AS tbl, x.* FROM "
                f"(SELECT * FROM {a} EXCEPT SELECT * FROM {b}) x LIMIT {int(limit)}) y{len(parts)}"
            )
    return f"WITH {', '.join(ctes)} {' UNION ALL '.join(parts)}", params


def main_diff(d: SQLDialect, lo: int | None, hi: int | None, limit: int) -> Stmt:
    """Where rollup_hourly and rollup_daily disagree with the events of [lo, hi)."""
    dims = ", ".join(ROLLUP_DIMENSIONS)
    width = 1 + len(ROLLUP_DIMENSIONS)
    groups = ", ".join(str(i) for i in range(1, width + 1))
    firsts = ", ".join(f"COALESCE({c}, '') AS {c}" for c in ROLLUP_DIMENSIONS)
    sums = ", ".join(f"{sql} AS {m}" for sql, m in zip(ROLLUP_SQL_MEASURES, ROLLUP_MEASURES, strict=True))
    resum = ", ".join(f"SUM({m}) AS {m}" for m in ROLLUP_MEASURES)
    measures = ", ".join(ROLLUP_MEASURES)
    conds, params = _between(d, "ts_us", lo, hi)
    ctes = [
        f"eh AS (SELECT {floor_to('ts_us', HOUR_US)} AS t, {firsts}, {sums} FROM events{_where(conds)} "
        f"GROUP BY {groups})",
        f"ed AS (SELECT {floor_to('t', DAY_US)} AS t, {dims}, {resum} FROM eh GROUP BY {groups})",
    ]
    for (table, column), name in zip(MAIN_TABLES, ("fh", "fd"), strict=True):
        c, p = _between(d, column, lo, hi)
        ctes.append(f"{name} AS (SELECT {column}, {dims}, {measures} FROM {table}{_where(c)})")
        params += p
    return _compare(ctes, params, (("rollup_hourly", "eh", "fh"), ("rollup_daily", "ed", "fd")), limit)


def dim_diff(d: SQLDialect, keys: Sequence[str], lo: int | None, hi: int | None, limit: int) -> Stmt:
    """Where rollup_dim_hourly and rollup_dim_daily disagree with the events of [lo, hi), for the
    fixed dimensions and the declared tag `keys`. A bounded range reads only the rows of those
    dimensions (their primary key starts with `dim`); the unbounded one reads every row."""
    p = d.param
    scope = ", ".join(SCOPE_COLUMNS)
    cols = [(f"v{i}", f"COALESCE({c}, '')") for i, c in enumerate(DIM_COLUMNS.values())]
    cols += [(f"k{i}", f"COALESCE({d.json_text('tags')}, '')") for i in range(len(keys))]
    firsts = ", ".join(f"COALESCE({c}, '') AS {c}" for c in SCOPE_COLUMNS)
    sums = ", ".join(f"{sql} AS {m}" for sql, m in zip(ROLLUP_SQL_MEASURES, ROLLUP_MEASURES, strict=True))
    resum = ", ".join(f"SUM({m}) AS {m}" for m in ROLLUP_MEASURES)
    measures = ", ".join(ROLLUP_MEASURES)
    width = 1 + len(SCOPE_COLUMNS) + len(cols)
    conds, range_params = _between(d, "ts_us", lo, hi)
    params: list[Any] = [d.json_key(k) for k in keys] + range_params
    g = (
        f"g AS (SELECT {floor_to('ts_us', HOUR_US)} AS t, {firsts}, {', '.join(f'{sql} AS {n}' for n, sql in cols)}, "
        f"{sums} FROM events{_where(conds)} GROUP BY {', '.join(str(i) for i in range(1, width + 1))})"
    )
    names = [*DIM_COLUMNS, *(f"tag.{k}" for k in keys)]
    spread = " UNION ALL ".join(
        f"SELECT t, {scope}, CAST({p} AS TEXT) AS dim, {n} AS value, {resum} FROM g GROUP BY t, {scope}, {n}"
        for n, _ in cols
    )
    params += names
    key = ", ".join(DIM_KEY)
    ctes = [
        g,
        f"eh AS ({spread})",
        f"ed AS (SELECT {floor_to('t', DAY_US)} AS t, {key}, {resum} FROM eh GROUP BY 1, 2, 3, 4, 5, 6)",
    ]
    for (table, column), name in zip(DIM_TABLES, ("fh", "fd"), strict=True):
        c, ps = _between(d, column, lo, hi)
        if c:  # a bounded range: through the primary key (dim, time, ...)
            c.insert(0, f"dim IN ({', '.join(p for _ in names)})")
            ps = [*names, *ps]
        ctes.append(f"{name} AS (SELECT {column}, {key}, {measures} FROM {table}{_where(c)})")
        params += ps
    return _compare(ctes, params, (("rollup_dim_hourly", "eh", "fh"), ("rollup_dim_daily", "ed", "fd")), limit)
