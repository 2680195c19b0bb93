"""A fresh, empty PostgreSQL ledger for each test: a schema of its own in the test server.

A schema (made and dropped in a few milliseconds) isolates a test as well as a database would
(CREATE DATABASE copies a template and costs far more). The URL it yields puts the schema first on
the `search_path` and names its connections by `application_name`, so a test can find (and
terminate) exactly its own connections in `pg_stat_activity`.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from urllib.parse import quote

import psycopg
from psycopg import sql


def with_params(url: str, **params: str) -> str:
    """`url` with query parameters added (percent-encoded)."""
    query = "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())
    return f"{url}{'&' if '?' in url else '?'}{query}"


def schema_url(base_url: str, schema: str) -> str:
    """A URL whose connections use `schema` (and only it) and are named `schema` in pg_stat_activity."""
    return with_params(base_url, options=f"-csearch_path={schema}", application_name=schema)


def new_schema_name(test_name: str) -> str:
    stem = re.sub(r"[^a-z0-9]+", "_", test_name.lower()).strip("_")[:40]
    return f"tt_{stem}_{secrets.token_hex(4)}"


def terminate(base_url: str, application_name: str) -> int:
    """Terminate every server connection named `application_name`; return how many."""
    with psycopg.connect(base_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = %s AND pid <> pg_backend_pid()",
            (application_name,),
        ).fetchall()
    return sum(1 for r in rows if r[0])


def fresh_database(base_url: str, test_name: str) -> Iterator[str]:
    """Yield the URL of a new, empty schema in the server `base_url` names; drop it afterwards."""
    schema = new_schema_name(test_name)
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield schema_url(base_url, schema)
    finally:
        terminate(base_url, schema)
        with psycopg.connect(base_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
