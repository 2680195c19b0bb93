"""The OpenAI Agents SDK (the real `openai-agents`) against FakeUpstream, through tokentrail's tracing
processor: a triage agent calls a function tool, then hands off to a writer. The run is a session
tree (trace → triage → writer), the tool a tool event with its span's duration, each model call
one event with our prices, whether or not tt.instrument() metered it underneath."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import agents
import openai
import pytest
from agents import Agent, ModelSettings, OpenAIChatCompletionsModel, OpenAIResponsesModel, Runner, function_tool
from agents.tracing import FunctionSpanData, Span, Trace, TracingProcessor
from openai import AsyncOpenAI

import tokentrail as tt
from tests._events import stored
from tokentrail.analytics.trees import session_tree
from tokentrail.integrations import openai_agents as tt_agents
from tokentrail.integrations import seen_calls
from tokentrail.pricing import PriceBook
from tokentrail.testing import FakeUpstream, Reply, ToolCall, capture_events

GPT = "gpt-4o-mini"
# (input, output) tokens of the three model calls: triage asks for the tool, then for the handoff; the writer answers
TOKENS = [(1200, 40), (1500, 12), (900, 60)]


class SpanLog(TracingProcessor):
    """Keeps the function spans the SDK ends (to compare durations)."""

    def __init__(self) -> None:
        self.functions: list[Span[Any]] = []

    def on_trace_start(self, trace: Trace) -> None: ...
    def on_trace_end(self, trace: Trace) -> None: ...
    def on_span_start(self, span: Span[Any]) -> None: ...

    def on_span_end(self, span: Span[Any]) -> None:
        if isinstance(span.span_data, FunctionSpanData):
            self.functions.append(span)

    def shutdown(self) -> None: ...
    def force_flush(self) -> None: ...


@function_tool
def lookup(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


@pytest.fixture
def spans(any_ledger: tt.Ledger) -> Iterator[SpanLog]:
    """Only our processor and the span log: the SDK's default exporter (network) is replaced."""
    log = SpanLog()
    agents.set_trace_processors([tt_agents.TokentrailProcessor(any_ledger), log])
    seen_calls.forget_all()  # FakeUpstream's ids repeat from one server to the next
    yield log
    agents.set_trace_processors([])
    tt.uninstrument()


_clients: list[AsyncOpenAI] = []


def model(kind: str, up: FakeUpstream) -> Any:
    client = AsyncOpenAI(base_url=up.openai_base_url, api_key="sk-test", max_retries=0)
    _clients.append(client)
    if kind == "responses":
        return OpenAIResponsesModel(model=GPT, openai_client=client)
    return OpenAIChatCompletionsModel(model=GPT, openai_client=client)


def triage_and_writer(kind: str, up: FakeUpstream) -> Agent[Any]:
    settings = ModelSettings(include_usage=True)  # chat streams report usage only when asked
    writer = Agent(name="writer", instructions="Write.", model=model(kind, up), model_settings=settings)
    return Agent(
        name="triage",
        instructions="Triage.",
        tools=[lookup],
        handoffs=[writer],
        model=model(kind, up),
        model_settings=settings,
    )


def script(up: FakeUpstream) -> None:
    (i1, o1), (i2, o2), (i3, o3) = TOKENS
    up.push(
        Reply(tool_calls=[ToolCall("lookup", {"city": "Paris"})], input_tokens=i1, output_tokens=o1),
        Reply(tool_calls=[ToolCall("transfer_to_writer", {})], input_tokens=i2, output_tokens=o2),
        Reply(text="Sunny, go out.", input_tokens=i3, output_tokens=o3),
    )


async def closing(work: Any) -> Any:
    """Await `work`, then close the clients made for it (in the loop that used them)."""
    try:
        return await work
    finally:
        while _clients:
            await _clients.pop().close()


async def run(agent: Agent[Any], stream: bool) -> Any:
    async def go() -> Any:
        if not stream:
            return await Runner.run(agent, "Weather in Paris?")
        result = Runner.run_streamed(agent, "Weather in Paris?")
        async for _ in result.stream_events():
            pass
        return result

    return await closing(go())


def price(prices: PriceBook, input_tokens: int, output_tokens: int) -> Decimal:
    c = tt.price(provider="openai", model=GPT, input_tokens=input_tokens, output_tokens=output_tokens, book=prices)
    assert c is not None
    return c.total_usd.quantize(Decimal("1e-9"))


def span_ms(span: Span[Any]) -> float:
    assert span.started_at and span.ended_at
    return (datetime.fromisoformat(span.ended_at) - datetime.fromisoformat(span.started_at)).total_seconds() * 1000


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("instrumented", [False, True], ids=["processor-only", "with-instrument"])
@pytest.mark.parametrize("kind", ["responses", "chat"])
def test_a_run_is_a_session_tree_with_its_tool_and_each_call_once(
    kind: str,
    instrumented: bool,
    stream: bool,
    up: FakeUpstream,
    any_ledger: tt.Ledger,
    spans: SpanLog,
    prices: PriceBook,
) -> None:
    if instrumented:
        tt.instrument()
    script(up)
    before = tt.current()
    with capture_events() as seen:
        result = asyncio.run(run(triage_and_writer(kind, up), stream))
    assert result.final_output == "Sunny, go out." and result.last_agent.name == "writer"
    assert tt.current() is before  # nothing of the run stays current

    events = stored(any_ledger)
    assert len(events) == len(seen) == 4  # three model calls and one tool run, each once
    calls = [e for e in events if e.kind == "llm"]
    (tool,) = [e for e in events if e.kind == "tool"]
    assert [(e.input_tokens, e.output_tokens) for e in calls] == TOKENS
    assert [e.cost_usd for e in calls] == [price(prices, i, o) for i, o in TOKENS]
    assert all(e.provider == "openai" and e.model == GPT and e.status == "ok" for e in calls)

    # the tree: the trace's session → triage → writer (the handoff)
    trace_id = calls[0].parent_session_id
    assert trace_id is not None and trace_id.startswith("trace_")
    triage, writer = calls[0].session_id, calls[2].session_id
    assert calls[1].session_id == triage and tool.session_id == triage and triage != writer
    assert {e.agent for e in calls} == {"triage", "writer"} and calls[2].agent == "writer"
    assert calls[0].parent_session_id == trace_id and calls[2].parent_session_id == triage
    assert all(e.workflow == "Agent workflow" for e in events)
    tree = session_tree(any_ledger.store, trace_id)
    assert tree is not None and tree.calls == 0 and tree.total_calls == 3
    (t,) = tree.children
    (w,) = t.children
    assert (t.session_id, t.agent, t.calls, t.tool_runs, w.session_id, w.agent, w.calls) == (
        triage,
        "triage",
        2,
        1,
        writer,
        "writer",
        1,
    )
    assert tree.total_cost_usd == sum((price(prices, i, o) for i, o in TOKENS), Decimal(0))

    # the tool run: its span's duration, linked to the call that asked for it
    (fn,) = spans.functions
    assert tool.tool_name == "lookup" and tool.status == "ok"
    assert tool.latency_ms == pytest.approx(span_ms(fn), abs=0.01)
    assert tool.parent_span_id == calls[0].span_id


@pytest.mark.parametrize("kind", ["responses", "chat"])
def test_the_wrapper_meters_under_the_agent_and_the_processor_adds_nothing(
    kind: str, up: FakeUpstream, any_ledger: tt.Ledger, spans: SpanLog
) -> None:
    """With tt.instrument() the events are the wrapper's (metered at the HTTP call, before the
    processor hears of the model span's end), yet carry the agent's session."""
    tt.instrument()
    script(up)
    with capture_events() as seen:
        asyncio.run(run(triage_and_writer(kind, up), stream=False))
    calls = [e for e in seen if e.kind == "llm"]
    assert len(calls) == 3
    assert all(e.request_hash is not None for e in calls)  # the wrapper's events, not span-built ones
    assert [e.agent for e in calls] == ["triage", "triage", "writer"]


def test_without_the_wrapper_the_span_usage_is_metered_and_a_missing_usage_is_never_zero(
    up: FakeUpstream, any_ledger: tt.Ledger, spans: SpanLog
) -> None:
    """A chat stream without include_usage reports no tokens: the call is recorded as missing its
    usage (unpriced, visible), never as a $0 call."""
    writer = Agent(name="writer", instructions="Write.", model=model("chat", up))
    up.push(Reply(text="Hi.", input_tokens=300, output_tokens=4))
    asyncio.run(run(writer, stream=True))
    (call,) = stored(any_ledger)
    assert call.request_hash is None  # built from the span
    assert call.status == "invalid_usage:missing_usage" and call.cost_usd is None and call.agent == "writer"


def test_a_failed_call_is_one_error_event_in_the_agent_session(
    up: FakeUpstream, any_ledger: tt.Ledger, spans: SpanLog
) -> None:
    for instrumented in (False, True):
        if instrumented:
            tt.instrument()
        writer = Agent(name="writer", instructions="Write.", model=model("responses", up))
        up.push(Reply(status=500))
        with capture_events() as seen, pytest.raises(openai.InternalServerError):
            asyncio.run(run(writer, stream=False))
        (call,) = seen
        assert call.status == "error" and call.agent == "writer" and call.cost_usd in (None, Decimal(0))


def test_agent_as_tool_is_a_child_session_and_an_outer_session_is_the_parent(
    up: FakeUpstream, any_ledger: tt.Ledger, spans: SpanLog
) -> None:
    researcher = Agent(name="researcher", instructions="Research.", model=model("responses", up))
    lead = Agent(
        name="lead",
        instructions="Lead.",
        model=model("responses", up),
        tools=[researcher.as_tool(tool_name="research", tool_description="Research a question.")],
    )
    up.push(
        Reply(tool_calls=[ToolCall("research", {"input": "capital of France"})], input_tokens=500, output_tokens=20),
        Reply(text="Paris.", input_tokens=200, output_tokens=3),
        Reply(text="It is Paris.", input_tokens=700, output_tokens=5),
    )
    with tt.session("support", session_id="ticket-42", team="search", ledger=any_ledger):
        result = asyncio.run(closing(Runner.run(lead, "Capital of France?")))
    assert result.final_output == "It is Paris."
    events = stored(any_ledger)
    by_agent = {e.agent: e for e in events if e.kind == "llm"}
    # inside the user's session, that session is the run's root (no event-less trace session between)
    assert by_agent["lead"].parent_session_id == "ticket-42"
    assert by_agent["researcher"].parent_session_id == by_agent["lead"].session_id
    assert all(e.team == "search" and e.workflow == "Agent workflow" for e in events)
    tree = session_tree(any_ledger.store, "ticket-42")
    assert tree is not None
    assert [n.agent for n in tree.walk()] == [None, "lead", "researcher"]
    assert tree.total_calls == 3 and tree.walk()[1].tool_runs == 1


def test_concurrent_runs_keep_their_own_sessions(up: FakeUpstream, any_ledger: tt.Ledger, spans: SpanLog) -> None:
    up.responder = lambda r: Reply(text="ok", input_tokens=100 if "alpha" in str(r.json) else 200, output_tokens=1)

    async def both() -> None:
        a = Agent(name="alpha", instructions="alpha", model=model("responses", up))
        b = Agent(name="beta", instructions="beta", model=model("responses", up))
        await closing(asyncio.gather(*(Runner.run(x, "go") for x in (a, b, a, b))))

    tt.instrument()
    asyncio.run(both())
    calls = stored(any_ledger)
    assert len(calls) == 4
    assert {(e.agent, e.input_tokens) for e in calls} == {("alpha", 100), ("beta", 200)}
    assert len({e.session_id for e in calls}) == 4 and len({e.parent_session_id for e in calls}) == 4


def test_install_is_idempotent_and_uninstall_stops_it(any_ledger: tt.Ledger) -> None:
    agents.set_trace_processors([])
    try:
        p = tt_agents.install(any_ledger)
        assert tt_agents.install(any_ledger) is p and p.enabled
        tt_agents.uninstall()
        assert not p.enabled
        p.on_trace_start(agents.tracing.get_trace_provider().create_trace("x"))
        assert tt.current().session_id is None
    finally:
        agents.set_trace_processors([])


def test_import_tokentrail_does_not_import_the_agents_sdk() -> None:
    code = "import sys, tokentrail; print(any(m == 'agents' or m.startswith('agents.') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_without_the_sdk_the_import_error_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['agents'] = None\n"
        "try:\n    import tokentrail.integrations.openai_agents\nexcept ImportError as e:\n    print(e)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'tokentrail[agents]'" in out.stdout
