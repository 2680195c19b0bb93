"""The savings advisor: what to change in which agent, and what it would save per month.

One pass over the window's model calls and tool runs (scoped like every report: a key's scope is
AND-ed in, never widened) groups them by (team, agent, task type); each rule of advise_rules and
advise_waste looks at one group and returns a finding with its evidence and the window's saving,
computed call by call with the price book (reprice.price_of: as recorded minus as changed).
The monthly saving is the window's × 30 / the window's days: a window longer than the data
understates it, never overstates. Below the minimums (advise_model) a rule says "not enough data"
instead of a number. Recommendations are ranked by monthly saving; dismissed ones (stored by their
stable id: kind, team, agent, task type) are left out unless asked for.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from tokentrail.analytics import advise_rules, advise_waste
from tokentrail.analytics.advise_model import (
    KINDS,
    MIN_CALLS,
    MIN_REDUNDANT,
    MIN_REPEATS,
    MIN_SESSIONS,
    MONTH_DAYS,
    Finding,
    Group,
    Recommendation,
    advice_id,
    money,
)
from tokentrail.analytics.config import AnomalyConfig
from tokentrail.analytics.export import export_filters
from tokentrail.analytics.reports import to_jsonable
from tokentrail.events import from_row, quantize_usd
from tokentrail.pricing import PriceBook
from tokentrail.store import advise as sql
from tokentrail.store.export import events_in
from tokentrail.store.reports import check_range
from tokentrail.types import Store

# events read per run (each is held in memory, ~1 kB): past it the advice covers the first ones
# written and says so (`truncated`); narrow --since or --agent
MAX_EVENTS = 200_000
MAX_GROUPS = 10_000
DAY_S = 86_400
MINIMUMS = {
    "calls": MIN_CALLS,
    "sessions": MIN_SESSIONS,
    "prefix_repeats": MIN_REPEATS,
    "redundant": MIN_REDUNDANT,
    "cache_min_prefix_tokens": advise_rules.CACHE_MIN_PREFIX,
}


@dataclass(frozen=True, slots=True)
class Advice:
    since: datetime
    until: datetime
    days: Decimal
    recommendations: tuple[Recommendation, ...]
    events_read: int
    truncated: bool
    dismissed: int  # recommendations left out because they were dismissed

    def to_dict(self) -> dict[str, Any]:
        return {
            "since": to_jsonable(self.since),
            "until": to_jsonable(self.until),
            "days": to_jsonable(self.days),
            "minimums": MINIMUMS,
            "events_read": self.events_read,
            "truncated": self.truncated,
            "dismissed": self.dismissed,
            "recommendations": [r.to_dict() for r in self.recommendations],
        }


def _groups(
    store: Store, lo: int, hi: int, where: Mapping[str, Any] | None, scope: Mapping[str, str] | None
) -> tuple[list[Group], int, bool]:
    groups: dict[tuple[str | None, str | None, str | None], Group] = {}
    n = 0
    for row in events_in(store, lo, hi, export_filters(where, scope), ("llm", "tool")):
        if n >= MAX_EVENTS:
            return list(groups.values()), n, True
        n += 1
        e = from_row(row)
        key = (e.team, e.agent, e.task_type)
        g = groups.get(key)
        if g is None:
            if len(groups) >= MAX_GROUPS:
                continue
            g = groups[key] = Group(*key)
        (g.calls if e.kind == "llm" else g.tools).append(e)
    for g in groups.values():  # events_in reads in write order; the rules want time order
        g.calls.sort(key=lambda e: e.ts)
        g.tools.sort(key=lambda e: e.ts)
    return list(groups.values()), n, False


def _findings(store: Store, groups: list[Group], book: PriceBook, kinds: frozenset[str]) -> list[Finding]:
    config = AnomalyConfig()
    reasoning = {c.session_id for g in groups for c in g.calls if c.reasoning_tokens and c.session_id}
    succeeded = sql.successful_sessions(store, reasoning) if "unused_reasoning" in kinds and reasoning else set()
    out: list[Finding | None] = []
    for g in groups:
        if "prompt_caching" in kinds:
            out.append(advise_rules.prompt_caching(g, book))
        if "model_routing" in kinds:
            out.append(advise_rules.model_routing(g, book))
        if "context_trimming" in kinds:
            out.append(advise_rules.context_trimming(g, book, config))
        if "runaway_output" in kinds:
            out.append(advise_waste.runaway_output(g, book))
        if "redundant_calls" in kinds:
            out.append(advise_waste.redundant_calls(g, book))
        if "unused_reasoning" in kinds:
            out.append(advise_waste.unused_reasoning(g, book, succeeded))
    return [f for f in out if f is not None]


def _recommendation(f: Finding, days: Decimal) -> Recommendation:
    g = f.group
    monthly = None if f.saving is None else quantize_usd(f.saving * MONTH_DAYS / days)
    formula = f.formula
    if f.saving is not None:
        d = f"{days.normalize():f}"
        formula = f"{f.formula} in {d} days; × {MONTH_DAYS}/{d} = {money(monthly)}/month"
    return Recommendation(
        advice_id=advice_id(f.kind, *g.who),
        kind=f.kind,
        team=g.team,
        agent=g.agent,
        task_type=g.task_type,
        title=f.title,
        change=f.change,
        evidence={"metric": f.metric, "value": f.value, "calls": f.calls, "sessions": f.sessions},
        saving_usd=quantize_usd(f.saving),
        monthly_saving_usd=monthly,
        formula=formula if f.saving is not None else f"not enough data: {f.note}",
        enough_data=f.saving is not None,
        note=f.note,
    )


def advise(
    store: Store,
    book: PriceBook,
    *,
    since: datetime,
    until: datetime | None = None,
    where: Mapping[str, Any] | None = None,
    scope: Mapping[str, str] | None = None,
    kinds: tuple[str, ...] = KINDS,
    include_dismissed: bool = False,
) -> Advice:
    """The recommendations for the calls of [since, until) (until: now), best monthly saving first;
    those without enough data last. ValueError on a bad range or filter."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown recommendation kind {unknown[0]!r} (kinds: {', '.join(KINDS)})")
    end = until or datetime.now(UTC)
    lo, hi = check_range(since, end)
    assert lo is not None and hi is not None
    days = (Decimal(hi - lo) / Decimal(DAY_S * 1_000_000)).quantize(Decimal("0.01"))
    days = max(days, Decimal("0.01"))
    groups, n, truncated = _groups(store, lo, hi, where, scope)
    recs = [_recommendation(f, days) for f in _findings(store, groups, book, frozenset(kinds))]
    gone = sql.dismissed(store, [r.advice_id for r in recs])
    shown = []
    for r in recs:
        if r.advice_id in gone:
            if not include_dismissed:
                continue
            r = _dismissed(r)
        shown.append(r)
    shown.sort(
        key=lambda r: (
            not r.enough_data,
            -(r.monthly_saving_usd or 0),
            r.kind,
            r.team or "",
            r.agent or "",
            r.task_type or "",
        )
    )
    hidden = sum(1 for r in recs if r.advice_id in gone) if not include_dismissed else 0
    return Advice(since, end, days, tuple(shown), n, truncated, hidden)


def _dismissed(r: Recommendation) -> Recommendation:
    from dataclasses import replace

    return replace(r, dismissed=True)


def dismiss(
    store: Store,
    book: PriceBook,
    advice_id_: str,
    *,
    since: datetime,
    until: datetime | None = None,
    where: Mapping[str, Any] | None = None,
    scope: Mapping[str, str] | None = None,
    by: str | None = None,
) -> Recommendation:
    """Dismiss a recommendation the caller can see (in its scope and window): stored for good.
    LookupError when there is no such recommendation for this caller."""
    found = advise(store, book, since=since, until=until, where=where, scope=scope, include_dismissed=True)
    for r in found.recommendations:
        if r.advice_id == advice_id_:
            sql.dismiss(store, r.advice_id, r.kind, (r.team, r.agent, r.task_type), int(time.time() * 1e6), by)
            return _dismissed(r)
    raise LookupError(f"no recommendation {advice_id_[:64]!r} in this window and scope")


__all__ = ["KINDS", "MINIMUMS", "Advice", "Recommendation", "advise", "dismiss"]
