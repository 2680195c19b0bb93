"""The dimension rollups (customer, user, workflow, status, tool, step, declared tag keys): every
report they serve equals the raw scan to the nano-dollar, on both backends; a ledger written
before them is backfilled by `migrate`, a newly declared tag key by the next open; `audit verify`
finds a row changed by hand; a scoped key stays inside its scope; an undeclared tag scans, and
the report says so."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

import tokentrail as tt
from tests.store.test_audit import (
    app_role,  # noqa: F401 (a fixture)
    invoke,
    pg_only,
)
from tokentrail import audit
from tokentrail.analytics import reports
from tokentrail.events import UsageEvent, ts_micros
from tokentrail.pricing import PriceBook
from tokentrail.store import sqlite as sqlite_store
from tokentrail.store.migrations import MIGRATIONS
from tokentrail.store.rollup_check import check_rollups, rebuild_rollups

T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
DIMS = ("customer", "user", "workflow", "status", "tool", "step")


def random_events(seed: int, n: int = 300) -> list[UsageEvent]:
    """Events over ~2 days with every dimension sometimes missing, tool runs, failures, unpriced
    and invalid calls, tags (region sometimes missing) and adjustments of earlier events."""
    rng = random.Random(seed)
    out: list[UsageEvent] = []

    def pick(*values: str) -> str | None:
        return rng.choice((*values, None))

    for _i in range(n):
        ts = T0 + timedelta(minutes=rng.randrange(0, 48 * 60), seconds=rng.randrange(60))
        common = {
            "ts": ts,
            "org": pick("acme"),
            "team": pick("legal", "ops", "eng"),
            "project": pick("p1", "p2"),
            "customer": pick("c1", "c2", "c3"),
            "user": pick("u1", "u2"),
            "workflow": pick("triage", "draft"),
            "step": pick("plan", "act"),
            "tags": {k: v for k, v in (("region", pick("eu", "us")), ("bu", pick("retail"))) if v is not None},
        }
        if out and rng.random() < 0.08:
            target = rng.choice(out)
            cost = Decimal(rng.randrange(-5000, 5000)) / 10**9
            out.append(UsageEvent(kind="adjustment", cost_usd=cost, adjusts_event_id=target.event_id, **common))  # type: ignore[arg-type]
        elif rng.random() < 0.15:
            cost = None if rng.random() < 0.3 else Decimal(rng.randrange(1, 10**6)) / 10**9
            status = "ok" if rng.random() < 0.9 else "error"
            tool = pick("search", "fetch")
            out.append(UsageEvent(kind="tool", tool_name=tool, cost_usd=cost, status=status, **common))  # type: ignore[arg-type]
        else:
            r = rng.random()
            status = "error" if r < 0.05 else "invalid_usage:cached_gt_input" if r < 0.08 else "ok"
            cost = None if status != "ok" or rng.random() < 0.1 else Decimal(rng.randrange(1, 10**9)) / 10**9
            out.append(
                UsageEvent(
                    provider="openai",
                    model=rng.choice(("gpt-4o", "gpt-4o-mini")),
                    input_tokens=rng.randrange(0, 5000),
                    output_tokens=rng.randrange(0, 500),
                    cache_read_tokens=rng.randrange(0, 100),
                    cost_usd=cost,
                    status=status,
                    usage_estimated=rng.random() < 0.05,
                    **common,  # type: ignore[arg-type]
                )
            )
    return out


def open_ledger(db_url: str, prices: PriceBook, monkeypatch: pytest.MonkeyPatch, tags: str = "") -> tt.Ledger:
    monkeypatch.setenv("TOKENTRAIL_ROLLUP_TAGS", tags)
    return tt.Ledger(db_url, prices=prices)


def write(led: tt.Ledger, events: list[UsageEvent]) -> None:
    for e in events:
        led.record(e)
    led.flush()


def agree(store: tt.types.Store, **kwargs: object) -> reports.Report:
    """The report from the rollups equals the raw scan, row by row and in total; returns it."""
    fast = reports.report(store, **kwargs)  # type: ignore[arg-type]
    raw = reports.report(store, rollup=False, **kwargs)  # type: ignore[arg-type]
    assert fast.rows == raw.rows, kwargs
    assert fast.totals == raw.totals, kwargs
    return fast


def assert_every_dimension_from_rollups(store: tt.types.Store, tags: tuple[str, ...] = ("region",)) -> None:
    since, until = T0 + timedelta(minutes=17), T0 + timedelta(hours=40, minutes=5)  # partial edges
    for d in (*DIMS, *(f"tag.{k}" for k in tags)):
        for kwargs in (
            {"by": (d,)},
            {"by": (d,), "since": since, "until": until},
            {"by": ("team", d, "day")},
            {"by": (d, "hour"), "since": since, "until": until, "where": {"org": "acme"}},
            {"by": ("project",), "where": {d: ("", rows_value(store, d)), "team": "legal"}},
        ):
            rep = agree(store, **kwargs)
            assert rep.source == "rollup" and not rep.scanned and rep.note is None, (d, kwargs)
            assert rep.totals.calls or rep.totals.tool_runs or "where" in kwargs
    assert check_rollups(store) == []


def rows_value(store: tt.types.Store, d: str) -> str:
    """A value the dimension takes in the ledger (the first in the raw report)."""
    rows = reports.report(store, by=(d,), rollup=False).rows
    return next(str(r.value(d)) for r in rows if r.value(d) is not None)


# -- rollups equal the raw scan ------------------------------------------------------------------


def test_every_dimension_report_equals_the_raw_scan(
    db_url: str, prices: PriceBook, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_ledger(db_url, prices, monkeypatch, tags="Region, ") as led:
        write(led, random_events(1))
        assert_every_dimension_from_rollups(led.store)
        write(led, random_events(2, 100))  # upserts onto existing rows
        assert_every_dimension_from_rollups(led.store)
        totals = reports.report(led.store).totals
        assert reports.report(led.store, by=("customer",)).totals == totals  # each event once per dimension
        assert reports.report(led.store, by=("tag.region",)).totals == totals
        assert reports.report(led.store, by=("tag.bu",)).scanned  # not declared


@pytest.fixture
def old_migrations(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Stores that know the migrations before the dimension rollups' (a ledger of the old version)."""
    from tokentrail.store import pg_schema

    before = MIGRATIONS[: [name for name, _ in MIGRATIONS].index("0017_dim_rollups")]
    monkeypatch.setattr(sqlite_store, "MIGRATIONS", before)
    monkeypatch.setattr(pg_schema, "MIGRATIONS", before)
    yield
    monkeypatch.setattr(sqlite_store, "MIGRATIONS", MIGRATIONS)
    monkeypatch.setattr(pg_schema, "MIGRATIONS", MIGRATIONS)


def test_migrate_backfills_a_ledger_written_before_the_dimension_rollups(
    db_url: str, prices: PriceBook, monkeypatch: pytest.MonkeyPatch, old_migrations: None
) -> None:
    with open_ledger(db_url, prices, monkeypatch, tags="region") as old:
        write(old, random_events(3))
        rep = reports.report(old.store, by=("customer",))
        assert rep.scanned and "migrate" in (rep.note or "")
        assert check_rollups(old.store) == []  # nothing to check yet
    from tokentrail.store import pg_schema

    monkeypatch.setattr(sqlite_store, "MIGRATIONS", MIGRATIONS)
    monkeypatch.setattr(pg_schema, "MIGRATIONS", MIGRATIONS)
    migrated = invoke("migrate", "--db", db_url)
    assert migrated.exit_code == 0 and "0017_dim_rollups" in migrated.output, migrated.output
    with open_ledger(db_url, prices, monkeypatch, tags="region") as led:
        assert_every_dimension_from_rollups(led.store)
        write(led, random_events(4, 150))
        assert_every_dimension_from_rollups(led.store)


def test_a_newly_declared_tag_key_is_backfilled_and_kept_by_every_writer(
    db_url: str, prices: PriceBook, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_ledger(db_url, prices, monkeypatch) as led:
        write(led, random_events(5))
        undeclared = agree(led.store, by=("tag.region",))
        assert undeclared.scanned and undeclared.source == "events"
        assert "TOKENTRAIL_ROLLUP_TAGS" in (undeclared.note or "")
        shown = undeclared.to_dict()
        assert shown["scanned"] is True and "not rolled up" in shown["note"]
        # another process declares the key while this one keeps writing with what it knew
        with open_ledger(db_url, prices, monkeypatch, tags="region,bu") as other:
            assert_every_dimension_from_rollups(other.store, ("region", "bu"))
        write(led, random_events(6, 120))
        assert_every_dimension_from_rollups(led.store, ("region", "bu"))
        assert reports.report(led.store, by=("tag.region",)).to_dict()["scanned"] is False


# -- audit verify, rebuild -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tamper",
    [
        "UPDATE rollup_dim_hourly SET cost_nusd = cost_nusd + 1 WHERE dim = 'customer' AND value = 'c1'",
        "DELETE FROM rollup_dim_daily WHERE dim = 'tag.region'",
        "UPDATE rollup_dim_hourly SET value = 'c9' WHERE dim = 'customer' AND value = 'c2'",
    ],
)
def test_audit_verify_finds_a_dimension_rollup_changed_by_hand(
    db_url: str, prices: PriceBook, monkeypatch: pytest.MonkeyPatch, tamper: str
) -> None:
    with open_ledger(db_url, prices, monkeypatch, tags="region") as led:
        write(led, random_events(7, 150))
        assert audit.verify(led.store).ok
        led.store.execute_write(tamper)  # type: ignore[attr-defined]
        found = check_rollups(led.store)
        assert found and all(m.table.startswith("rollup_dim_") for m in found)
        assert check_rollups(led.store, since_us=ts_micros(T0))  # `verify --from-seq`: from a day on
        assert "dim=" in str(found[0])
        assert not audit.verify(led.store).ok
        rebuild_rollups(led.store)
        assert check_rollups(led.store) == [] and audit.verify(led.store).ok
        assert_every_dimension_from_rollups(led.store)


# -- scoped keys, scans ----------------------------------------------------------------------------


def test_a_scope_stays_on_the_rollup_path_and_inside_the_scope(
    db_url: str, prices: PriceBook, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_ledger(db_url, prices, monkeypatch, tags="region") as led:
        write(led, random_events(8))
        store = led.store
        legal = agree(store, by=("customer",), scope={"team": "legal"})
        assert legal.source == "rollup" and not legal.scanned
        assert legal.totals == reports.report(store, where={"team": "legal"}, rollup=False).totals
        assert legal.totals != reports.report(store).totals
        widened = agree(store, by=("tag.region",), where={"team": ("ops", "legal")}, scope={"team": "legal"})
        assert widened.source == "rollup" and widened.totals == legal.totals  # a filter never widens it
        other = agree(store, by=("customer",), where={"team": "ops"}, scope={"team": "legal"})
        assert other.rows == () and other.totals.calls == 0
        c1 = agree(store, by=("customer",), scope={"customer": "c1"})
        assert c1.source == "rollup" and [r.value("customer") for r in c1.rows] == ["c1"]
        mixed = agree(store, by=("user",), scope={"customer": "c1"})  # two dimensions: a scan, still scoped
        assert mixed.scanned and mixed.totals == c1.totals


def test_what_is_not_rolled_up_scans_and_says_why(
    db_url: str, prices: PriceBook, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_ledger(db_url, prices, monkeypatch) as led:
        write(led, random_events(9, 80))
        for by, why in ((("session",), "unbounded"), (("customer", "user"), "together"), (("tag.bu",), "declare")):
            rep = agree(led.store, by=by)
            assert rep.scanned and why in (rep.note or ""), by
        forced = reports.report(led.store, by=("customer",), rollup=False)
        assert forced.scanned and forced.note is None


def test_the_report_command_says_when_it_scanned(
    sqlite_url: str, prices: PriceBook, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    with open_ledger(sqlite_url, prices, monkeypatch, tags="region") as led:
        write(led, random_events(10, 40))
    table = invoke("report", "--db", sqlite_url, "--by", "tag.bu")
    assert table.exit_code == 0 and "Note: tag key 'bu' is not rolled up" in table.output, table.output
    rolled = invoke("report", "--db", sqlite_url, "--by", "tag.region")
    assert rolled.exit_code == 0 and "Note:" not in rolled.output
    shown = invoke("report", "--db", sqlite_url, "--by", "tag.bu", "--format", "json")
    assert shown.exit_code == 0
    body = json.loads(shown.stdout)
    assert body["scanned"] is True and "TOKENTRAIL_ROLLUP_TAGS" in body["note"]


@pg_only
def test_the_app_role_cannot_declare_a_tag_key_but_its_events_count_once_the_owner_has(
    db_url: str,
    app_role: tuple[str, str],  # noqa: F811 (the fixture imported above)
    prices: PriceBook,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, app_url = app_role
    with open_ledger(app_url, prices, monkeypatch, tags="region") as led:  # opens, warns, scans
        write(led, random_events(11, 100))
        assert "run `tokentrail migrate` as the owner" in caplog.text
        assert agree(led.store, by=("tag.region",)).scanned
        assert check_rollups(led.store) == []
    with open_ledger(db_url, prices, monkeypatch, tags="region"):
        pass  # the owner declares it, backfilled
    with open_ledger(app_url, prices, monkeypatch, tags="region") as led:
        write(led, random_events(12, 100))
        assert_every_dimension_from_rollups(led.store)
        assert audit.verify(led.store).ok


def test_a_bad_declared_tag_key_is_a_clear_error(
    sqlite_url: str, prices: PriceBook, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tokentrail.exceptions import ConfigError

    for bad, why in (('re"gion', "bad tag key"), (",".join(f"k{i}" for i in range(40)), "at most 32")):
        monkeypatch.setenv("TOKENTRAIL_ROLLUP_TAGS", bad)
        with pytest.raises(ConfigError, match=why):
            tt.Ledger(sqlite_url, prices=prices)
