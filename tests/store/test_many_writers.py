"""Many writers at once: 4 processes × 8 threads record 200,000 events into one ledger, on each backend.

Afterwards the totals are exact (count, tokens, cost to the nano-dollar), no event is stored twice,
the audit chain is one unbroken line from genesis (the processes took turns, never forked it), and
no error ("database is locked" or any other) reached a caller or even the log.

The same without luck: another connection holds the write lock for longer than a writer used
to wait, or keeps committing and taking it again; the writer waits its turn, logs nothing and
spools nothing, and a ledger opened meanwhile opens.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import tokentrail as tt
from tokentrail.events import GENESIS_HASH, chain_hash
from tokentrail.pricing import PriceBook
from tokentrail.store import open_store

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = 4
THREADS = 8
TOTAL = 200_000
PER_THREAD = TOTAL // (PROCESSES * THREADS)

# One writer process: its own Ledger, THREADS threads recording PER_THREAD events each.
WORKER = r"""
import json, logging, sys, threading
from decimal import Decimal
import tokentrail as tt
from tokentrail.events import usd_to_nano
from tokentrail.pricing import PriceBook

url, proc, threads, per_thread = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
problems = []

class Catch(logging.Handler):
    def emit(self, record):
        problems.append(f"{record.name}: {record.getMessage()}")

for name in ("tokentrail", "psycopg"):
    logging.getLogger(name).addHandler(Catch(level=logging.WARNING))

ledger = tt.Ledger(url, prices=PriceBook(overrides=""))
results, errors = [], []
go = threading.Barrier(threads)
models = ("gpt-4o", "gpt-4o-mini", "gpt-4.1")

def run(t):
    n = tokens = cost = 0
    try:
        go.wait()
        with tt.session(agent=f"agent-{proc}-{t}", team=f"team-{t % 3}", ledger=ledger):
            for i in range(per_thread):
                ev = ledger.record_llm(
                    provider="openai", model=models[i % 3],
                    input_tokens=1000 + i % 997, output_tokens=10 + i % 89, cache_read_tokens=i % 7 * 100,
                )
                n += 1
                tokens += ev.input_tokens + ev.output_tokens
                cost += usd_to_nano(ev.cost_usd)
    except BaseException as e:  # noqa: BLE001 - any exception reaching a caller fails the test
        errors.append(repr(e))
    results.append((n, tokens, cost))

workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
for w in workers:
    w.start()
for w in workers:
    w.join()
try:
    ledger.flush(timeout=600)
except Exception as e:
    errors.append(repr(e))
last_error = repr(ledger.last_error) if ledger.last_error else None
ledger.close()
print(json.dumps({
    "count": sum(r[0] for r in results), "tokens": sum(r[1] for r in results), "cost_nusd": sum(r[2] for r in results),
    "errors": errors, "problems": problems, "last_error": last_error,
}))
"""


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_many_writers_into_one_ledger(db_url: str) -> None:
    open_store(db_url).close()  # migrate once, up front (each process would also do it, safely)
    t = time.monotonic()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, db_url, str(p), str(THREADS), str(PER_THREAD)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in range(PROCESSES)
    ]
    reports = []
    for p in procs:
        out, err = p.communicate(timeout=540)
        assert p.returncode == 0, err
        assert "database is locked" not in err
        reports.append(json.loads(out.strip().splitlines()[-1]))
    elapsed = time.monotonic() - t
    for r in reports:
        assert r["errors"] == [], r["errors"]
        assert r["problems"] == [], r["problems"]  # not even a retried write
        assert r["last_error"] is None

    count = sum(r["count"] for r in reports)
    tokens = sum(r["tokens"] for r in reports)
    cost = sum(r["cost_nusd"] for r in reports)
    assert count == TOTAL
    assert cost > 0

    store = open_store(db_url)
    try:
        got = store.query(
            "SELECT COUNT(*), COUNT(DISTINCT event_id), CAST(SUM(input_tokens + output_tokens) AS BIGINT), "
            "CAST(SUM(cost_nusd) AS BIGINT), MIN(seq), MAX(seq), COUNT(DISTINCT seq) FROM events"
        )[0]
        assert tuple(int(v) for v in got) == (TOTAL, TOTAL, tokens, cost, 1, TOTAL, TOTAL)
        rolled = store.query(
            "SELECT CAST(SUM(calls) AS BIGINT), CAST(SUM(input_tokens + output_tokens) AS BIGINT), "
            "CAST(SUM(cost_nusd) AS BIGINT) FROM rollup_hourly"
        )[0]
        assert tuple(int(v) for v in rolled) == (TOTAL, tokens, cost)
        prev, n = GENESIS_HASH, 0
        for seq, prev_hash, h, row in store.chain():
            n += 1
            assert seq == n and prev_hash == prev and h == chain_hash(seq, prev_hash, row), f"bad link at {seq}"
            prev = h
        assert n == TOTAL
    finally:
        store.close()
    print(f"{TOTAL} events by {PROCESSES}×{THREADS} writers in {elapsed:.1f}s ({TOTAL / elapsed:,.0f}/s)")


# -- another process holding the write lock for a while ------------------------------------------

HOLD_S = 6.5  # longer than the 5 s a writer used to wait before it warned and spooled


class _Holder:
    """Another connection holding the ledger's write lock (SQLite: BEGIN IMMEDIATE; PostgreSQL:
    the chain head row FOR UPDATE) until released."""

    def __init__(self, url: str) -> None:
        self.url = url
        if url.startswith("sqlite"):
            import sqlite3

            from tokentrail.store import sqlite_path

            self.conn: Any = sqlite3.connect(sqlite_path(url), isolation_level=None, check_same_thread=False)
            self.conn.execute("BEGIN IMMEDIATE")
        else:
            import psycopg

            self.conn = psycopg.connect(url)
            self.conn.execute("SELECT seq FROM chain_head WHERE id = 1 FOR UPDATE")

    def release(self) -> None:
        if self.url.startswith("sqlite"):
            self.conn.execute("COMMIT")
        else:
            self.conn.commit()
        self.conn.close()


def _record_while_locked(db_url: str, spool: Path, *, open_under_lock: bool) -> tuple[int, list[str]]:
    """Record 2,000 events from 4 threads while another connection holds the write lock for
    HOLD_S seconds; returns how many are stored once flush() returns, and the warnings logged."""
    problems: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            problems.append(record.getMessage())

    catch = Catch(level=logging.WARNING)
    logging.getLogger("tokentrail").addHandler(catch)
    ledger = None if open_under_lock else tt.Ledger(db_url, prices=PriceBook(overrides=""), spool=spool)
    holder = _Holder(db_url)
    release = threading.Timer(HOLD_S, holder.release)
    release.start()
    try:
        if ledger is None:
            ledger = tt.Ledger(db_url, prices=PriceBook(overrides=""), spool=spool)

        def run(t: int) -> None:
            for i in range(500):
                ledger.record_llm(provider="openai", model="gpt-4o-mini", input_tokens=1 + i, output_tokens=t)
                if i % 100 == 0:
                    time.sleep(0.2)  # keep recording while the lock is held

        threads = [threading.Thread(target=run, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        ledger.flush(timeout=120)
        assert ledger.last_error is None
        stored = int(ledger.store.query("SELECT COUNT(DISTINCT event_id) FROM events")[0][0])
        assert not list(spool.glob("*/*.spool")), "a batch was spooled: the writer gave up on the lock"
    finally:
        release.join()
        logging.getLogger("tokentrail").removeHandler(catch)
        if ledger is not None:
            ledger.close()
    return stored, problems


@pytest.mark.timeout(120)
def test_a_writer_waits_its_turn_while_another_process_holds_the_lock(db_url: str, tmp_path: Path) -> None:
    open_store(db_url).close()
    stored, problems = _record_while_locked(db_url, tmp_path / "spool", open_under_lock=False)
    assert stored == 2000
    assert problems == []  # not "database is locked", not a spooled batch


@pytest.mark.timeout(120)
def test_a_ledger_opens_while_another_process_holds_the_lock(db_url: str, tmp_path: Path) -> None:
    open_store(db_url).close()  # an existing ledger that another agent is writing to
    stored, problems = _record_while_locked(db_url, tmp_path / "spool", open_under_lock=True)
    assert stored == 2000
    assert problems == []


def test_waiting_lasts_as_long_as_other_writers_make_progress(tmp_path: Path) -> None:
    """A neighbour that commits and takes the lock again at once, for 6 s: longer than any fixed
    wait (the old 5 s, this store's 1 s), yet it is taking turns, so the writer waits it out."""
    import sqlite3

    from tokentrail.store.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path / "ledger.db")
    store.lock_wait_s = 1.0
    ledger = tt.Ledger(store=store, prices=PriceBook(overrides=""), spool=tmp_path / "spool")
    neighbour = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None, check_same_thread=False)
    neighbour.execute("CREATE TABLE neighbour (n INTEGER)")
    neighbour.execute("BEGIN IMMEDIATE")
    problems: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            problems.append(record.getMessage())

    def keep_the_lock() -> None:
        for n in range(15):
            time.sleep(0.4)
            neighbour.execute("INSERT INTO neighbour VALUES (?)", (n,))
            neighbour.execute("COMMIT")
            if n < 14:
                neighbour.execute("BEGIN IMMEDIATE")  # at once: the writer finds it locked again

    catch = Catch(level=logging.WARNING)
    logging.getLogger("tokentrail").addHandler(catch)
    busy = threading.Thread(target=keep_the_lock)
    busy.start()
    try:
        for i in range(100):
            ledger.record_llm(provider="openai", model="gpt-4o-mini", input_tokens=1 + i)
        ledger.flush(timeout=60)
        busy.join()
        assert ledger.last_error is None and problems == []
        assert not list((tmp_path / "spool").glob("*/*.spool"))
        assert ledger.store.query("SELECT COUNT(*), SUM(input_tokens) FROM events")[0] == (100, 5050)
    finally:
        busy.join()
        logging.getLogger("tokentrail").removeHandler(catch)
        neighbour.close()
        ledger.close()
