"""Repricing: what history would have cost under another price book or another model, and
pricing calls that were unpriced when they were made.

The what-if reads every model call in a window (constant memory, batch by batch), prices its
stored token counts at its own time with the given price book (a model map first swaps the
model: "triage-bot on gpt-4.1-mini instead of gpt-4.1") and compares with what the ledger
recorded, grouped by any report dimension. Nothing is written.

Applying (`reprice_unpriced`) only prices calls that had no price, and only through
`corrections.adjust`: one adjustment event per call, chained and audited like any other,
reversible by another adjustment. The unpriced event itself is never changed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from tokentrail.analytics.export import export_filters
from tokentrail.analytics.reports import to_jsonable
from tokentrail.events import UsageEvent, from_row, nano_to_usd, usd_to_nano
from tokentrail.pricing import PriceBook
from tokentrail.store.export import adjusted_ids, events_in
from tokentrail.store.reports import check_range, dimension
from tokentrail.types import Store
from tokentrail.usage import UsageProblem, from_counts

if TYPE_CHECKING:
    from tokentrail.ledger import Ledger

_CALLS = ("llm", "embedding")
_ATTR = {"session": "session_id", "tool": "tool_name"}


def parse_model_map(items: Sequence[str] | None) -> dict[str, str]:
    """FROM=TO items (model names, or provider/model) as a dict; ValueError naming a bad one."""
    out: dict[str, str] = {}
    for item in items or ():
        a, sep, b = item.partition("=")
        if not sep or not a.strip() or not b.strip():
            raise ValueError(f"--model-map {item!r}: expected FROM=TO, e.g. gpt-4.1=gpt-4.1-mini")
        out[a.strip()] = b.strip()
    return out


def group_value(event: UsageEvent, d: str) -> str | None:
    """An event's value of a report dimension."""
    if d.startswith("tag."):
        return event.tags.get(d[4:])
    v = getattr(event, _ATTR.get(d, d))
    return None if v is None else str(v)


@dataclass
class Diff:
    """One group of a what-if: calls, what they cost and what they would have cost (nano-dollars;
    calls with no price on a side are counted, never priced at $0)."""

    group: tuple[tuple[str, str | None], ...]
    calls: int = 0
    old_nusd: int = 0
    new_nusd: int = 0
    unpriced_before: int = 0
    unpriced_after: int = 0

    @property
    def old_usd(self) -> Decimal | None:
        """What the calls cost as recorded; None when none of them had a price (never $0)."""
        return None if self.calls and self.unpriced_before == self.calls else nano_to_usd(self.old_nusd)

    @property
    def new_usd(self) -> Decimal | None:
        return None if self.calls and self.unpriced_after == self.calls else nano_to_usd(self.new_nusd)

    @property
    def delta_usd(self) -> Decimal | None:
        old, new = self.old_usd, self.new_usd
        return None if old is None or new is None else new - old

    def to_dict(self) -> dict[str, Any]:
        return {
            **{d: v for d, v in self.group},
            "calls": self.calls,
            "cost_usd": to_jsonable(self.old_usd),
            "repriced_usd": to_jsonable(self.new_usd),
            "delta_usd": to_jsonable(self.delta_usd),
            "unpriced_before": self.unpriced_before,
            "unpriced_after": self.unpriced_after,
        }


@dataclass
class WhatIf:
    by: tuple[str, ...]
    rows: list[Diff]
    totals: Diff
    model_map: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "by": list(self.by),
            "model_map": dict(self.model_map),
            "rows": [r.to_dict() for r in self.rows],
            "totals": self.totals.to_dict(),
        }


def _mapped(event: UsageEvent, model_map: Mapping[str, str]) -> tuple[str, str]:
    provider, model = event.provider or "", event.model or ""
    for key in (f"{provider}/{model}", model):
        if key in model_map:
            target = model_map[key]
            if "/" in target:
                p, _, m = target.partition("/")
                return p, m
            return provider, target
    return provider, model


def price_of(event: UsageEvent, book: PriceBook, model_map: Mapping[str, str] | None = None) -> int | None:
    """What a stored call costs under `book` at its own time (nano-dollars), or None when unpriced
    or its counts cannot be priced."""
    provider, model = _mapped(event, model_map or {})
    try:
        usage = from_counts(
            input_tokens=event.input_tokens,
            output_tokens=event.output_tokens,
            cache_read_tokens=event.cache_read_tokens,
            cache_write_tokens=event.cache_write_tokens,
            reasoning_tokens=event.reasoning_tokens,
        )
        cost = book.price(provider, model, usage, at=event.ts)
    except UsageProblem:
        return None
    return None if cost is None else usd_to_nano(cost.total_usd)


def what_if(
    store: Store,
    book: PriceBook,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    by: Sequence[str] = (),
    where: Mapping[str, Any] | None = None,
    scope: Mapping[str, str] | None = None,
    model_map: Mapping[str, str] | None = None,
) -> WhatIf:
    """Model calls in [since, until) as recorded and as repriced, grouped by `by`. Recorded cost
    is the call's own (adjustments and tool runs are left out: they are not priced by a book)."""
    dims = tuple(dict.fromkeys(dimension(d) for d in by))
    lo, hi = check_range(since, until)
    flt = export_filters(where, scope)
    groups: dict[tuple[str | None, ...], Diff] = {}
    totals = Diff(())
    for row in events_in(store, lo, hi, flt, _CALLS):
        event = from_row(row)
        key = tuple(group_value(event, d) for d in dims)
        diff = groups.get(key)
        if diff is None:
            if len(groups) >= 100_000:
                raise ValueError("more than 100,000 groups: group by fewer or coarser dimensions")
            diff = groups[key] = Diff(tuple(zip(dims, key, strict=True)))
        new = price_of(event, book, model_map)
        old = usd_to_nano(event.cost_usd)
        for d in (diff, totals):
            d.calls += 1
            d.old_nusd += old or 0
            d.new_nusd += new or 0
            d.unpriced_before += old is None
            d.unpriced_after += new is None
    rows = sorted(groups.values(), key=lambda d: (d.new_nusd - d.old_nusd, tuple(str(v) for _, v in d.group)))
    return WhatIf(dims, rows, totals, dict(model_map or {}))


@dataclass
class Repriced:
    """What pricing the unpriced calls did (or would do): adjustments per model."""

    priced: int = 0
    cost_nusd: int = 0
    still_unpriced: int = 0
    already: int = 0
    adjustments: list[str] = field(default_factory=list)
    models: dict[str, int] = field(default_factory=dict)

    def cost_usd(self) -> Decimal:
        return nano_to_usd(self.cost_nusd) or Decimal(0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "priced": self.priced,
            "cost_usd": to_jsonable(nano_to_usd(self.cost_nusd)),
            "still_unpriced": self.still_unpriced,
            "already_repriced": self.already,
            "models": self.models,
            "adjustments": self.adjustments,
        }


def reprice_unpriced(
    store: Store,
    book: PriceBook,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    where: Mapping[str, Any] | None = None,
    ledger: Ledger | None = None,
    progress: Callable[[int], None] | None = None,
) -> Repriced:
    """Price the calls of [since, until) that were recorded unpriced, with the price `book` knows
    now for their time, as adjustments written through `ledger` (never by editing them; without
    a ledger, a dry run). A call already adjusted is left alone (it was repriced or corrected by
    hand); calls with impossible usage stay unpriced."""
    from tokentrail.corrections import adjust

    lo, hi = check_range(since, until)
    flt = export_filters(where, None)
    out = Repriced()
    batch: list[UsageEvent] = []

    def run(events: list[UsageEvent]) -> None:
        done = adjusted_ids(store, [e.event_id for e in events])
        for e in events:
            if e.event_id in done:
                out.already += 1
                continue
            new = price_of(e, book)
            if new is None or e.status.startswith("invalid_usage"):
                out.still_unpriced += 1
                continue
            name = f"{e.provider or '?'}/{e.model or '?'}"
            out.models[name] = out.models.get(name, 0) + 1
            out.priced += 1
            out.cost_nusd += new
            if ledger is not None and new:
                version = ledger_price_version(book, e)
                made = adjust(
                    ledger, e.event_id, new_cost_usd=nano_to_usd(new) or Decimal(0), reason=f"reprice: {version}"
                )
                out.adjustments.append(made.event_id)
        if progress:
            progress(len(events))

    for row in events_in(store, lo, hi, flt, _CALLS):
        e = from_row(row)
        if e.cost_usd is not None:
            continue
        batch.append(e)
        if len(batch) >= 500:
            run(batch)
            batch = []
    if batch:
        run(batch)
    return out


def ledger_price_version(book: PriceBook, e: UsageEvent) -> str:
    p = book.lookup(e.provider or "", e.model or "", e.ts)
    return p.version if p is not None else "unknown price"


__all__ = ["Diff", "Repriced", "WhatIf", "parse_model_map", "price_of", "reprice_unpriced", "what_if"]
