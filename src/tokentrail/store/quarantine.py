"""Reading the quarantine: what was kept aside instead of recorded, and why (the backends'
`write_quarantine` puts it there)."""

from __future__ import annotations

from tokentrail.types import Row, Store


def quarantine_list(
    store: Store, *, since_us: int | None = None, source: str | None = None, limit: int = 50
) -> list[Row]:
    """(quarantine_id, ts_us, source, reason) of the newest items, newest first; optionally only
    those from `since_us` on, or from one source."""
    p = store.dialect.param
    conds: list[str] = []
    params: list[object] = []
    if since_us is not None:
        conds.append(f"ts_us >= {p}")
        params.append(since_us)
    if source is not None:
        conds.append(f"source = {p}")
        params.append(source)
    where = f" WHERE {' AND '.join(conds)}" if conds else ""
    return store.query(
        f"SELECT quarantine_id, ts_us, source, reason FROM quarantine{where} ORDER BY ts_us DESC LIMIT {int(limit)}",
        params,
    )


def quarantined(store: Store, quarantine_id: str) -> Row | None:
    """(ts_us, source, reason, payload) of one item, or None."""
    p = store.dialect.param
    rows = store.query(
        f"SELECT ts_us, source, reason, payload FROM quarantine WHERE quarantine_id = {p}", [quarantine_id]
    )
    return tuple(rows[0]) if rows else None
