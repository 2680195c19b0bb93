"""Pricing one call: tokentrail's memoised PriceBook vs genai_prices.calc_price, same inputs.

    .venv/bin/python bench/pricing.py [--n 20000]
Target: <= 10 us median and >= 15x faster than calc_price."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import genai_prices

sys.path.insert(0, str(Path(__file__).parent))
from _stats import sample_us, summary

from tokentrail.pricing import PriceBook
from tokentrail.usage import Usage

CASES = [
    ("anthropic", "claude-sonnet-4-6", Usage(1400, 500, cache_read_tokens=300, cache_write_tokens=100)),
    ("openai", "gpt-4o", Usage(1000, 500, cache_read_tokens=200)),
    ("google", "gemini-2.5-pro", Usage(250_000, 500, cache_read_tokens=1000)),
    ("openai", "o3", Usage(1000, 900, reasoning_tokens=800)),
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20000)
    args = parser.parse_args()
    book = PriceBook(overrides="")
    print(f"{'model':<22} {'tokentrail p50':>15} {'calc_price p50':>15} {'speed-up':>9}")
    ratios = []
    for provider, model, u in CASES:
        gu = genai_prices.Usage(
            input_tokens=u.input_tokens,
            output_tokens=u.output_tokens,
            cache_read_tokens=u.cache_read_tokens or None,
            cache_write_tokens=u.cache_write_tokens or None,
            output_reasoning_tokens=u.reasoning_tokens or None,
        )
        ours = book.price(provider, model, u)
        ref = genai_prices.calc_price(gu, model, provider_id=provider)
        assert ours is not None and ours.total_usd == ref.total_price, (model, ours, ref.total_price)
        t_ours = summary(sample_us(lambda: book.price(provider, model, u), n=args.n))
        t_ref = summary(
            sample_us(lambda: genai_prices.calc_price(gu, model, provider_id=provider), n=max(args.n // 10, 500))
        )
        ratio = t_ref["p50"] / t_ours["p50"]
        ratios.append(ratio)
        print(f"{model:<22} {t_ours['p50']:>12.2f} us {t_ref['p50']:>12.2f} us {ratio:>8.1f}x")
    print(f"min speed-up {min(ratios):.1f}x (target >= 15x; tokentrail p50 target <= 10 us)")


if __name__ == "__main__":
    main()
