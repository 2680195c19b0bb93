"""Where budgets are kept: each backend's store hands out the budget tables' SQL itself
(`budget_sql()`), a store that cannot keep budgets says so, and the ledger reaches its budgets
through the `LedgerBudgets` Protocol the budgets package implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

import tokentrail as tt
from tokentrail.budgets import Budgets
from tokentrail.exceptions import ConfigError
from tokentrail.pricing import PriceBook
from tokentrail.store import open_store
from tokentrail.store.budgets import KeepsBudgets


class EventsOnly:
    """A store that keeps events and nothing else (no budget tables it could lock)."""

    def __init__(self, url: str) -> None:
        self.inner = open_store(url)
        self.url, self.dialect = self.inner.url, self.inner.dialect

    def write_events(self, rows: Sequence[Any]) -> int:
        return int(self.inner.write_events(rows))

    def write_outcomes(self, rows: Sequence[Any]) -> int:
        return int(self.inner.write_outcomes(rows))

    def write_quarantine(self, rows: Sequence[Any]) -> int:
        return int(self.inner.write_quarantine(rows))

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return list(self.inner.query(sql, params))

    def close(self) -> None:
        self.inner.close()


def test_each_backend_hands_out_its_budget_sql(any_ledger: tt.Ledger) -> None:
    store = any_ledger.store
    assert isinstance(store, KeepsBudgets)
    any_ledger.budgets.set("day", period="day", limit_usd=10)
    # a second, independent handle on the same tables sees the budget and its version
    sql = store.budget_sql()
    try:
        version, budgets, suspensions = sql.load()
        assert version >= 1 and [row[0] for row in budgets] == ["day"] and suspensions == []
        assert sql.version() == version
    finally:
        sql.close()


def test_the_ledgers_budgets_are_the_budgets_package(any_ledger: tt.Ledger) -> None:
    assert isinstance(any_ledger.budgets, Budgets) and any_ledger.budgets is any_ledger.budgets


def test_a_store_that_cannot_keep_budgets_says_so_and_recording_goes_on(sqlite_url: str, prices: PriceBook) -> None:
    store = EventsOnly(sqlite_url)
    assert not isinstance(store, KeepsBudgets)
    led = tt.Ledger(store=store, prices=prices)
    try:
        with pytest.raises(ConfigError, match="cannot keep budgets"):
            led.budgets.set("day", period="day", limit_usd=10)
        # no budget can apply to it: recording by hand charges nothing and never fails
        led.record_llm(provider="openai", model="gpt-4o-mini", input_tokens=10, output_tokens=5)
        led.flush()
        assert store.query("SELECT COUNT(*) FROM events")[0][0] == 1
    finally:
        led.close()
