"""Transactions, SQL statements and (PostgreSQL) client waits on the server per budgeted call:
counted, not timed, so the figures hold on a loaded machine (issue 17, budgets at gateway speed).

    .venv/bin/python bench/budget_counts.py [--n 200] [--db sqlite:///… | postgresql://…]

A call is what a metered SDK call adds with 2 budgets that apply: reserve, then settle (post).
"sync" runs calls one after another in one thread (the SDK wrappers: settle waits until the post
is durable); "async c=N" runs N coroutines at once (the gateway), whose posts are queued and ride
with later batches. The async figures depend on how the batches fall, so they vary a little.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from budgets import BODY

import tokentrail as tt
from tokentrail.events import UsageEvent
from tokentrail.pricing import PriceBook
from tokentrail.store import budgets as store_budgets
from tokentrail.store import pg_budgets

COUNTS: Counter[str] = Counter()


def _counting(fn: Callable[..., Any], what: str) -> Callable[..., Any]:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        COUNTS[what] += 1
        return fn(*args, **kwargs)

    return wrapped


def instrument() -> None:
    """Count each engine transaction and each statement it sends (BEGIN, COMMIT and SQLite's
    PRAGMA synchronous switch, run on the connection itself, are not counted)."""
    for owner in (store_budgets.BudgetSQL, pg_budgets.PostgresBudgetSQL):
        setattr(owner, "transaction", _counting(owner.transaction, "transactions"))  # noqa: B010
    for cls in (store_budgets.Exec, pg_budgets._PgExec):
        setattr(cls, "__call__", _counting(cls.__call__, "statements"))  # noqa: B010
    setattr(pg_budgets._PgExec, "send", _counting(pg_budgets._PgExec.send, "statements"))  # noqa: B010


def event() -> UsageEvent:
    cost = tt.price(provider="openai", model="gpt-4o-mini", input_tokens=300, output_tokens=120)
    assert cost is not None
    return UsageEvent(input_tokens=300, output_tokens=120, cost_usd=cost.total_usd)


def sync_calls(ledger: tt.Ledger, n: int) -> None:
    b = ledger.budgets
    for _ in range(n):
        hold = b.reserve_call(provider="openai", model="gpt-4o-mini", body=BODY)
        b.settle(hold, event())


async def async_calls(ledger: tt.Ledger, n: int, c: int) -> None:
    b = ledger.budgets

    async def worker(k: int) -> None:
        for _ in range(k):
            hold = await b.areserve_call(provider="openai", model="gpt-4o-mini", body=BODY)
            b.settle(hold, event())
            await asyncio.sleep(0)

    await asyncio.gather(*(worker(n // c) for _ in range(c)))


@contextmanager
def counted(label: str, calls: int) -> Iterator[None]:
    COUNTS.clear()
    yield
    per = {k: v / calls for k, v in sorted(COUNTS.items())}
    print(f"  {label:<12} " + "  ".join(f"{k} {v:6.2f}" for k, v in per.items()) + "  per call")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--db", default=None)
    args = parser.parse_args()
    url = args.db or f"sqlite:///{tempfile.mkdtemp()}/counts.db"
    ledger = tt.Ledger(url, prices=PriceBook(overrides=""), spool=False)
    ledger.budgets.set("bench-team", scope={"team": "perf"}, period="month", limit_usd=1_000_000)
    ledger.budgets.set("bench-agent", scope={"agent": "*"}, period="day", limit_usd=1_000_000)
    instrument()
    backend = "PostgreSQL" if url.startswith("postgres") else "SQLite"
    print(f"budget engine per call on {backend}, 2 budgets apply:")
    with tt.session(agent="bench", team="perf", ledger=ledger):
        sync_calls(ledger, 20)  # warm: counters exist, budgets loaded
        ledger.budgets.flush()
        with counted("sync", args.n):
            sync_calls(ledger, args.n)
            ledger.budgets.flush()
        for c in (1, 32):
            with counted(f"async c={c}", args.n):
                asyncio.run(async_calls(ledger, args.n, c))
                ledger.budgets.flush()
    ledger.close()


if __name__ == "__main__":
    main()
