"""A transaction-mode pooler (PgBouncer < 1.21) in front of PostgreSQL: the driver's prepared
statements go astray there. That is no fault of the rows being written, so it must never send
them to quarantine (they wait and are retried, like any connection trouble); and
TOKENTRAIL_PG_TRANSACTION_POOLING=1 keeps psycopg from preparing statements at all."""

from __future__ import annotations

import pytest

pytest.importorskip("psycopg")

from psycopg import errors as pg_errors

from tokentrail.store.postgres import TRANSACTION_POOLING_ENV, PostgresStore


@pytest.mark.parametrize("error", [pg_errors.DuplicatePreparedStatement, pg_errors.InvalidSqlStatementName])
def test_a_lost_prepared_statement_is_transient(error: type[Exception]) -> None:
    assert PostgresStore.is_transient(error('prepared statement "_pg3_1" already exists'))


def test_a_bad_row_is_still_refused_for_good() -> None:
    assert not PostgresStore.is_transient(pg_errors.NotNullViolation("null value in column"))
    assert not PostgresStore.is_transient(pg_errors.UniqueViolation("duplicate key"))


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_transaction_pooling_prepares_nothing(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TRANSACTION_POOLING_ENV, "1")
    store = PostgresStore(db_url)
    try:
        assert store.transaction_pooling
        for _ in range(10):  # psycopg prepares a statement from its 5th run on a connection
            assert store.query("SELECT 1") == [(1,)]
        with store.connection() as conn:
            assert conn.prepare_threshold is None
            assert conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone() == (0,)
    finally:
        store.close()
    monkeypatch.delenv(TRANSACTION_POOLING_ENV)
    store = PostgresStore(db_url)
    try:
        assert not store.transaction_pooling
        with store.connection() as conn:
            assert conn.prepare_threshold is not None
    finally:
        store.close()
