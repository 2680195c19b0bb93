"""What the audit chain costs: durable ingest with the chain on vs off, in the same run, and how fast
`audit verify` walks a chain.

    .venv/bin/python bench/audit.py                                   # SQLite (a temporary file)
    .venv/bin/python bench/audit.py --db postgresql://… --events 200000
    .venv/bin/python bench/audit.py --db sqlite:///x.db --db postgresql://…   # both, one after the other

Ingest: `Ledger.record()` of N prebuilt events, then `flush()`, into a fresh ledger each run (a new
SQLite file, a new PostgreSQL schema), alternating on/off runs so that drift hits both alike; the
median of `--runs` runs each.

"Off" replaces `chain_hash` in the store modules with a constant for the run (nothing in the
product has a switch): the canonical JSON and SHA-256 of every row are skipped, while the rest of
the chain stays (the `seq`, `prev_hash` and `hash` columns, the chain-head row locked and moved per
batch), so "on vs off" is the cost of hashing. Verify: `tokentrail.audit.verify` over the chain
just written, from genesis.

Target (issue 4): the chain costs <= 15 % of ingest throughput.
"""

from __future__ import annotations

import argparse
import importlib
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ingest import make_events, pg_schema_url, run_ledger

from tokentrail import audit
from tokentrail.events import GENESIS_HASH, UsageEvent, chain_hash, to_row
from tokentrail.store import open_store

_CONSTANT = bytes(32)


@contextmanager
def chain_off() -> Iterator[None]:
    """Skip the hashing in the stores for the duration (a benchmark-only patch)."""
    modules = [importlib.import_module("tokentrail.store.sqlite")]
    try:
        modules.append(importlib.import_module("tokentrail.store.postgres"))
    except Exception:
        pass  # no psycopg: SQLite only
    originals = [m.chain_hash for m in modules]
    for m in modules:
        m.chain_hash = lambda seq, prev, row: _CONSTANT
    try:
        yield
    finally:
        for m, fn in zip(modules, originals, strict=True):
            m.chain_hash = fn


def fresh_ledgers(base: str) -> tuple[Callable[[], str], Callable[[], None]]:
    """A factory of URLs to new, empty ledgers on the backend `base` names, and a cleanup."""
    if base.startswith(("postgresql://", "postgres://")):
        import psycopg

        schemas: list[str] = []

        def new_pg() -> str:
            name = f"tt_bench_audit_{secrets.token_hex(4)}"
            with psycopg.connect(base, autocommit=True) as c:
                c.execute(f"CREATE SCHEMA {name}")
            schemas.append(name)
            return pg_schema_url(base, name)

        def drop_pg() -> None:
            with psycopg.connect(base, autocommit=True) as c:
                for name in schemas:
                    c.execute(f"DROP SCHEMA {name} CASCADE")

        return new_pg, drop_pg
    folder = Path(tempfile.mkdtemp(prefix="tt-bench-audit-"))
    count = iter(range(1_000_000))

    def new_sqlite() -> str:
        return f"sqlite:///{folder / f'ledger-{next(count)}.db'}"

    def drop_sqlite() -> None:
        for p in folder.iterdir():
            p.unlink()
        folder.rmdir()

    return new_sqlite, drop_sqlite


def hashing_us(events: list[UsageEvent]) -> float:
    rows = [to_row(e) for e in events[:50_000]]
    t = time.perf_counter()
    prev = GENESIS_HASH
    for seq, row in enumerate(rows, 1):
        prev = chain_hash(seq, prev, row)
    return (time.perf_counter() - t) / len(rows) * 1e6


def bench(base: str, events: list[UsageEvent], runs: int) -> None:
    new, drop = fresh_ledgers(base)
    on: list[float] = []
    off: list[float] = []
    last_on = ""
    try:
        for i in range(runs):
            for mode in ("on", "off") if i % 2 == 0 else ("off", "on"):
                url = new()
                if mode == "on":
                    on.append(run_ledger(url, events))
                    last_on = url
                else:
                    with chain_off():
                        off.append(run_ledger(url, events))
        store: Any = open_store(last_on)
        try:
            t = time.perf_counter()
            result = audit.verify(store)
            verify_s = time.perf_counter() - t
        finally:
            store.close()
        if not result.ok:
            sys.exit(f"verify failed: {result.problem}")
    finally:
        drop()
    n = len(events)
    on_rate, off_rate = n / statistics.median(on), n / statistics.median(off)
    cost = 1 - on_rate / off_rate
    backend = "postgresql" if base.startswith("postgres") else "sqlite"
    print(f"backend          {backend}   ({n:,} events, median of {runs} runs each, alternating)")
    print(f"chain on         {on_rate:>10,.0f} events/s   (runs: {', '.join(f'{n / s:,.0f}' for s in on)})")
    print(f"chain off        {off_rate:>10,.0f} events/s   (runs: {', '.join(f'{n / s:,.0f}' for s in off)})")
    print(f"chain cost       {cost:>10.1%}      of throughput (on/off = {on_rate / off_rate:.3f} x)")
    print(f"target           <= 15 %: {'met' if cost <= 0.15 else 'NOT met'}")
    print(
        f"verify           {n / verify_s:>10,.0f} events/s   ({verify_s:.2f} s from genesis; "
        f"10M events ≈ {10_000_000 / (n / verify_s) / 60:.1f} min)"
    )
    print(f"load average     {os.getloadavg()[0]:.2f} (1 min, {os.cpu_count()} CPUs): a busy machine blurs the runs")
    print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--db", action="append", help="sqlite:///… (a folder for fresh files is used) or postgresql://…")
    ap.add_argument("--events", type=int, default=100_000, help="events per run (default 100000)")
    ap.add_argument("--runs", type=int, default=3, help="runs of each mode (default 3)")
    args = ap.parse_args()
    events = make_events(args.events)
    print(f"hashing          {hashing_us(events):>10.2f} µs/event   (canonical JSON + SHA-256, one core)\n")
    for base in args.db or ["sqlite"]:
        bench(base, events, args.runs)


if __name__ == "__main__":
    main()
