"""PostgreSQL-only behaviour: monthly partitions, the global event-id table, append-only triggers,
an application role without CREATE rights, and lost connections (terminated backends, and a real
stop and restart of a throwaway cluster of the test's own) while a Ledger keeps recording."""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

psycopg = pytest.importorskip("psycopg")

import tokentrail as tt  # noqa: E402
from tests.conftest import PG_ENV  # noqa: E402
from tests.pg import terminate, with_params  # noqa: E402
from tokentrail.events import COL, GENESIS_HASH, UsageEvent, chain_hash, new_event_id, to_row, ts_micros  # noqa: E402
from tokentrail.exceptions import StoreError  # noqa: E402
from tokentrail.pricing import PriceBook  # noqa: E402
from tokentrail.store.pg_messages import redact_url  # noqa: E402
from tokentrail.store.postgres import PostgresStore  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "pg-test-cluster"
pg_only = pytest.mark.parametrize("db_url", ["postgres"], indirect=True)


def _schema(url: str) -> str:
    """The schema (= application_name) tests.pg.fresh_database put in the URL."""
    return parse_qs(urlsplit(url).query)["application_name"][0]


def _month_start(dt: datetime, add: int = 0) -> datetime:
    i = dt.year * 12 + dt.month - 1 + add
    return datetime(i // 12, i % 12 + 1, 1, tzinfo=UTC)


def _partition_of(store: PostgresStore, event_id: str) -> str:
    return store.query("SELECT tableoid::regclass::text FROM events WHERE event_id = %s", (event_id,))[0][0]


def _partitions(store: PostgresStore) -> set[str]:
    rows = store.query(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'events'::regclass"
    )
    return {r[0] for r in rows}


def _verify(store: PostgresStore) -> list[str]:
    """Check the chain from genesis; return the event ids in seq order."""
    prev, ids = GENESIS_HASH, []
    for n, (seq, prev_hash, h, row) in enumerate(store.chain(), 1):
        assert seq == n and prev_hash == prev and h == chain_hash(seq, prev_hash, row), f"bad link at seq {seq}"
        prev = h
        ids.append(row[0])
    return ids


@pytest.fixture
def pg_store(db_url: str) -> Iterator[PostgresStore]:
    s = PostgresStore(db_url)
    yield s
    s.close()


# -- partitions ---------------------------------------------------------------------------------------


@pg_only
def test_migrate_creates_monthly_partitions_ahead_and_a_default(pg_store: PostgresStore) -> None:
    now = datetime.now(UTC)
    expected = {f"events_p{_month_start(now, k):%Y%m}" for k in range(-1, 4)}
    assert _partitions(pg_store) == expected | {"events_default"}
    # The current month's bounds are whole months of microseconds since the epoch.
    name = f"events_p{now:%Y%m}"
    bound = pg_store.query("SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_class c WHERE c.relname = %s", (name,))[
        0
    ][0]
    lo, hi = ts_micros(_month_start(now)), ts_micros(_month_start(now, 1))
    assert bound == f"FOR VALUES FROM ('{lo}') TO ('{hi}')"
    assert pg_store.ensure_partitions() == []  # idempotent
    more = pg_store.ensure_partitions(months_ahead=12)
    assert len(more) == 9
    assert pg_store.ensure_partitions(months_ahead=12) == []


@pg_only
def test_every_event_lands_somewhere(pg_store: PostgresStore) -> None:
    now = datetime.now(UTC)
    when = {
        "now": now,
        "far future": datetime(2999, 12, 31, 23, 59, 59, tzinfo=UTC),
        "far past": datetime(1971, 1, 1, tzinfo=UTC),
        "next month": _month_start(now, 1) + timedelta(days=3),
        "month edge": _month_start(now, 1) - timedelta(microseconds=1),
    }
    events = {k: UsageEvent(ts=v, provider="openai", model="gpt-4o", input_tokens=1) for k, v in when.items()}
    assert pg_store.write_events([to_row(e) for e in events.values()]) == len(events)
    where = {k: _partition_of(pg_store, e.event_id) for k, e in events.items()}
    assert where == {
        "now": f"events_p{now:%Y%m}",
        "far future": "events_default",
        "far past": "events_default",
        "next month": f"events_p{_month_start(now, 1):%Y%m}",
        "month edge": f"events_p{now:%Y%m}",
    }
    for e in events.values():
        assert pg_store.get_event(e.event_id) == to_row(e)
    assert len(_verify(pg_store)) == len(events)


@pg_only
def test_a_month_already_in_the_default_partition_is_left_there(
    pg_store: PostgresStore, caplog: pytest.LogCaptureFixture
) -> None:
    now = datetime.now(UTC)
    stray = UsageEvent(ts=_month_start(now, 20) + timedelta(days=1), provider="openai", model="m")
    pg_store.write_events([to_row(stray)])
    assert _partition_of(pg_store, stray.event_id) == "events_default"
    with caplog.at_level(logging.WARNING, logger="tokentrail"):
        created = pg_store.ensure_partitions(months_ahead=24)
    skipped = f"events_p{_month_start(now, 20):%Y%m}"
    assert skipped not in created and len(created) == 20
    assert "DEFAULT partition" in caplog.text
    assert _partition_of(pg_store, stray.event_id) == "events_default"
    assert pg_store.get_event(stray.event_id) == to_row(stray)


@pg_only
def test_a_long_running_store_keeps_its_partitions_ahead(db_url: str) -> None:
    store = PostgresStore(db_url, months_ahead=0)
    try:
        now = datetime.now(UTC)
        assert f"events_p{_month_start(now, 2):%Y%m}" not in _partitions(store)
        store.months_ahead = 2  # ... and months go by: the periodic check is due
        store._next_partition_check = 0
        store.write_events([to_row(UsageEvent(provider="openai", model="m"))])
        assert f"events_p{_month_start(now, 2):%Y%m}" in _partitions(store)
        assert store._next_partition_check > time.monotonic()
    finally:
        store.close()


@pg_only
def test_partitions_for_history_on_request(pg_store: PostgresStore) -> None:
    since = datetime.now(UTC) - timedelta(days=400)
    created = pg_store.ensure_partitions(since_us=ts_micros(since))
    assert f"events_p{since:%Y%m}" in created
    old = UsageEvent(ts=since + timedelta(hours=1), provider="openai", model="m")
    pg_store.write_events([to_row(old)])
    assert _partition_of(pg_store, old.event_id) == f"events_p{since:%Y%m}"


@pg_only
def test_replay_in_another_partition_is_refused(pg_store: PostgresStore) -> None:
    """The partitioned table cannot hold UNIQUE(event_id); the event_ids table does, ledger-wide."""
    first = UsageEvent(provider="openai", model="gpt-4o", input_tokens=10)
    assert pg_store.write_events([to_row(first)]) == 1
    for ts in (datetime(2999, 1, 1, tzinfo=UTC), _month_start(first.ts, 1), _month_start(first.ts, -1)):
        replay = UsageEvent(event_id=first.event_id, ts=ts, provider="openai", model="gpt-4o", input_tokens=99)
        assert pg_store.write_events([to_row(replay)]) == 0
    assert pg_store.query("SELECT COUNT(*) FROM events")[0][0] == 1
    assert _partition_of(pg_store, first.event_id) == f"events_p{first.ts:%Y%m}"
    assert pg_store.query("SELECT SUM(input_tokens) FROM rollup_hourly")[0][0] == 10


@pg_only
@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE events SET model = 'x'",
        "DELETE FROM events",
        "TRUNCATE events",
        "UPDATE events_default SET model = 'x'",
        "DELETE FROM events_default",
        "TRUNCATE events_default",
        "DELETE FROM {partition}",
        "TRUNCATE {partition}",
        "UPDATE events SET ts_us = 0",  # would move rows to another partition
        "DELETE FROM event_ids",
        "TRUNCATE event_ids",
        "UPDATE event_ids SET event_id = gen_random_uuid()",
    ],
)
def test_append_only_everywhere(pg_store: PostgresStore, statement: str) -> None:
    now = UsageEvent(provider="openai", model="m")
    future = UsageEvent(ts=datetime(2999, 1, 1, tzinfo=UTC), provider="openai", model="m")
    pg_store.write_events([to_row(now), to_row(future)])
    sql = statement.format(partition=_partition_of(pg_store, now.event_id))
    with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
        pg_store.execute_write(sql)
    assert pg_store.query("SELECT COUNT(*) FROM events")[0][0] == 2
    assert pg_store.query("SELECT COUNT(*) FROM event_ids")[0][0] == 2


@pg_only
def test_trigger_names(pg_store: PostgresStore) -> None:
    names = {
        r[0]
        for r in pg_store.query("SELECT tgname FROM pg_trigger WHERE tgrelid = 'events'::regclass AND NOT tgisinternal")
    }
    rollups = {"events_rollups", "events_session_summary"}  # every rollup (0019); the session summary (0018)
    assert names == {"events_no_update", "events_no_delete", "events_no_truncate", *rollups}


# -- rows ---------------------------------------------------------------------------------------------


@pg_only
def test_event_ids_are_stored_canonical(pg_store: PostgresStore) -> None:
    """An upper-case or brace-wrapped UUID is stored (and hashed) in its canonical form."""
    canonical = new_event_id()
    row = to_row(UsageEvent(event_id="{" + canonical.upper() + "}", provider="openai", model="m"))
    assert pg_store.write_events([row]) == 1
    assert pg_store.write_events([to_row(UsageEvent(event_id=canonical, provider="openai", model="m"))]) == 0
    assert _verify(pg_store) == [canonical]
    assert pg_store.get_event(canonical.upper()) == (canonical, *row[1:])
    with pytest.raises(StoreError, match="not a UUID"):
        pg_store.write_events([to_row(UsageEvent(event_id="not-a-uuid"))])
    assert pg_store.get_event("not-a-uuid") is None


@pg_only
def test_nul_characters_are_replaced_and_chained(pg_store: PostgresStore) -> None:
    row = to_row(UsageEvent(provider="openai", model="m", note="a\x00b", tags={"k": "\x00"}))
    assert pg_store.write_events([row]) == 1
    back = pg_store.get_event(row[0])
    assert back is not None and back[COL["note"]] == "a\ufffdb"
    assert _verify(pg_store) == [row[0]]


def test_redact_url() -> None:
    assert (
        redact_url("postgresql://u:s3cret@db:5432/x?sslmode=require") == "postgresql://u:***@db:5432/x?sslmode=require"
    )
    assert redact_url("postgresql://u@db/x?password=s3cret&a=b") == "postgresql://u@db/x?password=***&a=b"
    assert redact_url("postgresql://u@%2Ftmp%2Fsock:5/x") == "postgresql://u@%2Ftmp%2Fsock:5/x"


def test_an_unreachable_server_fails_fast_with_the_reason(tmp_path: Path) -> None:
    url = f"postgresql://postgres:hunter2@{str(tmp_path).replace('/', '%2F')}:5999/postgres"
    t = time.monotonic()
    with pytest.raises(StoreError) as info:
        PostgresStore(url)
    assert time.monotonic() - t < 10
    assert "cannot connect" in str(info.value) and "hunter2" not in str(info.value)
    assert "No such file" in str(info.value) or "connect" in str(info.value)


# -- roles --------------------------------------------------------------------------------------------


@pg_only
def test_the_app_role_needs_no_create_right(db_url: str, prices: PriceBook, caplog: pytest.LogCaptureFixture) -> None:
    """An owner migrates; the application then runs as a role that may only read and append."""
    base = os.environ[PG_ENV]
    schema = _schema(db_url)
    owner = PostgresStore(db_url, months_ahead=0)  # this month and the previous one only
    owner.close()
    role = f"tt_app_{secrets.token_hex(4)}"
    admin = psycopg.connect(base, autocommit=True)
    try:
        admin.execute(f"CREATE ROLE {role} LOGIN")
        admin.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
        admin.execute(f"GRANT SELECT ON {schema}.schema_migrations TO {role}")
        admin.execute(f"GRANT SELECT, INSERT ON {schema}.events, {schema}.event_ids, {schema}.outcomes TO {role}")
        # no write on the rollups: the database keeps them (migration 0011)
        admin.execute(f"GRANT SELECT ON {schema}.rollup_hourly, {schema}.rollup_daily TO {role}")
        admin.execute(f"GRANT SELECT, UPDATE ON {schema}.chain_head TO {role}")
        app_url = with_params(db_url, user=role)
        with caplog.at_level(logging.WARNING, logger="tokentrail"):
            ledger = tt.Ledger(app_url, prices=prices)  # wants 3 months ahead, may not create them
        try:
            assert "cannot create the monthly partitions" in caplog.text
            later = datetime.now(UTC) + timedelta(days=62)
            ids = [ledger.record_llm(provider="openai", model="gpt-4o", input_tokens=5).event_id for _ in range(20)]
            ids.append(ledger.record_llm(provider="openai", model="gpt-4o", input_tokens=5, ts=later).event_id)
            ledger.flush(timeout=30)
            store = ledger.store
            assert isinstance(store, PostgresStore)
            assert store.query("SELECT COUNT(*) FROM events")[0][0] == 21
            assert _partition_of(store, ids[-1]) == "events_default"  # no partition for it: DEFAULT takes it
            assert _verify(store) == ids
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                store.execute_write("CREATE TABLE sneaky (a int)")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                store.execute_write("DROP TABLE events_default")
        finally:
            ledger.close()
        # The owner, once more, creates the partitions the app could not.
        owner = PostgresStore(db_url)
        try:
            assert f"events_p{_month_start(datetime.now(UTC), 3):%Y%m}" in _partitions(owner)
        finally:
            owner.close()
    finally:
        terminate(base, schema)
        admin.execute(f"DROP OWNED BY {role}")
        admin.execute(f"DROP ROLE {role}")
        admin.close()


# -- lost connections ---------------------------------------------------------------------------------


class Producers:
    """Threads that keep recording through a Ledger, as agents would, and note every event id."""

    def __init__(self, ledger: tt.Ledger, threads: int = 4, per_second: int = 2000) -> None:
        self.ledger = ledger
        self.ids: list[list[str]] = [[] for _ in range(threads)]
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._pause = 1.0 / (per_second / threads) * 20
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _run(self, i: int) -> None:
        mine = self.ids[i]
        n = 0
        try:
            with tt.session(agent=f"agent-{i}", team="ops", ledger=self.ledger):
                while not self._stop.is_set():
                    ev = self.ledger.record_llm(
                        provider="openai", model="gpt-4o", input_tokens=100 + n, output_tokens=n
                    )
                    mine.append(ev.event_id)
                    n += 1
                    if n % 20 == 0:
                        time.sleep(self._pause)
        except BaseException as e:  # a caller must never see one
            self.errors.append(e)

    def __enter__(self) -> Producers:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    @property
    def count(self) -> int:
        return sum(len(x) for x in self.ids)

    def all_ids(self) -> list[str]:
        return [i for x in self.ids for i in x]


def _exactly_once(store: Any, recorded: list[str]) -> None:
    stored = [r[0] for r in store.query("SELECT event_id FROM events")]
    assert len(stored) == len(set(stored)), "an event is stored twice"
    assert set(stored) == set(recorded), f"{len(set(recorded) - set(stored))} event(s) lost"
    assert store.query("SELECT CAST(SUM(calls) AS BIGINT) FROM rollup_hourly")[0][0] == len(recorded)
    assert sorted(_verify(store)) == sorted(recorded)


@pg_only
def test_terminated_connections_mid_ingest(db_url: str, prices: PriceBook) -> None:
    base = os.environ[PG_ENV]
    ledger = tt.Ledger(db_url, prices=prices)
    try:
        killed = 0
        with Producers(ledger) as producers:
            for _ in range(8):
                time.sleep(0.25)
                killed += terminate(base, _schema(db_url))
        assert not producers.errors
        assert killed >= 4
        ledger.flush(timeout=60)
        assert producers.count > 1000
        _exactly_once(ledger.store, producers.all_ids())
    finally:
        ledger.close()


@dataclass
class Cluster:
    url: str
    dir: str
    bindir: str

    def _pg_ctl(self, *args: str) -> None:
        cmd = [f"{self.bindir}/pg_ctl", "-D", f"{self.dir}/data", *args]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def stop(self, mode: str = "immediate") -> None:
        self._pg_ctl("-m", mode, "-w", "stop")

    def start(self) -> None:
        self._pg_ctl("-l", f"{self.dir}/postgres.log", "-w", "-t", "60", "start")


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A throwaway cluster of this test's own (it gets stopped and restarted), made by the script."""
    env_file = tmp_path / "cluster.env"
    proc = subprocess.run(
        [str(SCRIPT), "start", "--env-file", str(env_file)], capture_output=True, text=True, timeout=180
    )
    if proc.returncode != 0:
        why = f"scripts/pg-test-cluster cannot start a PostgreSQL cluster:\n{proc.stderr[-2000:]}"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why + "\n(install the PostgreSQL server binaries, or set PG_BIN, to run this test)")
    values = dict(
        line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line and not line.startswith("#")
    )
    try:
        yield Cluster(values["TOKENTRAIL_TEST_PG"], values["TOKENTRAIL_TEST_PG_DIR"], values["TOKENTRAIL_TEST_PG_BIN"])
    finally:
        subprocess.run([str(SCRIPT), "stop", "--env-file", str(env_file)], check=True, capture_output=True, timeout=120)
        assert not Path(values["TOKENTRAIL_TEST_PG_DIR"]).exists()


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "spool"), [("immediate", False), ("fast", False), ("immediate", True)])
def test_server_stops_and_restarts_mid_ingest(
    own_cluster: Cluster, prices: PriceBook, mode: str, spool: bool, tmp_path: Path
) -> None:
    """The database goes away while agents keep recording: nobody sees an exception; without a
    spool flush() says honestly that the events are not durable, with one it returns once they
    are fsynced there; once the server is back every event is stored exactly once."""
    ledger = tt.Ledger(own_cluster.url, prices=prices, spool=tmp_path / "spool" if spool else False)
    try:
        with Producers(ledger) as producers:
            time.sleep(0.5)
            own_cluster.stop(mode)  # mid-ingest: batches in flight are cut off
            time.sleep(0.5)
            before = producers.count
            if spool:
                ledger.flush(timeout=30)  # durable in the spool
                assert ledger.spool is not None and ledger.spool.pending
            else:
                with pytest.raises(tt.FlushTimeout, match="not durable"):
                    ledger.flush(timeout=1)
                assert ledger.pending > 0
            time.sleep(1.0)
            assert producers.count > before  # callers kept going while the database was down
            own_cluster.start()
            time.sleep(0.5)
        assert not producers.errors
        t = time.monotonic()
        ledger.flush(timeout=60)
        assert time.monotonic() - t < 30
        assert ledger.pending == 0
        _exactly_once(ledger.store, producers.all_ids())
    finally:
        ledger.close()
