"""The embedded SQLite ledger: WAL, synchronous=FULL, one transaction per batch."""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tokentrail.events import COLUMNS, GENESIS_HASH, canonical_bytes, chain_link
from tokentrail.exceptions import StoreError
from tokentrail.store._rollup import aggregate, by_day
from tokentrail.store.budgets import BudgetSQL, SQLiteBudgetSQL
from tokentrail.store.dialect import SQLITE, Dialect
from tokentrail.store.dim_rollups import SQLiteDimRollups, declare_sqlite
from tokentrail.store.economics import OUTCOME_COLUMNS, full_outcome_row
from tokentrail.store.migrations import MIGRATIONS
from tokentrail.store.rollup_columns import ROLLUP_DIMENSIONS, ROLLUP_MEASURES
from tokentrail.store.session_rollup import add_sqlite as add_to_session_summary

Row = tuple[Any, ...]

_INSERT_EVENT = (
    f"INSERT INTO events (seq, {', '.join(COLUMNS)}, prev_hash, hash) VALUES ({', '.join('?' * (len(COLUMNS) + 3))})"
)


def _upsert(table: str, time_column: str) -> str:
    cols = (time_column, *ROLLUP_DIMENSIONS, *ROLLUP_MEASURES)
    return (
        f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
        f"ON CONFLICT ({', '.join((time_column, *ROLLUP_DIMENSIONS))}) DO UPDATE SET "
        + ", ".join(f"{m} = {m} + excluded.{m}" for m in ROLLUP_MEASURES)
    )


_UPSERT_HOURLY = _upsert("rollup_hourly", "hour_us")
_UPSERT_DAILY = _upsert("rollup_daily", "day_us")
_SELECT_EVENT = f"SELECT {', '.join(COLUMNS)} FROM events"
_ID_CHUNK = 500
_SETUP_BUSY_MS = 5000  # opening: WAL switch, migrations (rare, short)
_POLL_BUSY_MS = 20  # one BEGIN IMMEDIATE attempt: SQLite polls at 1, 2, 5, 10 ms, then we retry


class SQLiteStore:
    """A ledger in one SQLite file, safe for many threads and processes."""

    dialect: Dialect = SQLITE
    # How long a write waits for other processes' transactions before the ledger counts as
    # unavailable (and the batch is spooled). Several agents writing one file take turns:
    # waiting for them is normal, not an outage worth a warning.
    lock_wait_s: float = 15.0

    def __init__(self, path: str | Path, *, migrate: bool = True, read_only: bool = False) -> None:
        """`read_only`: open an existing file for reading only (a copy on a read-only mount, a
        file this user may read but not write): no migration, no WAL switch, writes fail."""
        self.path = Path(path)
        self.read_only = read_only
        self.url = f"sqlite:///{self.path}"
        self._write_lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._closed = False
        self._stop_waiting = False
        self._dims = SQLiteDimRollups()
        try:
            if read_only:
                self._conn = self._reader()
                self._check_schema()
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = self._connect()
            if migrate:
                self.migrate()
                try:
                    declare_sqlite(self)  # the tag keys TOKENTRAIL_ROLLUP_TAGS declares, backfilled
                except BaseException:
                    self.close()  # a bad declaration (ConfigError): no connection left open
                    raise
            self._conn.execute(f"PRAGMA busy_timeout = {_POLL_BUSY_MS}")
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"cannot open the ledger at {self.path}: {_why(e)}") from None

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=_SETUP_BUSY_MS / 1000)
        try:
            conn.execute(f"PRAGMA busy_timeout = {_SETUP_BUSY_MS}")
            if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
                raise sqlite3.OperationalError("could not switch the journal to WAL")
            conn.execute("PRAGMA synchronous = FULL")
            # Probe that the file is really writable now, not at the first event. Busy means another
            # process is writing: then it is writable (read-only is reported before any lock is taken).
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as e:
                if not _is_busy(e):
                    raise
            else:
                conn.execute("ROLLBACK")
        except BaseException:
            conn.close()  # not left open until the garbage collector finds it
            raise
        return conn

    def _begin_write(self, c: sqlite3.Connection) -> None:
        """BEGIN IMMEDIATE: take the file's write lock, waiting for other processes' transactions.

        Waiting for writers that make progress is taking turns, not an outage: the wait gives up
        only once nobody has committed for `lock_wait_s` (a stuck holder, say an open shell
        transaction), or at once after `stop_waiting()` (closing: the writer spools instead).
        SQLite's own busy handler sleeps ever longer between looks (up to 100 ms), so a process
        that commits and begins again at once could starve the others; short jittered retries
        give every waiting writer its turn."""
        deadline = 0.0
        version = None
        while True:
            try:
                c.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as e:
                if not _is_busy(e):
                    raise
                if self._stop_waiting:
                    raise sqlite3.OperationalError("database is locked (closing: not waiting for other writers)") from e
                now = time.monotonic()
                seen = _data_version(c)
                if not deadline or seen != version:  # another connection committed: the line moves
                    version, deadline = seen, now + self.lock_wait_s
                elif now >= deadline:
                    raise sqlite3.OperationalError(
                        f"database is locked: held by another connection that committed nothing for "
                        f"{self.lock_wait_s:g}s"
                    ) from e
            time.sleep(random.uniform(0.0005, 0.005))

    def stop_waiting(self) -> None:
        """Let a write waiting for the lock give up now (the ledger is closing and spools it)."""
        self._stop_waiting = True

    @property
    def write_lock(self) -> threading.Lock:
        """Held by every write transaction this process makes on the file through the store. Other
        writers of the same process (the budget engine) take it too: they then wait their turn on
        a lock that wakes them at once, instead of in SQLite's busy handler, which sleeps 1 ms and
        more before it looks again."""
        return self._write_lock

    def budget_sql(self) -> BudgetSQL:
        """The budget tables' SQL on this file, for this process: a connection of its own, whose
        write transactions take turns with this store's on `write_lock`."""
        return SQLiteBudgetSQL(str(self.path), write_lock=self._write_lock)

    # -- schema -------------------------------------------------------------------------------

    def migrate(self) -> list[str]:
        applied: list[str] = []
        if self._up_to_date():
            return applied  # no write lock at open: other processes may be busy writing
        with self._write_lock:
            c = self._conn
            self._begin_write(c)
            try:
                c.execute("CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_us INTEGER)")
                done = {r[0] for r in c.execute("SELECT name FROM schema_migrations")}
                for name, fn in MIGRATIONS:
                    if name in done:
                        continue
                    for statement in fn(self.dialect):
                        c.execute(statement)
                    c.execute("INSERT INTO schema_migrations VALUES (?, ?)", (name, int(time.time() * 1_000_000)))
                    applied.append(name)
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
        return applied

    def _up_to_date(self) -> bool:
        try:
            done = {r[0] for r in self._conn.execute("SELECT name FROM schema_migrations")}
        except sqlite3.OperationalError:  # no such table yet
            return False
        return all(name in done for name, _ in MIGRATIONS)

    # -- writes -------------------------------------------------------------------------------

    def write_events(self, rows: Sequence[Row]) -> int:
        if not rows:
            return 0
        # The Python work is done before the lock is taken: under load (many threads, a busy CPU)
        # it is what kept the file locked for seconds while other processes waited.
        canonical = [canonical_bytes(r) for r in rows]
        dims = self._dims.prepare(rows)  # the main rollup's rows and the dimension rollups'
        hourly = dims.hourly
        daily = by_day(hourly)
        with self._write_lock:
            c = self._conn
            self._begin_write(c)
            try:
                fresh = self._new_rows(c, rows)
                if fresh:
                    head = c.execute("SELECT seq, hash FROM chain_head WHERE id = 1").fetchone()
                    seq, prev = head if head else (0, GENESIS_HASH)
                    first = seq
                    hashes = []
                    for i in fresh:
                        seq += 1
                        prev = chain_link(seq, prev, canonical[i])
                        hashes.append(bytearray(prev))
                    # The rows to insert are made one at a time as sqlite3 binds them: a list of them
                    # (2000 tuples alive at once) set off the garbage collector's passes over the heap.
                    # The hashes as bytearray: sqlite3 binds it as a BLOB at once, where bytes first
                    # goes through its adapter lookup (~1 µs a value); stored the same, read as bytes.
                    prevs = [bytearray(head[1] if head else GENESIS_HASH), *hashes[:-1]]
                    links = zip(range(first + 1, seq + 1), fresh, prevs, hashes, strict=True)
                    c.executemany(_INSERT_EVENT, ((s, *rows[i], p, h) for s, i, p, h in links))
                    add_to_session_summary(c, first + 1, seq)  # the session summary (0018)
                    if len(fresh) < len(rows):  # some were stored already (a replay): roll up the rest
                        hourly = aggregate([rows[i] for i in fresh])
                        daily = by_day(hourly)
                    c.executemany(_UPSERT_HOURLY, hourly)
                    c.executemany(_UPSERT_DAILY, daily)
                    all_fresh = len(fresh) == len(rows)
                    self._dims.write(c, rows if all_fresh else [rows[i] for i in fresh], dims, all_fresh=all_fresh)
                    c.execute("INSERT OR REPLACE INTO chain_head (id, seq, hash) VALUES (1, ?, ?)", (seq, prev))
                c.execute("COMMIT")
            except BaseException:
                _rollback(c)
                raise
        return len(fresh)

    @staticmethod
    def _new_rows(c: sqlite3.Connection, rows: Sequence[Row]) -> list[int]:
        """Indexes of the rows whose event_id is in neither the ledger nor earlier in the batch."""
        ids = [r[0] for r in rows]
        stored: set[str] = set()
        for i in range(0, len(ids), _ID_CHUNK):
            chunk = ids[i : i + _ID_CHUNK]
            marks = ",".join("?" * len(chunk))
            stored.update(r[0] for r in c.execute(f"SELECT event_id FROM events WHERE event_id IN ({marks})", chunk))
        fresh = []
        for i, event_id in enumerate(ids):
            if event_id not in stored:
                stored.add(event_id)
                fresh.append(i)
        return fresh

    def write_outcomes(self, rows: Sequence[Row]) -> int:
        return self._insert_ignoring_known(
            f"INSERT OR IGNORE INTO outcomes ({', '.join(OUTCOME_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(OUTCOME_COLUMNS))})",
            [full_outcome_row(r) for r in rows],
        )

    def write_quarantine(self, rows: Sequence[Row]) -> int:
        return self._insert_ignoring_known("INSERT OR IGNORE INTO quarantine VALUES (?, ?, ?, ?, ?)", rows)

    def _insert_ignoring_known(self, sql: str, rows: Sequence[Row]) -> int:
        """Insert rows in one transaction; rows whose key is already stored are skipped."""
        if not rows:
            return 0
        with self._write_lock:
            c = self._conn
            self._begin_write(c)
            try:
                before = c.total_changes
                c.executemany(sql, rows)
                n = c.total_changes - before
                c.execute("COMMIT")
            except BaseException:
                _rollback(c)
                raise
        return n

    def execute_write(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One write statement in its own immediate transaction (admin paths, not the hot path)."""
        with self._write_lock:
            c = self._conn
            self._begin_write(c)
            try:
                cur = c.execute(sql, params)
                c.execute("COMMIT")
            except BaseException:
                _rollback(c)
                raise
            return cur.rowcount

    def write_transaction(self, build: Callable[[sqlite3.Connection], Sequence[tuple[str, Sequence[Any]]]]) -> None:
        """Statements in one immediate transaction; `build` reads what it needs inside it, under the
        writers' lock, and returns them (admin paths: declaring a rolled-up tag key)."""
        with self._write_lock:
            c = self._conn
            self._begin_write(c)
            try:
                for sql, params in build(c):
                    c.execute(sql, params)
                c.execute("COMMIT")
            except BaseException:
                _rollback(c)
                raise

    @staticmethod
    def is_transient(error: BaseException) -> bool:
        """Locked, busy, read-only, full or I/O trouble may pass; anything else refuses the data."""
        return isinstance(error, (sqlite3.OperationalError, OSError, StoreError))

    # -- reads --------------------------------------------------------------------------------

    def _check_schema(self) -> None:
        """A read-only ledger cannot be migrated: say so rather than fail on a missing column."""
        done = {r[0] for r in self._conn.execute("SELECT name FROM schema_migrations")}
        missing = [name for name, _ in MIGRATIONS if name not in done]
        if missing:
            raise sqlite3.OperationalError(
                f"it is read-only and its schema lacks {', '.join(missing)}: "
                "run `tokentrail migrate` on a writable copy"
            )

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._open_for_reading()
            conn.execute("PRAGMA busy_timeout = 10000")
            conn.execute("PRAGMA query_only = ON")
            self._local.conn = conn
            with self._write_lock:
                self._readers.append(conn)
        return conn

    def _open_for_reading(self) -> sqlite3.Connection:
        if not self.read_only:
            return sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
        uri = self.path.resolve().as_uri()
        try:
            conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            return conn
        except sqlite3.OperationalError:
            # A WAL ledger needs its -shm file, which nobody can create on a read-only mount:
            # nobody can write there either, so the file cannot change while it is read.
            immutable = f"{uri}?mode=ro&immutable=1"
            return sqlite3.connect(immutable, uri=True, isolation_level=None, check_same_thread=False)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self._reader().execute(sql, params).fetchall()

    def get_event(self, event_id: str) -> Row | None:
        row: Row | None = self._reader().execute(f"{_SELECT_EVENT} WHERE event_id = ?", (event_id,)).fetchone()
        return row

    def chain(self, from_seq: int = 1) -> Iterator[tuple[int, bytes, bytes, Row]]:
        conn = self._reader()
        last = from_seq - 1
        while True:
            batch = conn.execute(
                f"SELECT seq, prev_hash, hash, {', '.join(COLUMNS)} FROM events WHERE seq > ? ORDER BY seq LIMIT 5000",
                (last,),
            ).fetchall()
            if not batch:
                return
            for r in batch:
                yield r[0], r[1], r[2], tuple(r[3:])
            last = batch[-1][0]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._write_lock:
            self._conn.close()  # read-only: also one of the readers (closing twice is harmless)
            for conn in self._readers:
                conn.close()
            self._readers.clear()


def _rollback(c: sqlite3.Connection) -> None:
    try:
        c.execute("ROLLBACK")
    except sqlite3.Error:
        pass  # the failed statement may already have ended the transaction


def _data_version(c: sqlite3.Connection) -> int | None:
    """Changes whenever another connection commits to the file (None if even that is busy)."""
    try:
        return int(c.execute("PRAGMA data_version").fetchone()[0])
    except sqlite3.OperationalError:
        return None


def _is_busy(e: sqlite3.OperationalError) -> bool:
    code = getattr(e, "sqlite_errorcode", None)
    if code is not None:
        return bool(code & 0xFF == sqlite3.SQLITE_BUSY)
    return "database is locked" in str(e)


def _why(e: BaseException) -> str:
    if isinstance(e, OSError):
        return e.strerror or str(e)
    msg = str(e)
    if "unable to open" in msg or "readonly" in msg:
        return f"{msg} (is the directory writable by this user?)"
    return msg
