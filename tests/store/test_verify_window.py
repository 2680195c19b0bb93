"""`audit verify` rechecks a window of days of the rollups by default and every row with `--full`
(tokentrail.store.rollup_window), on both backends: a rollup row changed by hand inside the window
fails the default; one outside it passes the default on that day but fails `--full`, and the
daily rotation reaches it within 7 days; the chain checks are the same either way."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import tokentrail as tt
from tests.store.test_tamper import KEY, Attacker
from tokentrail import audit, cli
from tokentrail.pricing import PriceBook
from tokentrail.store import open_store
from tokentrail.store.rollup_columns import DAY_US
from tokentrail.store.rollup_window import MAX_RANGES, ROTATION, WEEK_DAYS, merge, rotation_ranges, today_rotation

if not any(getattr(g, "name", None) == "audit" for g in cli.app.registered_groups):
    cli._load()

NEW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # the newest day
FIRST = NEW - timedelta(days=70)  # the first day: no window edge near the old days below
TABLES = ("rollup_hourly", "rollup_daily", "rollup_dim_hourly", "rollup_dim_daily")


def us(t: datetime) -> int:
    return int(t.timestamp()) * 1_000_000


def week_of(t: datetime) -> int:
    return (us(t) - us(t) % DAY_US) // (WEEK_DAYS * DAY_US)


def old_day(avoid: set[int]) -> datetime:
    """A day between FIRST and NEW, not in the last two, whose week is in none of the rotations `avoid`."""
    for k in range(2, 60):
        t = NEW - timedelta(days=k)
        if week_of(t) % ROTATION not in avoid:
            return t
    raise AssertionError("no such day")


def put(ledger: tt.Ledger, *times: datetime) -> None:
    with tt.session(agent="a", team="t", session_id="s-1", ledger=ledger):
        for i, t in enumerate(times):
            ledger.record_llm(
                provider="openai", model="gpt-4o", input_tokens=100 + i, output_tokens=10, ts=t, tags={"region": "eu"}
            )
    ledger.flush()


def tamper(url: str, table: str, day: datetime) -> None:
    """Set the cost of that day's rows of `table` to 0 (the rollups are not chained)."""
    column = "day_us" if table.endswith("daily") else "hour_us"
    lo = us(day) - us(day) % DAY_US
    a = Attacker(url)
    try:
        a.x(f"UPDATE {table} SET cost_nusd = 0 WHERE {column} >= ? AND {column} < ?", (lo, lo + DAY_US))
    finally:
        a.close()


@pytest.fixture
def url(db_url: str, prices: PriceBook, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("TOKENTRAIL_ROLLUP_TAGS", "region")
    with tt.Ledger(db_url, prices=prices) as led:
        put(led, FIRST, *(NEW - timedelta(days=k) for k in range(2, 60)), NEW - timedelta(hours=30), NEW)
    return db_url


def verify(url: str, **kw: Any) -> audit.Verification:
    store = open_store(url)
    try:
        return audit.verify(store, **kw)
    finally:
        store.close()


@pytest.mark.parametrize("table", TABLES)
def test_a_bucket_changed_in_the_last_two_days_fails_the_default(url: str, table: str) -> None:
    for day in (NEW, NEW - timedelta(hours=30)):
        tamper(url, table, day)
        for r in range(ROTATION):  # whatever the date
            result = verify(url, full=False, rotation=r)
            assert result.problem is None and result.rollups, (day, r)
            assert {m.table for m in result.rollups} == {table}


@pytest.mark.parametrize("table", TABLES)
def test_a_bucket_outside_the_window_passes_the_default_and_fails_full(url: str, table: str) -> None:
    day = old_day(avoid={0})
    tamper(url, table, day)
    missed = verify(url, full=False, rotation=0)
    assert missed.ok and missed.count == 61  # the chain is walked whole either way
    full = verify(url)
    assert full.problem is None and {m.table for m in full.rollups} == {table}
    assert all(m.start_us // DAY_US == us(day) // DAY_US for m in full.rollups)
    # the rotation: one of any 7 consecutive days' default verifications rechecks it
    caught = [r for r in range(ROTATION) if not verify(url, full=False, rotation=r).ok]
    assert caught == [week_of(day) % ROTATION]


def test_the_days_written_after_the_checkpoint_are_in_the_window(url: str, prices: PriceBook, tmp_path: Path) -> None:
    store = open_store(url)
    try:
        cp, _ = audit.checkpoint(store)
    finally:
        store.close()
    day = old_day(avoid={0})
    with tt.Ledger(url, prices=prices) as led:
        put(led, day + timedelta(minutes=7))  # a late event: an old day's rollup rows change
    tamper(url, "rollup_dim_hourly", day)
    assert verify(url, full=False, rotation=0).ok  # without the checkpoint, not in today's window
    since = verify(url, full=False, rotation=0, checkpoints=[cp])
    assert since.problem is None and since.checkpoints == 1
    assert since.rollups and since.rollups[0].table == "rollup_dim_hourly"
    assert since.window is not None and since.window.anchor_seq == cp.seq
    # the same through the command, with the signed file
    file = tmp_path / "cp.jsonl"
    file.write_text(cp.to_line(KEY.encode()) + "\n")
    out = CliRunner().invoke(
        cli.app,
        ["audit", "verify", "--db", url, "--checkpoint", str(file)],
        env={"COLUMNS": "300", audit.KEY_ENV: KEY},
    )
    assert out.exit_code == 1 and "FAILED: the rollups" in out.stdout and "rollup_dim_hourly" in out.stdout


@pytest.mark.parametrize("when", [FIRST - timedelta(days=400), NEW + timedelta(days=400)])
def test_a_row_forged_on_a_day_without_events_fails_the_default(url: str, when: datetime) -> None:
    hour = us(when) - us(when) % DAY_US
    a = Attacker(url)
    try:
        a.x(
            "INSERT INTO rollup_dim_daily (day_us, org, team, project, dim, value, calls, cost_nusd) "
            "VALUES (?, '', 't', '', 'customer', 'acme', 1, 5)",
            (hour,),
        )
    finally:
        a.close()
    for r in range(ROTATION):
        [m] = verify(url, full=False, rotation=r).rollups
        assert m.table == "rollup_dim_daily" and m.expected is None


def test_the_command_default_and_full(url: str) -> None:
    """The command's default uses today's rotation: a day whose week is neither today's nor
    tomorrow's (midnight may pass during the test) is outside it; --full finds it."""
    r = today_rotation()
    day = old_day(avoid={r, (r + 1) % ROTATION})
    tamper(url, "rollup_daily", day)
    run = CliRunner()
    default = run.invoke(cli.app, ["audit", "verify", "--db", url], env={"COLUMNS": "300"})
    assert default.exit_code == 0, default.output
    assert "1 week in 7 of the rest" in default.stdout and "--full checks every row" in default.stdout
    full = run.invoke(cli.app, ["audit", "verify", "--db", url, "--full"], env={"COLUMNS": "300"})
    assert full.exit_code == 1 and "FAILED: the rollups" in full.stdout and "rollup_daily" in full.stdout


def test_from_a_later_seq_the_days_before_the_walk_are_left_out(url: str) -> None:
    """Archived events (a partition detached under a checkpoint) leave their rollup rows behind:
    verifying from the next seq passes, both ways; from genesis, both find them."""
    a = Attacker(url)
    try:
        a.drop_triggers()
        a.x("DELETE FROM events WHERE seq = 1")  # FIRST's event, archived
    finally:
        a.close()
    for full in (False, True):
        assert verify(url, from_seq=3, full=full, rotation=0).ok  # anchored on the row at seq 2
        whole = verify(url, full=full, rotation=0)
        assert whole.problem is not None and whole.problem.reason == "missing"
        assert any(m.expected is None and m.start_us // DAY_US == us(FIRST) // DAY_US for m in whole.rollups)


# -- the window itself (pure) ------------------------------------------------------------------------


def test_seven_rotations_cover_every_day_once() -> None:
    first, last = 20_000 * DAY_US, 20_100 * DAY_US
    seen: dict[int, int] = {}
    for r in range(ROTATION):
        for lo, hi in rotation_ranges(first, last, r):
            assert lo is not None and hi is not None
            for d in range(lo // DAY_US, hi // DAY_US):
                seen[d] = seen.get(d, 0) + 1
    assert all(seen.get(d) == 1 for d in range(20_000, 20_101))


def test_merge_joins_and_caps_by_widening() -> None:
    assert merge([(None, 5), (3, 10), (10, 12), (20, None)], 8) == ((None, 12), (20, None))
    days = [(d * 10, d * 10 + 1) for d in range(500)]
    merged = merge(days, MAX_RANGES)
    assert len(merged) <= MAX_RANGES
    for lo, hi in days:  # every range is still inside one merged range
        assert any(a is not None and b is not None and a <= lo and hi <= b for a, b in merged)


def test_the_session_summary_of_a_recent_session_is_in_the_default(url: str, prices: PriceBook) -> None:
    """The session summary (0018) is checked with the range its session's first event is in: a
    session of the newest day whose summary row was changed fails the default, whatever the date."""
    with tt.Ledger(url, prices=prices) as led, tt.session(agent="a", team="t", session_id="s-new", ledger=led):
        led.record_llm(provider="openai", model="gpt-4o", input_tokens=7, output_tokens=1, ts=NEW)
    assert verify(url, full=False, rotation=0).ok
    a = Attacker(url)
    try:
        a.x("UPDATE session_summary SET cost_nusd = 0 WHERE session_id = ?", ("s-new",))
    finally:
        a.close()
    for r in range(ROTATION):
        result = verify(url, full=False, rotation=r)
        assert {m.table for m in result.rollups} == {"session_summary"}, r
