"""The shared PostgreSQL ledger: psycopg 3, a connection pool, COPY ingest, monthly partitions.

One `write_events` batch is one transaction:

1. lock the single `chain_head` row (FOR UPDATE): writers of every process take turns here,
   so the audit chain has no forks and no two writers ever race on an event id;
2. `INSERT INTO event_ids … ON CONFLICT DO NOTHING RETURNING event_id` claims the batch's ids
   in the unpartitioned id table: what comes back is exactly the rows never stored before,
   whatever their `ts_us` (the partitioned `events` table cannot hold a ledger-wide unique key);
3. chain the new rows in Python (`events.chain_hash`), COPY them into `events` (one statement
   trigger of the owner adds them to every rollup, store/pg_rollup_trigger.py: no application
   role writes a rollup), move the chain head, COMMIT (durable: the server runs with fsync and
   synchronous_commit on).

A lost connection surfaces as an exception from the call (never a hang: connect, statement,
lock and TCP keepalive timeouts are set), the pool replaces the broken connection, and the
ledger's writer retries the batch, which the id table makes idempotent.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

from tokentrail.events import COLUMNS, chain_hash
from tokentrail.exceptions import ConfigError, StoreError
from tokentrail.store._rollup import aggregate, by_day
from tokentrail.store.budgets import BudgetSQL
from tokentrail.store.dialect import POSTGRES, Dialect
from tokentrail.store.dim_rollups import declare_postgres
from tokentrail.store.economics import OUTCOME_COLUMNS, full_outcome_row
from tokentrail.store.pg_budgets import PostgresBudgetSQL
from tokentrail.store.pg_messages import redact_url, why
from tokentrail.store.pg_rows import canonical_id, canonical_rows, first_of_each, without_nul
from tokentrail.store.rollup_columns import ROLLUP_DIMENSIONS, ROLLUP_MEASURES
from tokentrail.types import Row

try:
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg.conninfo import conninfo_to_dict
    from psycopg.types.string import TextLoader
    from psycopg_pool import ConnectionPool, PoolTimeout
except ImportError as e:  # pragma: no cover - depends on the installation
    from tokentrail._extras import missing_extra_message

    raise ConfigError(missing_extra_message("a postgresql:// ledger", "postgres", ["psycopg 3", "psycopg-pool"])) from e

# after the driver's import: its absence is reported above, naming the extra
from tokentrail.store.pg_schema import ensure_partitions_on, grant_app_role_on, migrate_on

log = logging.getLogger("tokentrail")

_COLS = ", ".join(COLUMNS)
_COPY_EVENTS = f"COPY events (seq, {_COLS}, prev_hash, hash) FROM STDIN"
# %b: binary parameters (several times faster to send than text arrays)
_CLAIM_IDS = "INSERT INTO event_ids (event_id) SELECT unnest(%b::uuid[]) ON CONFLICT DO NOTHING RETURNING event_id"
_ROLLUP_KEY = ("hour_us", *ROLLUP_DIMENSIONS)
_ROLLUP_COLS = (*_ROLLUP_KEY, *ROLLUP_MEASURES)
_ROLLUP_TYPES = ("bigint", *["text"] * len(ROLLUP_DIMENSIONS), *["bigint"] * len(ROLLUP_MEASURES))


def _upsert(table: str, time_column: str) -> str:
    cols = (time_column, *_ROLLUP_COLS[1:])
    return (
        f"INSERT INTO {table} ({', '.join(cols)}) "
        f"SELECT * FROM unnest({', '.join(f'%b::{t}[]' for t in _ROLLUP_TYPES)}) "
        f"ON CONFLICT ({', '.join((time_column, *_ROLLUP_KEY[1:]))}) DO UPDATE SET "
        + ", ".join(f"{m} = {table}.{m} + EXCLUDED.{m}" for m in ROLLUP_MEASURES)
    )


# The chain head, locked, and whether the database keeps the rollups itself (migration 0011: a
# trigger on events). Read under the lock that the migration takes too, so never both or neither.
_LOCK_HEAD = (
    "SELECT seq, hash, EXISTS (SELECT 1 FROM schema_migrations WHERE name = '0011_rollups_in_database') "
    "FROM chain_head WHERE id = 1 FOR UPDATE"
)
_UPSERT_HOURLY = _upsert("rollup_hourly", "hour_us")
_UPSERT_DAILY = _upsert("rollup_daily", "day_us")
_OUTCOME_COLS = OUTCOME_COLUMNS
_OUTCOME_TYPES = ("text", "bigint", "text", "bigint", *["text"] * 9, "bigint", "bigint")
_INSERT_OUTCOMES = (
    f"INSERT INTO outcomes ({', '.join(_OUTCOME_COLS)}) "
    f"SELECT * FROM unnest({', '.join(f'%b::{t}[]' for t in _OUTCOME_TYPES)}) "
    "ON CONFLICT (outcome_id) DO NOTHING"
)
_SELECT_EVENT = f"SELECT {_COLS} FROM events"
_CHAIN_PAGE = 5000
TRANSACTION_POOLING_ENV = "TOKENTRAIL_PG_TRANSACTION_POOLING"
_RECONNECT_S = 4.0
_PARTITION_CHECK_S = 6 * 3600.0


class PostgresStore:
    """A ledger in a PostgreSQL database, shared by many processes and machines.

    `url` is a libpq URL (`postgresql://user@host:5432/db?sslmode=…`); put the ledger in a schema
    of its own with `options=-csearch_path%3Dmyschema`. Timeouts (seconds): `connect_timeout`
    for each new connection, `pool_timeout` to wait for a pooled connection (the database being
    down surfaces as an error after this) and `statement_timeout` for any one statement (reads
    included). Opening migrates (unless `migrate=False`) and makes the monthly partitions up to
    `months_ahead` months ahead; a long-running store re-checks them every few hours.

    `transaction_pooling=True` (default: env `TOKENTRAIL_PG_TRANSACTION_POOLING=1`) is for a pooler
    in transaction mode (PgBouncer < 1.21, `pool_mode = transaction`) between the store and the
    server: psycopg prepares no statement (a prepared statement lives on one server connection, and
    the pooler hands the next transaction another one) and no session setting is sent (it would
    stay on whichever server connection ran it); set the timeouts on the role instead
    (docs/scaling.md).
    """

    dialect: Dialect = POSTGRES
    # Events per write_events call that suit this store: COPY and the commit's fsync amortise over
    # large batches (the Ledger's writer reads this).
    max_batch: int = 10_000

    def __init__(
        self,
        url: str,
        *,
        migrate: bool = True,
        min_size: int = 1,
        max_size: int = 4,
        connect_timeout: float = 5.0,
        pool_timeout: float = 5.0,
        statement_timeout: float = 120.0,
        months_ahead: int = 3,
        transaction_pooling: bool | None = None,
    ) -> None:
        self.url = url
        if transaction_pooling is None:
            transaction_pooling = os.environ.get(TRANSACTION_POOLING_ENV, "").strip().lower() in ("1", "true", "yes")
        self.transaction_pooling = transaction_pooling
        self.display_url = redact_url(url)
        self.months_ahead = months_ahead
        self._statement_timeout_ms = int(statement_timeout * 1000)
        self._closed = False
        self._next_partition_check = time.monotonic() + _PARTITION_CHECK_S
        try:
            params = conninfo_to_dict(url)
        except psycopg.ProgrammingError as e:
            raise ConfigError(f"database URL {self.display_url}: {e}") from None
        extra: dict[str, Any] = {}
        # Never hang on a dead server or a half-open TCP connection (ignored for Unix sockets).
        for key, value in (
            ("connect_timeout", max(1, round(connect_timeout))),
            ("keepalives", 1),
            ("keepalives_idle", 10),
            ("keepalives_interval", 5),
            ("keepalives_count", 3),
            ("tcp_user_timeout", 30_000),
        ):
            if key == "tcp_user_timeout" and psycopg.pq.version() < 120000:
                continue
            if key not in params:
                extra[key] = value
        if transaction_pooling:
            extra["prepare_threshold"] = None
        self._connect_kwargs = extra
        # Connect once directly: a wrong URL, password or database fails here, with libpq's reason.
        try:
            conn = self._connect()
        except psycopg.Error as e:
            raise StoreError(f"cannot connect to the ledger at {self.display_url}: {why(e)}") from None
        try:
            if migrate:
                self._migrate_on(conn)
                declare_postgres(conn)  # the tag keys TOKENTRAIL_ROLLUP_TAGS declares, backfilled
        except psycopg.Error as e:
            raise StoreError(f"cannot migrate the ledger at {self.display_url}: {why(e)}") from None
        finally:
            conn.close()
        self._pool = ConnectionPool(
            url,
            min_size=min_size,
            max_size=max(min_size, max_size),
            kwargs={"autocommit": True, **extra},
            configure=self._configure,
            check=ConnectionPool.check_connection,
            timeout=pool_timeout,
            # psycopg_pool retries a lost connection with an unbounded exponential backoff (1, 2, 4,
            # 8 … s) for reconnect_timeout: after a long outage it could wait ~30 s more than needed.
            # Giving up early lets the next request start a fresh attempt (1 s), so writes resume
            # within a few seconds of the server coming back.
            reconnect_timeout=_RECONNECT_S,
            name=f"tokentrail {self.display_url}",
            open=False,
        )
        self._pool.open(wait=False)

    # -- connections ----------------------------------------------------------------------------

    def connection(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        """`with store.connection() as conn:` a connection from the store's pool (autocommit: open a
        transaction with `conn.transaction()`), given back to the pool when the block ends."""
        return self._pool.connection()

    def budget_sql(self) -> BudgetSQL:
        """The budget tables' SQL on this database: short transactions on this store's pool."""
        return PostgresBudgetSQL(self)

    def _connect(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self.url, autocommit=True, **self._connect_kwargs)
        try:
            self._configure(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        """Set up every new connection: uuid read back as its canonical text (rows read back equal
        rows written), timeouts so that no call hangs and no crashed client keeps the chain locked."""
        conn.adapters.register_loader("uuid", TextLoader)
        if self.transaction_pooling:
            return
        conn.execute(
            f"SET statement_timeout = {self._statement_timeout_ms}; "
            f"SET idle_in_transaction_session_timeout = {max(self._statement_timeout_ms, 60_000)}"
        )

    # -- schema -----------------------------------------------------------------------------------

    def migrate(self) -> list[str]:
        with self._pool.connection() as conn:
            return self._migrate_on(conn)

    def _migrate_on(self, conn: psycopg.Connection[Any]) -> list[str]:
        applied = migrate_on(conn)
        ensure_partitions_on(conn, display_url=self.display_url, months_ahead=self.months_ahead)
        return applied

    def ensure_partitions(
        self, months_ahead: int | None = None, *, months_behind: int = 1, since_us: int | None = None
    ) -> list[str]:
        """Create the monthly partitions of `events` from `months_behind` months before this one
        (or from the month of `since_us`, when earlier) to `months_ahead` months after it; return
        the names created. A month whose events already sit in the DEFAULT partition is left there
        (logged); a role without the right to create tables gets a warning, not an error, since the
        DEFAULT partition takes every event anyway."""
        with self._pool.connection() as conn:
            return ensure_partitions_on(
                conn,
                display_url=self.display_url,
                months_ahead=self.months_ahead if months_ahead is None else months_ahead,
                months_behind=months_behind,
                since_us=since_us,
            )

    def _maintain_partitions(self) -> None:
        """A process that runs for months keeps its partitions ahead of time (never failing a write)."""
        self._next_partition_check = time.monotonic() + _PARTITION_CHECK_S
        try:
            self.ensure_partitions()
        except Exception as e:
            log.warning("tokentrail: partition maintenance of %s failed: %s", self.display_url, why(e))

    def grant_app_role(self, role: str) -> dict[str, tuple[str, ...]]:
        """Give an existing role exactly the application's privileges (APP_PRIVILEGES) on this
        ledger's tables, revoking any others it had there, and USAGE on the schema; return them.
        Run as the owner. Privileges bind neither the owner nor a superuser: run the application
        as this role."""
        with self._pool.connection() as conn:
            return grant_app_role_on(conn, role)

    # -- writes -----------------------------------------------------------------------------------

    def write_events(self, rows: Sequence[Row]) -> int:
        if not rows:
            return 0
        batch = first_of_each(canonical_rows(rows))
        if time.monotonic() >= self._next_partition_check:
            self._maintain_partitions()
        try:
            return self._write_events(batch)
        except psycopg.DataError as e:
            if "NUL" not in str(e):
                raise
        # PostgreSQL text cannot hold NUL characters (SQLite can): store U+FFFD instead. The row is
        # hashed after this, so the chain covers exactly what was stored.
        return self._write_events([without_nul(r) for r in batch])

    def _write_events(self, batch: list[Row]) -> int:
        try:
            return self._write_batch(batch, assume_new=True)
        except pg_errors.UniqueViolation:
            # Some of these events are already stored (a replay): claim the ids one by one instead.
            return self._write_batch(batch, assume_new=False)

    def _write_batch(self, batch: list[Row], *, assume_new: bool) -> int:
        """One transaction. The common case, every event new, COPYs the ids straight into
        `event_ids` (a duplicate makes that fail, and the caller retries with `assume_new=False`,
        which asks `INSERT … ON CONFLICT DO NOTHING RETURNING` which ids are new)."""
        with self._pool.connection() as conn, conn.transaction():
            cur = conn.cursor()
            head = cur.execute(_LOCK_HEAD).fetchone()
            if head is None:
                raise StoreError(f"the ledger at {self.display_url} has no chain head (run `tokentrail migrate`)")
            seq, prev, in_database = head[0], bytes(head[1]), head[2]
            # Python work is interleaved with the server's: while it indexes the ids (and then the
            # rows) already sent, the rollup deltas (and then the hashes) are being computed.
            deltas: list[Row] = []
            if assume_new:
                fresh = batch
                with cur.copy("COPY event_ids (event_id) FROM STDIN") as copy:
                    copy.write("\n".join([r[0] for r in batch]) + "\n")  # canonical UUIDs need no escaping
                    if not in_database:
                        deltas = aggregate(fresh)
            else:
                new_ids = {r[0] for r in cur.execute(_CLAIM_IDS, ([r[0] for r in batch],)).fetchall()}
                if not new_ids:
                    return 0
                fresh = batch if len(new_ids) == len(batch) else [r for r in batch if r[0] in new_ids]
                if not in_database:
                    deltas = aggregate(fresh)
            with cur.copy(_COPY_EVENTS) as copy:
                write_row = copy.write_row
                for row in fresh:
                    seq += 1
                    h = chain_hash(seq, prev, row)
                    write_row((seq, *row, prev, h))
                    prev = h
            if not in_database:  # a ledger not migrated to 0011 yet: its rollups are kept here
                cur.execute(_UPSERT_HOURLY, list(map(list, zip(*deltas, strict=True))))
                cur.execute(_UPSERT_DAILY, list(map(list, zip(*by_day(deltas), strict=True))))
            cur.execute("UPDATE chain_head SET seq = %s, hash = %s WHERE id = 1", (seq, prev))
        return len(fresh)

    def write_outcomes(self, rows: Sequence[Row]) -> int:
        if not rows:
            return 0
        columns = list(map(list, zip(*map(full_outcome_row, rows), strict=True)))
        with self._pool.connection() as conn, conn.transaction():
            cur = conn.execute(_INSERT_OUTCOMES, columns)
            return max(cur.rowcount, 0)

    def write_quarantine(self, rows: Sequence[Row]) -> int:
        if not rows:
            return 0
        with self._pool.connection() as conn, conn.transaction():
            cur = conn.cursor()
            cur.executemany(
                "INSERT INTO quarantine (quarantine_id, ts_us, source, reason, payload) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                [tuple(without_nul(r)) for r in rows],
            )
            return max(cur.rowcount, 0)

    def execute_write(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One write statement in its own transaction (admin paths, not the hot path)."""
        with self._pool.connection() as conn, conn.transaction():
            cur = conn.execute(sql, params if params else None)
            return cur.rowcount

    @staticmethod
    def is_transient(error: BaseException) -> bool:
        """Only connection-level trouble may pass (a lost or refused connection, a pool timeout, a
        server shutting down or out of disk); anything else refuses the data for good."""
        if isinstance(error, StoreError):
            return "not a UUID" not in str(error)
        if isinstance(error, psycopg.errors.OperationalError):  # includes disk full, admin shutdown
            return True
        if isinstance(error, (pg_errors.DuplicatePreparedStatement, pg_errors.InvalidSqlStatementName)):
            # the driver's own prepared statements gone astray (a transaction-mode pooler in front, see
            # transaction_pooling): nothing wrong with the rows, which must wait, not go to quarantine
            return True
        return isinstance(error, (psycopg.InterfaceError, PoolTimeout, ConnectionError, TimeoutError))

    # -- reads ------------------------------------------------------------------------------------

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        with self._pool.connection() as conn:
            return conn.execute(sql, params if params else None).fetchall()

    def get_event(self, event_id: str) -> Row | None:
        try:
            key = canonical_id(event_id)
        except StoreError:
            return None
        with self._pool.connection() as conn:
            return conn.execute(f"{_SELECT_EVENT} WHERE event_id = %s", (key,)).fetchone()

    def chain(self, from_seq: int = 1) -> Iterator[tuple[int, bytes, bytes, Row]]:
        # One server-side cursor, not pages keyed on seq: seq is not unique here (a partitioned
        # table cannot enforce it), and paging by it would skip a forged row that repeats a seq at
        # a page boundary. Ties are ordered so that verification is deterministic. Closing the
        # iterator (or dropping it) ends the transaction and returns the connection.
        sql = f"SELECT seq, prev_hash, hash, {_COLS} FROM events WHERE seq >= %s ORDER BY seq, event_id, hash"
        with self._pool.connection() as conn, conn.transaction(), conn.cursor(name="tokentrail_chain") as cur:
            cur.itersize = _CHAIN_PAGE
            cur.execute(sql, (from_seq,))
            for r in cur:
                yield r[0], bytes(r[1]), bytes(r[2]), tuple(r[3:])

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pool.close()
