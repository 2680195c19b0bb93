"""Forecasts of a ledger: daily spend read through the reports (the daily rollup), fitted and
projected to the end of the month (or any period) by the pure core in analytics.forecast."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from tokentrail.analytics.forecast import Exhaustion, Model, Projection, fit, naive_linear, project
from tokentrail.timespec import zone
from tokentrail.types import Store

LOOKBACK_DAYS = 182  # history a forecast fits on: half a year of weekly and monthly behaviour
MAX_GROUPS = 50  # a --by forecast fits at most this many groups (the largest spenders)
EARLIEST, LATEST = date(1971, 1, 1), date(9998, 12, 1)  # as-of days whose history and month are dates


@dataclass(frozen=True, slots=True)
class Forecast:
    """One scope's month-end (or period-end) projection and how it was made."""

    group: str | None  # the --by value (None: the whole scope)
    projection: Projection
    naive: float  # the naive linear projection, for comparison
    history_days: int  # days of history the model saw (0: none, the forecast is zero)
    model: Model
    seen: tuple[float, ...] = ()  # spend of each day of the period before as_of

    def to_dict(self) -> dict[str, Any]:
        p = self.projection
        return {
            "group": self.group,
            "period_start": p.start.isoformat(),
            "period_end": p.end.isoformat(),
            "as_of": p.as_of.isoformat(),
            "spent_usd": _usd(p.spent),
            "projected_usd": _usd(p.expected),
            "low_usd": _usd(p.low),
            "high_usd": _usd(p.high),
            "naive_usd": _usd(self.naive),
            "history_days": self.history_days,
            "spent_days": [
                {"day": (p.start + timedelta(days=i)).isoformat(), "usd": _usd(v)} for i, v in enumerate(self.seen)
            ],
            "days": [
                {"day": d.isoformat(), "expected_usd": _usd(e), "low_usd": _usd(lo), "high_usd": _usd(hi)}
                for d, e, lo, hi in p.days
            ],
        }


def _usd(v: float) -> str:
    return f"{v:.6f}"


def month_of(day: date) -> tuple[date, date]:
    start = day.replace(day=1)
    return start, (start.replace(day=28) + timedelta(days=4)).replace(day=1)


def today(tz: str | None) -> date:
    return datetime.now(zone(tz)).date()


def daily_spend(
    store: Store,
    *,
    until: date,
    days: int = LOOKBACK_DAYS,
    tz: str | None = None,
    where: Mapping[str, Any] | None = None,
    scope: Mapping[str, str] | None = None,
    by: str | None = None,
) -> tuple[date, dict[str | None, list[float]]]:
    """Daily spend over the `days` days before `until` (local days in `tz`), per `by` group:
    (first day, {group: [spend of each day]}). Unpriced calls count as nothing (never as $0: the
    report says so); a scope (a key's attribution) is AND-ed by the report."""
    from tokentrail.analytics import reports

    where_tz = zone(tz)
    first = until - timedelta(days=days)
    since_dt = datetime(first.year, first.month, first.day, tzinfo=where_tz)
    until_dt = datetime(until.year, until.month, until.day, tzinfo=where_tz)
    rep = reports.report(
        store, by=["day", *([by] if by else [])], since=since_dt, until=until_dt, where=where, scope=scope, tz=tz
    )
    series: dict[str | None, list[float]] = {}
    for row in rep.rows:
        day = row.value("day")
        assert isinstance(day, datetime)
        key = row.value(by) if by else None
        values = series.setdefault(None if key is None else str(key), [0.0] * days)
        i = (day.date() - first).days
        if 0 <= i < days:
            values[i] += float(row.cost_usd or 0)
    if not by and None not in series:
        series[None] = [0.0] * days
    return first, series


def _trim(values: Sequence[float]) -> list[float]:
    """The series from its first day with spend (days before a scope existed are not 'zero spend')."""
    start = next((i for i, v in enumerate(values) if v > 0), len(values))
    return list(values[start:])


def forecast(
    store: Store,
    *,
    as_of: date | None = None,
    tz: str | None = None,
    where: Mapping[str, Any] | None = None,
    scope: Mapping[str, str] | None = None,
    by: str | None = None,
    period: tuple[date, date] | None = None,
) -> list[Forecast]:
    """Project spend to the end of `period` (default: the month of `as_of`) from the data before
    `as_of` (default: today in `tz`), for the whole scope or per `by` group (largest first)."""
    day = as_of or today(tz)
    if not EARLIEST <= day <= LATEST:
        raise ValueError(f"as-of {day}: a day from {EARLIEST} to {LATEST}")
    start, end = period or month_of(day)
    if not start <= day <= end:
        raise ValueError(f"as-of {day} is outside the period {start}..{end}")
    first, series = daily_spend(store, until=day, tz=tz, where=where, scope=scope, by=by)
    out: list[Forecast] = []
    # only the largest spenders are fitted: a dimension with thousands of values stays cheap
    largest = sorted(series.items(), key=lambda kv: (-sum(kv[1]), kv[0] or ""))[:MAX_GROUPS]
    for group, values in largest:
        history = _trim(values)
        seen = values[(start - first).days :] if start >= first else values
        spent = sum(seen)
        model = fit(history, horizon=(end - day).days)
        elapsed = (day - start).days
        out.append(
            Forecast(
                group,
                project(model, start, end, day, spent),
                naive_linear(spent, elapsed, (end - start).days),
                len(history),
                model,
                tuple(seen),
            )
        )
    out.sort(key=lambda f: (-f.projection.expected, f.group or ""))
    return out


__all__ = ["Exhaustion", "Forecast", "daily_spend", "forecast", "month_of", "today"]
