"""The reads and writes of `tokentrail copy` beyond events and outcomes' own paths: how much a
ledger holds, outcomes page by page, and the side tables copied row by row (by primary key, so a
second copy adds nothing)."""

from __future__ import annotations

from tokentrail.store.economics import OUTCOME_COLUMNS
from tokentrail.types import Row, Store

_OUTCOME_COLS = ", ".join(OUTCOME_COLUMNS)

# Tables moved along with the events (small: definitions, kept history, the spend of current
# budget periods). Reservations in flight and rolling-window posts are not: they expire in minutes.
SIDE_TABLES = ("quarantine", "budgets", "budget_suspensions", "budget_counters", "alerts", "api_keys")


def ledger_size(store: Store) -> tuple[int, int, int | None]:
    """(events, outcomes, the earliest event's ts_us or None)."""
    events, first_ts = store.query("SELECT COUNT(*), MIN(ts_us) FROM events")[0]
    outcomes = store.query("SELECT COUNT(*) FROM outcomes")[0][0]
    return int(events), int(outcomes), None if first_ts is None else int(first_ts)


def outcomes_after(store: Store, after: str, limit: int) -> list[Row]:
    """Up to `limit` outcome rows whose id sorts after `after` ("" for the first page), in id order."""
    p = store.dialect.param
    rows = store.query(
        f"SELECT {_OUTCOME_COLS} FROM outcomes WHERE outcome_id > {p} ORDER BY outcome_id LIMIT {int(limit)}", (after,)
    )
    return [tuple(r) for r in rows]


def table_columns(store: Store, table: str) -> list[str]:
    """The columns of a table, in order; [] when the store has no such table (an older ledger)."""
    if table not in SIDE_TABLES:
        raise ValueError(f"not a table copied with the ledger: {table!r}")  # the name goes into SQL
    if store.dialect.name == "sqlite":
        return [r[1] for r in store.query(f"PRAGMA table_info({table})")]
    rows = store.query(
        "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
        "AND table_schema = current_schema() ORDER BY ordinal_position",
        (table,),
    )
    return [r[0] for r in rows]


def copy_table(source: Store, dest: Store, table: str) -> int:
    """Copy the rows of a side table the destination does not hold yet (by primary key); how many
    were new (0 if the source has no such table)."""
    cols = table_columns(source, table)
    if not cols:
        return 0
    p = dest.dialect.param
    sql = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join([p] * len(cols))}) ON CONFLICT DO NOTHING"
    copied = 0
    for row in source.query(f"SELECT {', '.join(cols)} FROM {table}"):
        copied += max(dest.execute_write(sql, tuple(row)), 0)
    return copied


def budgets_changed(store: Store) -> None:
    """Tell every process using the budgets to re-read them (after budgets were copied in)."""
    store.execute_write("UPDATE budget_meta SET version = version + 1 WHERE id = 1")
