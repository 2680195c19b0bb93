"""The real openai SDK against FakeUpstream, metered by tt.wrap(): every entry point once, sync and
async, plain / with_raw_response / with_streaming_response; chat stream usage; failures."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import httpx2
import openai
import pytest
from pydantic import BaseModel

import tokentrail as tt
from tests._events import stored
from tokentrail.events import UsageEvent, args_hash
from tokentrail.pricing import PriceBook
from tokentrail.testing import FakeUpstream, Reply, ToolCall, capture_events

GPT = "gpt-4o-mini"
EMBEDDING = "text-embedding-3-small"
KEY = "sk-test"
M: Any = [{"role": "user", "content": "What is the capital of France?"}]
CALLS = [ToolCall("search", {"q": "paris", "n": 3}, id="call_s"), ToolCall("noop", {}, id="call_n")]
TEXT = '{"name": "Paris"}'
SCRIPTED = {"input_tokens": 1500, "output_tokens": 90, "cached_tokens": 1000, "reasoning_tokens": 30}
COUNTS = {"input_tokens": 1500, "output_tokens": 90, "cache_read_tokens": 1000, "reasoning_tokens": 30}
FAST_RETRY = {"retry-after-ms": "1"}


class City(BaseModel):
    name: str


# --------------------------------------------------------------------------- fixtures and helpers


def client(up: FakeUpstream, ledger: tt.Ledger | None = None, **options: Any) -> openai.OpenAI:
    options.setdefault("max_retries", 0)
    c = openai.OpenAI(base_url=up.openai_base_url, api_key=KEY, **options)
    return tt.wrap(c, ledger=ledger) if ledger is not None else c


def aclient(up: FakeUpstream, ledger: tt.Ledger | None = None, **options: Any) -> openai.AsyncOpenAI:
    options.setdefault("max_retries", 0)
    c = openai.AsyncOpenAI(base_url=up.openai_base_url, api_key=KEY, **options)
    return tt.wrap(c, ledger=ledger) if ledger is not None else c


def cost(prices: PriceBook, provider: str, model: str, counts: dict[str, int]) -> Decimal:
    c = tt.price(provider=provider, model=model, book=prices, **counts)
    assert c is not None
    return c.total_usd.quantize(Decimal("1e-9"))


def check(
    ev: UsageEvent,
    prices: PriceBook,
    *,
    operation: str,
    streamed: bool,
    kind: str = "llm",
    model: str = GPT,
    counts: dict[str, int] = COUNTS,
    tools: bool = True,
) -> None:
    assert (ev.provider, ev.model, ev.operation, ev.kind, ev.streamed, ev.status) == (
        "openai",
        model,
        operation,
        kind,
        streamed,
        "ok",
    )
    got = {k: getattr(ev, k) for k in ("input_tokens", "output_tokens", "cache_read_tokens", "reasoning_tokens")}
    assert got == {"output_tokens": 0, "cache_read_tokens": 0, "reasoning_tokens": 0, **counts}
    assert ev.cost_usd == cost(prices, "openai", model, counts)
    assert ev.price_version is not None and ev.latency_ms is not None and ev.latency_ms >= 0
    if tools:
        assert [(t.id, t.name, t.args_hash) for t in ev.tool_calls] == [
            ("call_s", "search", args_hash({"q": "paris", "n": 3})),
            ("call_n", "noop", args_hash({})),
        ]


# name -> (call, operation, streamed, kind)
SYNC: dict[str, tuple[Callable[[openai.OpenAI], Any], str, bool, str]] = {}
ASYNC: dict[str, tuple[Callable[[openai.AsyncOpenAI], Awaitable[Any]], str, bool, str]] = {}


def case(table: dict[str, Any], name: str, operation: str, streamed: bool, kind: str = "llm") -> Any:
    def register(fn: Any) -> Any:
        table[name] = (fn, operation, streamed, kind)
        return fn

    return register


def _streaming(method: Callable[..., Any], iterate: bool = False, **kwargs: Any) -> None:
    with method(**kwargs) as r:
        if iterate:
            for _ in r.parse():
                pass
        else:
            r.parse()


@case(SYNC, "chat.create", "chat", False)
def chat_create(c: openai.OpenAI) -> None:
    c.chat.completions.create(model=GPT, messages=M)


@case(SYNC, "chat.create(stream)", "chat", True)
def chat_create_stream(c: openai.OpenAI) -> None:
    list(c.chat.completions.create(model=GPT, messages=M, stream=True))


@case(SYNC, "chat.parse", "chat", False)
def chat_parse(c: openai.OpenAI) -> None:
    c.chat.completions.parse(model=GPT, messages=M, response_format=City)


@case(SYNC, "chat.stream", "chat", True)
def chat_stream(c: openai.OpenAI) -> None:
    with c.chat.completions.stream(model=GPT, messages=M) as s:
        for _ in s:
            pass
        s.get_final_completion()


@case(SYNC, "responses.create", "responses", False)
def responses_create(c: openai.OpenAI) -> None:
    c.responses.create(model=GPT, input="hi")


@case(SYNC, "responses.create(stream)", "responses", True)
def responses_create_stream(c: openai.OpenAI) -> None:
    list(c.responses.create(model=GPT, input="hi", stream=True))


@case(SYNC, "responses.parse", "responses", False)
def responses_parse(c: openai.OpenAI) -> None:
    c.responses.parse(model=GPT, input="hi", text_format=City)


@case(SYNC, "responses.stream", "responses", True)
def responses_stream(c: openai.OpenAI) -> None:
    with c.responses.stream(model=GPT, input="hi") as s:
        for _ in s:
            pass
        s.get_final_response()


@case(SYNC, "embeddings.create", "embeddings", False, "embedding")
def embeddings_create(c: openai.OpenAI) -> None:
    c.embeddings.create(model=EMBEDDING, input="hi")


@case(SYNC, "raw chat.create", "chat", False)
def raw_chat_create(c: openai.OpenAI) -> None:
    c.chat.completions.with_raw_response.create(model=GPT, messages=M).parse()


@case(SYNC, "raw chat.create(stream)", "chat", True)
def raw_chat_create_stream(c: openai.OpenAI) -> None:
    list(c.chat.completions.with_raw_response.create(model=GPT, messages=M, stream=True).parse())


@case(SYNC, "raw chat.parse", "chat", False)
def raw_chat_parse(c: openai.OpenAI) -> None:
    c.chat.completions.with_raw_response.parse(model=GPT, messages=M, response_format=City).parse()


@case(SYNC, "raw responses.create", "responses", False)
def raw_responses_create(c: openai.OpenAI) -> None:
    c.responses.with_raw_response.create(model=GPT, input="hi").parse()


@case(SYNC, "raw responses.create(stream)", "responses", True)
def raw_responses_create_stream(c: openai.OpenAI) -> None:
    list(c.responses.with_raw_response.create(model=GPT, input="hi", stream=True).parse())


@case(SYNC, "raw embeddings.create", "embeddings", False, "embedding")
def raw_embeddings_create(c: openai.OpenAI) -> None:
    c.embeddings.with_raw_response.create(model=EMBEDDING, input="hi").parse()


@case(SYNC, "streaming chat.create", "chat", False)
def streaming_chat_create(c: openai.OpenAI) -> None:
    _streaming(c.chat.completions.with_streaming_response.create, model=GPT, messages=M)


@case(SYNC, "streaming chat.create(stream)", "chat", True)
def streaming_chat_create_stream(c: openai.OpenAI) -> None:
    _streaming(c.chat.completions.with_streaming_response.create, True, model=GPT, messages=M, stream=True)


@case(SYNC, "streaming chat.parse", "chat", False)
def streaming_chat_parse(c: openai.OpenAI) -> None:
    _streaming(c.chat.completions.with_streaming_response.parse, model=GPT, messages=M, response_format=City)


@case(SYNC, "streaming responses.create", "responses", False)
def streaming_responses_create(c: openai.OpenAI) -> None:
    _streaming(c.responses.with_streaming_response.create, model=GPT, input="hi")


@case(SYNC, "streaming responses.create(stream)", "responses", True)
def streaming_responses_create_stream(c: openai.OpenAI) -> None:
    _streaming(c.responses.with_streaming_response.create, True, model=GPT, input="hi", stream=True)


@case(SYNC, "streaming embeddings.create", "embeddings", False, "embedding")
def streaming_embeddings_create(c: openai.OpenAI) -> None:
    _streaming(c.embeddings.with_streaming_response.create, model=EMBEDDING, input="hi")


async def _astreaming(method: Callable[..., Any], iterate: bool = False, **kwargs: Any) -> None:
    async with method(**kwargs) as r:
        if iterate:
            async for _ in await r.parse():
                pass
        else:
            await r.parse()


@case(ASYNC, "chat.create", "chat", False)
async def achat_create(c: openai.AsyncOpenAI) -> None:
    await c.chat.completions.create(model=GPT, messages=M)


@case(ASYNC, "chat.create(stream)", "chat", True)
async def achat_create_stream(c: openai.AsyncOpenAI) -> None:
    async for _ in await c.chat.completions.create(model=GPT, messages=M, stream=True):
        pass


@case(ASYNC, "chat.parse", "chat", False)
async def achat_parse(c: openai.AsyncOpenAI) -> None:
    await c.chat.completions.parse(model=GPT, messages=M, response_format=City)


@case(ASYNC, "chat.stream", "chat", True)
async def achat_stream(c: openai.AsyncOpenAI) -> None:
    async with c.chat.completions.stream(model=GPT, messages=M) as s:
        async for _ in s:
            pass
        await s.get_final_completion()


@case(ASYNC, "responses.create", "responses", False)
async def aresponses_create(c: openai.AsyncOpenAI) -> None:
    await c.responses.create(model=GPT, input="hi")


@case(ASYNC, "responses.create(stream)", "responses", True)
async def aresponses_create_stream(c: openai.AsyncOpenAI) -> None:
    async for _ in await c.responses.create(model=GPT, input="hi", stream=True):
        pass


@case(ASYNC, "responses.parse", "responses", False)
async def aresponses_parse(c: openai.AsyncOpenAI) -> None:
    await c.responses.parse(model=GPT, input="hi", text_format=City)


@case(ASYNC, "responses.stream", "responses", True)
async def aresponses_stream(c: openai.AsyncOpenAI) -> None:
    async with c.responses.stream(model=GPT, input="hi") as s:
        async for _ in s:
            pass
        await s.get_final_response()


@case(ASYNC, "embeddings.create", "embeddings", False, "embedding")
async def aembeddings_create(c: openai.AsyncOpenAI) -> None:
    await c.embeddings.create(model=EMBEDDING, input="hi")


# with_raw_response's parse() is synchronous, even on the async client
@case(ASYNC, "raw chat.create", "chat", False)
async def araw_chat_create(c: openai.AsyncOpenAI) -> None:
    (await c.chat.completions.with_raw_response.create(model=GPT, messages=M)).parse()


@case(ASYNC, "raw chat.create(stream)", "chat", True)
async def araw_chat_create_stream(c: openai.AsyncOpenAI) -> None:
    raw = await c.chat.completions.with_raw_response.create(model=GPT, messages=M, stream=True)
    async for _ in raw.parse():
        pass


@case(ASYNC, "raw chat.parse", "chat", False)
async def araw_chat_parse(c: openai.AsyncOpenAI) -> None:
    (await c.chat.completions.with_raw_response.parse(model=GPT, messages=M, response_format=City)).parse()


@case(ASYNC, "raw responses.parse", "responses", False)
async def araw_responses_parse(c: openai.AsyncOpenAI) -> None:
    (await c.responses.with_raw_response.parse(model=GPT, input="hi", text_format=City)).parse()


@case(ASYNC, "raw embeddings.create", "embeddings", False, "embedding")
async def araw_embeddings_create(c: openai.AsyncOpenAI) -> None:
    (await c.embeddings.with_raw_response.create(model=EMBEDDING, input="hi")).parse()


@case(ASYNC, "streaming chat.create", "chat", False)
async def astreaming_chat_create(c: openai.AsyncOpenAI) -> None:
    await _astreaming(c.chat.completions.with_streaming_response.create, model=GPT, messages=M)


@case(ASYNC, "streaming chat.create(stream)", "chat", True)
async def astreaming_chat_create_stream(c: openai.AsyncOpenAI) -> None:
    await _astreaming(c.chat.completions.with_streaming_response.create, True, model=GPT, messages=M, stream=True)


@case(ASYNC, "streaming responses.create", "responses", False)
async def astreaming_responses_create(c: openai.AsyncOpenAI) -> None:
    await _astreaming(c.responses.with_streaming_response.create, model=GPT, input="hi")


@case(ASYNC, "streaming responses.create(stream)", "responses", True)
async def astreaming_responses_create_stream(c: openai.AsyncOpenAI) -> None:
    await _astreaming(c.responses.with_streaming_response.create, True, model=GPT, input="hi", stream=True)


@case(ASYNC, "streaming embeddings.create", "embeddings", False, "embedding")
async def astreaming_embeddings_create(c: openai.AsyncOpenAI) -> None:
    await _astreaming(c.embeddings.with_streaming_response.create, model=EMBEDDING, input="hi")


def _reply(kind: str) -> Reply:
    if kind == "embedding":
        return Reply(input_tokens=1500)
    return Reply(text=TEXT, tool_calls=CALLS, **SCRIPTED)


def _expect(kind: str) -> dict[str, Any]:
    if kind == "embedding":
        return {"model": EMBEDDING, "counts": {"input_tokens": 1500}, "tools": False}
    return {}


# --------------------------------------------------------------------------- every entry point, once


@pytest.mark.parametrize("name", list(SYNC))
def test_sync_entry_point_is_metered_once(name: str, up: FakeUpstream, ledger: tt.Ledger, prices: PriceBook) -> None:
    call, operation, streamed, kind = SYNC[name]
    up.push(_reply(kind))
    with client(up, ledger) as c, capture_events() as events:
        call(c)
    assert len(up.requests) == 1
    assert len(events) == 1
    check(events[0], prices, operation=operation, streamed=streamed, kind=kind, **_expect(kind))
    assert [e.event_id for e in stored(ledger)] == [events[0].event_id]
    check(stored(ledger)[0], prices, operation=operation, streamed=streamed, kind=kind, **_expect(kind))


@pytest.mark.parametrize("name", list(ASYNC))
def test_async_entry_point_is_metered_once(name: str, up: FakeUpstream, ledger: tt.Ledger, prices: PriceBook) -> None:
    call, operation, streamed, kind = ASYNC[name]
    up.push(_reply(kind))

    async def main() -> None:
        async with aclient(up, ledger) as c:
            await call(c)

    with capture_events() as events:
        asyncio.run(main())
    assert len(up.requests) == 1
    assert len(events) == 1
    check(events[0], prices, operation=operation, streamed=streamed, kind=kind, **_expect(kind))
    assert [e.event_id for e in stored(ledger)] == [events[0].event_id]


def test_cache_writes_are_recorded(up: FakeUpstream, ledger: tt.Ledger, prices: PriceBook) -> None:
    up.push(Reply(input_tokens=2000, cached_tokens=500, cache_write_tokens=300, output_tokens=10))
    with client(up, ledger) as c, capture_events() as events:
        c.chat.completions.create(model=GPT, messages=M)
    (ev,) = events
    assert (ev.input_tokens, ev.cache_read_tokens, ev.cache_write_tokens) == (2000, 500, 300)
    counts = {"input_tokens": 2000, "output_tokens": 10, "cache_read_tokens": 500, "cache_write_tokens": 300}
    assert ev.cost_usd == cost(prices, "openai", GPT, counts)


def test_the_model_that_answered_is_recorded(up: FakeUpstream, ledger: tt.Ledger) -> None:
    up.push(Reply(model="gpt-4o-mini-2024-07-18"))
    with client(up, ledger) as c, capture_events() as events:
        c.chat.completions.create(model=GPT, messages=M)
    assert events[0].model == "gpt-4o-mini-2024-07-18" and events[0].cost_usd is not None


# --------------------------------------------------------------------------- chat stream usage


def _chunks(c: openai.OpenAI, **kwargs: Any) -> list[dict[str, Any]]:
    out = []
    for chunk in c.chat.completions.create(model=GPT, messages=M, stream=True, **kwargs):
        d = chunk.model_dump(exclude_unset=True)  # unset fields too: no "usage": null the caller never had
        del d["id"], d["created"]
        out.append(d)
    return out


@pytest.mark.parametrize("stream_options", [None, {"include_usage": False}], ids=["not-asked", "include_usage-false"])
def test_chat_stream_asks_for_usage_and_hides_it_from_a_caller_who_did_not(
    stream_options: dict[str, Any] | None, up: FakeUpstream, ledger: tt.Ledger, prices: PriceBook
) -> None:
    kwargs = {"stream_options": stream_options} if stream_options is not None else {}
    reply = Reply(text="The capital of France is Paris.", tool_calls=CALLS, stream_chunks=4, **SCRIPTED)
    up.push(reply, reply)
    with client(up) as plain:
        expected = _chunks(plain, **kwargs)
    assert up.requests[-1].json.get("stream_options") == stream_options
    with client(up, ledger) as c, capture_events() as events:
        seen = _chunks(c, **kwargs)
    assert up.requests[-1].json["stream_options"] == {**(stream_options or {}), "include_usage": True}
    assert seen == expected
    assert all(d["choices"] and "usage" not in d for d in seen)
    (ev,) = events
    check(ev, prices, operation="chat", streamed=True)


def test_chat_stream_caller_who_asked_still_gets_its_usage_chunk(
    up: FakeUpstream, ledger: tt.Ledger, prices: PriceBook
) -> None:
    reply = Reply(text="Paris.", tool_calls=CALLS, **SCRIPTED)
    up.push(reply, reply)
    with client(up) as plain:
        expected = _chunks(plain, stream_options={"include_usage": True})
    with client(up, ledger) as c, capture_events() as events:
        seen = _chunks(c, stream_options={"include_usage": True})
    assert up.requests[-1].json["stream_options"] == {"include_usage": True}
    assert seen == expected
    assert seen[-1]["choices"] == [] and seen[-1]["usage"]["prompt_tokens"] == 1500
    check(events[0], prices, operation="chat", streamed=True)


def test_chat_stream_helper_final_completion_is_unchanged(up: FakeUpstream, ledger: tt.Ledger) -> None:
    up.push(Reply(text="Paris.", **SCRIPTED), Reply(text="Paris.", **SCRIPTED))

    def final(c: openai.OpenAI) -> Any:
        with c.chat.completions.stream(model=GPT, messages=M) as s:
            return s.get_final_completion()

    with client(up) as plain:
        expected = final(plain)
    with client(up, ledger) as c, capture_events() as events:
        got = final(c)
    assert got.usage is None and expected.usage is None  # the caller did not ask for usage
    assert got.choices == expected.choices
    assert events[0].input_tokens == 1500


def test_async_chat_stream_hides_the_usage_chunk(up: FakeUpstream, ledger: tt.Ledger, prices: PriceBook) -> None:
    reply = Reply(text="Paris is the capital.", **SCRIPTED)
    up.push(reply, reply)

    async def chunks(c: openai.AsyncOpenAI) -> list[dict[str, Any]]:
        async with c:
            out = []
            async for chunk in await c.chat.completions.create(model=GPT, messages=M, stream=True):
                d = chunk.model_dump(exclude_unset=True)
                del d["id"], d["created"]
                out.append(d)
            return out

    expected = asyncio.run(chunks(aclient(up)))
    with capture_events() as events:
        seen = asyncio.run(chunks(aclient(up, ledger)))
    assert seen == expected
    check(events[0], prices, operation="chat", streamed=True, tools=False)


def test_gzip_stream_is_read_for_usage(up: FakeUpstream, ledger: tt.Ledger) -> None:
    """A compressed (non-filtered) stream: tokentrail decodes a copy, the SDK gets the original bytes."""
    import gzip

    data = [{"object": "embedding", "index": 0, "embedding": [0.5, 0.25]}]
    body = json.dumps({"object": "list", "data": data, "model": EMBEDDING, "usage": {"prompt_tokens": 7}}).encode()

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(
            200,
            headers={"content-type": "application/json", "content-encoding": "gzip"},
            content=gzip.compress(body),
        )

    http = httpx2.Client(transport=httpx2.MockTransport(handler))
    c = tt.wrap(openai.OpenAI(base_url="http://fake/v1", api_key=KEY, http_client=http), ledger=ledger)
    with capture_events() as events, c.embeddings.with_streaming_response.create(model=EMBEDDING, input="x") as r:
        assert r.parse().usage.prompt_tokens == 7
    assert events[0].input_tokens == 7 and events[0].status == "ok"


# --------------------------------------------------------------------------- failures


def _outcome(fn: Callable[[], Any]) -> type[BaseException] | None:
    try:
        fn()
    except Exception as e:
        return type(e)
    return None


def test_429_retries_are_each_an_error_event(up: FakeUpstream, ledger: tt.Ledger, prices: PriceBook) -> None:
    limited = Reply(status=429, headers=FAST_RETRY)
    up.push(limited, limited, Reply(text=TEXT, tool_calls=CALLS, **SCRIPTED))
    with client(up, ledger, max_retries=2) as c, capture_events() as events:
        c.chat.completions.create(model=GPT, messages=M)
    assert len(up.requests) == 3
    assert [e.status for e in events] == ["error", "error", "ok"]
    # nothing was reported for a refused attempt: no tokens, so nothing to pay
    assert all(e.note and "429" in e.note and e.cost_usd == 0 and e.input_tokens == 0 for e in events[:2])
    assert all(e.model == GPT for e in events)
    check(events[2], prices, operation="chat", streamed=False)
    assert len(stored(ledger)) == 3


@pytest.mark.parametrize("stream", [False, True])
def test_429_after_the_last_retry_raises_what_the_sdk_raises(stream: bool, up: FakeUpstream, ledger: tt.Ledger) -> None:
    limited = Reply(status=429, headers=FAST_RETRY)

    def call(c: openai.OpenAI) -> Callable[[], Any]:
        return lambda: c.chat.completions.create(model=GPT, messages=M, stream=stream)

    up.push(limited, limited)
    with client(up, max_retries=1) as plain:
        expected = _outcome(call(plain))
    up.push(limited, limited)
    with client(up, ledger, max_retries=1) as c, capture_events() as events:
        assert _outcome(call(c)) is expected is openai.RateLimitError
    assert [(e.status, e.streamed) for e in events] == [("error", stream), ("error", stream)]
    assert len(stored(ledger)) == 2


def test_500_is_an_error_event(up: FakeUpstream, ledger: tt.Ledger) -> None:
    up.push(Reply(status=500))
    with client(up, ledger) as c, capture_events() as events:
        assert _outcome(lambda: c.responses.create(model=GPT, input="hi")) is openai.InternalServerError
    (ev,) = events
    assert (ev.status, ev.operation, ev.input_tokens, ev.cost_usd) == ("error", "responses", 0, 0)
    assert "500" in (ev.note or "")


def test_timeout_is_an_error_event(up: FakeUpstream, ledger: tt.Ledger) -> None:
    up.push(Reply(delay_s=0.5), Reply(delay_s=0.5))
    with client(up, timeout=0.05) as plain:
        expected = _outcome(lambda: plain.chat.completions.create(model=GPT, messages=M))
    with client(up, ledger, timeout=0.05) as c, capture_events() as events:
        assert _outcome(lambda: c.chat.completions.create(model=GPT, messages=M)) is expected
    assert expected is openai.APITimeoutError
    (ev,) = events
    assert ev.status == "error" and "Timeout" in (ev.note or "")
    assert len(stored(ledger)) == 1


@pytest.mark.parametrize("operation", ["chat", "responses"])
def test_stream_cut_by_the_server(operation: str, up: FakeUpstream, ledger: tt.Ledger) -> None:
    def call(c: openai.OpenAI) -> Callable[[], Any]:
        if operation == "chat":
            return lambda: list(c.chat.completions.create(model=GPT, messages=M, stream=True))
        return lambda: list(c.responses.create(model=GPT, input="hi", stream=True))

    cut = Reply(text="a b c d e f", tool_calls=CALLS, cut_stream_after=3, **SCRIPTED)
    up.push(cut, cut)
    with client(up) as plain:
        expected = _outcome(call(plain))
    with client(up, ledger) as c, capture_events() as events:
        assert _outcome(call(c)) is expected
    assert expected is not None  # the SDK raises (the stream ended without its last chunk)
    (ev,) = events
    assert (ev.status, ev.streamed, ev.operation) == ("error", True, operation)
    # OpenAI reports usage only at the end: what the call consumed is estimated, never $0
    assert ev.usage_estimated and ev.input_tokens > 0 and ev.cost_usd is not None and ev.cost_usd > 0
    assert len(stored(ledger)) == 1


def test_stream_abandoned_by_the_caller_is_cancelled(up: FakeUpstream, ledger: tt.Ledger) -> None:
    # chunk_delay_s: the rest has not arrived when the caller leaves (a stream read to its end is "ok")
    up.push(Reply(text="one two three four five six", stream_chunks=6, chunk_delay_s=0.2, **SCRIPTED))
    with client(up, ledger) as c, capture_events() as events:
        stream = c.chat.completions.create(model=GPT, messages=M, stream=True)
        for _ in stream:
            break
        stream.close()
        del stream
    (ev,) = events
    assert (ev.status, ev.streamed) == ("cancelled", True)
    assert len(stored(ledger)) == 1


def test_responses_stream_helper_left_early_is_cancelled(up: FakeUpstream, ledger: tt.Ledger) -> None:
    up.push(Reply(text="one two three four five six", stream_chunks=6, chunk_delay_s=0.2))
    with client(up, ledger) as c, capture_events() as events, c.responses.stream(model=GPT, input="hi") as s:
        for _ in s:
            break
    assert [e.status for e in events] == ["cancelled"]


def test_async_task_cancelled_mid_stream(up: FakeUpstream, ledger: tt.Ledger) -> None:
    up.push(Reply(text="one two three four five six", stream_chunks=6, chunk_delay_s=0.5, **SCRIPTED))

    async def main() -> None:
        async with aclient(up, ledger) as c:
            first = asyncio.Event()

            async def consume() -> None:
                async for _ in await c.chat.completions.create(model=GPT, messages=M, stream=True):
                    first.set()

            task = asyncio.create_task(consume())
            await first.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    with capture_events() as events:
        asyncio.run(main())
    (ev,) = events
    assert (ev.status, ev.streamed) == ("cancelled", True)
    assert len(stored(ledger)) == 1


def test_async_task_cancelled_before_the_response(up: FakeUpstream, ledger: tt.Ledger) -> None:
    up.push(Reply(delay_s=0.5))

    async def main() -> None:
        async with aclient(up, ledger) as c:
            task = asyncio.create_task(c.chat.completions.create(model=GPT, messages=M))
            while not up.requests:
                await asyncio.sleep(0.005)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    with capture_events() as events:
        asyncio.run(main())
    assert [e.status for e in events] == ["cancelled"]


# --------------------------------------------------------------------------- impossible usage


@pytest.mark.parametrize(
    ("raw_usage", "reason"),
    [
        (
            {"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 20}},
            "cache_exceeds_input",
        ),
        ({"prompt_tokens": -10, "completion_tokens": 5}, "negative:prompt_tokens"),
        ({"prompt_tokens": "12", "completion_tokens": 5}, "non_integer:prompt_tokens"),
        ({"prompt_tokens": 12.5, "completion_tokens": 5}, "non_integer:prompt_tokens"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_impossible_usage_never_breaks_the_call(
    raw_usage: dict[str, Any], reason: str, stream: bool, up: FakeUpstream, ledger: tt.Ledger
) -> None:
    up.push(Reply(text="Paris.", raw_usage=raw_usage))
    with client(up, ledger) as c, capture_events() as events:
        if stream:
            chunks = list(c.chat.completions.create(model=GPT, messages=M, stream=True))
            assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == "Paris."
        else:
            assert c.chat.completions.create(model=GPT, messages=M).choices[0].message.content == "Paris."
    (ev,) = stored(ledger)
    assert ev.event_id == events[0].event_id
    assert ev.status == f"invalid_usage:{reason}"
    assert ev.cost_usd is None and ev.price_version is None


def test_impossible_usage_is_kept_verbatim_not_clamped(up: FakeUpstream, ledger: tt.Ledger) -> None:
    raw = {"prompt_tokens": 10, "completion_tokens": -5, "prompt_tokens_details": {"cached_tokens": 20}}
    up.push(Reply(raw_usage=raw))
    with client(up, ledger) as c:
        c.chat.completions.create(model=GPT, messages=M)
    (ev,) = stored(ledger)
    # no count was clamped into the token columns: they stay empty and the payload is kept as sent
    assert (ev.input_tokens, ev.output_tokens, ev.cache_read_tokens) == (0, 0, 0)
    assert ev.note is not None and json.loads(ev.note.removeprefix("reported usage: ")) == raw


# --------------------------------------------------------------------------- servers that differ from OpenAI


def _refuse_stream_options(request: Any) -> Reply | None:
    if "stream_options" in (request.json or {}):
        return Reply(status=400, error_message="Unrecognized request argument supplied: stream_options")
    return None


def test_a_server_that_refuses_stream_options_still_serves_the_caller(up: FakeUpstream, ledger: tt.Ledger) -> None:
    up.responder = _refuse_stream_options
    with client(up, ledger) as c, capture_events() as events:
        chunks = list(c.chat.completions.create(model=GPT, messages=M, stream=True))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == "Hello from FakeUpstream."
    assert [r.json.get("stream_options") for r in up.requests] == [{"include_usage": True}, None]
    # one event, for the caller's own request; the server never said what it used
    assert [e.status for e in events] == ["invalid_usage:missing_usage"]
    # a caller who asked for usage itself gets the server's answer, as without tokentrail
    with client(up, ledger) as c, pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model=GPT, messages=M, stream=True, stream_options={"include_usage": True})


def test_async_a_server_that_refuses_stream_options_still_serves_the_caller(
    up: FakeUpstream, ledger: tt.Ledger
) -> None:
    up.responder = _refuse_stream_options

    async def main() -> list[Any]:
        async with aclient(up, ledger) as c:
            return [ch async for ch in await c.chat.completions.create(model=GPT, messages=M, stream=True)]

    with capture_events() as events:
        assert asyncio.run(main())
    assert len(up.requests) == 2 and len(events) == 1


def test_a_stream_that_ends_before_its_last_event_is_an_error(ledger: tt.Ledger) -> None:
    """The connection closed cleanly, but without `data: [DONE]`: the SDK raises nothing."""
    chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": GPT}
    delta = {**chunk, "choices": [{"index": 0, "delta": {"content": "Par"}, "finish_reason": None}]}
    body = b"data: " + json.dumps(delta).encode() + b"\n\n"

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    http = httpx2.Client(transport=httpx2.MockTransport(handler))
    c = tt.wrap(openai.OpenAI(base_url="http://fake/v1", api_key=KEY, http_client=http), ledger=ledger)
    with capture_events() as events:
        chunks = list(c.chat.completions.create(model=GPT, messages=M, stream=True))
    assert [ch.choices[0].delta.content for ch in chunks] == ["Par"]
    assert [(e.status, e.note) for e in events] == [("error", "stream_ended_early")]
