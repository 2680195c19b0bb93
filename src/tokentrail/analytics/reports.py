"""Report queries: spend grouped by any dimension, unpriced models.

The CLI, the JSON API and the dashboard call these functions and get plain frozen dataclasses
back, never formatted text; the SQL they run is in tokentrail.store.reports.

How a report reads the ledger: when every grouping and filter dimension is kept in a rollup
(the main one, or a dimension rollup: analytics/rollup_plan.py), the whole hours inside
[since, until) come from the rollup and only the partial hours at either edge from raw `events`,
so the totals always equal a sum over raw events while the query touches at most two hours of
them. Any other dimension scans raw events with the same
definitions. Costs are summed in SQL as integer nano-dollars and turned into exact Decimals.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Any

from tokentrail.analytics import rollup_plan
from tokentrail.events import from_micros, nano_to_usd, ts_micros
from tokentrail.store import dim_rollups
from tokentrail.store.reports import (
    TIME_BUCKETS,
    Filters,
    Scope,
    Where,
    check_range,
    dimension,
    event_sums,
    filters,
    micros,
    rollup_sums,
    scope_filters,
    unpriced_hours,
    unpriced_span,
)
from tokentrail.store.rollup_columns import DAY_US, HOUR_US, ROLLUP_MEASURES
from tokentrail.timespec import zone
from tokentrail.types import Store

__all__ = ["Measures", "Report", "ReportRow", "UnpricedModel", "cover", "report", "to_jsonable", "unpriced_models"]

COST = ROLLUP_MEASURES.index("cost_nusd")
CALLS = ROLLUP_MEASURES.index("calls")
UNPRICED = ROLLUP_MEASURES.index("unpriced_calls")
TOOLS = ROLLUP_MEASURES.index("tool_runs")
_QUARTER_US = 900_000_000  # every real UTC offset is a multiple of 15 minutes
GroupValue = str | datetime | None


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


@dataclass(frozen=True, slots=True)
class ReportRow(Measures):
    """One group: `group` pairs each `by` dimension with its value (None: not set; for an hour
    or day bucket, the datetime it starts at, in the report's time zone)."""

    group: tuple[tuple[str, GroupValue], ...] = ()

    def value(self, dimension: str) -> GroupValue:
        return dict(self.group)[dimension]

    def to_dict(self) -> dict[str, Any]:
        return {**{d: to_jsonable(v) for d, v in self.group}, **to_jsonable(self.measures())}


@dataclass(frozen=True, slots=True)
class Report:
    """Spend grouped by `by` over [since, until). `source` says how it was read: "rollup" (whole
    hours from the rollup, edges from events) or "events" (raw events only). `scanned`: no rollup
    holds these dimensions, so every event in range was read; `note` says why."""

    by: tuple[str, ...]
    since: datetime | None
    until: datetime | None
    where: Filters
    tz: str
    source: str
    rows: tuple[ReportRow, ...]
    totals: Measures
    scanned: bool = False
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (Decimal as string, datetimes as ISO-8601)."""
        return {
            "by": list(self.by),
            "since": to_jsonable(self.since),
            "until": to_jsonable(self.until),
            "where": {d: list(v) for d, v in self.where},
            "tz": self.tz,
            "source": self.source,
            "rows": [r.to_dict() for r in self.rows],
            "totals": to_jsonable(self.totals.measures()),
            "scanned": self.scanned,
            **({"note": self.note} if self.note else {}),
        }


@dataclass(frozen=True, slots=True)
class UnpricedModel:
    """A model whose calls in the ledger have no price."""

    provider: str | None
    model: str | None
    calls: int
    first_seen: datetime
    last_seen: datetime


# Rollup tables, coarsest first: (table, its time column, the span of one row in microseconds).
# A coarser level (say a daily rollup with the same dimensions) only needs a line here.
ROLLUPS: tuple[tuple[str, str, int], ...] = (
    ("rollup_daily", "day_us", DAY_US),
    ("rollup_hourly", "hour_us", HOUR_US),
)
DIM_ROLLUPS = tuple(reversed(dim_rollups.TABLES))  # by customer, user, …, declared tags
Range = tuple[int | None, int | None]


def report(
    store: Store,
    *,
    by: Sequence[str] = (),
    since: datetime | None = None,
    until: datetime | None = None,
    where: Where | None = None,
    tz: str | None = None,
    rollup: bool = True,
    scope: Scope | None = None,
) -> Report:
    """Spend over [since, until) grouped by `by` (dimensions, `tag.<key>`, `hour`, `day`),
    filtered by `where` (dimension -> value or values). Hours and days are cut in `tz` (UTC by
    default). `rollup=False` forces a raw scan (for comparisons). `scope` (a key's attribution)
    is AND-ed with `where`: only events inside it count, whatever `where` says. ValueError on
    bad input."""
    dims = tuple(dict.fromkeys(dimension(d, allow_time=True) for d in by))
    own, forced = filters(where), scope_filters(scope)
    flt = (*own, *forced)  # one entry per condition: AND-ed by filter_sql, so `forced` always holds
    shown = tuple({**dict(own), **dict(forced)}.items())  # where the rows come from
    zone_ = zone(tz)
    lo, hi = check_range(since, until)
    timed = tuple(d for d in dims if d in TIME_BUCKETS)
    plain = tuple(d for d in dims if d not in TIME_BUCKETS)
    levels: list[tuple[str, str, int]] = []
    plan = rollup_plan.choose(store, (*plain, *(d for d, _ in flt))) if rollup else rollup_plan.Plan(scan=True)
    if not plan.scan:
        tables = DIM_ROLLUPS if plan.dim else ROLLUPS
        levels = [lvl for lvl in tables if not timed or _aligned(zone_, lo, hi, lvl[2], timed)]
    parts, raw_ranges = cover(lo, hi, [unit for _, _, unit in levels])
    sql_rows: list[Sequence[Any]] = []
    for i, a, b in parts:
        table, column, _ = levels[i]
        if plan.dim:
            sql_rows += dim_rollups.query(store, table, column, plan.dim, plain, bool(timed), flt, a, b)
        else:
            sql_rows += rollup_sums(store, table, column, plain, bool(timed), flt, a, b)
    if raw_ranges:
        slot = HOUR_US if not timed or _aligned(zone_, lo, hi, HOUR_US, timed) else _QUARTER_US
        sql_rows += event_sums(store, plain, bool(timed), slot, flt, raw_ranges)
    rows, totals = _merge(sql_rows, dims, bool(timed), zone_)
    source = "rollup" if parts else "events"
    return Report(dims, since, until, shown, tz or "UTC", source, rows, totals, plan.scan, plan.note)


def cover(
    lo: int | None, hi: int | None, units: Sequence[int]
) -> tuple[list[tuple[int, int | None, int | None]], list[Range]]:
    """Split [lo, hi) (None: open) into whole units of each rollup level, coarsest first, and
    what is left for raw events: ([(level, start, end)], [(start, end)])."""
    parts: list[tuple[int, int | None, int | None]] = []
    pending: list[Range] = [(lo, hi)]
    for i, unit in enumerate(units):
        rest: list[Range] = []
        for a, b in pending:
            a2 = None if a is None else -(-a // unit) * unit  # the first whole unit
            b2 = None if b is None else b // unit * unit  # the end of the last whole unit
            if a2 is not None and b2 is not None and a2 >= b2:
                rest.append((a, b))
                continue
            parts.append((i, a2, b2))
            rest += [(x, y) for x, y in ((a, a2), (b2, b)) if x is not None and y is not None and x < y]
        pending = rest
    return parts, pending


def _merge(
    sql_rows: Iterable[Sequence[Any]], dims: tuple[str, ...], timed: bool, zone_: tzinfo
) -> tuple[tuple[ReportRow, ...], Measures]:
    """Add up the rows of every query by group (time slots mapped to local hour/day buckets)."""
    width = len(ROLLUP_MEASURES)
    first = 1 if timed else 0
    acc: dict[tuple[Any, ...], list[int]] = {}
    memo: dict[tuple[int, str], int] = {}
    for r in sql_rows:
        sums = r[len(r) - width :]
        if sums[CALLS] is None:
            continue  # an ungrouped aggregate over no rows
        plain = iter(r[first : len(r) - width])
        key = tuple(_bucket(memo, int(r[0]), d, zone_) if d in TIME_BUCKETS else (next(plain) or None) for d in dims)
        m = acc.get(key)
        if m is None:
            m = acc[key] = [0] * width
        for i, v in enumerate(sums):
            if v is not None:
                m[i] += int(v)

    def order(item: tuple[tuple[Any, ...], list[int]]) -> tuple[Any, ...]:
        key, m = item
        times = tuple(v for d, v in zip(dims, key, strict=True) if d in TIME_BUCKETS)
        return (times, -m[COST], -m[CALLS], tuple((v is None, str(v)) for v in key))

    rows = []
    total = [0] * width
    for key, m in sorted(acc.items(), key=order):
        group = tuple(
            (d, from_micros(v).astimezone(zone_) if d in TIME_BUCKETS else v) for d, v in zip(dims, key, strict=True)
        )
        rows.append(ReportRow(**Measures.from_sums(m).measures(), group=group))
        total = [a + b for a, b in zip(total, m, strict=True)]
    return tuple(rows), Measures.from_sums(total)


def _bucket(memo: dict[tuple[int, str], int], slot_us: int, unit: str, zone_: tzinfo) -> int:
    """The UTC start (micros) of the local hour or day that contains a time slot."""
    k = (slot_us, unit)
    if k not in memo:
        t = from_micros(slot_us).astimezone(zone_).replace(minute=0, second=0, microsecond=0)
        if unit == "day":
            t = t.replace(hour=0)
        memo[k] = ts_micros(t.astimezone(UTC))
    return memo[k]


def _aligned(zone_: tzinfo, lo: int | None, hi: int | None, unit: int, buckets: Sequence[str]) -> bool:
    """Whether rows `unit` long can be mapped to the local hour/day buckets: the unit fits in
    every bucket and the zone's UTC offset is a whole number of units around the range."""
    if "hour" in buckets and unit > HOUR_US:
        return False
    step = timedelta(microseconds=unit)
    points = [from_micros(v) for v in (lo, hi) if v is not None] or [datetime.now(UTC)]
    points += [p.replace(month=m, day=1) for p in points for m in (1, 7)]
    return all((p.astimezone(zone_).utcoffset() or timedelta(0)) % step == timedelta(0) for p in points)


def unpriced_models(store: Store, since: datetime | None = None) -> list[UnpricedModel]:
    """Models with unpriced calls since `since` (all time by default), most calls first."""
    counts = report(store, by=("provider", "model"), since=since)
    wanted = {(r.value("provider"), r.value("model")): r.unpriced_calls for r in counts.rows if r.unpriced_calls}
    if not wanted:
        return []
    lo = micros(since)
    hours = unpriced_hours(store, None if lo is None else lo // HOUR_US * HOUR_US)
    out = []
    for provider, model, first, last in hours:
        key = (provider or None, model or None)
        if key in wanted:
            seen = _seen(store, provider, model, max(int(first), lo or 0), int(last))
            out.append(UnpricedModel(provider or None, model or None, wanted[key], *seen))
    return sorted(out, key=lambda u: (-u.calls, str(u.provider), str(u.model)))


def _seen(store: Store, provider: str, model: str, first: int, last: int) -> tuple[datetime, datetime]:
    """The exact first and last unpriced call, looked up inside the first and last rollup hours."""
    lo, hi = unpriced_span(
        store, provider, model, (first, first // HOUR_US * HOUR_US + HOUR_US), (last, last + HOUR_US)
    )
    if lo is None:
        lo, hi = first, last
    return from_micros(int(lo)), from_micros(int(hi))
