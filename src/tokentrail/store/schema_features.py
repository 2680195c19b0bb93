"""The migrations of the features built on the ledger: budgets and alerts, server keys, anomalies,
reconciliation runs. Each is a function of the dialect returning its statements
(tokentrail.store.migrations lists them in order)."""

from __future__ import annotations

from tokentrail.store.dialect import Dialect

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


def m0012_budget_unpriced(d: Dialect) -> list[str]:
    """A budget with a USD limit refuses calls to models it cannot price, unless it allows them."""
    return [f"ALTER TABLE budgets ADD COLUMN allow_unpriced {d.bigint} NOT NULL DEFAULT 0"]


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


# -- anomalies (tokentrail.analytics.anomalies) -----------------------------------------------------


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


def m0016_advice(d: Dialect) -> list[str]:
    """`prefix_hash`: the hash of a request's stable prefix and that prefix's share of the prompt
    (the savings advisor's prompt-caching evidence; NULL for every event of before, so old hashes
    verify). `advice_dismissals`: recommendations a user dismissed, by their stable id."""
    t, n = d.text, d.bigint
    return [
        f"ALTER TABLE events ADD COLUMN prefix_hash {t}",
        f"""CREATE TABLE advice_dismissals (
            advice_id {t} PRIMARY KEY, kind {t} NOT NULL, team {t}, agent {t}, task_type {t},
            dismissed_us {n} NOT NULL, dismissed_by {t})""",
    ]
