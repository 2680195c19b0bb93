"""`tokentrail trail EVENT_ID`: the whole trail of one cost, on every backend."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from typer.testing import CliRunner

import tokentrail as tt
from tests.store.test_tamper import T0, Attacker
from tokentrail import cli
from tokentrail.analytics.trail import trail
from tokentrail.corrections import adjust
from tokentrail.events import UsageEvent, args_hash
from tokentrail.usage import Usage

if not any(c.name == "trail" for c in cli.app.registered_commands):
    cli._load()

FINGERPRINT = "ab" * 32
ARGS = {"q": "indemnity cap"}


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli.app, list(args), env={"COLUMNS": "300"})


def seed(led: tt.Ledger) -> dict[str, UsageEvent]:
    """A session: a step with a model call that asks for a tool, the tool run, a second call with
    captured content; an adjustment of the first call."""
    with (
        tt.session(agent="analyzer", team="legal", session_id="sess-t", tags={"customer": "acme"}, ledger=led),
        tt.step("review"),
    ):
        call = led.build_call(
            provider="openai",
            model="gpt-4o",
            usage=Usage(input_tokens=1000, output_tokens=500, cache_read_tokens=200),
            ts=T0,
            tool_calls=(tt.ToolCall("call_1", "web_search", args_hash(ARGS)), tt.ToolCall("call_2", "fetch", "h2")),
            request_hash=FINGERPRINT,
        )
        led.record(call)
        tool = led.record_tool("web_search", ARGS, cost_usd="0.002")  # linked by name and arguments
        later = led.build_call(
            provider="openai",
            model="gpt-4o",
            usage=Usage(input_tokens=10, output_tokens=1),
            ts=T0,
            content="user: summarise the NDA",
        )
        led.record(later)
    led.flush()
    adj = adjust(led, call.event_id, cost_usd="-0.001", reason="volume discount")
    return {"call": call, "tool": tool, "later": later, "adjustment": adj}


def test_trail_of_a_model_call(led: tt.Ledger) -> None:
    ev = seed(led)
    t = trail(led.store, ev["call"].event_id)
    assert t.event == ev["call"] and t.intact and t.seq == 1
    assert t.cost_usd == ev["call"].cost_usd - Decimal("0.001")
    assert [a.event_id for a in t.adjustments] == [ev["adjustment"].event_id]
    assert [x.event_id for x in t.ran] == [ev["tool"].event_id]
    assert len(t.parents) == 1 and t.parents[0].event is None  # the step's span: no event
    assert t.asked_by is None and t.adjusts is None

    out = invoke("trail", ev["call"].event_id, "--db", led.url)
    assert out.exit_code == 0, out.output
    text = out.stdout
    for expected in (
        "openai/gpt-4o",
        "genai-prices, version genai-prices/",
        "1,000 in (200 cached",
        "session        sess-t",
        "step           review",
        "parent         span ",
        ": no event: step review",
        f"asked for      web_search [call_1] args {args_hash(ARGS)} -> tool web_search {ev['tool'].event_id}",
        "asked for      fetch [call_2] args h2 -> did not run",
        f"fingerprint    {FINGERPRINT}",
        "reason: volume discount",
        "cost now",
        "matches its hash",
    ):
        assert expected in text, expected
    assert "content" not in text  # nothing captured for this call


def test_trail_of_a_tool_run_and_of_an_adjustment(led: tt.Ledger) -> None:
    ev = seed(led)
    t = trail(led.store, ev["tool"].event_id)
    assert t.asked_by == ev["call"]
    assert [p.event for p in t.parents] == [ev["call"], None]  # the call that asked, then the step
    out = invoke("trail", ev["tool"].event_id, "--db", led.url)
    assert f"asked by       openai/gpt-4o {ev['call'].event_id}" in out.stdout
    a = trail(led.store, ev["adjustment"].event_id)
    assert a.adjusts == ev["call"]
    assert (
        f"adjusts        openai/gpt-4o {ev['call'].event_id}"
        in invoke("trail", a.event.event_id, "--db", led.url).stdout
    )


def test_captured_content_is_shown_when_present(led: tt.Ledger) -> None:
    ev = seed(led)
    out = invoke("trail", ev["later"].event_id, "--db", led.url)
    assert "content        user: summarise the NDA" in out.stdout


def test_trail_json(led: tt.Ledger) -> None:
    ev = seed(led)
    out = invoke("trail", ev["call"].event_id, "--db", led.url, "--format", "json")
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["event"]["event_id"] == ev["call"].event_id
    assert data["event"]["request_hash"] == FINGERPRINT
    assert data["chain"]["seq"] == 1 and data["chain"]["intact"] is True
    assert [r["event_id"] for r in data["ran"]] == [ev["tool"].event_id]
    assert data["adjustments"][0]["note"] == "volume discount" and data["adjustments"][0]["made_at"]
    assert Decimal(data["cost_usd"]) == ev["call"].cost_usd - Decimal("0.001")


def test_trail_errors(led: tt.Ledger) -> None:
    seed(led)
    for missing in ("01900000-0000-7000-8000-000000000000", "nope"):
        out = invoke("trail", missing, "--db", led.url)
        assert out.exit_code == 2 and "no event" in out.output  # an id that names nothing: usage
    assert invoke("trail", "x", "--db", led.url, "--tz", "Mars/Olympus").exit_code == 2


def test_trail_of_a_tampered_row(led: tt.Ledger) -> None:
    ev = seed(led)
    a = Attacker(led.url)
    try:
        a.drop_triggers()
        a.x("UPDATE events SET cost_nusd = 1 WHERE seq = 1")
    finally:
        a.close()
    assert not trail(led.store, ev["call"].event_id).intact
    assert "DOES NOT match its hash" in invoke("trail", ev["call"].event_id, "--db", led.url).stdout
