"""The report layer against a real ledger: rollup and raw paths agree, edges are cut exactly,
money is exact, sessions list and nest as they happened; and the time specs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

import tokentrail as tt
from tokentrail.analytics import reports, sessions
from tokentrail.events import UsageEvent, ts_micros
from tokentrail.timespec import parse_time

T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def tool(ts: datetime, cost: str | None, **fields: object) -> UsageEvent:
    """A tool run placed at `ts` (record_tool has no ts=)."""
    return UsageEvent(
        kind="tool", ts=ts, tool_name="search", cost_usd=None if cost is None else Decimal(cost), **fields
    )


def both(store: tt.types.Store, **kwargs: object) -> tuple[reports.Report, reports.Report]:
    """The same report through the rollup and as a raw scan."""
    return reports.report(store, **kwargs), reports.report(store, rollup=False, **kwargs)  # type: ignore[arg-type]


def mixed_ledger(led: tt.Ledger) -> None:
    """Events over four hours: two teams, priced and unpriced models, errors, invalid usage,
    tool runs, an adjustment, tags."""
    for i, minute in enumerate(range(5, 240, 10)):
        team = "legal" if i % 3 else "ops"
        with tt.session(
            agent=f"agent-{i % 2}", team=team, tags={"customer": "acme" if i % 2 else "globex"}, ledger=led
        ):
            e = led.record_llm(
                provider="openai", model="gpt-4o", input_tokens=1000 + i, output_tokens=100, ts=at(minute)
            )
            led.record_llm(provider="acme", model="secret-model", input_tokens=10, output_tokens=5, ts=at(minute + 1))
            if i % 4 == 0:
                led.record(UsageEvent(ts=at(minute + 2), kind="llm", provider="openai", model="gpt-4o", status="error"))
            if i % 5 == 0:
                led.record(
                    UsageEvent(
                        ts=at(minute + 3),
                        provider="openai",
                        model="gpt-4o",
                        status="invalid_usage:cached_gt_input",
                        team=team,
                    )
                )
            led.record(tool(at(minute + 4), "0.002", team=team))
            if i == 7:
                led.record(
                    UsageEvent(
                        kind="adjustment",
                        ts=at(minute + 5),
                        cost_usd=Decimal("-0.001"),
                        adjusts_event_id=e.event_id,
                        team=team,
                        provider="openai",
                        model="gpt-4o",
                    )
                )
    led.flush()


# -- rollup and raw agree ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "by",
    [(), ("team",), ("team", "agent", "model"), ("provider", "model", "kind"), ("hour", "team"), ("day",)],
)
def test_rollup_matches_raw_scan(led: tt.Ledger, by: tuple[str, ...]) -> None:
    mixed_ledger(led)
    for since, until in [(None, None), (at(17), at(200)), (at(60), at(120)), (at(33), at(41)), (None, at(90))]:
        fast, raw = both(led.store, by=by, since=since, until=until)
        assert fast.source == ("events" if since == at(33) else "rollup")  # 10:33-10:41 holds no whole hour
        assert raw.source == "events"
        assert fast.rows == raw.rows
        assert fast.totals == raw.totals


def test_totals_equal_the_sum_over_raw_events(led: tt.Ledger) -> None:
    mixed_ledger(led)
    p = led.store.dialect.param
    rows = led.store.query(
        f"SELECT kind, cost_nusd, input_tokens FROM events WHERE ts_us >= {p} AND ts_us < {p}",
        [ts_micros(at(30)), ts_micros(at(180))],
    )
    rep = reports.report(led.store, by=("team",), since=at(30), until=at(180))
    assert rep.source == "rollup"
    assert rep.totals.calls == sum(1 for r in rows if r[0] in ("llm", "embedding"))
    assert rep.totals.tool_runs == sum(1 for r in rows if r[0] == "tool")
    assert rep.totals.cost_usd == sum((Decimal(r[1]) for r in rows if r[1] is not None), Decimal(0)).scaleb(-9)
    assert rep.totals.input_tokens == sum(r[2] for r in rows)
    assert sum((r.cost_usd or Decimal(0) for r in rep.rows), Decimal(0)) == rep.totals.cost_usd


def test_since_and_until_cut_an_hour_in_two(led: tt.Ledger) -> None:
    for minute in (15, 45, 90, 130, 170):  # 10:15, 10:45, 11:30, 12:10, 12:50
        led.record(tool(at(minute), "0.001", team="legal"))
    led.flush()
    inside = reports.report(led.store, by=("team",), since=at(30), until=at(105))  # 10:30-11:45
    assert inside.source == "events"  # no whole hour inside: both edges from events
    assert inside.totals.tool_runs == 2
    assert inside.totals.cost_usd == Decimal("0.002")
    wide = reports.report(led.store, by=("team",), since=at(30), until=at(150))  # 10:30-12:30, 11-12 whole
    assert wide.source == "rollup"
    assert wide.totals.tool_runs == 3
    assert wide.totals.cost_usd == Decimal("0.003")
    assert wide.totals == reports.report(led.store, by=("team",), since=at(30), until=at(150), rollup=False).totals


def test_since_is_inclusive_and_until_exclusive(led: tt.Ledger) -> None:
    for minute in (60, 120):
        led.record(tool(at(minute), "0.5"))
    led.flush()
    rep = reports.report(led.store, since=at(60), until=at(120))
    assert rep.totals.tool_runs == 1
    assert rep.totals.cost_usd == Decimal("0.5")


def test_exact_decimal_totals(led: tt.Ledger) -> None:
    for minute, cost in ((1, "0.1"), (2, "0.2"), (3, "0.000000001")):
        led.record(tool(at(minute), cost, team="legal"))
    e = led.record_llm(provider="openai", model="gpt-4o", input_tokens=1000, output_tokens=500, ts=at(4))
    led.flush()
    rep = reports.report(led.store, by=("team",))
    assert isinstance(rep.totals.cost_usd, Decimal)
    assert e.cost_usd == Decimal("0.0075")  # $2.50 / $10 per million
    assert rep.totals.cost_usd == Decimal("0.307500001")
    assert rep.totals.unpriced_calls == 0


def test_cover_splits_a_range_into_rollup_units_and_raw_edges() -> None:
    hour, day = 3_600_000_000, 86_400_000_000
    lo, hi = day - hour // 2, 3 * day + 2 * hour + 5  # 23:30 on day 0 to 02:00:00.000005 on day 3
    parts, raw = reports.cover(lo, hi, [day, hour])
    assert parts == [(0, day, 3 * day), (1, 3 * day, 3 * day + 2 * hour)]
    assert raw == [(lo, day), (3 * day + 2 * hour, hi)]
    assert reports.cover(None, None, [hour]) == ([(0, None, None)], [])
    assert reports.cover(None, hour + 7, [hour]) == ([(0, None, hour)], [(hour, hour + 7)])
    assert reports.cover(10, 20, [hour]) == ([], [(10, 20)])
    assert reports.cover(10, 20, []) == ([], [(10, 20)])


# -- dimensions, filters, buckets -------------------------------------------------------------


def test_group_by_tag(led: tt.Ledger) -> None:
    for minute, customer in ((1, "acme"), (2, "acme"), (3, "globex"), (4, None)):
        tags = {"customer": customer} if customer else {}
        led.record(tool(at(minute), "0.01", tags=tags))
    led.flush()
    rep = reports.report(led.store, by=("tag.customer",))
    assert rep.source == "events"
    assert {r.value("tag.customer"): r.tool_runs for r in rep.rows} == {"acme": 2, "globex": 1, None: 1}
    assert rep.rows[0].value("tag.customer") == "acme"  # most expensive first
    only = reports.report(led.store, where={"tag.customer": "globex"})
    assert only.totals.tool_runs == 1


def test_where_filters(led: tt.Ledger) -> None:
    mixed_ledger(led)
    everything = reports.report(led.store, by=("team",))
    legal = reports.report(led.store, by=("model",), where={"team": "legal"})
    ops = reports.report(led.store, where={"team": "ops"})
    # '' selects events without the dimension: the failed calls were recorded without a team
    unset = reports.report(led.store, where={"team": ""})
    assert legal.source == ops.source == unset.source == "rollup"
    assert unset.totals == reports.report(led.store, where={"team": ""}, rollup=False).totals
    assert unset.totals.errors == unset.totals.calls > 0
    parts = (legal.totals, ops.totals, unset.totals)
    assert sum(m.calls for m in parts) == everything.totals.calls
    assert sum((m.cost_usd or Decimal(0) for m in parts), Decimal(0)) == everything.totals.cost_usd
    either = reports.report(led.store, where={"team": ["legal", "ops"]})
    assert either.totals.calls == legal.totals.calls + ops.totals.calls
    gpt = reports.report(led.store, where={"team": "legal", "model": "gpt-4o"})
    assert gpt.totals == reports.report(led.store, where={"team": "legal", "model": "gpt-4o"}, rollup=False).totals
    row = next(r for r in legal.rows if r.value("model") == "gpt-4o")
    assert gpt.totals.measures() == row.measures()
    raw = reports.report(led.store, by=("agent",), where={"status": "ok", "team": "legal"})
    assert raw.source == "events"
    assert raw.totals.errors == 0
    assert raw.totals.calls == legal.totals.calls - legal.totals.errors


def test_unknown_dimension_is_a_value_error_naming_the_valid_ones(led: tt.Ledger) -> None:
    with pytest.raises(ValueError, match=r"unknown dimension 'colour'.*team.*tag\.<key>.*day"):
        reports.report(led.store, by=("team", "colour"))
    with pytest.raises(ValueError, match="unknown dimension 'size'"):
        reports.report(led.store, where={"size": "xl"})
    with pytest.raises(ValueError, match="since/--until"):
        reports.report(led.store, where={"hour": "10"})
    with pytest.raises(ValueError, match="tag"):
        reports.report(led.store, by=("tag.it's",))
    with pytest.raises(ValueError, match="not before"):
        reports.report(led.store, since=at(10), until=at(5))


def test_hour_and_day_buckets_follow_the_time_zone(led: tt.Ledger) -> None:
    day1 = datetime(2026, 1, 5, 18, 15, tzinfo=UTC)  # 23:45 in Kolkata (+05:30)
    for ts in (day1, day1 + timedelta(minutes=30), day1 + timedelta(hours=6)):  # 18:45 UTC is 00:15 in Kolkata
        led.record(tool(ts, "1"))
    led.flush()
    utc = reports.report(led.store, by=("day",))
    assert [(r.value("day"), r.tool_runs) for r in utc.rows] == [
        (datetime(2026, 1, 5, tzinfo=UTC), 2),
        (datetime(2026, 1, 6, tzinfo=UTC), 1),
    ]
    kolkata = reports.report(led.store, by=("day",), tz="Asia/Kolkata")
    assert kolkata.source == "events"  # a half-hour offset cannot be cut from hourly rollups
    assert [(r.value("day").isoformat(), r.tool_runs) for r in kolkata.rows] == [  # type: ignore[union-attr]
        ("2026-01-05T00:00:00+05:30", 1),
        ("2026-01-06T00:00:00+05:30", 2),
    ]
    paris = reports.report(led.store, by=("hour",), tz="Europe/Paris")
    assert paris.source == "rollup"
    assert [(r.value("hour").isoformat(), r.tool_runs) for r in paris.rows] == [  # type: ignore[union-attr]
        ("2026-01-05T19:00:00+01:00", 2),
        ("2026-01-06T01:00:00+01:00", 1),
    ]


def test_empty_ledger_reports_nothing(led: tt.Ledger) -> None:
    rep = reports.report(led.store, by=("team",), since=at(0))
    assert rep.rows == ()
    assert rep.totals == reports.Measures()
    assert reports.report(led.store).rows == ()
    assert reports.unpriced_models(led.store) == []
    assert sessions.sessions(led.store) == []


# -- unpriced, invalid, adjustments -----------------------------------------------------------


def test_unpriced_and_invalid_calls_are_counted_not_costed(led: tt.Ledger) -> None:
    led.record_llm(provider="openai", model="gpt-4o", input_tokens=100, output_tokens=10, ts=at(1))
    for minute in (2, 75, 130):
        led.record_llm(provider="acme", model="secret-model", input_tokens=100, output_tokens=10, ts=at(minute))
    led.record(UsageEvent(ts=at(3), provider="openai", model="gpt-4o", status="invalid_usage:negative"))
    led.flush()
    for fast in (True, False):
        rep = reports.report(led.store, by=("model",), rollup=fast)
        by_model = {r.value("model"): r for r in rep.rows}
        assert by_model["secret-model"].unpriced_calls == 3
        assert by_model["secret-model"].cost_usd is None  # unpriced, never $0
        assert by_model["gpt-4o"].invalid_calls == 1
        assert by_model["gpt-4o"].unpriced_calls == 0
        assert rep.totals.unpriced_calls == 3 and rep.totals.invalid_calls == 1
    [model] = reports.unpriced_models(led.store)
    assert (model.provider, model.model, model.calls) == ("acme", "secret-model", 3)
    assert (model.first_seen, model.last_seen) == (at(2), at(130))
    [recent] = reports.unpriced_models(led.store, since=at(60))
    assert (recent.calls, recent.first_seen) == (2, at(75))


def test_adjustments_change_cost_not_calls(led: tt.Ledger) -> None:
    e = led.record(tool(at(10), "0.01", team="legal"))
    led.record(
        UsageEvent(kind="adjustment", ts=at(70), cost_usd=Decimal("-0.0025"), adjusts_event_id=e.event_id, team="legal")
    )
    led.flush()
    for fast in (True, False):
        rep = reports.report(led.store, by=("team",), rollup=fast)
        [row] = rep.rows
        assert (row.tool_runs, row.cost_usd) == (1, Decimal("0.0075"))  # the adjustment is no run
    by_kind = {r.value("kind"): r for r in reports.report(led.store, by=("kind",)).rows}
    assert by_kind["adjustment"].calls == 0
    assert by_kind["adjustment"].cost_usd == Decimal("-0.0025")


# -- sessions ---------------------------------------------------------------------------------


def test_sessions_newest_first_with_totals_and_outcomes(led: tt.Ledger) -> None:
    ids = []
    for n, (agent, start) in enumerate((("alpha", 0), ("beta", 60), ("alpha", 120))):
        with tt.session(agent=agent, team="legal", user=f"u-{n}", ledger=led) as s:
            led.record_llm(provider="openai", model="gpt-4o", input_tokens=1000, output_tokens=500, ts=at(start))
            led.record(tool(at(start + 1), "0.002", session_id=s.session_id, agent=agent))
            if n == 2:
                led.record_llm(provider="acme", model="secret", input_tokens=1, output_tokens=1, ts=at(start + 2))
            s.outcome("contract_reviewed")
            ids.append(s.session_id)
    led.flush()
    found = sessions.sessions(led.store)
    assert [s.session_id for s in found] == ids[::-1]
    newest = found[0]
    assert (newest.agent, newest.team, newest.user) == ("alpha", "legal", "u-2")
    assert (newest.started, newest.ended) == (at(120), at(122))
    assert (newest.calls, newest.tool_calls, newest.unpriced_calls, newest.errors) == (2, 1, 1, 0)
    assert newest.tokens == 1502
    assert newest.cost_usd == Decimal("0.0095")
    assert newest.outcomes == (("contract_reviewed", 1),)
    assert [s.session_id for s in sessions.sessions(led.store, where={"agent": "alpha"})] == [ids[2], ids[0]]
    assert [s.session_id for s in sessions.sessions(led.store, limit=1)] == [ids[2]]
    assert [s.session_id for s in sessions.sessions(led.store, since=at(30), until=at(121))] == [ids[2], ids[1]]
    # a filter picks sessions, the totals stay whole
    [filtered] = sessions.sessions(led.store, where={"model": "secret"})
    assert filtered.calls == 2
    with pytest.raises(ValueError, match="limit"):
        sessions.sessions(led.store, limit=0)


def test_session_detail_is_a_call_tree(led: tt.Ledger) -> None:
    with tt.session(agent="researcher", team="legal", ledger=led) as s:
        with tt.step("research"):
            with tt.step("search"):
                first = led.record_llm(
                    provider="openai",
                    model="gpt-4o",
                    input_tokens=1000,
                    output_tokens=50,
                    tool_calls=[("call_1", "web_search", {"q": "tokentrail"}), ("call_2", "fetch", {"url": "x"})],
                )
                ran = led.record_tool("web_search", {"q": "tokentrail"}, cost_usd="0.002")
                led.record(UsageEvent(kind="tool", session_id=s.session_id, tool_name="fetch", tool_call_id="call_2"))
            second = led.record_llm(provider="openai", model="gpt-4o", input_tokens=1500, output_tokens=80)
        third = led.record_llm(provider="openai", model="gpt-4o", input_tokens=1200, output_tokens=10)
        led.record(
            UsageEvent(
                kind="adjustment",
                session_id=s.session_id,
                cost_usd=Decimal("-0.001"),
                adjusts_event_id=third.event_id,
                note="refund",
            )
        )
    led.flush()
    assert ran.parent_span_id == first.span_id
    detail = sessions.session_detail(led.store, s.session_id)
    assert (detail.agent, detail.team) == ("researcher", "legal")
    assert len(detail.events) == 6
    [research, last] = detail.tree
    assert (research.kind, research.name, research.step) == ("step", "research", "research")
    [search, call2] = research.children
    assert (search.kind, search.step) == ("step", "research/search")
    [call1] = search.children
    assert call1.event is not None and call1.event.event_id == first.event_id
    assert [(c.kind, c.name) for c in call1.children] == [("tool", "web_search"), ("tool", "fetch")]
    assert call1.cost_usd == first.cost_usd + Decimal("0.002")
    assert [n.context_growth for n in (call1, call2, last)] == [None, 500, -300]
    assert last.event is not None and last.event.event_id == third.event_id
    [adj] = last.children
    assert (adj.kind, adj.cost_usd) == ("adjustment", Decimal("-0.001"))
    assert research.cost_usd == first.cost_usd + second.cost_usd + Decimal("0.002")  # type: ignore[operator]
    total = first.cost_usd + second.cost_usd + third.cost_usd + Decimal("0.001")  # type: ignore[operator]
    assert detail.totals.cost_usd == total
    # model calls and tool runs counted apart, exactly as the SQL report counts them
    assert (detail.totals.calls, detail.totals.tool_runs) == (3, 2)
    assert detail.totals == reports.report(led.store, where={"session": s.session_id}).totals
    assert detail.to_dict()["tree"][0]["children"][0]["children"][0]["children"][0]["name"] == "web_search"
    with pytest.raises(LookupError, match="no session"):
        sessions.session_detail(led.store, "no-such-session")


# -- time specs -------------------------------------------------------------------------------

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", NOW - timedelta(minutes=30)),
        ("12h", NOW - timedelta(hours=12)),
        ("7d", NOW - timedelta(days=7)),
        ("4w", NOW - timedelta(weeks=4)),
        (" 7D ", NOW - timedelta(days=7)),
        ("now", NOW),
        ("2026-01-31", datetime(2026, 1, 31, tzinfo=UTC)),
        ("2026-01-31T09:30:00+01:00", datetime(2026, 1, 31, 8, 30, tzinfo=UTC)),
        ("2026-01-31T09:30:00Z", datetime(2026, 1, 31, 9, 30, tzinfo=UTC)),
        ("2026-01-31 09:30", datetime(2026, 1, 31, 9, 30, tzinfo=UTC)),
    ],
)
def test_parse_time_forms(text: str, expected: datetime) -> None:
    got = parse_time(text, tz=None, now=NOW)
    assert got == expected
    assert got.tzinfo is UTC


def test_parse_time_in_a_time_zone() -> None:
    assert parse_time("2026-01-31", tz="Europe/Paris", now=NOW) == datetime(2026, 1, 30, 23, 0, tzinfo=UTC)
    assert parse_time("2026-07-01", tz="Europe/Paris", now=NOW) == datetime(2026, 6, 30, 22, 0, tzinfo=UTC)
    assert parse_time("2026-01-31T09:30", tz="America/New_York", now=NOW) == datetime(2026, 1, 31, 14, 30, tzinfo=UTC)
    # an explicit offset wins over --tz; relative times do not depend on it
    assert parse_time("2026-01-31T09:30+00:00", tz="Asia/Tokyo", now=NOW) == datetime(2026, 1, 31, 9, 30, tzinfo=UTC)
    assert parse_time("1h", tz="Asia/Tokyo", now=NOW) == NOW - timedelta(hours=1)


@pytest.mark.parametrize(
    ("text", "tz", "message"),
    [
        ("yesterday", None, "cannot read the time 'yesterday'.*30m, 12h, 7d, 4w"),
        ("7y", None, "cannot read"),
        ("", None, "empty"),
        ("2026-02-30", None, "not a real date"),
        ("2026-01-31T25:00", None, "not a valid ISO-8601"),
        ("7d", "Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
    ],
)
def test_parse_time_rejects_bad_input(text: str, tz: str | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_time(text, tz=tz, now=NOW)
