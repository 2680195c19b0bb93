"""SQL of the exports: raw events grouped by time slot × model × attribution, read chunk by chunk.

The hourly rollup lacks customer, user, workflow and tags, so an export with full attribution
groups raw events in SQL. The window is read one chunk (a UTC day by default) at a time, each
chunk's groups ordered by slot: memory is bounded by one chunk's groups, never the events.
Both backends: placeholders from `store.dialect.param`, the rest ANSI SQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from tokentrail.store.reports import ATTRIBUTION_COLUMNS, SCOPE_DIMENSIONS, Filters, by_ids, filter_sql, time_sql
from tokentrail.store.rollup_columns import DAY_US
from tokentrail.types import Store

# The grouped columns, in the order every row carries them after its slot.
GROUPS = (
    "kind",
    "provider",
    "model",
    *ATTRIBUTION_COLUMNS,
    "CAST(tags AS TEXT)",
    "price_version",
    "CAST(unit_prices AS TEXT)",
    "CASE WHEN cost_nusd IS NULL THEN 0 ELSE 1 END",
)
GROUP_NAMES = (
    "kind",
    "provider",
    "model",
    *SCOPE_DIMENSIONS,
    "tags",
    "price_version",
    "unit_prices",
    "priced",
)
SESSION_GROUPS = ("session_id", "parent_session_id")  # agent trees (sub_agents allocation)
SUMS = (
    "COUNT(*)",
    "SUM(input_tokens)",
    "SUM(output_tokens)",
    "SUM(cache_read_tokens)",
    "SUM(cache_write_tokens)",
    "SUM(cost_nusd)",
    "SUM(usage_estimated)",
)
SUM_NAMES = (
    "events",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cost_nusd",
    "estimated",
)


def time_span(store: Store, lo: int | None, hi: int | None, flt: Filters) -> tuple[int, int] | None:
    """The first and last event time inside [lo, hi) that passes the filters, or None."""
    conds, params = time_sql(store, lo, hi)
    cond, fparams = filter_sql(store, flt)
    where = " AND ".join(c for c in (*conds, cond) if c) or "1 = 1"
    rows = store.query(f"SELECT MIN(ts_us), MAX(ts_us) FROM events WHERE {where}", [*params, *fparams])
    if not rows or rows[0][0] is None:
        return None
    return int(rows[0][0]), int(rows[0][1])


def grouped_events(
    store: Store,
    lo: int | None,
    hi: int | None,
    flt: Filters,
    slot_us: int,
    chunk_us: int = DAY_US,
    *,
    sessions: bool = False,
) -> Iterator[tuple[Any, ...]]:
    """(slot_start_us, *GROUPS, *SUMS) rows over [lo, hi), ordered by slot, one chunk at a time
    (`sessions`: *SESSION_GROUPS after GROUPS). `slot_us` divides `chunk_us`, so no slot
    straddles two chunks."""
    span = time_span(store, lo, hi, flt)
    if span is None:
        return
    first, last = span
    start = first // chunk_us * chunk_us
    slot = f"(ts_us / {slot_us}) * {slot_us}"
    cond, fparams = filter_sql(store, flt)
    while start <= last:
        end = start + chunk_us
        a = start if lo is None else max(start, lo)
        b = end if hi is None else min(end, hi)
        conds, params = time_sql(store, a, b)
        where = " AND ".join(c for c in (*conds, cond) if c)
        groups = (*GROUPS, *SESSION_GROUPS) if sessions else GROUPS
        n = len(groups) + 1
        sql = (
            f"SELECT {slot}, {', '.join(groups)}, {', '.join(SUMS)} FROM events WHERE {where} "
            f"GROUP BY {', '.join(str(i) for i in range(1, n + 1))} ORDER BY 1"
        )
        yield from store.query(sql, [*params, *fparams])
        start = end


def events_in(
    store: Store, lo: int | None, hi: int | None, flt: Filters, kinds: tuple[str, ...], batch: int = 5000
) -> Iterator[tuple[Any, ...]]:
    """Every event of `kinds` inside [lo, hi) that passes the filters, as COLUMNS rows in seq
    order, `batch` at a time (keyset on seq: constant memory, no cursor held open)."""
    from tokentrail.events import COLUMNS

    p = store.dialect.param
    conds, params = time_sql(store, lo, hi)
    cond, fparams = filter_sql(store, flt)
    kind_sql = f"kind IN ({', '.join(p for _ in kinds)})"
    where = " AND ".join(c for c in (*conds, cond, kind_sql) if c)
    after = 0
    while True:
        rows = store.query(
            f"SELECT seq, {', '.join(COLUMNS)} FROM events WHERE seq > {p} AND {where} ORDER BY seq LIMIT {int(batch)}",
            [after, *params, *fparams, *kinds],
        )
        for r in rows:
            yield tuple(r[1:])
        if len(rows) < batch:
            return
        after = int(rows[-1][0])


def adjusted_ids(store: Store, event_ids: list[str]) -> set[str]:
    """Which of these events already have an adjustment."""
    if not event_ids:
        return set()
    select = "SELECT DISTINCT adjusts_event_id FROM events"
    return {str(r[0]) for r in by_ids(store, select, "adjusts_event_id", event_ids, ["kind = 'adjustment'"])}


__all__ = [
    "GROUPS",
    "GROUP_NAMES",
    "SESSION_GROUPS",
    "SUMS",
    "SUM_NAMES",
    "adjusted_ids",
    "events_in",
    "grouped_events",
    "time_span",
]
