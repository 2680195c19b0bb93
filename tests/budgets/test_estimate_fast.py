"""The estimate's fast paths (issue 17, budgets at gateway speed) stay an upper bound: the memoised
dearest reading is exactly what a fresh computation gives, never another price's or book's figure,
and the walk's inline count of strings misses none of them."""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokentrail.budgets import estimate as est
from tokentrail.pricing import Price, PriceBook
from tokentrail.usage import Usage, UsageProblem

BOOK = PriceBook(overrides="")
# plain, cache-priced, tiered by input size (Gemini >200k), audio-priced
MODELS = [
    ("openai", "gpt-4o-mini"),
    ("anthropic", "claude-sonnet-4-6"),
    ("google", "gemini-2.5-pro"),
    ("openai", "gpt-4o-audio-preview"),
]


def dearest_reading(book: PriceBook, price: Price, i: int, o: int, audio: bool, out_audio: bool) -> Decimal:
    """The reservation's price as the rule states it, computed the slow way: every reading through
    PriceBook.cost, the dearest, rounded up to the nano-dollar."""
    readings = [
        Usage(input_tokens=i, output_tokens=o),
        Usage(input_tokens=i, output_tokens=o, cache_write_tokens=i),
        Usage(input_tokens=i, output_tokens=o, cache_write_tokens=i, cache_write_1h_tokens=i),
    ]
    if audio:
        readings.append(Usage(input_tokens=i, output_tokens=o, input_audio_tokens=i))
    if out_audio:
        readings.append(Usage(input_tokens=i, output_tokens=o, output_audio_tokens=o))
    best = Decimal(0)
    for u in readings:
        try:
            best = max(best, book.cost(price, u).total_usd)
        except UsageProblem:
            continue
    return best.quantize(Decimal("1e-9"), rounding=ROUND_CEILING)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(MODELS),
    st.integers(min_value=0, max_value=2_000_000),
    st.integers(min_value=0, max_value=200_000),
    st.booleans(),
    st.booleans(),
)
def test_the_memoised_cost_is_the_dearest_reading(
    model: tuple[str, str], i: int, o: int, audio: bool, out_audio: bool
) -> None:
    price = BOOK.lookup(*model)
    assert price is not None
    body = {"modalities": ["text", "audio"]} if out_audio else {}
    want = dearest_reading(BOOK, price, i, o, audio, out_audio)
    first = est.max_cost(BOOK, price, i, o, audio=audio, body=body)
    again = est.max_cost(BOOK, price, i, o, audio=audio, body=body)  # a memo hit
    assert first == again == want


def test_the_memo_never_answers_for_another_book_or_price(tmp_path: Path) -> None:
    f = tmp_path / "prices.toml"
    f.write_text('[[prices]]\nprovider = "openai"\nmodel = "gpt-4o-mini"\ninput_mtok = 100\noutput_mtok = 400\n')
    dear = PriceBook(overrides=f)
    body = {"model": "gpt-4o-mini", "max_tokens": 100, "messages": [{"role": "user", "content": "hi " * 50}]}
    cheap_est = est.estimate(provider="openai", model="gpt-4o-mini", body=body, prices=BOOK)
    dear_est = est.estimate(provider="openai", model="gpt-4o-mini", body=body, prices=dear)
    assert cheap_est.tokens == dear_est.tokens  # the same counts: only the book differs
    price = dear.lookup("openai", "gpt-4o-mini")
    assert price is not None
    assert dear_est.cost_usd == dearest_reading(dear, price, dear_est.input_tokens, 100, False, False)
    assert cheap_est.cost_usd is not None and dear_est.cost_usd is not None
    assert dear_est.cost_usd > cheap_est.cost_usd


def test_a_reused_id_is_no_hit() -> None:
    """An entry left by an object that is gone, whose id a new price now has, is not answered."""
    price = BOOK.lookup("anthropic", "claude-sonnet-4-6")
    assert price is not None
    stale = BOOK.lookup("openai", "gpt-4o-mini")
    assert stale is not None
    est._COST_MEMO[(id(BOOK), id(price), 5000, 1000, False, False)] = (BOOK, stale, Decimal(0))
    assert est.max_cost(BOOK, price, 5000, 1000) == dearest_reading(BOOK, price, 5000, 1000, False, False) > 0


def test_the_memo_is_bounded() -> None:
    price = BOOK.lookup("openai", "gpt-4o-mini")
    assert price is not None
    for n in range(est._COST_MEMO_MAX + 50):
        est.max_cost(BOOK, price, n, 10)
    assert len(est._COST_MEMO) <= est._COST_MEMO_MAX


class OneTokenPerChar:
    """A stand-in for tiktoken: every character one token (ASCII: one per byte)."""

    def encode(self, s: str, disallowed_special: Any = ()) -> list[int]:
        return [0] * len(s)


@pytest.mark.parametrize(
    "body",
    [
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "a" * 3000}, {"role": "system", "content": "b"}]},
        {"model": "gpt-4.1", "instructions": "c" * 2000, "input": [{"role": "user", "content": "d" * 1000}]},
        {"model": "gpt-4o", "messages": [{"role": "user", "content": [{"type": "text", "text": "e" * 4000}]}]},
    ],
)
def test_the_tokenizer_sees_every_string(body: dict[str, Any]) -> None:
    """With a tokenizer the text bound is the smaller of bytes and its count: a string the walk
    failed to hand it would make the bound fall below the text the tokenizer itself counts."""
    strings: list[str] = []
    stack: list[Any] = [body]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            strings += [k for k in v if k not in est._SKIP_KEYS]
            stack += [x for k, x in v.items() if k not in est._SKIP_KEYS]
        elif isinstance(v, list):
            stack += v
        elif isinstance(v, str):
            strings.append(v)
    tokens, _, _ = est.input_tokens_bound(body, tokenizer=OneTokenPerChar())
    assert tokens >= sum(len(s) for s in strings)
