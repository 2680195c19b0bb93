"""Unit economics: cost per session, call and action, ROI, token efficiency, cache hit rate,
output/input ratio, context utilisation and latency percentiles, by any report dimension.

Each metric is defined once, here, as docs/metrics.md states it; the CLI (`report --metrics`),
the JSON API and the dashboard all read this module's `unit_economics`. The sums run over raw
events of the time range (per group and session: tokentrail.store.economics); outcomes are those
of the sessions in the range. Percentiles are taken in Python from at most MAX_SAMPLES model calls
(SQLite has no percentile_cont), interpolated linearly as PostgreSQL's percentile_cont does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from tokentrail.analytics.reports import to_jsonable
from tokentrail.analytics.trees import roots_of
from tokentrail.events import NANO, nano_to_usd
from tokentrail.money import usd
from tokentrail.store import economics as sql
from tokentrail.store.reports import (
    Scope,
    Where,
    check_range,
    dimension,
    expression,
    filter_sql,
    filters,
    scope_filters,
    time_sql,
)
from tokentrail.types import Store

METRICS = (
    "sessions",
    "calls",
    "cost_usd",
    "avg_cost_per_session",
    "avg_cost_per_call",
    "successful_outcomes",
    "failed_outcomes",
    "cost_per_action",
    "outcome_value_usd",
    "roi",
    "token_efficiency",
    "cache_hit_rate",
    "output_input_ratio",
    "context_utilisation_p95",
    "latency_p50",
    "latency_p95",
)
MAX_SAMPLES = 500_000  # model calls read for the percentiles; more: narrow the range or filter


@dataclass
class _Acc:
    sessions: set[str] = field(default_factory=set)
    cost: int = 0
    session_cost: int = 0
    model_cost: int = 0
    calls: int = 0
    unpriced: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    reasoning: int = 0
    cache_read: int = 0
    # (session, output minus reasoning tokens) of this group, for token efficiency
    output_by_session: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    utilisation: list[float] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class UnitEconomics:
    """The metrics of one group (docs/metrics.md). A ratio with nothing to divide by is None; so is
    a cost when every model call in the group had no price (never $0)."""

    group: tuple[tuple[str, str | None], ...]
    sessions: int
    calls: int
    unpriced_calls: int
    cost_usd: Decimal | None
    avg_cost_per_session: Decimal | None
    avg_cost_per_call: Decimal | None
    successful_outcomes: int
    failed_outcomes: int
    cost_per_action: Decimal | None
    outcome_value_usd: Decimal
    roi: float | None
    token_efficiency: float | None
    cache_hit_rate: float | None
    output_input_ratio: float | None
    context_utilisation_p95: float | None
    latency_p50: float | None
    latency_p95: float | None

    def value(self, dimension: str) -> str | None:
        return dict(self.group)[dimension]

    def to_dict(self) -> dict[str, Any]:
        return {
            **dict(self.group),
            "unpriced_calls": self.unpriced_calls,
            **{m: to_jsonable(getattr(self, m)) for m in METRICS},
        }


@dataclass(frozen=True, slots=True)
class EconomicsReport:
    by: tuple[str, ...]
    since: datetime | None
    until: datetime | None
    tree: bool
    rows: tuple[UnitEconomics, ...]
    totals: UnitEconomics

    def to_dict(self) -> dict[str, Any]:
        return {
            "by": list(self.by),
            "since": to_jsonable(self.since),
            "until": to_jsonable(self.until),
            "tree": self.tree,
            "metrics": list(METRICS),
            "rows": [r.to_dict() for r in self.rows],
            "totals": self.totals.to_dict(),
        }


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-quantile, linearly interpolated between the closest ranks (PostgreSQL's percentile_cont)."""
    if not values:
        return None
    v = sorted(values)
    pos = q * (len(v) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def unit_economics(
    store: Store,
    *,
    by: Sequence[str] = (),
    since: datetime | None = None,
    until: datetime | None = None,
    where: Where | None = None,
    scope: Scope | None = None,
    tree: bool = False,
) -> EconomicsReport:
    """The unit-economics metrics over [since, until) grouped by `by` (report dimensions, no time
    buckets), filtered by `where`; `scope` (a key's attribution) is AND-ed in. `tree=True` rolls each
    agent tree up to its root session: a sub-agent's sessions and outcomes count as their root's.
    ValueError on bad input."""
    dims = tuple(dict.fromkeys(dimension(d) for d in by))
    own, forced = filters(where), scope_filters(scope)
    lo, hi = check_range(since, until)
    exprs = [expression(store, d) for d in dims]
    groups = [e for e, _ in exprs]
    gparams: list[Any] = [p for _, ps in exprs for p in ps]
    tconds, tparams = time_sql(store, lo, hi)
    fcond, fparams = filter_sql(store, (*own, *forced))
    conds = [*tconds, fcond]
    rows = sql.session_sums(store, groups, conds, [*gparams, *tparams, *fparams])
    samples = sql.call_samples(store, groups, conds, [*gparams, *tparams, *fparams], MAX_SAMPLES + 1)
    if len(samples) > MAX_SAMPLES:
        raise ValueError(
            f"more than {MAX_SAMPLES:,} model calls in the range: narrow the time range or filter for the percentiles"
        )
    scond, sparams = filter_sql(store, forced)
    session_ids = [r[len(dims)] for r in rows if r[len(dims)] is not None]
    root = roots_of(store, session_ids, scope) if tree else {}
    outcomes: dict[str, list[int]] = {}
    for sid, ok, failed, value in sql.outcome_sums(store, session_ids, scond, sparams):
        o = outcomes.setdefault(root.get(sid, sid), [0, 0, 0])
        o[0] += int(ok or 0)
        o[1] += int(failed or 0)
        o[2] += int(value or 0)

    n = len(dims)
    session_dim = dims.index("session") if "session" in dims else None
    accs: dict[tuple[Any, ...], _Acc] = {}
    total = _Acc()
    for r in rows:
        key = list(r[:n])
        sid = r[n]
        if sid is not None:
            sid = root.get(sid, sid)
            if session_dim is not None:
                key[session_dim] = sid
        for acc in (accs.setdefault(tuple(key), _Acc()), total):
            _add(acc, sid, r[n + 1 :])
    for s in samples:
        latency, input_tokens, window = s[n], s[n + 1], s[n + 2]
        key = list(s[:n])
        if session_dim is not None and key[session_dim] is not None:
            key[session_dim] = root.get(key[session_dim], key[session_dim])
        for acc in (accs.setdefault(tuple(key), _Acc()), total):
            if latency is not None:
                acc.latencies.append(float(latency))
            if window:
                acc.utilisation.append(int(input_tokens) / int(window))
    out = tuple(
        _metrics(tuple(zip(dims, k, strict=True)), a, outcomes)
        for k, a in sorted(accs.items(), key=lambda kv: (-kv[1].cost, [str(v) for v in kv[0]]))
    )
    return EconomicsReport(dims, since, until, tree, out, _metrics((), total, outcomes))


def _add(acc: _Acc, sid: str | None, sums: Sequence[Any]) -> None:
    cost, model_cost, calls, unpriced, inp, outp, reasoning, cache_read = (int(v or 0) for v in sums)
    acc.cost += cost
    acc.model_cost += model_cost
    acc.calls += calls
    acc.unpriced += unpriced
    acc.input_tokens += inp
    acc.output_tokens += outp
    acc.reasoning += reasoning
    acc.cache_read += cache_read
    if sid is not None:
        acc.sessions.add(sid)
        acc.session_cost += cost
        acc.output_by_session[sid] = acc.output_by_session.get(sid, 0) + outp - reasoning


def _usd(nano: int, by: int) -> Decimal | None:
    if not by:
        return None
    return usd((Decimal(nano) / by * NANO).quantize(NANO))  # plain form, as every amount we hand out


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def _metrics(group: tuple[tuple[str, Any], ...], a: _Acc, outcomes: dict[str, list[int]]) -> UnitEconomics:
    ok = sum(outcomes[s][0] for s in a.sessions if s in outcomes)
    failed = sum(outcomes[s][1] for s in a.sessions if s in outcomes)
    value = sum(outcomes[s][2] for s in a.sessions if s in outcomes)
    succeeded = {s for s in a.sessions if s in outcomes and outcomes[s][0] > 0}
    efficient = sum(t for s, t in a.output_by_session.items() if s in succeeded)
    unpriced_only = a.calls > 0 and a.unpriced == a.calls and a.cost == 0  # nothing known: never $0
    return UnitEconomics(
        group=group,
        sessions=len(a.sessions),
        calls=a.calls,
        unpriced_calls=a.unpriced,
        cost_usd=None if unpriced_only else nano_to_usd(a.cost),
        avg_cost_per_session=None if unpriced_only else _usd(a.session_cost, len(a.sessions)),
        avg_cost_per_call=None if unpriced_only else _usd(a.model_cost, a.calls),
        successful_outcomes=ok,
        failed_outcomes=failed,
        cost_per_action=None if unpriced_only else _usd(a.session_cost, ok),
        outcome_value_usd=nano_to_usd(value) or Decimal(0),
        roi=None if unpriced_only else _ratio(value, a.session_cost),
        token_efficiency=_ratio(efficient, a.input_tokens + a.output_tokens),
        cache_hit_rate=_ratio(a.cache_read, a.input_tokens),
        output_input_ratio=_ratio(a.output_tokens, a.input_tokens),
        context_utilisation_p95=percentile(a.utilisation, 0.95),
        latency_p50=percentile(a.latencies, 0.5),
        latency_p95=percentile(a.latencies, 0.95),
    )
