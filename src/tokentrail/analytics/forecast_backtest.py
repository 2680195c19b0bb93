"""Backtests of the month-end projection (pure: series in, errors out) and the seeded synthetic
series they run on. bench/forecast_backtest.py prints the table; the suite runs small ones."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

from tokentrail.analytics.forecast import fit, naive_linear, project

CHECKPOINTS = (7, 14, 21)  # days of the month already seen
MIN_HISTORY = 28  # days of history before a month counts in a backtest
WEEKLY = (1.25, 1.3, 1.2, 1.15, 1.0, 0.4, 0.3)  # Monday first: a working-week pattern


@dataclass
class Tally:
    """Errors of one checkpoint day: absolute percentage errors and how often the band held."""

    model: list[float] = field(default_factory=list)
    naive: list[float] = field(default_factory=list)
    inside: int = 0

    @property
    def n(self) -> int:
        return len(self.model)

    def mape(self) -> tuple[float, float]:
        return 100 * sum(self.model) / self.n, 100 * sum(self.naive) / self.n

    def coverage(self) -> float:
        return self.inside / self.n


def _month_end(d: date) -> date:
    return (d.replace(day=28) + timedelta(days=4)).replace(day=1)


# Another model to compare: (days seen, horizon) -> (expected, low, high) sums of the next days.
Projector = Callable[[Sequence[float], int], tuple[float, float, float]]


def backtest(
    series: Sequence[float],
    first: date,
    checkpoints: Sequence[int] = CHECKPOINTS,
    projector: Projector | None = None,
) -> dict[int, Tally]:
    """Every whole month of `series` (daily spend from `first`) after MIN_HISTORY days: at each
    checkpoint day, project the month end from the days before it and compare with the truth
    (with this module's model, or `projector`'s)."""
    out = {k: Tally() for k in checkpoints}
    month = first.replace(day=1)
    end_of_data = first + timedelta(days=len(series))
    while True:
        month = _month_end(month)
        nxt = _month_end(month)
        if nxt > end_of_data:
            return out
        i0 = (month - first).days
        if i0 < MIN_HISTORY:
            continue
        truth = sum(series[i0 : (nxt - first).days])
        if truth <= 0:
            continue
        for k in checkpoints:
            as_of = month + timedelta(days=k)
            seen = series[: i0 + k]
            spent = sum(series[i0 : i0 + k])
            if projector is None:
                p = project(fit(seen, horizon=(nxt - as_of).days), month, nxt, as_of, spent)
                expected, low, high = p.expected, p.low, p.high
            else:
                e, lo, hi = projector(seen, (nxt - as_of).days)
                expected, low, high = spent + e, spent + lo, spent + hi
            t = out[k]
            t.model.append(abs(expected - truth) / truth)
            t.naive.append(abs(naive_linear(spent, k, (nxt - month).days) - truth) / truth)
            t.inside += low <= truth <= high


def merge(tallies: Sequence[dict[int, Tally]]) -> dict[int, Tally]:
    out: dict[int, Tally] = {}
    for t in tallies:
        for k, v in t.items():
            m = out.setdefault(k, Tally())
            m.model += v.model
            m.naive += v.naive
            m.inside += v.inside
    return out


# --- seeded synthetic series ------------------------------------------------------------------
FIRST_DAY = date(2026, 1, 1)


def _noisy(rng: random.Random, mean: float, sigma: float) -> float:
    return max(0.0, mean * math.exp(rng.gauss(0, sigma) - sigma * sigma / 2))


def flat(seed: int, days: int = 210) -> list[float]:
    rng = random.Random(seed)
    return [_noisy(rng, 100.0, 0.2) for _ in range(days)]


def trending(seed: int, days: int = 210) -> list[float]:
    rng = random.Random(seed)
    growth = rng.uniform(0.004, 0.012) * rng.choice((1, 1, -0.5))
    return [_noisy(rng, 60.0 * math.exp(growth * i), 0.2) for i in range(days)]


def weekly(seed: int, days: int = 210) -> list[float]:
    rng = random.Random(seed)
    return [_noisy(rng, 100.0 * WEEKLY[(FIRST_DAY + timedelta(days=i)).weekday()], 0.15) for i in range(days)]


def step(seed: int, days: int = 210) -> list[float]:
    rng = random.Random(seed)
    at, factor = rng.randrange(40, days - 20), rng.choice((1.8, 2.5, 0.5))
    return [
        _noisy(rng, 100.0 * WEEKLY[(FIRST_DAY + timedelta(days=i)).weekday()] * (factor if i >= at else 1), 0.15)
        for i in range(days)
    ]


SYNTHETIC: dict[str, Callable[[int], list[float]]] = {
    "flat": flat,
    "trending": trending,
    "weekly": weekly,
    "step change": step,
}
