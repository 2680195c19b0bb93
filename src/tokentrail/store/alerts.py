"""The alerts table's SQL (migration 0006_budgets): the columns of an alert row, and reading
alerts back. Alerts are inserted by the budget engine's batch (tokentrail.store.budgets)."""

from __future__ import annotations

from typing import Any

from tokentrail.types import Row, Store

ALERT_COLUMNS = (
    "alert_id",
    "alert_key",
    "ts_us",
    "kind",
    "budget",
    "scope",
    "period",
    "period_start_us",
    "period_end_us",
    "threshold",
    "posted_nusd",
    "limit_nusd",
    "posted_tokens",
    "limit_tokens",
    "session_id",
    "message",
)


def alert_rows(
    store: Store,
    *,
    since_us: int | None = None,
    until_us: int | None = None,
    budget: str | None = None,
    kind: str | None = None,
    limit: int = 1000,
) -> list[Row]:
    """Alert rows (ALERT_COLUMNS) in [since_us, until_us), of one budget or kind, newest first."""
    p = store.dialect.param
    where: list[str] = []
    params: list[Any] = []
    if since_us is not None:
        where.append(f"ts_us >= {p}")
        params.append(since_us)
    if until_us is not None:
        where.append(f"ts_us < {p}")
        params.append(until_us)
    if budget is not None:
        where.append(f"budget = {p}")
        params.append(budget)
    if kind is not None:
        where.append(f"kind = {p}")
        params.append(kind)
    sql = f"SELECT {', '.join(ALERT_COLUMNS)} FROM alerts"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY ts_us DESC, alert_id DESC LIMIT {int(limit)}"
    return store.query(sql, params)


__all__ = ["ALERT_COLUMNS", "alert_rows"]
