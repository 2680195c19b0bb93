"""Spend forecasts: a pure core (daily series in, projection out, no I/O).

The model is a damped-trend Holt-Winters with multiplicative weekly seasonality, written here
(about a hundred lines) rather than taken from statsmodels: it fits in milliseconds, needs no
extra (numpy, scipy, pandas), and `bench/forecast_backtest.py --statsmodels` shows statsmodels' ETS
about as accurate on the month-end projection (overall MAPE on day 7/14/21: 6.1/4.2/2.3 % against
this model's 6.2/3.9/2.2 %), while ETS's own 80 % interval held only 52-65 % of the truths.
The smoothing weights are picked per series from a small grid by one-step error.

The band is NOT the model's nominal interval (which is far too narrow on spend data). It comes
from the series' own rolling-origin backtest: at every past day the model forecasts the next
1..H days with the weights fitted, the ratio actual/forecast of each cumulative sum is kept by
horizon, and the 10th/90th percentiles of those ratios at the needed horizon size the band.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

SEASON = 7
LOW_Q, HIGH_Q = 0.1, 0.9  # an 80 % band
WARM_UP = 14  # days the model runs before its forecasts count as backtest errors
MIN_ERRORS = 8  # fewer errors than this at a horizon: borrow from a shorter one
RECENT_ORIGINS = 180  # only recent behaviour sizes the band
# Band used while the series is too short to have any backtest errors: wide on purpose.
FALLBACK_LOG_BAND = (math.log(0.5), math.log(1.8))
_GRID = tuple((a, b, g, p) for a in (0.05, 0.15, 0.35) for b in (0.0, 0.05) for g in (0.05, 0.2) for p in (0.85, 0.98))


# In-sample backtest errors understate out-of-sample ones (the weights were fitted to the same
# days, and a level shift is only seen after it happens); the synthetic backtest puts 80 % of
# month-end truths inside the band with the percentiles widened by this factor, more so the
# further ahead (unwidened, ~65 % of truths fall inside).
def inflation(horizon: int) -> float:
    return 1.2 + 0.02 * min(horizon, 31)


_FLOOR = 0.05  # a weekday factor below this (days with ~no spend) does not move the level


@dataclass(frozen=True, slots=True)
class Params:
    alpha: float  # level
    beta: float  # trend
    gamma: float  # weekday factors
    phi: float  # trend damping


@dataclass(frozen=True, slots=True)
class Model:
    """A fitted model: its state after the last observed day and its backtest errors."""

    params: Params
    n: int  # days observed
    level: float
    trend: float
    season: tuple[float, ...]  # factor for day index i is season[i % 7]
    errors: tuple[tuple[float, ...], ...]  # errors[h-1]: log(actual/forecast) of h-day sums

    def daily(self, horizon: int) -> list[float]:
        """Expected spend of each of the next `horizon` days."""
        out, damp, acc = [], 1.0, 0.0
        for h in range(1, horizon + 1):
            damp *= self.params.phi
            acc += damp
            out.append(max(0.0, (self.level + acc * self.trend) * self.season[(self.n + h - 1) % SEASON]))
        return out

    def log_band(self, horizon: int) -> tuple[float, float]:
        """(low, high) log-ratio band of the sum over the next `horizon` days."""
        if horizon <= 0:
            return 0.0, 0.0
        for h in range(min(horizon, len(self.errors)), 0, -1):
            errs = self.errors[h - 1]
            if len(errs) >= MIN_ERRORS:
                lo, hi = quantile(errs, LOW_Q), quantile(errs, HIGH_Q)
                if h < horizon:  # wider for the days no backtest reached
                    widen = math.sqrt(horizon / h)
                    lo, hi = lo * widen, hi * widen
                widen = inflation(horizon)
                return min(lo, 0.0) * widen, max(hi, 0.0) * widen
        return FALLBACK_LOG_BAND


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile (values need not be sorted)."""
    s = sorted(values)
    pos = q * (len(s) - 1)
    i = int(pos)
    return s[i] if i + 1 >= len(s) else s[i] + (s[i + 1] - s[i]) * (pos - i)


def _initial(y: Sequence[float]) -> tuple[float, float, list[float]]:
    if len(y) < 2 * SEASON:
        return (sum(y) / len(y) if y else 0.0), 0.0, [1.0] * SEASON
    m1, m2 = sum(y[:SEASON]) / SEASON, sum(y[SEASON : 2 * SEASON]) / SEASON
    season = []
    for j in range(SEASON):
        ratios = [v / m for v, m in ((y[j], m1), (y[j + SEASON], m2)) if m > 0]
        season.append(sum(ratios) / len(ratios) if ratios else 1.0)
    return m1, (m2 - m1) / SEASON, season


def _run(y: Sequence[float], p: Params, horizon: int = 0) -> tuple[float, float, float, list[float], list[list[float]]]:
    """One pass of the recursion: (one-step squared error, level, trend, season, errors by horizon).
    With `horizon`, each day from WARM_UP on is also an origin of 1..horizon-day forecasts."""
    level, trend, season = _initial(y)
    seasonal = len(y) >= 2 * SEASON
    gamma = p.gamma if seasonal else 0.0
    n, sse = len(y), 0.0
    errors: list[list[float]] = [[] for _ in range(horizon)]
    first_origin = max(WARM_UP, n - RECENT_ORIGINS)
    for i in range(n):
        if horizon and i >= first_origin:
            damp, acc, fc_sum, act_sum = 1.0, 0.0, 0.0, 0.0
            for h in range(1, min(horizon, n - i) + 1):
                damp *= p.phi
                acc += damp
                fc_sum += max(0.0, (level + acc * trend) * season[(i + h - 1) % SEASON])
                act_sum += y[i + h - 1]
                if fc_sum > 0 and act_sum > 0:
                    errors[h - 1].append(math.log(act_sum / fc_sum))
                elif fc_sum > 0 or act_sum > 0:  # one side zero: a miss as large as a 10x error
                    errors[h - 1].append(math.log(10.0) if act_sum > 0 else -math.log(10.0))
        s = season[i % SEASON]
        expected = level + p.phi * trend
        sse += (y[i] - max(0.0, expected * s)) ** 2
        new_level = p.alpha * (y[i] / s) + (1 - p.alpha) * expected if s > _FLOOR else expected
        new_level = max(0.0, new_level)
        trend = p.beta * (new_level - level) + (1 - p.beta) * p.phi * trend
        level = new_level
        if gamma and level > 0:
            season[i % SEASON] = min(SEASON, gamma * (y[i] / level) + (1 - gamma) * s)
    return sse, level, trend, season, errors


def fit(y: Sequence[float], horizon: int = 31) -> Model:
    """Fit the model to daily spend `y` (oldest first; floats >= 0) and backtest it up to `horizon`
    days ahead. ValueError on negative or non-finite values."""
    ys = [float(v) for v in y]
    if any(not math.isfinite(v) or v < 0 for v in ys):
        raise ValueError("daily spend must be finite and >= 0")
    best = min(_GRID, key=lambda g: _run(ys, Params(*g))[0]) if ys else _GRID[0]
    params = Params(*best)
    _, level, trend, season, errors = _run(ys, params, horizon)
    return Model(params, len(ys), level, trend, tuple(season), tuple(tuple(e) for e in errors))


@dataclass(frozen=True, slots=True)
class Projection:
    """Spend over [start, end) as seen on `as_of`: `spent` before as_of, `expected` at the end
    with an 80 % band [low, high]; `days` are (day, expected cumulative spend, low, high)."""

    start: date
    end: date
    as_of: date
    spent: float
    expected: float
    low: float
    high: float
    days: tuple[tuple[date, float, float, float], ...]


def project(model: Model, start: date, end: date, as_of: date, spent: float) -> Projection:
    """Project spend over the period [start, end): `spent` happened in [start, as_of) and the
    model (fitted on the days before as_of) forecasts the days from as_of to end."""
    horizon = max(0, (end - max(as_of, start)).days)
    means = model.daily(horizon)
    days, cum = [], 0.0
    for h, m in enumerate(means, 1):
        cum += m
        lo, hi = model.log_band(h)
        day = max(as_of, start) + timedelta(days=h - 1)
        days.append((day, spent + cum, spent + cum * math.exp(lo), spent + cum * math.exp(hi)))
    if days:
        _, expected, low, high = days[-1]
    else:
        expected = low = high = spent
    return Projection(start, end, as_of, spent, expected, low, high, tuple(days))


@dataclass(frozen=True, slots=True)
class Exhaustion:
    """When a limit is reached: `expected` day and its 80 % band [earliest, latest]; None for a
    bound means "not within this period"."""

    expected: date | None
    earliest: date | None
    latest: date | None


def exhaustion(projection: Projection, limit: float, used: float | None = None) -> Exhaustion:
    """The day spend reaches `limit` (`used`: what already counts against it, default the
    projection's spent; the projection's forecast adds to it)."""
    base = projection.spent if used is None else used
    if base >= limit:
        return Exhaustion(projection.as_of, projection.as_of, projection.as_of)
    shift = base - projection.spent

    def first(k: int) -> date | None:
        return next((d for d, *cum in projection.days if cum[k] + shift >= limit), None)

    return Exhaustion(first(0), first(2), first(1))  # expected, earliest (high band), latest (low band)


def naive_linear(spent: float, elapsed_days: int, period_days: int) -> float:
    """The naive month-end projection: spend so far at the same daily rate to the end."""
    return spent / elapsed_days * period_days if elapsed_days > 0 else 0.0
