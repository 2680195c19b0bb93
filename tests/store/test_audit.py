"""`tokentrail audit verify|checkpoint`: the chain verified while writers keep appending, signed
checkpoints, constant memory, and PostgreSQL's application role that may only read and append."""

from __future__ import annotations

import os
import secrets
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from typer.testing import CliRunner

import tokentrail as tt
from tests.store.test_tamper import KEY, FakeStore, Link, N, forged, record
from tokentrail import audit, cli
from tokentrail.events import chain_hash
from tokentrail.pricing import PriceBook
from tokentrail.store import open_store

if not any(getattr(g, "name", None) == "audit" for g in cli.app.registered_groups):
    cli._load()


def invoke(*args: str, **env: str | None) -> Any:
    return CliRunner().invoke(cli.app, list(args), env={"COLUMNS": "300", **env})


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> bytes:
    monkeypatch.setenv(audit.KEY_ENV, KEY)
    return KEY.encode()


@pytest.fixture
def ledger_url(db_url: str, prices: PriceBook) -> str:
    with tt.Ledger(db_url, prices=prices) as led:
        record(led, 1, N + 1)
    return db_url


# -- verify -----------------------------------------------------------------------------------------


def test_verify_prints_the_count_and_head(ledger_url: str) -> None:
    store = open_store(ledger_url)
    try:
        head = list(store.chain())[-1][2]
    finally:
        store.close()
    out = invoke("audit", "verify", "--db", ledger_url)
    assert out.exit_code == 0, out.output
    first, scope = out.stdout.splitlines()
    assert first == f"verified {N} events, head {head.hex()}"
    assert scope.startswith("rollups: the last two days and 1 week in 7 of the rest")
    full = invoke("audit", "verify", "--db", ledger_url, "--full")
    assert full.exit_code == 0 and full.stdout.splitlines()[1] == "rollups: every row matches the events"
    later = invoke("audit", "verify", "--db", ledger_url, "--from-seq", "21")
    assert later.exit_code == 0 and later.stdout.startswith(f"verified {N - 20} events, head {head.hex()}")
    beyond = invoke("audit", "verify", "--db", ledger_url, "--from-seq", str(N + 5))
    assert beyond.exit_code == 2 and "past the end of the chain" in beyond.output  # a usage error, not tampering


def test_verify_an_empty_ledger(db_url: str) -> None:
    open_store(db_url).close()
    out = invoke("audit", "verify", "--db", db_url)
    assert out.exit_code == 0 and out.stdout.startswith(f"verified 0 events, head {'00' * 32}\nrollups: ")


def test_verify_bad_input(ledger_url: str, tmp_path: Path) -> None:
    assert invoke("audit", "verify", "--db", ledger_url, "--from-seq", "0").exit_code == 2
    missing = invoke("audit", "verify", "--db", str(tmp_path / "nope.db"))
    assert missing.exit_code == 2 and "no ledger" in missing.output


def test_verify_while_writers_append(db_url: str, prices: PriceBook) -> None:
    """Rows committed during a verification are neither mistaken for tampering nor left unchecked."""
    stop = threading.Event()
    with tt.Ledger(db_url, prices=prices) as led:
        record(led, 1, 50)

        def write() -> None:
            # bounded: verify recomputes every rollup (the dimension ones too), and an unbounded
            # writer on an idle machine grows the ledger faster than 15 verifications can read it
            i = 50
            while not stop.is_set() and i < 4_000:
                led.record_llm(provider="openai", model="gpt-4o", input_tokens=i)
                i += 1
                if i % 20 == 0:
                    led.flush()

        t = threading.Thread(target=write)
        t.start()
        store = open_store(db_url)
        try:
            results = [audit.verify(store) for _ in range(15)]
        finally:
            stop.set()
            t.join()
            store.close()
        led.flush()
    assert all(r.ok for r in results), [str(r.problem) for r in results if r.problem]
    assert results[-1].count >= results[0].count >= 49


def test_verify_runs_in_constant_memory() -> None:
    """A long chain streams through: peak memory does not grow with it (10M rows must be fine)."""

    class Lazy(FakeStore):
        def __init__(self, n: int) -> None:
            super().__init__([])
            self.n = n
            row = forged(1)
            prev, self.hashes = bytes(32), [bytes(32)]
            for seq in range(1, n + 1):
                prev = chain_hash(seq, prev, row)
                self.hashes.append(prev)
            self.row = row
            self.head = (n, prev)

        def chain(self, from_seq: int = 1) -> Iterator[Link]:
            return ((s, self.hashes[s - 1], self.hashes[s], self.row) for s in range(from_seq, self.n + 1))

        def query(self, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
            return [(1,)] if sql.startswith("SELECT MIN") else super().query(sql, params)

    peaks = []
    for n in (2_000, 40_000):
        store = Lazy(n)
        tracemalloc.start()
        result = audit.verify(store)  # type: ignore[arg-type]
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert result.ok and result.count == n
    assert peaks[1] < peaks[0] * 2 + 100_000, peaks


# -- checkpoints -------------------------------------------------------------------------------------


def test_checkpoint_needs_the_key(ledger_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(audit.KEY_ENV, raising=False)
    for args in (("audit", "checkpoint"), ("audit", "verify", "--checkpoint", str(tmp_path / "c.jsonl"))):
        out = invoke(*args, "--db", ledger_url)
        assert out.exit_code == 2, out.output
        assert "TOKENTRAIL_AUDIT_KEY is not set" in out.output


def test_checkpoint_to_stdout_and_to_a_file(ledger_url: str, tmp_path: Path, key: bytes) -> None:
    out = invoke("audit", "checkpoint", "--db", ledger_url)
    assert out.exit_code == 0, out.output
    cp = audit.Checkpoint.from_line(out.stdout.strip(), key)
    assert cp.seq == N
    file = tmp_path / "cp.jsonl"
    for _ in range(2):
        assert invoke("audit", "checkpoint", "--db", ledger_url, "--out", str(file)).exit_code == 0
    assert [c.seq for c in audit.load_checkpoints(file, key)] == [N, N]
    assert (file.stat().st_mode & 0o777) == 0o600
    ok = invoke("audit", "verify", "--db", ledger_url, "--checkpoint", str(file))
    assert ok.exit_code == 0, ok.output
    assert f"2 checkpoint(s) match; the latest signs seq {N}" in ok.stdout


def test_a_forged_or_foreign_checkpoint_is_refused(ledger_url: str, tmp_path: Path, key: bytes) -> None:
    file = tmp_path / "cp.jsonl"
    assert invoke("audit", "checkpoint", "--db", ledger_url, "--out", str(file)).exit_code == 0
    line = file.read_text().strip()
    cp = audit.Checkpoint.from_line(line, key)
    forged_line = line.replace(f'"seq":{cp.seq}', f'"seq":{cp.seq - 1}')
    for bad, why in (
        (forged_line, "bad signature"),
        (audit.Checkpoint(cp.seq, cp.hash, cp.time).to_line(b"another key"), "bad signature"),
        ("{not json", "not a tokentrail checkpoint"),
    ):
        file.write_text(bad + "\n")
        with pytest.raises(audit.CheckpointError, match=why):
            audit.load_checkpoints(file, key)
        out = invoke("audit", "verify", "--db", ledger_url, "--checkpoint", str(file))
        assert out.exit_code == 1 and "cannot trust the checkpoint" in out.output and "line 1" in out.output
    file.write_text("")
    assert invoke("audit", "verify", "--db", ledger_url, "--checkpoint", str(file)).exit_code == 2
    assert invoke("audit", "verify", "--db", ledger_url, "--checkpoint", str(tmp_path / "none")).exit_code == 2


def test_checkpoint_round_trip() -> None:
    cp = audit.Checkpoint(42, bytes(range(32)))
    assert audit.Checkpoint.from_line(cp.to_line(b"k"), b"k") == cp


# -- PostgreSQL: the application role ------------------------------------------------------------------


pg_only = pytest.mark.parametrize("db_url", ["postgres"], indirect=True)


@pytest.fixture
def app_role(db_url: str) -> Iterator[tuple[str, str]]:
    """(role, URL as that role) after `tokentrail migrate --grant-app-role` run by the owner."""
    import psycopg

    from tests.pg import terminate, with_params

    base = os.environ["TOKENTRAIL_TEST_PG"]
    schema = parse_qs(urlsplit(db_url).query)["application_name"][0]
    role = f"tt_app_{secrets.token_hex(4)}"
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
    try:
        out = invoke("migrate", "--db", db_url, "--grant-app-role", role)
        assert out.exit_code == 0, out.output
        assert f"Role {role} may now:" in out.stdout and "SELECT, INSERT on events" in out.stdout
        yield role, with_params(db_url, user=role)
    finally:
        terminate(base, schema)
        with psycopg.connect(base, autocommit=True) as admin:
            admin.execute(f"DROP OWNED BY {role}")
            admin.execute(f"DROP ROLE {role}")


@pg_only
def test_every_table_has_app_privileges(db_url: str) -> None:
    from tokentrail.store.migrations import APP_PRIVILEGES

    store = open_store(db_url)
    try:
        tables = {
            r[0]
            for r in store.query(
                "SELECT c.relname FROM pg_class c WHERE c.relnamespace = current_schema()::regnamespace "
                "AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
            )
        }
    finally:
        store.close()
    assert tables == set(APP_PRIVILEGES), "a table without a line in APP_PRIVILEGES (or a line for no table)"


@pg_only
@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE events SET cost_nusd = 0",
        "DELETE FROM events",
        "TRUNCATE events",
        "UPDATE events_default SET cost_nusd = 0",
        "DELETE FROM events_default",
        "TRUNCATE events_default",
        "UPDATE event_ids SET event_id = gen_random_uuid()",
        "DELETE FROM event_ids",
        "TRUNCATE event_ids",
        "UPDATE outcomes SET count = 0",
        "DELETE FROM outcomes",
        "TRUNCATE outcomes",
        "DELETE FROM rollup_hourly",
        "UPDATE rollup_hourly SET cost_nusd = 0",
        "UPDATE rollup_daily SET cost_nusd = 0",
        "DELETE FROM rollup_daily",
        "TRUNCATE rollup_hourly",
        "INSERT INTO rollup_daily (day_us, org, team, project, agent, provider, model, task_type, kind) "
        "VALUES (0, '', '', '', '', '', '', '', '')",
        "UPDATE rollup_dim_hourly SET cost_nusd = 0",
        "DELETE FROM rollup_dim_daily",
        "INSERT INTO rollup_dim_hourly (hour_us, org, team, project, dim, value) "
        "VALUES (0, '', '', '', 'customer', 'x')",
        "INSERT INTO rollup_tag_keys (tag, declared_us) VALUES ('region', 0)",
        "DELETE FROM chain_head",
        "INSERT INTO chain_head (id, seq, hash) VALUES (2, 0, '')",
        "DROP TRIGGER events_no_update ON events",
        "ALTER TABLE events DISABLE TRIGGER events_no_delete",
        "CREATE TABLE sneaky (a int)",
    ],
)
def test_the_app_role_cannot_rewrite_the_ledger(
    app_role: tuple[str, str], prices: PriceBook, statement: str, key: bytes
) -> None:
    """The ledger runs as the application role and works; the same role is refused every statement
    that would rewrite history, by privileges, before any trigger is reached."""
    import psycopg

    _, app_url = app_role
    with tt.Ledger(app_url, prices=prices) as led:
        with tt.session(session_id="s-app", ledger=led) as s:
            ids = [led.record_llm(provider="openai", model="gpt-4o", input_tokens=i).event_id for i in range(1, 30)]
            s.outcome("done")
        led.flush()
        store = led.store
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            store.execute_write(statement)  # type: ignore[attr-defined]
        assert int(store.query("SELECT COUNT(*) FROM events")[0][0]) == len(ids)
        result = audit.verify(store)
        assert result.ok and result.count == len(ids)
        cp, _ = audit.checkpoint(store)  # the application role can verify and checkpoint too
        assert cp.seq == len(ids)


@pg_only
def test_grant_app_role_errors(db_url: str) -> None:
    out = invoke("migrate", "--db", db_url, "--grant-app-role", "no_such_role_tt")
    assert out.exit_code == 2 and "does not exist" in out.output


def test_grant_app_role_needs_postgres(sqlite_url: str) -> None:
    out = invoke("migrate", "--db", sqlite_url, "--grant-app-role", "app")
    assert out.exit_code == 2 and "needs a PostgreSQL ledger" in out.output


@pg_only
def test_a_ledger_upgraded_to_database_rollups_counts_once_and_takes_the_app_roles_writes(
    db_url: str, prices: PriceBook, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ledger migrated before 0011, whose app role was granted writes on the rollups then: after
    `migrate`, the database keeps the rollups (each event counted once, before and after) and the
    app role may no longer write them."""
    import psycopg

    from tests.pg import terminate, with_params
    from tokentrail.store import pg_schema, postgres
    from tokentrail.store.migrations import MIGRATIONS
    from tokentrail.store.rollup_check import check_rollups

    base = os.environ["TOKENTRAIL_TEST_PG"]
    schema = parse_qs(urlsplit(db_url).query)["application_name"][0]
    role = f"tt_app_{secrets.token_hex(4)}"
    # a ledger without 0011, nor 0019 (which keeps the same rollups, from one trigger with the dimensions')
    before = [m for m in MIGRATIONS if m[0] not in ("0011_rollups_in_database", "0019_one_rollup_trigger")]
    monkeypatch.setattr(pg_schema, "MIGRATIONS", before)
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
    try:
        with tt.Ledger(db_url, prices=prices) as old:
            record(old, 1, 11)
            store = old.store
            assert isinstance(store, postgres.PostgresStore)
            store.grant_app_role(role)
            store.execute_write(f"GRANT SELECT, INSERT, UPDATE ON rollup_hourly, rollup_daily TO {role}, PUBLIC")
        monkeypatch.setattr(pg_schema, "MIGRATIONS", MIGRATIONS)
        migrated = invoke("migrate", "--db", db_url)  # the migration itself takes the writes back
        assert migrated.exit_code == 0, migrated.output
        app_url = with_params(db_url, user=role)
        with tt.Ledger(app_url, prices=prices) as led:
            record(led, 11, 21)
            store = led.store
            assert check_rollups(store) == []
            calls = store.query("SELECT CAST(SUM(calls) AS BIGINT) FROM rollup_daily")[0][0]
            assert calls == 20  # 10 rolled up in Python before, 10 by the database after: none twice
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                store.execute_write("UPDATE rollup_hourly SET cost_nusd = 0")  # type: ignore[attr-defined]
            assert audit.verify(store).ok
    finally:
        terminate(base, schema)
        with psycopg.connect(base, autocommit=True) as admin:
            admin.execute(f"DROP OWNED BY {role}")
            admin.execute(f"DROP ROLE {role}")


@pg_only
def test_the_app_role_cannot_rebuild_the_rollups(app_role: tuple[str, str], prices: PriceBook) -> None:
    _, app_url = app_role
    with tt.Ledger(app_url, prices=prices) as led:
        record(led, 1, 4)
    out = invoke("audit", "rebuild-rollups", "--db", app_url)
    assert out.exit_code == 2 and "run it as the ledger's owner" in out.output
