"""Sustained durable ingest through the ledger, against a raw baseline of the same rows, in one run.

    .venv/bin/python bench/ingest.py                                  # SQLite (a temporary file)
    .venv/bin/python bench/ingest.py --db postgresql://… --events 200000

Ledger: `Ledger.record()` of N prebuilt events, then `flush()` (everything durable), timed end to
end: queueing, the writer thread, chaining (SHA-256 per event), rollups, idempotency on event_id,
commits.

Baseline, the same rows (already chained, so it pays for none of that) into an identical `events`
table (made by the same migrations) in the same database:
  - SQLite: `executemany` INSERT, one transaction per batch, WAL, synchronous=FULL;
  - PostgreSQL: raw `COPY … FROM STDIN`, one transaction per batch (the table is partitioned the
    same way, with the same indexes), in a schema of its own.

Targets (issue 17): SQLite ≥ 0.7× raw executemany; PostgreSQL ≥ 50k events/s and ≥ 0.6× raw COPY.

PostgreSQL on this host: the CPU seconds each run took are printed too (this process, plus the
server's processes, read from /proc), with their ratio: on a machine shared with other work the
wall-clock ratio swings with the load, the CPU ratio much less.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import sqlite3
import sys
import tempfile
import time
from contextlib import closing
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import tokentrail as tt
from tokentrail.events import COLUMNS, GENESIS_HASH, UsageEvent, chain_hash, new_event_id, to_row
from tokentrail.writer import MAX_BATCH
from tokentrail.store import open_store, sqlite_path

Row = tuple[Any, ...]


def make_events(n: int, seed: int = 7) -> list[UsageEvent]:
    """Realistic events as a busy fleet records them live: time-ordered ids and timestamps (1 ms
    apart), 40 agents in 8 teams, 4 models, thousands of sessions, varied token counts."""
    rnd = random.Random(seed)
    start = datetime.now(UTC) - timedelta(milliseconds=n)
    agents = [f"agent-{i}" for i in range(40)]
    team_of = {a: f"team-{i % 8}" for i, a in enumerate(agents)}
    models = [("openai", "gpt-4o"), ("openai", "gpt-4o-mini"), ("anthropic", "claude-sonnet-4-6"), ("google", "gemini")]
    out = []
    session_tags: dict[str, dict[str, str]] = {}  # as live: a session's events share its tags
    for i in range(n):
        provider, model = models[i % len(models)]
        agent = rnd.choice(agents)
        inp = rnd.randint(200, 20_000)
        cached = rnd.randint(0, inp // 2)
        out_t = rnd.randint(10, 2_000)
        out.append(
            UsageEvent(
                event_id=new_event_id(),
                ts=start + timedelta(milliseconds=i, microseconds=rnd.randint(0, 999)),
                latency_ms=float(rnd.randint(50, 9_000)),
                provider=provider,
                model=model,
                operation="chat",
                input_tokens=inp,
                output_tokens=out_t,
                cache_read_tokens=cached,
                reasoning_tokens=rnd.randint(0, out_t),
                context_window_tokens=128_000,
                cost_usd=Decimal(inp * 2_500 + out_t * 10_000).scaleb(-9),
                price_source="genai-prices",
                price_version="2026-01",
                unit_prices={"input_mtok": "2.5", "output_mtok": "10"},
                org="acme",
                team=team_of[agent],
                project="q4",
                agent=agent,
                session_id=(session := f"s-{rnd.randint(0, 5_000)}"),
                trace_id=secrets.token_hex(16),
                span_id=secrets.token_hex(8),
                user=f"u-{rnd.randint(0, 200)}",
                task_type="analysis",
                step="planning",
                tags=session_tags.setdefault(session, {"customer": f"c-{rnd.randint(0, 50)}"}),
            )
        )
    return out


def chained(rows: list[Row]) -> list[Row]:
    prev, out = GENESIS_HASH, []
    for seq, row in enumerate(rows, 1):
        h = chain_hash(seq, prev, row)
        out.append((seq, *row, prev, h))
        prev = h
    return out


def batches(rows: list[Row], size: int) -> list[list[Row]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


# -- the ledger ----------------------------------------------------------------------------------


def run_ledger(url: str, events: list[UsageEvent]) -> float:
    """Seconds to record every event through a Ledger and flush them durable (no spool: a store
    failure ends the run instead of hiding in a spool file)."""
    ledger = tt.Ledger(url, prices=tt.PriceBook(overrides=""), spool=False)
    try:
        ledger.flush()
        t = time.perf_counter()
        record = ledger.record
        for e in events:
            record(e, session=None)
        ledger.flush(timeout=900)
        elapsed = time.perf_counter() - t
        n = ledger.store.query("SELECT COUNT(*) FROM events")[0][0]
        if n != len(events):
            sys.exit(f"ledger stored {n} events, expected {len(events)}")
        return elapsed
    finally:
        ledger.close()


# -- SQLite baseline -----------------------------------------------------------------------------


def run_sqlite_raw(path: Path, rows: list[Row], batch: int) -> float:
    open_store(f"sqlite:///{path}").close()  # the same schema, made by the same migrations
    marks = ", ".join("?" * (len(COLUMNS) + 3))
    sql = f"INSERT INTO events (seq, {', '.join(COLUMNS)}, prev_hash, hash) VALUES ({marks})"
    with closing(sqlite3.connect(path, isolation_level=None)) as c:
        c.execute("PRAGMA journal_mode = WAL")
        c.execute("PRAGMA synchronous = FULL")
        t = time.perf_counter()
        for b in batches(rows, batch):
            c.execute("BEGIN IMMEDIATE")
            c.executemany(sql, b)
            c.execute("COMMIT")
        return time.perf_counter() - t


# -- PostgreSQL baseline -------------------------------------------------------------------------


def pg_schema_url(url: str, schema: str) -> str:
    extra = f"options={quote(f'-csearch_path={schema}', safe='')}"
    return f"{url}{'&' if '?' in url else '?'}{extra}"


def run_pg_raw(url: str, rows: list[Row], batch: int) -> float:
    import psycopg

    open_store(url).close()  # the same partitioned table, partitions and indexes
    copy_sql = f"COPY events (seq, {', '.join(COLUMNS)}, prev_hash, hash) FROM STDIN"
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.cursor()
        t = time.perf_counter()
        for b in batches(rows, batch):
            with conn.transaction(), cur.copy(copy_sql) as copy:
                for r in b:
                    copy.write_row(r)
        return time.perf_counter() - t


def server_cpu_s(url: str) -> float | None:
    """CPU seconds used so far by a PostgreSQL server on this host (the postmaster, the children
    it reaped and those alive), or None when its processes cannot be read (another host)."""
    import psycopg

    try:
        with psycopg.connect(url, autocommit=True) as c:
            row = c.execute("SELECT current_setting('data_directory')").fetchone()
        pm = int((Path(row[0]) / "postmaster.pid").read_text().split()[0]) if row else 0
        tick, total = os.sysconf("SC_CLK_TCK"), 0
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = (Path("/proc") / entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # the process ended meanwhile
                continue
            if int(entry) == pm:
                total += sum(int(x) for x in stat[11:15])  # its own CPU and its reaped children's
            elif int(stat[1]) == pm:
                total += int(stat[11]) + int(stat[12])
        return total / tick if pm else None
    except (OSError, ValueError, psycopg.Error):  # not readable here (another host, no permission)
        return None


def timed_cpu(url: str, fn: Any, *args: Any) -> tuple[float, float, float | None]:
    """fn(*args)'s seconds, and the CPU seconds of this process and of the server it took."""
    server, client = server_cpu_s(url), time.process_time()
    seconds = fn(*args)
    client = time.process_time() - client
    after = server_cpu_s(url)
    return seconds, client, None if server is None or after is None else after - server


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--db", default=None, help="sqlite:///file.db (default: a temporary file) or postgresql://…")
    ap.add_argument("--events", type=int, default=200_000, help="events per run (default 200000)")
    ap.add_argument(
        "--batch",
        type=int,
        default=None,
        help=f"rows per transaction in the baseline (default: 10000 for COPY, {MAX_BATCH} for SQLite)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the PostgreSQL schemas / SQLite files afterwards")
    args = ap.parse_args()

    events = make_events(args.events)
    rows = chained([to_row(e) for e in events])
    n = len(events)
    url = args.db or f"sqlite:///{Path(tempfile.mkdtemp(prefix='tt-bench-')) / 'ledger.db'}"

    if url.startswith(("postgresql://", "postgres://")):
        import psycopg

        backend, batch = "postgresql", args.batch or 10_000
        tag = f"{os.getpid()}_{secrets.token_hex(3)}"
        schemas = (f"tt_bench_ledger_{tag}", f"tt_bench_raw_{tag}")
        with psycopg.connect(url, autocommit=True) as c:
            for s in schemas:
                c.execute(f"CREATE SCHEMA {s}")
        try:
            raw_s, raw_client, raw_server = timed_cpu(url, run_pg_raw, pg_schema_url(url, schemas[1]), rows, batch)
            ledger_s, ledger_client, ledger_server = timed_cpu(url, run_ledger, pg_schema_url(url, schemas[0]), events)
        finally:
            if not args.keep:
                with psycopg.connect(url, autocommit=True) as c:
                    for s in schemas:
                        c.execute(f"DROP SCHEMA {s} CASCADE")
        baseline = f"raw COPY, {batch} rows per transaction"
    else:
        backend, batch = "sqlite", args.batch or MAX_BATCH
        path = sqlite_path(url)
        raw_path = path.with_name(path.stem + "-raw" + path.suffix)
        for p in (path, raw_path):
            for suffix in ("", "-wal", "-shm"):
                Path(f"{p}{suffix}").unlink(missing_ok=True)
        raw_s = run_sqlite_raw(raw_path, rows, batch)
        ledger_s = run_ledger(url, events)
        if not args.keep:
            for p in (path, raw_path):
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{p}{suffix}").unlink(missing_ok=True)
        baseline = f"raw executemany, {batch} rows per transaction"

    ledger_rate, raw_rate = n / ledger_s, n / raw_s
    ratio = ledger_rate / raw_rate
    print(f"backend          {backend}   ({n} events)")
    print(f"ledger           {ledger_rate:>10,.0f} events/s   (record() + flush(), {ledger_s:.2f} s)")
    print(f"baseline         {raw_rate:>10,.0f} events/s   ({baseline}, {raw_s:.2f} s)")
    print(f"ratio            {ratio:>10.2f} x")
    if backend == "postgresql":
        for name, client, server in (("ledger", ledger_client, ledger_server), ("baseline", raw_client, raw_server)):
            shown = "?" if server is None else f"{server:.2f}"
            print(f"{name + ' CPU':16} client {client:.2f} s + server {shown} s")
        if ledger_server is not None and raw_server is not None:
            cpu_ratio = (raw_client + raw_server) / (ledger_client + ledger_server)
            print(f"ratio (CPU)      {cpu_ratio:>10.2f} x   (load average {os.getloadavg()[0]:.1f})")
        ok = ledger_rate >= 50_000 and ratio >= 0.6
        print(f"target           >= 50,000 events/s and >= 0.6x raw COPY: {'met' if ok else 'NOT met'}")
    else:
        ok = ratio >= 0.7
        print(f"target           >= 0.7x raw executemany: {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
