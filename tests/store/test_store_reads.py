"""The store's subject modules that took the SQL out of the audit, corrections, copy, quarantine,
migrate and ingest code: each on both backends."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tokentrail.events import GENESIS_HASH, UsageEvent, new_event_id, to_row, ts_micros
from tokentrail.store import open_store
from tokentrail.store.chain import chain_head, first_ts_from, hashes_at, lowest_seq
from tokentrail.store.copy import SIDE_TABLES, ledger_size, table_columns
from tokentrail.store.event_reads import adjustment_rows, chained_event, rows_by_id, session_calls_since
from tokentrail.store.migrations import MIGRATIONS, applied_migrations
from tokentrail.store.quarantine import quarantine_list, quarantined
from tokentrail.types import Store

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = open_store(db_url)
    yield s
    s.close()


def _event(i: int, **kw: Any) -> UsageEvent:
    e = UsageEvent(kind="llm", ts=T0 + timedelta(minutes=i), provider="openai", model="gpt-4o", input_tokens=10 + i)
    return replace(e, **kw)


def test_an_empty_ledger_has_no_chain_and_no_size(store: Store) -> None:
    # SQLite writes the head with the first event, PostgreSQL at genesis when it migrates
    assert chain_head(store) in (None, (0, GENESIS_HASH))
    assert lowest_seq(store) is None
    assert first_ts_from(store, 1) is None
    assert hashes_at(store, 1) == []
    assert ledger_size(store) == (0, 0, None)


def test_chain_lookups_follow_what_was_written(store: Store) -> None:
    events = [_event(i) for i in range(3)]
    store.write_events([to_row(e) for e in events])
    links = list(store.chain())
    assert chain_head(store) == (3, links[-1][2])
    assert lowest_seq(store) == 1
    assert hashes_at(store, 2) == [links[1][2]]
    assert first_ts_from(store, 2) == ts_micros(events[1].ts)
    assert first_ts_from(store, 4) is None
    assert ledger_size(store) == (3, 0, ts_micros(events[0].ts))


def test_an_event_is_found_by_any_spelling_of_its_id_and_only_a_uuid_matches(store: Store) -> None:
    e = _event(0)
    store.write_events([to_row(e)])
    found = chained_event(store, [e.event_id.upper(), e.event_id])
    assert found is not None and found[0] == 1 and found[3][0] == e.event_id
    assert chained_event(store, ["not-a-uuid"]) is None  # PostgreSQL: never sent to a uuid column
    assert chained_event(store, [new_event_id()]) is None


def test_adjustments_and_session_calls_are_read_in_order(store: Store) -> None:
    call = _event(0, session_id="s-1")
    tool = _event(1, kind="tool", session_id="s-1", provider=None, model=None, tool_name="search")
    loose = _event(2)  # no session: not a session call
    fixes = [
        _event(3, kind="adjustment", adjusts_event_id=call.event_id, note=f"fix {i}", input_tokens=0) for i in range(2)
    ]
    store.write_events([to_row(e) for e in (call, tool, loose, *fixes)])
    assert [r[0] for r in adjustment_rows(store, call.event_id)] == [f.event_id for f in fixes]
    assert [r[0] for r in session_calls_since(store, ts_micros(T0))] == [call.event_id, tool.event_id]
    assert [r[0] for r in session_calls_since(store, ts_micros(T0) + 1)] == [tool.event_id]
    assert session_calls_since(store, ts_micros(tool.ts) + 1) == []


def test_rows_by_id_asks_in_chunks_and_returns_only_stored_ids(store: Store) -> None:
    events = [_event(i % 50) for i in range(1_201)]  # more ids than three IN lists hold
    store.write_events([to_row(e) for e in events])
    missing = new_event_id()
    found = rows_by_id(store, [*(e.event_id for e in events), missing, events[0].event_id])
    assert set(found) == {e.event_id for e in events}
    assert found[events[7].event_id][0] == events[7].event_id


def test_quarantine_is_listed_newest_first_and_filtered(store: Store) -> None:
    at = ts_micros(T0)
    store.write_quarantine(
        [
            ("q1", at, "api", "bad kind", '{"kind": 1}'),
            ("q2", at + 10, "otlp", "no model", "{}"),
            ("q3", at + 20, "api", "bad ts", "[]"),
        ]
    )
    assert [r[0] for r in quarantine_list(store)] == ["q3", "q2", "q1"]
    assert [r[0] for r in quarantine_list(store, source="api")] == ["q3", "q1"]
    assert [r[0] for r in quarantine_list(store, since_us=at + 10, limit=1)] == ["q3"]
    assert quarantined(store, "q2") == (at + 10, "otlp", "no model", "{}")
    assert quarantined(store, "nope") is None


def test_the_copied_tables_columns_come_from_the_store_and_nothing_else_is_asked(store: Store) -> None:
    assert table_columns(store, "quarantine") == ["quarantine_id", "ts_us", "source", "reason", "payload"]
    assert all(table_columns(store, t) for t in SIDE_TABLES)
    with pytest.raises(ValueError, match="not a table copied"):
        table_columns(store, "events; DROP TABLE events")


def test_applied_migrations_are_every_migration_with_its_time(store: Store) -> None:
    applied = applied_migrations(store)
    assert [name for name, _ in applied] == sorted(name for name, _ in MIGRATIONS)
    assert all(isinstance(at, int) and at > 0 for _, at in applied)
