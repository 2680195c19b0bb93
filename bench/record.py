"""Time that `record_llm` adds to the caller's thread (pricing, attribution, queueing),
against an empty function call in the same run.

    .venv/bin/python bench/record.py [--n 50000] [--db sqlite:///...]
Target: <= 40 us median."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _stats import sample_us, summary

import tokentrail as tt
from tokentrail.pricing import PriceBook


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=50000)
    parser.add_argument("--db", default=None)
    args = parser.parse_args()
    url = args.db or f"sqlite:///{tempfile.mkdtemp()}/bench.db"
    ledger = tt.Ledger(url, prices=PriceBook(overrides=""))

    def record() -> None:
        ledger.record_llm(
            provider="anthropic",
            model="claude-sonnet-4-6",
            input_tokens=1400,
            output_tokens=500,
            cache_read_tokens=300,
            tool_calls=[("toolu_1", "web_search", {"q": "tokentrail"})],
        )

    def nothing() -> None:
        pass

    with tt.session(agent="bench", team="perf", tags={"run": "record"}), tt.step("loop"):
        ours = summary(sample_us(record, n=args.n))
        base = summary(sample_us(nothing, n=args.n))
    ledger.flush(timeout=120)
    ledger.close()
    print(f"record_llm in the caller's thread: p50 {ours['p50']:.1f} us, p99 {ours['p99']:.1f} us")
    print(f"empty call baseline:               p50 {base['p50']:.2f} us")
    print(f"added p50 {ours['p50'] - base['p50']:.1f} us (target <= 40 us)")


if __name__ == "__main__":
    main()
