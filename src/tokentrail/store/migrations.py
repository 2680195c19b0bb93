"""The schema, as an ordered list of named migrations shared by every backend.

Each migration is a function of the dialect that returns SQL statements; where SQLite and
PostgreSQL differ, the function branches on `d.name`. A migration, once released, never
changes: a new schema change is a new function appended to MIGRATIONS.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# Dimensions kept in the hourly rollup; reports grouped or filtered by only these never scan raw events.
ROLLUP_DIMENSIONS = ("org", "team", "project", "agent", "provider", "model", "task_type", "kind")
HOUR_US = 3_600_000_000
DAY_US = 86_400_000_000
ROLLUP_MEASURES = (
    "calls",
    "errors",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cost_nusd",
    "unpriced_calls",
    "invalid_calls",
)


@dataclass(frozen=True)
class Dialect:
    """The SQL spellings that differ between backends."""

    name: str  # "sqlite" | "postgresql"
    param: str  # placeholder
    bigint: str
    real: str
    text: str
    uuid: str
    blob: str
    json: str
    serial: str  # an auto-numbered integer primary key

    def json_text(self, column: str, key: str) -> str:
        """SQL for the text value of `key` in a JSON column."""
        if self.name == "sqlite":
            return f"json_extract({column}, '$.\"{key}\"')"
        return f"({column}::jsonb ->> '{key}')"


SQLITE = Dialect(
    name="sqlite",
    param="?",
    bigint="INTEGER",
    real="REAL",
    text="TEXT",
    uuid="TEXT",
    blob="BLOB",
    json="TEXT",
    serial="INTEGER PRIMARY KEY",
)
POSTGRES = Dialect(
    name="postgresql",
    param="%s",
    bigint="BIGINT",
    real="DOUBLE PRECISION",
    text="TEXT",
    uuid="UUID",
    blob="BYTEA",
    json="JSONB",
    serial="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
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
    measures = ", ".join(f"{c} {d.bigint} NOT NULL DEFAULT 0" for c in ROLLUP_MEASURES)
    key = ", ".join(("hour_us", *ROLLUP_DIMENSIONS))
    return [
        f"CREATE TABLE rollup_hourly (hour_us {d.bigint} NOT NULL, {dims}, {measures}, PRIMARY KEY ({key}))",
    ]


def m0004_rollup_daily(d: Dialect) -> list[str]:
    """Daily rollup (UTC days), the same dimensions as the hourly one, backfilled from it: a
    month's report reads ~30x fewer rows."""
    dims = ", ".join(f"{c} {d.text} NOT NULL" for c in ROLLUP_DIMENSIONS)
    measures = ", ".join(f"{c} {d.bigint} NOT NULL DEFAULT 0" for c in ROLLUP_MEASURES)
    key = ", ".join(("day_us", *ROLLUP_DIMENSIONS))
    cols = ", ".join(ROLLUP_DIMENSIONS)
    sums = ", ".join(f"SUM({m})" for m in ROLLUP_MEASURES)
    day = f"(hour_us / {DAY_US}) * {DAY_US}"
    return [
        f"CREATE TABLE rollup_daily (day_us {d.bigint} NOT NULL, {dims}, {measures}, PRIMARY KEY ({key}))",
        f"INSERT INTO rollup_daily (day_us, {cols}, {', '.join(ROLLUP_MEASURES)}) "
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


Migration = tuple[str, Callable[[Dialect], list[str]]]
MIGRATIONS: list[Migration] = [
    ("0001_events", m0001_events),
    ("0002_rollups", m0002_rollups),
    ("0003_outcomes", m0003_outcomes),
    ("0004_rollup_daily", m0004_rollup_daily),
    ("0005_quarantine", m0005_quarantine),
]
