"""instrument() / uninstrument() / wrap(): idempotent, never twice, undoable, lazy about imports;
attribution of metered calls across tasks and threads; metering never breaks the caller's call."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from google import genai

import tokentrail as tt
from tests._events import stored
from tokentrail.events import UsageEvent, args_hash
from tokentrail.integrations import instrumented
from tokentrail.pricing import PriceBook
from tokentrail.store import open_store
from tokentrail.testing import FakeUpstream, Reply, ToolCall, capture_events

GPT, CLAUDE, GEMINI = "gpt-4o-mini", "claude-sonnet-4-6", "gemini-2.5-flash"
M: Any = [{"role": "user", "content": "What is the capital of France?"}]
SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.fixture
def instrumented_sdks() -> Iterator[None]:
    tt.instrument()
    yield
    tt.uninstrument()


# Clients made by a test are closed when it ends: an unclosed one's socket is found by the garbage
# collector later, in whichever test runs then, as an unraisable ResourceWarning (an error here).
_clients: list[Any] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _clients:
        _clients.pop().close()


def oai(up: FakeUpstream, **options: Any) -> openai.OpenAI:
    c = openai.OpenAI(base_url=up.openai_base_url, api_key="sk-test", max_retries=0, **options)
    _clients.append(c)
    return c


def claude(up: FakeUpstream) -> anthropic.Anthropic:
    c = anthropic.Anthropic(base_url=up.anthropic_base_url, api_key="sk-ant-test", max_retries=0)
    _clients.append(c)
    return c


def gemini(up: FakeUpstream) -> genai.Client:
    c = genai.Client(api_key="g-test", http_options={"base_url": up.gemini_base_url})
    _clients.append(c)
    return c


def call_all(up: FakeUpstream) -> None:
    """One call through each SDK, sync and async, plain and streamed."""
    oai(up).chat.completions.create(model=GPT, messages=M)
    list(oai(up).chat.completions.create(model=GPT, messages=M, stream=True))
    claude(up).messages.create(model=CLAUDE, max_tokens=64, messages=M)
    with claude(up).messages.stream(model=CLAUDE, max_tokens=64, messages=M) as s:
        s.get_final_message()
    g = gemini(up)
    g.models.generate_content(model=GEMINI, contents="hi")
    list(g.models.generate_content_stream(model=GEMINI, contents="hi"))

    async def async_calls() -> None:
        async with openai.AsyncOpenAI(base_url=up.openai_base_url, api_key="sk-test", max_retries=0) as a:
            await a.responses.create(model=GPT, input="hi")
        async with anthropic.AsyncAnthropic(base_url=up.anthropic_base_url, api_key="k", max_retries=0) as b:
            await b.messages.create(model=CLAUDE, max_tokens=64, messages=M)
        await g.aio.models.generate_content(model=GEMINI, contents="hi")
        await g.aio.aclose()

    asyncio.run(async_calls())


CALL_ALL_PROVIDERS = ["openai", "openai", "anthropic", "anthropic", "google", "google", "openai", "anthropic", "google"]


def run_python(code: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": SRC, **(env or {})},
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- instrument / uninstrument


def test_instrument_meters_every_sdk_once_and_is_idempotent(
    up: FakeUpstream, ledger: tt.Ledger, instrumented_sdks: None
) -> None:
    tt.instrument()  # again: still one event per call
    assert instrumented() == ["anthropic", "google.genai", "openai"]
    with tt.session(agent="a", ledger=ledger), capture_events() as events:
        call_all(up)
    assert [e.provider for e in events] == CALL_ALL_PROVIDERS
    assert all(e.status == "ok" and e.cost_usd is not None and e.agent == "a" for e in events)
    assert len(stored(ledger)) == len(CALL_ALL_PROVIDERS) == len(up.requests)


def test_uninstrument_restores_the_sdks(up: FakeUpstream, ledger: tt.Ledger) -> None:
    from anthropic import _base_client as anthropic_base
    from google.genai import _api_client
    from openai import _base_client as openai_base

    originals = (
        openai_base.SyncAPIClient.__dict__["_send_request"],
        openai_base.AsyncAPIClient.__dict__["_send_request"],
        anthropic_base.SyncAPIClient.__dict__["_attempt_request"],
        anthropic_base.AsyncAPIClient.__dict__["_attempt_request"],
        *(_api_client.BaseApiClient.__dict__[m] for m in ("request", "request_streamed", "async_request")),
        _api_client.BaseApiClient.__dict__["async_request_streamed"],
    )
    tt.instrument()
    assert openai_base.SyncAPIClient.__dict__["_send_request"] is not originals[0]
    tt.uninstrument()
    tt.uninstrument()  # idempotent too
    assert instrumented() == []
    assert (
        openai_base.SyncAPIClient.__dict__["_send_request"],
        openai_base.AsyncAPIClient.__dict__["_send_request"],
        anthropic_base.SyncAPIClient.__dict__["_attempt_request"],
        anthropic_base.AsyncAPIClient.__dict__["_attempt_request"],
        *(_api_client.BaseApiClient.__dict__[m] for m in ("request", "request_streamed", "async_request")),
        _api_client.BaseApiClient.__dict__["async_request_streamed"],
    ) == originals
    with tt.session(ledger=ledger), capture_events() as events:
        call_all(up)
    assert events == []
    assert stored(ledger) == []


def test_instrument_again_after_uninstrument(up: FakeUpstream, ledger: tt.Ledger) -> None:
    tt.instrument()
    tt.uninstrument()
    tt.instrument()
    try:
        with tt.session(ledger=ledger), capture_events() as events:
            oai(up).chat.completions.create(model=GPT, messages=M)
    finally:
        tt.uninstrument()
    assert len(events) == 1


def test_instrument_does_not_import_sdks_and_meters_those_imported_later(tmp_path: Path) -> None:
    out = run_python(
        f"""
        import json, sys
        import tokentrail as tt
        tt.instrument()
        tt.instrument()
        sdks = ("openai", "anthropic", "google.genai", "httpx2", "aiohttp")
        before = [m for m in sdks if m in sys.modules]
        from tokentrail.testing import FakeUpstream, capture_events
        import openai, anthropic
        from google import genai
        M = [{{"role": "user", "content": "hi"}}]
        ledger = tt.Ledger("sqlite:///{tmp_path / "sub.db"}")
        with FakeUpstream() as up, capture_events() as events, tt.session(ledger=ledger):
            openai.OpenAI(base_url=up.openai_base_url, api_key="k").chat.completions.create(
                model="gpt-4o-mini", messages=M
            )
            anthropic.Anthropic(base_url=up.anthropic_base_url, api_key="k").messages.create(
                model="claude-sonnet-4-6", max_tokens=9, messages=M
            )
            g = genai.Client(api_key="k", http_options={{"base_url": up.gemini_base_url}})  # kept: GC closes it
            g.models.generate_content(model="gemini-2.5-flash", contents="hi")
        print(json.dumps({{"before": before, "events": [[e.provider, e.status] for e in events]}}))
        """
    )
    assert out["before"] == []
    assert out["events"] == [["openai", "ok"], ["anthropic", "ok"], ["google", "ok"]]


def test_an_sdk_imported_after_uninstrument_is_not_patched() -> None:
    out = run_python(
        """
        import json
        import tokentrail as tt
        tt.instrument()
        tt.uninstrument()
        import openai
        from openai import _base_client
        patched = hasattr(_base_client.SyncAPIClient._send_request, "__tokentrail_original__")
        print(json.dumps({"patched": patched}))
        """
    )
    assert out == {"patched": False}


# --------------------------------------------------------------------------- wrap


def test_wrap_is_idempotent(up: FakeUpstream, ledger: tt.Ledger) -> None:
    c = oai(up)
    assert tt.wrap(c, ledger=ledger) is c
    assert tt.wrap(tt.wrap(c, ledger=ledger), ledger=ledger) is c
    a = claude(up)
    assert tt.wrap(tt.wrap(a, ledger=ledger), ledger=ledger) is a
    g = gemini(up)
    assert tt.wrap(tt.wrap(g, ledger=ledger), ledger=ledger) is g
    with capture_events() as events:
        c.chat.completions.create(model=GPT, messages=M)
        a.messages.create(model=CLAUDE, max_tokens=64, messages=M)
        g.models.generate_content(model=GEMINI, contents="hi")
    assert [e.provider for e in events] == ["openai", "anthropic", "google"]


def test_wrap_on_an_instrumented_client_records_once(up: FakeUpstream, ledger: tt.Ledger, tmp_path: Path) -> None:
    other = tt.Ledger(f"sqlite:///{tmp_path / 'other.db'}")
    tt.instrument()
    try:
        c, a, g = (tt.wrap(x, ledger=ledger) for x in (oai(up), claude(up), gemini(up)))
        with tt.session(ledger=other), capture_events() as events:
            list(c.chat.completions.create(model=GPT, messages=M, stream=True))
            c.responses.create(model=GPT, input="hi")
            a.messages.create(model=CLAUDE, max_tokens=64, messages=M)
            list(g.models.generate_content_stream(model=GEMINI, contents="hi"))
            oai(up).embeddings.create(model="text-embedding-3-small", input="x")  # instrumented only
    finally:
        tt.uninstrument()
    assert [e.provider for e in events] == ["openai", "openai", "anthropic", "google", "openai"]
    assert len(stored(ledger)) == 4  # the wrapped clients' ledger
    assert len(stored(other)) == 1  # the instrumented call went to the session's ledger
    other.close()


@pytest.mark.parametrize("method", ["with_options", "copy"])
def test_copies_of_a_wrapped_client_are_metered(method: str, up: FakeUpstream, ledger: tt.Ledger) -> None:
    c = tt.wrap(oai(up), ledger=ledger)
    a = tt.wrap(claude(up), ledger=ledger)
    with capture_events() as events:
        getattr(c, method)(timeout=5).chat.completions.create(model=GPT, messages=M)
        getattr(getattr(c, method)(max_retries=1), method)(timeout=9).responses.create(model=GPT, input="hi")
        getattr(a, method)(timeout=5).messages.create(model=CLAUDE, max_tokens=64, messages=M)
    assert [(e.provider, e.operation) for e in events] == [
        ("openai", "chat"),
        ("openai", "responses"),
        ("anthropic", "messages"),
    ]
    assert len(up.requests) == 3


def test_wrap_refuses_what_it_cannot_meter() -> None:
    with pytest.raises(TypeError, match="don't know how to meter"):
        tt.wrap(object())


# --------------------------------------------------------------------------- attribution


def test_session_and_step_dimensions(up: FakeUpstream, ledger: tt.Ledger) -> None:
    c = tt.wrap(oai(up), ledger=ledger)
    up.push(Reply(tool_calls=[ToolCall("search", {"q": "paris"}, id="call_7")]))
    with tt.session(
        agent="contract-analyzer",
        team="legal",
        project="q4",
        user="u-17",
        customer="acme",
        workflow="review",
        task_type="analysis",
        tags={"Region": "eu"},
        ledger=ledger,
    ) as s:
        with tt.step("planning") as planning, tt.step("search") as search:
            c.chat.completions.create(model=GPT, messages=M)
        tt.record_tool("search", args={"q": "paris"})
        c.chat.completions.create(model=GPT, messages=M)
    llm, tool, second = stored(ledger)
    for ev in (llm, second):
        assert (ev.agent, ev.team, ev.project, ev.user, ev.customer, ev.workflow, ev.task_type) == (
            "contract-analyzer",
            "legal",
            "q4",
            "u-17",
            "acme",
            "review",
            "analysis",
        )
        assert (ev.session_id, ev.trace_id, dict(ev.tags)) == (s.session_id, s.trace_id, {"region": "eu"})
    assert (llm.step, llm.parent_span_id) == ("planning/search", search.span_id)
    assert planning.span_id != search.span_id
    assert (second.step, second.parent_span_id) == (None, s.attribution.span_id)
    # the tool that ran is linked to the model call that asked for it
    assert llm.tool_calls[0].id == "call_7" and llm.tool_calls[0].args_hash == args_hash({"q": "paris"})
    assert (tool.kind, tool.tool_call_id, tool.parent_span_id) == ("tool", "call_7", llm.span_id)


def test_attribution_across_asyncio_tasks(up: FakeUpstream, ledger: tt.Ledger) -> None:
    async def main() -> tt.context.Session:  # type: ignore[name-defined]
        async with openai.AsyncOpenAI(base_url=up.openai_base_url, api_key="k", max_retries=0) as raw:
            c = tt.wrap(raw, ledger=ledger)

            async def work(name: str) -> None:
                with tt.step(name):
                    await c.chat.completions.create(model=GPT, messages=M)
                    async for _ in await c.chat.completions.create(model=GPT, messages=M, stream=True):
                        await asyncio.sleep(0)

            with tt.session(agent="fan-out", ledger=ledger) as s:
                await asyncio.gather(*(work(f"task-{i}") for i in range(4)))
            await c.chat.completions.create(model=GPT, messages=M)  # outside the session
            return s

    s = asyncio.run(main())
    events = stored(ledger)
    inside = [e for e in events if e.session_id == s.session_id]
    assert len(inside) == 8 and len(events) == 9
    assert sorted(e.step for e in inside) == sorted(f"task-{i}" for i in range(4) for _ in range(2))
    assert all(e.agent == "fan-out" for e in inside)
    assert s.cost_usd == sum((e.cost_usd for e in inside), Decimal(0)) > 0
    assert s.tokens == sum(e.input_tokens + e.output_tokens for e in inside)
    assert s.calls == 8


def test_attribution_across_threads(up: FakeUpstream, ledger: tt.Ledger) -> None:
    c = tt.wrap(oai(up), ledger=ledger)

    def work(i: int) -> None:
        with tt.step(f"thread-{i}"):
            list(c.chat.completions.create(model=GPT, messages=M, stream=True))

    with tt.session(agent="threads", ledger=ledger) as s, ThreadPoolExecutor(4) as pool:
        list(pool.map(tt.with_context(work), range(8)))
        pool.submit(work, 99).result()  # without with_context: a thread does not inherit the session
    events = stored(ledger)
    inside = [e for e in events if e.session_id == s.session_id]
    assert sorted(e.step for e in inside if e.step) == sorted(f"thread-{i}" for i in range(8))
    assert [e.step for e in events if e.session_id is None] == ["thread-99"]
    assert s.cost_usd == sum((e.cost_usd for e in inside), Decimal(0))
    assert s.tokens == sum(e.input_tokens + e.output_tokens for e in inside) and s.calls == 8


def test_a_stream_is_attributed_to_where_it_was_opened(up: FakeUpstream, ledger: tt.Ledger) -> None:
    c = tt.wrap(oai(up), ledger=ledger)
    with tt.session(agent="opener", ledger=ledger) as s:
        stream = c.chat.completions.create(model=GPT, messages=M, stream=True)
    chunks = list(stream)  # read after the session closed
    assert chunks
    (ev,) = stored(ledger)
    assert (ev.session_id, ev.agent) == (s.session_id, "opener")
    assert s.calls == 1 and s.cost_usd == ev.cost_usd


# --------------------------------------------------------------------------- metering never breaks a call


class BrokenStore:
    """A real store whose writes fail until repaired."""

    def __init__(self, url: str) -> None:
        self.inner = open_store(url)
        self.url, self.dialect = self.inner.url, self.inner.dialect
        self.broken = True

    def write_events(self, rows: Sequence[Any]) -> int:
        if self.broken:
            raise sqlite3.OperationalError("disk I/O error")
        return self.inner.write_events(rows)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_broken_store_lets_calls_through(
    up: FakeUpstream, sqlite_url: str, prices: PriceBook, caplog: pytest.LogCaptureFixture
) -> None:
    store = BrokenStore(sqlite_url)
    ledger = tt.Ledger(store=store, prices=prices)  # type: ignore[arg-type]
    with caplog.at_level(logging.CRITICAL, logger="tokentrail"), capture_events() as events:
        for client in (tt.wrap(oai(up), ledger=ledger), tt.wrap(claude(up), ledger=ledger)):
            if isinstance(client, openai.OpenAI):
                assert client.chat.completions.create(model=GPT, messages=M).choices[0].message.content
            else:
                assert client.messages.create(model=CLAUDE, max_tokens=9, messages=M).content
        assert tt.wrap(gemini(up), ledger=ledger).models.generate_content(model=GEMINI, contents="hi").text
    assert len(events) == 3
    ledger.flush()  # durable in the spool meanwhile
    store.broken = False  # repaired: nothing recorded was lost
    deadline = time.monotonic() + 20
    while ledger.spool is not None and ledger.spool.pending and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(stored(ledger)) == 3
    ledger.close()


def test_a_closed_ledger_lets_calls_through(
    up: FakeUpstream, ledger: tt.Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    c, a, g = (tt.wrap(x, ledger=ledger) for x in (oai(up), claude(up), gemini(up)))
    ledger.close()
    with caplog.at_level(logging.ERROR, logger="tokentrail"):
        assert list(c.chat.completions.create(model=GPT, messages=M, stream=True))
        assert a.messages.create(model=CLAUDE, max_tokens=9, messages=M).content
        assert g.models.generate_content(model=GEMINI, contents="hi").text
    assert any("is closed" in r.getMessage() or "closed" in str(r.exc_info) for r in caplog.records)


def test_a_default_ledger_that_cannot_open_lets_calls_through(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")  # a file where the ledger's directory should be
    out = run_python(
        """
        import json
        import openai, tokentrail as tt
        from tokentrail.testing import FakeUpstream
        with FakeUpstream() as up:
            c = tt.wrap(openai.OpenAI(base_url=up.openai_base_url, api_key="k", max_retries=0))
            text = c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
            tt.instrument()
            chunks = list(openai.OpenAI(base_url=up.openai_base_url, api_key="k").chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True))
        print(json.dumps({"text": text.choices[0].message.content, "chunks": len(chunks)}))
        """,
        env={"TOKENTRAIL_DB": f"sqlite:///{blocker / 'ledger.db'}"},
    )
    assert out["text"] == "Hello from FakeUpstream." and out["chunks"] > 1


def test_a_default_ledger_that_cannot_open_is_logged_once_then_counted(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")  # a file where the ledger's directory should be
    out = run_python(
        """
        import io, json, logging
        import openai, tokentrail as tt
        from tokentrail.testing import FakeUpstream
        log = io.StringIO()
        logging.getLogger("tokentrail").addHandler(logging.StreamHandler(log))

        @tt.tool
        def search(q):
            return q

        with FakeUpstream() as up:
            c = tt.wrap(openai.OpenAI(base_url=up.openai_base_url, api_key="k", max_retries=0))
            for _ in range(2):
                c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        assert search("x") == "x"
        print(json.dumps({"log": log.getvalue(), "status": tt.ledger_status()}))
        """,
        env={"TOKENTRAIL_DB": f"sqlite:///{blocker / 'ledger.db'}"},
    )
    lines = out["log"].strip().splitlines()
    assert len(lines) == 1, out["log"]  # one line for three calls: no traceback, no repeat
    assert str(blocker) in lines[0] and "TOKENTRAIL_DB" in lines[0] and "NOT metered" in lines[0]
    status = out["status"]
    assert status["unmetered_calls"] == 3 and status["open"] is False and str(blocker) in status["error"]


def test_a_failing_listener_does_not_break_calls(up: FakeUpstream, ledger: tt.Ledger) -> None:
    from tokentrail import ledger as ledger_module

    def boom(event: UsageEvent) -> None:
        raise RuntimeError("listener bug")

    ledger_module._listeners.append(boom)
    try:
        c = tt.wrap(oai(up), ledger=ledger)
        assert c.chat.completions.create(model=GPT, messages=M).choices
    finally:
        ledger_module._listeners.remove(boom)
    assert len(stored(ledger)) == 1
