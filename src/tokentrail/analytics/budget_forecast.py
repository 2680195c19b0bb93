"""Projected exhaustion of budgets: when, at the forecast rate, a budget's spend reaches its limit
within its current period, and the once-per-period alert that says so ("on track to exceed by
Dec 19").

Only budgets with a USD limit and a calendar period of a day or longer have one (hours, calls,
sessions and rolling windows are too short for a daily model). The spend history is the
budget's scope (for a `*` budget, the bucket's values) read from the daily rollup; what already
counts against the limit is the budget's own posted plus reserved. Today's forecast is a whole
day's on top of what today already posted, which errs on the early side.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from tokentrail.analytics.forecast import Exhaustion, Model, exhaustion, fit, project
from tokentrail.events import new_event_id, ts_micros

if TYPE_CHECKING:
    from tokentrail.budgets import Budgets, BudgetStatus
    from tokentrail.types import Store

log = logging.getLogger("tokentrail.forecast")

PERIODS = ("day", "week", "month")
MAX_PROJECTED = 50  # budget rows projected per status call (each is a report and a fit)
_CACHE_MAX = 256
# A fit depends only on the days before today: kept for the day, per ledger, scope and zone.
_CACHE_S = 600.0  # ... and for at most this long (late events for past days are seen after it)
_models: OrderedDict[tuple[Any, ...], tuple[date, float, list[float], Model]] = OrderedDict()
_models_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class ProjectedExhaustion:
    """A budget's projected exhaustion in its current period: `exhaustion` (dates None: "not
    within this period") and the projected spend at the period end with its 80 % band."""

    exhaustion: Exhaustion
    projected_usd: float
    low_usd: float
    high_usd: float
    as_of: date

    def to_dict(self) -> dict[str, Any]:
        e = self.exhaustion

        def d(x: date | None) -> str | None:
            return None if x is None else x.isoformat()

        return {
            "date": d(e.expected),
            "earliest": d(e.earliest),
            "latest": d(e.latest),
            "within_period": e.expected is not None,
            "projected_usd": f"{self.projected_usd:.6f}",
            "low_usd": f"{self.low_usd:.6f}",
            "high_usd": f"{self.high_usd:.6f}",
            "as_of": self.as_of.isoformat(),
        }

    def text(self) -> str:
        e = self.exhaustion
        if e.expected is None:
            return "not within this period"
        span = "" if e.earliest == e.latest == e.expected else f" ({_day(e.earliest)}–{_day(e.latest)})"
        return f"{_day(e.expected)}{span}"


def _day(d: date | None) -> str:
    return "after the period" if d is None else f"{d:%b} {d.day}"


def _where(s: BudgetStatus) -> dict[str, str] | None:
    """The report filter of a status row's scope (None: it cannot be read as one)."""
    from tokentrail.budgets.buckets import bucket_values

    scope = dict(s.budget.scope)
    if s.budget.wildcards:
        values = bucket_values(s.bucket, list(scope))
        if values is None:
            return None
        scope = values
    return scope


def project_status(store: Store, s: BudgetStatus, now: datetime) -> ProjectedExhaustion | None:
    """The projected exhaustion of one status row, or None when it has none (see the module)."""
    b = s.budget
    if b.limit_usd is None or b.period not in PERIODS or s.period_start is None or s.period_end is None:
        return None
    where = _where(s)
    if where is None:
        return None
    from tokentrail.analytics.forecast_ledger import daily_spend
    from tokentrail.timespec import zone

    tz = zone(b.tz)
    today = now.astimezone(tz).date()
    start = s.period_start.astimezone(tz).date()
    end = s.period_end.astimezone(tz).date()
    if end <= start:  # a period shorter than a local day (a DST day is still one)
        end = start + timedelta(days=1)
    key = (getattr(store, "url", None) or id(store), tuple(sorted(where.items())), b.tz)
    with _models_lock:
        cached = _models.get(key)
    if cached is None or cached[0] != today or time.monotonic() - cached[1] > _CACHE_S:
        first, series = daily_spend(store, until=today, tz=b.tz, where=where)
        values = series.get(None, [])
        begin = next((i for i, v in enumerate(values) if v > 0), len(values))
        model = fit(values[begin:], horizon=31)
        days_before = values[max(0, (start - first).days) :] if start < today else []
        cached = (today, time.monotonic(), days_before, model)
        with _models_lock:
            _models[key] = cached
            _models.move_to_end(key)
            while len(_models) > _CACHE_MAX:
                _models.popitem(last=False)
    _, _, days_before, model = cached
    if model.n == 0:
        return None  # no spend before today: nothing to forecast from (not "never runs out")
    p = project(model, start, end, today, sum(days_before))
    used = float(s.posted_usd + s.reserved_usd)
    shift = used - p.spent
    return ProjectedExhaustion(
        exhaustion(p, float(b.limit_usd), used), p.expected + shift, p.low + shift, p.high + shift, today
    )


def with_exhaustion(budgets: Budgets, rows: list[BudgetStatus], now: datetime) -> list[BudgetStatus]:
    """`rows` with their projected exhaustion (the first MAX_PROJECTED that have one); fires the
    once-per-period forecast alert of each that is on track to exceed. A forecast that fails is
    logged and the row shown without one: a projection never hides a budget."""
    out: list[BudgetStatus] = []
    done = 0
    for s in rows:
        projected = None
        if done < MAX_PROJECTED and s.budget.limit_usd is not None and s.budget.period in PERIODS:
            done += 1
            try:
                projected = project_status(budgets.store, s, now)
                if projected is not None:
                    _alert(budgets, s, projected, now)
            except Exception:
                log.exception("tokentrail: could not project budget %r (%s)", s.budget.name, s.bucket)
        out.append(replace(s, projection=projected) if projected is not None else s)
    return out


def _alert(budgets: Budgets, s: BudgetStatus, p: ProjectedExhaustion, now: datetime) -> None:
    """Alert once per budget bucket and period when the limit is projected to be reached in it
    (a budget already over its limit has had its threshold alerts)."""
    from tokentrail.budgets.alerts import Alert, money

    b = s.budget
    e = p.exhaustion
    if e.expected is None or not b.alert_at or b.limit_usd is None or s.posted_usd >= b.limit_usd:
        return
    assert s.period_start is not None
    message = (
        f"Budget '{b.name}' ({s.bucket}, {b.period}) on track to exceed by {_day(e.expected)}"
        f" (80 % band {_day(e.earliest)} to {_day(e.latest)}): {money(s.posted_usd)} of {money(b.limit_usd)} so far,"
        f" {money(Decimal(f'{p.projected_usd:.2f}'))} projected by the period end"
    )
    alert = Alert(
        alert_id=new_event_id(),
        kind="forecast",
        ts=now,
        budget=b.name,
        scope=s.bucket,
        period=b.period,
        period_start=s.period_start,
        period_end=s.period_end,
        threshold=None,
        posted_usd=s.posted_usd,
        limit_usd=b.limit_usd,
        posted_tokens=None,
        limit_tokens=None,
        session_id=None,
        message=message,
    )
    key = f"{b.name}\x1f{s.bucket}\x1f{ts_micros(s.period_start)}\x1fforecast"
    sql = budgets._backend()
    with sql.transaction(durable=True) as x:
        inserted = sql.insert_alert(x, alert.to_row(key))()
    if inserted:
        budgets.alerts.dispatch([alert])
