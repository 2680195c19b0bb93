"""Budget enforcement on the hot path: reserve + post latency (p50 / p99) against a run with no
budgets in the same process, on SQLite and PostgreSQL; and decisions per second with 4 processes.

    .venv/bin/python bench/budgets.py [--n 3000] [--db sqlite:///… | postgresql://…] [--procs 4] [--seconds 5]

Targets (issue 5): SQLite ≤ 600 µs p50 with at most two fsyncs per call; PostgreSQL ≤ 3 ms p50.
"reserve + post" is what a metered call adds: estimate the request, reserve on every budget that
applies (one transaction), then post the call's actual cost (another). Without budgets the same
two calls cost one cached check.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _stats import summary

import tokentrail as tt
from tokentrail.events import UsageEvent
from tokentrail.pricing import PriceBook

BODY = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "You are a careful contract analyst. " * 10},
        {"role": "user", "content": "Summarise the indemnity clause of the attached agreement. " * 20},
    ],
    "max_tokens": 500,
}


def fsyncs_per_call(url: str) -> str:
    """fsync/fdatasync calls per reserve+post, counted by strace when it is installed."""
    import shutil

    if not url.startswith("sqlite") or shutil.which("strace") is None:
        return "n/a (strace not installed)" if url.startswith("sqlite") else "n/a (server side)"
    n = 300
    code = (
        "import sys; sys.path.insert(0, 'bench'); import budgets as b; b.loop(sys.argv[1], int(sys.argv[2]), warm=50)"
    )
    out = subprocess.run(
        ["strace", "-f", "-c", "-e", "trace=fsync,fdatasync", sys.executable, "-c", code, url, str(n)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent.parent,
        check=False,
    )
    calls = 0
    for line in out.stderr.splitlines():
        parts = line.split()
        if parts and parts[-1] in ("fsync", "fdatasync"):
            calls += int(parts[3])
    return f"{calls / n:.2f} (strace, {n} calls, incl. the event writer's own commits)"


def fsync_baseline_us(n: int = 300) -> float:
    """p50 of one durable SQLite commit (WAL, synchronous=FULL) on this disk, right now: the floor
    under a post, to read the figures against (it moves a lot with the machine's load)."""
    import sqlite3

    path = Path(tempfile.mkdtemp()) / "fsync.db"
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA journal_mode = WAL")
    c.execute("PRAGMA synchronous = FULL")
    c.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v INTEGER)")
    c.execute("INSERT INTO t VALUES (1, 0)")
    out = []
    for _ in range(n):
        t = time.perf_counter_ns()
        c.execute("BEGIN IMMEDIATE")
        c.execute("UPDATE t SET v = v + 1 WHERE k = 1")
        c.execute("COMMIT")
        out.append((time.perf_counter_ns() - t) / 1000)
    c.close()
    return summary(out)["p50"]


def loop(url: str, n: int, *, warm: int = 0) -> None:
    """Reserve + post n times on an existing ledger that has budgets (for strace)."""
    ledger = tt.Ledger(url, prices=PriceBook(overrides=""), spool=False)
    with tt.session(agent="bench", team="perf", ledger=ledger):
        for _ in range(warm + n):
            one(ledger)
    ledger.close()


def one(ledger: tt.Ledger) -> None:
    hold = ledger.budgets.reserve_call(provider="openai", model="gpt-4o-mini", body=BODY)
    if hold is not None:
        ev = UsageEvent(
            input_tokens=300,
            output_tokens=120,
            cost_usd=tt.price(provider="openai", model="gpt-4o-mini", input_tokens=300, output_tokens=120).total_usd,
        )  # type: ignore[union-attr]
        ledger.budgets.settle(hold, ev)


def timed(ledger: tt.Ledger, n: int) -> list[float]:
    out = []
    clock = time.perf_counter_ns
    for _ in range(200):
        one(ledger)
    for _ in range(n):
        t = clock()
        one(ledger)
        out.append((clock() - t) / 1000)
    return out


def worker(url: str, seconds: float, proc: int) -> None:
    ledger = tt.Ledger(url, prices=PriceBook(overrides=""), spool=False)
    refused = done = 0
    with tt.session(agent=f"bench-{proc}", team="perf", ledger=ledger):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                one(ledger)
                done += 1
            except tt.BudgetExceeded:
                refused += 1
    ledger.close()
    print(json.dumps({"done": done, "refused": refused}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--db", default=None)
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--worker", nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.db, float(args.worker[0]), int(args.worker[1]))
        return
    url = args.db or f"sqlite:///{tempfile.mkdtemp()}/bench.db"
    ledger = tt.Ledger(url, prices=PriceBook(overrides=""), spool=False)
    with tt.session(agent="bench", team="perf", ledger=ledger):
        base = summary(timed(ledger, args.n))
        ledger.budgets.set("bench-team", scope={"team": "perf"}, period="month", limit_usd=1_000_000)
        ledger.budgets.set("bench-agent", scope={"agent": "*"}, period="day", limit_usd=1_000_000, tz="Europe/Paris")
        one_budget = summary(timed(ledger, args.n))
    ledger.close()
    backend = "PostgreSQL" if url.startswith("postgres") else "SQLite"
    print(f"budgets on {backend} ({url if backend == 'SQLite' else 'server'}), {args.n} calls, 2 budgets apply:")
    print(f"  no budgets:      reserve + post p50 {base['p50']:8.1f} us  p99 {base['p99']:8.1f} us")
    print(f"  with budgets:    reserve + post p50 {one_budget['p50']:8.1f} us  p99 {one_budget['p99']:8.1f} us")
    print(f"  added p50 {one_budget['p50'] - base['p50']:.1f} us (x{one_budget['p50'] / max(base['p50'], 0.001):,.0f})")
    target = 600 if backend == "SQLite" else 3000
    print(f"  target p50 <= {target} us: {'met' if one_budget['p50'] <= target else 'NOT met'}")
    print(f"  fsyncs per call: {fsyncs_per_call(url)}")
    print(f"  for scale: one durable SQLite commit on this disk now: p50 {fsync_baseline_us():.0f} us")

    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--db", url, "--worker", str(args.seconds), str(p)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ},
        )
        for p in range(args.procs)
    ]
    results = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    total = sum(r["done"] + r["refused"] for r in results)
    print(
        f"  {args.procs} processes x {args.seconds:g}s: {total / args.seconds:,.0f} decisions/s (reserve + post each)"
    )


if __name__ == "__main__":
    main()
