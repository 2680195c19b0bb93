"""How a process keeps its budget definitions fresh without an event loop ever reading the store:
the budget thread reads them ahead of time, a coroutine that finds them due has a worker thread
read them, a budget another process creates is enforced within `cache_ttl`, and a failed read
follows fail-open/fail-closed (on both backends)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

import tokentrail as tt
from tokentrail.context import Attribution

M = [{"role": "user", "content": "hi"}]
BODY = {"model": "gpt-4o-mini", "messages": M, "max_tokens": 10}


async def reserve(budgets: Any, team: str = "a") -> Any:
    call = budgets.areserve_call(provider="openai", model="gpt-4o-mini", body=BODY, attribution=Attribution(team=team))
    return await asyncio.wait_for(call, timeout=20)


def test_the_event_loop_never_reads_the_definitions(any_ledger: tt.Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    budgets = any_ledger.budgets.configure(cache_ttl=0.0)  # due on every call
    budgets.set("day", period="day", limit_usd=100)
    sql = budgets._backend()
    readers: list[int] = []
    version = sql.version

    def recorded() -> int:
        readers.append(threading.get_ident())
        return version()

    monkeypatch.setattr(sql, "version", recorded)

    async def main() -> tuple[int, list[Any]]:
        holds = await asyncio.gather(*(reserve(budgets) for _ in range(8)))
        holds += [await reserve(budgets) for _ in range(4)]
        return threading.get_ident(), holds

    loop_thread, holds = asyncio.run(main())
    assert readers and loop_thread not in readers  # read, but never on the loop's thread
    assert all(h is not None and h.reserved for h in holds)
    for h in holds:
        budgets.void(h)
    budgets.flush()


def test_a_budget_another_process_creates_is_enforced_within_the_cache_ttl(any_ledger: tt.Ledger) -> None:
    budgets = any_ledger.budgets.configure(cache_ttl=0.3)
    budgets.set("roomy", scope={"team": "b"}, period="day", limit_usd=100)

    async def first() -> Any:
        return await reserve(budgets)

    assert asyncio.run(first()) is None  # team a: no budget applies (definitions now cached)
    script = (
        "import sys, tokentrail as tt\n"
        "led = tt.Ledger(sys.argv[1], spool=False)\n"
        "led.budgets.set('tiny', scope={'team': 'a'}, period='day', limit_usd='0.000001')\n"
        "led.close()\n"
    )
    subprocess.run([sys.executable, "-c", script, any_ledger.store.url], check=True, timeout=120)
    created = time.monotonic()
    while time.monotonic() < created + budgets.cache_ttl:  # the documented bound, then no longer
        time.sleep(0.05)

    async def after() -> None:
        with pytest.raises(tt.BudgetExceeded, match="tiny"):
            await reserve(budgets)

    asyncio.run(after())


@pytest.mark.parametrize("fail_closed", [False, True])
def test_a_failed_read_on_the_loop_follows_fail_open_or_closed(
    any_ledger: tt.Ledger, monkeypatch: pytest.MonkeyPatch, fail_closed: bool
) -> None:
    budgets = any_ledger.budgets.configure(cache_ttl=0.0, fail_closed=fail_closed)
    budgets.set("day", period="day", limit_usd=100)

    def down() -> int:
        raise ConnectionError("the ledger is down")

    monkeypatch.setattr(budgets._backend(), "version", down)
    if fail_closed:
        with pytest.raises(tt.LedgerUnavailable, match="fail-closed"):
            asyncio.run(reserve(budgets))
    else:
        before = budgets.fail_open_errors
        hold = asyncio.run(reserve(budgets))  # goes ahead on the definitions last read, counted
        assert budgets.fail_open_errors == before + 1
        assert hold is not None
        budgets.void(hold)
        budgets.flush()


def test_the_budget_thread_failing_to_read_ahead_leaves_them_due(
    any_ledger: tt.Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read ahead that fails is not a read: the next call reads them itself, and fails closed."""
    budgets = any_ledger.budgets.configure(cache_ttl=3600.0, fail_closed=True)
    budgets.set("day", period="day", limit_usd=100)

    tries: list[int] = []

    def down() -> int:
        tries.append(1)
        raise ConnectionError("the ledger is down")

    monkeypatch.setattr(budgets._backend(), "version", down)
    due = budgets._next_check = time.monotonic() + 60.0
    budgets._refresh_ahead()  # within half a cache_ttl of being due: it tries now, and fails
    assert tries and budgets._next_check == due
    budgets._next_check = 0.0  # the time has come
    with pytest.raises(tt.LedgerUnavailable, match="fail-closed"):
        asyncio.run(reserve(budgets))
