"""The writer's row encoding, made faster, keeps its bytes: the audit chain's hashes of fixed events
are pinned (computed before the fast paths existed), the common case of canonical_bytes agrees
with the column-by-column rule on odd default values, and the JSON of tags and unit prices,
remembered by content, never mixes up values that are equal but encode differently."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tokentrail.events import (
    COLUMNS,
    GENESIS_HASH,
    V1_COLUMNS,
    UsageEvent,
    _mapping_json,
    canonical_bytes,
    chain_hash,
    to_row,
)
from tokentrail.store.rollup_check import check_rollups
from tokentrail.store.sqlite import SQLiteStore


def fixed_event(**kw: Any) -> UsageEvent:
    base: dict[str, Any] = {
        "event_id": "0190f0aa-0000-7000-8000-000000000001",
        "ts": datetime(2026, 1, 5, 10, 0, 1, 250, tzinfo=UTC),
        "provider": "openai",
        "model": "gpt-4o",
        "input_tokens": 1200,
        "output_tokens": 80,
        "cache_read_tokens": 300,
        "cost_usd": Decimal("0.003800000"),
        "unit_prices": {"input_mtok": "2.5", "output_mtok": "10"},
        "org": "acme",
        "team": "legal",
        "user": "u-1",
        "tags": {"region": "eu", "bu": 'ré"tail'},
        "latency_ms": 812.5,
    }
    return UsageEvent(**{**base, **kw})


@pytest.mark.parametrize(
    ("extra", "link"),
    [
        ({}, "cbde4ea476107194da9c882618ce7a83edf7a6f9c4f307d7bea8f0ede9e15985"),
        ({"usage_estimated": True}, "bc6f69e91751e669d3b9a505abdf8d7da837ee32930a836a29050ad3b694c690"),
        ({"prefix_hash": "ab" * 8}, "dee1bb033c1985c1ffe4534c7f219db84d68788eacf99ed36bd5e7142be4c250"),
    ],
)
def test_the_chain_hash_of_a_fixed_event_is_unchanged(extra: dict[str, Any], link: str) -> None:
    row = to_row(fixed_event(**extra))
    assert chain_hash(1, GENESIS_HASH, row).hex() == link
    assert to_row(fixed_event(**extra)) == row  # the second encoding (remembered JSON) is the same


def _reference(row: tuple[Any, ...]) -> bytes:
    """canonical_bytes' rule, column by column: trailing added columns at their default left out."""
    defaults = (0, 0, 0, 0, None, None)
    end = len(row)
    while end > V1_COLUMNS:
        d, v = defaults[end - 1 - V1_COLUMNS], row[end - 1]
        if not (v is None if d is None else (v is not None and v == d)):
            break
        end -= 1
    return canonical_bytes(row[:end])  # a row of V1_COLUMNS (or with a set column last) takes the loop


@pytest.mark.parametrize(
    "tail",
    [(0, 0, 0, 0, None, None), (False, 0.0, 0, 0, None, None), (None, 0, 0, 0, None, None), (0, 0, 0, 0, "", None)],
)
def test_the_common_case_of_canonical_bytes_follows_the_rule(tail: tuple[Any, ...]) -> None:
    row = (*to_row(fixed_event())[:V1_COLUMNS], *tail)
    assert len(row) == len(COLUMNS)
    assert canonical_bytes(row) == _reference(row)


def test_mapping_json_never_mixes_up_equal_values_of_other_types() -> None:
    seen = [_mapping_json({"a": v}) for v in ("1", 1, True, 1.0, "1", 1, True)]
    assert seen == ['{"a":"1"}', '{"a":1}', '{"a":true}', '{"a":1.0}', '{"a":"1"}', '{"a":1}', '{"a":true}']


def test_mapping_json_of_a_dict_changed_in_place_is_its_new_content() -> None:
    tags = {"region": "eu"}
    assert _mapping_json(tags) == '{"region":"eu"}'
    tags["region"] = "us"
    tags["bu"] = "retail"
    assert _mapping_json(tags) == '{"bu":"retail","region":"us"}'
    assert _mapping_json({"bu": "retail", "region": "us"}) == _mapping_json(tags)  # another order, same JSON


def test_the_sqlite_writer_stores_the_hashes_as_blobs(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "l.db")
    try:
        rows = [to_row(fixed_event(event_id=f"0190f0aa-0000-7000-8000-00000000000{i}")) for i in range(1, 4)]
        assert store.write_events(rows) == 3
        stored = store.query("SELECT typeof(prev_hash), typeof(hash), prev_hash, hash FROM events ORDER BY seq")
        assert [r[:2] for r in stored] == [("blob", "blob")] * 3
        assert all(type(r[2]) is bytes and type(r[3]) is bytes for r in stored)
        assert [r[2] for r in stored] == [GENESIS_HASH, stored[0][3], stored[1][3]]
        assert stored[2][3] == store.query("SELECT hash FROM chain_head")[0][0]
        assert stored[0][3] == chain_hash(1, GENESIS_HASH, rows[0])
    finally:
        store.close()


def test_a_batch_partly_stored_already_chains_and_rolls_up_only_its_new_rows(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "l.db")
    try:
        rows = [to_row(fixed_event(event_id=f"0190f0aa-0000-7000-8000-0000000000{i:02}")) for i in range(1, 16)]
        assert store.write_events(rows[:10]) == 10
        assert store.write_events([*rows[5:15], rows[12]]) == 5  # 5 stored already, one twice in the batch
        stored = store.query("SELECT seq, prev_hash, hash FROM events ORDER BY seq")
        assert [r[0] for r in stored] == list(range(1, 16))
        prev = GENESIS_HASH
        for (seq, p, h), row in zip(stored, rows, strict=True):
            assert p == prev and h == chain_hash(seq, prev, row)
            prev = h
        assert check_rollups(store) == []
        assert store.query("SELECT SUM(calls), SUM(cost_nusd) FROM rollup_hourly") == [(15, 15 * 3_800_000)]
    finally:
        store.close()
