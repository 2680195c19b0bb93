"""integrations.wire: routes, the SSE parser, and what each provider's JSON or SSE says about usage
and tool calls. Frames come from FakeUpstream's builders, which match the real providers' bytes."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

import tokentrail as tt
from tokentrail.events import args_hash
from tokentrail.integrations.exchange import Exchange
from tokentrail.integrations.wire import (
    ANTHROPIC_MESSAGES,
    GEMINI,
    OPENAI_CHAT,
    OPENAI_EMBEDDINGS,
    OPENAI_RESPONSES,
    Accumulator,
    Route,
    SSEParser,
    gemini_model_from_path,
    route_for,
)
from tokentrail.testing import Reply, ToolCall
from tokentrail.testing import _fake_anthropic as fake_anthropic
from tokentrail.testing import _fake_gemini as fake_gemini
from tokentrail.testing import _fake_openai as fake_openai
from tokentrail.testing import _fake_wire as fake
from tokentrail.usage import Usage

CALLS = [ToolCall("search", {"q": "paris", "n": 3}, id="call_a"), ToolCall("noop", {}, id="call_b")]
USAGE = fake.Usage(input=1500, output=90, cached=1000, cache_write=0, reasoning=30)
EXPECTED = Usage(input_tokens=1500, output_tokens=90, cache_read_tokens=1000, reasoning_tokens=30)


def _ids() -> Any:
    counter = itertools.count(1)
    return lambda prefix: f"{prefix}{next(counter)}"


def _events(frames: list[bytes]) -> list[tuple[str | None, Any]]:
    """Decode whole frames with the parser, for feeding an Accumulator."""
    out = []
    for _, name, data in SSEParser().feed(b"".join(frames)):
        if data and data != "[DONE]":
            out.append((name, json.loads(data)))
    return out


def _feed(route: Route, frames: list[bytes]) -> Accumulator:
    acc = Accumulator(route)
    parser = SSEParser()
    for frame in frames:
        for _, name, data in parser.feed(frame):
            if data == "[DONE]":
                acc.done()
            elif data:
                acc.event(name, json.loads(data))
    return acc


# --------------------------------------------------------------------------- routes


@pytest.mark.parametrize(
    ("method", "path", "route"),
    [
        ("POST", "/v1/chat/completions", OPENAI_CHAT),
        ("POST", "/openai/deployments/gpt/chat/completions?api-version=2024-10-21", OPENAI_CHAT),
        ("POST", "/v1/responses", OPENAI_RESPONSES),
        ("POST", "/v1/embeddings/", OPENAI_EMBEDDINGS),
        ("POST", "/v1/messages?beta=true", ANTHROPIC_MESSAGES),
        ("post", "/v1/messages", ANTHROPIC_MESSAGES),
        ("POST", "/v1beta/models/gemini-2.5-flash:generateContent", GEMINI),
        ("POST", "models/gemini-2.5-flash:streamGenerateContent?alt=sse", GEMINI),
        ("GET", "/v1/chat/completions", None),
        ("GET", "/v1/models", None),
        ("POST", "/v1/files", None),
        ("POST", "/v1/messages/count_tokens", None),
        ("POST", "/v1/responses/resp_1/cancel", None),
        ("POST", "models/gemini-2.5-flash:countTokens", None),
    ],
)
def test_route_for(method: str, path: str, route: Route | None) -> None:
    assert route_for(method, path) is route


def test_gemini_model_from_path() -> None:
    assert gemini_model_from_path("/v1beta/models/gemini-2.5-flash:generateContent") == "gemini-2.5-flash"
    assert gemini_model_from_path("models/gemini-2.5-flash:streamGenerateContent?alt=sse") == "gemini-2.5-flash"
    assert gemini_model_from_path("/v1/chat/completions") is None


# --------------------------------------------------------------------------- SSE parser

STREAM = (
    b"event: message_start\n"
    b'data: {"a": 1}\n'
    b"\n"
    b": a comment line\n"
    b"data:no-space\n"
    b"data: second line\n"
    b"\n"
    b"event: ping\n"
    b"data: {}\n"
    b"\n"
    b"data: [DONE]\n"
    b"\n"
)
PARSED = [("message_start", '{"a": 1}'), (None, "no-space\nsecond line"), ("ping", "{}"), (None, "[DONE]")]


def _parse(chunks: list[bytes]) -> tuple[list[tuple[str | None, str]], bytes]:
    parser = SSEParser()
    events, raw = [], b""
    for feed in [*(lambda c=c: parser.feed(c) for c in chunks), parser.flush]:
        for r, name, data in feed():
            events.append((name, data))
            raw += r
    return events, raw + parser.tail()


def test_sse_whole_stream() -> None:
    events, raw = _parse([STREAM])
    assert events == PARSED
    assert raw == STREAM  # with \n framing the raw bytes pass through unchanged


@pytest.mark.parametrize("framing", [b"\n", b"\r\n", b"\r"])
def test_sse_split_at_every_byte_boundary(framing: bytes) -> None:
    stream = STREAM.replace(b"\n", framing)
    for cut in range(len(stream) + 1):
        assert _parse([stream[:cut], stream[cut:]])[0] == PARSED, (framing, cut)
    for first, second in itertools.combinations(range(0, len(stream), 7), 2):
        assert _parse([stream[:first], stream[first:second], stream[second:]])[0] == PARSED
    assert _parse([stream[i : i + 1] for i in range(len(stream))])[0] == PARSED


def test_sse_carriage_return_at_a_chunk_end_is_not_a_blank_line() -> None:
    # "\r" then "\n" in the next chunk is one line break, not two
    assert _parse([b"data: x\r", b"\ndata: y\r\n\r\n"])[0] == [(None, "x\ny")]
    assert _parse([b"data: x\r\n\r", b"\n"])[0] == [(None, "x")]
    assert _parse([b"data: x\r", b"\r"])[0] == [(None, "x")]  # lone \r line endings
    assert _parse([b"\r", b"\ndata: x\n\n"])[0] == [(None, "x")]


def test_sse_unfinished_event_is_the_tail() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: 1\n\ndata: 2") == [(b"data: 1\n\n", None, "1")]
    assert parser.flush() == []
    assert parser.tail() == b"data: 2"  # never dispatched (the SDKs drop it too), forwarded as it was


def test_sse_a_carriage_return_held_back_at_the_end_of_the_stream_ends_its_event() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: 1\r\r") == []  # the last "\r" might be half of "\r\n"
    assert [(name, data) for _, name, data in parser.flush()] == [(None, "1")]
    assert parser.tail() == b""


@pytest.mark.parametrize(
    "frames",
    [
        fake_gemini.gemini_sse(Reply(text="a b c", tool_calls=CALLS), USAGE, "gemini-2.5-flash", _ids()),
        fake_anthropic.anthropic_sse(Reply(text="a b c", tool_calls=CALLS), USAGE, "claude-sonnet-4-6", _ids()),
        fake_openai.openai_chat_sse(Reply(text="a b c", tool_calls=CALLS), USAGE, "gpt-4o-mini", _ids(), True),
    ],
    ids=["gemini-crlf", "anthropic", "openai"],
)
def test_sse_provider_streams_split_at_every_boundary(frames: list[bytes]) -> None:
    stream = b"".join(frames)
    whole, _ = _parse([stream])
    assert len(whole) == len(frames)
    for cut in range(len(stream) + 1):
        assert _parse([stream[:cut], stream[cut:]])[0] == whole


# --------------------------------------------------------------------------- OpenAI chat


def test_openai_chat_body() -> None:
    body = json.loads(fake_openai.openai_chat(Reply(tool_calls=CALLS), USAGE, "gpt-4o-mini-2024-07-18", _ids()))
    acc = Accumulator(OPENAI_CHAT, model="gpt-4o-mini")
    acc.body(body)
    assert acc.model == "gpt-4o-mini-2024-07-18"  # the model that answered
    assert acc.usage() == (EXPECTED, None)
    assert acc.complete
    assert [(t.id, t.name, t.args_hash) for t in acc.tool_calls()] == [
        ("call_a", "search", args_hash({"n": 3, "q": "paris"})),
        ("call_b", "noop", args_hash({})),
    ]


def test_openai_chat_stream_assembles_tool_call_argument_deltas() -> None:
    reply = Reply(text="", tool_calls=CALLS)
    frames = fake_openai.openai_chat_sse(reply, USAGE, "gpt-4o-mini", _ids(), include_usage=True)
    # the arguments of the first call arrive in pieces, over several chunks
    assert sum(b'"arguments":"' in f and b'"name"' not in f for f in frames) >= 2
    acc = _feed(OPENAI_CHAT, frames)
    assert acc.usage() == (EXPECTED, None)
    assert acc.complete
    body = json.loads(fake_openai.openai_chat(reply, USAGE, "gpt-4o-mini", _ids()))
    whole = Accumulator(OPENAI_CHAT)
    whole.body(body)
    assert acc.tool_calls() == whole.tool_calls()


def test_openai_chat_stream_without_usage_is_missing_usage_only_when_complete() -> None:
    frames = fake_openai.openai_chat_sse(Reply(), USAGE, "gpt-4o-mini", _ids(), include_usage=False)
    assert _feed(OPENAI_CHAT, frames[:-1]).usage() == (None, None)  # cut before [DONE]: nothing impossible
    assert _feed(OPENAI_CHAT, frames).usage() == (None, "missing_usage")


def test_args_hash_is_stable_across_spacing_and_key_order() -> None:
    assert args_hash('{"q": "paris", "n": 3}') == args_hash('{"n":3,"q":"paris"}') == args_hash({"n": 3, "q": "paris"})


# --------------------------------------------------------------------------- OpenAI responses


def test_openai_responses_body_and_stream() -> None:
    reply = Reply(text="Paris.", tool_calls=CALLS)
    body = json.loads(fake_openai.openai_response(reply, USAGE, "gpt-4o-mini", _ids(), {}))
    whole = Accumulator(OPENAI_RESPONSES)
    whole.body(body)
    assert whole.usage() == (EXPECTED, None)
    frames = fake_openai.openai_response_sse(reply, USAGE, "gpt-4o-mini", _ids(), {})
    acc = _feed(OPENAI_RESPONSES, frames)
    assert acc.usage() == (EXPECTED, None) and acc.complete
    assert acc.tool_calls() == whole.tool_calls()
    assert [t.name for t in acc.tool_calls()] == ["search", "noop"]


def test_openai_responses_cut_stream_keeps_finished_tool_calls_and_no_usage() -> None:
    frames = fake_openai.openai_response_sse(Reply(text="", tool_calls=CALLS), USAGE, "gpt-4o-mini", _ids(), {})
    acc = _feed(OPENAI_RESPONSES, frames[:-1])  # no response.completed
    assert acc.usage() == (None, None) and not acc.complete
    assert [t.name for t in acc.tool_calls()] == ["search", "noop"]


def test_openai_responses_failed_and_error_events() -> None:
    acc = Accumulator(OPENAI_RESPONSES)
    failed = {"status": "failed", "error": {"code": "server_error"}, "usage": None, "model": "gpt-4o-mini"}
    acc.event("response.failed", {"type": "response.failed", "response": failed})
    assert acc.error_type == "server_error" and acc.usage() == (None, None)
    acc = Accumulator(OPENAI_RESPONSES)
    acc.event("error", {"type": "error", "code": "rate_limit_exceeded", "message": "slow down"})
    assert acc.error_type == "rate_limit_exceeded"


# --------------------------------------------------------------------------- Anthropic


def test_anthropic_body_adds_cache_to_input() -> None:
    u = fake.Usage(input=1500, output=90, cached=1000, cache_write=200, reasoning=30)
    acc = Accumulator(ANTHROPIC_MESSAGES)
    acc.body(json.loads(fake_anthropic.anthropic_message(Reply(tool_calls=CALLS), u, "claude-sonnet-4-6", _ids())))
    usage, problem = acc.usage()
    assert problem is None and usage is not None
    assert (usage.input_tokens, usage.cache_read_tokens, usage.cache_write_tokens) == (1500, 1000, 200)
    assert [t.name for t in acc.tool_calls()] == ["search", "noop"]


def test_anthropic_stream_message_delta_is_cumulative_take_the_last() -> None:
    acc = Accumulator(ANTHROPIC_MESSAGES)
    start_usage = {"input_tokens": 500, "cache_read_input_tokens": 1000, "output_tokens": 1}
    acc.event(
        "message_start", {"type": "message_start", "message": {"model": "claude-sonnet-4-6", "usage": start_usage}}
    )
    assert acc.usage()[0] == Usage(input_tokens=1500, output_tokens=1, cache_read_tokens=1000)
    acc.event("message_delta", {"type": "message_delta", "delta": {}, "usage": {"output_tokens": 40}})
    acc.event("message_delta", {"type": "message_delta", "delta": {}, "usage": {"output_tokens": 90}})
    # a later delta may repeat the input counts: still the last value, never a sum
    acc.event(
        "message_delta", {"type": "message_delta", "delta": {}, "usage": {"input_tokens": 500, "output_tokens": 90}}
    )
    acc.event("message_stop", {"type": "message_stop"})
    assert acc.usage() == (Usage(input_tokens=1500, output_tokens=90, cache_read_tokens=1000), None)
    assert acc.complete and acc.model == "claude-sonnet-4-6"


def test_anthropic_stream_tool_input_deltas_and_cut_stream() -> None:
    reply = Reply(text="Looking.", tool_calls=CALLS)
    frames = fake_anthropic.anthropic_sse(reply, USAGE, "claude-sonnet-4-6", _ids())
    acc = _feed(ANTHROPIC_MESSAGES, frames)
    whole = Accumulator(ANTHROPIC_MESSAGES)
    whole.body(json.loads(fake_anthropic.anthropic_message(reply, USAGE, "claude-sonnet-4-6", _ids())))
    assert [(t.name, t.args_hash) for t in acc.tool_calls()] == [(t.name, t.args_hash) for t in whole.tool_calls()]
    assert acc.usage() == (EXPECTED, None)
    # cut right after message_start: the input counts are known, the output is what message_start said
    no_thinking = USAGE._replace(reasoning=0)
    cut = _feed(ANTHROPIC_MESSAGES, fake_anthropic.anthropic_sse(reply, no_thinking, "claude-sonnet-4-6", _ids())[:1])
    assert not cut.complete
    assert cut.usage() == (Usage(input_tokens=1500, output_tokens=1, cache_read_tokens=1000), None)


def test_anthropic_tool_with_complete_input_in_content_block_start() -> None:
    acc = Accumulator(ANTHROPIC_MESSAGES)
    block = {"type": "tool_use", "id": "toolu_1", "name": "search", "input": {"q": "x"}}
    acc.event("content_block_start", {"type": "content_block_start", "index": 0, "content_block": block})
    assert [(t.id, t.args_hash) for t in acc.tool_calls()] == [("toolu_1", args_hash({"q": "x"}))]


def test_anthropic_error_event() -> None:
    acc = Accumulator(ANTHROPIC_MESSAGES)
    acc.event("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    assert acc.error_type == "overloaded_error"


# --------------------------------------------------------------------------- Gemini


def test_gemini_body_and_stream() -> None:
    reply = Reply(text="a b c d", tool_calls=CALLS)
    whole = Accumulator(GEMINI)
    whole.body(json.loads(fake_gemini.gemini_response(reply, USAGE, "gemini-2.5-flash", _ids())))
    assert whole.usage() == (EXPECTED, None) and whole.model == "gemini-2.5-flash"
    frames = fake_gemini.gemini_sse(reply, USAGE, "gemini-2.5-flash", _ids())
    acc = _feed(GEMINI, frames)
    assert acc.usage() == (EXPECTED, None)  # early chunks carry a running prompt count; the last one wins
    assert acc.complete  # the last chunk has a finishReason
    assert [(t.name, t.args_hash) for t in acc.tool_calls()] == [(t.name, t.args_hash) for t in whole.tool_calls()]
    partial = _feed(GEMINI, frames[:1])
    assert not partial.complete
    assert partial.usage() == (Usage(input_tokens=1500, cache_read_tokens=1000), None)


def test_gemini_snake_case_usage_is_read_too() -> None:
    acc = Accumulator(GEMINI)
    acc.event(
        None, {"usageMetadata": {"prompt_token_count": 10, "candidates_token_count": 5, "thoughts_token_count": 2}}
    )
    assert acc.usage()[0] == Usage(input_tokens=10, output_tokens=7, reasoning_tokens=2)


def test_error_bodies() -> None:
    for route, body in [
        (OPENAI_CHAT, fake_openai.openai_error(429, "slow")),
        (ANTHROPIC_MESSAGES, fake_anthropic.anthropic_error(529, "busy", "req_1")),
        (GEMINI, fake_gemini.gemini_error(429, "slow")),
    ]:
        acc = Accumulator(route)
        acc.body(json.loads(body))
        assert acc.error_type in ("requests", "overloaded_error", "RESOURCE_EXHAUSTED")
        assert acc.usage() == (None, None)  # an error is not missing usage


# --------------------------------------------------------------------------- impossible usage


@pytest.mark.parametrize(
    ("route", "raw", "reason"),
    [
        (OPENAI_CHAT, {"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 20}}, "cache_exceeds_input"),
        (OPENAI_CHAT, {"prompt_tokens": -1}, "negative:prompt_tokens"),
        (OPENAI_CHAT, {"prompt_tokens": "12"}, "non_integer:prompt_tokens"),
        (OPENAI_RESPONSES, {"input_tokens": 1.5}, "non_integer:input_tokens"),
        (ANTHROPIC_MESSAGES, {"input_tokens": 1, "output_tokens": -3}, "negative:output_tokens"),
        (GEMINI, {"promptTokenCount": 1, "cachedContentTokenCount": 5}, "cache_exceeds_input"),
        (OPENAI_CHAT, [1, 2], "not_an_object"),
    ],
)
def test_impossible_usage_has_a_reason(route: Route, raw: Any, reason: str) -> None:
    acc = Accumulator(route)
    acc.usage_raw = raw
    assert acc.usage() == (None, reason)


# --------------------------------------------------------------------------- hiding the usage chunk


def test_hidden_usage_chunk_gives_the_bytes_of_a_stream_that_never_asked(ledger: tt.Ledger) -> None:
    """What the caller gets, fed in two chunks cut at every boundary, is byte for byte the stream
    the provider sends to a caller who did not ask for usage."""
    reply = Reply(text="The capital of France is Paris.", tool_calls=CALLS[:1])
    asked = b"".join(fake_openai.openai_chat_sse(reply, USAGE, "gpt-4o-mini", _ids(), include_usage=True))
    not_asked = b"".join(fake_openai.openai_chat_sse(reply, USAGE, "gpt-4o-mini", _ids(), include_usage=False))
    for cut in range(len(asked) + 1):
        ex = Exchange(ledger, OPENAI_CHAT, {"model": "gpt-4o-mini", "stream": True})
        assert ex.prepared_body() == {"model": "gpt-4o-mini", "stream": True, "stream_options": {"include_usage": True}}
        ex.response(200, "text/event-stream; charset=utf-8")
        out = ex.chunk(asked[:cut]) + ex.chunk(asked[cut:]) + ex.stream_tail()
        assert out == not_asked, cut
        assert ex.acc.usage() == (EXPECTED, None)


def test_a_caller_who_asked_for_usage_gets_the_stream_unchanged(ledger: tt.Ledger) -> None:
    ex = Exchange(ledger, OPENAI_CHAT, {"stream": True, "stream_options": {"include_usage": True}})
    assert ex.prepared_body() is None
    ex.response(200, "text/event-stream")
    asked = b"".join(fake_openai.openai_chat_sse(Reply(), USAGE, "gpt-4o-mini", _ids(), include_usage=True))
    assert ex.chunk(asked[:100]) + ex.chunk(asked[100:]) == asked


def test_prepared_body_keeps_other_stream_options() -> None:
    ledger: Any = None  # no ledger, so no budget to reserve on
    body = {"stream": True, "stream_options": {"include_usage": False, "x": 1}}
    ex = Exchange(ledger, OPENAI_CHAT, body, reserve=False)
    assert ex.prepared_body() == {"stream": True, "stream_options": {"include_usage": True, "x": 1}}
    assert ex.hide_usage_chunk
    assert Exchange(ledger, OPENAI_CHAT, {"stream": False}, reserve=False).prepared_body() is None
    assert Exchange(ledger, OPENAI_RESPONSES, {"stream": True}, reserve=False).prepared_body() is None
