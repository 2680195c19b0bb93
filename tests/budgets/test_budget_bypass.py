"""Budgets that nothing slips past: requests nested too deep to estimate recursively, errors in the
budget path (fail-open / fail-closed), model aliases and unpriced models under a USD limit, and
spend that was never reserved (record_llm, record_tool, the event API, OTLP, adjustments)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from starlette.testclient import TestClient

import tokentrail as tt
from tests._events import stored
from tests._server import serving
from tokentrail.budgets import estimate as est
from tokentrail.corrections import adjust
from tokentrail.pricing import PriceBook
from tokentrail.server import create_app
from tokentrail.testing import FakeUpstream, Reply

M: Any = [{"role": "user", "content": "What is the capital of France?"}]
BOOK = PriceBook(overrides="")
LEVEL = '{"type":"object","properties":{"a":'  # one level of a nested tool schema, as JSON text


def nested_schema(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


def deep_tools_body(depth: int, model: str = "gpt-4o") -> dict[str, Any]:
    tool = {"type": "function", "function": {"name": "deep", "parameters": nested_schema(depth)}}
    return {"model": model, "messages": M, "max_tokens": 10, "tools": [tool]}


def deep_tools_json(depth: int, model: str = "gpt-4o") -> bytes:
    """The body of deep_tools_body as JSON text, written without json.dumps (which cannot nest so deep)."""
    schema = LEVEL * depth + '{"type":"string"}' + "}}" * depth
    return (
        f'{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}],"max_tokens":10,'
        f'"tools":[{{"type":"function","function":{{"name":"deep","parameters":{schema}}}}}]}}'
    ).encode()


def status_of(ledger: tt.Ledger, name: str) -> Any:
    [s] = ledger.budgets.status(name)
    return s


# -- 5. the estimate never fails, and an error in the budget path is never a silent pass ----------------


def test_deeply_nested_json_is_estimated_without_error_and_conservatively() -> None:
    depth = 5_000
    tokens, shows_all, _ = est.input_tokens_bound(deep_tools_body(depth))
    assert shows_all and tokens >= len(deep_tools_json(depth))  # at least every byte of the schema's JSON text
    # messages nested deep (lists in lists in a content part), and a huge flat array
    inner: Any = "x"
    for _ in range(depth):
        inner = [inner]
    nested_messages = {"model": "gpt-4o", "messages": [{"role": "user", "content": inner}]}
    assert est.input_tokens_bound(nested_messages)[0] >= 2 * depth  # each level: its brackets
    huge = {"model": "text-embedding-3-small", "input": [7] * 300_000}
    assert est.input_tokens_bound(huge)[0] >= 2 * 300_000  # each token id, and the comma after it
    e = est.estimate(provider="openai", model="gpt-4o", body=deep_tools_body(depth), prices=BOOK)
    assert e.cost_usd is not None and e.input_tokens >= len(deep_tools_json(depth))


def test_a_nullable_tool_parameter_is_estimated() -> None:
    """JSON Schema's `"type": ["string", "null"]` once made the estimator raise (an unhashable type)."""
    tool = {
        "type": "function",
        "function": {"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": ["string", "null"]}}}},
    }
    tokens, _, _ = est.input_tokens_bound({"model": "gpt-4o", "messages": M, "tools": [tool]})
    assert tokens >= est.TOOLS_OVERHEAD_TOKENS


def oai(up: FakeUpstream, ledger: tt.Ledger) -> openai.OpenAI:
    return tt.wrap(openai.OpenAI(base_url=up.openai_base_url, api_key="sk", max_retries=0), ledger=ledger)


def test_a_tool_schema_the_estimator_once_choked_on_is_held_by_the_budget(
    up: FakeUpstream, any_ledger: tt.Ledger
) -> None:
    """A nullable tool parameter once sent the call out unreserved ("it goes ahead") past a tiny budget."""
    any_ledger.budgets.set("tiny", period="day", limit_usd="0.0001")
    tool: Any = {
        "type": "function",
        "function": {"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": ["string", "null"]}}}},
    }
    with oai(up, any_ledger) as client, pytest.raises(tt.BudgetExceeded, match="tiny"):
        client.chat.completions.create(model="gpt-4o", messages=M, max_tokens=200, tools=[tool])
    assert up.requests == []


def broken_estimate(*args: Any, **kwargs: Any) -> Any:
    raise RecursionError("maximum recursion depth exceeded")


def test_an_estimator_error_is_refused_when_fail_closed(
    up: FakeUpstream, any_ledger: tt.Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tokentrail.budgets.facade.estimate", broken_estimate)
    any_ledger.budgets.set("tiny", period="day", limit_usd="0.0001")
    any_ledger.budgets.configure(fail_closed=True)
    with oai(up, any_ledger) as client:
        for _ in range(5):
            with pytest.raises(tt.LedgerUnavailable, match="fail-closed") as refused:
                client.chat.completions.create(model="gpt-4o", messages=M, max_tokens=200)
    assert isinstance(refused.value, tt.BudgetExceeded) and "RecursionError" in str(refused.value)
    assert up.requests == [] and status_of(any_ledger, "tiny").posted_usd == 0


def test_an_estimator_error_goes_ahead_when_fail_open_with_a_warning_a_count_and_its_spend_posted(
    up: FakeUpstream, any_ledger: tt.Ledger, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("tokentrail.budgets.facade.estimate", broken_estimate)
    b = any_ledger.budgets
    b.set("tiny", period="day", limit_usd="0.0001")
    up.default = Reply(input_tokens=1000, output_tokens=200)
    with caplog.at_level(logging.WARNING, logger="tokentrail"), oai(up, any_ledger) as client:
        client.chat.completions.create(model="gpt-4o", messages=M, max_tokens=200)  # fail-open: it goes ahead
        with pytest.raises(tt.BudgetExceeded, match="tiny"):  # ...and its spend counts: the budget is spent
            client.chat.completions.create(model="gpt-4o", messages=M, max_tokens=200)
    assert len(up.requests) == 1 and b.fail_open_errors == 2  # both calls: the second refused by the figures
    assert any("fail-open" in r.getMessage() and "estimate" in r.getMessage() for r in caplog.records)
    [event] = stored(any_ledger)
    st = status_of(any_ledger, "tiny")
    assert event.cost_usd is not None and st.posted_usd == event.cost_usd > Decimal("0.0001")
    assert not st.locked  # spend that was never reserved is no overage


def test_the_gateway_answers_fail_closed_with_503_and_fail_open_with_the_call(
    ledger: tt.Ledger, up: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tokentrail.budgets.facade.estimate", broken_estimate)
    ledger.budgets.set("tiny", period="day", limit_usd="0.0001")
    ledger.budgets.configure(fail_closed=True)
    with serving(ledger, up) as s:
        c = openai.OpenAI(base_url=s.url + "/v1", api_key="sk-test", max_retries=0)
        with pytest.raises(openai.APIStatusError) as err:
            c.chat.completions.create(model="gpt-4o", messages=M, max_tokens=200)
        assert err.value.status_code == 503 and up.requests == []
        ledger.budgets.configure(fail_closed=False)
        c.chat.completions.create(model="gpt-4o", messages=M, max_tokens=200)
    assert len(up.requests) == 1 and ledger.budgets.fail_open_errors == 1


@pytest.mark.parametrize("budget", ["usd", "tokens"])
def test_the_gateway_never_sends_a_body_nested_too_deep_for_json(
    ledger: tt.Ledger, up: FakeUpstream, budget: str
) -> None:
    """Python's json cannot parse 5,000 levels: the gateway refuses the body (400, as the events API
    does) before any budget or upstream sees it, so it can never go out unreserved."""
    body = deep_tools_json(5_000)
    if budget == "usd":
        ledger.budgets.set("tiny", period="day", limit_usd="0.0001")
    else:
        ledger.budgets.set("tokens", period="day", limit_tokens=len(body) // 2)
    with serving(ledger, up) as s:
        r = httpx2.post(
            s.url + "/v1/chat/completions",
            content=body,
            headers={"Authorization": "Bearer sk-test", "Content-Type": "application/json"},
        )
    assert r.status_code == 400 and "too deeply" in r.text, r.text
    assert up.requests == []


def test_an_alias_the_upstream_answers_as_a_priced_model_is_refused_by_a_usd_budget(
    up: FakeUpstream, any_ledger: tt.Ledger
) -> None:
    any_ledger.budgets.set("small", period="day", limit_usd="0.001")
    up.default = Reply(model="gpt-4o", input_tokens=1000, output_tokens=500)
    with oai(up, any_ledger) as client, pytest.raises(tt.BudgetExceeded, match="no price for model 'alias-gpt-4o'"):
        client.chat.completions.create(model="alias-gpt-4o", messages=M, max_tokens=500)
    assert up.requests == []


def test_forty_concurrent_aliased_calls_through_the_gateway_never_pass_the_budget(
    ledger: tt.Ledger, up: FakeUpstream
) -> None:
    ledger.budgets.set("small", period="day", limit_usd="0.001")
    up.default = Reply(model="gpt-4o", input_tokens=1000, output_tokens=500)

    async def main(url: str) -> list[Any]:
        async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="sk-test", max_retries=0) as c:
            calls = [c.chat.completions.create(model="alias-gpt-4o", messages=M, max_tokens=500) for _ in range(40)]
            return await asyncio.gather(*calls, return_exceptions=True)

    with serving(ledger, up) as s:
        results = asyncio.run(main(s.url))
    assert all(isinstance(r, openai.APIStatusError) and r.status_code == 402 for r in results)
    assert up.requests == [] and status_of(ledger, "small").posted_usd == 0


def test_a_model_budget_holds_every_name_of_its_model(up: FakeUpstream, any_ledger: tt.Ledger) -> None:
    """A scope's model matches the price book's id for the name asked (a dated version), and the
    model an alias was answered as: the alias's spend is charged there, and its next call held."""
    b = any_ledger.budgets
    b.set("gpt-4o", scope={"model": "gpt-4o"}, period="day", limit_usd="0.004")
    with oai(up, any_ledger) as client:
        with pytest.raises(tt.BudgetExceeded, match="'gpt-4o'"):
            client.chat.completions.create(model="gpt-4o-2024-08-06", messages=M, max_tokens=1000)
        b.set("watch", period="day", limit_tokens=10_000_000, action="alert")
        up.default = Reply(model="gpt-4o", input_tokens=1000, output_tokens=200)
        client.chat.completions.create(model="house-alias", messages=M, max_tokens=200)  # unknown: goes ahead
        st = status_of(any_ledger, "gpt-4o")  # ...answered as gpt-4o: charged to gpt-4o's budget
        assert st.posted_usd == Decimal("0.0045") and not st.locked
        with pytest.raises(tt.BudgetExceeded, match="'gpt-4o'"):  # the alias is now known as gpt-4o
            client.chat.completions.create(model="house-alias", messages=M, max_tokens=10)
    assert len(up.requests) == 1


def test_concurrent_calls_by_a_known_alias_are_held_at_the_answered_models_price(
    ledger: tt.Ledger, up: FakeUpstream
) -> None:
    ledger.budgets.set("watch", period="day", limit_tokens=10_000_000, action="alert")
    up.default = Reply(model="gpt-4o", input_tokens=50, output_tokens=500)

    async def main(url: str, n: int) -> list[Any]:
        async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="sk-test", max_retries=0) as c:
            calls = [c.chat.completions.create(model="alias-gpt-4o", messages=M, max_tokens=500) for _ in range(n)]
            return await asyncio.gather(*calls, return_exceptions=True)

    with serving(ledger, up) as s:
        asyncio.run(main(s.url, 1))  # the first answer says what the alias is
        ledger.budgets.set("small", period="day", limit_usd="0.02")  # priced: no unpriced refusal
        results = asyncio.run(main(s.url, 40))
    passed = [r for r in results if not isinstance(r, Exception)]
    assert all(isinstance(r, openai.APIStatusError) and r.status_code == 402 for r in results if r not in passed)
    st = status_of(ledger, "small")
    assert 1 <= len(passed) <= 3 and st.posted_usd <= Decimal("0.02") and not st.locked


def test_a_pricier_model_in_the_response_is_an_overage_that_stops_the_budget(
    up: FakeUpstream, any_ledger: tt.Ledger
) -> None:
    """Reserved at gpt-4o-mini's price, answered (and charged) as gpt-4o: posted in full as an
    overage, after which the budget refuses every call."""
    any_ledger.budgets.set("day", period="day", limit_usd="0.01")
    up.default = Reply(model="gpt-4o", input_tokens=2000, output_tokens=500)
    with oai(up, any_ledger) as client:
        client.chat.completions.create(model="gpt-4o-mini", messages=M, max_tokens=500)
        with pytest.raises(tt.BudgetExceeded, match="overage"):
            client.chat.completions.create(model="gpt-4o-mini", messages=M, max_tokens=10)
    [event] = stored(any_ledger)
    st = status_of(any_ledger, "day")
    assert event.model == "gpt-4o" and st.posted_usd == event.cost_usd and st.locked and len(up.requests) == 1


def test_an_unpriced_model_is_refused_by_a_usd_block_budget_unless_it_allows_unpriced(
    up: FakeUpstream, any_ledger: tt.Ledger
) -> None:
    b = any_ledger.budgets
    b.set("usd", period="day", limit_usd=5)
    with oai(up, any_ledger) as client:
        with pytest.raises(tt.BudgetExceeded, match="allow_unpriced") as refused:
            client.chat.completions.create(model="acme-private-llm", messages=M, max_tokens=10)
        assert refused.value.budget == "usd" and up.requests == []
        b.set("usd", period="day", limit_usd=5, allow_unpriced=True)
        assert b.get("usd").allow_unpriced  # type: ignore[union-attr]
        client.chat.completions.create(model="acme-private-llm", messages=M, max_tokens=10)
        # tokens-only and alert budgets never needed a price
        b.set("usd", period="day", limit_usd=5, action="alert")
        b.set("tokens", period="day", limit_tokens=100_000)
        client.chat.completions.create(model="acme-private-llm", messages=M, max_tokens=10)
    assert len(up.requests) == 2


def test_allow_unpriced_loads_from_the_budgets_file(tmp_path: Path, ledger: tt.Ledger) -> None:
    f = tmp_path / "budgets.toml"
    f.write_text('[[budgets]]\nname = "open"\nlimit_usd = 1\nallow_unpriced = true\n')
    [b] = ledger.budgets.load(f)
    assert b.allow_unpriced and ledger.budgets.get("open").allow_unpriced  # type: ignore[union-attr]
    assert ledger.budgets.reserve_call(provider="acme", model="acme-x", body={"messages": M}) is not None


# -- 7. spend that was never reserved is charged ---------------------------------------------------------


def test_record_llm_and_record_tool_are_charged_and_the_next_reservation_refuses(any_ledger: tt.Ledger) -> None:
    b = any_ledger.budgets
    b.set("team", scope={"team": "legal"}, period="day", limit_usd="0.018")
    body = {"messages": M, "max_tokens": 100}
    with tt.session(team="legal", ledger=any_ledger):
        b.void(b.reserve_call(provider="openai", model="gpt-4o", body=body))  # fits before the charges
        e = tt.record_llm(provider="openai", model="gpt-4o", input_tokens=1000, output_tokens=500)  # $0.0075
        tt.record_tool("lookup", {"q": 1}, cost_usd="0.01")
        st = status_of(any_ledger, "team")
        assert st.posted_usd == e.cost_usd + Decimal("0.01") and st.posted_tokens == 1500 and not st.locked
        with pytest.raises(tt.BudgetExceeded, match="'team'"):
            b.reserve_call(provider="openai", model="gpt-4o", body=body)
    with tt.session(team="other", ledger=any_ledger):  # outside the scope: not charged, not refused
        tt.record_llm(provider="openai", model="gpt-4o", input_tokens=10_000, output_tokens=10_000)
    assert status_of(any_ledger, "team").posted_usd == e.cost_usd + Decimal("0.01")


@pytest.fixture
def api(any_ledger: tt.Ledger) -> Iterator[TestClient]:
    with TestClient(create_app(any_ledger)) as c:
        yield c


def test_events_from_the_api_are_charged_once(api: TestClient, any_ledger: tt.Ledger) -> None:
    any_ledger.budgets.set("team", scope={"team": "legal"}, period="day", limit_usd="0.01")
    event = {
        "event_id": str(uuid.uuid4()),
        "provider": "openai",
        "model": "gpt-4o",
        "input_tokens": 2000,
        "output_tokens": 500,
        "team": "legal",
    }
    assert api.post("/api/v1/events", json={"events": [event]}).json()["accepted"] == 1
    assert api.post("/api/v1/events", json={"events": [event]}).json()["duplicate"] == 1
    [e] = stored(any_ledger)
    assert e.cost_usd is not None and status_of(any_ledger, "team").posted_usd == e.cost_usd
    with tt.session(team="legal", ledger=any_ledger), pytest.raises(tt.BudgetExceeded, match="'team'"):
        any_ledger.budgets.reserve_call(provider="openai", model="gpt-4o", body={"messages": M, "max_tokens": 10})


def test_otlp_spans_are_charged_once(api: TestClient, any_ledger: tt.Ledger) -> None:
    any_ledger.budgets.set("agents", scope={"agent": "*"}, period="day", limit_tokens=1000)
    span = {
        "traceId": "0af7651916cd43dd8448eb211c80319c",
        "spanId": "b7ad6b7169203331",
        "name": "chat gpt-4o",
        "startTimeUnixNano": "1767225600000000000",
        "endTimeUnixNano": "1767225601500000000",
        "attributes": [
            {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
            {"key": "gen_ai.system", "value": {"stringValue": "openai"}},
            {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}},
            {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "900"}},
            {"key": "gen_ai.usage.output_tokens", "value": {"intValue": "100"}},
            {"key": "tokentrail.agent", "value": {"stringValue": "scraper"}},
        ],
    }
    doc = {"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"spans": [span]}]}]}
    for _ in range(2):  # exported twice: stored and charged once
        assert api.post("/v1/traces", json=doc).status_code == 200
    [e] = stored(any_ledger)
    assert e.agent == "scraper", e
    st = status_of(any_ledger, "agents")
    assert (st.bucket, st.posted_tokens) == ("agent=scraper", 1000)
    with tt.session(agent="scraper", ledger=any_ledger), pytest.raises(tt.BudgetExceeded, match="'agents'"):
        any_ledger.budgets.reserve_call(provider="openai", model="gpt-4o", body={"messages": M, "max_tokens": 1})


def test_an_adjustment_moves_budget_status_by_its_delta(any_ledger: tt.Ledger) -> None:
    b = any_ledger.budgets
    b.set("day", period="day", limit_usd=10)
    e = any_ledger.record_llm(provider="acme", model="acme-x", input_tokens=10, cost_usd="2")
    assert status_of(any_ledger, "day").posted_usd == 2
    any_ledger.flush()  # adjust looks the event up in the store: the writer may not have written it yet
    adjust(any_ledger, e.event_id, reason="invoice", cost_usd="1.25")  # a debit
    assert status_of(any_ledger, "day").posted_usd == Decimal("3.25")
    adjust(any_ledger, e.event_id, reason="refund", cost_usd="-3")  # a credit
    st = status_of(any_ledger, "day")
    assert (st.posted_usd, st.posted_tokens) == (Decimal("0.25"), 10)


def test_the_cli_sets_allow_unpriced(sqlite_url: str) -> None:
    from typer.testing import CliRunner

    from tokentrail import cli

    if not cli.app.registered_groups:
        cli._load()
    args = ["budget", "set", "open", "--limit-usd", "1", "--allow-unpriced", "--db", sqlite_url]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    with tt.Ledger(sqlite_url, spool=False) as ledger:
        assert ledger.budgets.get("open").allow_unpriced  # type: ignore[union-attr]


def test_a_charge_never_waits_for_the_store(ledger: tt.Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """record_llm costs its caller no store round trip: with the definitions stale and the store
    stuck, the charge waits in the budget thread, and still lands once the store answers."""
    import threading

    b = ledger.budgets
    b.set("day", period="day", limit_usd=10)
    sql = b._backend()
    stuck, release = threading.Event(), threading.Event()
    version = sql.version
    waiting: list[int] = []

    def slow_version() -> int:
        waiting.append(threading.get_ident())
        stuck.set()
        release.wait(30)
        return version()

    monkeypatch.setattr(sql, "version", slow_version)
    b._next_check = 0.0  # the definitions are due for a re-read
    e = ledger.record_llm(provider="openai", model="gpt-4o", input_tokens=1000, output_tokens=100)
    assert stuck.wait(30)
    release.set()
    assert threading.get_ident() not in waiting  # the budget thread is the one that waited for the store
    assert status_of(ledger, "day").posted_usd == e.cost_usd


def test_status_waits_for_a_charge_already_taken_off_the_queue(
    any_ledger: tt.Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A charge being posted by another thread (taken off the queue, not yet posted) still counts
    in a status read meanwhile: status waits for the pass under way (a race seen under load)."""
    import threading
    import time

    from tokentrail.budgets import charges

    any_ledger.budgets.set("day", period="day", limit_usd=10)
    assert status_of(any_ledger, "day").posted_usd == 0  # the definitions are read and fresh
    real, started = charges.charge_budgets, threading.Event()

    def slow(*args: Any, **kwargs: Any) -> None:
        started.set()
        time.sleep(0.5)  # the window in which a status read used to miss the charge
        real(*args, **kwargs)

    monkeypatch.setattr(charges, "charge_budgets", slow)
    kwargs = {"provider": "acme", "model": "acme-x", "input_tokens": 10, "cost_usd": "2"}
    t = threading.Thread(target=any_ledger.record_llm, kwargs=kwargs)
    t.start()
    assert started.wait(10)
    assert status_of(any_ledger, "day").posted_usd == 2
    t.join()
