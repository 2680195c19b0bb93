"""Stored events read back by id, by the event they adjust, or by time (rows are
tokentrail.events.COLUMNS tuples)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from tokentrail.events import COLUMNS
from tokentrail.types import Row, Store

_ID_CHUNK = 500  # ids per IN (...) list: well under either backend's parameter limit
_COLS = ", ".join(COLUMNS)


def chained_event(store: Store, spellings: Sequence[str]) -> tuple[int, bytes, bytes, Row] | None:
    """(seq, prev_hash, hash, row) of the first of these spellings of one event id that the ledger
    holds, or None. PostgreSQL keeps ids in a uuid column: only a UUID spelling can match there,
    and it is asked for in its canonical form."""
    keys = list(spellings)
    if store.dialect.name == "postgresql":
        keys = list(dict.fromkeys(c for c in map(_canonical_uuid, keys) if c is not None))
    p = store.dialect.param
    for key in keys:
        rows = store.query(f"SELECT seq, prev_hash, hash, {_COLS} FROM events WHERE event_id = {p} ORDER BY seq", [key])
        if rows:
            r = rows[0]
            return int(r[0]), bytes(r[1]), bytes(r[2]), tuple(r[3:])
    return None


def _canonical_uuid(text: str) -> str | None:
    try:
        return str(uuid.UUID(text.strip()))
    except (ValueError, AttributeError):
        return None


def adjustment_rows(store: Store, event_id: str) -> list[Row]:
    """The adjustments of an event, in the order they were made."""
    p = store.dialect.param
    return store.query(
        f"SELECT {_COLS} FROM events WHERE adjusts_event_id = {p} AND kind = 'adjustment' ORDER BY seq",
        [event_id],
    )


def rows_by_id(store: Store, ids: Sequence[str]) -> dict[str, Row]:
    """The stored rows of those of these event ids the ledger holds, by id (asked in chunks, so a
    long list never passes a backend's parameter limit)."""
    p = store.dialect.param
    cast = "::uuid" if store.dialect.name == "postgresql" else ""
    found: dict[str, Row] = {}
    unique = list(dict.fromkeys(ids))
    for i in range(0, len(unique), _ID_CHUNK):
        chunk = unique[i : i + _ID_CHUNK]
        sql = f"SELECT {_COLS} FROM events WHERE event_id IN ({', '.join(f'{p}{cast}' for _ in chunk)})"
        for r in store.query(sql, chunk):
            found.setdefault(str(r[0]), tuple(r))
    return found


def session_calls_since(store: Store, since_us: int) -> list[Row]:
    """The model and tool calls of sessions recorded from `since_us` on, oldest first."""
    p = store.dialect.param
    return store.query(
        f"SELECT {_COLS} FROM events WHERE ts_us >= {p} AND session_id IS NOT NULL "
        "AND kind IN ('llm', 'tool') ORDER BY ts_us",
        [since_us],
    )
