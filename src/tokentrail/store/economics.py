"""SQL of unit economics and agent trees (both backends): the outcome row, per-session sums,
per-call samples for percentiles, and the sessions of an agent tree.

Every statement uses `store.dialect.param` placeholders; a caller's values are parameters, never
SQL text. Conditions come from tokentrail._report_sql (the report filters and a key's scope).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tokentrail.types import Store

# The outcomes table's columns in row order; `success` and `value_nusd` came with migration 0014.
OUTCOME_COLUMNS = (
    "outcome_id",
    "ts_us",
    "name",
    "count",
    "session_id",
    "org",
    "team",
    "project",
    "agent",
    "user_id",
    "customer",
    "workflow",
    "task_type",
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


CHUNK = 500  # ids per IN (...) list


def _where(conds: Sequence[str]) -> str:
    live = [c for c in conds if c]
    return f" WHERE {' AND '.join(live)}" if live else ""


def session_sums(
    store: Store, groups: Sequence[str], conds: Sequence[str], params: Sequence[Any], session_col: str = "session_id"
) -> list[Any]:
    """Per (group..., session) sums over raw events: cost (nano-dollars, all events), priced
    model-call cost, model calls, unpriced calls, input, output, reasoning, cache-read tokens.
    `session_col` is the session a row counts for (its own, or a tree's root)."""
    model = "kind IN ('llm', 'embedding')"
    cols = (
        *groups,
        session_col,
        "SUM(cost_nusd)",
        f"SUM(CASE WHEN {model} THEN cost_nusd ELSE 0 END)",
        f"SUM(CASE WHEN {model} THEN 1 ELSE 0 END)",
        f"SUM(CASE WHEN {model} AND cost_nusd IS NULL THEN 1 ELSE 0 END)",
        "SUM(input_tokens)",
        "SUM(output_tokens)",
        "SUM(reasoning_tokens)",
        "SUM(cache_read_tokens)",
    )
    n = len(groups) + 1
    sql = f"SELECT {', '.join(cols)} FROM events{_where(conds)} GROUP BY {', '.join(str(i) for i in range(1, n + 1))}"
    return store.query(sql, list(params))


def call_samples(
    store: Store, groups: Sequence[str], conds: Sequence[str], params: Sequence[Any], limit: int
) -> list[Any]:
    """(group..., latency_ms, input_tokens, context_window_tokens) of up to `limit` model calls:
    the percentiles are taken in Python (SQLite has no percentile_cont)."""
    cols = (*groups, "latency_ms", "input_tokens", "context_window_tokens")
    where = _where([*conds, "kind IN ('llm', 'embedding')"])
    return store.query(f"SELECT {', '.join(cols)} FROM events{where} LIMIT {int(limit)}", list(params))


def outcome_sums(store: Store, session_ids: Sequence[str], scope_conds: str, scope_params: Sequence[Any]) -> list[Any]:
    """(session_id, successful count, failed count, value of successful outcomes in nano-dollars)
    for these sessions; `scope_conds` (a key's scope) is AND-ed in: outcomes outside it never count."""
    p = store.dialect.param
    out: list[Any] = []
    ids = list(dict.fromkeys(session_ids))
    for i in range(0, len(ids), CHUNK):
        chunk = ids[i : i + CHUNK]
        conds = [f"session_id IN ({', '.join(p for _ in chunk)})", scope_conds]
        out += store.query(
            "SELECT session_id, SUM(CASE WHEN success = 1 THEN count ELSE 0 END), "
            "SUM(CASE WHEN success = 1 THEN 0 ELSE count END), "
            f"SUM(CASE WHEN success = 1 THEN value_nusd ELSE 0 END) FROM outcomes{_where(conds)} GROUP BY session_id",
            [*chunk, *scope_params],
        )
    return out


def children(store: Store, parents: Sequence[str], scope_conds: str, scope_params: Sequence[Any]) -> list[Any]:
    """(parent_session_id, session_id) of the sessions opened inside these ones."""
    p = store.dialect.param
    out: list[Any] = []
    ids = list(dict.fromkeys(parents))
    for i in range(0, len(ids), CHUNK):
        chunk = ids[i : i + CHUNK]
        conds = [f"parent_session_id IN ({', '.join(p for _ in chunk)})", "session_id IS NOT NULL", scope_conds]
        out += store.query(
            f"SELECT DISTINCT parent_session_id, session_id FROM events{_where(conds)}", [*chunk, *scope_params]
        )
    return out


def parents(store: Store, session_ids: Sequence[str], scope_conds: str, scope_params: Sequence[Any]) -> list[Any]:
    """(session_id, parent_session_id) of these sessions, where they have a parent."""
    p = store.dialect.param
    out: list[Any] = []
    ids = list(dict.fromkeys(session_ids))
    for i in range(0, len(ids), CHUNK):
        chunk = ids[i : i + CHUNK]
        conds = [f"session_id IN ({', '.join(p for _ in chunk)})", "parent_session_id IS NOT NULL", scope_conds]
        out += store.query(
            f"SELECT DISTINCT session_id, parent_session_id FROM events{_where(conds)}", [*chunk, *scope_params]
        )
    return out


def tree_session_sums(
    store: Store, session_ids: Sequence[str], scope_conds: str, scope_params: Sequence[Any]
) -> list[Any]:
    """(session_id, cost nano-dollars, model calls, tool runs, tokens, unpriced calls, first ts,
    last ts) of each of these sessions' own events."""
    p = store.dialect.param
    out: list[Any] = []
    ids = list(dict.fromkeys(session_ids))
    for i in range(0, len(ids), CHUNK):
        chunk = ids[i : i + CHUNK]
        conds = [f"session_id IN ({', '.join(p for _ in chunk)})", scope_conds]
        out += store.query(
            "SELECT session_id, SUM(cost_nusd), SUM(CASE WHEN kind IN ('llm', 'embedding') THEN 1 ELSE 0 END), "
            "SUM(CASE WHEN kind = 'tool' THEN 1 ELSE 0 END), SUM(input_tokens + output_tokens), "
            "SUM(CASE WHEN kind IN ('llm', 'embedding') AND cost_nusd IS NULL THEN 1 ELSE 0 END), "
            "MIN(ts_us), MAX(ts_us), MIN(agent) "
            f"FROM events{_where(conds)} GROUP BY session_id",
            [*chunk, *scope_params],
        )
    return out
