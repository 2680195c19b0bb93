"""Dimension rollups: spend by customer, user, workflow, status, tool, step and declared tag keys.

The main rollup (`rollup_hourly`/`rollup_daily`) is keyed by eight dimensions at once; adding a
customer or a user to that key would multiply its rows. These tables are narrow instead: one row
per (hour or day, org, team, project, dimension, value), so each event counts once under each
rolled-up dimension. A report by one of these dimensions, filtered only by it, org, team or
project, reads them (team and project are in the key: a scoped key's report stays here too).

Tag keys are rolled up once declared (`TOKENTRAIL_ROLLUP_TAGS=region,bu`): the declaration is kept
in `rollup_tag_keys`, and declaring a key backfills its rows from the events in the same
transaction, under the writers' lock. The SQLite writer adds each batch here in Python
(pre-aggregated: one upsert per key per batch); PostgreSQL keeps them with a statement trigger
of the owner, like the main rollup (migration 0011): the application role only reads them.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tokentrail.events import text_problem
from tokentrail.exceptions import ConfigError
from tokentrail.store._dim_rollup import DIM_COLUMNS, SCOPE_COLUMNS, aggregate_both, dims_by_day
from tokentrail.store.dialect import Dialect
from tokentrail.store.rollup_columns import (
    DAY_US,
    HOUR_US,
    ROLLUP_MEASURES,
    ROLLUP_SQL_MEASURES,
    floor_to,
)
from tokentrail.types import SQLDialect, Store

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("tokentrail")

MIGRATION = "0017_dim_rollups"
TAGS_ENV = "TOKENTRAIL_ROLLUP_TAGS"
MAX_TAG_KEYS = 32  # each declared key adds a row per event: bounded
TABLES: tuple[tuple[str, str, int], ...] = (
    ("rollup_dim_hourly", "hour_us", HOUR_US),
    ("rollup_dim_daily", "day_us", DAY_US),
)
KEY_COLUMNS = (*SCOPE_COLUMNS, "dim", "value")
_TAG_KEY = re.compile(r"[^'\"\\\x00-\x1f]{1,256}")
Row = tuple[Any, ...]
Stmt = tuple[str, list[Any]]


# -- schema (migration 0017) ---------------------------------------------------------------------


def migration(d: Dialect) -> list[str]:
    """The tables, the fixed dimensions backfilled from the events, and (PostgreSQL) the trigger."""
    keys = ", ".join(f"{c} {d.text} NOT NULL" for c in KEY_COLUMNS)
    measures = ", ".join(f"{m} {d.bigint} NOT NULL DEFAULT 0" for m in ROLLUP_MEASURES)
    out = ["SELECT seq FROM chain_head WHERE id = 1 FOR UPDATE"] if d.name == "postgresql" else []
    out.append(f"CREATE TABLE rollup_tag_keys (tag {d.text} PRIMARY KEY, declared_us {d.bigint} NOT NULL)")
    for table, column, _ in TABLES:
        # dimension first: a report reads one dimension's rows over a time range, never the others'
        pk = ", ".join(("dim", column, *SCOPE_COLUMNS, "value"))
        # SQLite: clustered on the key (one B-tree per upsert, not a table and its index)
        clustered = " WITHOUT ROWID" if d.name == "sqlite" else ""
        out.append(
            f"CREATE TABLE {table} ({column} {d.bigint} NOT NULL, {keys}, {measures}, PRIMARY KEY ({pk})){clustered}"
        )
    for sql, _ in backfill(d, ()):
        out.append(sql)
    if d.name == "postgresql":
        out += _pg_trigger()
    return out


def expected(
    d: SQLDialect, unit: int, tag_keys: Sequence[str], since_us: int | None = None, *, fixed: bool = True
) -> list[Stmt]:
    """SELECTs of the rows a dimension rollup of `unit` should hold, recomputed from the events:
    `(time, org, team, project, dim, value, *measures)`, one SELECT per dimension (the fixed ones
    unless `fixed` is False, and each tag key)."""
    p = d.param
    base = ", ".join(f"COALESCE({c}, '')" for c in SCOPE_COLUMNS)
    sums = ", ".join(ROLLUP_SQL_MEASURES)
    where = f" WHERE ts_us >= {p}" if since_us is not None else ""
    tail = [since_us] if since_us is not None else []
    groups = "GROUP BY 1, 2, 3, 4, 6"
    out: list[Stmt] = []
    for dim, column in DIM_COLUMNS.items() if fixed else ():
        sql = f"SELECT {floor_to('ts_us', unit)}, {base}, CAST({p} AS TEXT), COALESCE({column}, ''), {sums} FROM events"
        out.append((f"{sql}{where} {groups}", [dim, *tail]))
    for key in tag_keys:
        value = f"COALESCE({d.json_text('tags')}, '')"
        sql = f"SELECT {floor_to('ts_us', unit)}, {base}, CAST({p} AS TEXT), {value}, {sums} FROM events"
        out.append((f"{sql}{where} {groups}", [f"tag.{key}", d.json_key(key), *tail]))
    return out


def backfill(d: SQLDialect, tag_keys: Sequence[str]) -> list[Stmt]:
    """Statements adding the events' rows of these dimensions (every fixed one when `tag_keys` is
    empty, else those tag keys only) to the hourly table, and the daily table from it. The fixed
    ones' (a migration's: no parameters) have the dimensions' names, plain words of ours, spliced in."""
    cols = ", ".join(("hour_us", *KEY_COLUMNS, *ROLLUP_MEASURES))
    out: list[Stmt] = []
    marker = f"CAST({d.param} AS TEXT)"
    for sql, params in expected(d, HOUR_US, tag_keys, fixed=not tag_keys):
        if not tag_keys:
            sql, params = sql.replace(marker, f"CAST('{params[0]}' AS TEXT)", 1), []
        out.append((f"INSERT INTO rollup_dim_hourly ({cols}) {sql}", params))
    dims = [f"tag.{k}" for k in tag_keys] if tag_keys else list(DIM_COLUMNS)
    sums = ", ".join(f"SUM({m})" for m in ROLLUP_MEASURES)
    marks = ", ".join(d.param if tag_keys else f"'{dim}'" for dim in dims)
    day = floor_to("hour_us", DAY_US)
    out.append(
        (
            f"INSERT INTO rollup_dim_daily (day_us, {', '.join((*KEY_COLUMNS, *ROLLUP_MEASURES))}) "
            f"SELECT {day}, {', '.join(KEY_COLUMNS)}, {sums} FROM rollup_dim_hourly WHERE dim IN ({marks}) "
            f"GROUP BY 1, {', '.join(KEY_COLUMNS)}",
            dims if tag_keys else [],
        )
    )
    return out


def _pg_trigger() -> list[str]:
    """A statement trigger of the owner (SECURITY DEFINER, pinned search_path) adding exactly the
    rows inserted, each under every fixed dimension and every declared tag key. One statement: the
    rows are grouped once by every column read (most of a live batch shares them), each group is
    spread over the dimensions, and both tables are upserted from that one hourly result."""
    cols = (*SCOPE_COLUMNS, *DIM_COLUMNS.values(), "tags")
    firsts = ", ".join(f"COALESCE({c}, '') AS {c}" for c in cols[:-1])
    sums = ", ".join(f"{sql} AS {m}" for sql, m in zip(ROLLUP_SQL_MEASURES, ROLLUP_MEASURES, strict=True))
    groups = ", ".join(str(i) for i in range(1, len(cols) + 2))
    values = ", ".join(f"('{dim}', g.{col})" for dim, col in DIM_COLUMNS.items())
    tag = "COALESCE(replace(g.tags, '\\u0000', '\\ufffd')::jsonb ->> k.tag, '')"
    spread = ", ".join(f"SUM(g.{m}) AS {m}" for m in ROLLUP_MEASURES)
    key_cols = ", ".join(KEY_COLUMNS)
    measures = ", ".join(ROLLUP_MEASURES)

    def upsert(table: str, column: str, time_sql: str) -> str:
        key = f"{column}, {key_cols}"
        return (
            f"INSERT INTO {table} AS r ({key}, {measures}) "
            f"SELECT {time_sql}, {key_cols}, {', '.join(f'SUM({m})' for m in ROLLUP_MEASURES)} FROM h "
            "GROUP BY 1, 2, 3, 4, 5, 6 "
            f"ON CONFLICT ({key}) DO UPDATE SET " + ", ".join(f"{m} = r.{m} + EXCLUDED.{m}" for m in ROLLUP_MEASURES)
        )

    statement = (
        f"WITH g AS (SELECT {floor_to('ts_us', HOUR_US)} AS t, {firsts}, tags, {sums} FROM new_events "
        f"GROUP BY {groups}), "
        f"h AS (SELECT g.t, g.org, g.team, g.project, d.dim, d.value, {spread} FROM g CROSS JOIN LATERAL "
        f"(VALUES {values} UNION ALL SELECT 'tag.' || k.tag, {tag} FROM rollup_tag_keys k) AS d(dim, value) "
        "GROUP BY 1, 2, 3, 4, 5, 6), "
        f"hourly AS ({upsert('rollup_dim_hourly', 'hour_us', 't')}) "
        + upsert("rollup_dim_daily", "day_us", floor_to("t", DAY_US))
    )
    upserts = [statement]
    body = "BEGIN\n" + "".join(f"    {u};\n" for u in upserts) + "    RETURN NULL;\nEND"
    create = (
        "CREATE FUNCTION tokentrail_rollup_dims() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER "
        "SET search_path = %I, pg_temp AS $body$" + body.replace("'", "''") + "$body$"
    )
    tables = ", ".join(f"'{t}'" for t in ("rollup_tag_keys", *(t for t, _, _ in TABLES)))
    return [
        f"DO $$ BEGIN EXECUTE format('{create}', current_schema()); END $$",
        "CREATE TRIGGER events_rollup_dims AFTER INSERT ON events REFERENCING NEW TABLE AS new_events "
        "FOR EACH STATEMENT EXECUTE FUNCTION tokentrail_rollup_dims()",
        # as for the main rollups: nobody but the owner writes them
        f"""DO $$
DECLARE g record;
BEGIN
    FOR g IN SELECT DISTINCT c.relname AS name, a.grantee AS grantee
        FROM pg_class c, aclexplode(c.relacl) a
        WHERE c.relnamespace = current_schema()::regnamespace AND c.relname IN ({tables})
          AND a.privilege_type IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE') AND a.grantee <> c.relowner
    LOOP
        EXECUTE format('REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON %I FROM %s', g.name,
            CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(g.grantee)) END);
    END LOOP;
END $$""",
    ]


# -- declared tag keys -----------------------------------------------------------------------------


def declared_from_env() -> tuple[str, ...]:
    """The tag keys TOKENTRAIL_ROLLUP_TAGS declares (lower-cased, as tags are stored); ConfigError
    naming a bad one."""
    raw = os.environ.get(TAGS_ENV, "")
    keys = tuple(dict.fromkeys(k.strip().lower() for k in raw.split(",") if k.strip()))
    for k in keys:
        if not _TAG_KEY.fullmatch(k) or text_problem(k) is not None:
            raise ConfigError(f"{TAGS_ENV}: bad tag key {k[:64]!r} (no quotes, backslashes or control characters)")
    if len(keys) > MAX_TAG_KEYS:
        raise ConfigError(f"{TAGS_ENV}: {len(keys)} tag keys; at most {MAX_TAG_KEYS} can be rolled up")
    return keys


def tag_keys(store: Store) -> tuple[str, ...] | None:
    """The tag keys this ledger rolls up (sorted), or None when its schema has no dimension
    rollups (a ledger opened without migrating)."""
    p = store.dialect.param
    if not store.query(f"SELECT 1 FROM schema_migrations WHERE name = {p}", [MIGRATION]):
        return None
    return tuple(sorted(str(r[0]) for r in store.query("SELECT tag FROM rollup_tag_keys")))


def declare_statements(d: SQLDialect, new_keys: Sequence[str]) -> list[Stmt]:
    """Declare tag keys and backfill their rows (run in one transaction, under the writers' lock)."""
    if not new_keys:
        return []
    now = int(time.time() * 1_000_000)
    insert = f"INSERT INTO rollup_tag_keys (tag, declared_us) VALUES ({d.param}, {d.param})"
    out: list[Stmt] = [(insert, [k, now]) for k in new_keys]
    return [*out, *backfill(d, new_keys)]


def declare_sqlite(store: Any) -> list[str]:
    """Declare (and backfill) the keys TOKENTRAIL_ROLLUP_TAGS names that this SQLite ledger lacks,
    in one write transaction (the keys are read again inside it: another process may have won)."""
    from tokentrail.store.dialect import SQLITE

    wanted = declared_from_env()
    have = tag_keys(store) if wanted else None
    if have is None or all(k in have for k in wanted):
        return []
    done: list[str] = []

    def build(c: sqlite3.Connection) -> list[Stmt]:
        inside = {r[0] for r in c.execute("SELECT tag FROM rollup_tag_keys")}
        done[:] = [k for k in wanted if k not in inside]
        return declare_statements(SQLITE, done)

    store.write_transaction(build)
    return done


def declare_postgres(conn: psycopg.Connection[Any]) -> list[str]:
    """Declare (and backfill) the keys TOKENTRAIL_ROLLUP_TAGS names that this PostgreSQL ledger lacks.
    Only the owner may: another role gets a warning and reports scan for those keys."""
    from psycopg import errors as pg_errors

    from tokentrail.store.dialect import POSTGRES

    wanted = declared_from_env()
    if not wanted:
        return []
    if not conn.execute("SELECT 1 FROM schema_migrations WHERE name = %s", (MIGRATION,)).fetchall():
        return []
    if set(wanted) <= {r[0] for r in conn.execute("SELECT tag FROM rollup_tag_keys")}:
        return []  # the common case: nothing to declare, no lock taken
    try:
        with conn.transaction():
            conn.execute("SELECT seq FROM chain_head WHERE id = 1 FOR UPDATE")  # writers wait: exact backfill
            have = {r[0] for r in conn.execute("SELECT tag FROM rollup_tag_keys")}
            new = [k for k in wanted if k not in have]
            for sql, params in declare_statements(POSTGRES, new):
                conn.execute(sql, params)
    except pg_errors.InsufficientPrivilege as e:
        log.warning(
            "tokentrail: cannot roll up the tag keys of %s (%s): run `tokentrail migrate` as the owner", TAGS_ENV, e
        )
        return []
    return new


# -- the SQLite writer's part ----------------------------------------------------------------------


@dataclass(slots=True)
class Prepared:
    """A batch's rollup deltas, computed before the write lock: the main rollup's hourly rows and
    the dimension rollups' hourly and daily rows, for the tag keys `keys` (None: no such tables)."""

    keys: tuple[str, ...] | None
    hourly: list[Row]
    dims: list[Row]
    dims_daily: list[Row]


class SQLiteDimRollups:
    """Keeps the dimension rollups of one SQLite store: `prepare` before the write lock (the
    Python work: one pass for the main rollup and these), `write` inside the batch's transaction."""

    def __init__(self) -> None:
        self.keys: tuple[str, ...] | None = ()  # as last read in a transaction (None: not migrated)

    def prepare(self, rows: Sequence[Row]) -> Prepared:
        hourly, dims = aggregate_both(rows, self.keys)
        return Prepared(self.keys, hourly, dims, dims_by_day(dims))

    def write(self, c: sqlite3.Connection, rows: Sequence[Row], prepared: Prepared, *, all_fresh: bool) -> None:
        """Upsert a batch's dimension deltas; recomputed here when the declared keys changed since
        `prepare` (read in this transaction: a key declared meanwhile counts this batch too) or
        when only some rows were new."""
        try:
            now = tuple(sorted(r[0] for r in c.execute("SELECT tag FROM rollup_tag_keys")))
        except sqlite3.OperationalError as e:
            if "no such table" not in str(e):
                raise
            self.keys = None
            return
        dims, daily = prepared.dims, prepared.dims_daily
        if prepared.keys != now or not all_fresh:
            dims = aggregate_both(rows, now)[1]
            daily = dims_by_day(dims)
        self.keys = now
        c.executemany(_UPSERT_SQLITE[0], dims)
        c.executemany(_UPSERT_SQLITE[1], daily)


def _sqlite_upsert(table: str, column: str) -> str:
    cols = (column, *KEY_COLUMNS, *ROLLUP_MEASURES)
    return (
        f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
        f"ON CONFLICT ({', '.join((column, *KEY_COLUMNS))}) DO UPDATE SET "
        + ", ".join(f"{m} = {m} + excluded.{m}" for m in ROLLUP_MEASURES)
    )


_UPSERT_SQLITE = tuple(_sqlite_upsert(t, c) for t, c, _ in TABLES)


# -- reading ---------------------------------------------------------------------------------------


def query(
    store: Store,
    table: str,
    column: str,
    dim: str,
    plain: Sequence[str],
    timed: bool,
    filters: Sequence[tuple[str, Sequence[str]]],
    start: int | None,
    end: int | None,
) -> list[Row]:
    """Sums grouped by (the time column if `timed`,) `plain`, from one dimension table: `dim`'s
    value is read from `value`, org/team/project from their columns; filters AND-ed, a filter's
    values OR-ed ('' matches a missing value, as the table stores it)."""
    p = store.dialect.param
    groups = [*((column,) if timed else ()), *("value" if d == dim else d for d in plain)]
    conds: list[str] = [f"dim = {p}"]
    params: list[Any] = [dim]
    for lo_hi, op in ((start, ">="), (end, "<")):
        if lo_hi is not None:
            conds.append(f"{column} {op} {p}")
            params.append(lo_hi)
    for d, values in filters:
        col = "value" if d == dim else d
        if col not in ("value", *SCOPE_COLUMNS):
            raise ValueError(f"{d} is not in the dimension rollup of {dim}")
        conds.append(f"{col} IN ({', '.join(p for _ in values)})")
        params.extend(values)
    sums = ", ".join(f"SUM({m})" for m in ROLLUP_MEASURES)
    sql = f"SELECT {', '.join((*groups, sums))} FROM {table} WHERE {' AND '.join(conds)}"
    if groups:
        sql += f" GROUP BY {', '.join(str(i) for i in range(1, len(groups) + 1))}"
    return store.query(sql, params)


# -- rebuilding (tokentrail.store.rollup_check; the check is in store/rollup_diff.py) ---------------


def rebuild_statements(d: SQLDialect, keys: Sequence[str]) -> list[Stmt]:
    """Recompute both dimension rollups from the events (the fixed dimensions and `keys`)."""
    out: list[Stmt] = [(f"DELETE FROM {table}", []) for table, _, _ in TABLES]
    out += backfill(d, ())
    if keys:
        # the daily rows of the fixed dimensions are in already: the tags' come from their hourly rows
        out += backfill(d, keys)
    return out
