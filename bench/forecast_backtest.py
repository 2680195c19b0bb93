"""Backtest of the month-end spend forecast (tokentrail forecast) against a naive linear projection.

Prints, for seeded synthetic series (flat, trending, weekly, step change) and for a demo history
(the demo fleet's three teams over seven months, written to a real ledger and read back through
the daily rollup with --as-of), the MAPE of the month-end projection made on day 7, 14 and 21 of
each month, the naive linear projection's, and the share of truths inside the 80 % band.

    python bench/forecast_backtest.py [--seeds 8] [--statsmodels]

--statsmodels adds statsmodels' ETS (damped trend, weekly season) with its own nominal 80 %
interval, for comparison; it needs statsmodels installed (tokentrail does not depend on it).
"""

from __future__ import annotations

import argparse
import math
import random
import tempfile
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import tokentrail as tt
from tokentrail.analytics.forecast_backtest import (
    CHECKPOINTS,
    FIRST_DAY,
    SYNTHETIC,
    WEEKLY,
    Tally,
    backtest,
    merge,
)
from tokentrail.analytics.forecast_ledger import daily_spend

# The demo fleet's teams: (team, agent, provider, model, calls on a weekday, monthly growth, step)
DEMO_TEAMS = (
    ("cx", "support-bot", "openai", "gpt-4o-mini", 40, 0.03, None),
    ("legal", "contract-analyzer", "anthropic", "claude-sonnet-4-6", 6, 0.0, (120, 2.0)),  # doubles on day 120
    ("eng", "code-reviewer", "openai", "gpt-4.1", 10, 0.10, None),
)
DEMO_DAYS = 214


def demo_history(url: str, seed: int) -> date:
    """Write the demo fleet's seven months of calls (weekday pattern, growth, a step) to `url`."""
    rng = random.Random(seed)
    first = date(2026, 1, 1)
    with tt.Ledger(url) as ledger:
        for i in range(DEMO_DAYS):
            day = first + timedelta(days=i)
            for team, agent, provider, model, per_day, growth, step in DEMO_TEAMS:
                rate = per_day * WEEKLY[day.weekday()] * math.exp(growth * i / 30)
                if step and i >= step[0]:
                    rate *= step[1]
                calls = max(0, round(rng.gauss(rate, math.sqrt(rate))))
                with tt.session(team=team, agent=agent, project="demo", ledger=ledger):
                    for c in range(calls):
                        ledger.record_llm(
                            provider=provider,
                            model=model,
                            input_tokens=rng.randint(2_000, 12_000),
                            output_tokens=rng.randint(200, 1_500),
                            ts=datetime(day.year, day.month, day.day, 8, tzinfo=UTC) + timedelta(minutes=7 * c),
                        )
        ledger.flush()
    return first


def statsmodels_projector(seen: Sequence[float], horizon: int) -> tuple[float, float, float]:
    """statsmodels' ETS (additive errors, damped trend, weekly season), with its own 80 % interval
    of the sum of the next `horizon` days from 300 simulated paths: the library's nominal band."""
    import numpy as np
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    y = np.asarray(seen, dtype=float)
    seasonal = "add" if len(y) >= 28 else None
    model = ETSModel(y, error="add", trend="add", damped_trend=True, seasonal=seasonal, seasonal_periods=7)
    fitted = model.fit(disp=False, maxiter=200)
    mean = float(np.clip(fitted.forecast(horizon), 0, None).sum())
    paths = np.asarray(fitted.simulate(horizon, repetitions=300, anchor="end", rng=0))
    sums = np.clip(paths, 0, None).reshape(horizon, -1).sum(axis=0)
    return mean, float(np.quantile(sums, 0.1)), float(np.quantile(sums, 0.9))


def demo_series(seed: int) -> tuple[date, list[list[float]]]:
    """The demo history's daily spend per team and in total, read back through the daily rollup."""
    from tokentrail.store import open_store

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'demo.db'}"
        first = demo_history(url, seed)
        store = open_store(url)
        try:
            end = first + timedelta(days=DEMO_DAYS)
            _, series = daily_spend(store, until=end, days=DEMO_DAYS, by="team")
            _, total = daily_spend(store, until=end, days=DEMO_DAYS)
        finally:
            store.close()
    return first, [*series.values(), total[None]]


def rows(name: str, t: dict[int, Tally], lib: dict[int, Tally] | None) -> list[str]:
    out = []
    for k in CHECKPOINTS:
        m, n = t[k].mape()
        line = f"| {name} | {k} | {t[k].n} | {m:.1f} | {n:.1f} | {100 * t[k].coverage():.0f} % |"
        if lib is not None:
            line += f" {lib[k].mape()[0]:.1f} | {100 * lib[k].coverage():.0f} % |"
        out.append(line)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--statsmodels", action="store_true", help="also backtest statsmodels' ETS (slow)")
    args = ap.parse_args()
    head = "| series | day | months | MAPE model % | MAPE naive linear % | truth in 80 % band |"
    rule = "|---|---|---|---|---|---|"
    if args.statsmodels:
        head += " MAPE statsmodels ETS % | truth in ETS's own 80 % interval |"
        rule += "---|---|"
    print(head)
    print(rule)
    cases = [(name, FIRST_DAY, [make(s) for s in range(args.seeds)]) for name, make in SYNTHETIC.items()]
    first, demo = demo_series(seed=7)
    cases.append(("demo history (3 teams + total)", first, demo))
    ours: list[dict[int, Tally]] = []
    theirs: list[dict[int, Tally]] = []
    for name, start, series in cases:
        t = merge([backtest(s, start) for s in series])
        ours.append(t)
        lib = None
        if args.statsmodels:
            lib = merge([backtest(s, start, projector=statsmodels_projector) for s in series])
            theirs.append(lib)
        print("\n".join(rows(name, t, lib)), flush=True)
    print("\n".join(rows("all", merge(ours), merge(theirs) if args.statsmodels else None)))


if __name__ == "__main__":
    main()
