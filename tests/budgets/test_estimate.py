"""The cost estimate behind reservations: it never undercounts text input, bounds media and output,
and prices the dearest reading of the input."""

from __future__ import annotations

import base64
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tokentrail.budgets import estimate as est
from tokentrail.pricing import PriceBook
from tokentrail.usage import Usage

BOOK = PriceBook(overrides="")
text = st.text(min_size=0, max_size=400)
messages = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system"]), "content": text}),
    min_size=1,
    max_size=8,
)


def utf8(s: str) -> int:
    return len(s.encode("utf-8", "surrogatepass"))


@settings(max_examples=300, deadline=None)
@given(messages)
def test_never_undercounts_text(msgs: list[dict[str, str]]) -> None:
    body = {"model": "gpt-4o-mini", "messages": msgs}
    tokens, shows_all, _ = est.input_tokens_bound(body)
    assert shows_all
    # no token is shorter than one byte: the bound is at least every byte of text, plus overheads
    assert tokens >= sum(utf8(m["content"]) for m in msgs) + len(msgs) * est.MESSAGE_OVERHEAD_TOKENS


@settings(max_examples=200, deadline=None)
@given(st.lists(text, min_size=1, max_size=5), text)
def test_never_undercounts_any_provider_shape(parts: list[str], system: str) -> None:
    total = sum(utf8(p) for p in parts) + utf8(system)
    shapes: list[Any] = [
        {
            "model": "claude-sonnet-4-6",
            "system": system,
            "messages": [{"role": "user", "content": [{"type": "text", "text": p} for p in parts]}],
            "max_tokens": 10,
        },
        {
            "contents": [{"role": "user", "parts": [{"text": p} for p in parts]}],
            "systemInstruction": {"parts": [{"text": system}]},
        },
        {
            "model": "gpt-4.1",
            "instructions": system,
            "input": [{"role": "user", "content": [{"type": "input_text", "text": p} for p in parts]}],
        },
        {"model": "text-embedding-3-small", "input": [*parts, system]},
    ]
    for body in shapes:
        tokens, _, _ = est.input_tokens_bound(body)
        assert tokens >= total


def test_the_fake_upstreams_token_count_is_within_the_bound() -> None:
    from tokentrail.testing import _fake_wire

    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "héllo wörld " * 200}]}
    fake = _fake_wire.estimate_input_tokens("chat", body)
    assert 0 < fake <= est.input_tokens_bound(body)[0]


def test_images_have_their_own_bound_not_their_bytes() -> None:
    png = base64.b64encode(b"\x89PNG" + b"\0" * 300_000).decode()
    body = {
        "model": "gpt-4o",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
                ],
            }
        ],
    }
    tokens, _, _ = est.input_tokens_bound(body)
    assert est.IMAGE_TOKENS <= tokens < est.IMAGE_TOKENS + 1000
    anthropic = {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}}],
            }
        ]
    }
    assert est.IMAGE_TOKENS <= est.input_tokens_bound(anthropic)[0] < est.IMAGE_TOKENS + 1000
    gemini = {"contents": [{"parts": [{"inlineData": {"mimeType": "image/jpeg", "data": png}}]}]}
    assert est.IMAGE_TOKENS <= est.input_tokens_bound(gemini)[0] < est.IMAGE_TOKENS + 1000


def test_audio_and_documents_count_their_bytes() -> None:
    wav = base64.b64encode(b"\0" * 50_000).decode()
    body = {
        "messages": [
            {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": wav, "format": "wav"}}]}
        ]
    }
    tokens, _, audio = est.input_tokens_bound(body)
    assert audio and tokens >= 50_000


def test_input_the_body_does_not_show_is_bounded_by_the_context_window() -> None:
    e = est.estimate(
        provider="openai",
        model="gpt-4.1",
        prices=BOOK,
        body={"model": "gpt-4.1", "input": "and then?", "previous_response_id": "resp_1", "max_output_tokens": 100},
    )
    assert not e.exact_input and e.input_tokens >= 1_000_000 - 1  # gpt-4.1's window
    server_tool = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "x"}],
        "tools": [{"type": "web_search_20250305", "name": "web_search"}],
    }
    assert not est.estimate(provider="anthropic", model="claude-sonnet-4-6", body=server_tool, prices=BOOK).exact_input


def test_output_bound_from_each_providers_field() -> None:
    assert est.requested_output({"max_tokens": 300}) == 300
    assert est.requested_output({"max_completion_tokens": 200, "max_tokens": 999}) == 200
    assert est.requested_output({"max_output_tokens": 50}) == 50
    assert est.requested_output({"generationConfig": {"maxOutputTokens": 70, "candidateCount": 2}}) == 140
    assert est.requested_output({"max_tokens": 10, "n": 3}) == 30
    assert est.requested_output({}) is None


def test_output_falls_back_to_overrides_then_window(tmp_path: Any) -> None:
    f = tmp_path / "prices.toml"
    f.write_text(
        '[[prices]]\nmodel = "acme-70b"\ninput_mtok = 1\noutput_mtok = 2\nmax_output_tokens = 4096\n'
        'context_window = 32000\n[[prices]]\nmodel = "acme-8b"\ninput_mtok = 1\noutput_mtok = 2\n'
        "context_window = 8000\n"
    )
    book = PriceBook(overrides=f)
    body = {"messages": [{"role": "user", "content": "hi"}]}
    assert est.estimate(provider="acme", model="acme-70b", body=body, prices=book).output_tokens == 4096
    e = est.estimate(provider="acme", model="acme-8b", body=body, prices=book)
    assert e.output_tokens == 8000 - e.input_tokens
    unknown = est.estimate(provider="acme", model="nobody-prices-this", body=body, prices=book)
    assert unknown.cost_usd is None and unknown.output_tokens == est.UNBOUNDED_OUTPUT_TOKENS


def test_cost_is_the_dearest_reading_rounded_up() -> None:
    price = BOOK.lookup("anthropic", "claude-sonnet-4-6")
    assert price is not None
    e = est.estimate(
        provider="anthropic",
        model="claude-sonnet-4-6",
        prices=BOOK,
        body={"max_tokens": 1000, "messages": [{"role": "user", "content": "x" * 5000}]},
    )
    plain = BOOK.cost(price, Usage(input_tokens=e.input_tokens, output_tokens=1000)).total_usd
    as_cache_write = BOOK.cost(
        price,
        Usage(
            input_tokens=e.input_tokens,
            output_tokens=1000,
            cache_write_tokens=e.input_tokens,
            cache_write_1h_tokens=e.input_tokens,
        ),
    ).total_usd
    assert e.cost_usd is not None and e.cost_usd >= max(plain, as_cache_write) > plain
    assert e.cost_usd == e.cost_usd.quantize(Decimal("1e-9"))


def test_embeddings_have_no_output() -> None:
    e = est.estimate(
        provider="openai",
        model="text-embedding-3-small",
        kind="embedding",
        prices=BOOK,
        body={"model": "text-embedding-3-small", "input": ["a", "b"]},
    )
    assert e.output_tokens == 0 and e.cost_usd is not None
