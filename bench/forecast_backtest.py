"""Backtest of the month-end spend forecast (tokentrail forecast) against a naive linear projection.

Prints, for seeded synthetic series (flat, trending, weekly, step change) and for a demo history
(the demo fleet's three teams over seven months, written to a real ledger and read back through
the daily rollup with --as-of), the MAPE of the month-end projection made on day 7, 14 and 21 of
each month, the naive linear projection's, and the share of truths inside the 80 % band.

    python bench/forecast_backtest.py [--seeds 8]
"""

from __future__ import annotations

import argparse
import math
import random
import tempfile
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


def demo_tallies(seed: int) -> dict[int, Tally]:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'demo.db'}"
        first = demo_history(url, seed)
        from tokentrail.store import open_store

        store = open_store(url)
        try:
            end = first + timedelta(days=DEMO_DAYS)
            _, series = daily_spend(store, until=end, days=DEMO_DAYS, by="team")
            _, total = daily_spend(store, until=end, days=DEMO_DAYS)
        finally:
            store.close()
    return merge([backtest(s, first) for s in (*series.values(), total[None])])


def rows(name: str, t: dict[int, Tally]) -> list[str]:
    out = []
    for k in CHECKPOINTS:
        m, n = t[k].mape()
        out.append(f"| {name} | {k} | {t[k].n} | {m:.1f} | {n:.1f} | {100 * t[k].coverage():.0f} % |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=8)
    args = ap.parse_args()
    print("| series | day | months | MAPE model % | MAPE naive linear % | truth in 80 % band |")
    print("|---|---|---|---|---|---|")
    everything = []
    for name, make in SYNTHETIC.items():
        t = merge([backtest(make(s), FIRST_DAY) for s in range(args.seeds)])
        everything.append(t)
        print("\n".join(rows(name, t)))
    demo = demo_tallies(seed=7)
    everything.append(demo)
    print("\n".join(rows("demo history (3 teams + total)", demo)))
    print("\n".join(rows("all", merge(everything))))


if __name__ == "__main__":
    main()
