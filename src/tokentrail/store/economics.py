"""SQL of unit economics and agent trees (both backends): the outcome row, per-session sums,
per-call samples for percentiles, and the sessions of an agent tree.

Every statement uses `store.dialect.param` placeholders; a caller's values are parameters, never
SQL text. Conditions come from tokentrail.store.reports (the report filters and a key's scope),
and so does `by_ids`, which runs a statement on any number of session ids, a chunk at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tokentrail.store.reports import ATTRIBUTION_COLUMNS, MODEL_CALL, RAW_MEASURES, by_ids, where_sql
from tokentrail.types import Store

# The outcomes table's columns in row order; `success` and `value_nusd` came with migration 0014.
OUTCOME_COLUMNS = (
    "outcome_id",
    "ts_us",
    "name",
    "count",
    "session_id",
    *ATTRIBUTION_COLUMNS,
    "success",
    "value_nusd",
)
_V1_OUTCOME = 13
_OUTCOME_DEFAULTS = (1, None)  # success, value_nusd


def full_outcome_row(row: Sequence[Any]) -> tuple[Any, ...]:
    """An outcome row of an older version (a spool file, a copy from an older ledger) with the
    later columns at their defaults: an outcome recorded before `success` existed succeeded."""
    have = len(row) - _V1_OUTCOME
    return (*row, *_OUTCOME_DEFAULTS[have:]) if 0 <= have < len(_OUTCOME_DEFAULTS) else tuple(row)


def session_sums(
    store: Store, groups: Sequence[str], conds: Sequence[str], params: Sequence[Any], session_col: str = "session_id"
) -> list[Any]:
    """Per (group..., session) sums over raw events: cost (nano-dollars, all events), priced
    model-call cost, model calls, unpriced calls, input, output, reasoning, cache-read tokens.
    `session_col` is the session a row counts for (its own, or a tree's root)."""
    cols = (
        *groups,
        session_col,
        "SUM(cost_nusd)",
        f"SUM(CASE WHEN {MODEL_CALL} THEN cost_nusd ELSE 0 END)",
        RAW_MEASURES["calls"],
        f"SUM(CASE WHEN {MODEL_CALL} AND cost_nusd IS NULL THEN 1 ELSE 0 END)",
        "SUM(input_tokens)",
        "SUM(output_tokens)",
        "SUM(reasoning_tokens)",
        "SUM(cache_read_tokens)",
    )
    n = len(groups) + 1
    sql = (
        f"SELECT {', '.join(cols)} FROM events{where_sql(conds)} GROUP BY {', '.join(str(i) for i in range(1, n + 1))}"
    )
    return store.query(sql, list(params))


def call_samples(
    store: Store, groups: Sequence[str], conds: Sequence[str], params: Sequence[Any], limit: int
) -> list[Any]:
    """(group..., latency_ms, input_tokens, context_window_tokens) of up to `limit` model calls:
    the percentiles are taken in Python (SQLite has no percentile_cont)."""
    cols = (*groups, "latency_ms", "input_tokens", "context_window_tokens")
    where = where_sql([*conds, MODEL_CALL])
    return store.query(f"SELECT {', '.join(cols)} FROM events{where} LIMIT {int(limit)}", list(params))


def outcome_sums(store: Store, session_ids: Sequence[str], scope_conds: str, scope_params: Sequence[Any]) -> list[Any]:
    """(session_id, successful count, failed count, value of successful outcomes in nano-dollars)
    for these sessions; `scope_conds` (a key's scope) is AND-ed in: outcomes outside it never count."""
    select = (
        "SELECT session_id, SUM(CASE WHEN success = 1 THEN count ELSE 0 END), "
        "SUM(CASE WHEN success = 1 THEN 0 ELSE count END), "
        "SUM(CASE WHEN success = 1 THEN value_nusd ELSE 0 END) FROM outcomes"
    )
    return by_ids(store, select, "session_id", session_ids, [scope_conds], scope_params, " GROUP BY session_id")


def children(store: Store, parents: Sequence[str], scope_conds: str, scope_params: Sequence[Any]) -> list[Any]:
    """(parent_session_id, session_id) of the sessions opened inside these ones."""
    select = "SELECT DISTINCT parent_session_id, session_id FROM events"
    return by_ids(store, select, "parent_session_id", parents, ["session_id IS NOT NULL", scope_conds], scope_params)


def parents(store: Store, session_ids: Sequence[str], scope_conds: str, scope_params: Sequence[Any]) -> list[Any]:
    """(session_id, parent_session_id) of these sessions, where they have a parent."""
    select = "SELECT DISTINCT session_id, parent_session_id FROM events"
    conds = ["parent_session_id IS NOT NULL", scope_conds]
    return by_ids(store, select, "session_id", session_ids, conds, scope_params)


def tree_session_sums(
    store: Store, session_ids: Sequence[str], scope_conds: str, scope_params: Sequence[Any]
) -> list[Any]:
    """(session_id, cost nano-dollars, model calls, tool runs, tokens, unpriced calls, first ts,
    last ts, first agent) of each of these sessions' own events."""
    select = (
        f"SELECT session_id, SUM(cost_nusd), {RAW_MEASURES['calls']}, {RAW_MEASURES['tool_runs']}, "
        f"SUM(input_tokens + output_tokens), SUM(CASE WHEN {MODEL_CALL} AND cost_nusd IS NULL THEN 1 ELSE 0 END), "
        "MIN(ts_us), MAX(ts_us), MIN(agent) FROM events"
    )
    return by_ids(store, select, "session_id", session_ids, [scope_conds], scope_params, " GROUP BY session_id")
