"""The SQL of the session reports and the cost trail (both backends): per-session sums, a
session's outcomes, and a session's events in time order.

Conditions come from tokentrail.store.reports (the report filters and a key's scope); a caller's
values are parameters, never SQL text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tokentrail.events import COLUMNS, text_problem
from tokentrail.store.reports import RAW_MEASURES, Filters, by_ids, filter_sql, time_sql
from tokentrail.types import Store


def session_sums(
    store: Store, lo: int | None, hi: int | None, flt: Filters, forced: Filters, limit: int, offset: int
) -> list[Any]:
    """(session_id, start, end, agent, team, user, model calls, tool runs, tokens, cost
    nano-dollars, unpriced calls, errors, estimated calls) of the sessions that started in
    [lo, hi) and have an event matching `flt` and `forced`, newest first, a page of `limit` from
    `offset`. Only the events inside `forced` (a key's scope) are listed, timed and summed."""
    conds, params = time_sql(store, lo, hi)
    cond, fparams = filter_sql(store, (*flt, *forced))
    outer, oparams = filter_sql(store, forced)
    inner = " AND ".join(c for c in ["session_id IS NOT NULL", *conds, cond] if c)
    having, hparams = time_sql(store, lo, hi, "MIN(ts_us)")
    sql = (
        # an event's ts is when its call ended: the session started when its first call began
        "SELECT session_id, CAST(MIN(ts_us - COALESCE(latency_ms, 0) * 1000) AS BIGINT), MAX(ts_us), "
        "MAX(agent), MAX(team), MAX(user_id), "
        f"{RAW_MEASURES['calls']}, {RAW_MEASURES['tool_runs']}, "
        f"SUM(input_tokens + output_tokens), SUM(cost_nusd), {RAW_MEASURES['unpriced_calls']}, "
        f"{RAW_MEASURES['errors']}, {RAW_MEASURES['estimated_calls']} "
        f"FROM events WHERE {f'{outer} AND ' if outer else ''}"
        f"session_id IN (SELECT session_id FROM events WHERE {inner}) "
        "GROUP BY session_id" + (f" HAVING {' AND '.join(having)}" if having else "") + " "
        f"ORDER BY MIN(ts_us) DESC, session_id DESC LIMIT {int(limit)} OFFSET {int(offset)}"
    )
    return store.query(sql, [*oparams, *params, *fparams, *hparams])


def outcome_counts(
    store: Store, session_ids: Sequence[str], forced: Filters = ()
) -> dict[str, tuple[tuple[str, int], ...]]:
    """The (name, count) outcomes of these sessions, by session (only those inside `forced`, a
    scope: the outcomes table has the same attribution columns as events)."""
    cond, cparams = filter_sql(store, forced)
    found: dict[str, list[tuple[str, int]]] = {}
    select = "SELECT session_id, name, SUM(count) FROM outcomes"
    tail = " GROUP BY session_id, name ORDER BY session_id, name"
    for sid, name, count in by_ids(store, select, "session_id", session_ids, [cond], cparams, tail):
        found.setdefault(sid, []).append((name, int(count)))
    return {sid: tuple(v) for sid, v in found.items()}


def session_events(store: Store, session_id: str, forced: Filters = ()) -> list[Any]:
    """The event rows (events.COLUMNS) of a session inside `forced`, in time order."""
    if text_problem(session_id):
        return []  # no stored id holds a NUL or a lone surrogate (refused at every door); PostgreSQL would fail on one
    p = store.dialect.param
    cond, cparams = filter_sql(store, forced)
    return store.query(
        f"SELECT {', '.join(COLUMNS)} FROM events WHERE session_id = {p} {f'AND {cond} ' if cond else ''}"
        "ORDER BY ts_us, seq",
        [session_id, *cparams],
    )
