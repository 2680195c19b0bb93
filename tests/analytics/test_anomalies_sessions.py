"""The cost driver of a session and its anomalous calls, in `tokentrail session` and the sessions API."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from starlette.testclient import TestClient

import tokentrail as tt
from tests.analytics.test_anomalies import _cli
from tokentrail.analytics.anomalies import AnomalyConfig, replay, save
from tokentrail.analytics.cost_driver import cost_driver
from tokentrail.events import ToolCall, UsageEvent
from tokentrail.server import create_app
from tokentrail.server.keys import create_key

T0 = datetime(2026, 1, 5, 10, tzinfo=UTC)
T_NOW = datetime.now(UTC).timestamp()
ASK = (ToolCall("c", "run_tests", "h1"),)


def _call(i: int, **kw: object) -> UsageEvent:
    base: dict[str, object] = {"kind": "llm", "ts": T0 + timedelta(seconds=i), "input_tokens": 1000}
    base.update(output_tokens=100, cost_usd=Decimal("0.01"), session_id="s1", agent="bot", team="legal")
    base.update(kw)
    return UsageEvent(**base)  # type: ignore[arg-type]


def test_the_cost_driver() -> None:
    assert cost_driver([_call(0, input_tokens=90_000, output_tokens=50)]) == "long context"
    assert cost_driver([_call(0, input_tokens=100, output_tokens=5000)]) == "output verbosity"
    assert cost_driver([_call(0, input_tokens=100, output_tokens=5000, reasoning_tokens=4500)]) == "reasoning loops"
    loop = [_call(i, input_tokens=3000, output_tokens=20, tool_calls=ASK) for i in range(10)]
    assert cost_driver(loop) == "many tool calls"
    assert cost_driver([UsageEvent(kind="tool", session_id="s1")]) is None


def test_session_marks_in_the_cli_and_the_api(any_ledger: tt.Ledger) -> None:
    led = any_ledger
    for i in range(4):
        led.record(_call(i, tool_calls=ASK, input_tokens=1000 + i))
    led.record(_call(9, session_id="s2", team="cx"))
    led.flush()
    found = replay(led.store, T0 - timedelta(days=1), AnomalyConfig())
    assert [a.kind for a in found] == ["retry_loop"]
    save(led.store, found)
    code, out, _ = _cli("session", "s1", "--db", led.url, "--format", "json")
    data = json.loads(out)
    assert code == 0 and data["cost_driver"] == "many tool calls"
    assert [a["kind"] for a in data["anomalies"]] == ["retry_loop"]
    code, out, _ = _cli("session", "s1", "--db", led.url)
    assert "cost driver: many tool calls" in out and "⚠ retry_loop: agent 'bot'" in out
    assert out.count("$0.010 → asked for run_tests  ⚠ retry_loop") == 3  # the 3 calls of the loop marked
    legal = str(create_key(led.store, role="read", attribution={"team": "legal"})[0])  # type: ignore[arg-type]
    cx = str(create_key(led.store, role="read", attribution={"team": "cx"})[0])  # type: ignore[arg-type]
    with TestClient(create_app(led, admin_key="tt-admin-0123456789abcdef")) as c:
        mine = c.get("/api/v1/sessions/s1", headers={"X-Tokentrail-Key": legal}).json()
        assert mine["cost_driver"] == "many tool calls" and len(mine["anomalies"]) == 1
        assert c.get("/api/v1/sessions/s1", headers={"X-Tokentrail-Key": cx}).status_code == 404


def test_the_demos_runaway_line_comes_from_the_detector(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/demo.db"
    code, out, _ = _cli("demo", "--db", url)
    assert code == 0
    flat = " ".join(out.split())
    assert "Runaway: retry_loop: agent 'ci-fixer' was asked for tool run_tests with the same arguments 3 times" in flat
    assert "by its end:" in flat
    code, out, _ = _cli("anomalies", "--db", url, "--stored", "--kind", "retry_loop", "-f", "json")
    assert [r["agent"] for r in json.loads(out)] == ["ci-fixer"]
    # 14 days of back-dated history: the baselines exist, and today's normal sessions sit inside them
    from tokentrail.store import open_store

    store = open_store(url)
    try:
        (old,) = store.query("SELECT COUNT(*) FROM events WHERE ts_us < ?", [int((T_NOW - 86_400 * 10) * 1e6)])[0]
        assert old > 0
    finally:
        store.close()
    code, out, _ = _cli("anomalies", "--db", url, "--stored", "--kind", "token_spike", "-f", "json")
    assert json.loads(out) == []
