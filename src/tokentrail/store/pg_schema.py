"""The PostgreSQL ledger's schema work, each on a connection the store gives: the migrations, the
monthly partitions of `events`, and the application role's privileges. Migrations and partition
changes take one advisory lock, so processes never run them at the same time."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql as pg_sql

from tokentrail.events import from_micros
from tokentrail.exceptions import ConfigError
from tokentrail.store.dialect import POSTGRES
from tokentrail.store.migrations import APP_PRIVILEGES, MIGRATIONS
from tokentrail.store.pg_messages import why
from tokentrail.store.schema_ledger import postgres_append_only_triggers

log = logging.getLogger("tokentrail")

# Serialises migrations and partition maintenance across every process (any 64-bit constant).
_MIGRATE_LOCK = 0x746F6B656E747261
_DEFAULT_PARTITION = "events_default"
MAX_MONTHS_BEHIND = 120


def migrate_on(conn: psycopg.Connection[Any]) -> list[str]:
    """Apply the pending migrations in one transaction; return the names applied."""
    applied: list[str] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATE_LOCK,))
        # Checked first: CREATE … IF NOT EXISTS needs the CREATE right even when the table exists,
        # and the application's role may not have it once an owner has migrated.
        if conn.execute("SELECT to_regclass('schema_migrations')").fetchone() == (None,):
            conn.execute("CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_us BIGINT)")
        done = {r[0] for r in conn.execute("SELECT name FROM schema_migrations")}
        for name, fn in MIGRATIONS:
            if name in done:
                continue
            for statement in fn(POSTGRES):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (name, applied_us) VALUES (%s, %s)",
                (name, int(time.time() * 1_000_000)),
            )
            applied.append(name)
    return applied


def ensure_partitions_on(
    conn: psycopg.Connection[Any],
    *,
    display_url: str,
    months_ahead: int,
    months_behind: int = 1,
    since_us: int | None = None,
) -> list[str]:
    """Create the monthly partitions of `events` from `months_behind` months before this one (or
    from the month of `since_us`, when earlier, at most MAX_MONTHS_BEHIND back) to `months_ahead`
    after it; return the names created. A month whose events already sit in the DEFAULT partition
    is left there (logged); a role without the right to create tables gets a warning, not an
    error, since the DEFAULT partition takes every event anyway."""
    now = datetime.now(UTC)
    first = _add_months(now.year, now.month, -months_behind)
    if since_us is not None:
        since = from_micros(since_us)
        # at most MAX_MONTHS_BEHIND months back: older events (or a stray 1970) go to DEFAULT
        first = max(min(first, (since.year, since.month)), _add_months(now.year, now.month, -MAX_MONTHS_BEHIND))
    last = _add_months(now.year, now.month, months_ahead)
    wanted = []
    y, m = first
    while (y, m) <= last:
        wanted.append((y, m))
        y, m = _add_months(y, m, 1)
    existing = _partitions(conn)
    missing = [(y, m) for y, m in wanted if _partition_name(y, m) not in existing]
    if not missing:
        return []
    created: list[str] = []
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATE_LOCK,))
            # DDL on a partitioned table waits for the writers of the moment; never stall ingest long.
            conn.execute("SET LOCAL lock_timeout = 5000")
            existing = _partitions(conn)
            for y, m in missing:
                name = _partition_name(y, m)
                if name in existing:
                    continue
                lo, hi = _month_us(y, m), _month_us(*_add_months(y, m, 1))
                stray = conn.execute(
                    f"SELECT count(*) FROM {_DEFAULT_PARTITION} WHERE ts_us >= %s AND ts_us < %s", (lo, hi)
                ).fetchone()
                if stray and stray[0]:
                    log.warning(
                        "tokentrail: %d event(s) of %04d-%02d are in the DEFAULT partition of %s; "
                        "leaving that month there (no partition %s)",
                        stray[0],
                        y,
                        m,
                        display_url,
                        name,
                    )
                    continue
                conn.execute(f"CREATE TABLE {name} PARTITION OF events FOR VALUES FROM ({lo}) TO ({hi})")
                for statement in postgres_append_only_triggers(name, "events", row_triggers=False):
                    conn.execute(statement)
                created.append(name)
    except (pg_errors.InsufficientPrivilege, pg_errors.LockNotAvailable) as e:
        log.warning(
            "tokentrail: cannot create the monthly partitions of %s (%s); events go to the DEFAULT "
            "partition until `tokentrail migrate` runs as the owner",
            display_url,
            why(e),
        )
        return []
    return created


def grant_app_role_on(conn: psycopg.Connection[Any], role: str) -> dict[str, tuple[str, ...]]:
    """Give an existing role exactly the application's privileges (APP_PRIVILEGES) on the ledger's
    tables, revoking any others it had there, and USAGE on the schema; return them."""
    ident = pg_sql.Identifier(role)
    with conn.transaction():
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None:
            # bad input, not a failing store: the CLI says so with its usage status (2)
            raise ConfigError(f"role {role!r} does not exist: create it first (CREATE ROLE {role} LOGIN …)")
        schema = conn.execute("SELECT current_schema()").fetchone()
        if schema is None or schema[0] is None:
            raise ConfigError("no current schema: check the search_path of the ledger URL")
        conn.execute(pg_sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(pg_sql.Identifier(schema[0]), ident))
        for table, privileges in APP_PRIVILEGES.items():
            name = pg_sql.Identifier(table)
            conn.execute(pg_sql.SQL("REVOKE ALL ON {} FROM {}").format(name, ident))
            conn.execute(
                pg_sql.SQL("GRANT {} ON {} TO {}").format(
                    pg_sql.SQL(", ").join(map(pg_sql.SQL, privileges)), name, ident
                )
            )
    return dict(APP_PRIVILEGES)


def _partitions(conn: psycopg.Connection[Any]) -> set[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'events'::regclass"
    ).fetchall()
    return {r[0] for r in rows}


def _partition_name(year: int, month: int) -> str:
    return f"events_p{year:04d}{month:02d}"


def _add_months(year: int, month: int, n: int) -> tuple[int, int]:
    i = year * 12 + (month - 1) + n
    return i // 12, i % 12 + 1


def _month_us(year: int, month: int) -> int:
    d = datetime(year, month, 1, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (d.days * 86_400 + d.seconds) * 1_000_000
