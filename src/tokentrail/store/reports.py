"""The SQL of the reports: dimensions, filters and measures, and the statements that sum them.

tokentrail.analytics.reports and .sessions plan a report and shape its rows; every statement
they run is here. Every SQL fragment runs on both backends: placeholders come from `store.dialect.param`,
JSON from `store.dialect.json_text`, the rest is ANSI SQL. `%` is avoided on purpose (no LIKE,
no modulo): psycopg reads it as a placeholder. Whatever a caller gives (filter values, tag keys)
is a parameter, never SQL text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from tokentrail.events import text_problem, ts_micros
from tokentrail.store.rollup_columns import ROLLUP_MEASURES
from tokentrail.types import Store

# Report dimension -> events column.
COLUMNS: dict[str, str] = {
    "org": "org",
    "team": "team",
    "project": "project",
    "agent": "agent",
    "provider": "provider",
    "model": "model",
    "task_type": "task_type",
    "kind": "kind",
    "session": "session_id",
    "user": "user_id",
    "customer": "customer",
    "workflow": "workflow",
    "step": "step",
    "status": "status",
    "tool": "tool_name",
}
TIME_BUCKETS = ("hour", "day")
DIMENSIONS = (*COLUMNS, "tag.<key>")
_TAG_KEY = re.compile(r"[^'\"\\\x00-\x1f]{1,256}")

# The measures over raw events, defined exactly as the rollup defines them (store/_rollup.py).
MODEL_CALL = "kind IN ('llm', 'embedding')"
INVALID = "SUBSTR(status, 1, 13) = 'invalid_usage'"
NO_PRICE = "cost_nusd IS NULL AND kind IN ('llm', 'embedding')"
RAW_MEASURES: dict[str, str] = {
    "calls": "SUM(CASE WHEN kind IN ('llm', 'embedding') THEN 1 ELSE 0 END)",
    "errors": "SUM(CASE WHEN kind <> 'adjustment' AND status <> 'ok' THEN 1 ELSE 0 END)",
    "input_tokens": "SUM(input_tokens)",
    "output_tokens": "SUM(output_tokens)",
    "cache_read_tokens": "SUM(cache_read_tokens)",
    "cache_write_tokens": "SUM(cache_write_tokens)",
    "reasoning_tokens": "SUM(reasoning_tokens)",
    "cost_nusd": "SUM(cost_nusd)",
    "unpriced_calls": f"SUM(CASE WHEN {NO_PRICE} AND NOT ({INVALID}) THEN 1 ELSE 0 END)",
    "invalid_calls": f"SUM(CASE WHEN {NO_PRICE} AND {INVALID} THEN 1 ELSE 0 END)",
    "tool_runs": "SUM(CASE WHEN kind = 'tool' THEN 1 ELSE 0 END)",
    "estimated_calls": "SUM(usage_estimated)",
}
RAW_SUMS = tuple(RAW_MEASURES[m] for m in ROLLUP_MEASURES)
ROLLUP_SUMS = tuple(f"SUM({m})" for m in ROLLUP_MEASURES)


def dimension(name: str, *, allow_time: bool = False) -> str:
    """The canonical name of a report dimension; ValueError naming it and the valid ones. The one
    place a dimension's name is normalised (stripped, case-folded), so a scope check and the query
    it guards always agree on which dimension `TEAM`, `Team` or ` team` means."""
    d = name.strip().casefold()
    if d in COLUMNS or (allow_time and d in TIME_BUCKETS):
        return d
    d = name.strip().lower()  # a tag key is matched as stored (lower-cased, not case-folded)
    if d.startswith("tag."):
        if _TAG_KEY.fullmatch(d[4:]) and text_problem(d) is None:
            return d
        raise ValueError(f"bad tag dimension {name!r}: write tag.<key>, a key without quotes or backslashes")
    if d in TIME_BUCKETS:
        raise ValueError(f"{d!r} cannot be a filter: use --since/--until for time")
    valid = ", ".join((*DIMENSIONS, *(TIME_BUCKETS if allow_time else ())))
    raise ValueError(f"unknown dimension {name!r}; valid dimensions: {valid}")


Where = Mapping[str, "str | Sequence[str]"]
Filters = tuple[tuple[str, tuple[str, ...]], ...]


def filters(where: Where | None) -> Filters:
    """Normalised filters: (dimension, accepted values); several values of one dimension OR,
    different dimensions AND. The value '' matches events that do not have the dimension."""
    out: dict[str, tuple[str, ...]] = {}
    for key, value in (where or {}).items():
        values = (value,) if isinstance(value, str) else tuple(value)
        if not values:
            raise ValueError(f"filter {key!r} has no value")
        for v in values:
            if (
                isinstance(v, str) and (why := text_problem(v)) is not None
            ):  # nothing stored holds one; PostgreSQL would fail
                raise ValueError(f"filter {key!r}: the value {v[:64]!r} {why}")
        d = dimension(key)
        out[d] = (*out.get(d, ()), *values)
    return tuple(out.items())


Scope = Mapping[str, str]
# What a key's attribution may pin (tokentrail.context.ATTRIBUTES): columns of events and outcomes.
SCOPE_DIMENSIONS = ("org", "team", "project", "agent", "user", "customer", "workflow", "task_type")
# The attribution columns, in the order events, outcomes and anomalies hold them (rows are positional)
ATTRIBUTION_COLUMNS = tuple(COLUMNS[d] for d in SCOPE_DIMENSIONS)


def scope_filters(scope: Scope | None) -> Filters:
    """A caller's scope (a key's attribution: dimension -> its one value) as filters to AND with
    the caller's own: kept apart from `filters`, which ORs the values of one dimension, so no
    filter a caller sends can widen it."""
    out: list[tuple[str, tuple[str, ...]]] = []
    for key, value in (scope or {}).items():
        d = dimension(key)
        if d not in SCOPE_DIMENSIONS or not isinstance(value, str) or not value:
            raise ValueError(f"a scope is attribution with values ({', '.join(SCOPE_DIMENSIONS)}), not {key}={value!r}")
        out.append((d, (value,)))
    return tuple(out)


def expression(store: Store, d: str) -> tuple[str, list[str]]:
    """SQL for a (non-time) dimension over the events table, and its parameters."""
    if d.startswith("tag."):
        return store.dialect.json_text("tags"), [store.dialect.json_key(d[4:])]
    return COLUMNS[d], []


def filter_sql(store: Store, flt: Filters, *, rollup: bool = False) -> tuple[str, list[str]]:
    """AND-ed conditions and their parameters (the rollup stores '' for a missing dimension)."""
    p = store.dialect.param
    conds: list[str] = []
    params: list[str] = []
    for d, values in flt:
        col, cparams = (d, []) if rollup else expression(store, d)
        if "" in values and not rollup:
            col = f"COALESCE({col}, '')"
        conds.append(f"{col} IN ({', '.join(p for _ in values)})")
        params.extend((*cparams, *values))
    return " AND ".join(conds), params


def time_sql(store: Store, lo: int | None, hi: int | None, col: str = "ts_us") -> tuple[list[str], list[int]]:
    """Conditions for lo <= col < hi (either bound may be open)."""
    p = store.dialect.param
    conds, params = [], []
    if lo is not None:
        conds.append(f"{col} >= {p}")
        params.append(lo)
    if hi is not None:
        conds.append(f"{col} < {p}")
        params.append(hi)
    return conds, params


def micros(t: datetime | None) -> int | None:
    """Microseconds since the epoch (a naive datetime is taken as UTC)."""
    if t is None:
        return None
    return ts_micros(t if t.tzinfo else t.replace(tzinfo=UTC))


def check_range(since: datetime | None, until: datetime | None) -> tuple[int | None, int | None]:
    lo, hi = micros(since), micros(until)
    if lo is not None and hi is not None and lo >= hi:
        raise ValueError(f"the start {since:%Y-%m-%d %H:%M %Z} is not before the end {until:%Y-%m-%d %H:%M %Z}")
    return lo, hi


CHUNK = 500  # ids per IN (...) list: far below either backend's limit on parameters


def where_sql(conds: Sequence[str]) -> str:
    """` WHERE a AND b` of the non-empty conditions, or nothing."""
    live = [c for c in conds if c]
    return f" WHERE {' AND '.join(live)}" if live else ""


def by_ids(
    store: Store,
    select: str,
    column: str,
    ids: Sequence[str],
    conds: Sequence[str] = (),
    params: Sequence[Any] = (),
    tail: str = "",
) -> list[Any]:
    """The rows of `select WHERE column IN (ids) AND conds tail`, run on CHUNK distinct ids at a
    time (so any number of ids fits); `params` are those of `conds`. `tail` (GROUP BY, ORDER BY)
    applies per chunk: group by `column` for sums that a chunk holds whole."""
    p = store.dialect.param
    out: list[Any] = []
    unique = list(dict.fromkeys(ids))
    for i in range(0, len(unique), CHUNK):
        chunk = unique[i : i + CHUNK]
        where = where_sql([f"{column} IN ({', '.join(p for _ in chunk)})", *conds])
        out += store.query(f"{select}{where}{tail}", [*chunk, *params])
    return out


# -- the statements -----------------------------------------------------------------------------


def rollup_sums(
    store: Store,
    table: str,
    column: str,
    plain: Sequence[str],
    timed: bool,
    flt: Filters,
    start: int | None,
    end: int | None,
) -> list[Any]:
    """Rows of (time slot if `timed`, the `plain` dimensions..., ROLLUP_MEASURES sums) from a
    rollup table over [start, end) of its time `column`."""
    groups = (*((column,) if timed else ()), *plain)
    conds, params = time_sql(store, start, end, column)
    cond, fparams = filter_sql(store, flt, rollup=True)
    return _grouped(store, table, groups, ROLLUP_SUMS, [*conds, cond], [*params, *fparams])


def event_sums(
    store: Store,
    plain: Sequence[str],
    timed: bool,
    slot: int,
    flt: Filters,
    ranges: Sequence[tuple[int | None, int | None]],
) -> list[Any]:
    """The same rows as `rollup_sums`, from raw events inside any of `ranges`; a time slot is
    `slot` microseconds long."""
    exprs = [expression(store, d) for d in plain]
    groups = (*((f"(ts_us / {slot}) * {slot}",) if timed else ()), *(sql for sql, _ in exprs))
    spans: list[str] = []
    params: list[Any] = [p for _, ps in exprs for p in ps]  # the grouped expressions' come first
    for lo, hi in ranges:
        conds, ps = time_sql(store, lo, hi)
        spans.append(" AND ".join(conds) or "1 = 1")
        params += ps
    cond, fparams = filter_sql(store, flt)
    when = " OR ".join(f"({s})" for s in spans)
    return _grouped(store, "events", groups, RAW_SUMS, [f"({when})", cond], [*params, *fparams])


def _grouped(
    store: Store, table: str, groups: Sequence[str], sums: Sequence[str], conds: list[str], params: list[Any]
) -> list[Any]:
    where = " AND ".join(c for c in conds if c)
    sql = f"SELECT {', '.join((*groups, *sums))} FROM {table}"
    sql += f" WHERE {where}" if where else ""
    # grouped by position: an expression with a parameter (a tag key) is not repeated
    sql += f" GROUP BY {', '.join(str(i) for i in range(1, len(groups) + 1))}" if groups else ""
    return store.query(sql, params)


def unpriced_hours(store: Store, since_hour_us: int | None) -> list[Any]:
    """(provider, model, first hour, last hour) of the rollup hours with unpriced calls, from
    the hour `since_hour_us` on ('' for a missing provider or model, as the rollup keeps it)."""
    conds, params = time_sql(store, since_hour_us, None, "hour_us")
    return store.query(
        "SELECT provider, model, MIN(hour_us), MAX(hour_us) FROM rollup_hourly WHERE "
        + " AND ".join(["unpriced_calls > 0", *conds])
        + " GROUP BY provider, model",
        params,
    )


def unpriced_span(store: Store, provider: str, model: str, first: tuple[int, int], last: tuple[int, int]) -> Any:
    """(MIN, MAX) ts_us of the unpriced calls of a provider and model inside the two time ranges
    `first` and `last` ([start, end) each); (None, None) when there is none."""
    p = store.dialect.param
    rows = store.query(
        f"SELECT MIN(ts_us), MAX(ts_us) FROM events WHERE ((ts_us >= {p} AND ts_us < {p}) OR (ts_us >= {p} AND "
        f"ts_us < {p})) AND COALESCE(provider, '') = {p} AND COALESCE(model, '') = {p} AND {NO_PRICE} "
        f"AND NOT ({INVALID})",
        [*first, *last, provider, model],
    )
    return rows[0] if rows else (None, None)
