"""Unit economics (docs/metrics.md) against hand-computed values on a fixed fixture, both backends."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

import tokentrail as tt
from tokentrail.analytics.economics import percentile, unit_economics
from tokentrail.events import UsageEvent
from tokentrail.pricing import PriceBook

T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


@pytest.fixture
def led(db_url: str) -> Iterator[tt.Ledger]:
    ledger = tt.Ledger(db_url, prices=PriceBook(overrides=""))
    yield ledger
    ledger.close()


def call(minute: int, cost: str, inp: int, out: int, **kw: object) -> UsageEvent:
    return UsageEvent(
        ts=T0 + timedelta(minutes=minute),
        provider="openai",
        model="gpt-4o",
        cost_usd=Decimal(cost),
        input_tokens=inp,
        output_tokens=out,
        **kw,  # type: ignore[arg-type]
    )


def fixture(led: tt.Ledger) -> None:
    """s1, s2 (agent a, review), s3 (agent b, triage), and one call of agent b in no session."""
    a = {"agent": "a", "task_type": "review"}
    b = {"agent": "b", "task_type": "triage"}
    led.record(
        call(
            1,
            "0.10",
            1000,
            200,
            reasoning_tokens=50,
            cache_read_tokens=400,
            latency_ms=100,
            context_window_tokens=10000,
            session_id="s1",
            **a,
        )
    )
    led.record(call(2, "0.30", 3000, 300, latency_ms=300, context_window_tokens=10000, session_id="s1", **a))
    led.record(
        UsageEvent(
            kind="tool",
            ts=T0 + timedelta(minutes=3),
            tool_name="search",
            cost_usd=Decimal("0.05"),
            session_id="s1",
            **a,
        )
    )  # type: ignore[arg-type]
    led.record(call(4, "0.20", 2000, 100, latency_ms=200, session_id="s2", **a))
    led.record(
        call(
            5,
            "0.40",
            4000,
            400,
            reasoning_tokens=100,
            cache_read_tokens=1000,
            latency_ms=400,
            context_window_tokens=8000,
            session_id="s3",
            **b,
        )
    )
    led.record(call(6, "0.01", 100, 10, latency_ms=50, **b))
    with tt.session(session_id="s1", ledger=led, **a) as s:
        s.outcome("reviewed", value_usd="2.00")
    with tt.session(session_id="s2", ledger=led, **a) as s:
        s.outcome("reviewed", success=False)
    with tt.session(session_id="s3", ledger=led, **b) as s:
        s.outcome("triaged", count=2, value_usd=1)
    led.flush()


def test_metrics_by_agent_match_hand_computed_values(led: tt.Ledger) -> None:
    fixture(led)
    rep = unit_economics(led.store, by=["agent"], since=T0, until=T0 + timedelta(hours=1))
    rows = {r.value("agent"): r for r in rep.rows}
    a, b, t = rows["a"], rows["b"], rep.totals
    assert (a.sessions, a.calls, a.cost_usd) == (2, 3, Decimal("0.65"))
    assert a.avg_cost_per_session == Decimal("0.325")
    assert a.avg_cost_per_call == Decimal("0.2")
    assert (a.successful_outcomes, a.failed_outcomes) == (1, 1)
    assert a.cost_per_action == Decimal("0.65")  # the failed session's cost counts against the success
    assert a.outcome_value_usd == Decimal("2")
    assert a.roi == pytest.approx(2 / 0.65)
    assert a.token_efficiency == pytest.approx(450 / 6600)  # (200-50)+300 of s1 over every token of a
    assert a.cache_hit_rate == pytest.approx(400 / 6000)
    assert a.output_input_ratio == pytest.approx(0.1)
    assert a.context_utilisation_p95 == pytest.approx(0.29)
    assert (a.latency_p50, a.latency_p95) == (pytest.approx(200), pytest.approx(290))

    assert (b.sessions, b.calls, b.cost_usd) == (1, 2, Decimal("0.41"))
    assert b.avg_cost_per_session == Decimal("0.4")  # the call in no session is no session's cost
    assert b.avg_cost_per_call == Decimal("0.205")
    assert b.cost_per_action == Decimal("0.2")
    assert b.roi == pytest.approx(2.5)
    assert b.token_efficiency == pytest.approx(300 / 4510)
    assert b.cache_hit_rate == pytest.approx(1000 / 4100)
    assert b.context_utilisation_p95 == pytest.approx(0.5)
    assert (b.latency_p50, b.latency_p95) == (pytest.approx(225), pytest.approx(382.5))

    assert (t.sessions, t.calls, t.cost_usd) == (3, 5, Decimal("1.06"))
    assert t.avg_cost_per_session == Decimal("0.35")
    assert t.avg_cost_per_call == Decimal("0.202")
    assert (t.successful_outcomes, t.failed_outcomes) == (3, 1)
    assert t.cost_per_action == Decimal("0.35")
    assert t.roi == pytest.approx(3 / 1.05)
    assert t.token_efficiency == pytest.approx(750 / 11110)
    assert t.cache_hit_rate == pytest.approx(1400 / 10100)
    assert t.context_utilisation_p95 == pytest.approx(0.48)
    assert (t.latency_p50, t.latency_p95) == (pytest.approx(200), pytest.approx(380))


def test_metrics_by_task_type_and_scope(led: tt.Ledger) -> None:
    fixture(led)
    rep = unit_economics(led.store, by=["task_type"], scope={"agent": "b"}, where={"agent": ["a", "b"]})
    assert [r.value("task_type") for r in rep.rows] == ["triage"]  # the scope is never widened
    assert rep.totals.cost_per_action == Decimal("0.2")


def test_no_outcomes_or_calls_give_none_not_zero(led: tt.Ledger) -> None:
    led.record(UsageEvent(ts=T0, provider="acme", model="secret", input_tokens=10, output_tokens=1, session_id="x"))
    led.flush()
    t = unit_economics(led.store).totals
    assert t.cost_usd is None and t.cost_per_action is None and t.avg_cost_per_call is None  # unpriced: never $0
    assert t.token_efficiency == 0 and t.latency_p50 is None


def test_percentile_is_linear_like_percentile_cont() -> None:
    assert percentile([], 0.5) is None
    assert percentile([3.0], 0.95) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == pytest.approx(2.5)


def test_outcome_arguments_are_checked(led: tt.Ledger) -> None:
    with tt.session(ledger=led) as s:
        with pytest.raises(tt.InvalidUsage):
            s.outcome("x", value_usd="lots")
        with pytest.raises(tt.InvalidUsage):
            s.outcome("x", success="yes")  # type: ignore[arg-type]
