"""PostgreSQL: the budget engine keeps one pooled connection between its batches (no liveness round
trip per batch), a connection that breaks is replaced, and the calls of the batch it broke follow
fail-open/fail-closed (never skipped silently)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

pytest.importorskip("psycopg")

import psycopg

import tokentrail as tt
from tokentrail.budgets import Budgets
from tokentrail.events import UsageEvent
from tokentrail.pricing import PriceBook
from tokentrail.store.pg_budgets import PostgresBudgetSQL
from tokentrail.store.pg_kept import KeptConnection
from tokentrail.store.postgres import PostgresStore

pytestmark = [pytest.mark.postgres, pytest.mark.parametrize("db_url", ["postgres"], indirect=True)]


def _kept(budgets: Budgets) -> KeptConnection:
    sql = budgets._backend()
    assert isinstance(sql, PostgresBudgetSQL)
    return sql.kept


@pytest.fixture
def pg_ledger(db_url: str, prices: PriceBook, monkeypatch: pytest.MonkeyPatch) -> Iterator[tt.Ledger]:
    monkeypatch.setattr(KeptConnection, "idle_check_s", 3600.0)  # no idle check in these tests
    led = tt.Ledger(db_url, prices=prices, spool=False)
    led.budgets.configure(cache_ttl=3600.0)  # the definitions read once, by set()
    yield led
    led.close()


def test_batches_do_not_check_a_connection_out_each(pg_ledger: tt.Ledger) -> None:
    budgets = pg_ledger.budgets
    budgets.set("day", period="day", limit_usd=1000)
    store = pg_ledger.store
    assert isinstance(store, PostgresStore)
    pool = store._pool
    budgets.settle(budgets.reserve(cost_usd="0.01"), UsageEvent(input_tokens=1, cost_usd=Decimal("0.01")))
    budgets.flush()
    before = pool.get_stats().get("requests_num", 0)
    for _ in range(20):
        hold = budgets.reserve(cost_usd="0.01")
        assert hold is not None and hold.reserved
        budgets.settle(hold, UsageEvent(input_tokens=1, cost_usd=Decimal("0.01")))
    budgets.flush()
    assert pool.get_stats().get("requests_num", 0) - before < 10  # 40+ batches; was one checkout each
    [status] = budgets.status()
    assert status.posted_usd == Decimal("0.21") and status.reserved_usd == 0


@pytest.mark.parametrize("fail_closed", [False, True])
def test_a_broken_budget_connection_is_replaced(pg_ledger: tt.Ledger, db_url: str, fail_closed: bool) -> None:
    budgets = pg_ledger.budgets.configure(fail_closed=fail_closed)
    budgets.set("day", period="day", limit_usd=1)
    first = budgets.reserve(cost_usd="0.5")
    assert first is not None and first.reserved
    kept = _kept(budgets)
    pid = kept._conn.info.backend_pid
    with psycopg.connect(db_url, autocommit=True) as admin:  # the server drops it (a restart, a pooler)
        assert admin.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,)).fetchone() == (True,)
    before = budgets.fail_open_errors
    if fail_closed:
        with pytest.raises(tt.LedgerUnavailable, match="fail-closed"):
            budgets.reserve(cost_usd="0.1")
    else:
        hold = budgets.reserve(cost_usd="0.1")  # goes ahead unreserved, and counted
        assert hold is not None and not hold.reserved and budgets.fail_open_errors == before + 1
    # the next batch runs on a fresh connection: enforced again
    with pytest.raises(tt.BudgetExceeded):
        budgets.reserve(cost_usd="0.6")
    again = budgets.reserve(cost_usd="0.4")
    assert again is not None and again.reserved
    assert kept._conn.info.backend_pid != pid
    budgets.void(first)
    budgets.void(again)
    budgets.flush()


def test_a_pool_of_one_is_never_kept(db_url: str) -> None:
    store = PostgresStore(db_url, max_size=1)
    led = tt.Ledger(store=store, prices=PriceBook(overrides=""), spool=False)
    try:
        led.budgets.set("day", period="day", limit_usd=1)
        hold = led.budgets.reserve(cost_usd="0.5")
        assert hold is not None and hold.reserved
        assert _kept(led.budgets)._conn is None
        led.record_llm(provider="openai", model="gpt-4o-mini", input_tokens=10, output_tokens=5)
        led.flush()  # the ledger's writer still gets the pool's one connection
        assert store.query("SELECT COUNT(*) FROM events")[0][0] == 1
    finally:
        led.close()
