"""Aggregate a batch of event rows into hourly rollup deltas (shared by every backend)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from tokentrail.events import COL
from tokentrail.store.rollup_columns import DAY_US, HOUR_US, ROLLUP_DIMENSIONS, ROLLUP_MEASURES

_DIM_INDEXES = tuple(COL[d] for d in ROLLUP_DIMENSIONS)
_TS, _KIND, _STATUS, _COST = COL["ts_us"], COL["kind"], COL["status"], COL["cost_nusd"]
_ESTIMATED = COL["usage_estimated"]
_TOKENS = tuple(
    COL[c] for c in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens")
)
N_MEASURES = len(ROLLUP_MEASURES)


def aggregate(rows: Iterable[tuple[Any, ...]], dims: Sequence[int] = _DIM_INDEXES) -> list[tuple[Any, ...]]:
    """Rollup rows `(hour_us, *dims, *measures)` for a batch; NULL dimensions become ''. `dims`:
    the indexes of the key's columns (ROLLUP_DIMENSIONS'; the dimension rollups pass theirs)."""
    acc: dict[tuple[Any, ...], list[int]] = {}
    for r in rows:
        key = (r[_TS] - r[_TS] % HOUR_US, *[r[i] or "" for i in dims])
        m = acc.get(key)
        if m is None:
            m = acc[key] = [0] * N_MEASURES
        kind, status, cost = r[_KIND], r[_STATUS], r[_COST]
        if kind != "adjustment":
            m[10 if kind == "tool" else 0] += 1  # tool runs apart from model calls
            if status != "ok":
                m[1] += 1
        if r[_ESTIMATED]:
            m[11] += 1
        for j, i in enumerate(_TOKENS, 2):
            m[j] += r[i]
        if cost is not None:
            m[7] += cost
        elif kind in ("llm", "embedding"):
            if status.startswith("invalid_usage"):
                m[9] += 1
            else:
                m[8] += 1
    return [(*k, *v) for k, v in acc.items()]


def measures(r: tuple[Any, ...]) -> tuple[int, ...]:
    """One event's rollup measures (what `aggregate` adds for it), as a tuple in ROLLUP_MEASURES order."""
    m = [0] * N_MEASURES
    kind, status, cost = r[_KIND], r[_STATUS], r[_COST]
    if kind != "adjustment":
        m[10 if kind == "tool" else 0] = 1
        if status != "ok":
            m[1] = 1
    if r[_ESTIMATED]:
        m[11] = 1
    for j, i in enumerate(_TOKENS, 2):
        m[j] = r[i]
    if cost is not None:
        m[7] = cost
    elif kind in ("llm", "embedding"):
        m[9 if status.startswith("invalid_usage") else 8] = 1
    return tuple(m)


def by_day(hourly: Iterable[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The daily rollup deltas of hourly ones (UTC days)."""
    acc: dict[tuple[Any, ...], list[int]] = {}
    for r in hourly:
        key = (r[0] - r[0] % DAY_US, *r[1 : 1 + len(_DIM_INDEXES)])
        m = acc.get(key)
        if m is None:
            acc[key] = list(r[1 + len(_DIM_INDEXES) :])
        else:
            for j, v in enumerate(r[1 + len(_DIM_INDEXES) :]):
                m[j] += v
    return [(*k, *v) for k, v in acc.items()]
