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
from tokentrail.store.session_rollup import KEY_DIMENSIONS, TABLE
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


def summary_answers(flt: Filters, forced: Filters) -> bool:
    """Whether the session summary holds what these filters select: only the session and the
    attribution a scope can pin are in its key (a filter on a model, a tag, … needs the events)."""
    return all(d in KEY_DIMENSIONS for d, _ in (*flt, *forced))


def summary_sums(
    store: Store, lo: int | None, hi: int | None, flt: Filters, forced: Filters, limit: int, offset: int
) -> list[Any]:
    """`session_sums` from the session summary (tokentrail.store.session_rollup), for filters that
    `summary_answers`: the same rows. Each summary row is one attribution of a session, so the
    rows inside `forced` are exactly the session's events inside it; a session matches `flt` when
    one of those rows does and (with `hi`) began before `hi` (HAVING keeps every in-scope event
    from `lo` on).

    Newest first without grouping every session: only the sessions with a row from a `floor` on
    (the first_us index) are summed, and those whose first row is older dropped; when that fills
    the page, no older session can be on it. Otherwise the floor goes lower, at last to none."""
    p = store.dialect.param
    scope, sparams = _key_conds(p, forced)
    window: int | None = 4 * (offset + limit)  # rows back from the newest: most sessions are a row or a few
    while True:
        floor = None
        if window is not None:
            conds, params = [*scope], [*sparams]
            if hi is not None:
                conds.append(f"first_us < {p}")
                params.append(hi)
            found = store.query(
                f"SELECT first_us FROM {TABLE}{_where(conds)} ORDER BY first_us DESC LIMIT 1 OFFSET {int(window)}",
                params,
            )
            floor = int(found[0][0]) if found else None
            if floor is not None and lo is not None and floor <= lo:
                floor = None  # the range's own start is the floor
        rows = _summary_page(store, lo, hi, flt, forced, floor, limit, offset)
        if floor is None or window is None or len(rows) == limit:
            return rows
        window = window * 8 if window < 1_000_000 else None


def _key_conds(p: str, flt: Filters) -> tuple[list[str], list[Any]]:
    out: list[str] = []
    params: list[Any] = []
    for d, values in flt:  # '' is stored for a missing value: it matches as itself
        out.append(f"{KEY_DIMENSIONS[d]} IN ({', '.join(p for _ in values)})")
        params.extend(values)
    return out, params


def _where(conds: Sequence[str]) -> str:
    return f" WHERE {' AND '.join(conds)}" if conds else ""


def _summary_page(
    store: Store,
    lo: int | None,
    hi: int | None,
    flt: Filters,
    forced: Filters,
    floor: int | None,
    limit: int,
    offset: int,
) -> list[Any]:
    """A page of sessions from the summary; with a `floor`, of those first seen from it on only."""
    p = store.dialect.param
    outer, oparams = _key_conds(p, forced)
    if flt:
        inner, iparams = _key_conds(p, (*flt, *forced))
        if hi is not None:
            inner.append(f"first_us < {p}")
            iparams.append(hi)
        outer.append(f"session_id IN (SELECT session_id FROM {TABLE}{_where(inner)})")
        oparams += iparams
    if floor is not None:
        recent, rparams = _key_conds(p, forced)
        recent.append(f"first_us >= {p}")
        outer.append(f"session_id IN (SELECT session_id FROM {TABLE}{_where(recent)})")
        oparams += [*rparams, floor]
    start = lo if floor is None else floor if lo is None else max(floor, lo)
    having, hparams = time_sql(store, start, hi, "MIN(first_us)")
    sql = (
        "SELECT session_id, MIN(start_us), MAX(last_us), "
        "MAX(CASE WHEN agent_set = 1 THEN agent END), MAX(CASE WHEN team_set = 1 THEN team END), "
        "MAX(CASE WHEN user_id_set = 1 THEN user_id END), "
        "SUM(calls), SUM(tool_runs), SUM(tokens), CASE WHEN SUM(priced) > 0 THEN SUM(cost_nusd) END, "
        f"SUM(unpriced_calls), SUM(errors), SUM(estimated_calls) FROM {TABLE}{_where(outer)} "
        "GROUP BY session_id" + (f" HAVING {' AND '.join(having)}" if having else "") + " "
        f"ORDER BY MIN(first_us) DESC, session_id DESC LIMIT {int(limit)} OFFSET {int(offset)}"
    )
    return store.query(sql, [*oparams, *hparams])


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
