"""The audit chain as stored: its head, the hash at a seq, where it starts, when a seq range begins.

The walk itself reads through `Store.chain()`; these are the point lookups tokentrail.audit
makes around it."""

from __future__ import annotations

from tokentrail.types import Store


def chain_head(store: Store) -> tuple[int, bytes] | None:
    """(seq, hash) the chain head records as last; None for a ledger that never had an event."""
    rows = store.query("SELECT seq, hash FROM chain_head WHERE id = 1")
    return (int(rows[0][0]), bytes(rows[0][1])) if rows else None


def hashes_at(store: Store, seq: int) -> list[bytes]:
    """The hash of every row stored at `seq` (one for an intact chain; none if the row is gone)."""
    p = store.dialect.param
    return [bytes(r[0]) for r in store.query(f"SELECT hash FROM events WHERE seq = {p}", [seq])]


def lowest_seq(store: Store) -> int | None:
    """The smallest seq stored (None: no events)."""
    low = store.query("SELECT MIN(seq) FROM events")[0][0]
    return None if low is None else int(low)


def first_ts_from(store: Store, seq: int) -> int | None:
    """The earliest ts_us of the events from `seq` on (None: there are none)."""
    p = store.dialect.param
    since = store.query(f"SELECT MIN(ts_us) FROM events WHERE seq >= {p}", [seq])[0][0]
    return None if since is None else int(since)
