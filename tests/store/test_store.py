"""The Store protocol, on every backend (`db_url`: SQLite, and PostgreSQL when TOKENTRAIL_TEST_PG is set)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import tokentrail as tt
from tokentrail.events import (
    COL,
    COLUMNS,
    GENESIS_HASH,
    ToolCall,
    UsageEvent,
    canonical_bytes,
    chain_hash,
    new_event_id,
    to_row,
)
from tokentrail.store import open_store
from tokentrail.store._rollup import aggregate
from tokentrail.store.migrations import MIGRATIONS
from tokentrail.store.rollup_columns import ROLLUP_DIMENSIONS, ROLLUP_MEASURES
from tokentrail.types import Store

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 3, 14, 15, 9, 26, 535897, tzinfo=UTC)


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = open_store(db_url)
    yield s
    s.close()


def event(i: int = 0, **kw: Any) -> UsageEvent:
    """A varied, realistic event (the i-th of a series)."""
    base: dict[str, Any] = dict(
        kind="llm",
        ts=T0 + timedelta(minutes=17 * i),
        latency_ms=100.5 + i,
        provider=("openai", "anthropic", "google")[i % 3],
        model=("gpt-4o", "claude-sonnet-4-6", "gemini-2.5-pro")[i % 3],
        operation="chat",
        streamed=bool(i % 2),
        input_tokens=1000 + i,
        output_tokens=200 + i,
        cache_read_tokens=i % 50,
        cache_write_tokens=i % 7,
        reasoning_tokens=i % 11,
        context_window_tokens=128_000,
        cost_usd=Decimal("0.001234567") * (i + 1),
        price_source="genai-prices",
        price_version="2026-01-01",
        unit_prices={"input_mtok": "2.5", "output_mtok": "10"},
        org="acme",
        team=("legal", "support", None)[i % 3],
        project="q4",
        agent=f"agent-{i % 4}",
        session_id=f"s-{i % 5}",
        trace_id="0af7651916cd43dd8448eb211c80319c",
        span_id=f"{i:016x}",
        user="u-17",
        customer="acme",
        workflow="review",
        task_type="analysis",
        step="planning",
        tags={"customer": "acme", "région": "ünïcødé ✓"},
        tool_calls=(ToolCall("call_1", "web_search", "abcd1234abcd1234"),),
        request_hash="f" * 64,
    )
    base.update(kw)
    return UsageEvent(**base)


def mixed_rows(n: int) -> list[tuple[Any, ...]]:
    """Rows of every kind and status the rollup treats differently."""
    rows = []
    for i in range(n):
        j = i % 6
        if j == 0:
            e = event(i)
        elif j == 1:
            e = event(i, status="error", note="upstream 500")
        elif j == 2:
            e = event(i, cost_usd=None, price_source=None, price_version=None, unit_prices=None, model="mystery")
        elif j == 3:
            e = event(i, cost_usd=None, status="invalid_usage:cached_gt_input", unit_prices=None)
        elif j == 4:
            e = event(
                i,
                kind="tool",
                provider=None,
                model=None,
                input_tokens=0,
                output_tokens=0,
                cache_read_tokens=0,
                cache_write_tokens=0,
                reasoning_tokens=0,
                cost_usd=Decimal("0.002"),
                tool_name="web_search",
                tool_call_id="call_1",
                tool_args_hash="abcd1234abcd1234",
                tool_calls=(),
            )
        else:
            e = event(i, kind="adjustment", cost_usd=Decimal("-0.0005"), adjusts_event_id=new_event_id(), note="refund")
        rows.append(to_row(e))
    return rows


def count(store: Store, where: str = "", params: tuple[Any, ...] = ()) -> int:
    return int(store.query(f"SELECT COUNT(*) FROM events {where}", params)[0][0])


def verify_chain(store: Store) -> list[tuple[Any, ...]]:
    """Walk the chain from genesis, checking every link; return the rows in seq order."""
    prev, expected, rows = GENESIS_HASH, 1, []
    for seq, prev_hash, h, row in store.chain():
        assert seq == expected, f"seq {seq} follows {expected - 1}"
        assert prev_hash == prev, f"seq {seq}: prev_hash does not match the previous hash"
        assert h == chain_hash(seq, prev_hash, row), f"seq {seq}: hash does not match the row"
        prev, expected = h, expected + 1
        rows.append(row)
    return rows


# -- schema -----------------------------------------------------------------------------------------


def test_schema_from_empty(db_url: str) -> None:
    s = open_store(db_url)  # an empty database: every migration runs
    try:
        assert isinstance(s, Store)
        names = [r[0] for r in s.query("SELECT name FROM schema_migrations ORDER BY name")]
        assert names == sorted(name for name, _ in MIGRATIONS)
        assert s.migrate() == []  # idempotent
        for table in ("events", "rollup_hourly", "outcomes", "chain_head"):
            s.query(f"SELECT * FROM {table} WHERE 1 = 0")
        assert count(s) == 0
        assert list(s.chain()) == []
        cols = s.query(f"SELECT seq, {', '.join(COLUMNS)}, prev_hash, hash FROM events WHERE 1 = 0")
        assert cols == []
        rollup_cols = ", ".join(("hour_us", *ROLLUP_DIMENSIONS, *ROLLUP_MEASURES))
        assert s.query(f"SELECT {rollup_cols} FROM rollup_hourly") == []
    finally:
        s.close()
    s2 = open_store(db_url)  # reopening an up-to-date ledger applies nothing
    try:
        assert s2.migrate() == []
    finally:
        s2.close()


def test_migrations_list_is_named_and_ordered() -> None:
    names = [name for name, _ in MIGRATIONS]
    assert names == sorted(names) and len(set(names)) == len(names)


# -- writes -----------------------------------------------------------------------------------------


def test_rows_read_back_equal_rows_written(store: Store) -> None:
    rows = mixed_rows(30)
    rows.append(
        to_row(
            event(
                99,
                latency_ms=0.1 + 0.2,  # a float that does not round-trip through decimal text
                input_tokens=2**40,
                output_tokens=0,
                cost_usd=Decimal("12345.123456789"),
                tags={"k" * 64: "v" * 256, "quote": 'it\'s "quoted" \\ \t\n'},
                content="línea 1\nline 2\ttab \\ backslash 🚀",
                team="",
            )
        )
    )
    assert store.write_events(rows) == len(rows)
    for r in rows:
        back = store.get_event(r[0])
        assert back is not None
        assert tuple(back) == r
        assert canonical_bytes(tuple(back)) == canonical_bytes(r)
    assert [tuple(r) for r in verify_chain(store)] == rows
    assert store.get_event(new_event_id()) is None


def test_integer_latency_reads_back_as_stored(store: Store) -> None:
    """latency_ms is a REAL column, so a reader gets 12.0 for 12: the row (and its hash) says 12.0."""
    row = to_row(event(1, latency_ms=12))
    assert type(row[COL["latency_ms"]]) is float
    assert store.write_events([row]) == 1
    [back] = verify_chain(store)
    assert back == row


def test_same_batch_twice_inserts_once(store: Store) -> None:
    rows = mixed_rows(12)
    assert store.write_events(rows) == 12
    assert store.write_events(rows) == 0
    assert store.write_events(list(reversed(rows))) == 0
    assert count(store) == 12
    assert len(verify_chain(store)) == 12


def test_duplicate_inside_one_batch(store: Store) -> None:
    rows = mixed_rows(5)
    changed = list(rows[2])
    changed[COL["input_tokens"]] = 999_999  # same event_id, other content: the first one wins
    batch = [rows[0], rows[1], rows[2], rows[0], tuple(changed), rows[3], rows[4], rows[4]]
    assert store.write_events(batch) == 5
    assert count(store) == 5
    assert [r[0] for r in verify_chain(store)] == [r[0] for r in rows]
    assert store.get_event(rows[2][0]) == rows[2]


def test_new_and_known_rows_in_one_batch(store: Store) -> None:
    rows = mixed_rows(10)
    assert store.write_events(rows[:4]) == 4
    assert store.write_events(rows) == 6
    assert [r[0] for r in verify_chain(store)] == [r[0] for r in rows]


@pytest.mark.parametrize("shift", [timedelta(microseconds=1), timedelta(days=45), timedelta(days=-400 * 365)])
def test_replayed_event_with_another_ts_is_refused(store: Store, shift: timedelta) -> None:
    """UNIQUE(event_id) holds across the whole ledger: on PostgreSQL the replay lands in another
    monthly partition (or the DEFAULT one), and must be refused all the same."""
    original = event(3)
    assert store.write_events([to_row(original)]) == 1
    replay = to_row(event(3, event_id=original.event_id, ts=original.ts + shift, input_tokens=5))
    assert store.write_events([replay]) == 0
    assert store.write_events([replay, to_row(event(4))]) == 1
    assert count(store, f"WHERE event_id = {store.dialect.param}", (original.event_id,)) == 1
    got = store.get_event(original.event_id)
    assert got is not None and got[COL["ts_us"]] == to_row(original)[COL["ts_us"]]


def test_outcomes_are_idempotent(store: Store) -> None:
    rows = [
        (new_event_id(), 1_700_000_000_000_000 + i, "contract_reviewed", 1 + i % 2, f"s-{i}", "acme", "legal")
        + (None,) * 6
        for i in range(7)
    ]
    assert store.write_outcomes(rows) == 7
    assert store.write_outcomes(rows + rows[:2]) == 0
    assert store.write_outcomes([rows[0], rows[0]]) == 0
    got = store.query("SELECT outcome_id, ts_us, name, count, session_id FROM outcomes ORDER BY ts_us")
    assert [tuple(r) for r in got] == [r[:5] for r in rows]


def test_execute_write_and_query_params(store: Store) -> None:
    p = store.dialect.param
    rows = mixed_rows(6)
    store.write_events(rows)
    n = store.execute_write(
        f"INSERT INTO outcomes (outcome_id, ts_us, name, count) VALUES ({p}, {p}, {p}, {p})", ("o-1", 1, "x", 2)
    )
    assert n == 1
    assert store.query(f"SELECT name, count FROM outcomes WHERE outcome_id = {p}", ("o-1",)) == [("x", 2)]
    teams = store.query(f"SELECT team, COUNT(*) FROM events WHERE team = {p} GROUP BY team", ("legal",))
    assert teams == [("legal", 2)]
    tag, key = store.dialect.json_text("tags"), store.dialect.json_key("customer")
    assert store.query(f"SELECT COUNT(*) FROM events WHERE {tag} = {p}", (key, "acme"))[0][0] == 6


@pytest.mark.parametrize("statement", ["UPDATE events SET model = 'x'", "DELETE FROM events"])
def test_events_are_append_only(store: Store, statement: str) -> None:
    store.write_events(mixed_rows(3))
    with pytest.raises(Exception, match="append-only"):
        store.execute_write(statement)
    assert count(store) == 3
    assert len(verify_chain(store)) == 3


# -- the audit chain -------------------------------------------------------------------------------


def test_chain_order_and_hashes_from_genesis(store: Store) -> None:
    all_rows = mixed_rows(40)
    batches = [all_rows[:1], all_rows[1:17], all_rows[17:18], all_rows[18:]]
    for b in batches:
        store.write_events(list(reversed(b)))  # the chain follows write order, not ts or id order
    expected = [r for b in batches for r in reversed(b)]
    got = verify_chain(store)
    assert [r[0] for r in got] == [r[0] for r in expected]
    links = list(store.chain())
    assert links[0][1] == GENESIS_HASH
    tail = list(store.chain(from_seq=25))
    assert [link[0] for link in tail] == list(range(25, 41))
    assert tail == links[24:]
    assert list(store.chain(from_seq=41)) == []


def test_chain_has_no_fork_under_concurrent_writers(db_url: str) -> None:
    """Several threads, each with its own store object (its own connections), write at once."""
    stores = [open_store(db_url) for _ in range(4)]
    errors: list[BaseException] = []

    def writer(s: Store, k: int) -> None:
        try:
            for b in range(10):
                s.write_events([to_row(event(k * 1000 + b * 10 + i)) for i in range(10)])
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(s, k)) for k, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors
        rows = verify_chain(stores[0])
        assert len(rows) == 400 == len({r[0] for r in rows})
    finally:
        for s in stores:
            s.close()


# -- rollups ----------------------------------------------------------------------------------------

_ROLLUP_SELECT = ", ".join(("hour_us", *ROLLUP_DIMENSIONS, *ROLLUP_MEASURES))


def _raw_rollup_sql() -> str:
    """The rollup recomputed from raw events in plain SQL (what reports would do without rollups)."""
    dims = ", ".join(f"COALESCE({d}, '')" for d in ROLLUP_DIMENSIONS)
    llm = "kind IN ('llm', 'embedding') AND cost_nusd IS NULL"

    def total(expr: str) -> str:
        return f"CAST(SUM({expr}) AS BIGINT)"

    measures = [
        total("CASE WHEN kind IN ('llm', 'embedding') THEN 1 ELSE 0 END"),
        total("CASE WHEN kind <> 'adjustment' AND status <> 'ok' THEN 1 ELSE 0 END"),
        *(total(c) for c in ROLLUP_MEASURES[2:7]),
        total("COALESCE(cost_nusd, 0)"),
        total(f"CASE WHEN {llm} AND status NOT LIKE 'invalid_usage%' THEN 1 ELSE 0 END"),
        total(f"CASE WHEN {llm} AND status LIKE 'invalid_usage%' THEN 1 ELSE 0 END"),
        total("CASE WHEN kind = 'tool' THEN 1 ELSE 0 END"),
        total("usage_estimated"),
    ]
    keys = ", ".join(str(i) for i in range(1, len(ROLLUP_DIMENSIONS) + 2))
    return (
        f"SELECT ts_us - ts_us % 3600000000, {dims}, {', '.join(measures)} FROM events GROUP BY {keys} ORDER BY {keys}"
    )


def test_rollup_equals_aggregate_over_raw_events(store: Store) -> None:
    rows = mixed_rows(300)
    for i in range(0, 300, 37):  # many batches, which add into the same rollup rows
        store.write_events(rows[i : i + 37])
    store.write_events(rows[:50])  # a replay adds nothing
    rollup = sorted(
        tuple(int(v) if isinstance(v, Decimal) else v for v in r)
        for r in store.query(f"SELECT {_ROLLUP_SELECT} FROM rollup_hourly")
    )
    raw = sorted(tuple(int(v) if isinstance(v, Decimal) else v for v in r) for r in store.query(_raw_rollup_sql()))
    assert rollup == raw
    assert rollup == sorted(aggregate(rows))
    assert len(rollup) > 20
    # The money adds up to the nano-dollar.
    total_nusd = sum(r[COL["cost_nusd"]] or 0 for r in rows)
    assert sum(r[1 + len(ROLLUP_DIMENSIONS) + 7] for r in rollup) == total_nusd


# -- durability ------------------------------------------------------------------------------------

_READER = """
import json, sys
from tokentrail.events import canonical_bytes
from tokentrail.store import open_store
s = open_store(sys.argv[1])
out = [canonical_bytes(row).decode() for _, _, _, row in s.chain()]
s.close()
print(json.dumps(out))
"""


def test_durable_after_flush_another_process_reads_them(db_url: str, prices: tt.PriceBook) -> None:
    ledger = tt.Ledger(db_url, prices=prices)
    try:
        written = []
        with tt.session(agent="durable", team="ops", ledger=ledger):
            for i in range(250):
                ev = ledger.record_llm(provider="openai", model="gpt-4o", input_tokens=100 + i, output_tokens=i)
                written.append(canonical_bytes(to_row(ev)).decode())
        ledger.flush(timeout=30)
        # The ledger is still open: the other process sees what flush() promised was durable.
        proc = subprocess.run(
            [sys.executable, "-c", _READER, db_url], capture_output=True, text=True, timeout=120, cwd=ROOT
        )
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout) == written
    finally:
        ledger.close()
