"""The schema, as an ordered list of named migrations shared by every backend.

Each migration is a function of the dialect that returns SQL statements; where SQLite and
PostgreSQL differ, the function branches on `d.name`. A migration, once released, never
changes: a new schema change is a new function appended to MIGRATIONS.
"""

from __future__ import annotations

from collections.abc import Callable

from tokentrail.store import schema_features, schema_ledger, session_rollup
from tokentrail.store.dialect import Dialect
from tokentrail.types import Store

Migration = tuple[str, Callable[[Dialect], list[str]]]
MIGRATIONS: list[Migration] = [
    ("0001_events", schema_ledger.m0001_events),
    ("0002_rollups", schema_ledger.m0002_rollups),
    ("0003_outcomes", schema_ledger.m0003_outcomes),
    ("0004_rollup_daily", schema_ledger.m0004_rollup_daily),
    ("0005_quarantine", schema_ledger.m0005_quarantine),
    ("0006_budgets", schema_features.m0006_budgets),
    ("0007_adjustments_index", schema_ledger.m0007_adjustments_index),
    ("0008_api_keys", schema_features.m0008_api_keys),
    ("0009_tool_runs", schema_ledger.m0009_tool_runs),
    ("0010_usage_estimated", schema_ledger.m0010_usage_estimated),
    ("0011_rollups_in_database", schema_ledger.m0011_rollups_in_database),
    ("0012_budget_unpriced", schema_features.m0012_budget_unpriced),
    ("0013_anomalies", schema_features.m0013_anomalies),
    ("0014_agent_trees_and_outcome_value", schema_ledger.m0014_agent_trees_and_outcome_value),
    ("0015_reconcile_runs", schema_features.m0015_reconcile_runs),
    ("0016_advice", schema_features.m0016_advice),
    ("0017_dim_rollups", schema_ledger.m0017_dim_rollups),
    (session_rollup.MIGRATION, session_rollup.migration),
    ("0019_one_rollup_trigger", schema_ledger.m0019_one_rollup_trigger),
]

# PostgreSQL: what the application role may do, table by table (`tokentrail migrate
# --grant-app-role ROLE`, PostgresStore.grant_app_role); the owner (the migration role) keeps the
# rest. Ledger tables are read and appended only: no UPDATE, DELETE or TRUNCATE. Only counters
# and working state are updated. Every table needs a line here (tests/store/test_audit.py checks).
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
    # the session summary (0018): kept by the database too
    "session_summary": ("SELECT",),
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
    # savings advice dismissed by a user (`tokentrail advise --dismiss`, the API); kept for good
    "advice_dismissals": ("SELECT", "INSERT"),
}


def applied_migrations(store: Store) -> list[tuple[str, int | None]]:
    """(name, applied_us) of every migration the store has applied, by name."""
    rows = store.query("SELECT name, applied_us FROM schema_migrations ORDER BY name")
    return [(str(name), None if at is None else int(at)) for name, at in rows]
