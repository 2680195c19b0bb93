"""Online anomaly detection: the writer folds each durable batch through the same detectors, so
online and batch find the same anomalies; through the real SDKs and the gateway a looping agent is
flagged while it runs, and a suspend-session policy refuses its next call; a failing detector never
breaks a write."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx2
import openai
import pytest

import tokentrail as tt
from tests._anomaly_fleet import build
from tests._events import stored
from tests._server import serving
from tests.analytics.test_anomalies import score
from tokentrail.analytics.anomalies import AnomalyConfig, replay
from tokentrail.analytics.detectors import Detectors
from tokentrail.budgets.alerts import CallbackSink
from tokentrail.exceptions import BudgetExceeded
from tokentrail.pricing import PriceBook
from tokentrail.store import anomalies as sql
from tokentrail.testing import FakeUpstream, Reply, ToolCall

M: Any = [{"role": "user", "content": "fix the build"}]


def test_online_and_batch_find_the_same(db_url: str, prices: PriceBook) -> None:
    fleet = build(seed=21)
    with tt.Ledger(db_url, prices=prices, anomalies=True) as led:
        alerts: list[Any] = []
        led.budgets.alerts.add(CallbackSink(alerts.append))
        for e in fleet.events:
            led.record(e)
        led.flush()
        watch = led.anomaly_watch
        online = list(watch.found)
        batch = replay(led.store, fleet.start - timedelta(days=1))
        led.budgets.alerts.flush()
        rows = sql.select(led.store)
    assert {(a.kind, a.dedup_key) for a in online} == {(a.kind, a.dedup_key) for a in batch}
    recall, missed, flagged = score(fleet, online)
    assert recall == 1.0, missed
    assert len(flagged) <= len(fleet.normal) / 100
    assert len(rows) == len(online) and watch.errors == 0
    assert sum(watch.counts.values()) == len(online)
    assert sorted(a.message for a in alerts) == sorted(a.message for a in online)
    assert {a.kind for a in alerts} == {"anomaly"}


def _looping_client(up: FakeUpstream, ledger: tt.Ledger) -> openai.OpenAI:
    for _ in range(6):
        up.push(Reply(tool_calls=[ToolCall("run_tests", {"path": "tests/"}, id="call_1")]))
    return tt.wrap(openai.OpenAI(base_url=up.openai_base_url, api_key="sk-test", max_retries=0), ledger=ledger)


def test_a_looping_agent_is_flagged_while_it_runs(up: FakeUpstream, any_ledger: tt.Ledger) -> None:
    led = any_ledger
    watch_ledger = tt.Ledger(led.url, anomalies=True, spool=False)
    try:
        c = _looping_client(up, watch_ledger)
        with tt.session("ci-fixer", team="platform", session_id="loop-1", ledger=watch_ledger):
            for i in range(3):  # the context grows each turn: only the tool call repeats
                messages = [*M, {"role": "user", "content": f"attempt {i}"}]
                c.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=100)
                watch_ledger.flush()
                found = sql.for_session(led.store, "loop-1")
                assert [r["kind"] for r in found] == ([] if i < 2 else ["retry_loop"])
        (row,) = found
        assert row["agent"] == "ci-fixer" and row["team"] == "platform" and len(row["event_ids"]) == 3
        assert "was asked for tool run_tests with the same arguments 3 times in session loop-1" in row["message"]
    finally:
        watch_ledger.close()


def test_a_suspend_session_policy_refuses_the_next_call(up: FakeUpstream, ledger: tt.Ledger) -> None:
    config = AnomalyConfig(policies={"retry_loop": "suspend-session"})
    with tt.Ledger(ledger.url, anomalies=config, spool=False) as led:
        c = _looping_client(up, led)
        with tt.session("ci-fixer", session_id="loop-2", ledger=led):
            for _ in range(3):
                c.chat.completions.create(model="gpt-4o-mini", messages=M, max_tokens=100)
            led.flush()
            with pytest.raises(BudgetExceeded):
                c.chat.completions.create(model="gpt-4o-mini", messages=M, max_tokens=100)
        # another session of the same agent goes on
        with tt.session("ci-fixer", session_id="other", ledger=led):
            c.chat.completions.create(model="gpt-4o-mini", messages=M, max_tokens=100)
        assert len(up.requests) == 4


def test_through_the_gateway_the_loop_is_suspended_with_402(up: FakeUpstream, ledger: tt.Ledger) -> None:
    config = AnomalyConfig(policies={"retry_loop": "suspend-session"})
    with tt.Ledger(ledger.url, anomalies=config, spool=False) as led, serving(led, up) as s:
        for _ in range(4):
            up.push(Reply(tool_calls=[ToolCall("run_tests", {"path": "tests/"}, id="call_1")]))
        headers = {"X-Tokentrail-Agent": "ci-fixer", "X-Tokentrail-Session": "gw-loop"}
        c = openai.OpenAI(base_url=s.url + "/v1", api_key="sk-test", default_headers=headers, max_retries=0)
        for _ in range(3):
            c.chat.completions.create(model="gpt-4o-mini", messages=M, max_tokens=100)
        led.flush()
        assert [r["kind"] for r in sql.for_session(led.store, "gw-loop")] == ["retry_loop"]
        with pytest.raises(openai.APIStatusError) as err:
            c.chat.completions.create(model="gpt-4o-mini", messages=M, max_tokens=100)
        metrics = httpx2.get(s.url + "/metrics").text
    assert err.value.status_code == 402
    assert len(up.requests) == 3
    assert 'tokentrail_anomalies_total{kind="retry_loop"} 1.0' in metrics
    assert "gw-loop" not in metrics  # no session label


def test_a_failing_detector_never_breaks_a_write(ledger: tt.Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: Detectors, rows: Any) -> list[Any]:
        raise RuntimeError("detector bug")

    monkeypatch.setattr(Detectors, "fold", broken)
    with tt.Ledger(ledger.url, anomalies=True, spool=False) as led:
        for i in range(5):
            led.record(tt.UsageEvent(provider="openai", model="gpt-4o-mini", input_tokens=10 + i, session_id="s"))
        led.flush()
        assert len(stored(led)) == 5
        assert led.anomaly_watch.errors >= 1


def test_bad_settings_in_the_environment_are_a_clear_error(ledger: tt.Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENTRAIL_ANOMALIES", '{"kinds": ["retry_loop", "bogus"]}')
    with pytest.raises(ValueError, match="unknown kind 'bogus'"):
        tt.Ledger(ledger.url, spool=False)
    monkeypatch.setenv("TOKENTRAIL_ANOMALIES", "off")
    with tt.Ledger(ledger.url, spool=False) as led:
        assert led.anomaly_watch is None
