"""The migrations of the ledger itself: events (append-only, chained), the hourly and daily
rollups, outcomes, quarantine, and the columns added to them since. Each is a function of the
dialect returning its statements (tokentrail.store.migrations lists them in order)."""

from __future__ import annotations

from tokentrail.store.dialect import Dialect
from tokentrail.store.rollup_columns import (
    DAY_US,
    HOUR_US,
    MEASURES_V1,
    ROLLUP_DIMENSIONS,
    ROLLUP_MEASURES,
    ROLLUP_SQL_DIMENSIONS,
    ROLLUP_SQL_MEASURES,
    floor_to,
)


def _event_columns(d: Dialect) -> str:
    t, n, r = d.text, d.bigint, d.real
    return f"""
        event_id {d.uuid} NOT NULL,
        kind {t} NOT NULL,
        ts_us {n} NOT NULL,
        latency_ms {r},
        status {t} NOT NULL,
        provider {t},
        model {t},
        operation {t},
        streamed {n} NOT NULL DEFAULT 0,
        input_tokens {n} NOT NULL DEFAULT 0,
        output_tokens {n} NOT NULL DEFAULT 0,
        cache_read_tokens {n} NOT NULL DEFAULT 0,
        cache_write_tokens {n} NOT NULL DEFAULT 0,
        reasoning_tokens {n} NOT NULL DEFAULT 0,
        context_window_tokens {n},
        cost_nusd {n},
        price_source {t},
        price_version {t},
        unit_prices {t},
        org {t},
        team {t},
        project {t},
        agent {t},
        session_id {t},
        trace_id {t},
        span_id {t},
        parent_span_id {t},
        user_id {t},
        customer {t},
        workflow {t},
        task_type {t},
        step {t},
        tags {t},
        tool_calls {t},
        tool_name {t},
        tool_call_id {t},
        tool_args_hash {t},
        adjusts_event_id {t},
        note {t},
        request_hash {t},
        content {t},
        prev_hash {d.blob} NOT NULL,
        hash {d.blob} NOT NULL"""


def m0001_events(d: Dialect) -> list[str]:
    """The append-only events table, its chain head, and its indexes."""
    if d.name == "sqlite":
        events = f"CREATE TABLE events (seq INTEGER PRIMARY KEY, {_event_columns(d)}, UNIQUE (event_id))"
    else:
        return _postgres_events(d)
    return [
        events,
        "CREATE INDEX events_ts ON events (ts_us)",
        "CREATE INDEX events_session ON events (session_id, ts_us)",
        "CREATE TABLE chain_head (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, hash BLOB NOT NULL)",
        "CREATE TRIGGER events_no_update BEFORE UPDATE ON events "
        "BEGIN SELECT RAISE(ABORT, 'tokentrail: the events table is append-only (UPDATE refused)'); END",
        "CREATE TRIGGER events_no_delete BEFORE DELETE ON events "
        "BEGIN SELECT RAISE(ABORT, 'tokentrail: the events table is append-only (DELETE refused)'); END",
    ]


def _postgres_events(d: Dialect) -> list[str]:
    """PostgreSQL: events partitioned by month, with a global event-id table for UNIQUE(event_id).

    `events` is RANGE-partitioned on `ts_us` (one partition a month, made by
    `PostgresStore.ensure_partitions`, plus a DEFAULT partition so no event ever lacks one).
    PostgreSQL cannot enforce a unique key that leaves out the partition column, so the
    ledger-wide `UNIQUE(event_id)` lives in the unpartitioned `event_ids` table, which the writer
    fills in the same transaction as `events` (`INSERT … ON CONFLICT DO NOTHING RETURNING` says
    which ids are new). `chain_head` holds the audit chain's last link from the start (genesis),
    and its one row, locked FOR UPDATE, serialises writers. UPDATE, DELETE and TRUNCATE on
    `events` (and on `event_ids`, which guards it) are refused by triggers.
    """
    return [
        f"CREATE TABLE events (seq {d.bigint} NOT NULL, {_event_columns(d)}) PARTITION BY RANGE (ts_us)",
        "CREATE TABLE events_default PARTITION OF events DEFAULT",
        "CREATE INDEX events_seq ON events (seq)",
        "CREATE INDEX events_event_id ON events (event_id)",
        "CREATE INDEX events_ts ON events (ts_us)",
        "CREATE INDEX events_session ON events (session_id, ts_us)",
        "CREATE TABLE event_ids (event_id UUID PRIMARY KEY)",
        "CREATE TABLE chain_head (id INTEGER PRIMARY KEY CHECK (id = 1), seq BIGINT NOT NULL, hash BYTEA NOT NULL)",
        "INSERT INTO chain_head (id, seq, hash) VALUES (1, 0, decode(repeat('00', 32), 'hex'))",
        _PG_APPEND_ONLY_FUNCTION,
        *postgres_append_only_triggers("events", "events"),
        *postgres_append_only_triggers("events_default", "events", row_triggers=False),
        *postgres_append_only_triggers("event_ids", "event_ids"),
    ]


_PG_APPEND_ONLY_FUNCTION = """CREATE FUNCTION tokentrail_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'tokentrail: the % table is append-only (% refused)', TG_ARGV[0], TG_OP;
END
$$"""


def postgres_append_only_triggers(table: str, label: str, *, row_triggers: bool = True) -> list[str]:
    """PostgreSQL triggers refusing UPDATE, DELETE and TRUNCATE on `table` (`label` names it in the
    error). Row triggers on a partitioned table are cloned onto every partition; TRUNCATE triggers
    are per table, so each partition gets its own (`row_triggers=False`)."""
    prefix = "events" if label == "events" else table
    call = f"EXECUTE FUNCTION tokentrail_append_only('{label}')"
    out = []
    if row_triggers:
        out += [
            f"CREATE TRIGGER {prefix}_no_update BEFORE UPDATE ON {table} FOR EACH ROW {call}",
            f"CREATE TRIGGER {prefix}_no_delete BEFORE DELETE ON {table} FOR EACH ROW {call}",
        ]
    out.append(f"CREATE TRIGGER {prefix}_no_truncate BEFORE TRUNCATE ON {table} FOR EACH STATEMENT {call}")
    return out


def m0002_rollups(d: Dialect) -> list[str]:
    """Hourly rollup by the common report dimensions (empty string stands for 'none')."""
    dims = ", ".join(f"{c} {d.text} NOT NULL" for c in ROLLUP_DIMENSIONS)
    measures = ", ".join(f"{c} {d.bigint} NOT NULL DEFAULT 0" for c in MEASURES_V1)
    key = ", ".join(("hour_us", *ROLLUP_DIMENSIONS))
    return [
        f"CREATE TABLE rollup_hourly (hour_us {d.bigint} NOT NULL, {dims}, {measures}, PRIMARY KEY ({key}))",
    ]


def m0004_rollup_daily(d: Dialect) -> list[str]:
    """Daily rollup (UTC days), the same dimensions as the hourly one, backfilled from it: a
    month's report reads ~30x fewer rows."""
    dims = ", ".join(f"{c} {d.text} NOT NULL" for c in ROLLUP_DIMENSIONS)
    measures = ", ".join(f"{c} {d.bigint} NOT NULL DEFAULT 0" for c in MEASURES_V1)
    key = ", ".join(("day_us", *ROLLUP_DIMENSIONS))
    cols = ", ".join(ROLLUP_DIMENSIONS)
    sums = ", ".join(f"SUM({m})" for m in MEASURES_V1)
    day = f"(hour_us / {DAY_US}) * {DAY_US}"
    return [
        f"CREATE TABLE rollup_daily (day_us {d.bigint} NOT NULL, {dims}, {measures}, PRIMARY KEY ({key}))",
        f"INSERT INTO rollup_daily (day_us, {cols}, {', '.join(MEASURES_V1)}) "
        f"SELECT {day}, {cols}, {sums} FROM rollup_hourly GROUP BY {day}, {cols}",
    ]


def m0003_outcomes(d: Dialect) -> list[str]:
    """Outcomes a session reached (`s.outcome(name)`), for cost per action."""
    t = d.text
    return [
        f"""CREATE TABLE outcomes (
            outcome_id {t} PRIMARY KEY, ts_us {d.bigint} NOT NULL, name {t} NOT NULL, count {d.bigint} NOT NULL,
            session_id {t}, org {t}, team {t}, project {t}, agent {t}, user_id {t}, customer {t},
            workflow {t}, task_type {t})""",
        "CREATE INDEX outcomes_session ON outcomes (session_id)",
        "CREATE INDEX outcomes_ts ON outcomes (ts_us)",
    ]


def m0005_quarantine(d: Dialect) -> list[str]:
    """Events submitted from outside (event API, OTLP) that failed validation, with the reason,
    and rows a store refused; kept verbatim so nothing accepted is ever silently dropped."""
    t = d.text
    return [
        f"""CREATE TABLE quarantine (
            quarantine_id {t} PRIMARY KEY, ts_us {d.bigint} NOT NULL, source {t} NOT NULL,
            reason {t} NOT NULL, payload {t} NOT NULL)""",
        "CREATE INDEX quarantine_ts ON quarantine (ts_us)",
    ]


def m0007_adjustments_index(d: Dialect) -> list[str]:
    """Find the adjustments of an event (trail, adjust) without scanning the ledger: a partial
    index, so the other events cost nothing."""
    return ["CREATE INDEX events_adjusts ON events (adjusts_event_id) WHERE adjusts_event_id IS NOT NULL"]


def m0009_tool_runs(d: Dialect) -> list[str]:
    """Tool runs get their own rollup measure, so `calls` counts model calls only."""
    out = []
    for table in ("rollup_hourly", "rollup_daily"):
        out += [
            f"ALTER TABLE {table} ADD COLUMN tool_runs {d.bigint} NOT NULL DEFAULT 0",
            f"UPDATE {table} SET tool_runs = calls, calls = 0 WHERE kind = 'tool'",
        ]
    return out


def m0010_usage_estimated(d: Dialect) -> list[str]:
    """`usage_estimated`: the provider never reported the call's usage (a stream cut or abandoned
    before it, an unreadable body), so its counts are tokentrail's estimate; the rollups count such
    calls. Every event before this column existed reported its usage (or recorded none): 0."""
    out = [f"ALTER TABLE events ADD COLUMN usage_estimated {d.bigint} NOT NULL DEFAULT 0"]
    out += [
        f"ALTER TABLE {table} ADD COLUMN estimated_calls {d.bigint} NOT NULL DEFAULT 0"
        for table in ("rollup_hourly", "rollup_daily")
    ]
    return out


def _pg_rollup_upsert(table: str, time_column: str, unit: int) -> str:
    key = ", ".join((time_column, *ROLLUP_DIMENSIONS))
    return (
        f"INSERT INTO {table} AS r ({key}, {', '.join(ROLLUP_MEASURES)}) "
        f"SELECT {floor_to('ts_us', unit)}, {', '.join(ROLLUP_SQL_DIMENSIONS)}, "
        f"{', '.join(ROLLUP_SQL_MEASURES)} FROM new_events "
        f"GROUP BY {', '.join(str(i) for i in range(1, len(ROLLUP_DIMENSIONS) + 2))} "
        f"ON CONFLICT ({key}) DO UPDATE SET " + ", ".join(f"{m} = r.{m} + EXCLUDED.{m}" for m in ROLLUP_MEASURES)
    )


def m0011_rollups_in_database(d: Dialect) -> list[str]:
    """PostgreSQL keeps the rollups itself: a statement trigger on `events` adds up exactly the rows
    inserted (a SECURITY DEFINER function of the owner), so the application role needs, and gets,
    no right to write a rollup (an app role could set a rollup's cost to 0 and reports would show
    it). The writers' chain head lock is taken first: no writer upserts rollups of its own in the
    same moment the trigger starts doing it. SQLite (one file, no roles) keeps doing it in Python."""
    if d.name != "postgresql":
        return []
    body = f"""BEGIN
    {_pg_rollup_upsert("rollup_hourly", "hour_us", HOUR_US)};
    {_pg_rollup_upsert("rollup_daily", "day_us", DAY_US)};
    RETURN NULL;
END"""
    create = (
        "CREATE FUNCTION tokentrail_rollup_events() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER "
        "SET search_path = %I, pg_temp AS $body$" + body.replace("'", "''") + "$body$"
    )
    return [
        "SELECT seq FROM chain_head WHERE id = 1 FOR UPDATE",
        # pinned to the ledger's schema: a SECURITY DEFINER function must not follow a caller's search_path
        f"DO $$ BEGIN EXECUTE format('{create}', current_schema()); END $$",
        "CREATE TRIGGER events_rollup AFTER INSERT ON events REFERENCING NEW TABLE AS new_events "
        "FOR EACH STATEMENT EXECUTE FUNCTION tokentrail_rollup_events()",
        # whoever was granted writes on the rollups (an app role, PUBLIC) loses them
        """DO $$
DECLARE g record;
BEGIN
    FOR g IN SELECT DISTINCT c.relname AS name, a.grantee AS grantee
        FROM pg_class c, aclexplode(c.relacl) a
        WHERE c.relnamespace = current_schema()::regnamespace AND c.relname IN ('rollup_hourly', 'rollup_daily')
          AND a.privilege_type IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE') AND a.grantee <> c.relowner
    LOOP
        EXECUTE format('REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON %I FROM %s', g.name,
            CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(g.grantee)) END);
    END LOOP;
END $$""",
    ]


def m0014_agent_trees_and_outcome_value(d: Dialect) -> list[str]:
    """`parent_session_id`: the session a session was opened inside (agent trees); NULL for a
    root, and for every event written before it existed. Outcomes get `success` (1 unless told;
    a failed outcome counts against cost per action) and `value_nusd` (what it was worth: ROI)."""
    return [
        f"ALTER TABLE events ADD COLUMN parent_session_id {d.text}",
        "CREATE INDEX events_parent_session ON events (parent_session_id)",
        f"ALTER TABLE outcomes ADD COLUMN success {d.bigint} NOT NULL DEFAULT 1",
        f"ALTER TABLE outcomes ADD COLUMN value_nusd {d.bigint}",
    ]


def m0017_dim_rollups(d: Dialect) -> list[str]:
    """Rollups by customer, user, workflow, status, tool, step and declared tag keys
    (tokentrail.store.dim_rollups), backfilled from the events."""
    from tokentrail.store.dim_rollups import migration

    return migration(d)


def m0019_one_rollup_trigger(d: Dialect) -> list[str]:
    """PostgreSQL keeps every rollup from one trigger pass over the rows inserted, not two
    (tokentrail.store.pg_rollup_trigger). SQLite keeps its rollups in Python: nothing to do."""
    if d.name != "postgresql":
        return []
    from tokentrail.store.pg_rollup_trigger import migration

    return migration()
