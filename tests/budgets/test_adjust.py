"""Corrections: `tokentrail adjust` and `tokentrail.corrections.adjust` append an adjustment event
(the cost delta); nothing is edited, reports and `session ID` include it, the chain still verifies."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from typer.testing import CliRunner

import tokentrail as tt
from tests.store.test_tamper import T0
from tokentrail import audit, cli
from tokentrail.analytics import reports, sessions
from tokentrail.corrections import adjust, effective_cost, find_event, made_at
from tokentrail.events import UsageEvent, from_row
from tokentrail.usage import Usage

if not any(c.name == "adjust" for c in cli.app.registered_commands):
    cli._load()


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli.app, list(args), env={"COLUMNS": "300"})


def seed(led: tt.Ledger) -> tuple[UsageEvent, UsageEvent, UsageEvent]:
    """A priced model call, a tool run and an unpriced call in one session."""
    with (
        tt.session(agent="analyzer", team="legal", session_id="sess-a", tags={"customer": "acme"}, ledger=led),
        tt.step("review"),
    ):
        call = led.record_llm(provider="openai", model="gpt-4o", input_tokens=1000, output_tokens=500, ts=T0)
        tool = led.record_tool("web_search", {"q": "nda"}, cost_usd="0.002")
        unpriced = led.record_llm(provider="acme", model="house-llm", input_tokens=10, output_tokens=1, ts=T0)
    led.flush()
    return call, tool, unpriced


def test_an_adjustment_is_a_new_event(led: tt.Ledger) -> None:
    call, _, _ = seed(led)
    assert call.cost_usd == Decimal("0.0075")
    a = adjust(led, call.event_id, cost_usd="-0.0025", reason="provider credit for a cached prompt")
    assert (a.kind, a.adjusts_event_id, a.cost_usd, a.note) == (
        "adjustment",
        call.event_id,
        Decimal("-0.0025"),
        "provider credit for a cached prompt",
    )
    # it lands where the cost it corrects is: same time, session, step, attribution, model
    for f in ("ts", "session_id", "step", "agent", "team", "tags", "provider", "model", "trace_id"):
        assert getattr(a, f) == getattr(call, f), f
    assert a.parent_span_id == call.span_id and a.total_tokens == 0
    made = made_at(a.event_id)
    assert made is not None and made > call.ts
    stored = find_event(led.store, a.event_id)
    assert stored is not None and from_row(stored[3]) == a
    original = find_event(led.store, call.event_id)
    assert original is not None and from_row(original[3]) == call  # untouched
    assert effective_cost(led.store, call) == Decimal("0.005")
    assert audit.verify(led.store).ok


def test_reports_include_adjustments(led: tt.Ledger) -> None:
    call, tool, unpriced = seed(led)
    adjust(led, call.event_id, cost_usd="0.0005", reason="late price update")
    adjust(led, tool.event_id, new_cost_usd="0", reason="search was free this month")
    adjust(led, unpriced.event_id, new_cost_usd="0.01", reason="priced by hand")
    r = reports.report(led.store)
    assert r.totals.cost_usd == Decimal("0.0075") + Decimal("0.0005") + Decimal("0.01")
    assert (r.totals.calls, r.totals.tool_runs) == (2, 1)  # adjustments are neither
    assert r.totals.unpriced_calls == 1  # the call itself still had no price
    by_model = {row.value("model"): row.cost_usd for row in reports.report(led.store, by=["model"]).rows}
    assert by_model == {"gpt-4o": Decimal("0.008"), None: Decimal("0"), "house-llm": Decimal("0.01")}
    assert reports.report(led.store, by=["team"], rollup=False).totals == r.totals
    detail = sessions.session_detail(led.store, "sess-a")
    assert detail.totals.cost_usd == r.totals.cost_usd
    [s] = sessions.sessions(led.store)
    assert s.cost_usd == r.totals.cost_usd and (s.calls, s.tool_calls) == (2, 1)


def test_new_cost_counts_earlier_adjustments(led: tt.Ledger) -> None:
    call, _, _ = seed(led)
    adjust(led, call.event_id, cost_usd="0.0025", reason="first")
    second = adjust(led, call.event_id, new_cost_usd="0.001", reason="second")
    assert second.cost_usd == Decimal("-0.009")
    assert effective_cost(led.store, call) == Decimal("0.001")


def test_bad_adjustments(led: tt.Ledger) -> None:
    call, _, _ = seed(led)
    with pytest.raises(LookupError, match="no event"):
        adjust(led, "01900000-0000-7000-8000-000000000000", cost_usd="1", reason="x")
    with pytest.raises(LookupError, match="no event"):
        adjust(led, "not-an-id", cost_usd="1", reason="x")
    for kw, why in (
        ({"cost_usd": "abc"}, "not a number"),
        ({"cost_usd": 0.1}, "floats are inexact"),
        ({"cost_usd": "NaN"}, "finite"),
        ({"cost_usd": "1e9"}, "1,000,000"),
        ({"cost_usd": "0"}, "rounds to"),
        ({"new_cost_usd": "0.0075"}, "rounds to"),
        ({}, "not both"),
        ({"cost_usd": "1", "new_cost_usd": "1"}, "not both"),
    ):
        with pytest.raises(tt.InvalidUsage, match=why):
            adjust(led, call.event_id, reason="x", **kw)
    with pytest.raises(tt.InvalidUsage, match="reason"):
        adjust(led, call.event_id, cost_usd="1", reason="  ")
    a = adjust(led, call.event_id, cost_usd="1", reason="x")
    with pytest.raises(tt.InvalidUsage, match="itself an adjustment"):
        adjust(led, a.event_id, cost_usd="1", reason="x")


# -- the command --------------------------------------------------------------------------------------


def test_adjust_command(led: tt.Ledger) -> None:
    call, _, _ = seed(led)
    url = led.url
    out = invoke("adjust", "--event", call.event_id.upper(), "--cost-usd", "-0.0025", "--reason", "refund", "--db", url)
    assert out.exit_code == 0, out.output
    assert f"of event {call.event_id}: $0.007500 -> $0.005000 (-$0.002500), reason: refund" in out.stdout
    out = invoke("adjust", "--event", call.event_id, "--new-cost-usd", "$0.01", "--reason", "repriced", "--db", url)
    assert out.exit_code == 0 and "$0.005000 -> $0.010000 (+$0.005000)" in out.stdout
    session = invoke("session", "sess-a", "--db", url)
    assert session.exit_code == 0
    assert "adjustment" in session.stdout and "(refund)" in session.stdout and "(repriced)" in session.stdout
    tree = json.loads(invoke("session", "sess-a", "--db", url, "--format", "json").stdout)
    [llm] = [n for n in tree["tree"][0]["children"] if n["kind"] == "llm" and n["name"] == "openai/gpt-4o"]
    assert [c["event"]["note"] for c in llm["children"] if c["kind"] == "adjustment"] == ["refund", "repriced"]
    assert Decimal(llm["cost_usd"]) == Decimal("0.01")
    assert invoke("audit", "verify", "--db", url).exit_code == 0


def test_adjust_command_errors(led: tt.Ledger) -> None:
    call, _, _ = seed(led)
    url = led.url
    cases = [
        (["--event", "01900000-0000-7000-8000-000000000000", "--cost-usd", "1"], 2, "no event"),  # usage
        (["--event", call.event_id, "--cost-usd", "lots"], 2, "not a number"),
        (["--event", call.event_id], 2, "--cost-usd DELTA or --new-cost-usd TOTAL"),
        (["--event", call.event_id, "--cost-usd", "1", "--new-cost-usd", "1"], 2, "one of them"),
    ]
    for args, code, message in cases:
        out = invoke("adjust", *args, "--reason", "r", "--db", url)
        assert out.exit_code == code, out.output
        assert message in out.output
    assert invoke("adjust", "--event", call.event_id, "--cost-usd", "1", "--db", url).exit_code == 2  # no --reason
    assert reports.report(led.store).totals.cost_usd == Decimal("0.0095")  # nothing was recorded


def test_an_adjustment_through_build_call_is_still_priced_once(led: tt.Ledger) -> None:
    """An adjustment never carries tokens: the usage of the call is counted once."""
    e = led.build_call(provider="openai", model="gpt-4o", usage=Usage(input_tokens=100, output_tokens=10), ts=T0)
    led.record(e)
    led.flush()
    adjust(led, e.event_id, cost_usd="0.5", reason="x")
    t = reports.report(led.store).totals
    assert (t.input_tokens, t.output_tokens, t.calls) == (100, 10, 1)


def test_a_correction_below_zero_or_below_a_nano_dollar_is_refused(led: tt.Ledger) -> None:
    call, _, _ = seed(led)
    with pytest.raises(tt.InvalidUsage, match="below zero"):
        adjust(led, call.event_id, cost_usd="-5", reason="refund")
    with pytest.raises(tt.InvalidUsage, match="rounds to"):
        adjust(led, call.event_id, cost_usd="0.0000000001", reason="dust")
    refund = adjust(led, call.event_id, cost_usd="-5", reason="credit note", allow_negative=True)
    assert refund.cost_usd == Decimal("-5")
