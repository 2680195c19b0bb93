"""Export lines: one per period × model × token class × attribution, costs exact to the nano-dollar.

A group of events (same model, attribution and unit prices) is split into token classes: input
(less cache), cached input, cache write and output. Its summed cost is shared over the classes
by what each class would cost at the group's unit prices, with the largest remainder on integer
nano-dollars, so the class costs always add up to the group's cost exactly. Adjustments are
lines of their own (class "adjustment"), tool runs too ("tool"). Unpriced calls have no cost
(None), never $0.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any

from tokentrail.events import from_micros, ts_micros
from tokentrail.store.export import GROUP_NAMES, SESSION_GROUPS, grouped_events
from tokentrail.store.reports import Filters, check_range, filters, scope_filters
from tokentrail.store.rollup_columns import HOUR_US
from tokentrail.timespec import zone
from tokentrail.types import Store

CLASSES = ("input", "cached_input", "cache_write", "output")
PRICE_KEYS = {
    "input": "input_mtok",
    "cached_input": "cache_read_mtok",
    "cache_write": "cache_write_mtok",
    "output": "output_mtok",
}
ATTRIBUTION = ("org", "team", "project", "agent", "user", "customer", "workflow", "task_type")
GRANULARITIES = ("hour", "day")
_QUARTER_US = 900_000_000  # every real UTC offset is a multiple of 15 minutes


@dataclass(frozen=True, slots=True)
class Line:
    """One export line. `cost_nusd` is None for unpriced usage (never 0)."""

    start: datetime  # the period, cut to the export window
    end: datetime
    kind: str
    provider: str | None
    model: str | None
    token_class: str
    attribution: Mapping[str, str | None]
    tags: Mapping[str, str]
    calls: int
    tokens: int
    cost_nusd: int | None
    estimated_calls: int
    price_version: str | None
    unit_price_mtok: Decimal | None  # USD per million tokens of this class, when known
    allocated_from: str | None = None
    zone: tzinfo = UTC  # the time zone periods were cut in (billing months too)
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def unpriced(self) -> bool:
        return self.cost_nusd is None


@dataclass
class Skipped:
    """Unpriced usage a FOCUS file left out: calls per (provider, model)."""

    calls: dict[tuple[str | None, str | None], int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    def describe(self) -> str:
        models = ", ".join(f"{p or '?'}/{m or '?'} ({n:,})" for (p, m), n in sorted(self.calls.items(), key=str))
        return f"{self.total:,} unpriced call{'s' if self.total != 1 else ''} ({models})"


def share(total: int, weights: Sequence[int | Decimal]) -> list[int]:
    """Split an integer `total` by `weights` with the largest remainder: the parts add up to
    `total` exactly; ties go to the earlier weight (deterministic). Zero weights: the first gets all."""
    if total < 0:  # a credit splits like a charge, mirrored
        return [-p for p in share(-total, weights)]
    wsum = sum(weights)
    if not weights:
        return []
    if wsum == 0:
        return [total, *([0] * (len(weights) - 1))]
    exact = [Decimal(total) * Decimal(w) / Decimal(wsum) for w in weights]
    parts = [int(e.to_integral_value(rounding="ROUND_FLOOR")) for e in exact]
    left = total - sum(parts)
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - parts[i]), i))
    for i in order[:left]:
        parts[i] += 1
    return parts


def _rate(unit_prices: Mapping[str, Any], key: str) -> Decimal | None:
    raw = unit_prices.get(key)
    if raw is None:
        return None
    try:
        return Decimal(str(raw).split(";")[0].strip())  # a tiered price: its base
    except InvalidOperation:
        return None


def split_group(
    kind: str, sums: Mapping[str, int], cost_nusd: int | None, unit_prices: Mapping[str, Any]
) -> list[tuple[str, int, int, int | None, Decimal | None]]:
    """(class, calls, tokens, cost_nusd, USD per million) for one group of events."""
    calls = sums["events"]
    if kind == "adjustment":
        return [("adjustment", 0, 0, cost_nusd, None)]
    if kind == "tool":
        return [("tool", calls, 0, cost_nusd, None)]
    cached, written = sums["cache_read_tokens"], sums["cache_write_tokens"]
    tokens = {
        "input": max(sums["input_tokens"] - cached - written, 0),
        "cached_input": cached,
        "cache_write": written,
        "output": sums["output_tokens"],
    }
    present = [c for c in CLASSES if tokens[c]]
    if not present:  # a call with no tokens (a failed call, a request fee)
        return [("request", calls, 0, cost_nusd, None)]
    rates = {c: _rate(unit_prices, PRICE_KEYS[c]) for c in present}
    costs: list[int | None]
    if cost_nusd is None:
        costs = [None] * len(present)
    else:
        weights = [tokens[c] * (rates[c] or 0) for c in present]
        if not any(weights):
            weights = [Decimal(tokens[c]) for c in present]
        costs = list(share(cost_nusd, weights))
    return [(c, calls if i == 0 else 0, tokens[c], costs[i], rates[c]) for i, c in enumerate(present)]


def period_bounds(slot_us: int, granularity: str, tz: tzinfo) -> tuple[int, int]:
    """The UTC start and end (micros) of the local hour or day holding a slot."""
    local = from_micros(slot_us).astimezone(tz).replace(minute=0, second=0, microsecond=0)
    if granularity == "hour":
        start = ts_micros(local.astimezone(UTC))
        return start, start + HOUR_US
    day = local.replace(hour=0)
    nxt = (day.replace(tzinfo=None) + timedelta(days=1)).replace(tzinfo=tz)
    return ts_micros(day.astimezone(UTC)), ts_micros(nxt.astimezone(UTC))


def export_filters(where: Mapping[str, Any] | None, scope: Mapping[str, str] | None) -> Filters:
    """The caller's filters AND-ed with a key's scope (which no filter can widen)."""
    return (*filters(where), *scope_filters(scope))


def lines(
    store: Store,
    *,
    since: datetime | None,
    until: datetime | None,
    granularity: str = "day",
    tz: str | None = None,
    where: Mapping[str, Any] | None = None,
    scope: Mapping[str, str] | None = None,
    sessions: bool = False,
) -> Iterator[Line]:
    """Every export line over [since, until), period by period (constant memory: one period's
    groups at a time). ValueError on bad input, at once (not at the first line). `sessions`:
    lines are also split by session, which `extra` names (session_id, parent_session_id)."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"unknown granularity {granularity!r}: use hour or day")
    zone_ = zone(tz)
    lo, hi = check_range(since, until)
    flt = export_filters(where, scope)
    return _lines(store, lo, hi, flt, granularity, zone_, sessions)


def _lines(
    store: Store, lo: int | None, hi: int | None, flt: Filters, granularity: str, zone_: tzinfo, sessions: bool
) -> Iterator[Line]:
    names = (*GROUP_NAMES, *SESSION_GROUPS) if sessions else GROUP_NAMES
    pending: dict[tuple[Any, ...], list[int | None]] = {}
    current: tuple[int, int] | None = None
    memo: dict[int, tuple[int, int]] = {}
    for row in grouped_events(store, lo, hi, flt, _QUARTER_US, sessions=sessions):
        slot = int(row[0])
        bounds = memo.get(slot)
        if bounds is None:
            if len(memo) > 10_000:
                memo.clear()
            bounds = memo[slot] = period_bounds(slot, granularity, zone_)
        if bounds != current:
            if current is not None:
                yield from _flush(pending, current, lo, hi, zone_)
            pending, current = {}, bounds
        key = tuple(row[1 : 1 + len(names)])
        sums = [None if v is None else int(v) for v in row[1 + len(names) :]]
        acc = pending.get(key)
        if acc is None:
            pending[key] = sums
        else:
            for i, v in enumerate(sums):
                if v is not None:
                    acc[i] = v if acc[i] is None else int(acc[i] or 0) + v
    if current is not None:
        yield from _flush(pending, current, lo, hi, zone_)


def _flush(
    pending: dict[tuple[Any, ...], list[int | None]],
    bounds: tuple[int, int],
    lo: int | None,
    hi: int | None,
    zone_: tzinfo,
) -> Iterator[Line]:
    start = from_micros(bounds[0] if lo is None else max(bounds[0], lo))
    end = from_micros(bounds[1] if hi is None else min(bounds[1], hi))
    for key in sorted(pending, key=lambda k: tuple((v is None, str(v)) for v in k)):
        g = dict(zip(GROUP_NAMES, key[: len(GROUP_NAMES)], strict=True))
        rest = key[len(GROUP_NAMES) :]  # the session columns, when asked for
        extra = dict(zip(SESSION_GROUPS, rest, strict=True)) if rest else {}
        events, inp, out, cread, cwrite, cost, estimated = pending[key]
        sums = {
            "events": events or 0,
            "input_tokens": inp or 0,
            "output_tokens": out or 0,
            "cache_read_tokens": cread or 0,
            "cache_write_tokens": cwrite or 0,
        }
        unit_prices = json.loads(g["unit_prices"]) if g["unit_prices"] else {}
        tags = json.loads(g["tags"]) if g["tags"] else {}
        attribution = {d: g[d] for d in ATTRIBUTION}
        cost_nusd = None if not g["priced"] else int(cost or 0)
        for cls, calls, tokens, part, rate in split_group(g["kind"], sums, cost_nusd, unit_prices):
            yield Line(
                start=start,
                end=end,
                kind=g["kind"],
                provider=g["provider"],
                model=g["model"],
                token_class=cls,
                attribution=attribution,
                tags=tags,
                calls=calls,
                tokens=tokens,
                cost_nusd=part,
                estimated_calls=int(estimated or 0) if calls else 0,
                price_version=g["price_version"],
                unit_price_mtok=rate,
                zone=zone_,
                extra=extra,
            )


__all__ = ["CLASSES", "GRANULARITIES", "Line", "Skipped", "lines", "share", "split_group"]
