"""Shared pieces of the report queries: dimensions, filters, measures and JSON conversion.

Every SQL fragment here runs on both backends: placeholders come from `store.dialect.param`,
JSON from `store.dialect.json_text`, the rest is ANSI SQL. `%` is avoided on purpose (no LIKE,
no modulo): psycopg reads it as a placeholder. Whatever a caller gives (filter values, tag keys)
is a parameter, never SQL text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from tokentrail.events import nano_to_usd, text_problem, ts_micros
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
COST = ROLLUP_MEASURES.index("cost_nusd")
CALLS = ROLLUP_MEASURES.index("calls")
UNPRICED = ROLLUP_MEASURES.index("unpriced_calls")
TOOLS = ROLLUP_MEASURES.index("tool_runs")


@dataclass(frozen=True, slots=True)
class Measures:
    """What a group of events used and cost. `calls` counts model calls, `tool_runs` tool runs;
    `cost_usd` includes adjustments, and is None when every call had no price and nothing was
    spent (unpriced, never $0). `unpriced_calls` had no price; `invalid_calls` reported
    impossible usage (no cost); `errors` counts failed calls and tool runs; `estimated_calls` never
    had their usage reported by the provider (cut or abandoned streams): their counts are estimates."""

    calls: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: Decimal | None = Decimal(0)
    unpriced_calls: int = 0
    invalid_calls: int = 0
    tool_runs: int = 0
    estimated_calls: int = 0

    @property
    def tokens(self) -> int:
        """Input plus output tokens (inclusive counts: cache and reasoning are inside them)."""
        return self.input_tokens + self.output_tokens

    @classmethod
    def from_sums(cls, sums: Sequence[Any]) -> Measures:
        """From sums in ROLLUP_MEASURES order (cost in integer nano-dollars; None counts as 0)."""
        values: list[Any] = [int(v or 0) for v in sums]
        everything_unpriced = values[CALLS] and values[UNPRICED] == values[CALLS] and not values[TOOLS]
        values[COST] = None if everything_unpriced and values[COST] == 0 else nano_to_usd(values[COST])
        return cls(*values)

    def measures(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(Measures)}


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


def to_jsonable(value: Any) -> Any:
    """Dataclasses, Decimals, datetimes and tuples as JSON-ready values (Decimal as a fixed-point
    string: "0.000000000", never "0E-9")."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value
