"""Attribution: sessions and steps nest, and follow the work into asyncio tasks and (via
with_context) into thread pools."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import tokentrail as tt
from tokentrail.events import MAX_TAGS, MAX_TEXT


def test_session_and_step_attribute_every_call(ledger: tt.Ledger) -> None:
    with tt.session(
        agent="contract-analyzer",
        team="legal",
        project="q4",
        user="u-17",
        task_type="analysis",
        customer="acme",
        workflow="review",
        org="o1",
        tags={"Region": "EU"},
    ) as s:
        with tt.step("planning"):
            planned = ledger.record_llm(provider="openai", model="gpt-4o-mini", input_tokens=10, output_tokens=5)
            with tt.step("search"):
                nested = ledger.record_llm(provider="openai", model="gpt-4o-mini", input_tokens=10)
        after = ledger.record_llm(provider="openai", model="gpt-4o-mini", input_tokens=10)
    outside = ledger.record_llm(provider="openai", model="gpt-4o-mini", input_tokens=10)
    for e in (planned, nested, after):
        assert (e.agent, e.team, e.project, e.user, e.task_type, e.customer, e.workflow, e.org) == (
            "contract-analyzer",
            "legal",
            "q4",
            "u-17",
            "analysis",
            "acme",
            "review",
            "o1",
        )
        assert e.session_id == s.session_id and e.trace_id == s.trace_id
        assert e.tags == {"region": "EU"}
    assert (planned.step, nested.step, after.step) == ("planning", "planning/search", None)
    # the session is the trace; each step is a span; a call's parent is the innermost open span
    assert after.parent_span_id == s.attribution.span_id
    assert planned.parent_span_id != nested.parent_span_id != after.parent_span_id
    assert outside.session_id is None and outside.agent is None


def test_nested_session_inherits_and_overrides(ledger: tt.Ledger) -> None:
    with tt.session(agent="planner", team="eng", tags={"a": "1"}), tt.session(agent="worker", tags={"b": "2"}) as inner:
        e = ledger.record_llm(provider="openai", model="gpt-4o-mini", input_tokens=1)
    assert (e.agent, e.team, e.session_id, e.tags) == ("worker", "eng", inner.session_id, {"a": "1", "b": "2"})


def test_running_totals_of_a_session(ledger: tt.Ledger) -> None:
    with tt.session(agent="a") as s:
        e1 = ledger.record_llm(provider="openai", model="gpt-4o", input_tokens=1000, output_tokens=100)
        e2 = ledger.record_llm(provider="anthropic", model="claude-sonnet-4-6", input_tokens=50, output_tokens=5)
        ledger.record_llm(provider="x", model="unknown-model", input_tokens=7)
    assert e1.cost_usd is not None and e2.cost_usd is not None
    assert s.cost_usd == e1.cost_usd + e2.cost_usd
    assert s.tokens == 1100 + 55 + 7
    assert (s.calls, s.unpriced_calls) == (3, 1)


def test_asyncio_tasks_inherit_the_session(ledger: tt.Ledger) -> None:
    async def call(i: int) -> tt.UsageEvent:
        await asyncio.sleep(0)
        with tt.step(f"task-{i}"):
            return ledger.record_llm(provider="openai", model="gpt-4o-mini", input_tokens=i + 1)

    async def main() -> tuple[tt.Session, list[tt.UsageEvent]]:
        async with tt.session(agent="async-agent") as s:
            events = await asyncio.gather(*(call(i) for i in range(20)))
        return s, events

    s, events = asyncio.run(main())
    assert {e.session_id for e in events} == {s.session_id}
    assert sorted(e.step for e in events) == sorted(f"task-{i}" for i in range(20))
    assert s.calls == 20


def test_threads_need_with_context_and_then_carry_it(ledger: tt.Ledger) -> None:
    def work(i: int) -> tt.UsageEvent:
        return ledger.record_llm(provider="openai", model="gpt-4o-mini", input_tokens=i + 1)

    with tt.session(agent="threaded", team="eng") as s:
        with ThreadPoolExecutor(8) as pool:
            carried = list(pool.map(tt.with_context(work), range(64)))
        bare: list[tt.UsageEvent] = []
        t = threading.Thread(target=lambda: bare.append(work(0)))
        t.start()
        t.join()
    assert {(e.session_id, e.agent, e.team) for e in carried} == {(s.session_id, "threaded", "eng")}
    assert bare[0].session_id is None  # a plain thread starts with an empty context
    assert s.calls == 64


def test_tags_and_names_are_bounded() -> None:
    long = "x" * (MAX_TEXT + 50)
    with tt.session(agent=long, tags={f"K{i}": long for i in range(MAX_TAGS + 10)}) as s:
        a = s.attribution
    assert len(a.agent or "") == MAX_TEXT
    assert len(a.tags) == MAX_TAGS
    assert all(k == k.lower() and len(v) == MAX_TEXT for k, v in a.tags.items())
