"""Budgets: definitions, reserve / post / void, wildcards, overage, throttling, kill switch, expiry,
fail-open / fail-closed, and enforcement through the real SDKs (refused before the request leaves)."""

from __future__ import annotations

import asyncio
import gc
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from google import genai

import tokentrail as tt
from tokentrail.budgets import Budgets
from tokentrail.budgets.alerts import list_alerts
from tokentrail.events import UsageEvent
from tokentrail.exceptions import ConfigError
from tokentrail.testing import FakeUpstream, Reply, capture_events

M = [{"role": "user", "content": "What is the capital of France?"}]


def live_holds(ledger: tt.Ledger) -> int:
    now_us = int(time.time() * 1_000_000)
    p = ledger.store.dialect.param
    return int(ledger.store.query(f"SELECT COUNT(*) FROM budget_holds WHERE expires_us > {p}", (now_us,))[0][0])


def spend(ledger: tt.Ledger, hold: Any, usd: str, tokens: int = 100) -> None:
    ledger.budgets.settle(hold, UsageEvent(input_tokens=tokens, cost_usd=Decimal(usd)))


def one(ledger: tt.Ledger, usd: str = "1", tokens: int = 0) -> Any:
    return ledger.budgets.reserve(cost_usd=usd, tokens=tokens)


# -- definitions --------------------------------------------------------------------------------------


def test_set_list_rm(any_ledger: tt.Ledger) -> None:
    b = any_ledger.budgets
    b.set("legal-monthly", scope={"team": "legal"}, period="month", limit_usd=500, tz="Europe/Paris")
    b.set("per-agent", scope={"agent": "*"}, period="day", limit_tokens=1_000_000, alert_at=(0.9,), action="alert")
    assert [x.name for x in b.list()] == ["legal-monthly", "per-agent"]
    legal = b.get("legal-monthly")
    assert legal is not None and legal.limit_usd == Decimal(500) and legal.tz == "Europe/Paris"
    assert legal.alert_at == (0.5, 0.8, 1.0) and dict(legal.scope) == {"team": "legal"}
    b.set("legal-monthly", scope={"team": "legal"}, period="month", limit_usd=600)  # replace
    assert b.get("legal-monthly").limit_usd == Decimal(600)  # type: ignore[union-attr]
    assert b.rm("per-agent") and not b.rm("per-agent")
    # another process (another Budgets on the same store) sees the same definitions
    assert [x.name for x in Budgets.for_store(any_ledger.store).list()] == ["legal-monthly"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scope": {"colour": "red"}, "limit_usd": 1}, "unknown scope dimension"),
        ({"limit_usd": 1, "period": "fortnight"}, "unknown period"),
        ({}, "limit_usd and/or limit_tokens"),
        ({"limit_usd": -1}, "between 0"),
        ({"limit_usd": 1, "action": "explode"}, "action"),
        ({"limit_usd": 1, "tz": "Mars/Olympus"}, "unknown time zone"),
        ({"limit_usd": 1, "alert_at": (0,)}, "above 0"),
        ({"limit_usd": 1, "period": "session", "action": "throttle"}, "throttle needs a time period"),
        ({"limit_tokens": 1.5}, "whole number"),
    ],
)
def test_bad_definitions_say_what_is_wrong(ledger: tt.Ledger, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ledger.budgets.set("b", **kwargs)


def test_budgets_load_from_a_toml_file(tmp_path: Path, ledger: tt.Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "budgets.toml"
    f.write_text(
        '[settings]\nhold_timeout = "30s"\n\n'
        '[[budgets]]\nname = "legal-monthly"\nscope = { team = "legal" }\nperiod = "month"\nlimit_usd = 500\n'
        'tz = "Europe/Paris"\n\n[[budgets]]\nname = "burn"\nperiod = "rolling:1m"\nlimit_tokens = 200000\n'
        'action = "throttle"\n'
    )
    monkeypatch.setenv("TOKENTRAIL_BUDGETS", str(f))
    fresh = Budgets(ledger)
    assert [b.name for b in fresh.list()] == ["burn", "legal-monthly"]
    assert fresh.hold_timeout == 30 and fresh.get("burn").source == f"file:{f}"  # type: ignore[union-attr]
    bad = tmp_path / "bad.toml"
    bad.write_text('[[budgets]]\nname = "x"\nlimit_usd = 1\nperiod = "weekly"\n')
    with pytest.raises(ConfigError, match=r"bad.toml, budget 1: unknown period"):
        fresh.load(bad)


# -- reserve, post, void ------------------------------------------------------------------------------


def test_reserve_post_and_the_rest_returns(any_ledger: tt.Ledger) -> None:
    b = any_ledger.budgets
    b.set("team", scope={"team": "legal"}, period="day", limit_usd=10)
    with tt.session(agent="a", team="legal", ledger=any_ledger):
        h = one(any_ledger, "4")
        assert h is not None and h.reserved
        [st] = b.status()
        assert (st.posted_usd, st.reserved_usd, st.remaining_usd) == (0, 4, 6)
        spend(any_ledger, h, "1.5")
        [st] = b.status()
        assert (st.posted_usd, st.reserved_usd, st.remaining_usd) == (Decimal("1.5"), 0, Decimal("8.5"))
        h2 = one(any_ledger, "8.5")  # exactly the rest fits
        with pytest.raises(tt.BudgetExceeded) as refused:
            one(any_ledger, "0.01")
        b.void(h2)
        assert one(any_ledger, "8.5") is not None
    msg = str(refused.value)
    for part in ("Budget 'team'", "team=legal", "day", "limit $10.00", "spent $1.50 + reserved $8.50", "session "):
        assert part in msg, (part, msg)
    assert refused.value.budget == "team"


def test_a_call_outside_every_scope_is_not_budgeted(ledger: tt.Ledger) -> None:
    ledger.budgets.set("legal", scope={"team": "legal"}, limit_usd=1)
    with tt.session(team="eng", ledger=ledger):
        assert one(ledger, "100") is None


def test_wildcard_scope_is_one_budget_per_value_and_no_key_is_shared(any_ledger: tt.Ledger) -> None:
    b = any_ledger.budgets
    b.set("each", scope={"agent": "*"}, period="day", limit_usd=3)
    b.set("all", period="day", limit_usd=6)
    for agent in ("x", "y"):
        with tt.session(agent=agent, ledger=any_ledger):
            spend(any_ledger, one(any_ledger, "2"), "2")
    with tt.session(agent="x", ledger=any_ledger), pytest.raises(tt.BudgetExceeded, match="'each' \\(agent=x"):
        one(any_ledger, "2")  # x has 1 left of its own 3 (the shared 6 has 2 left)
    with tt.session(agent="z", ledger=any_ledger), pytest.raises(tt.BudgetExceeded, match="'all' \\(all"):
        one(any_ledger, "2.5")  # z has 3 of its own, but the shared 6 has 2 left
    rows = {(s.budget.name, s.bucket): s.posted_usd for s in b.status()}
    assert rows == {("all", "all"): 4, ("each", "agent=x"): 2, ("each", "agent=y"): 2}
    with tt.session(ledger=any_ledger):  # no agent: the * budget does not apply, the shared one does
        assert one(any_ledger, "1") is not None


def test_all_or_none(ledger: tt.Ledger) -> None:
    b = ledger.budgets
    b.set("big", period="day", limit_usd=100)
    b.set("small", scope={"team": "t"}, period="day", limit_usd=1)
    with tt.session(team="t", ledger=ledger), pytest.raises(tt.BudgetExceeded, match="small"):
        one(ledger, "2")
    assert all(s.reserved_usd == 0 for s in b.status())  # nothing was reserved on 'big' either


def test_session_budget(ledger: tt.Ledger) -> None:
    ledger.budgets.set("per-session", period="session", limit_usd=1)
    with tt.session(ledger=ledger):
        spend(ledger, one(ledger, "0.6"), "0.6")
        with pytest.raises(tt.BudgetExceeded, match="per-session"):
            one(ledger, "0.6")
    with tt.session(ledger=ledger):  # a new session starts afresh
        assert one(ledger, "0.6") is not None
    assert one(ledger, "5") is None  # no session: a session budget does not apply


def test_a_session_overage_locks_that_session_until_it_ends(ledger: tt.Ledger) -> None:
    ledger.budgets.set("per-session", period="session", limit_usd=1)
    with tt.session(session_id="s-over", ledger=ledger):
        spend(ledger, one(ledger, "0.5"), "1.5")  # past the estimate and the limit
        with pytest.raises(tt.BudgetExceeded, match="the session ends"):
            one(ledger, "0.01")
    [st] = ledger.budgets.status()
    assert (st.locked, st.blocked_until, st.posted_usd) == (True, None, Decimal("1.5"))
    assert st.to_dict()["locked"] is True


def test_per_call_cap(ledger: tt.Ledger) -> None:
    ledger.budgets.set("cap", period="call", limit_usd="0.5")
    assert one(ledger, "0.5") is not None
    with pytest.raises(tt.BudgetExceeded, match="per-call limit"):
        one(ledger, "0.51")


def test_token_limits(any_ledger: tt.Ledger) -> None:
    any_ledger.budgets.set("tokens", period="hour", limit_tokens=1000)
    h = one(any_ledger, "0", tokens=600)
    with pytest.raises(tt.BudgetExceeded, match="1,000 tokens"):
        one(any_ledger, "0", tokens=600)
    spend(any_ledger, h, "0", tokens=100)
    assert one(any_ledger, "0", tokens=600) is not None


# -- overage, throttle, kill switch -----------------------------------------------------------------


def test_overage_is_posted_recorded_and_blocks_until_the_period_ends(any_ledger: tt.Ledger) -> None:
    b = any_ledger.budgets
    b.set("day", period="day", limit_usd=10, tz="Europe/Paris")
    h = one(any_ledger, "1")
    spend(any_ledger, h, "3")  # the provider went past the estimate
    [st] = b.status()
    assert st.posted_usd == 3 and st.blocked_until == st.period_end is not None and st.locked
    with pytest.raises(tt.BudgetExceeded, match="overage") as refused:
        one(any_ledger, "0.01")
    assert st.period_end is not None and str(st.period_end.year) in str(refused.value)
    [alert] = list_alerts(any_ledger.store, kind="overage")
    assert "cost $3.00" in alert.message and "reserved" in alert.message and alert.budget == "day"


def test_alert_budgets_never_refuse(ledger: tt.Ledger) -> None:
    ledger.budgets.set("watch", period="day", limit_usd=1, action="alert")
    for _ in range(3):
        spend(ledger, one(ledger, "5"), "5")
    [st] = ledger.budgets.status()
    assert st.posted_usd == 15 and st.reserved_usd == 0


def test_rolling_breaker_throttles_and_recovers(any_ledger: tt.Ledger) -> None:
    any_ledger.budgets.set("burn", period="rolling:2s", limit_tokens=1000, action="throttle", alert_at=())
    spend(any_ledger, one(any_ledger, "0", tokens=900), "0", tokens=900)
    with pytest.raises(tt.BudgetThrottled) as throttled:
        one(any_ledger, "0", tokens=200)
    assert 0 < throttled.value.retry_after <= 2.0
    with pytest.raises(tt.BudgetExceeded) as never:  # can never fit: a hard stop, not a throttle
        one(any_ledger, "0", tokens=5000)
    assert not isinstance(never.value, tt.BudgetThrottled)
    time.sleep(throttled.value.retry_after + 0.05)
    assert one(any_ledger, "0", tokens=200) is not None  # the window moved on


def test_kill_switch(any_ledger: tt.Ledger) -> None:
    b = any_ledger.budgets
    b.set("any", period="month", limit_usd=1000)
    b.suspend({"agent": "ci-fixer"}, reason="runaway")
    with tt.session(agent="ci-fixer", ledger=any_ledger), pytest.raises(tt.BudgetExceeded, match="suspended"):
        one(any_ledger, "0.01")
    with tt.session(agent="other", ledger=any_ledger):
        assert one(any_ledger, "0.01") is not None
    # another process's Budgets sees it within its cache TTL
    assert [s.scope_text for s in Budgets.for_store(any_ledger.store).suspensions()] == ["agent=ci-fixer"]
    assert b.resume({"agent": "ci-fixer"}) and not b.resume({"agent": "ci-fixer"})
    with tt.session(agent="ci-fixer", ledger=any_ledger):
        assert one(any_ledger, "0.01") is not None


def test_suspension_applies_even_without_budgets(ledger: tt.Ledger) -> None:
    ledger.budgets.suspend({"team": "eng"})
    with tt.session(team="eng", ledger=ledger), pytest.raises(tt.BudgetExceeded):
        one(ledger)


# -- expiry, fail-open, fail-closed, no budgets --------------------------------------------------------


def test_an_unresolved_reservation_expires_and_its_money_returns(any_ledger: tt.Ledger) -> None:
    b = any_ledger.budgets.configure(hold_timeout=0.5)
    b.set("day", period="day", limit_usd=1)
    h = one(any_ledger, "1")
    b._live.pop(h.hold_id)  # as if the process had been killed: nobody renews or settles it
    with pytest.raises(tt.BudgetExceeded):
        one(any_ledger, "0.5")
    time.sleep(0.6)
    assert one(any_ledger, "0.5") is not None
    assert b._backend().sweep_now(int(time.time() * 1e6)) >= 1


def test_live_reservations_are_renewed(ledger: tt.Ledger) -> None:
    b = ledger.budgets.configure(hold_timeout=2.0)
    b.set("day", period="day", limit_usd=1)
    h = one(ledger, "1")
    first_expiry = h.expires_us
    # a long call, outliving its hold's first expiry: wait (bounded, no fixed sleep) until the keeper
    # has pushed the expiry back past that moment, with room left before the renewed one
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now_us = time.time() * 1e6
        if now_us > first_expiry and h.expires_us > now_us + 500_000:
            break
        time.sleep(0.02)
    else:
        pytest.fail("the keeper did not renew a live reservation past its first expiry")
    with pytest.raises(tt.BudgetExceeded):
        one(ledger, "0.5")
    spend(ledger, h, "0.2")
    assert one(ledger, "0.5") is not None


def test_fail_open_and_fail_closed(ledger: tt.Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    b = ledger.budgets
    b.set("day", period="day", limit_usd=1)

    def down(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("the ledger is down")

    monkeypatch.setattr(b._backend(), "transaction", down)
    h = one(ledger, "5")  # fail-open: goes ahead, nothing reserved
    assert h is not None and not h.reserved
    b.configure(fail_closed=True)
    with pytest.raises(tt.LedgerUnavailable, match="fail-closed"):
        one(ledger, "0.1")
    assert issubclass(tt.LedgerUnavailable, tt.BudgetExceeded)


def test_no_budgets_costs_no_query(ledger: tt.Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    b = ledger.budgets
    assert one(ledger) is None  # loads: there are none
    monkeypatch.setattr(b._backend(), "version", lambda: pytest.fail("queried within the TTL"))
    t = time.perf_counter()
    for _ in range(10_000):
        assert b.reserve_call(provider="openai", model="gpt-4o", body={}) is None
    assert time.perf_counter() - t < 0.5


# -- through the SDKs ---------------------------------------------------------------------------------


def oai(up: FakeUpstream, ledger: tt.Ledger) -> openai.OpenAI:
    return tt.wrap(openai.OpenAI(base_url=up.openai_base_url, api_key="sk", max_retries=0), ledger=ledger)


def test_refused_before_the_request_leaves(up: FakeUpstream, any_ledger: tt.Ledger) -> None:
    any_ledger.budgets.set("tiny", scope={"agent": "bot"}, period="day", limit_usd="0.0001")
    with oai(up, any_ledger) as client:
        with tt.session(agent="bot", ledger=any_ledger), pytest.raises(tt.BudgetExceeded, match="tiny"):
            client.chat.completions.create(model="gpt-4o", messages=M, max_tokens=1000)
        assert up.requests == []  # nothing was sent
        with tt.session(agent="other", ledger=any_ledger):
            client.chat.completions.create(model="gpt-4o", messages=M, max_tokens=1000)
    assert len(up.requests) == 1


def test_the_actual_cost_is_posted(up: FakeUpstream, any_ledger: tt.Ledger) -> None:
    any_ledger.budgets.set("day", period="day", limit_usd=1)
    with oai(up, any_ledger) as client, capture_events() as events, tt.session(agent="bot", ledger=any_ledger):
        client.chat.completions.create(model="gpt-4o-mini", messages=M, max_tokens=100)
        for _ in client.chat.completions.create(model="gpt-4o-mini", messages=M, max_tokens=100, stream=True):
            pass
    [st] = any_ledger.budgets.status()
    assert st.posted_usd == sum(e.cost_usd for e in events) > 0 and st.reserved_usd == 0
    assert st.posted_tokens == sum(e.input_tokens + e.output_tokens for e in events)


def test_errors_void_the_reservation(up: FakeUpstream, ledger: tt.Ledger) -> None:
    ledger.budgets.set("day", period="day", limit_usd=1)
    up.push(Reply(status=500))
    with oai(up, ledger) as client, pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gpt-4o-mini", messages=M, max_tokens=100)
    [st] = ledger.budgets.status()
    assert (st.posted_usd, st.reserved_usd) == (0, 0) and live_holds(ledger) == 0


def test_stream_abandoned_part_way_settles(up: FakeUpstream, ledger: tt.Ledger) -> None:
    ledger.budgets.set("day", period="day", limit_usd=1)
    up.push(Reply(text="one two three four five six", stream_chunks=6, chunk_delay_s=0.01))
    with oai(up, ledger) as client, tt.session(ledger=ledger):
        stream = client.chat.completions.create(model="gpt-4o-mini", messages=M, max_tokens=100, stream=True)
        next(iter(stream))
        stream.close()
    [st] = ledger.budgets.status()
    assert st.reserved_usd == 0 and live_holds(ledger) == 0


def test_stream_dropped_without_close_settles(up: FakeUpstream, ledger: tt.Ledger) -> None:
    ledger.budgets.set("day", period="day", limit_usd=1)
    up.push(Reply(text="one two three four five six", stream_chunks=6))
    with oai(up, ledger) as client:
        stream = client.chat.completions.create(model="gpt-4o-mini", messages=M, max_tokens=100, stream=True)
        it = iter(stream)
        next(it)
        response = stream.response
        del it, stream
        gc.collect()
        ledger.budgets.flush()
        assert live_holds(ledger) == 0
        response.close()


def test_async_cancel_settles(up: FakeUpstream, ledger: tt.Ledger) -> None:
    ledger.budgets.set("day", period="day", limit_usd=1)
    client = tt.wrap(openai.AsyncOpenAI(base_url=up.openai_base_url, api_key="sk", max_retries=0), ledger=ledger)

    async def main() -> None:
        up.push(Reply(delay_s=5))  # cancelled before the response
        task = asyncio.create_task(client.chat.completions.create(model="gpt-4o-mini", messages=M, max_tokens=10))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        up.push(Reply(text="a b c d e f g h", stream_chunks=8, chunk_delay_s=0.2))  # cancelled mid-stream

        async def read() -> None:
            async for _ in await client.chat.completions.create(
                model="gpt-4o-mini", messages=M, max_tokens=10, stream=True
            ):
                pass

        task = asyncio.create_task(read())
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await client.close()

    asyncio.run(main())
    ledger.budgets.flush()
    assert live_holds(ledger) == 0
    [st] = ledger.budgets.status()
    assert st.reserved_usd == 0


def test_anthropic_and_gemini_are_enforced(up: FakeUpstream, ledger: tt.Ledger) -> None:
    ledger.budgets.set("tiny", period="day", limit_usd="0.00001")
    with (
        tt.wrap(anthropic.Anthropic(base_url=up.anthropic_base_url, api_key="k", max_retries=0), ledger=ledger) as a,
        pytest.raises(tt.BudgetExceeded),
    ):
        a.messages.create(model="claude-sonnet-4-6", max_tokens=1000, messages=M)
    g = tt.wrap(genai.Client(api_key="k", http_options={"base_url": up.gemini_base_url}), ledger=ledger)
    with pytest.raises(tt.BudgetExceeded):
        g.models.generate_content(model="gemini-2.5-flash", contents="hi", config={"max_output_tokens": 1000})
    assert up.requests == []
    ledger.budgets.rm("tiny")
    ledger.budgets.set("roomy", period="day", limit_usd=1)
    g.models.generate_content(model="gemini-2.5-flash", contents="hi", config={"max_output_tokens": 100})
    for _ in g.models.generate_content_stream(
        model="gemini-2.5-flash", contents="hi", config={"max_output_tokens": 100}
    ):
        pass
    g.close()
    [st] = ledger.budgets.status()
    assert st.posted_usd > 0 and st.reserved_usd == 0 and live_holds(ledger) == 0


def test_the_first_request_of_a_process_may_come_from_a_coroutine(any_ledger: tt.Ledger) -> None:
    """A gateway's first budget request is async: the budget thread must start for it (it once
    started only after a first reservation, so that request waited forever)."""
    from tokentrail.context import Attribution

    budgets = any_ledger.budgets
    budgets.set("tiny", scope={"team": "poor"}, period="day", limit_usd="0.000001")
    budgets.set("big", scope={"team": "rich"}, period="day", limit_usd="100")
    body = {"model": "gpt-4o-mini", "messages": M, "max_tokens": 10}
    assert budgets._keeper is None  # nothing has started the budget thread yet

    async def reserve(team: str) -> Any:
        call = budgets.areserve_call(
            provider="openai", model="gpt-4o-mini", body=body, attribution=Attribution(team=team)
        )
        return await asyncio.wait_for(call, timeout=20)

    async def main() -> Any:
        with pytest.raises(tt.BudgetExceeded, match="tiny"):
            await reserve("poor")
        return await reserve("rich")

    hold = asyncio.run(main())
    assert hold is not None and hold.cost_usd > 0
    budgets.void(hold)
    budgets.flush()
    assert live_holds(any_ledger) == 0
