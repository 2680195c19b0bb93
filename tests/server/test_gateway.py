"""The gateway over real HTTP: the real openai, anthropic and google-genai SDKs (sync, async,
streaming) -> tokentrail serve (uvicorn, in a thread) -> FakeUpstream."""

from __future__ import annotations

import asyncio
import re
import time
from decimal import Decimal
from typing import Any

import anthropic
import httpx2
import openai
import pytest

import tokentrail as tt
from tests._events import stored
from tests._server import serving
from tokentrail.pricing import PriceBook
from tokentrail.server import Timeouts
from tokentrail.testing import FakeUpstream, Reply, ToolCall

GPT = "gpt-4o-mini"
CLAUDE = "claude-sonnet-4-6"
M: Any = [{"role": "user", "content": "What is the capital of France?"}]
HEADERS = {
    "X-Tokentrail-Team": "legal",
    "X-Tokentrail-Agent": "contract-analyzer",
    "X-Tokentrail-Session": "s-42",
    "X-Tokentrail-Project": "q4",
    "X-Tokentrail-User": "u-17",
    "X-Tokentrail-Step": "planning",
    "X-Tokentrail-Tag-Customer": "acme",
}


def cost(prices: PriceBook, provider: str, model: str, **counts: int) -> Decimal:
    c = tt.price(provider=provider, model=model, book=prices, **counts)
    assert c is not None
    return c.total_usd.quantize(Decimal("1e-9"))


def attributed(ev: Any) -> None:
    assert (ev.team, ev.agent, ev.session_id, ev.project, ev.user, ev.step) == (
        "legal",
        "contract-analyzer",
        "s-42",
        "q4",
        "u-17",
        "planning",
    )
    assert ev.tags == {"customer": "acme"}


def oai(url: str, **kw: Any) -> openai.OpenAI:
    kw.setdefault("max_retries", 0)
    return openai.OpenAI(base_url=url + "/v1", api_key="sk-test", default_headers=HEADERS, **kw)


# -- OpenAI ---------------------------------------------------------------------------------------


def test_openai_chat_sync_attribution_and_cost(ledger: tt.Ledger, up: FakeUpstream, prices: PriceBook) -> None:
    up.push(Reply(input_tokens=1500, cached_tokens=1000, output_tokens=90, reasoning_tokens=30))
    with serving(ledger, up) as s:
        r = oai(s.url).chat.completions.create(model=GPT, messages=M)
    assert r.usage is not None and r.usage.prompt_tokens == 1500
    [ev] = stored(ledger)
    attributed(ev)
    assert (ev.provider, ev.model, ev.operation, ev.streamed, ev.status) == ("openai", GPT, "chat", False, "ok")
    assert (ev.input_tokens, ev.cache_read_tokens, ev.output_tokens, ev.reasoning_tokens) == (1500, 1000, 90, 30)
    counts = {"input_tokens": 1500, "cache_read_tokens": 1000, "output_tokens": 90, "reasoning_tokens": 30}
    assert ev.cost_usd == cost(prices, "openai", GPT, **counts)
    # the provider key went upstream unchanged; tokentrail's own headers did not
    sent = up.requests[-1].headers
    assert sent["authorization"] == "Bearer sk-test"
    assert not any(k.startswith("x-tokentrail") for k in sent)


def _mask(raw: bytes) -> bytes:
    return re.sub(rb'"created":\s*\d+', b'"created":0', re.sub(rb'"id":\s*"[^"]*"', b'"id":""', raw))


@pytest.mark.parametrize("include_usage", [False, True])
def test_openai_stream_bytes_are_the_upstreams(
    ledger: tt.Ledger, up: FakeUpstream, prices: PriceBook, include_usage: bool
) -> None:
    """The caller sees exactly the stream the upstream would send it: without include_usage no
    usage chunk and no "usage": null, though the gateway asked for them; with it, all of it."""
    body: dict[str, Any] = {"model": GPT, "messages": M, "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    reply = Reply(text="one two three four five six", input_tokens=200, output_tokens=6, stream_chunks=4)
    up.push(reply)
    direct = httpx2.post(up.openai_base_url + "/chat/completions", json=body).content
    up.push(reply)
    with serving(ledger, up) as s:
        via = httpx2.post(s.url + "/v1/chat/completions", json=body, headers=HEADERS).content
    assert up.requests[-1].json["stream_options"] == {"include_usage": True}
    assert _mask(via) == _mask(direct)
    assert (b'"usage"' in via) is include_usage
    [ev] = stored(ledger)
    assert (ev.input_tokens, ev.output_tokens, ev.streamed, ev.status) == (200, 6, True, "ok")
    assert ev.cost_usd == cost(prices, "openai", GPT, input_tokens=200, output_tokens=6)


def test_openai_sdk_stream_and_tools(ledger: tt.Ledger, up: FakeUpstream) -> None:
    up.push(Reply(text="", tool_calls=[ToolCall("search", {"q": "paris"}, id="call_1")], input_tokens=50))
    with serving(ledger, up) as s:
        chunks = list(oai(s.url).chat.completions.create(model=GPT, messages=M, stream=True))
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    [ev] = stored(ledger)
    attributed(ev)
    assert ev.input_tokens == 50 and [(t.id, t.name) for t in ev.tool_calls] == [("call_1", "search")]


def test_openai_async_responses_and_embeddings(ledger: tt.Ledger, up: FakeUpstream) -> None:
    up.push(
        Reply(input_tokens=300, output_tokens=40, reasoning_tokens=10),
        Reply(input_tokens=120, output_tokens=20),
        Reply(input_tokens=12),
    )

    async def run(url: str) -> None:
        c = openai.AsyncOpenAI(base_url=url + "/v1", api_key="sk-test", default_headers=HEADERS, max_retries=0)
        await c.responses.create(model="o4-mini", input="hi")
        stream = await c.responses.create(model="o4-mini", input="hi", stream=True)
        async for _ in stream:
            pass
        await c.embeddings.create(model="text-embedding-3-small", input="hi")
        await c.close()

    with serving(ledger, up) as s:
        asyncio.run(run(s.url))
    evs = stored(ledger)
    assert [(e.operation, e.streamed, e.kind, e.input_tokens, e.output_tokens) for e in evs] == [
        ("responses", False, "llm", 300, 40),
        ("responses", True, "llm", 120, 20),
        ("embeddings", False, "embedding", 12, 0),
    ]
    assert evs[0].reasoning_tokens == 10
    for e in evs:
        attributed(e)


# -- Anthropic ------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", "/v1"])
def test_anthropic_sync_async_stream(ledger: tt.Ledger, up: FakeUpstream, prices: PriceBook, suffix: str) -> None:
    """Anthropic's SDK takes the gateway's root as base URL; the upstream may be given with or without /v1."""
    reply = Reply(input_tokens=2000, cached_tokens=1500, cache_write_tokens=200, output_tokens=70)
    up.push(reply, reply, reply)
    urls = {"openai": up.openai_base_url, "anthropic": up.url + suffix}

    async def run_async(url: str) -> None:
        c = anthropic.AsyncAnthropic(base_url=url, api_key="sk-ant-test", default_headers=HEADERS, max_retries=0)
        await c.messages.create(model=CLAUDE, max_tokens=100, messages=M)
        await c.close()

    with serving(ledger, urls=urls) as s:
        c = anthropic.Anthropic(base_url=s.url, api_key="sk-ant-test", default_headers=HEADERS, max_retries=0)
        c.messages.create(model=CLAUDE, max_tokens=100, messages=M)
        with c.messages.stream(model=CLAUDE, max_tokens=100, messages=M) as st:
            final = st.get_final_message()
        asyncio.run(run_async(s.url))
    assert final.usage.cache_read_input_tokens == 1500
    sent = up.requests[-1].headers
    assert up.requests[-1].path == "/v1/messages" and "sk-ant-test" in (sent.get("x-api-key") or sent["authorization"])
    evs = stored(ledger)
    expected = cost(
        prices, "anthropic", CLAUDE, input_tokens=2000, cache_read_tokens=1500, cache_write_tokens=200, output_tokens=70
    )
    assert [(e.provider, e.streamed, e.input_tokens, e.cache_read_tokens, e.cache_write_tokens) for e in evs] == [
        ("anthropic", False, 2000, 1500, 200),
        ("anthropic", True, 2000, 1500, 200),
        ("anthropic", False, 2000, 1500, 200),
    ]
    assert all(e.cost_usd == expected and e.output_tokens == 70 for e in evs)
    for e in evs:
        attributed(e)


def test_gemini_through_the_gateway(ledger: tt.Ledger, up: FakeUpstream) -> None:
    from google import genai

    up.push(Reply(input_tokens=400, cached_tokens=100, output_tokens=30), Reply(input_tokens=50, output_tokens=5))
    with serving(ledger, up) as s:
        c = genai.Client(api_key="g-test", http_options={"base_url": s.url, "headers": HEADERS})
        c.models.generate_content(model="gemini-2.5-flash", contents="hi")
        for _ in c.models.generate_content_stream(model="gemini-2.5-flash", contents="hi"):
            pass
    evs = stored(ledger)
    assert [(e.provider, e.model, e.streamed, e.input_tokens, e.output_tokens) for e in evs] == [
        ("google", "gemini-2.5-flash", False, 400, 30),
        ("google", "gemini-2.5-flash", True, 50, 5),
    ]
    assert up.requests[-1].headers["x-goog-api-key"] == "g-test"


# -- failures -------------------------------------------------------------------------------------


def test_upstream_errors_pass_through_unchanged_and_are_recorded(ledger: tt.Ledger, up: FakeUpstream) -> None:
    up.push(Reply(status=400, error_message="Bad model parameter."))
    direct_reply = Reply(status=400, error_message="Bad model parameter.")
    with serving(ledger, up) as s:
        with pytest.raises(openai.BadRequestError) as err:
            oai(s.url).chat.completions.create(model=GPT, messages=M)
        via = httpx2.post(
            s.url + "/v1/messages",
            json={"model": CLAUDE, "messages": M, "max_tokens": 5},
            headers={"anthropic-version": "2023-06-01"},
        )
    assert "Bad model parameter." in str(err.value)
    assert via.status_code == 200  # the default reply
    up.push(direct_reply)
    direct = httpx2.post(up.openai_base_url + "/chat/completions", json={"model": GPT, "messages": M})
    assert err.value.response.content == direct.content
    ev = stored(ledger)[0]
    assert ev.status == "error" and ev.note is not None and "400" in ev.note


def test_retry_after_from_upstream_reaches_the_sdk(ledger: tt.Ledger, up: FakeUpstream) -> None:
    up.push(Reply(status=429, headers={"retry-after-ms": "1"}), Reply(input_tokens=10))
    with serving(ledger, up) as s:
        oai(s.url, max_retries=1).chat.completions.create(model=GPT, messages=M)
    assert [e.status for e in stored(ledger)] == ["error", "ok"]  # each attempt is a call


def test_unreachable_upstream_is_502_and_recorded(ledger: tt.Ledger) -> None:
    with serving(ledger, urls={"openai": "http://127.0.0.1:9"}) as s:
        r = httpx2.post(s.url + "/v1/chat/completions", json={"model": GPT, "messages": M})
    assert r.status_code == 502 and r.json()["error"]["type"] == "api_error"
    [ev] = stored(ledger)
    assert ev.status == "error"


def test_read_timeout_is_504(ledger: tt.Ledger, up: FakeUpstream) -> None:
    up.push(Reply(delay_s=2.0))
    with serving(ledger, up, timeouts=Timeouts(read_s=0.2)) as s:
        r = httpx2.post(s.url + "/v1/chat/completions", json={"model": GPT, "messages": M}, timeout=10)
    assert r.status_code == 504
    assert stored(ledger)[0].status == "error"


def test_client_disconnect_mid_stream_is_recorded_cancelled(ledger: tt.Ledger, up: FakeUpstream) -> None:
    up.push(Reply(text=" ".join(["word"] * 40), stream_chunks=40, chunk_delay_s=0.05))
    with serving(ledger, up) as s:
        stream = oai(s.url).chat.completions.create(model=GPT, messages=M, stream=True)
        next(iter(stream))
        stream.close()
        for _ in range(100):  # the gateway notices the disconnect on its own schedule
            if stored(ledger):
                break
            time.sleep(0.05)
    [ev] = stored(ledger)
    assert ev.status == "cancelled" and ev.streamed


# -- pass-through ---------------------------------------------------------------------------------


def test_other_paths_pass_through_and_posts_are_metered(ledger: tt.Ledger, up: FakeUpstream) -> None:
    with serving(ledger, up) as s:
        listed = httpx2.get(s.url + "/v1/models", headers={"Authorization": "Bearer sk-test"})
        legacy = httpx2.post(s.url + "/v1/completions", json={"model": "gpt-3.5-turbo-instruct", "prompt": "hi"})
    assert listed.status_code == 404 and "Invalid URL" in listed.text  # the upstream's own answer
    assert legacy.status_code == 404
    [ev] = stored(ledger)  # the GET is not a call; the POST is recorded, as well as it can be
    assert (ev.provider, ev.operation, ev.status) == ("openai", "other", "error")


def test_upstream_headers_pass_through_with_one_date(ledger: tt.Ledger, up: FakeUpstream) -> None:
    """The provider's headers reach the caller (its request id for support tickets), and the
    response carries one Date header, not the upstream's and the server's both."""
    up.push(Reply(input_tokens=10))
    with serving(ledger, up) as s:
        r = httpx2.post(s.url + "/v1/chat/completions", json={"model": GPT, "messages": M}, headers=HEADERS)
    assert r.status_code == 200
    assert r.headers["x-request-id"].startswith("req_")
    assert len(r.headers.get_list("date")) == 1
