"""Tampering with a stored ledger, on every backend, as an attacker who holds the SQLite file or a
PostgreSQL superuser role would: the triggers are dropped and rows are edited, deleted, forged,
swapped, or rewritten with the whole chain rebuilt. `audit verify` must name the first bad seq
and why; only a signed checkpoint catches the rebuilt chain."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import tokentrail as tt
from tokentrail import audit, cli
from tokentrail.analytics.reports import report
from tokentrail.events import COLUMNS, UsageEvent, chain_hash, new_event_id, to_row
from tokentrail.pricing import PriceBook
from tokentrail.store import open_store, sqlite_path

if not any(getattr(g, "name", None) == "audit" for g in cli.app.registered_groups):
    cli._load()

N, K = 30, 12  # events in the ledger; the seq the attacks aim at
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
KEY = "tamper-test-key-0123456789"
Link = tuple[int, bytes, bytes, tuple[Any, ...]]


class Attacker:
    """Raw SQL on the ledger's database, bypassing tokentrail (the file, or a superuser)."""

    def __init__(self, url: str) -> None:
        self.sqlite = not url.startswith("postgresql")
        if self.sqlite:
            self.conn: Any = sqlite3.connect(sqlite_path(url), isolation_level=None)
        else:
            import psycopg
            from psycopg.types.string import TextLoader

            self.conn = psycopg.connect(url, autocommit=True)
            self.conn.adapters.register_loader("uuid", TextLoader)  # rows as tokentrail reads them

    def x(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        cur = self.conn.execute(sql if self.sqlite else sql.replace("?", "%s"), params)
        return list(cur.fetchall()) if cur.description else []

    def drop_triggers(self) -> None:
        for name in ("events_no_update", "events_no_delete"):
            self.x(f"DROP TRIGGER {name}" if self.sqlite else f"DROP TRIGGER {name} ON events")

    def links(self) -> list[Link]:
        rows = self.x(f"SELECT seq, prev_hash, hash, {', '.join(COLUMNS)} FROM events ORDER BY seq")
        return [(r[0], bytes(r[1]), bytes(r[2]), tuple(r[3:])) for r in rows]

    def link(self, seq: int) -> Link:
        return next(x for x in self.links() if x[0] == seq)

    def insert(self, seq: int, row: tuple[Any, ...], prev: bytes, h: bytes) -> None:
        marks = ", ".join("?" * (len(COLUMNS) + 3))
        self.x(
            f"INSERT INTO events (seq, {', '.join(COLUMNS)}, prev_hash, hash) VALUES ({marks})", (seq, *row, prev, h)
        )

    def shift(self, from_seq: int, by: int) -> None:
        """Renumber every row from `from_seq` on by `by` (through negatives: seq is a key in SQLite)."""
        self.x("UPDATE events SET seq = -(seq + ?) WHERE seq >= ?", (by, from_seq))
        self.x("UPDATE events SET seq = -seq WHERE seq < 0")

    def set_seq(self, old: int, new: int) -> None:
        self.x("UPDATE events SET seq = ? WHERE seq = ?", (new, old))

    def set_content(self, seq: int, row: tuple[Any, ...]) -> None:
        assignments = ", ".join(f"{c} = ?" for c in COLUMNS)
        self.x(f"UPDATE events SET {assignments} WHERE seq = ?", (*row, seq))

    def rehash(self, from_seq: int, *, only: bool = False) -> None:
        """Recompute the hashes from `from_seq` (just that row with `only`) and move the chain head."""
        links = self.links()
        prev = next((h for s, _, h, _ in links if s == from_seq - 1), bytes(32))
        for seq, _, _, row in links:
            if seq < from_seq:
                continue
            h = chain_hash(seq, prev, row)
            self.x("UPDATE events SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, h, seq))
            prev = h
            if only:
                return
        self.x("UPDATE chain_head SET seq = ?, hash = ? WHERE id = 1", (links[-1][0], prev))

    def close(self) -> None:
        self.conn.close()


def forged(seq: int, **kw: Any) -> tuple[Any, ...]:
    return to_row(UsageEvent(ts=T0 + timedelta(minutes=seq, seconds=30), provider="openai", model="gpt-4o", **kw))


def record(ledger: tt.Ledger, start: int, stop: int) -> None:
    with tt.session(agent="a", team="t", session_id="s-1", ledger=ledger):
        for i in range(start, stop):
            ledger.record_llm(
                provider="openai", model="gpt-4o", input_tokens=100 + i, output_tokens=10, ts=T0 + timedelta(minutes=i)
            )
    ledger.flush()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(audit.KEY_ENV, KEY)


@pytest.fixture
def ledger_url(db_url: str, prices: PriceBook, env: None) -> str:
    with tt.Ledger(db_url, prices=prices) as led:
        record(led, 1, N + 1)
    return db_url


@pytest.fixture
def attacker(ledger_url: str) -> Iterator[Attacker]:
    a = Attacker(ledger_url)
    a.drop_triggers()
    yield a
    a.close()


def check(url: str, seq: int, reason: str, *, event_id: str | None = None, checkpoint: Path | None = None) -> None:
    """The API and the command both name `seq` and `reason` as the first problem."""
    store = open_store(url)
    try:
        marks = audit.load_checkpoints(checkpoint, KEY.encode()) if checkpoint else ()
        result = audit.verify(store, checkpoints=marks)
    finally:
        store.close()
    assert result.problem is not None, "tampering went unnoticed"
    assert (result.problem.seq, result.problem.reason) == (seq, reason), str(result.problem)
    if event_id is not None:
        assert result.problem.event_id == event_id, str(result.problem)
    args = ["audit", "verify", "--db", url] + (["--checkpoint", str(checkpoint)] if checkpoint else [])
    out = CliRunner().invoke(cli.app, args, env={"COLUMNS": "300"})
    assert out.exit_code == 1, out.output
    assert f"FAILED at seq {seq}: {reason}" in out.stdout


def test_an_untouched_ledger_verifies(ledger_url: str) -> None:
    out = CliRunner().invoke(cli.app, ["audit", "verify", "--db", ledger_url])
    assert out.exit_code == 0, out.output
    assert out.stdout.startswith(f"verified {N} events, head ")


# -- edited ---------------------------------------------------------------------------------------


def test_edit_a_cost(ledger_url: str, attacker: Attacker) -> None:
    attacker.x("UPDATE events SET cost_nusd = cost_nusd * 10 WHERE seq = ?", (K,))
    check(ledger_url, K, "modified", event_id=attacker.link(K)[3][0])


def test_edit_a_cost_and_rehash_that_row(ledger_url: str, attacker: Attacker) -> None:
    """The row matches its new hash, but the next row still links to the old one."""
    attacker.x("UPDATE events SET cost_nusd = 0 WHERE seq = ?", (K,))
    attacker.rehash(K, only=True)
    check(ledger_url, K, "modified", event_id=attacker.link(K)[3][0])


def test_edit_the_last_row_and_rehash_it(ledger_url: str, attacker: Attacker) -> None:
    """No row follows the last one, but the chain head still records its old hash."""
    attacker.x("UPDATE events SET team = 'other' WHERE seq = ?", (N,))
    attacker.rehash(N, only=True)
    check(ledger_url, N, "modified")


# -- missing --------------------------------------------------------------------------------------


def test_delete_a_row(ledger_url: str, attacker: Attacker) -> None:
    attacker.x("DELETE FROM events WHERE seq = ?", (K,))
    check(ledger_url, K, "missing")


def test_delete_rows_and_renumber_the_rest(ledger_url: str, attacker: Attacker) -> None:
    attacker.x("DELETE FROM events WHERE seq IN (?, ?)", (K, K + 1))
    attacker.shift(K + 2, -2)
    check(ledger_url, K, "missing")


def test_delete_the_last_rows(ledger_url: str, attacker: Attacker) -> None:
    attacker.x("DELETE FROM events WHERE seq > ?", (N - 3,))
    check(ledger_url, N - 2, "missing")


def test_delete_the_last_rows_and_the_head_caught_by_a_checkpoint(
    ledger_url: str, attacker: Attacker, tmp_path: Path
) -> None:
    file = take_checkpoint(ledger_url, tmp_path)
    attacker.x("DELETE FROM events WHERE seq > ?", (N - 3,))
    last = attacker.link(N - 3)
    attacker.x("UPDATE chain_head SET seq = ?, hash = ? WHERE id = 1", (N - 3, last[2]))
    store = open_store(ledger_url)
    try:
        result = audit.verify(store)
        assert result.problem is None  # a clean cut with the head moved back: the chain alone cannot tell
        assert result.rollups  # but the rollups still count the rows cut off (unless rewritten too)
    finally:
        store.close()
    check(ledger_url, N - 2, "missing", checkpoint=file)
    refused = CliRunner().invoke(cli.app, ["audit", "checkpoint", "--db", ledger_url, "--out", str(file)])
    assert refused.exit_code == 1 and "not signing" in refused.output and f"seq {N}: missing" in refused.output


# -- inserted -------------------------------------------------------------------------------------


def test_insert_a_forged_row_in_the_middle(ledger_url: str, attacker: Attacker) -> None:
    """The careful forger: the rows after it are renumbered and the forged row links perfectly."""
    attacker.shift(K, 1)
    prev = attacker.link(K - 1)[2]
    row = forged(K)
    attacker.insert(K, row, prev, chain_hash(K, prev, row))
    check(ledger_url, K, "inserted", event_id=row[0])


def test_insert_a_forged_row_with_a_made_up_hash(ledger_url: str, attacker: Attacker) -> None:
    attacker.shift(K, 1)
    row = forged(K)
    attacker.insert(K, row, bytes(32), bytes(range(32)))
    check(ledger_url, K, "inserted", event_id=row[0])


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
@pytest.mark.parametrize("sorts", ["first", "last"])
def test_insert_a_row_that_repeats_a_seq(ledger_url: str, attacker: Attacker, sorts: str) -> None:
    """PostgreSQL cannot make seq unique (a partitioned table): a second row claims seq K. It is
    named whichever order the two come in."""
    prev = attacker.link(K - 1)[2]
    genuine = attacker.link(K)[3][0]
    eid = new_event_id()
    eid = ("00000000" if sorts == "first" else "ffffffff") + eid[8:]
    assert (eid < genuine) == (sorts == "first")
    row = forged(K, event_id=eid)
    attacker.insert(K, row, prev, chain_hash(K, prev, row))
    check(ledger_url, K, "inserted", event_id=eid)


def test_append_a_row_around_the_writer(ledger_url: str, attacker: Attacker) -> None:
    """A well-linked row after the last one, but the chain head never moved."""
    prev = attacker.link(N)[2]
    row = forged(N + 1)
    attacker.insert(N + 1, row, prev, chain_hash(N + 1, prev, row))
    check(ledger_url, N + 1, "inserted")


def test_insert_a_row_before_the_first(ledger_url: str, attacker: Attacker) -> None:
    row = forged(0)
    attacker.insert(0, row, bytes(32), chain_hash(0, bytes(32), row))
    check(ledger_url, 0, "inserted")


# -- reordered ------------------------------------------------------------------------------------


def test_swap_two_rows(ledger_url: str, attacker: Attacker) -> None:
    moved = attacker.link(K + 1)[3][0]
    attacker.set_seq(K, -1)
    attacker.set_seq(K + 1, K)
    attacker.set_seq(-1, K + 1)
    check(ledger_url, K, "reordered", event_id=moved)


def test_swap_two_distant_rows(ledger_url: str, attacker: Attacker) -> None:
    attacker.set_seq(K, -1)
    attacker.set_seq(K + 5, K)
    attacker.set_seq(-1, K + 5)
    check(ledger_url, K, "reordered")


def test_swap_the_contents_of_two_rows(ledger_url: str, attacker: Attacker) -> None:
    """Every column but seq and the links exchanged: what each row says moved."""
    a, b = attacker.link(K)[3], attacker.link(K + 1)[3]
    attacker.set_content(K, (new_event_id(), *b[1:]))  # event_id is unique in SQLite: step aside first
    attacker.set_content(K + 1, a)
    attacker.set_content(K, b)
    check(ledger_url, K, "reordered")


# -- rollups: outside the chain, checked against the events -------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE rollup_hourly SET cost_nusd = 0",
        "UPDATE rollup_daily SET cost_nusd = 0",
        "UPDATE rollup_hourly SET input_tokens = input_tokens + 1 WHERE team = 't'",
        "DELETE FROM rollup_daily",
        "INSERT INTO rollup_hourly (hour_us, org, team, project, agent, provider, model, task_type, kind, calls, "
        "cost_nusd) VALUES (1772442000000000, '', 'x', '', '', 'openai', 'gpt-4o', '', 'llm', 1, 5)",  # T0's hour
    ],
    ids=["hourly-cost", "daily-cost", "hourly-tokens", "daily-deleted", "hourly-forged"],
)
def test_a_rollup_changed_by_hand_fails_verify(ledger_url: str, statement: str, tmp_path: Path) -> None:
    """Reports read the rollups: one set to $0 must not pass `audit verify` while the chain does."""
    file = take_checkpoint(ledger_url, tmp_path)
    a = Attacker(ledger_url)
    try:
        a.x(statement)
    finally:
        a.close()
    store = open_store(ledger_url)
    try:
        result = audit.verify(store)
        assert result.problem is None and result.count == N  # the chain itself is untouched
        assert result.rollups and not result.ok
        assert "rollup_" in str(result.rollups[0])
        later = audit.verify(store, from_seq=K)  # from a later seq: the days of the rows walked
        assert later.rollups
        with pytest.raises(ValueError, match="rollups disagree"):
            audit.checkpoint(store)
        # from the last checkpoint on, no event is walked: nothing of the rollups is checked then
        assert audit.checkpoint(store, previous=audit.load_checkpoints(file, KEY.encode()))[1].ok
    finally:
        store.close()
    out = CliRunner().invoke(cli.app, ["audit", "verify", "--db", ledger_url], env={"COLUMNS": "300"})
    assert out.exit_code == 1, out.output
    assert "FAILED: the rollups" in out.stdout and "rollup_" in out.stdout


def test_a_cost_set_to_zero_in_the_rollup_is_named_with_both_figures(ledger_url: str) -> None:
    a = Attacker(ledger_url)
    try:
        a.x("UPDATE rollup_hourly SET cost_nusd = 0")
    finally:
        a.close()
    store = open_store(ledger_url)
    try:
        [m] = audit.verify(store).rollups
        events = int(store.query("SELECT SUM(cost_nusd) FROM events")[0][0])
    finally:
        store.close()
    assert m.table == "rollup_hourly" and m.found is not None and m.expected is not None
    assert (m.found["cost_nusd"], m.expected["cost_nusd"]) == (0, events)
    assert f"cost_nusd 0 (the events: {events})" in str(m) and "team='t'" in str(m)


# -- rebuilt: only a checkpoint can tell -----------------------------------------------------------


def take_checkpoint(url: str, tmp_path: Path) -> Path:
    file = tmp_path / "checkpoints.jsonl"
    out = CliRunner().invoke(cli.app, ["audit", "checkpoint", "--db", url, "--out", str(file)])
    assert out.exit_code == 0, out.output
    return file


def test_rebuild_the_chain_after_an_edit(db_url: str, prices: PriceBook, env: None, tmp_path: Path) -> None:
    """Checkpoints after seq K and after seq N; the attacker edits seq K and rebuilds every hash
    from there and the chain head. The chain verifies on its own; the checkpoint taken at K names
    K; the one at N alone names N (all it can say: something up to N was rewritten)."""
    with tt.Ledger(db_url, prices=prices) as led:
        record(led, 1, K + 1)
        file = take_checkpoint(db_url, tmp_path)
        record(led, K + 1, N + 1)
    take_checkpoint(db_url, tmp_path)
    last_only = tmp_path / "last.jsonl"
    last_only.write_text(file.read_text().splitlines()[-1] + "\n")
    a = Attacker(db_url)
    try:
        a.drop_triggers()
        a.x("UPDATE events SET cost_nusd = 1 WHERE seq = ?", (K,))
        a.rehash(K)
    finally:
        a.close()
    store = open_store(db_url)
    try:
        result = audit.verify(store)
        assert result.problem is None  # the chain verifies on its own ...
        assert result.rollups  # ... but the rollups still hold the old cost (unless rewritten too)
    finally:
        store.close()
    check(db_url, K, "modified", checkpoint=file)
    check(db_url, N, "modified", checkpoint=last_only)
    refused = CliRunner().invoke(cli.app, ["audit", "checkpoint", "--db", db_url, "--out", str(file)])
    assert refused.exit_code == 1 and "not signing" in refused.output  # a rebuilt chain is never signed


# -- rules of the classification -------------------------------------------------------------------


class FakeStore:
    """A chain in memory: enough of the Store protocol for audit.verify."""

    def __init__(self, links: list[Link], head: tuple[int, bytes] | None = None) -> None:
        from tokentrail.store.dialect import SQLITE

        self.dialect = SQLITE
        self.url = "memory"
        self.links = sorted(links, key=lambda x: (x[0], x[3][0], x[2]))
        self.head = head if head is not None else ((self.links[-1][0], self.links[-1][2]) if self.links else None)

    def chain(self, from_seq: int = 1) -> Iterator[Link]:
        return (x for x in self.links if x[0] >= from_seq)

    def query(self, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        if "rollup_" in sql:
            return []  # rollups are not this chain's concern (tokentrail.store.rollup_check)
        if sql.startswith("SELECT MIN(ts_us)"):
            return [(None,)]
        if sql.startswith("SELECT MIN(seq)"):
            return [(min((x[0] for x in self.links), default=None),)]
        if "chain_head" in sql:
            return [self.head] if self.head else []
        return [(x[2],) for x in self.links if x[0] == params[0]]


def chain_of(n: int) -> list[Link]:
    out, prev = [], bytes(32)
    for seq in range(1, n + 1):
        row = forged(seq, event_id=f"{seq:08d}-0000-7000-8000-000000000000")
        h = chain_hash(seq, prev, row)
        out.append((seq, prev, h, row))
        prev = h
    return out


def verdict(store: FakeStore, **kw: Any) -> tuple[int, str] | None:
    p = audit.verify(store, **kw).problem  # type: ignore[arg-type]
    return None if p is None else (p.seq, p.reason)


def test_an_empty_chain_verifies() -> None:
    r = audit.verify(FakeStore([]))  # type: ignore[arg-type]
    assert r.ok and r.count == 0 and r.head_hash == bytes(32)


def test_from_seq_walks_the_rest() -> None:
    links = chain_of(10)
    r = audit.verify(FakeStore(links), from_seq=6)  # type: ignore[arg-type]
    assert r.ok and r.count == 5 and r.head_hash == links[-1][2]
    links[2] = (3, links[2][1], links[2][2], forged(99))  # a change before the start is not looked at
    assert audit.verify(FakeStore(links), from_seq=6).ok  # type: ignore[arg-type]
    assert verdict(FakeStore(links)) == (3, "modified")
    with pytest.raises(ValueError, match="from-seq"):
        audit.verify(FakeStore(links), from_seq=0)  # type: ignore[arg-type]


def test_a_checkpoint_before_the_start_is_looked_up() -> None:
    links = chain_of(10)
    good = audit.Checkpoint(4, links[3][2])
    bad = audit.Checkpoint(4, bytes(32))
    assert verdict(FakeStore(links), from_seq=8, checkpoints=[good]) is None
    assert verdict(FakeStore(links), from_seq=8, checkpoints=[bad]) == (4, "modified")
    assert verdict(FakeStore(links), checkpoints=[audit.Checkpoint(20, bytes(32))]) == (11, "missing")


def test_the_same_tampering_is_always_named_the_same() -> None:
    links = chain_of(40)
    moved: list[Link] = [(s + 1 if s >= 20 else s, p, h, r) for s, p, h, r in links]  # a hole at 20
    for _ in range(3):
        assert verdict(FakeStore(moved)) == (20, "missing")


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        (lambda ls: ls.__setitem__(4, (5, ls[4][1], ls[4][2], forged(77))), (5, "modified")),
        (lambda ls: ls.__setitem__(4, (5, ls[4][1], bytes(32), ls[4][3])), (5, "modified")),  # the hash column
        (lambda ls: ls.__setitem__(4, (5, bytes(32), ls[4][2], ls[4][3])), (5, "modified")),  # the link column
        (lambda ls: ls.__delitem__(4), (5, "missing")),
        (lambda ls: ls.__delitem__(0), (1, "missing")),
    ],
)
def test_classification_rules(tamper: Callable[[list[Link]], None], expected: tuple[int, str]) -> None:
    links = chain_of(10)
    tamper(links)
    assert verdict(FakeStore(links, head=(10, chain_of(10)[-1][2]))) == expected


def test_rebuild_rollups_repairs_what_verify_found(ledger_url: str) -> None:
    store = open_store(ledger_url)
    try:
        right = [r.cost_usd for r in report(store, by=("team",)).rows]
    finally:
        store.close()
    a = Attacker(ledger_url)
    try:
        a.x("UPDATE rollup_hourly SET cost_nusd = 0")
        a.x("UPDATE rollup_daily SET cost_nusd = 0, calls = calls + 5")
    finally:
        a.close()
    out = CliRunner().invoke(cli.app, ["audit", "rebuild-rollups", "--db", ledger_url], env={"COLUMNS": "300"})
    assert out.exit_code == 0, out.output
    assert "some were wrong" in out.stdout
    store = open_store(ledger_url)
    try:
        assert audit.verify(store).ok
        assert [r.cost_usd for r in report(store, by=("team",)).rows] == right
    finally:
        store.close()
    again = CliRunner().invoke(cli.app, ["audit", "rebuild-rollups", "--db", ledger_url])
    assert again.exit_code == 0 and "none was wrong" in again.stdout
