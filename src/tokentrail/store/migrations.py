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
# The rollup measures as the first rollup migrations made them (frozen: released migrations never change).
_MEASURES_V1 = (
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
# `calls` counts model calls (llm, embedding), `tool_runs` the tool runs (migration 0009),
# `estimated_calls` the calls whose usage tokentrail estimated (migration 0010).
ROLLUP_MEASURES = (*_MEASURES_V1, "tool_runs", "estimated_calls")


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

    def json_text(self, column: str) -> str:
        """SQL for the text value of a key in a JSON column: the key is a parameter (json_key),
        never spliced into the SQL (a `%` would be a psycopg placeholder, a quote worse)."""
        if self.name == "sqlite":
            return f"json_extract({column}, ?)"
        # jsonb refuses \u0000: a NUL written before tags refused it must not break every report
        return f"(replace({column}, '\\u0000', '\\ufffd')::jsonb ->> %s)"

    def json_key(self, key: str) -> str:
        """The parameter of json_text for `key`."""
        return f'$."{key}"' if self.name == "sqlite" else key


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
    measures = ", ".join(f"{c} {d.bigint} NOT NULL DEFAULT 0" for c in _MEASURES_V1)
    key = ", ".join(("hour_us", *ROLLUP_DIMENSIONS))
    return [
        f"CREATE TABLE rollup_hourly (hour_us {d.bigint} NOT NULL, {dims}, {measures}, PRIMARY KEY ({key}))",
    ]


def m0004_rollup_daily(d: Dialect) -> list[str]:
    """Daily rollup (UTC days), the same dimensions as the hourly one, backfilled from it: a
    month's report reads ~30x fewer rows."""
    dims = ", ".join(f"{c} {d.text} NOT NULL" for c in ROLLUP_DIMENSIONS)
    measures = ", ".join(f"{c} {d.bigint} NOT NULL DEFAULT 0" for c in _MEASURES_V1)
    key = ", ".join(("day_us", *ROLLUP_DIMENSIONS))
    cols = ", ".join(ROLLUP_DIMENSIONS)
    sums = ", ".join(f"SUM({m})" for m in _MEASURES_V1)
    day = f"(hour_us / {DAY_US}) * {DAY_US}"
    return [
        f"CREATE TABLE rollup_daily (day_us {d.bigint} NOT NULL, {dims}, {measures}, PRIMARY KEY ({key}))",
        f"INSERT INTO rollup_daily (day_us, {cols}, {', '.join(_MEASURES_V1)}) "
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


# -- budgets (tokentrail.budgets) ------------------------------------------------------------------


def m0006_budgets(d: Dialect) -> list[str]:
    """Budgets and their two-phase reservations (docs/rules.md §Budgets), the kill switch, and alerts.

    `budget_counters` holds one row per budget, bucket (the values of its `*` dimensions) and
    period: what was posted, whether an overage blocks it, which thresholds alerted. Reservations
    are rows of `budget_holds` (one per hold and counter) that count only until `expires_us`, so
    a killed process's reservations return on their own. Rolling windows sum `budget_window`.
    `budget_meta.version` moves on every definition change, so processes re-read cheaply."""
    t, n = d.text, d.bigint
    return [
        f"""CREATE TABLE budgets (
            name {t} PRIMARY KEY, scope {t} NOT NULL, period {t} NOT NULL, limit_nusd {n}, limit_tokens {n},
            alert_at {t} NOT NULL, action {t} NOT NULL, tz {t} NOT NULL, source {t} NOT NULL,
            created_us {n} NOT NULL, updated_us {n} NOT NULL)""",
        f"CREATE TABLE budget_suspensions (scope {t} PRIMARY KEY, reason {t}, created_us {n} NOT NULL)",
        f"CREATE TABLE budget_meta (id INTEGER PRIMARY KEY CHECK (id = 1), version {n} NOT NULL)",
        "INSERT INTO budget_meta (id, version) VALUES (1, 0)",
        f"""CREATE TABLE budget_counters (
            counter_key {t} PRIMARY KEY, budget {t} NOT NULL, bucket {t} NOT NULL,
            period_start_us {n}, period_end_us {n},
            posted_nusd {n} NOT NULL DEFAULT 0, posted_tokens {n} NOT NULL DEFAULT 0,
            blocked_until_us {n}, alerted {n} NOT NULL DEFAULT 0, updated_us {n} NOT NULL)""",
        "CREATE INDEX budget_counters_budget ON budget_counters (budget, updated_us)",
        f"""CREATE TABLE budget_holds (
            hold_id {t} NOT NULL, counter_key {t} NOT NULL, nusd {n} NOT NULL, tokens {n} NOT NULL,
            expires_us {n} NOT NULL, session_id {t}, PRIMARY KEY (hold_id, counter_key))""",
        "CREATE INDEX budget_holds_counter ON budget_holds (counter_key, expires_us)",
        f"""CREATE TABLE budget_window (
            counter_key {t} NOT NULL, ts_us {n} NOT NULL, nusd {n} NOT NULL, tokens {n} NOT NULL)""",
        "CREATE INDEX budget_window_counter ON budget_window (counter_key, ts_us)",
        f"""CREATE TABLE alerts (
            alert_id {t} PRIMARY KEY, alert_key {t} NOT NULL UNIQUE, ts_us {n} NOT NULL, kind {t} NOT NULL,
            budget {t} NOT NULL, scope {t} NOT NULL, period {t} NOT NULL, period_start_us {n}, period_end_us {n},
            threshold {d.real}, posted_nusd {n}, limit_nusd {n}, posted_tokens {n}, limit_tokens {n},
            session_id {t}, message {t} NOT NULL)""",
        "CREATE INDEX alerts_ts ON alerts (ts_us)",
    ]


MIGRATIONS.append(("0006_budgets", m0006_budgets))


# -- audit (tokentrail.audit, tokentrail.corrections) ----------------------------------------------


def m0007_adjustments_index(d: Dialect) -> list[str]:
    """Find the adjustments of an event (trail, adjust) without scanning the ledger: a partial
    index, so the other events cost nothing."""
    return ["CREATE INDEX events_adjusts ON events (adjusts_event_id) WHERE adjusts_event_id IS NOT NULL"]


MIGRATIONS.append(("0007_adjustments_index", m0007_adjustments_index))


# -- server keys (tokentrail.store.keys) -----------------------------------------------------------


def m0008_api_keys(d: Dialect) -> list[str]:
    """Keys of `tokentrail serve` (`tokentrail keys create`): only a SHA-256 of each key and its
    last 4 characters are kept; a virtual key names the environment variable holding the provider
    key the server sends upstream, never the provider key itself."""
    t, n = d.text, d.bigint
    return [
        f"""CREATE TABLE api_keys (
            key_id {t} PRIMARY KEY, key_hash {t} NOT NULL UNIQUE, last4 {t} NOT NULL, role {t} NOT NULL,
            name {t}, attribution {t} NOT NULL, provider_key_env {t}, created_us {n} NOT NULL, revoked_us {n})""",
    ]


MIGRATIONS.append(("0008_api_keys", m0008_api_keys))


def m0009_tool_runs(d: Dialect) -> list[str]:
    """Tool runs get their own rollup measure, so `calls` counts model calls only."""
    out = []
    for table in ("rollup_hourly", "rollup_daily"):
        out += [
            f"ALTER TABLE {table} ADD COLUMN tool_runs {d.bigint} NOT NULL DEFAULT 0",
            f"UPDATE {table} SET tool_runs = calls, calls = 0 WHERE kind = 'tool'",
        ]
    return out


MIGRATIONS.append(("0009_tool_runs", m0009_tool_runs))


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


MIGRATIONS.append(("0010_usage_estimated", m0010_usage_estimated))


# The rollup measures over raw events, as SQL (the same definitions as store/_rollup.aggregate and
# the raw report queries). The trigger of migration 0011 sums these: a migration that adds a
# rollup measure adds its SQL here and recreates that function (CREATE OR REPLACE).
ROLLUP_SQL_MEASURES = (
    "SUM(CASE WHEN kind IN ('llm', 'embedding') THEN 1 ELSE 0 END)",
    "SUM(CASE WHEN kind <> 'adjustment' AND status <> 'ok' THEN 1 ELSE 0 END)",
    "SUM(input_tokens)",
    "SUM(output_tokens)",
    "SUM(cache_read_tokens)",
    "SUM(cache_write_tokens)",
    "SUM(reasoning_tokens)",
    "COALESCE(SUM(cost_nusd), 0)",
    "SUM(CASE WHEN cost_nusd IS NULL AND kind IN ('llm', 'embedding') "
    "AND SUBSTR(status, 1, 13) <> 'invalid_usage' THEN 1 ELSE 0 END)",
    "SUM(CASE WHEN cost_nusd IS NULL AND kind IN ('llm', 'embedding') "
    "AND SUBSTR(status, 1, 13) = 'invalid_usage' THEN 1 ELSE 0 END)",
    "SUM(CASE WHEN kind = 'tool' THEN 1 ELSE 0 END)",
    "SUM(usage_estimated)",
)


def floor_to(column: str, unit: int) -> str:
    """SQL for `column` rounded down to a multiple of `unit` (also before 1970), with no `%`."""
    return (
        f"CASE WHEN {column} >= 0 THEN ({column} / {unit}) * {unit} ELSE -((-{column} - 1) / {unit} + 1) * {unit} END"
    )


ROLLUP_SQL_DIMENSIONS = tuple(f"COALESCE({c}, '')" for c in ROLLUP_DIMENSIONS)


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


MIGRATIONS.append(("0011_rollups_in_database", m0011_rollups_in_database))


def m0012_budget_unpriced(d: Dialect) -> list[str]:
    """A budget with a USD limit refuses calls to models it cannot price, unless it allows them."""
    return [f"ALTER TABLE budgets ADD COLUMN allow_unpriced {d.bigint} NOT NULL DEFAULT 0"]


MIGRATIONS.append(("0012_budget_unpriced", m0012_budget_unpriced))


def m0013_anomalies(d: Dialect) -> list[str]:
    """What the anomaly detectors read from each call (the output limit the request set, whether the
    call stopped on it, the system/developer share of the prompt in per mille; 0 = not read, so
    events of before stay as they were hashed), and the anomalies they found, one per
    (kind, dedup_key): a session's or an agent's day's."""
    t, n, r = d.text, d.bigint, d.real
    out = [
        f"ALTER TABLE events ADD COLUMN {c} {n} NOT NULL DEFAULT 0"
        for c in ("output_limit", "stopped_on_limit", "system_permille")
    ]
    out.append(f"""CREATE TABLE anomalies (
        anomaly_id {t} PRIMARY KEY,
        kind {t} NOT NULL,
        dedup_key {t} NOT NULL,
        severity {t} NOT NULL,
        ts_us {n} NOT NULL,
        detected_us {n} NOT NULL,
        session_id {t},
        org {t}, team {t}, project {t}, agent {t}, user_id {t}, customer {t}, workflow {t}, task_type {t},
        metric {r} NOT NULL,
        baseline {r},
        threshold {r} NOT NULL,
        cost_nusd {n},
        event_ids {t} NOT NULL,
        message {t} NOT NULL,
        UNIQUE (kind, dedup_key)
    )""")
    out.append("CREATE INDEX anomalies_ts ON anomalies (ts_us)")
    out.append("CREATE INDEX anomalies_session ON anomalies (session_id)")
    return out


MIGRATIONS.append(("0013_anomalies", m0013_anomalies))


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


MIGRATIONS.append(("0014_agent_trees_and_outcome_value", m0014_agent_trees_and_outcome_value))


# -- reconciliation with the providers' bills (tokentrail.analytics.reconcile) --------------------


def m0015_reconcile_runs(d: Dialect) -> list[str]:
    """Reconciliation runs, kept so coverage and drift can be seen over time. Amounts are decimal
    text (the providers bill below the nano-dollar); `cells` is the run's JSON table."""
    t, n = d.text, d.bigint
    return [
        f"""CREATE TABLE reconcile_runs (
            run_id {t} PRIMARY KEY, created_us {n} NOT NULL, provider {t} NOT NULL, since_us {n} NOT NULL,
            until_us {n} NOT NULL, source {t} NOT NULL, tolerance {t} NOT NULL, provider_cost_usd {t},
            ledger_cost_usd {t}, coverage {t}, verdicts {t} NOT NULL, cells {t} NOT NULL)""",
        "CREATE INDEX reconcile_runs_provider ON reconcile_runs (provider, created_us)",
    ]


MIGRATIONS.append(("0015_reconcile_runs", m0015_reconcile_runs))


def m0017_dim_rollups(d: Dialect) -> list[str]:
    """Rollups by customer, user, workflow, status, tool, step and declared tag keys
    (tokentrail.store.dim_rollups), backfilled from the events."""
    from tokentrail.store.dim_rollups import migration

    return migration(d)


MIGRATIONS.append(("0017_dim_rollups", m0017_dim_rollups))

# PostgreSQL: what the application role may do, table by table (`tokentrail migrate
# --grant-app-role ROLE`, PostgresStore.grant_app_role); the owner (the migration role) keeps the
# rest. Ledger tables are read and appended only: no UPDATE, DELETE or TRUNCATE. Only counters
# and working state are updated. Every table needs a line here (tests/test_audit.py checks).
APP_PRIVILEGES: dict[str, tuple[str, ...]] = {
    "schema_migrations": ("SELECT",),
    "events": ("SELECT", "INSERT"),
    "event_ids": ("SELECT", "INSERT"),
    "outcomes": ("SELECT", "INSERT"),
    "quarantine": ("SELECT", "INSERT"),
    "alerts": ("SELECT", "INSERT"),
    # rollups: kept by the database from the events inserted (migration 0011), never written directly
    "rollup_hourly": ("SELECT",),
    "rollup_daily": ("SELECT",),
    # dimension rollups (0017): kept by the database too; tag keys are declared by the owner
    "rollup_dim_hourly": ("SELECT",),
    "rollup_dim_daily": ("SELECT",),
    "rollup_tag_keys": ("SELECT",),
    "chain_head": ("SELECT", "UPDATE"),
    # budgets: defined by the owner (`tokentrail budget set|rm|suspend`); the app reserves and posts
    "budgets": ("SELECT",),
    "budget_suspensions": ("SELECT",),
    "budget_meta": ("SELECT",),
    "budget_counters": ("SELECT", "INSERT", "UPDATE"),
    "budget_holds": ("SELECT", "INSERT", "UPDATE", "DELETE"),
    "budget_window": ("SELECT", "INSERT", "DELETE"),
    # server keys: issued and revoked by the owner (`tokentrail keys create|revoke`); the server reads
    "api_keys": ("SELECT",),
    # reconciliation runs: appended by `tokentrail reconcile`, never changed
    "reconcile_runs": ("SELECT", "INSERT"),
    # anomalies: found by the detectors (online in the writer, or `tokentrail anomalies --rescan`)
    "anomalies": ("SELECT", "INSERT"),
}
