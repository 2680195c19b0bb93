"""FakeUpstream against the real, unmodified openai / anthropic / google-genai SDKs."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import struct
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
import anthropic
import httpx2
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types
from pydantic import BaseModel

from tokentrail.testing import FakeUpstream, Reply, ToolCall
from tokentrail.testing.fake_upstream import ReceivedRequest

OPENAI_MODEL = "gpt-4o-mini"
CLAUDE_MODEL = "claude-sonnet-4-6"
GEMINI_MODEL = "gemini-2.5-flash"
MESSAGES: list[Any] = [{"role": "user", "content": "What is the capital of France?"}]
OPENAI_KEY = "sk-test-secret-0123456789"
ANTHROPIC_KEY = "sk-ant-test-secret-0123456789"
GEMINI_KEY = "gemini-test-secret-0123456789"

# google-genai's async client defines a ClientSession subclass, which aiohttp >= 3.14 flags.
AIOHTTP_SUBCLASS_WARNING = "ignore:Inheritance class AiohttpClientSession from ClientSession:DeprecationWarning"

# Inclusive tokentrail numbers used by most usage tests.
SCRIPTED = {"input_tokens": 1500, "output_tokens": 90, "cached_tokens": 1000, "reasoning_tokens": 30}


@pytest.fixture
def up(server: FakeUpstream, caplog: pytest.LogCaptureFixture) -> Iterator[FakeUpstream]:
    server.reset()
    with caplog.at_level(logging.WARNING, logger="aiohttp"):
        yield server
    server_errors = [r for r in caplog.records if r.name.startswith("aiohttp")]
    assert not server_errors, [r.getMessage() for r in server_errors]


@pytest.fixture
def oai(up: FakeUpstream) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=up.openai_base_url, api_key=OPENAI_KEY, max_retries=0) as client:
        yield client


@pytest.fixture
def claude(up: FakeUpstream) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=up.anthropic_base_url, api_key=ANTHROPIC_KEY, max_retries=0) as client:
        yield client


@pytest.fixture
def gemini(up: FakeUpstream) -> Iterator[genai.Client]:
    client = genai.Client(api_key=GEMINI_KEY, http_options={"base_url": up.gemini_base_url})
    yield client
    client.close()


def _claude_create(client: anthropic.Anthropic, **kwargs: Any) -> Any:
    return client.messages.create(model=CLAUDE_MODEL, max_tokens=256, messages=MESSAGES, **kwargs)


# --------------------------------------------------------------------------- lifecycle and plumbing


def test_lifecycle_and_urls() -> None:
    up = FakeUpstream()
    with pytest.raises(RuntimeError):
        _ = up.url
    assert up.start() is up
    try:
        assert up.url == f"http://127.0.0.1:{up.port}"
        assert up.port > 0
        assert up.openai_base_url == up.url + "/v1"
        assert up.anthropic_base_url == up.url == up.gemini_base_url
        with httpx2.Client() as http:
            assert http.post(up.openai_base_url + "/chat/completions", json={"model": "m", "messages": []}).is_success
    finally:
        up.stop()
    up.stop()  # idempotent
    with pytest.raises(RuntimeError):
        _ = up.url
    with pytest.raises(httpx2.ConnectError), httpx2.Client() as http:
        http.post(f"http://127.0.0.1:{up.port}/v1/chat/completions", json={})


def test_two_servers_run_side_by_side() -> None:
    with FakeUpstream() as a, FakeUpstream() as b:
        assert a.port != b.port
        a.default = Reply(text="from a")
        with httpx2.Client() as http:
            body = {"model": "m", "messages": MESSAGES}
            assert http.post(a.url + "/v1/chat/completions", json=body).json()["choices"][0]["message"]["content"] == (
                "from a"
            )
            assert http.post(b.url + "/v1/chat/completions", json=body).json()["choices"][0]["message"]["content"] == (
                "Hello from FakeUpstream."
            )


def test_fifo_then_default_then_responder(up: FakeUpstream, oai: openai.OpenAI) -> None:
    def ask() -> str | None:
        return oai.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES).choices[0].message.content

    up.push(Reply(text="one"), Reply(text="two"))
    up.default = Reply(text="fallback")
    assert [ask(), ask(), ask()] == ["one", "two", "fallback"]

    seen: list[ReceivedRequest] = []

    def responder(request: ReceivedRequest) -> Reply | None:
        seen.append(request)
        return Reply(text="from responder") if "special" in request.body.decode() else None

    up.responder = responder
    up.push(Reply(text="queued"))
    assert oai.chat.completions.create(model=OPENAI_MODEL, messages=[{"role": "user", "content": "special"}]).choices[
        0
    ].message.content == ("from responder")
    assert ask() == "queued"  # the responder declined, so the FIFO answered
    assert len(seen) == 2 and seen[0].provider == "openai" and seen[0].model == OPENAI_MODEL

    up.reset()
    assert up.requests == [] and up.responder is None
    assert ask() == "Hello from FakeUpstream."


def test_async_responder(up: FakeUpstream, oai: openai.OpenAI) -> None:
    async def responder(request: ReceivedRequest) -> Reply:
        await asyncio.sleep(0)
        return Reply(text=f"model was {request.model}")

    up.responder = responder
    assert oai.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES).choices[0].message.content == (
        f"model was {OPENAI_MODEL}"
    )


def test_received_requests_are_recorded_and_secrets_hidden(
    up: FakeUpstream, oai: openai.OpenAI, claude: anthropic.Anthropic, gemini: genai.Client
) -> None:
    raw = oai.chat.completions.with_raw_response.create(model=OPENAI_MODEL, messages=MESSAGES)
    assert OPENAI_KEY not in raw.http_response.text
    assert raw.headers["x-request-id"].startswith("req_")
    _claude_create(claude)
    gemini.models.generate_content(model=GEMINI_MODEL, contents="hello")

    chat, messages, gen = up.requests
    assert (chat.method, chat.path, chat.provider, chat.stream) == (
        "POST",
        "/v1/chat/completions",
        "openai",
        False,
    )
    assert chat.json["messages"] == MESSAGES and json.loads(chat.body) == chat.json
    assert chat.headers["authorization"] == f"Bearer {OPENAI_KEY}"  # available to tests ...
    assert all(name == name.lower() for name in chat.headers)
    # anthropic 2.x sends the key as a bearer token (older versions used x-api-key)
    claude_key = messages.headers.get("x-api-key") or messages.headers["authorization"].removeprefix("Bearer ")
    assert claude_key == ANTHROPIC_KEY and messages.provider == "anthropic"
    assert "anthropic-version" in messages.headers
    assert gen.path == f"/v1/models/{GEMINI_MODEL}:generateContent" and gen.model == GEMINI_MODEL
    assert gen.headers["x-goog-api-key"] == GEMINI_KEY
    for request in up.requests:  # ... but never shown by repr
        text = repr(request)
        assert OPENAI_KEY not in text and ANTHROPIC_KEY not in text and GEMINI_KEY not in text
        assert "<redacted>" in text


def test_unknown_route_and_bad_json(up: FakeUpstream, oai: openai.OpenAI) -> None:
    up.push(Reply(text="kept for later"))
    with httpx2.Client() as http:
        missing = http.post(up.url + "/v1/nothing-here", json={})
        assert missing.status_code == 404
        assert missing.json() == {
            "error": {
                "message": "Invalid URL (POST /v1/nothing-here)",
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        }
        assert http.get(up.url + "/v1/chat/completions").status_code == 404
        bad = http.post(up.url + "/v1/messages", content=b"{not json", headers={"content-type": "application/json"})
        assert bad.status_code == 400 and bad.json()["type"] == "error"
    with pytest.raises(openai.NotFoundError):
        oai.models.list()
    assert oai.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES).choices[0].message.content == (
        "kept for later"
    )
    assert [r.provider for r in up.requests] == [None, None, "anthropic", None, "openai"]


def test_derived_token_counts_are_deterministic(up: FakeUpstream, oai: openai.OpenAI) -> None:
    messages: Any = [{"role": "system", "content": "x" * 400}, {"role": "user", "content": "y" * 40}]
    up.default = Reply(text="one two three", cached_tokens=50, reasoning_tokens=4)
    usage = oai.chat.completions.create(model=OPENAI_MODEL, messages=messages).usage
    assert usage is not None
    # (440 bytes // 4 + 8 per message) + cached ; 3 words + reasoning
    assert (usage.prompt_tokens, usage.completion_tokens) == (110 + 16 + 50, 3 + 4)
    again = oai.chat.completions.create(model=OPENAI_MODEL, messages=messages).usage
    assert again == usage


def test_delays(up: FakeUpstream, oai: openai.OpenAI) -> None:
    up.push(Reply(delay_s=0.2), Reply(chunk_delay_s=0.05, stream_chunks=4))
    started = time.perf_counter()
    oai.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES)
    assert time.perf_counter() - started >= 0.2
    started = time.perf_counter()
    chunks = list(oai.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES, stream=True))
    assert time.perf_counter() - started >= 0.05 * (len(chunks) - 1)


# --------------------------------------------------------------------------- OpenAI chat


def test_openai_chat_usage_and_model(up: FakeUpstream, oai: openai.OpenAI) -> None:
    up.push(Reply(text="Paris.", model="gpt-4o-mini-2024-07-18", **SCRIPTED))
    completion = oai.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES)
    assert completion.model == "gpt-4o-mini-2024-07-18"
    assert completion.choices[0].message.content == "Paris."
    assert completion.choices[0].finish_reason == "stop"
    usage = completion.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (1500, 90, 1590)
    assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.cached_tokens == 1000
    assert usage.completion_tokens_details is not None and usage.completion_tokens_details.reasoning_tokens == 30
    # echo the request's model by default
    assert oai.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES).model == OPENAI_MODEL


def test_openai_chat_tool_calls(up: FakeUpstream, oai: openai.OpenAI) -> None:
    up.push(Reply(text="", tool_calls=[ToolCall("get_weather", {"city": "Paris"}), ToolCall("noop", {}, id="mine")]))
    message = oai.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES).choices[0]
    assert message.finish_reason == "tool_calls"
    calls = message.message.tool_calls
    assert calls is not None and message.message.content is None
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [  # type: ignore[union-attr]
        ("get_weather", {"city": "Paris"}),
        ("noop", {}),
    ]
    assert calls[0].id.startswith("call_") and calls[1].id == "mine"


def test_openai_chat_stream_without_usage_has_no_usage_at_all(up: FakeUpstream, oai: openai.OpenAI) -> None:
    up.push(Reply(text="The capital of France is Paris.", stream_chunks=4, **SCRIPTED))
    chunks = list(oai.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES, stream=True))
    assert all(c.choices for c in chunks)  # no usage-only chunk
    assert all("usage" not in c.model_fields_set for c in chunks)  # not even "usage": null
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "The capital of France is Paris."
    assert len([c for c in chunks if c.choices[0].delta.content]) == 4
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert up.requests[-1].stream


def test_openai_chat_stream_with_include_usage(up: FakeUpstream, oai: openai.OpenAI) -> None:
    up.push(Reply(text="Paris.", **SCRIPTED))
    stream = oai.chat.completions.create(
        model=OPENAI_MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    *body, last = chunks
    assert all(c.usage is None and "usage" in c.model_fields_set for c in body)  # "usage": null
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (
        1500,
        90,
        1590,
    )
    assert last.usage.prompt_tokens_details is not None and last.usage.prompt_tokens_details.cached_tokens == 1000


def test_openai_chat_stream_tool_calls_and_helper(up: FakeUpstream, oai: openai.OpenAI) -> None:
    calls = [ToolCall("search", {"q": "paris", "n": 3}), ToolCall("fetch", {"url": "https://example.com"})]
    up.push(Reply(text="Let me look.", tool_calls=calls, **SCRIPTED))
    with oai.chat.completions.stream(
        model=OPENAI_MODEL, messages=MESSAGES, stream_options={"include_usage": True}
    ) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_completion()
    assert "content.delta" in events and "tool_calls.function.arguments.done" in events
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == "Let me look."
    assert choice.message.tool_calls is not None
    assert [(c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls] == [
        ("search", {"q": "paris", "n": 3}),
        ("fetch", {"url": "https://example.com"}),
    ]
    assert final.usage is not None and final.usage.completion_tokens == 90


def test_openai_chat_parse_with_pydantic(up: FakeUpstream, oai: openai.OpenAI) -> None:
    class City(BaseModel):
        name: str
        population: int

    up.push(Reply(text='{"name": "Paris", "population": 2100000}'))
    parsed = oai.chat.completions.parse(model=OPENAI_MODEL, messages=MESSAGES, response_format=City)
    assert parsed.choices[0].message.parsed == City(name="Paris", population=2100000)
    assert up.requests[-1].json["response_format"]["type"] == "json_schema"


def test_openai_chat_async(up: FakeUpstream) -> None:
    async def main() -> tuple[Any, list[Any]]:
        async with openai.AsyncOpenAI(base_url=up.openai_base_url, api_key=OPENAI_KEY, max_retries=0) as client:
            plain = await client.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES)
            stream = await client.chat.completions.create(
                model=OPENAI_MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
            )
            return plain, [chunk async for chunk in stream]

    up.push(Reply(text="Paris.", **SCRIPTED), Reply(text="Paris again.", **SCRIPTED))
    plain, chunks = asyncio.run(main())
    assert plain.usage.prompt_tokens == 1500
    assert chunks[-1].usage.completion_tokens == 90
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Paris again."


# --------------------------------------------------------------------------- OpenAI responses


def _check_response_usage(usage: Any) -> None:
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (1500, 90, 1590)
    assert usage.input_tokens_details.cached_tokens == 1000
    assert usage.output_tokens_details.reasoning_tokens == 30


def test_openai_responses_create(up: FakeUpstream, oai: openai.OpenAI) -> None:
    up.push(Reply(text="Paris.", tool_calls=[ToolCall("lookup", {"city": "Paris"})], **SCRIPTED))
    response = oai.responses.create(model=OPENAI_MODEL, input="Capital of France?", instructions="Be brief.")
    assert response.status == "completed" and response.model == OPENAI_MODEL
    assert response.output_text == "Paris."
    call = response.output[1]
    assert call.type == "function_call"
    assert (call.name, json.loads(call.arguments), call.call_id.startswith("call_")) == (
        "lookup",
        {"city": "Paris"},
        True,
    )
    assert response.instructions == "Be brief."
    _check_response_usage(response.usage)


def test_openai_responses_stream_raw_events(up: FakeUpstream, oai: openai.OpenAI) -> None:
    up.push(Reply(text="Paris is the capital.", tool_calls=[ToolCall("lookup", {"city": "Paris"})], **SCRIPTED))
    events = list(oai.responses.create(model=OPENAI_MODEL, input="Capital?", stream=True))
    types = [e.type for e in events]
    assert types[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert types[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "response.function_call_arguments.done" in types
    assert all(getattr(e, "response", None) is None or e.response.usage is None for e in events[:-1])
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "Paris is the capital."
    _check_response_usage(events[-1].response.usage)  # type: ignore[union-attr]


def test_openai_responses_stream_helper_and_parse(up: FakeUpstream, oai: openai.OpenAI) -> None:
    class Answer(BaseModel):
        city: str

    up.push(Reply(text='{"city": "Paris"}', **SCRIPTED), Reply(text='{"city": "Lyon"}'))
    with oai.responses.stream(model=OPENAI_MODEL, input="Capital?", text_format=Answer) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == '{"city": "Paris"}'
    assert final.output_parsed == Answer(city="Paris")
    _check_response_usage(final.usage)
    parsed = oai.responses.parse(model=OPENAI_MODEL, input="Second city?", text_format=Answer)
    assert parsed.output_parsed == Answer(city="Lyon")


def test_openai_responses_async(up: FakeUpstream) -> None:
    async def main() -> tuple[Any, Any]:
        async with openai.AsyncOpenAI(base_url=up.openai_base_url, api_key=OPENAI_KEY, max_retries=0) as client:
            plain = await client.responses.create(model=OPENAI_MODEL, input="hi")
            async with client.responses.stream(model=OPENAI_MODEL, input="hi") as stream:
                final = await stream.get_final_response()
            return plain, final

    up.push(Reply(**SCRIPTED), Reply(**SCRIPTED))
    plain, final = asyncio.run(main())
    _check_response_usage(plain.usage)
    _check_response_usage(final.usage)


# --------------------------------------------------------------------------- OpenAI embeddings


def test_openai_embeddings(up: FakeUpstream, oai: openai.OpenAI) -> None:
    up.push(Reply(input_tokens=42))
    default = oai.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta"])
    assert up.requests[-1].json["encoding_format"] == "base64"  # what the SDK asks for by default
    assert [len(d.embedding) for d in default.data] == [8, 8] and [d.index for d in default.data] == [0, 1]
    assert (default.usage.prompt_tokens, default.usage.total_tokens) == (42, 42)

    floats = oai.embeddings.create(model="text-embedding-3-small", input="alpha", encoding_format="float")
    assert floats.data[0].embedding == default.data[0].embedding  # deterministic, float32-exact
    assert abs(sum(v * v for v in floats.data[0].embedding) - 1) < 1e-5
    assert floats.usage.prompt_tokens == 1  # derived: max(1, 5 bytes // 4)

    raw = oai.embeddings.create(model="text-embedding-3-small", input="alpha", encoding_format="base64")
    encoded = raw.data[0].embedding
    assert isinstance(encoded, str)
    assert list(struct.unpack("<8f", base64.b64decode(encoded))) == floats.data[0].embedding

    sized = oai.embeddings.create(model="text-embedding-3-small", input=[[1, 2, 3]], dimensions=16)
    assert len(sized.data[0].embedding) == 16 and sized.usage.prompt_tokens == 3


# --------------------------------------------------------------------------- Anthropic


ANTHROPIC_SCRIPTED = {**SCRIPTED, "cache_write_tokens": 200}


def _check_anthropic_usage(usage: Any) -> None:
    # inclusive 1500 = 300 fresh + 1000 cache reads + 200 cache writes
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (
        300,
        1000,
        200,
    )
    assert usage.output_tokens == 90


def test_anthropic_messages_create(up: FakeUpstream, claude: anthropic.Anthropic) -> None:
    up.push(Reply(text="Paris.", **ANTHROPIC_SCRIPTED))
    raw = claude.messages.with_raw_response.create(model=CLAUDE_MODEL, max_tokens=256, messages=MESSAGES)
    assert raw.headers["request-id"].startswith("req_")
    message = raw.parse()
    assert message.content[0].type == "text" and message.content[0].text == "Paris."
    assert message.stop_reason == "end_turn" and message.model == CLAUDE_MODEL
    _check_anthropic_usage(message.usage)
    assert message.usage.output_tokens_details is not None
    assert message.usage.output_tokens_details.thinking_tokens == 30


def test_anthropic_tool_use(up: FakeUpstream, claude: anthropic.Anthropic) -> None:
    up.push(Reply(text="Checking.", tool_calls=[ToolCall("get_weather", {"city": "Paris", "unit": "C"})]))
    message = _claude_create(claude)
    assert message.stop_reason == "tool_use"
    text, tool = message.content
    assert text.type == "text" and tool.type == "tool_use"
    assert tool.id.startswith("toolu_") and tool.name == "get_weather" and tool.input == {"city": "Paris", "unit": "C"}


def test_anthropic_raw_stream_events(up: FakeUpstream, claude: anthropic.Anthropic) -> None:
    up.push(Reply(text="Paris is nice.", tool_calls=[ToolCall("f", {"x": [1, 2]})], **ANTHROPIC_SCRIPTED))
    events = list(_claude_create(claude, stream=True))
    types = [e.type for e in events]
    assert types[0] == "message_start" and types[-2:] == ["message_delta", "message_stop"]
    start, delta = events[0], events[-2]
    assert start.message.usage.output_tokens == 1  # type: ignore[union-attr]
    assert start.message.usage.input_tokens == 300  # type: ignore[union-attr]
    assert delta.usage.output_tokens == 90 and delta.delta.stop_reason == "tool_use"  # type: ignore[union-attr]
    partial = "".join(
        e.delta.partial_json for e in events if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
    )  # type: ignore[union-attr]
    assert json.loads(partial) == {"x": [1, 2]}


def test_anthropic_stream_helper(up: FakeUpstream, claude: anthropic.Anthropic) -> None:
    up.push(Reply(text="Paris.", tool_calls=[ToolCall("f", {"x": 1})], **ANTHROPIC_SCRIPTED))
    with claude.messages.stream(model=CLAUDE_MODEL, max_tokens=256, messages=MESSAGES) as stream:
        assert "".join(stream.text_stream) == "Paris."
        final = stream.get_final_message()
    _check_anthropic_usage(final.usage)
    assert final.content[1].type == "tool_use" and final.content[1].input == {"x": 1}


def test_anthropic_beta_messages(up: FakeUpstream, claude: anthropic.Anthropic) -> None:
    up.push(Reply(**ANTHROPIC_SCRIPTED))
    message = claude.beta.messages.create(model=CLAUDE_MODEL, max_tokens=256, messages=MESSAGES)
    _check_anthropic_usage(message.usage)
    assert up.requests[-1].path == "/v1/messages"
    with httpx2.Client() as http:  # the ?beta=true form some SDK versions send
        reply = http.post(up.url + "/v1/messages?beta=true", json={"model": CLAUDE_MODEL, "messages": MESSAGES})
        assert reply.json()["type"] == "message" and up.requests[-1].query == {"beta": "true"}


def test_anthropic_async(up: FakeUpstream) -> None:
    async def main() -> tuple[Any, Any]:
        async with anthropic.AsyncAnthropic(
            base_url=up.anthropic_base_url, api_key=ANTHROPIC_KEY, max_retries=0
        ) as client:
            plain = await client.messages.create(model=CLAUDE_MODEL, max_tokens=256, messages=MESSAGES)
            async with client.messages.stream(model=CLAUDE_MODEL, max_tokens=256, messages=MESSAGES) as stream:
                final = await stream.get_final_message()
            return plain, final

    up.push(Reply(**ANTHROPIC_SCRIPTED), Reply(**ANTHROPIC_SCRIPTED))
    plain, final = asyncio.run(main())
    _check_anthropic_usage(plain.usage)
    _check_anthropic_usage(final.usage)


# --------------------------------------------------------------------------- Gemini


GEMINI_SCRIPTED = {"input_tokens": 1200, "cached_tokens": 300, "output_tokens": 70, "reasoning_tokens": 20}


def _check_gemini_usage(usage: Any) -> None:
    assert usage.prompt_token_count == 1200 and usage.cached_content_token_count == 300
    assert usage.candidates_token_count == 50 and usage.thoughts_token_count == 20
    assert usage.total_token_count == 1270


def test_gemini_generate_content(up: FakeUpstream, gemini: genai.Client) -> None:
    up.push(Reply(text="Paris.", **GEMINI_SCRIPTED))
    response = gemini.models.generate_content(model=GEMINI_MODEL, contents="Capital of France?")
    assert response.text == "Paris." and response.model_version == GEMINI_MODEL
    assert response.candidates is not None and response.candidates[0].finish_reason == genai_types.FinishReason.STOP
    _check_gemini_usage(response.usage_metadata)
    # zero cache / thoughts are omitted, as Gemini does
    plain = gemini.models.generate_content(model=GEMINI_MODEL, contents="hi")
    assert plain.usage_metadata is not None
    assert plain.usage_metadata.cached_content_token_count is None
    assert plain.usage_metadata.thoughts_token_count is None


def test_gemini_function_calls_and_v1beta(up: FakeUpstream) -> None:
    up.push(Reply(text="", tool_calls=[ToolCall("get_weather", {"city": "Paris"})]))
    client = genai.Client(api_key=GEMINI_KEY, http_options={"base_url": up.gemini_base_url, "api_version": "v1beta"})
    try:
        response = client.models.generate_content(model=GEMINI_MODEL, contents="Weather?")
    finally:
        client.close()
    assert up.requests[-1].path == f"/v1beta/models/{GEMINI_MODEL}:generateContent"
    assert response.function_calls is not None
    call = response.function_calls[0]
    assert (call.name, call.args) == ("get_weather", {"city": "Paris"})


def test_gemini_stream(up: FakeUpstream, gemini: genai.Client) -> None:
    up.push(Reply(text="Paris is the capital of France.", stream_chunks=3, **GEMINI_SCRIPTED))
    chunks = list(gemini.models.generate_content_stream(model=GEMINI_MODEL, contents="Capital?"))
    assert up.requests[-1].query == {"alt": "sse"} and up.requests[-1].stream
    assert len(chunks) == 3 and "".join(c.text or "" for c in chunks) == "Paris is the capital of France."
    assert chunks[0].usage_metadata is not None and chunks[0].usage_metadata.candidates_token_count is None
    _check_gemini_usage(chunks[-1].usage_metadata)


@pytest.mark.filterwarnings(AIOHTTP_SUBCLASS_WARNING)
def test_gemini_async_default_aiohttp_transport(up: FakeUpstream, gemini: genai.Client) -> None:
    async def main() -> tuple[Any, list[Any]]:
        try:
            plain = await gemini.aio.models.generate_content(model=GEMINI_MODEL, contents="hi")
            stream = await gemini.aio.models.generate_content_stream(model=GEMINI_MODEL, contents="hi")
            return plain, [chunk async for chunk in stream]
        finally:
            await gemini.aio.aclose()

    up.push(Reply(**GEMINI_SCRIPTED), Reply(text="a b c d", **GEMINI_SCRIPTED))
    plain, chunks = asyncio.run(main())
    _check_gemini_usage(plain.usage_metadata)
    _check_gemini_usage(chunks[-1].usage_metadata)
    assert "".join(c.text for c in chunks) == "a b c d"


def test_gemini_async_httpx2_and_explicit_aiohttp_session(up: FakeUpstream) -> None:
    async def main() -> list[Any]:
        results = []
        async with httpx2.AsyncClient() as http, aiohttp.ClientSession() as session:
            for options in ({"httpx_async_client": http}, {"aiohttp_client": session}):
                client = genai.Client(api_key=GEMINI_KEY, http_options={"base_url": up.gemini_base_url, **options})
                results.append(await client.aio.models.generate_content(model=GEMINI_MODEL, contents="hi"))
                stream = await client.aio.models.generate_content_stream(model=GEMINI_MODEL, contents="hi")
                results.append([chunk async for chunk in stream][-1])
        return results

    up.default = Reply(**GEMINI_SCRIPTED)
    for response in asyncio.run(main()):
        _check_gemini_usage(response.usage_metadata)


# --------------------------------------------------------------------------- errors and retries


def test_openai_errors(up: FakeUpstream, oai: openai.OpenAI) -> None:
    up.push(Reply(status=429, error_message="slow down"), Reply(status=500), Reply(status=402))
    with pytest.raises(openai.RateLimitError) as rate:
        oai.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES)
    assert rate.value.body == {
        "message": "slow down",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }
    assert rate.value.request_id is not None and rate.value.request_id.startswith("req_")
    with pytest.raises(openai.InternalServerError):
        oai.responses.create(model=OPENAI_MODEL, input="hi", stream=True)
    with pytest.raises(openai.APIStatusError) as quota:
        oai.embeddings.create(model="text-embedding-3-small", input="x")
    assert quota.value.status_code == 402


# openai and anthropic ignore "retry-after: 0" (they need a delay > 0, else they back off 0.5 s * 2^n);
# "retry-after-ms: 1" makes their retry loops take a millisecond.
FAST_RETRY = {"retry-after-ms": "1"}


def test_openai_retries(up: FakeUpstream) -> None:
    up.push(Reply(status=429, headers=FAST_RETRY), Reply(status=503, headers=FAST_RETRY), Reply(text="finally"))
    with openai.OpenAI(base_url=up.openai_base_url, api_key=OPENAI_KEY, max_retries=2) as client:
        completion = client.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES)
    assert completion.choices[0].message.content == "finally"
    assert [r.headers["x-stainless-retry-count"] for r in up.requests] == ["0", "1", "2"]


def test_anthropic_errors_and_retry(up: FakeUpstream, claude: anthropic.Anthropic) -> None:
    up.push(Reply(status=429, error_message="slow down"), Reply(status=529), Reply(status=402))
    with pytest.raises(anthropic.RateLimitError) as rate:
        _claude_create(claude)
    body = rate.value.body
    assert isinstance(body, dict) and body["error"] == {"type": "rate_limit_error", "message": "slow down"}
    assert rate.value.request_id is not None and rate.value.request_id == body["request_id"]
    with pytest.raises(anthropic.OverloadedError):
        _claude_create(claude, stream=True)
    with pytest.raises(anthropic.APIStatusError) as billing:
        _claude_create(claude)
    assert billing.value.status_code == 402

    up.push(Reply(status=429, headers={"retry-after": "0"}), Reply(text="ok"))
    with anthropic.Anthropic(base_url=up.anthropic_base_url, api_key=ANTHROPIC_KEY, max_retries=1) as retrying:
        assert _claude_create(retrying).content[0].text == "ok"


def test_gemini_errors(up: FakeUpstream, gemini: genai.Client) -> None:
    up.push(Reply(status=429, error_message="quota"), Reply(status=503))
    with pytest.raises(genai_errors.ClientError) as rate:
        gemini.models.generate_content(model=GEMINI_MODEL, contents="hi")
    assert (rate.value.code, rate.value.status, rate.value.message) == (429, "RESOURCE_EXHAUSTED", "quota")
    with pytest.raises(genai_errors.ServerError) as unavailable:
        list(gemini.models.generate_content_stream(model=GEMINI_MODEL, contents="hi"))
    assert unavailable.value.status == "UNAVAILABLE"


# --------------------------------------------------------------------------- cut streams and raw usage


def test_cut_stream_after(
    up: FakeUpstream, oai: openai.OpenAI, claude: anthropic.Anthropic, gemini: genai.Client
) -> None:
    seen: list[Any] = []

    up.push(Reply(cut_stream_after=2, **SCRIPTED))
    with pytest.raises(openai.APIConnectionError):
        for chunk in oai.chat.completions.create(
            model=OPENAI_MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        ):
            seen.append(chunk)
    assert len(seen) == 2 and all(c.usage is None for c in seen)

    up.push(Reply(cut_stream_after=3))
    with (
        pytest.raises(openai.APIConnectionError),
        oai.responses.stream(model=OPENAI_MODEL, input="hi") as stream,
    ):
        stream.get_final_response()

    # anthropic and google-genai let the transport error through unwrapped
    up.push(Reply(cut_stream_after=1))
    with pytest.raises((anthropic.APIConnectionError, httpx2.TransportError)):
        list(_claude_create(claude, stream=True))
    up.push(Reply(cut_stream_after=1, stream_chunks=3))
    with pytest.raises(httpx2.TransportError):
        list(gemini.models.generate_content_stream(model=GEMINI_MODEL, contents="hi"))

    # the server is still healthy afterwards
    assert oai.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES).choices[0].message.content


def test_raw_usage_is_sent_verbatim(
    up: FakeUpstream, oai: openai.OpenAI, claude: anthropic.Anthropic, gemini: genai.Client
) -> None:
    bad_openai = {"prompt_tokens": -5, "completion_tokens": 3, "total_tokens": -2}
    up.push(Reply(raw_usage=bad_openai))
    raw = oai.chat.completions.with_raw_response.create(model=OPENAI_MODEL, messages=MESSAGES)
    assert json.loads(raw.http_response.text)["usage"] == bad_openai
    up.push(Reply(raw_usage=bad_openai))
    chunks = list(
        oai.chat.completions.create(
            model=OPENAI_MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == -5

    bad_anthropic = {"input_tokens": 10, "cache_read_input_tokens": 50, "output_tokens": "many"}
    up.push(Reply(raw_usage=bad_anthropic))
    raw_message = claude.messages.with_raw_response.create(model=CLAUDE_MODEL, max_tokens=10, messages=MESSAGES)
    assert json.loads(raw_message.http_response.text)["usage"] == bad_anthropic

    bad_gemini = {"promptTokenCount": 10, "cachedContentTokenCount": 50, "totalTokenCount": 10}
    up.push(Reply(raw_usage=bad_gemini))
    response = gemini.models.generate_content(model=GEMINI_MODEL, contents="hi")
    assert response.usage_metadata is not None and response.usage_metadata.cached_content_token_count == 50


def test_client_closing_a_stream_early(up: FakeUpstream, oai: openai.OpenAI) -> None:
    up.push(Reply(chunk_delay_s=0.02, stream_chunks=20))
    stream = oai.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES, stream=True)
    assert next(iter(stream)).choices[0].delta.role == "assistant"
    stream.close()
    time.sleep(0.1)  # the server hits the closed socket; it must not log an error (see the `up` fixture)
    assert oai.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES).choices[0].message.content


def test_stop_abandons_in_flight_requests() -> None:
    outcome: list[str] = []
    with FakeUpstream() as up:
        up.push(Reply(delay_s=30))

        def call() -> None:
            with openai.OpenAI(base_url=up.openai_base_url, api_key=OPENAI_KEY, max_retries=0) as client:
                try:
                    client.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES)
                except openai.APIConnectionError:
                    outcome.append("disconnected")

        caller = threading.Thread(target=call)
        caller.start()
        while not up.requests:
            time.sleep(0.01)
    caller.join(timeout=10)
    assert outcome == ["disconnected"]


# --------------------------------------------------------------------------- throughput


def test_burst_from_thread_pool(up: FakeUpstream) -> None:
    up.default = Reply(text="ok", input_tokens=10, output_tokens=1)
    body = {"model": OPENAI_MODEL, "messages": MESSAGES}
    n = 500
    with httpx2.Client(limits=httpx2.Limits(max_connections=16)) as http:
        url = up.openai_base_url + "/chat/completions"

        def one(_: int) -> int:
            return http.post(url, json=body).status_code

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=16) as pool:
            statuses = list(pool.map(one, range(n)))
        elapsed = time.perf_counter() - started
    assert statuses == [200] * n
    assert len(up.requests) == n
    print(f"FakeUpstream burst: {n} requests in {elapsed:.2f}s = {n / elapsed:.0f} req/s (client-bound)")
