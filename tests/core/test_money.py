"""Dollar amounts leave the API in plain form: exact, no exponent (`0`, not `0E-9`; `100`, not
`1E+2`; `0.00000015`, not `1.5E-7`) and no trailing zeros (`0.003`, not `0.003000`), on both
backends, for events as recorded and as read back; the ledger still stores nano-dollars."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import pytest

import tokentrail as tt
from tokentrail.events import from_row, nano_to_usd, quantize_usd, usd_to_nano
from tokentrail.money import usd
from tokentrail.pricing import PriceBook

PLAIN = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]*[1-9])?")


def plain(value: Any) -> bool:
    """Whether str(), f-string and repr of a Decimal all show it plainly and it is tidy."""
    return (
        isinstance(value, Decimal)
        and PLAIN.fullmatch(str(value)) is not None
        and f"{value}" == str(value)
        and repr(value) == f"Decimal('{value}')"
    )


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("0E-9", "0"),
        ("-0E-9", "0"),
        ("0.003000", "0.003"),
        ("0.0000900", "0.00009"),
        ("1.5E-7", "0.00000015"),
        ("0.000000001", "0.000000001"),
        ("100", "100"),
        ("1E+2", "100"),
        ("100.000000000", "100"),
        ("-4.570606000", "-4.570606"),
        ("1234567890123456789012345678901.5", "1234567890123456789012345678901.5"),  # never rounded
    ],
)
def test_usd_is_the_same_number_in_plain_form(value: str, shown: str) -> None:
    u = usd(Decimal(value))
    assert str(u) == shown and u == Decimal(value) and plain(u)
    assert f"{u:.2f}" == f"{Decimal(value) or Decimal(0):.2f}"  # an explicit format is the caller's (-0 is 0)
    if abs(u) < 10**9:
        assert usd_to_nano(u) == usd_to_nano(Decimal(value))


def test_nano_dollars_convert_both_ways_in_plain_form() -> None:
    for nusd in (0, 1, 150, 3_000_000, 100_000_000_000, -4_570_606_000):
        back = nano_to_usd(nusd)
        assert plain(back) and usd_to_nano(back) == nusd
    assert str(quantize_usd(Decimal("0.0030000004"))) == "0.003"


@pytest.mark.parametrize(
    ("model", "counts"),
    [
        ("gpt-4o", {"input_tokens": 1200, "output_tokens": 9}),
        ("gpt-4o-mini", {"input_tokens": 1, "output_tokens": 0}),  # 1.5E-7 before
        ("claude-sonnet-4-5", {"input_tokens": 1000, "output_tokens": 6, "cache_read_tokens": 100}),
        ("gpt-4o", {"input_tokens": 40_000_000, "output_tokens": 0}),  # 100 dollars: 1E+2 before
    ],
)
def test_price_fields_are_plain(model: str, counts: dict[str, int]) -> None:
    provider = "anthropic" if model.startswith("claude") else "openai"
    cost = tt.price(provider=provider, model=model, book=PriceBook(overrides=""), **counts)
    assert cost is not None
    for name in ("input_usd", "output_usd", "cache_read_usd", "cache_write_usd", "other_usd", "total_usd"):
        assert plain(getattr(cost, name)), (name, getattr(cost, name))
    assert cost.total_usd == cost.input_usd + cost.output_usd + cost.cache_read_usd + cost.cache_write_usd


def test_events_and_session_totals_are_plain_as_recorded_and_as_read_back(any_ledger: tt.Ledger) -> None:
    with tt.session(agent="a", ledger=any_ledger) as s:
        events = [
            any_ledger.record_llm(provider="openai", model="gpt-4o", status="error"),  # priced, used nothing
            any_ledger.record_llm(provider="openai", model="gpt-4o-mini", input_tokens=1),
            any_ledger.record_llm(provider="openai", model="gpt-4o", input_tokens=1200, output_tokens=9),
            any_ledger.record_tool("search", {"q": 1}, cost_usd=100),
            any_ledger.record_tool("lookup", {"q": 2}, cost_usd="0.0300"),
        ]
    assert [str(e.cost_usd) for e in events][:2] == ["0", "0.00000015"]
    assert [str(e.cost_usd) for e in events][3:] == ["100", "0.03"]
    any_ledger.flush()
    for e in events:
        assert plain(e.cost_usd), e.cost_usd
        assert e.to_dict()["cost_usd"] == str(e.cost_usd)
        row = any_ledger.store.get_event(e.event_id)
        assert row is not None
        back = from_row(row).cost_usd
        assert plain(back) and back == e.cost_usd
    stored = any_ledger.store.query("SELECT SUM(cost_nusd) FROM events")[0][0]
    assert int(stored) == sum(usd_to_nano(e.cost_usd) or 0 for e in events)  # storage unchanged
    assert plain(s.cost_usd) and s.cost_usd == sum(e.cost_usd or 0 for e in events)


def test_a_budget_limit_of_100_is_100_in_json(ledger: tt.Ledger) -> None:
    ledger.budgets.set("round", scope={"team": "t"}, period="month", limit_usd=100)
    b = ledger.budgets.get("round")
    assert b is not None and plain(b.limit_usd)
    assert json.loads(json.dumps(b.to_dict()))["limit_usd"] == "100"  # was "1E+2"
