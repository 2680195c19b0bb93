"""tokentrail.integrations.langchain with the real langchain-openai / langchain-anthropic chat
models and a LangGraph graph (two model nodes, a tool node, a sub-graph) against FakeUpstream:
exact tokens and cost per event, steps, child sessions, tool runs, no double count under
tt.instrument(), streaming, async, bounded state, and no import cost for `import tokentrail`."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
from langchain_anthropic import ChatAnthropic
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, AIMessageChunk, AnyMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, LLMResult
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode

import tokentrail as tt
from tests._events import counts_of, stored
from tokentrail.analytics.trees import session_tree
from tokentrail.events import UsageEvent
from tokentrail.integrations import langchain as tlc
from tokentrail.integrations import seen_calls
from tokentrail.pricing import PriceBook
from tokentrail.testing import FakeUpstream, Reply, ToolCall, capture_events

SRC = str(Path(__file__).resolve().parents[2] / "src")
GPT = "gpt-4o-mini"
CLAUDE = "claude-sonnet-4-6"
PLAN = {"input_tokens": 1500, "output_tokens": 90, "cached_tokens": 1000, "reasoning_tokens": 30}
PLAN_COUNTS = {"input_tokens": 1500, "output_tokens": 90, "cache_read_tokens": 1000, "reasoning_tokens": 30}
SUMMARY = {"input_tokens": 800, "output_tokens": 60, "cached_tokens": 300, "cache_write_tokens": 200}
SUMMARY_COUNTS = {"input_tokens": 800, "output_tokens": 60, "cache_read_tokens": 300, "cache_write_tokens": 200}
ADD_CALL = ToolCall("add", {"a": 2, "b": 3}, id="call_add")


@tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@tool
def explode(a: int) -> int:
    """Always fails."""
    raise ValueError("boom")


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def ask(model: Any, messages: list[Any], stream: bool) -> AIMessage:
    """One model call, whole or streamed (the chunks added up, as LangGraph's users do)."""
    if not stream:
        out = model.invoke(messages)
        assert isinstance(out, AIMessage)
        return out
    total: AIMessageChunk | None = None
    for chunk in model.stream(messages):
        total = chunk if total is None else total + chunk
    assert total is not None
    return AIMessage(content=total.content, tool_calls=total.tool_calls, id=total.id)


def chat_openai(up: FakeUpstream, **options: Any) -> ChatOpenAI:
    options.setdefault("stream_usage", True)
    return ChatOpenAI(model=GPT, base_url=up.openai_base_url, api_key="sk-test", max_retries=0, **options)


def chat_anthropic(up: FakeUpstream, timeout: float | None = None) -> ChatAnthropic:
    return ChatAnthropic(
        model_name=CLAUDE,
        base_url=up.anthropic_base_url,
        api_key="sk-ant-test",
        max_retries=0,
        default_request_timeout=timeout,
    )


async def aask(model: Any, messages: list[Any], stream: bool) -> AIMessage:
    if not stream:
        out = await model.ainvoke(messages)
        assert isinstance(out, AIMessage)
        return out
    total: AIMessageChunk | None = None
    async for chunk in model.astream(messages):
        total = chunk if total is None else total + chunk
    assert total is not None
    return AIMessage(content=total.content, tool_calls=total.tool_calls, id=total.id)


_timeouts = itertools.count(1)


async def run_async(app: Any, config: dict[str, Any], models: list[Any]) -> None:
    """Run the graph in this event loop, then close the models' async clients (LangChain caches
    them per timeout: each async test gets its own, see build_graph, so none outlives its loop)."""
    try:
        await app.ainvoke(start(), config=config)
    finally:
        for m in models:
            client = m.root_async_client if isinstance(m, ChatOpenAI) else m._async_client
            await client.close()


def build_graph(
    up: FakeUpstream, *, stream: bool = False, aio: bool = False, models: list[Any] | None = None, **openai_options: Any
) -> Any:
    """plan (OpenAI, asks for `add`) -> tools (ToolNode) -> research (a sub-graph: summarize, on
    Anthropic) -> END. `aio`: the nodes are coroutines calling the models' async API."""
    timeout = 60.0 + next(_timeouts) / 1000 if aio else None
    base = chat_openai(up, timeout=timeout, **openai_options)
    planner = base.bind_tools([add])
    writer = chat_anthropic(up, timeout=timeout)
    if models is not None:
        models += [base, writer]

    def plan(state: State) -> dict[str, Any]:
        return {"messages": [ask(planner, state["messages"], stream)]}

    def summarize(state: State) -> dict[str, Any]:
        return {"messages": [ask(writer, [HumanMessage("Summarize: 2 + 3 = 5")], stream)]}

    async def aplan(state: State) -> dict[str, Any]:
        return {"messages": [await aask(planner, state["messages"], stream)]}

    async def asummarize(state: State) -> dict[str, Any]:
        return {"messages": [await aask(writer, [HumanMessage("Summarize: 2 + 3 = 5")], stream)]}

    sub = StateGraph(State)
    sub.add_node("summarize", asummarize if aio else summarize)
    sub.add_edge(START, "summarize")
    sub.add_edge("summarize", END)

    g = StateGraph(State)
    g.add_node("plan", aplan if aio else plan)
    g.add_node("tools", ToolNode([add]))
    g.add_node("research", sub.compile(name="research"))
    g.add_edge(START, "plan")
    g.add_edge("plan", "tools")
    g.add_edge("tools", "research")
    g.add_edge("research", END)
    return g.compile(name="planner")


def script(up: FakeUpstream) -> None:
    up.push(Reply(tool_calls=[ADD_CALL], **PLAN), Reply(text="Five.", **SUMMARY))


def cost(prices: PriceBook, provider: str, model: str, counts: dict[str, int]) -> Decimal:
    c = tt.price(provider=provider, model=model, book=prices, **counts)
    assert c is not None and c.total_usd > 0
    return c.total_usd.quantize(Decimal("1e-9"))


def start() -> dict[str, Any]:
    return {"messages": [HumanMessage("What is 2 + 3?")]}


@pytest.fixture(autouse=True)
def _clean_state() -> Iterator[None]:
    seen_calls.forget_all()
    yield
    assert not tlc._runs, "every run is forgotten at its end"


@pytest.fixture
def instrumented() -> Iterator[None]:
    tt.instrument()
    yield
    tt.uninstrument()


def check_graph_events(events: list[UsageEvent], prices: PriceBook, *, streamed: bool) -> None:
    """The graph's three events: plan's call, the tool run, the sub-graph's call."""
    llm = [e for e in events if e.kind == "llm"]
    tools = [e for e in events if e.kind == "tool"]
    assert len(events) == 3 and len(llm) == 2 and len(tools) == 1
    plan, summary = llm
    assert (plan.provider, plan.model, plan.step, plan.streamed) == ("openai", GPT, "plan", streamed)
    assert counts_of(plan) == PLAN_COUNTS and plan.cost_usd == cost(prices, "openai", GPT, PLAN_COUNTS)
    assert (summary.provider, summary.model, summary.step) == ("anthropic", CLAUDE, "summarize")
    assert summary.streamed == streamed
    assert counts_of(summary) == SUMMARY_COUNTS
    assert summary.cost_usd == cost(prices, "anthropic", CLAUDE, SUMMARY_COUNTS)
    run = tools[0]
    assert (run.tool_name, run.step, run.status, run.tool_call_id) == ("add", "tools", "ok", "call_add")
    assert run.parent_span_id == plan.span_id  # linked to the call that asked for it
    # the sub-graph is a child session of the graph's session
    assert plan.session_id == run.session_id and plan.parent_session_id is None
    assert summary.session_id != plan.session_id and summary.parent_session_id == plan.session_id
    assert not any(e.usage_estimated for e in events)


# --------------------------------------------------------------------------- the graph


@pytest.mark.parametrize("stream", [False, True], ids=["invoke", "stream"])
def test_graph_steps_sessions_tools_and_exact_costs(
    up: FakeUpstream, any_ledger: tt.Ledger, prices: PriceBook, stream: bool
) -> None:
    script(up)
    handler = tlc.TokentrailCallbackHandler(ledger=any_ledger)
    out = build_graph(up, stream=stream).invoke(start(), config={"callbacks": [handler]})
    assert out["messages"][-1].content  # the graph really ran through
    events = stored(any_ledger)
    check_graph_events(events, prices, streamed=stream)
    root = events[0].session_id
    tree = session_tree(any_ledger.store, root)
    assert tree is not None
    assert [n.agent for n in tree.walk()] == ["planner", "research"]
    assert tree.total_cost_usd == sum((e.cost_usd or Decimal(0) for e in events), Decimal(0))
    assert tree.total_calls == 2 and tree.children[0].calls == 1


def test_graph_under_instrument_is_one_event_per_call(
    up: FakeUpstream, any_ledger: tt.Ledger, prices: PriceBook, instrumented: None
) -> None:
    """The SDK wrapper meters each call (its events carry the request hash); the handler records
    none of them again, but they land in the node's step and the sub-graph's child session."""
    script(up)
    with capture_events() as events:
        build_graph(up).invoke(start(), config={"callbacks": [tlc.TokentrailCallbackHandler(ledger=any_ledger)]})
    assert [e.event_id for e in stored(any_ledger)] == [e.event_id for e in events]
    check_graph_events(events, prices, streamed=False)
    assert all(e.request_hash is not None for e in events if e.kind == "llm")  # the wrapper's events


def test_streams_without_an_id_under_instrument_are_one_event(
    up: FakeUpstream, ledger: tt.Ledger, prices: PriceBook, instrumented: None
) -> None:
    """A Chat Completions stream reaches LangChain without the provider's id (and, without
    stream_usage, without usage): the wrapper's event marks the run metered all the same."""
    script(up)
    with capture_events() as events:
        build_graph(up, stream=True, stream_usage=False).invoke(
            start(), config={"callbacks": [tlc.TokentrailCallbackHandler(ledger=ledger)]}
        )
    check_graph_events(events, prices, streamed=True)


@pytest.mark.parametrize("stream", [False, True], ids=["ainvoke", "astream"])
def test_async_graph_is_attributed_like_a_sync_one(
    up: FakeUpstream, ledger: tt.Ledger, prices: PriceBook, instrumented: None, stream: bool
) -> None:
    """Async runs call the (inline) handler in the run's own task: the wrapper's events still land
    in the node's step and the child session, once each (streams: without a response id)."""
    script(up)
    models: list[Any] = []
    app = build_graph(up, stream=stream, aio=True, models=models, stream_usage=False)
    with capture_events() as events:
        asyncio.run(run_async(app, {"callbacks": [tlc.TokentrailCallbackHandler(ledger=ledger)]}, models))
    check_graph_events(events, prices, streamed=stream)


def test_async_graph_without_the_wrapper(up: FakeUpstream, ledger: tt.Ledger, prices: PriceBook) -> None:
    script(up)
    models: list[Any] = []
    app = build_graph(up, stream=True, aio=True, models=models)
    with capture_events() as events:
        asyncio.run(run_async(app, {"callbacks": [tlc.TokentrailCallbackHandler(ledger=ledger)]}, models))
    check_graph_events(events, prices, streamed=True)


def test_inside_a_session_the_graph_uses_it(up: FakeUpstream, any_ledger: tt.Ledger, prices: PriceBook) -> None:
    script(up)
    with tt.session("boss", ledger=any_ledger) as s, tt.step("outer"):
        build_graph(up).invoke(start(), config=tlc.callbacks_config())
    events = stored(any_ledger)
    assert {e.step for e in events} == {"outer/plan", "outer/tools", "summarize"}
    top = [e for e in events if e.session_id == s.session_id]
    assert len(top) == 2  # plan's call and the tool run; the sub-graph's call is its child's
    assert s.cost_usd == sum((e.cost_usd or Decimal(0) for e in top), Decimal(0)) and s.calls == 1 and s.tool_runs == 1
    tree = session_tree(any_ledger.store, s.session_id)
    assert tree is not None and [n.agent for n in tree.walk()] == ["boss", "research"]
    assert tree.total_cost_usd == sum((e.cost_usd or Decimal(0) for e in events), Decimal(0))


def test_tracking_installs_the_handler_once(up: FakeUpstream, ledger: tt.Ledger, prices: PriceBook) -> None:
    """`tracking()` adds a handler to every run inside; one passed explicitly too still counts once."""
    script(up)
    with tlc.tracking(ledger=ledger), capture_events() as events:
        build_graph(up).invoke(start(), config={"callbacks": [tlc.TokentrailCallbackHandler(ledger=ledger)]})
    check_graph_events(events, prices, streamed=False)
    up.push(Reply(**PLAN))
    with capture_events() as after:
        chat_openai(up).invoke("hi")  # outside tracking(): no handler
    assert after == []


def test_a_failing_tool_is_recorded_as_an_error(up: FakeUpstream, ledger: tt.Ledger) -> None:
    with capture_events() as events, pytest.raises(ValueError, match="boom"):
        explode.invoke({"a": 1}, config={"callbacks": [tlc.TokentrailCallbackHandler(ledger=ledger)]})
    assert [(e.kind, e.tool_name, e.status) for e in events] == [("tool", "explode", "error")]


@pytest.mark.parametrize("wrapped", [False, True], ids=["handler", "instrumented"])
def test_agent_as_tool_is_a_child_session(
    up: FakeUpstream, ledger: tt.Ledger, prices: PriceBook, wrapped: bool, request: pytest.FixtureRequest
) -> None:
    """A tool whose work calls a chat model is an agent used as a tool: its call is its child
    session's, the tool run its parent's (also the SDK wrapper's event for that call)."""
    if wrapped:
        request.getfixturevalue("instrumented")
    writer = chat_anthropic(up)

    @tool
    def researcher(topic: str) -> str:
        """Research a topic."""
        return str(writer.invoke(f"Research {topic}").content)

    up.push(Reply(**SUMMARY))
    with tt.session("boss", ledger=ledger) as s, capture_events() as events:
        researcher.invoke({"topic": "tokens"}, config={"callbacks": [tlc.TokentrailCallbackHandler()]})
    call, run = events  # the call ends before its tool run does
    assert (run.kind, run.tool_name, run.session_id) == ("tool", "researcher", s.session_id)
    assert call.kind == "llm" and call.parent_session_id == s.session_id and call.session_id != s.session_id
    assert call.cost_usd == cost(prices, "anthropic", CLAUDE, SUMMARY_COUNTS)
    assert (call.request_hash is not None) == wrapped  # whose event it is


# --------------------------------------------------------------------------- single chat models


@pytest.mark.parametrize(
    ("provider", "mode"),
    [
        ("openai", "invoke"),
        ("openai", "stream"),
        ("openai-responses", "invoke"),
        ("openai-responses", "stream"),
        ("anthropic", "invoke"),
        ("anthropic", "stream"),
    ],
)
def test_chat_model_calls_are_metered_exactly(
    up: FakeUpstream, ledger: tt.Ledger, prices: PriceBook, provider: str, mode: str
) -> None:
    if provider == "anthropic":
        model: Any = chat_anthropic(up)
        scripted, counts, name, operation = SUMMARY, SUMMARY_COUNTS, CLAUDE, "messages"
    else:
        model = chat_openai(up, use_responses_api=provider == "openai-responses")
        scripted, counts, name = PLAN, PLAN_COUNTS, GPT
        operation = "responses" if provider == "openai-responses" else "chat"
    up.push(Reply(**scripted))
    with tt.session("solo", ledger=ledger) as s, capture_events() as events:
        ask(model.with_config(callbacks=[tlc.TokentrailCallbackHandler()]), [HumanMessage("hi")], mode == "stream")
    (ev,) = events
    base = provider.split("-")[0]
    assert (ev.provider, ev.model, ev.operation, ev.session_id, ev.streamed) == (
        base,
        name,
        operation,
        s.session_id,
        mode == "stream",
    )
    assert counts_of(ev) == counts and ev.cost_usd == cost(prices, base, name, counts)
    assert s.cost_usd == ev.cost_usd and s.calls == 1


class _NotesTheId(BaseCallbackHandler):
    """Runs before tokentrail's handler and notes the response id as an SDK wrapper would have."""

    run_inline = True

    def __init__(self) -> None:
        self.ids: list[str] = []

    def on_llm_end(self, response: Any, **kwargs: Any) -> None:
        rid = response.generations[0][0].message.response_metadata["id"]
        self.ids.append(rid)
        seen_calls.note_metered(rid)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_call_the_wrapper_metered_is_not_recorded_again(up: FakeUpstream, ledger: tt.Ledger, provider: str) -> None:
    """The provider's response id (LangChain's response_metadata["id"]) in seen_calls: no event."""
    model: Any = chat_anthropic(up) if provider == "anthropic" else chat_openai(up)
    notes = _NotesTheId()
    up.push(Reply(**PLAN))
    with capture_events() as events:
        model.invoke("hi", config={"callbacks": [notes, tlc.TokentrailCallbackHandler(ledger=ledger)]})
    assert events == []
    assert notes.ids[0].startswith("msg_" if provider == "anthropic" else "chatcmpl-")


def test_a_stream_without_usage_is_estimated_never_free(up: FakeUpstream, ledger: tt.Ledger) -> None:
    up.push(Reply(text="one two three four", **PLAN))
    with capture_events() as events:
        ask(
            chat_openai(up, stream_usage=False).with_config(callbacks=[tlc.TokentrailCallbackHandler(ledger=ledger)]),
            [HumanMessage("hi there")],
            True,
        )
    (ev,) = events
    assert ev.usage_estimated and ev.input_tokens > 0 and ev.output_tokens > 0
    assert ev.cost_usd is not None and ev.cost_usd > 0


# --------------------------------------------------------------------------- bounded state, imports


def test_open_runs_are_capped(monkeypatch: pytest.MonkeyPatch, ledger: tt.Ledger) -> None:
    """Runs that never end (a graph that loops forever, lost end callbacks) cannot grow memory."""
    monkeypatch.setattr(tlc, "MAX_RUNS", 50)
    handler = tlc.TokentrailCallbackHandler(ledger=ledger)
    parent = uuid.uuid4()
    handler.on_chain_start(None, {}, run_id=parent, name="forever")
    for _ in range(500):
        handler.on_chain_start(None, {}, run_id=uuid.uuid4(), parent_run_id=parent, name="step")
    assert len(tlc._runs) == 50
    tlc._runs.clear()


def test_import_tokentrail_imports_no_langchain() -> None:
    code = (
        "import sys, tokentrail, tokentrail.integrations;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('langchain_core', 'langgraph', 'langchain')))"
    )
    env = {**os.environ, "PYTHONPATH": SRC}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]"


def test_without_langchain_core_the_error_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['langchain_core'] = None\n"
        "try:\n    import tokentrail.integrations.langchain\n"
        "except ImportError as e:\n    print(e)\n"
    )
    env = {**os.environ, "PYTHONPATH": SRC}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert "pip install 'tokentrail[langchain]'" in out.stdout


def test_a_graph_used_as_a_tool_is_a_child_session(up: FakeUpstream, ledger: tt.Ledger, prices: PriceBook) -> None:
    """A graph run inside a tool: its nodes are steps of a child session (named after the graph,
    or, compiled without a name, after the tool or node that runs it); the tool run stays the
    parent's."""
    writer = chat_anthropic(up)

    def summarize(state: State) -> dict[str, Any]:
        return {"messages": [writer.invoke(state["messages"])]}

    inner = StateGraph(State)
    inner.add_node("summarize", summarize)
    inner.add_edge(START, "summarize")
    inner.add_edge("summarize", END)
    research = inner.compile()  # no name: LangGraph calls it "LangGraph"

    @tool
    def researcher(topic: str) -> str:
        """Research a topic."""
        return str(research.invoke({"messages": [HumanMessage(topic)]})["messages"][-1].content)

    outer = StateGraph(State)
    outer.add_node("delegate", lambda s: {"messages": [HumanMessage(researcher.invoke({"topic": "tokens"}))]})
    outer.add_node("review", research)  # the same graph as a sub-graph of a node named "review"
    outer.add_edge(START, "delegate")
    outer.add_edge("delegate", "review")
    outer.add_edge("review", END)
    up.push(Reply(**SUMMARY), Reply(**SUMMARY))
    with tt.session("boss", ledger=ledger) as s, capture_events() as events:
        outer.compile().invoke(start(), config={"callbacks": [tlc.TokentrailCallbackHandler()]})
    first, run, second = events
    assert (run.kind, run.tool_name, run.session_id, run.step) == ("tool", "researcher", s.session_id, "delegate")
    for call in (first, second):
        assert call.kind == "llm" and call.step == "summarize" and call.parent_session_id == s.session_id
        assert call.cost_usd == cost(prices, "anthropic", CLAUDE, SUMMARY_COUNTS)
    assert len({s.session_id, first.session_id, second.session_id}) == 3
    ledger.flush()  # the tree is read from the store: wait for the writer
    tree = session_tree(ledger.store, s.session_id)
    assert tree is not None and sorted(str(n.agent) for n in tree.children) == ["researcher", "review"]


def test_hostile_text_from_a_run_never_loses_its_event(ledger: tt.Ledger, prices: PriceBook) -> None:
    """A model's tool call id, a tool's or model's name with a NUL or a lone surrogate (no store
    keeps them) are cleaned, and the events are stored all the same."""
    handler = tlc.TokentrailCallbackHandler(ledger=ledger)
    tool_run, model_run = uuid.uuid4(), uuid.uuid4()
    handler.on_tool_start({"name": "se\x00arch"}, "q", run_id=tool_run, inputs={"q": 1}, tool_call_id="call_\ud800")
    handler.on_tool_end("ok", run_id=tool_run)
    handler.on_chat_model_start({}, [[HumanMessage("hi")]], run_id=model_run, metadata={"ls_provider": "openai"})
    message = AIMessage(
        "hi",
        response_metadata={"model_name": GPT + "\x00"},
        usage_metadata={"input_tokens": 10, "output_tokens": 2, "total_tokens": 12},
    )
    handler.on_llm_end(LLMResult(generations=[[ChatGeneration(message=message)]]), run_id=model_run)
    run, call = stored(ledger)
    assert (run.tool_name, run.tool_call_id) == ("se\ufffdarch", "call_?")
    assert (call.model, call.input_tokens, call.output_tokens) == (GPT + "\ufffd", 10, 2)


def test_a_stream_cut_after_output_is_recorded_estimated(up: FakeUpstream, ledger: tt.Ledger) -> None:
    """The provider worked, then the stream broke: an estimated event with the error, never $0."""
    up.push(Reply(text="one two three four five six", stream_chunks=6, cut_stream_after=4, **PLAN))
    model = chat_openai(up).with_config(callbacks=[tlc.TokentrailCallbackHandler(ledger=ledger)])
    with capture_events() as events, pytest.raises(Exception):  # noqa: B017 - whatever the SDK raises
        ask(model, [HumanMessage("hi there")], True)
    (ev,) = events
    assert (ev.status, ev.usage_estimated, ev.streamed) == ("error", True, True)
    assert ev.input_tokens > 0 and ev.output_tokens > 0 and ev.cost_usd is not None and ev.cost_usd > 0
