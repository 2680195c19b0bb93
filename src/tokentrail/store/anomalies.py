"""SQL of the anomaly detectors: their baselines, the events they replay, the anomalies they store."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tokentrail.events import COLUMNS, new_event_id
from tokentrail.store.reports import ATTRIBUTION_COLUMNS, time_sql

if TYPE_CHECKING:
    from tokentrail.types import Store

ANOMALY_COLUMNS = (
    "anomaly_id",
    "kind",
    "dedup_key",
    "severity",
    "ts_us",
    "detected_us",
    "session_id",
    *ATTRIBUTION_COLUMNS,
    "metric",
    "baseline",
    "threshold",
    "cost_nusd",
    "event_ids",
    "message",
)
_PAGE = 5000


def _who(p: str, agent: str | None) -> tuple[str, list[Any]]:
    return (f"agent = {p}", [agent]) if agent is not None else ("agent IS NULL", [])


def session_totals(store: Store, agent: str | None, task_type: str | None, start_us: int, end_us: int) -> list[int]:
    """Tokens of each session of this agent and task type with model calls in [start, end)."""
    p = store.dialect.param
    cond, params = _who(p, agent)
    task = f"task_type = {p}" if task_type is not None else "task_type IS NULL"
    params += [task_type] if task_type is not None else []
    rows = store.query(
        f"SELECT SUM(input_tokens + output_tokens) FROM events WHERE ts_us >= {p} AND ts_us < {p} "
        f"AND kind = 'llm' AND session_id IS NOT NULL AND {cond} AND {task} GROUP BY session_id",
        [start_us, end_us, *params],
    )
    return [int(r[0] or 0) for r in rows]


def agent_tokens(
    store: Store, agent: str | None, start_us: int, end_us: int, min_input: int
) -> tuple[int, int, int, int]:
    """(input, output, cache reads, calls) of the agent's model calls of at least `min_input` input
    tokens in [start, end)."""
    p = store.dialect.param
    cond, params = _who(p, agent)
    rows = store.query(
        "SELECT COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0), "
        f"COALESCE(SUM(cache_read_tokens), 0), COUNT(*) FROM events WHERE ts_us >= {p} AND ts_us < {p} "
        f"AND kind = 'llm' AND input_tokens >= {p} AND {cond}",
        [start_us, end_us, max(1, min_input), *params],
    )
    r = rows[0]
    return int(r[0]), int(r[1]), int(r[2]), int(r[3])


def event_rows(store: Store, since_us: int, until_us: int | None = None) -> Iterator[tuple[Any, ...]]:
    """The model calls and tool runs from `since_us` on, in (ts, seq) order, a page at a time."""
    p = store.dialect.param
    last: tuple[int, int] | None = None
    end = "" if until_us is None else f" AND ts_us < {p}"
    tail = [] if until_us is None else [until_us]
    while True:
        if last is None:
            where, params = f"ts_us >= {p}", [since_us]
        else:
            where, params = f"(ts_us > {p} OR (ts_us = {p} AND seq > {p}))", [last[0], last[0], last[1]]
        rows = store.query(
            f"SELECT seq, {', '.join(COLUMNS)} FROM events WHERE {where}{end} AND kind IN ('llm', 'tool') "
            f"ORDER BY ts_us, seq LIMIT {_PAGE}",
            [*params, *tail],
        )
        for r in rows:
            yield tuple(r[1:])
        if len(rows) < _PAGE:
            return
        last = (rows[-1][1 + COLUMNS.index("ts_us")], rows[-1][0])


def insert(store: Store, anomaly: Any, detected_us: int) -> bool:
    """Store an anomaly unless its (kind, dedup_key) is stored already; whether it was new."""
    p = store.dialect.param
    a = anomaly
    row = (
        new_event_id(),
        a.kind,
        a.dedup_key,
        a.severity,
        a.ts_us,
        detected_us,
        a.session_id,
        *a.attrs,
        a.metric,
        a.baseline,
        a.threshold,
        a.cost_nusd,
        json.dumps(list(a.event_ids)),
        a.message,
    )
    n = store.execute_write(
        f"INSERT INTO anomalies ({', '.join(ANOMALY_COLUMNS)}) VALUES ({', '.join([p] * len(row))}) "
        "ON CONFLICT (kind, dedup_key) DO NOTHING",
        row,
    )
    return n > 0


_SCOPED = {*ATTRIBUTION_COLUMNS, "session_id", "kind"}


def select(
    store: Store,
    *,
    since_us: int | None = None,
    until_us: int | None = None,
    where: Mapping[str, str | Sequence[str] | None] | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """Stored anomalies, newest first; `where`: column -> value (or any of several values), AND-ed
    (a key's scope, filters)."""
    p = store.dialect.param
    conds, tparams = time_sql(store, since_us, until_us)
    params: list[Any] = list(tparams)
    for column, value in (where or {}).items():
        if column not in _SCOPED:
            raise ValueError(f"anomalies cannot be filtered by {column!r}")
        if value is None:
            conds.append(f"{column} IS NULL")
        elif isinstance(value, str):
            conds.append(f"{column} = {p}")
            params.append(value)
        else:
            values = list(value)
            conds.append(f"{column} IN ({', '.join([p] * len(values))})" if values else "1 = 0")
            params += values
    sql = f"SELECT {', '.join(ANOMALY_COLUMNS)} FROM anomalies"
    if conds:
        sql += " WHERE " + " AND ".join(conds)
    sql += f" ORDER BY ts_us DESC, anomaly_id LIMIT {int(limit)}"
    return [_dict(r) for r in store.query(sql, params)]


def for_session(store: Store, session_id: str) -> list[dict[str, Any]]:
    return select(store, where={"session_id": session_id}, limit=500)


def _dict(r: Sequence[Any]) -> dict[str, Any]:
    d = dict(zip(ANOMALY_COLUMNS, r, strict=True))
    d["event_ids"] = json.loads(d["event_ids"]) if d["event_ids"] else []
    d["user"] = d.pop("user_id")
    return d
