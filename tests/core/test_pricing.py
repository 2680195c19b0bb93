"""The price book matches genai_prices.calc_price to the last digit, honours dated and
time-of-day prices and local overrides, and never prices an unknown model at $0."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import genai_prices
import pytest

import tokentrail as tt
from tokentrail.exceptions import ConfigError, InvalidUsage
from tokentrail.pricing import PriceBook
from tokentrail.usage import Usage


def reference(provider: str, model: str, u: Usage, at: datetime | None = None) -> genai_prices.types.PriceCalculation:
    values = {
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "cache_read_tokens": u.cache_read_tokens,
        "cache_write_tokens": u.cache_write_tokens,
        "cache_write_1h_tokens": u.cache_write_1h_tokens,
        "output_reasoning_tokens": u.reasoning_tokens,
    }
    usage = genai_prices.Usage(**{k: v for k, v in values.items() if v})
    return genai_prices.calc_price(usage, model, provider_id=provider, genai_request_timestamp=at)


CASES = [
    # cache reads and writes (Anthropic), incl. 1-hour cache writes
    ("anthropic", "claude-sonnet-4-6", Usage(1400, 500, cache_read_tokens=300, cache_write_tokens=100)),
    (
        "anthropic",
        "claude-sonnet-4-6",
        Usage(5000, 10, cache_read_tokens=1000, cache_write_tokens=2000, cache_write_1h_tokens=1500),
    ),
    # long-context tiers: the whole call moves to the tier price above 200k input tokens
    ("anthropic", "claude-sonnet-4-5", Usage(200_000, 100, cache_read_tokens=1000)),
    ("anthropic", "claude-sonnet-4-5", Usage(200_001, 100, cache_read_tokens=1000)),
    ("google", "gemini-2.5-pro", Usage(250_000, 500, cache_read_tokens=1000)),
    # reasoning tokens are output tokens
    ("openai", "o3", Usage(1000, 900, reasoning_tokens=800)),
    ("openai", "gpt-4o", Usage(1000, 500, cache_read_tokens=200)),
    ("openai", "gpt-4o-mini", Usage(7, 3)),
    # a model that also prices audio units (priced by the fast path all the same)
    ("google", "gemini-2.5-flash", Usage(1000, 200, cache_read_tokens=300, reasoning_tokens=50)),
]


@pytest.mark.parametrize(("provider", "model", "usage"), CASES)
def test_same_decimals_as_genai_prices(provider: str, model: str, usage: Usage, prices: PriceBook) -> None:
    ours = prices.price(provider, model, usage)
    ref = reference(provider, model, usage)
    assert ours is not None
    assert ours.total_usd == ref.total_price
    assert ours.input_usd + ours.cache_read_usd + ours.cache_write_usd == ref.input_price
    assert ours.output_usd == ref.output_price


def test_tier_boundary_is_a_cliff(prices: PriceBook) -> None:
    below = prices.price("anthropic", "claude-sonnet-4-5", Usage(200_000, 0))
    above = prices.price("anthropic", "claude-sonnet-4-5", Usage(200_001, 0))
    assert below is not None and above is not None
    assert below.input_usd == Decimal("0.6")  # 200k x $3/M
    assert above.input_usd == Decimal("1.200006")  # 200,001 x $6/M


def test_the_request_time_selects_the_dated_price(prices: PriceBook) -> None:
    # claude-sonnet-4-6 dropped its >200k tier on 2026-03-13 (genai-prices data).
    usage = Usage(300_000, 1000)
    before = datetime(2026, 3, 12, 23, 59, tzinfo=UTC)
    after = datetime(2026, 3, 13, 0, 0, tzinfo=UTC)
    old, new = (
        prices.price("anthropic", "claude-sonnet-4-6", usage, before),
        prices.price("anthropic", "claude-sonnet-4-6", usage, after),
    )
    assert old is not None and new is not None
    assert old.total_usd == reference("anthropic", "claude-sonnet-4-6", usage, before).total_price
    assert new.total_usd == reference("anthropic", "claude-sonnet-4-6", usage, after).total_price
    assert old.total_usd > new.total_usd
    assert old.price_version != new.price_version


def test_time_of_day_prices_are_not_memoised_per_day(prices: PriceBook) -> None:
    usage = Usage(1_000_000, 1_000_000)
    day = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)  # deepseek-chat has an off-peak window 16:30-00:30 UTC
    night = datetime(2026, 6, 1, 18, 0, tzinfo=UTC)
    for at in (day, night, day):
        ours = prices.price("deepseek", "deepseek-chat", usage, at)
        assert ours is not None
        assert ours.total_usd == reference("deepseek", "deepseek-chat", usage, at).total_price


def test_unknown_model_is_unpriced_not_zero(prices: PriceBook) -> None:
    assert prices.lookup("openai", "my-private-model-7b") is None
    assert prices.price("openai", "my-private-model-7b", Usage(10, 10)) is None


def test_each_price_names_its_version_and_unit_prices(prices: PriceBook) -> None:
    p = prices.lookup("openai", "gpt-4o", datetime(2026, 1, 1, tzinfo=UTC))
    assert p is not None
    assert p.source == "genai-prices"
    assert p.version.startswith(f"genai-prices/{genai_prices.__version__}/gpt-4o")
    assert p.unit_prices["input_mtok"] == "2.5"


def write_overrides(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "prices.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_overrides_with_effective_dates_and_globs(tmp_path: Path) -> None:
    path = write_overrides(
        tmp_path,
        """
        [[prices]]
        model = "gpt-4o"
        provider = "openai"
        effective = 2026-01-01
        input_mtok = "2.00"
        output_mtok = 8

        [[prices]]
        model = "acme-*"
        input_mtok = 0.5
        output_mtok = 1.5
        context_window = 32000
        max_output_tokens = 4096
        """,
    )
    book = PriceBook(path)
    usage = Usage(1_000_000, 1_000_000)
    negotiated = book.price("openai", "gpt-4o", usage, datetime(2026, 2, 1, tzinfo=UTC))
    list_price = book.price("openai", "gpt-4o", usage, datetime(2025, 12, 31, tzinfo=UTC))
    assert negotiated is not None and list_price is not None
    assert negotiated.total_usd == Decimal("10.00")
    assert negotiated.price_version.startswith("override/")
    assert list_price.total_usd == reference("openai", "gpt-4o", usage).total_price
    private = book.lookup("selfhosted", "acme-coder-7b")
    assert private is not None and private.context_window == 32000 and private.max_output_tokens == 4096
    assert book.cost(private, Usage(2_000_000, 0)).total_usd == Decimal("1.0")
    assert [p.source for p in book.history("openai", "gpt-4o")][-1] == "override"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[prices]]\ninput_mtok = 1\n", "entry 1: needs a 'model'"),
        ('[[prices]]\nmodel = "x"\ninput_mtok = "cheap"\n', "input_mtok: 'cheap' is not a number"),
        ('[[prices]]\nmodel = "x"\ninput_mtok = -1\n', "must be a finite non-negative"),
        ('[[prices]]\nmodel = "x"\ninptu_mtok = 1\n', "unknown key(s) inptu_mtok"),
        ('[[prices]]\nmodel = "x"\neffective = "soon"\n', "'effective' must be a date"),
        ("[[prices]\n", "not valid TOML"),
    ],
)
def test_bad_overrides_file_names_the_file_and_the_entry(tmp_path: Path, text: str, message: str) -> None:
    path = write_overrides(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        PriceBook(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_public_price_function_and_its_validation() -> None:
    cost = tt.price(
        provider="anthropic",
        model="claude-sonnet-4-6",
        input_tokens=1400,
        output_tokens=500,
        cache_read_tokens=300,
        cache_write_tokens=100,
    )
    assert cost is not None
    assert cost.total_usd == reference("anthropic", "claude-sonnet-4-6", Usage(1400, 500, 300, 100)).total_price
    assert cost.total_usd == cost.input_usd + cost.output_usd + cost.cache_read_usd + cost.cache_write_usd
    with pytest.raises(InvalidUsage, match="cache_exceeds_input"):
        tt.price(provider="openai", model="gpt-4o", input_tokens=10, cache_read_tokens=11)
    assert tt.price(provider="openai", model="nope-model", input_tokens=1) is None
