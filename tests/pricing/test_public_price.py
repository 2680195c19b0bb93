"""`tt.price(...)`'s fast path (plain counts straight to the compiled units, no Usage) gives exactly
the Decimals, the plain form and the errors of the checked path (`PriceBook.price` of a checked
Usage), and both equal genai-prices' `calc_price`, over a grid of models and usages."""

from __future__ import annotations

import itertools
from decimal import Decimal
from pathlib import Path
from typing import Any

import genai_prices
import pytest

import tokentrail as tt
from tokentrail.pricing import PriceBook
from tokentrail.usage import MAX_TOKENS, UsageProblem, from_counts

MODELS = [
    ("anthropic", "claude-sonnet-4-6"),
    ("anthropic", "claude-haiku-4-5"),
    ("openai", "gpt-4o"),
    ("openai", "gpt-4o-mini"),
    ("openai", "o3"),
    ("google", "gemini-2.5-pro"),  # tiered: above 200k input tokens every token costs more
    ("google", "gemini-2.5-flash"),
]
USAGES = [
    # input, output, cache_read, cache_write, reasoning
    (0, 0, 0, 0, 0),
    (1, 1, 0, 0, 0),
    (1400, 500, 300, 100, 0),
    (1000, 900, 0, 0, 800),
    (200_000, 10, 0, 0, 0),
    (200_001, 10, 1, 0, 0),
    (250_000, 500, 1000, 0, 0),
    (7, 3, 7, 0, 3),
    (MAX_TOKENS, MAX_TOKENS, MAX_TOKENS, 0, MAX_TOKENS),  # every bound reached, none passed
]
NAMES = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens")


def _checked(book: PriceBook, provider: str, model: str, counts: tuple[object, ...]) -> tt.Cost | None:
    return book.price(provider, model, from_counts(**dict(zip(NAMES, counts, strict=True))))


@pytest.mark.parametrize(("provider", "model"), MODELS)
def test_fast_path_equals_the_checked_path_and_calc_price(provider: str, model: str) -> None:
    book = PriceBook(overrides="")
    for counts in USAGES:
        fast = tt.price(provider=provider, model=model, book=book, **dict(zip(NAMES, counts, strict=True)))
        slow = _checked(book, provider, model, counts)
        assert fast is not None and slow is not None
        assert fast == slow, (model, counts)
        assert [str(v) for v in fast] == [str(v) for v in slow]  # the same plain form too
        assert all("E" not in str(v) for v in fast)
        i, o, cr, cw, r = counts
        gu = genai_prices.Usage(
            input_tokens=i,
            output_tokens=o,
            cache_read_tokens=cr or None,
            cache_write_tokens=cw or None,
            output_reasoning_tokens=r or None,
        )
        assert fast.total_usd == genai_prices.calc_price(gu, model, provider_id=provider).total_price, (model, counts)


BAD = [
    (True, 0, 0, 0, 0),
    (1.0, 0, 0, 0, 0),
    ("5", 0, 0, 0, 0),
    (-1, 0, 0, 0, 0),
    (10, -1, 0, 0, 0),
    (10, 0, -1, 0, 0),
    (10, 0, 0, -1, 0),
    (10, 5, 0, 0, -1),
    (10, 0, 6, 5, 0),  # cache beyond input
    (10, 5, 0, 0, 6),  # reasoning beyond output
    (MAX_TOKENS + 1, 0, 0, 0, 0),
    (0, MAX_TOKENS + 1, 0, 0, 0),
]


@pytest.mark.parametrize("counts", BAD)
def test_impossible_counts_raise_as_before(counts: tuple[object, ...]) -> None:
    with pytest.raises(UsageProblem) as checked:
        from_counts(**dict(zip(NAMES, counts, strict=True)))
    kw: dict[str, Any] = dict(zip(NAMES, counts, strict=True))
    with pytest.raises(tt.InvalidUsage) as err:
        tt.price(provider="openai", model="gpt-4o", **kw)
    assert str(err.value) == f"impossible usage for openai/gpt-4o: {checked.value.reason}"


def test_unpriced_overrides_and_the_default_book(tmp_path: Path) -> None:
    assert tt.price(provider="acme", model="house-llama-70b", input_tokens=10) is None
    f = tmp_path / "prices.toml"
    f.write_text('[[prices]]\nprovider = "acme"\nmodel = "house-*"\ninput_mtok = "0.30"\noutput_mtok = "1.20"\n')
    book = PriceBook(overrides=f)
    for counts in itertools.product((0, 1, 999_999), (0, 3, 1000)):
        kw = dict(zip(NAMES, counts, strict=False))
        fast = tt.price(provider="acme", model="house-llama-70b", book=book, **kw)
        assert fast is not None and fast == _checked(book, "acme", "house-llama-70b", (*counts, 0, 0, 0))
        assert fast.total_usd == (Decimal("0.30") * counts[0] + Decimal("1.20") * counts[1]) / 1_000_000
