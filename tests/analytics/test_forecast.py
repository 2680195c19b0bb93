"""The forecast core: model, calibrated band, exhaustion, and small seeded backtests."""

from __future__ import annotations

import math
from datetime import date, timedelta

import pytest

from tokentrail.analytics.forecast import FALLBACK_LOG_BAND, exhaustion, fit, naive_linear, project
from tokentrail.analytics.forecast_backtest import FIRST_DAY, SYNTHETIC, backtest, merge, step, weekly

SEEDS = range(3)


@pytest.mark.parametrize("name", sorted(SYNTHETIC))
def test_band_holds_the_truth_in_most_months(name: str) -> None:
    t = merge([backtest(SYNTHETIC[name](s, 150), FIRST_DAY) for s in SEEDS])
    inside = sum(v.inside for v in t.values())
    total = sum(v.n for v in t.values())
    assert total >= 27
    assert inside / total >= 0.6, f"{name}: {inside}/{total} truths inside the 80 % band"


def test_beats_the_naive_projection_on_a_weekly_series() -> None:
    t = merge([backtest(weekly(s, 210), FIRST_DAY) for s in range(6)])
    model = sum(v.mape()[0] for v in t.values())  # over day 7, 14 and 21: each alone is few months
    naive = sum(v.mape()[1] for v in t.values())
    assert model < naive * 0.9, f"model {model:.2f} vs naive {naive:.2f} (sum of MAPEs)"


def test_adapts_to_a_step_change_better_than_naive_late_in_the_month() -> None:
    t = merge([backtest(step(s, 150), FIRST_DAY) for s in SEEDS])
    model, naive = t[21].mape()
    assert model < naive


def test_band_is_wider_than_the_nominal_interval_and_grows_with_horizon() -> None:
    m = fit(weekly(1, 120), horizon=28)
    bands = [m.log_band(h) for h in (1, 7, 28)]
    assert all(lo < 0 < hi for lo, hi in bands)
    assert bands[2][1] - bands[2][0] > 0.02  # a few percent at least, not the model's nominal sliver


def test_weekly_pattern_is_forecast() -> None:
    y = [100.0 if (FIRST_DAY + timedelta(days=i)).weekday() < 5 else 10.0 for i in range(70)]
    m = fit(y, horizon=7)
    days = m.daily(7)
    for h, v in enumerate(days):
        weekday = (FIRST_DAY + timedelta(days=70 + h)).weekday()
        assert v == pytest.approx(100.0 if weekday < 5 else 10.0, rel=0.05)


def test_short_or_empty_history_gets_the_wide_fallback_band() -> None:
    m = fit([5.0, 6.0, 4.0], horizon=10)
    assert m.log_band(10) == FALLBACK_LOG_BAND
    assert fit([], horizon=3).daily(3) == [0.0, 0.0, 0.0]


def test_bad_series_is_refused() -> None:
    for bad in ([1.0, -1.0], [math.nan], [math.inf]):
        with pytest.raises(ValueError, match="finite and >= 0"):
            fit(bad)


def test_projection_adds_the_forecast_to_what_was_spent() -> None:
    y = [10.0] * 60
    start, end, as_of = date(2026, 3, 1), date(2026, 4, 1), date(2026, 3, 11)
    p = project(fit(y, horizon=21), start, end, as_of, spent=100.0)
    assert p.expected == pytest.approx(310.0, rel=0.01)
    assert p.low <= p.expected <= p.high
    assert len(p.days) == 21 and p.days[0][0] == as_of and p.days[-1][0] == date(2026, 3, 31)
    assert naive_linear(100.0, 10, 31) == pytest.approx(310.0)


def test_exhaustion_date_and_band() -> None:
    p = project(fit([10.0] * 60, horizon=21), date(2026, 3, 1), date(2026, 4, 1), date(2026, 3, 11), spent=100.0)
    ex = exhaustion(p, limit=200.0)
    assert ex.expected == date(2026, 3, 20)  # 100 + 10 a day reaches 200 on the 10th day from the 11th
    assert ex.earliest is not None and ex.earliest <= ex.expected
    assert ex.latest is None or ex.latest >= ex.expected
    never = exhaustion(p, limit=10_000.0)
    assert never.expected is None and never.earliest is None and never.latest is None
    spent = exhaustion(p, limit=50.0)
    assert spent.expected == date(2026, 3, 11)
