"""How long `tokentrail audit verify` takes, by part: the chain walk, the rollup check of every row
(`--full`), and the default window's (tokentrail.store.rollup_window), over one ledger.

    .venv/bin/python bench/verify.py --events 1000000 --days 90                 # SQLite (a temporary file)
    .venv/bin/python bench/verify.py --db postgresql://… --events 1000000
    .venv/bin/python bench/verify.py --db sqlite:///x.db --keep                 # reuse a ledger built before

The events are bench/ingest.py's fleet spread evenly over `--days` days up to now, written through
a Ledger, with the tag key `customer` declared (TOKENTRAIL_ROLLUP_TAGS), so every dimension rollup
is checked. Each part runs `--runs` times, alternating, and the median is shown.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ingest import make_events, pg_schema_url, run_ledger

from tokentrail import audit
from tokentrail.store import open_store
from tokentrail.store.rollup_check import check_rollups
from tokentrail.store.rollup_window import window


def spread(n: int, days: int) -> list[Any]:
    events = make_events(n)
    start = datetime.now(UTC) - timedelta(days=days)
    step = timedelta(days=days) / n
    return [dataclasses.replace(e, ts=start + i * step) for i, e in enumerate(events)]


def timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--db", help="sqlite:///… or postgresql://… (a fresh schema); default: a temporary SQLite file")
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="use the ledger at --db as it is (no events written)")
    ap.add_argument("--leave", action="store_true", help="PostgreSQL: leave the new schema (its URL is printed)")
    args = ap.parse_args()
    os.environ["TOKENTRAIL_ROLLUP_TAGS"] = "customer"
    cleanup: Callable[[], None] = lambda: None  # noqa: E731
    url = args.db or f"sqlite:///{Path(tempfile.mkdtemp(prefix='tt-bench-verify-')) / 'ledger.db'}"
    if url.startswith("postgres") and not args.keep:
        import psycopg

        schema = f"tt_bench_verify_{secrets.token_hex(4)}"
        with psycopg.connect(url, autocommit=True) as c:
            c.execute(f"CREATE SCHEMA {schema}")
        base, url = url, pg_schema_url(url, schema)

        def drop() -> None:
            with psycopg.connect(base, autocommit=True) as c:
                c.execute(f"DROP SCHEMA {schema} CASCADE")

        cleanup = drop if not args.leave else lambda: print(f"left            {url}")
    try:
        if not args.keep:
            t = run_ledger(url, spread(args.events, args.days))
            print(f"wrote            {args.events:,} events over {args.days} days in {t:.1f} s")
        store: Any = open_store(url)
        try:
            n = store.query("SELECT COUNT(*) FROM events")[0][0]
            win = window(store, anchor_seq=None)
            parts: dict[str, Callable[[], Any]] = {
                "chain walk": lambda: _chain_only(store),
                "rollups, every row (--full)": lambda: _must_be_empty(check_rollups(store)),
                "rollups, the default window": lambda: _must_be_empty(
                    check_rollups(store, ranges=window(store, anchor_seq=None).ranges)
                ),
                "verify --full": lambda: _must_be_ok(audit.verify(store, full=True)),
                "verify (default)": lambda: _must_be_ok(audit.verify(store, full=False)),
            }
            times: dict[str, list[float]] = {k: [] for k in parts}
            for _ in range(args.runs):
                for name, fn in parts.items():
                    times[name].append(timed(fn))
        finally:
            store.close()
        backend = "postgresql" if url.startswith("postgres") else "sqlite"
        print(f"backend          {backend}   ({n:,} events; median of {args.runs} runs)")
        print(f"window           {len(win.ranges)} range(s), rotation {win.rotation}")
        for name, ts in times.items():
            print(f"{name:<30} {statistics.median(ts):>8.2f} s   (runs: {', '.join(f'{x:.2f}' for x in ts)})")
        print(f"load average     {os.getloadavg()[0]:.2f} (1 min, {os.cpu_count()} CPUs)")
    finally:
        cleanup()


def _chain_only(store: Any) -> int:
    """The chain walk alone: verify with the rollup check skipped."""
    import tokentrail.audit as a

    original = a.check_rollups
    setattr(a, "check_rollups", lambda *args, **kw: [])  # noqa: B010
    try:
        return _must_be_ok(a.verify(store, full=False)).count
    finally:
        setattr(a, "check_rollups", original)  # noqa: B010


def _must_be_ok(result: audit.Verification) -> audit.Verification:
    if not result.ok:
        sys.exit(f"verify failed: {result.problem or result.rollups[0]}")
    return result


def _must_be_empty(found: list[Any]) -> None:
    if found:
        sys.exit(f"the rollups disagree: {found[0]}")


if __name__ == "__main__":
    main()
