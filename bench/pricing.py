"""Pricing one call: tokentrail's memoised PriceBook (`book.price`, the ledger's path) and the
public `tt.price(...)` vs genai_prices.calc_price, same inputs, same Decimals.

    .venv/bin/python bench/pricing.py [--n 20000]
Target: <= 10 us median and >= 15x faster than calc_price, on both paths."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import genai_prices

sys.path.insert(0, str(Path(__file__).parent))
from _stats import sample_us, summary

import tokentrail as tt
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
    print(
        f"{'model':<22} {'book.price p50':>15} {'tt.price p50':>15} {'calc_price p50':>15} "
        f"{'speed-up':>9} {'public':>9}"
    )
    ratios, public_ratios = [], []
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

        def public(provider: str = provider, model: str = model, u: Usage = u) -> object:
            return tt.price(
                provider=provider,
                model=model,
                input_tokens=u.input_tokens,
                output_tokens=u.output_tokens,
                cache_read_tokens=u.cache_read_tokens,
                cache_write_tokens=u.cache_write_tokens,
                reasoning_tokens=u.reasoning_tokens,
                book=book,
            )

        assert public() == ours, (model, public(), ours)
        t_ours = summary(sample_us(lambda: book.price(provider, model, u), n=args.n))
        t_public = summary(sample_us(public, n=args.n))
        t_ref = summary(
            sample_us(lambda: genai_prices.calc_price(gu, model, provider_id=provider), n=max(args.n // 10, 500))
        )
        ratio, public_ratio = t_ref["p50"] / t_ours["p50"], t_ref["p50"] / t_public["p50"]
        ratios.append(ratio)
        public_ratios.append(public_ratio)
        print(
            f"{model:<22} {t_ours['p50']:>12.2f} us {t_public['p50']:>12.2f} us {t_ref['p50']:>12.2f} us "
            f"{ratio:>8.1f}x {public_ratio:>8.1f}x"
        )
    print(f"min speed-up {min(ratios):.1f}x (target >= 15x; tokentrail p50 target <= 10 us)")
    print(f"min speed-up of tt.price {min(public_ratios):.1f}x (target >= 15x)")


if __name__ == "__main__":
    main()
