"""The real google-genai SDK against FakeUpstream, metered by tt.wrap(): generate_content and
generate_content_stream, sync and client.aio; failures. google-genai retries below the methods
tokentrail meters, so one call (whatever its attempts) is one event."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

import tokentrail as tt
from tests._events import counts_of, stored
from tokentrail.events import UsageEvent, args_hash
from tokentrail.pricing import PriceBook
from tokentrail.testing import FakeUpstream, Reply, ToolCall, capture_events

GEMINI = "gemini-2.5-flash"
KEY = "gemini-test"
CALLS = [ToolCall("search", {"q": "paris", "n": 3}), ToolCall("noop", {})]
SCRIPTED = {"input_tokens": 1500, "output_tokens": 90, "cached_tokens": 1000, "reasoning_tokens": 30}
# Gemini's wire: promptTokenCount 1500 (includes the 1000 cached), candidates 60 + thoughts 30
COUNTS = {"input_tokens": 1500, "output_tokens": 90, "cache_read_tokens": 1000, "reasoning_tokens": 30}


def client(up: FakeUpstream, ledger: tt.Ledger | None = None, **http_options: Any) -> genai.Client:
    c = genai.Client(api_key=KEY, http_options={"base_url": up.gemini_base_url, **http_options})
    return tt.wrap(c, ledger=ledger) if ledger is not None else c


def cost(prices: PriceBook, counts: dict[str, int]) -> Decimal:
    c = tt.price(provider="google", model=GEMINI, book=prices, **counts)
    assert c is not None
    return c.total_usd.quantize(Decimal("1e-9"))


def check(ev: UsageEvent, prices: PriceBook, *, streamed: bool) -> None:
    assert (ev.provider, ev.model, ev.operation, ev.kind, ev.streamed, ev.status) == (
        "google",
        GEMINI,
        "generate_content",
        "llm",
        streamed,
        "ok",
    )
    assert counts_of(ev) == COUNTS
    assert ev.cost_usd == cost(prices, COUNTS)
    assert [(t.id, t.name, t.args_hash) for t in ev.tool_calls] == [
        (None, "search", args_hash({"q": "paris", "n": 3})),
        (None, "noop", args_hash({})),
    ]


def _outcome(fn: Callable[[], Any]) -> type[BaseException] | None:
    try:
        fn()
    except Exception as e:
        return type(e)
    return None


def generate(c: genai.Client) -> Any:
    return c.models.generate_content(model=GEMINI, contents="What is the capital of France?")


def generate_stream(c: genai.Client) -> list[Any]:
    return list(c.models.generate_content_stream(model=GEMINI, contents="What is the capital of France?"))


async def agenerate(c: genai.Client) -> Any:
    return await c.aio.models.generate_content(model=GEMINI, contents="What is the capital of France?")


async def agenerate_stream(c: genai.Client) -> list[Any]:
    stream = await c.aio.models.generate_content_stream(model=GEMINI, contents="What is the capital of France?")
    return [chunk async for chunk in stream]


# --------------------------------------------------------------------------- every entry point, once


@pytest.mark.parametrize(("call", "streamed"), [(generate, False), (generate_stream, True)], ids=["plain", "stream"])
def test_sync_entry_point_is_metered_once(
    call: Callable[[genai.Client], Any], streamed: bool, up: FakeUpstream, ledger: tt.Ledger, prices: PriceBook
) -> None:
    up.push(Reply(text="Paris is the capital.", tool_calls=CALLS, **SCRIPTED))
    c = client(up, ledger)
    with capture_events() as events:
        call(c)
    c.close()
    assert len(up.requests) == 1 and len(events) == 1
    check(events[0], prices, streamed=streamed)
    (ev,) = stored(ledger)
    assert ev.event_id == events[0].event_id
    check(ev, prices, streamed=streamed)


@pytest.mark.parametrize(
    ("call", "streamed"), [(agenerate, False), (agenerate_stream, True)], ids=["aio-plain", "aio-stream"]
)
def test_async_entry_point_is_metered_once(
    call: Callable[[genai.Client], Awaitable[Any]],
    streamed: bool,
    up: FakeUpstream,
    ledger: tt.Ledger,
    prices: PriceBook,
) -> None:
    up.push(Reply(text="Paris is the capital.", tool_calls=CALLS, **SCRIPTED))
    c = client(up, ledger)

    async def main() -> None:
        await call(c)
        await c.aio.aclose()

    with capture_events() as events:
        asyncio.run(main())
    assert len(up.requests) == 1 and len(events) == 1
    check(events[0], prices, streamed=streamed)
    assert [e.event_id for e in stored(ledger)] == [events[0].event_id]


def test_the_caller_sees_what_the_sdk_parses(up: FakeUpstream, ledger: tt.Ledger) -> None:
    reply = Reply(text="Paris is the capital.", **SCRIPTED)
    up.push(reply, reply)
    plain = generate_stream(client(up))
    metered = generate_stream(client(up, ledger))
    assert [m.model_dump(exclude={"response_id", "create_time", "sdk_http_response"}) for m in metered] == [
        p.model_dump(exclude={"response_id", "create_time", "sdk_http_response"}) for p in plain
    ]


# --------------------------------------------------------------------------- failures


@pytest.mark.parametrize(("status", "error"), [(429, genai_errors.ClientError), (500, genai_errors.ServerError)])
@pytest.mark.parametrize("call", [generate, generate_stream], ids=["plain", "stream"])
def test_error_status_raises_what_the_sdk_raises(
    status: int, error: type[Exception], call: Callable[[genai.Client], Any], up: FakeUpstream, ledger: tt.Ledger
) -> None:
    up.push(Reply(status=status), Reply(status=status))
    expected = _outcome(lambda: call(client(up)))
    with capture_events() as events:
        assert _outcome(lambda: call(client(up, ledger))) is expected is error
    (ev,) = events
    assert (ev.status, ev.model, ev.input_tokens, ev.streamed) == ("error", GEMINI, 0, call is generate_stream)
    assert str(status) in (ev.note or "")
    assert len(stored(ledger)) == 1


def test_retries_inside_the_sdk_are_one_event(up: FakeUpstream, ledger: tt.Ledger, prices: PriceBook) -> None:
    retry = genai_types.HttpRetryOptions(attempts=3, initial_delay=0.001, max_delay=0.001, jitter=0)
    up.push(Reply(status=429), Reply(status=503), Reply(text="Paris.", tool_calls=CALLS, **SCRIPTED))
    with capture_events() as events:
        generate(client(up, ledger, retry_options=retry))
    assert len(up.requests) == 3
    (ev,) = events
    check(ev, prices, streamed=False)


def test_timeout_is_an_error_event(up: FakeUpstream, ledger: tt.Ledger) -> None:
    up.push(Reply(delay_s=0.5), Reply(delay_s=0.5))
    expected = _outcome(lambda: generate(client(up, timeout=50)))  # milliseconds
    with capture_events() as events:
        assert _outcome(lambda: generate(client(up, ledger, timeout=50))) is expected
    assert expected is not None
    (ev,) = events
    assert ev.status == "error" and "Timeout" in (ev.note or "")


def test_stream_cut_by_the_server(up: FakeUpstream, ledger: tt.Ledger, prices: PriceBook) -> None:
    cut = Reply(text="one two three four", stream_chunks=4, cut_stream_after=2, **SCRIPTED)
    up.push(cut, cut)
    expected = _outcome(lambda: generate_stream(client(up)))
    with capture_events() as events:
        assert _outcome(lambda: generate_stream(client(up, ledger))) is expected
    assert expected is not None
    (ev,) = stored(ledger)
    assert ev.event_id == events[0].event_id
    # the chunks before the cut reported the prompt (and its cached part); the output is estimated
    # from the text relayed before the cut, "one two th" (10 bytes, tiktoken not at hand)
    assert (ev.status, ev.streamed, ev.usage_estimated) == ("error", True, True)
    assert counts_of(ev) == {"input_tokens": 1500, "cache_read_tokens": 1000, "output_tokens": 10}
    assert ev.cost_usd == cost(prices, counts_of(ev))


def test_stream_abandoned_by_the_caller_is_cancelled(up: FakeUpstream, ledger: tt.Ledger) -> None:
    up.push(Reply(text="one two three four", stream_chunks=4, chunk_delay_s=0.2, **SCRIPTED))
    c = client(up, ledger)
    with capture_events() as events:
        stream = c.models.generate_content_stream(model=GEMINI, contents="hi")
        for _ in stream:
            break
        stream.close()
    (ev,) = events
    assert (ev.status, ev.input_tokens) == ("cancelled", 1500)
    assert len(stored(ledger)) == 1


def test_async_task_cancelled_mid_stream(up: FakeUpstream, ledger: tt.Ledger) -> None:
    up.push(Reply(text="one two three four", stream_chunks=4, chunk_delay_s=0.5, **SCRIPTED))
    c = client(up, ledger)

    async def main() -> None:
        first = asyncio.Event()

        async def consume() -> None:
            async for _ in await c.aio.models.generate_content_stream(model=GEMINI, contents="hi"):
                first.set()

        task = asyncio.create_task(consume())
        await first.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await c.aio.aclose()

    with capture_events() as events:
        asyncio.run(main())
    (ev,) = events
    assert (ev.status, ev.input_tokens) == ("cancelled", 1500)
    assert len(stored(ledger)) == 1


# --------------------------------------------------------------------------- impossible usage


@pytest.mark.parametrize(
    ("raw_usage", "reason"),
    [
        ({"promptTokenCount": 10, "cachedContentTokenCount": 20, "candidatesTokenCount": 5}, "cache_exceeds_input"),
        ({"promptTokenCount": -10, "candidatesTokenCount": 5}, "negative:promptTokenCount"),
        ({"promptTokenCount": "12", "candidatesTokenCount": 5}, "non_integer:promptTokenCount"),
        ({"promptTokenCount": 12, "candidatesTokenCount": 5.0}, "non_integer:candidatesTokenCount"),
        ({"promptTokenCount": 12, "candidatesTokenCount": 5.5}, "non_integer:candidatesTokenCount"),
    ],
)
@pytest.mark.parametrize("call", [generate, generate_stream], ids=["plain", "stream"])
def test_impossible_usage_never_breaks_the_call(
    raw_usage: dict[str, Any], reason: str, call: Callable[[genai.Client], Any], up: FakeUpstream, ledger: tt.Ledger
) -> None:
    up.push(Reply(text="Paris.", raw_usage=raw_usage), Reply(text="Paris.", raw_usage=raw_usage))
    expected = _outcome(lambda: call(client(up)))
    with capture_events() as events:
        assert _outcome(lambda: call(client(up, ledger))) is expected
    # the SDK itself refuses a fractional count (pydantic), with or without tokentrail
    if raw_usage["candidatesTokenCount"] == 5.5:
        assert expected is not None and issubclass(expected, ValueError)
    else:
        assert expected is None
    (ev,) = stored(ledger)
    assert ev.event_id == events[0].event_id
    assert (ev.status, ev.cost_usd) == (f"invalid_usage:{reason}", None)


def test_session_and_step_attribution(up: FakeUpstream, ledger: tt.Ledger) -> None:
    c = client(up, ledger)

    async def both() -> None:
        await asyncio.gather(agenerate(c), agenerate_stream(c))
        await c.aio.aclose()

    with tt.session(agent="code-reviewer", team="eng", ledger=ledger) as s, tt.step("review") as step:
        generate_stream(c)
        asyncio.run(both())
    events = stored(ledger)
    assert len(events) == 3
    for ev in events:
        assert (ev.session_id, ev.agent, ev.team, ev.step, ev.parent_span_id) == (
            s.session_id,
            "code-reviewer",
            "eng",
            "review",
            step.span_id,
        )
    assert s.cost_usd == sum((e.cost_usd for e in events if e.cost_usd is not None), Decimal(0)) > 0
    assert s.tokens == sum(e.input_tokens + e.output_tokens for e in events)
