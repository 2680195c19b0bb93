"""The session summary: one row per (session, attribution) with the sums the session list shows.

`tokentrail sessions` and `/api/v1/sessions` list the newest sessions with their totals; from the
events that is a GROUP BY over every event of every session. This table holds it pre-summed:
one row per session and per combination of the attribution columns a key can be scoped to (org,
team, project, agent, user, customer, workflow, task_type; '' for a missing one). A session whose
events all carry the same attribution is one row; several agents in one session are several
rows. Because every column a scope can pin is in the key, a scoped list sums exactly the rows
inside the scope: never another scope's events (tokentrail.analytics.sessions falls back to the
events for filters on anything else).

The events are append-only, so MIN/MAX and sums only ever grow: a batch is added by one upsert.
The SQLite writer runs it inside the batch's transaction (`add_sqlite`, aggregated by SQLite from
the rows just inserted); PostgreSQL keeps it with a statement trigger of the owner (SECURITY
DEFINER), like the rollups: the application role only reads it. Backfilled by migration 0018,
checked by `audit verify` (`check_sql`), rebuilt by `audit rebuild-rollups` (`rebuild_statements`).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from tokentrail.store.dialect import Dialect
from tokentrail.store.reports import COLUMNS, RAW_MEASURES, SCOPE_DIMENSIONS
from tokentrail.types import SQLDialect, Store

MIGRATION = "0018_session_summary"
TABLE = "session_summary"
# report dimension -> summary column: the session and every dimension a key's scope can pin
KEY_DIMENSIONS: dict[str, str] = {"session": "session_id", **{d: COLUMNS[d] for d in SCOPE_DIMENSIONS}}
ATTRIBUTES = tuple(COLUMNS[d] for d in SCOPE_DIMENSIONS)
KEY_COLUMNS = ("session_id", *ATTRIBUTES)
# measure column -> its SQL over the events. first_us orders the list (an event's ts is when its
# call ended); start_us is when the first call began; priced counts events with a cost (a session
# with none shows no cost, never $0).
MEASURE_SQL: dict[str, str] = {
    "first_us": "MIN(ts_us)",
    "start_us": "CAST(MIN(ts_us - COALESCE(latency_ms, 0) * 1000) AS BIGINT)",
    "last_us": "MAX(ts_us)",
    "calls": RAW_MEASURES["calls"],
    "tool_runs": RAW_MEASURES["tool_runs"],
    "tokens": "SUM(input_tokens + output_tokens)",
    "cost_nusd": "COALESCE(SUM(cost_nusd), 0)",
    "priced": "SUM(CASE WHEN cost_nusd IS NOT NULL THEN 1 ELSE 0 END)",
    "unpriced_calls": RAW_MEASURES["unpriced_calls"],
    "errors": RAW_MEASURES["errors"],
    "estimated_calls": RAW_MEASURES["estimated_calls"],
    # the list shows a session's agent, team and user: whether a '' in the key was stored as ''
    # (shown) or stands for none (not shown), as the events' MAX would
    **{f"{c}_set": f"MAX(CASE WHEN {c} IS NOT NULL THEN 1 ELSE 0 END)" for c in ("agent", "team", "user_id")},
}
MEASURES = tuple(MEASURE_SQL)
_MERGE = {  # the rest add up
    "first_us": "min",
    "start_us": "min",
    "last_us": "max",
    **{f"{c}_set": "max" for c in ("agent", "team", "user_id")},
}
Stmt = tuple[str, list[Any]]


def _select(where: str = "") -> str:
    """The summary rows of the events (`where` ANDed to having a session), grouped by the key."""
    keys = ", ".join(f"COALESCE({c}, '')" for c in ATTRIBUTES)
    cond = f"session_id IS NOT NULL{f' AND {where}' if where else ''}"
    groups = ", ".join(str(i) for i in range(1, len(KEY_COLUMNS) + 1))
    return f"SELECT session_id, {keys}, {', '.join(MEASURE_SQL.values())} FROM events WHERE {cond} GROUP BY {groups}"


def _upsert(d: SQLDialect, select: str, alias: str = "s") -> str:
    least = {"min": "LEAST", "max": "GREATEST"} if d.name == "postgresql" else {"min": "min", "max": "max"}
    sets = ", ".join(
        f"{m} = {least[_MERGE[m]]}({alias}.{m}, excluded.{m})" if m in _MERGE else f"{m} = {alias}.{m} + excluded.{m}"
        for m in MEASURES
    )
    return (
        f"INSERT INTO {TABLE} AS {alias} ({', '.join((*KEY_COLUMNS, *MEASURES))}) {select} "
        f"ON CONFLICT ({', '.join(KEY_COLUMNS)}) DO UPDATE SET {sets}"
    )


# -- schema (migration 0018) -----------------------------------------------------------------------


def migration(d: Dialect) -> list[str]:
    """The table, backfilled from the events, and (PostgreSQL) the trigger that keeps it."""
    out = ["SELECT seq FROM chain_head WHERE id = 1 FOR UPDATE"] if d.name == "postgresql" else []
    keys = ", ".join(f"{c} {d.text} NOT NULL" for c in KEY_COLUMNS)
    measures = ", ".join(f"{m} {d.bigint} NOT NULL" for m in MEASURES)
    clustered = " WITHOUT ROWID" if d.name == "sqlite" else ""
    out += [
        f"CREATE TABLE {TABLE} ({keys}, {measures}, PRIMARY KEY ({', '.join(KEY_COLUMNS)})){clustered}",
        # the list is newest first, and a time range picks sessions by their first event
        f"CREATE INDEX {TABLE}_first ON {TABLE} (first_us)",
        f"INSERT INTO {TABLE} ({', '.join((*KEY_COLUMNS, *MEASURES))}) {_select()}",
    ]
    if d.name == "postgresql":
        out += [*_pg_trigger(d), f"ANALYZE {TABLE}"]  # the list's plan needs its statistics at once
    return out


def _pg_trigger(d: SQLDialect) -> list[str]:
    """A statement trigger of the owner (SECURITY DEFINER, pinned search_path) adding exactly the
    rows inserted; nobody but the owner may write the table. JIT off: compiling its wide GROUP BY
    on every COPY cost more than running it (measured for the rollup trigger, migration 0019)."""
    body = f"BEGIN\n    {_upsert(d, _select().replace('FROM events', 'FROM new_events'))};\n    RETURN NULL;\nEND"
    create = (
        "CREATE FUNCTION tokentrail_session_summary() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER "
        "SET search_path = %I, pg_temp SET jit = off AS $body$" + body.replace("'", "''") + "$body$"
    )
    return [
        f"DO $$ BEGIN EXECUTE format('{create}', current_schema()); END $$",
        "CREATE TRIGGER events_session_summary AFTER INSERT ON events REFERENCING NEW TABLE AS new_events "
        "FOR EACH STATEMENT EXECUTE FUNCTION tokentrail_session_summary()",
        f"""DO $$
DECLARE g record;
BEGIN
    FOR g IN SELECT DISTINCT a.grantee AS grantee
        FROM pg_class c, aclexplode(c.relacl) a
        WHERE c.relnamespace = current_schema()::regnamespace AND c.relname = '{TABLE}'
          AND a.privilege_type IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE') AND a.grantee <> c.relowner
    LOOP
        EXECUTE format('REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON {TABLE} FROM %s',
            CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(g.grantee)) END);
    END LOOP;
END $$""",
    ]


# -- the SQLite writer's part ----------------------------------------------------------------------

_ADD_SQLITE: str | None = None


def add_sqlite(c: sqlite3.Connection, first_seq: int, last_seq: int) -> None:
    """Add the events just inserted (seq, SQLite's rowid, in [first_seq, last_seq]) to the summary,
    inside the batch's transaction: SQLite groups them itself, one upsert per key. A ledger not
    migrated to 0018 has no summary to keep."""
    global _ADD_SQLITE
    if _ADD_SQLITE is None:
        from tokentrail.store.dialect import SQLITE

        _ADD_SQLITE = _upsert(SQLITE, _select("seq BETWEEN ? AND ?"))
    try:
        c.execute(_ADD_SQLITE, (first_seq, last_seq))
    except sqlite3.OperationalError as e:
        if f"no such table: {TABLE}" not in str(e):
            raise


# -- checking and rebuilding (tokentrail.store.rollup_check) ---------------------------------------


def check_sql(d: SQLDialect, lo: int | None, hi: int | None, limit: int) -> Stmt:
    """One statement (one snapshot) listing the rows where the summary and the events disagree:
    `('events' | 'rollup', *key, *measures)`. With a time range [lo, hi) (either end open): the
    sessions with an event in it, or a summary row whose last event falls in it, except those the
    summary says began before `lo`. Each session is checked with the range its first event is in
    (every session once, over ranges that cover all time), and a session begun before the first
    event `verify --from-seq` walks is left alone, like the rollups of days before it (its first
    events may be archived; docs/scaling.md). A summary row whose first_us was moved earlier is
    caught by the range of that earlier day, or by `--full`."""
    p = d.param
    found = f"SELECT {', '.join((*KEY_COLUMNS, *MEASURES))} FROM {TABLE}"
    exp, params = _select(), []
    if lo is not None or hi is not None:
        bounds: list[int] = [b for b in (lo, hi) if b is not None]

        def within(column: str) -> str:
            return " AND ".join(
                [*([f"{column} >= {p}"] if lo is not None else []), *([f"{column} < {p}"] if hi is not None else [])]
            )

        ids = (
            f"session_id IN (SELECT session_id FROM events WHERE {within('ts_us')} "
            f"UNION SELECT session_id FROM {TABLE} WHERE {within('last_us')})"
        )
        if lo is not None:
            ids += f" AND session_id NOT IN (SELECT session_id FROM {TABLE} WHERE first_us < {p})"
            bounds = [*bounds, *bounds, lo]
        else:
            bounds = bounds * 2
        exp, found, params = _select(ids), f"{found} WHERE {ids}", bounds
    sql = (
        f"SELECT 'events', a.* FROM ({exp} EXCEPT {found}) a "
        f"UNION ALL SELECT 'rollup', b.* FROM ({found} EXCEPT {exp}) b LIMIT {2 * limit}"
    )
    return sql, params * 4


def rebuild_statements() -> list[Stmt]:
    """Recompute the summary from the events."""
    return [
        (f"DELETE FROM {TABLE}", []),
        (f"INSERT INTO {TABLE} ({', '.join((*KEY_COLUMNS, *MEASURES))}) {_select()}", []),
    ]


def available(store: Store) -> bool:
    """Whether this ledger has the summary (migrated to 0018)."""
    p = store.dialect.param
    return bool(store.query(f"SELECT 1 FROM schema_migrations WHERE name = {p}", [MIGRATION]))
