"""The session summary (migration 0018): the session list read from it equals the raw scan of the
events, totals to the nano-dollar (adjustments included), on both backends and under every scope;
a session whose events carry several attributions never shows another scope's events; filters
the summary cannot answer scan, and say so; `migrate` backfills it, `audit verify` finds a row
changed by hand, `rebuild-rollups` repairs it; the application role cannot write it."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

import tokentrail as tt
from tests.store.test_audit import (
    app_role,  # noqa: F401 (a fixture)
    invoke,
    pg_only,
)
from tests.store.test_dim_rollups import T0, random_events
from tokentrail import audit
from tokentrail.analytics import sessions
from tokentrail.events import UsageEvent, usd_to_nano
from tokentrail.pricing import PriceBook
from tokentrail.store import sqlite as sqlite_store
from tokentrail.store.migrations import MIGRATIONS
from tokentrail.store.rollup_check import check_rollups, rebuild_rollups


def session_events(seed: int, n: int = 300) -> list[UsageEvent]:
    """random_events spread over a few sessions, several agents, users and customers in a session
    (and some events in none), with latencies."""
    rng = random.Random(seed * 31 + 1)
    out = []
    for e in random_events(seed, n):
        sid = rng.choice((*(f"s{i}" for i in range(12)), None))
        out.append(
            dataclasses.replace(
                e,
                session_id=sid,
                agent=rng.choice(("a1", "a2", "", None)),  # '' is stored as given
                task_type=rng.choice(("qa", None)),
                latency_ms=rng.choice((None, 12.5, 1500.0)),
            )
        )
    return out


def write(led: tt.Ledger, events: list[UsageEvent]) -> None:
    for e in events:
        led.record(e)
    led.flush()


def agree(store: tt.types.Store, **kwargs: Any) -> list[sessions.SessionSummary]:
    """The list from the summary equals the raw scan; returns it."""
    page = sessions.session_page(store, **kwargs)
    raw = sessions.sessions(store, summary=False, **kwargs)
    assert page.sessions == raw, kwargs
    assert not page.scanned and page.note is None, kwargs
    return raw


SCOPES: list[dict[str, str]] = [
    {},
    {"team": "legal"},
    {"customer": "c2"},
    {"user": "u1"},
    {"agent": "a2", "team": "eng"},
    {"org": "acme", "project": "p1", "workflow": "draft"},
    {"task_type": "qa"},
]


def assert_list_from_summary(store: tt.types.Store, events: list[UsageEvent]) -> None:
    since, until = T0 + timedelta(hours=3, minutes=17), T0 + timedelta(hours=30, minutes=5)
    for scope in SCOPES:
        for kwargs in (
            {"limit": 1000},
            {"since": since, "until": until, "limit": 1000},
            {"since": since, "limit": 3, "offset": 2},
            {"until": until, "where": {"team": ("legal", ""), "customer": "c1"}},
            {"where": {"session": ("s1", "s3"), "agent": "a1"}, "since": since},
            {"where": {"user": ""}, "until": until},
        ):
            agree(store, scope=scope, **kwargs)
        everything = agree(store, scope=scope, limit=1000)
        # page by page (the newest-first window going back until a page is full): the same list
        pages = [agree(store, scope=scope, limit=2, offset=o) for o in range(0, len(everything) + 2, 2)]
        assert [s for page in pages for s in page] == everything
        inside = [e for e in events if e.session_id and all(_attr(e, d) == v for d, v in scope.items())]
        assert {s.session_id for s in everything} == {e.session_id for e in inside}
        # the totals are the events' own sums (an independent count, adjustments included)
        priced = [e for e in inside if e.cost_usd is not None]
        assert (
            sum(s.cost_usd or 0 for s in everything)
            == sum(Decimal(usd_to_nano(e.cost_usd) or 0) for e in priced) / 10**9
        )
        assert sum(s.tokens for s in everything) == sum(e.input_tokens + e.output_tokens for e in inside)
        assert sum(s.calls for s in everything) == sum(e.kind == "llm" for e in inside)
        assert sum(s.errors for s in everything) == sum(e.kind != "adjustment" and e.status != "ok" for e in inside)
    assert check_rollups(store) == []


def _attr(e: UsageEvent, d: str) -> str | None:
    return getattr(e, "user" if d == "user" else d)


def test_the_session_list_equals_the_raw_scan_under_every_scope(db_url: str, prices: PriceBook) -> None:
    events = session_events(1)
    with tt.Ledger(db_url, prices=prices) as led:
        write(led, events)
        assert_list_from_summary(led.store, events)
        more = session_events(2, 150)  # upserts onto the sessions' rows
        write(led, more)
        assert_list_from_summary(led.store, events + more)


def test_a_scope_never_sees_another_scopes_events_in_a_shared_session(db_url: str, prices: PriceBook) -> None:
    t = T0
    with tt.Ledger(db_url, prices=prices) as led:
        write(
            led,
            [
                UsageEvent(
                    ts=t, session_id="shared", team="legal", agent="a1", cost_usd=Decimal("0.5"), input_tokens=10
                ),
                UsageEvent(
                    ts=t + timedelta(minutes=1), session_id="shared", team="eng", cost_usd=Decimal("7"), input_tokens=99
                ),
                UsageEvent(ts=t - timedelta(minutes=5), session_id="theirs", team="eng", cost_usd=Decimal("3")),
            ],
        )
        mine = sessions.sessions(led.store, scope={"team": "legal"})
        assert [(s.session_id, s.cost_usd, s.tokens, s.team) for s in mine] == [("shared", Decimal("0.5"), 10, "legal")]
        assert mine[0].started == mine[0].ended == t  # timed from its own events only
        assert sessions.sessions(led.store, scope={"team": "legal"}, where={"team": "eng"}) == []
        everyone = sessions.sessions(led.store)
        assert [(s.session_id, s.cost_usd) for s in everyone] == [("shared", Decimal("7.5")), ("theirs", Decimal("3"))]


def test_a_filter_the_summary_cannot_answer_scans_and_says_so(db_url: str, prices: PriceBook) -> None:
    with tt.Ledger(db_url, prices=prices) as led:
        write(led, session_events(3, 150))
        for where in ({"model": "gpt-4o"}, {"tag.region": "eu"}, {"status": "error", "team": "eng"}):
            page = sessions.session_page(led.store, where=where, scope={"team": "legal"})
            assert page.scanned and "summary" in (page.note or "")
            assert page.sessions == sessions.sessions(led.store, where=where, scope={"team": "legal"}, summary=False)


def test_the_api_says_whether_it_scanned(db_url: str, prices: PriceBook) -> None:
    import json

    with tt.Ledger(db_url, prices=prices) as led:
        write(led, session_events(4, 60))
    out = invoke("sessions", "--db", db_url, "--where", "model=gpt-4o")
    assert out.exit_code == 0 and "other filters read every event" in out.output, out.output
    out = invoke("sessions", "--db", db_url, "--format", "json")
    assert out.exit_code == 0 and json.loads(out.stdout), out.output


# -- migrate, audit verify, rebuild, privileges ----------------------------------------------------


@pytest.fixture
def without_summary(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Stores that know every migration but the session summary's (a ledger of the old version)."""
    from tokentrail.store import pg_schema

    before = [m for m in MIGRATIONS if m[0] != "0018_session_summary"]
    monkeypatch.setattr(sqlite_store, "MIGRATIONS", before)
    monkeypatch.setattr(pg_schema, "MIGRATIONS", before)
    yield
    monkeypatch.setattr(sqlite_store, "MIGRATIONS", MIGRATIONS)
    monkeypatch.setattr(pg_schema, "MIGRATIONS", MIGRATIONS)


def test_migrate_backfills_a_ledger_written_before_the_summary(
    db_url: str, prices: PriceBook, monkeypatch: pytest.MonkeyPatch, without_summary: None
) -> None:
    events = session_events(5)
    with tt.Ledger(db_url, prices=prices) as old:
        write(old, events)
        page = sessions.session_page(old.store)
        assert page.scanned and "migrate" in (page.note or "")
    from tokentrail.store import pg_schema

    monkeypatch.setattr(sqlite_store, "MIGRATIONS", MIGRATIONS)
    monkeypatch.setattr(pg_schema, "MIGRATIONS", MIGRATIONS)
    migrated = invoke("migrate", "--db", db_url)
    assert migrated.exit_code == 0 and "0018_session_summary" in migrated.output, migrated.output
    with tt.Ledger(db_url, prices=prices) as led:
        assert_list_from_summary(led.store, events)


@pytest.mark.parametrize(
    "tamper",
    [
        "UPDATE session_summary SET cost_nusd = cost_nusd + 1 WHERE session_id = 's1'",
        "DELETE FROM session_summary WHERE session_id = 's2'",
        "UPDATE session_summary SET team = 'legal' WHERE team = 'eng'",
    ],
)
def test_audit_verify_finds_a_summary_row_changed_by_hand(db_url: str, prices: PriceBook, tamper: str) -> None:
    events = session_events(6, 200)
    with tt.Ledger(db_url, prices=prices) as led:
        write(led, events)
        assert audit.verify(led.store).ok
        led.store.execute_write(tamper)  # type: ignore[attr-defined]
        found = check_rollups(led.store)
        assert found and all(m.table == "session_summary" for m in found)
        assert check_rollups(led.store, since_us=int(T0.timestamp() * 1_000_000))
        assert "session_id=" in str(found[0])
        assert not audit.verify(led.store).ok
        rebuild_rollups(led.store)
        assert check_rollups(led.store) == [] and audit.verify(led.store).ok
        assert_list_from_summary(led.store, events)


@pg_only
def test_the_app_role_cannot_write_the_summary_but_its_events_count(
    db_url: str,
    prices: PriceBook,
    app_role: tuple[str, str],  # noqa: F811 (the fixture imported above)
) -> None:
    import psycopg

    _, app_url = app_role
    events = session_events(7, 100)
    with tt.Ledger(app_url, prices=prices) as led:
        write(led, events)
        assert_list_from_summary(led.store, events)
    from tokentrail.store import open_store

    store = open_store(app_url)
    try:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            store.execute_write("UPDATE session_summary SET cost_nusd = 0")  # type: ignore[attr-defined]
    finally:
        store.close()


def test_newest_first_pages_of_many_short_sessions_and_a_long_one(db_url: str, prices: PriceBook) -> None:
    rng = random.Random(9)
    events = [
        UsageEvent(
            ts=T0 + timedelta(minutes=i),
            session_id=f"s{i // 3:03d}",
            team=rng.choice(("legal", "eng")),
            customer=rng.choice(("c1", "c2")),
            cost_usd=Decimal(rng.randrange(1, 1000)) / 10**6,
            input_tokens=i,
        )
        for i in range(240)
    ]
    # a long session: its first event is old, its others among the newest (it sorts by its first)
    events += [UsageEvent(ts=T0 + timedelta(minutes=m), session_id="long", team="eng") for m in (-30, 200, 239)]
    with tt.Ledger(db_url, prices=prices) as led:
        write(led, events)
        for scope in ({}, {"team": "eng"}, {"customer": "c1"}):
            everything = agree(led.store, scope=scope, limit=1000)
            if not scope:
                assert everything[-1].session_id == "long" and everything[0].session_id == "s079"
            pages = [agree(led.store, scope=scope, limit=5, offset=o) for o in range(0, len(everything) + 5, 5)]
            assert [s for page in pages for s in page] == everything
            agree(led.store, scope=scope, since=T0 + timedelta(minutes=100), limit=7)
