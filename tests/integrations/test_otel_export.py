"""OpenTelemetry export (tokentrail.integrations.otel_export): events become GenAI spans and
bounded token/cost counters, sent by the real OpenTelemetry SDK and OTLP/HTTP exporter, into a
local capture decoded with opentelemetry-proto (into tokentrail's own receiver: test_otel_reingest.py)."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest

import tokentrail as tt
from tests._events import stored
from tests.integrations._otel import Capture, attrs, by_event, capture_env, exporting, sums, work
from tokentrail.exceptions import ConfigError
from tokentrail.integrations import otel_export
from tokentrail.integrations.otel_spans import session_span_id, session_trace_id
from tokentrail.pricing import PriceBook
from tokentrail.testing import FakeUpstream


@pytest.fixture
def capture(monkeypatch: pytest.MonkeyPatch) -> Iterator[Capture]:
    yield from capture_env(monkeypatch)


SRC = str(Path(__file__).resolve().parents[2] / "src")


# -- spans and metrics, decoded ---------------------------------------------------------------


def test_spans_carry_the_ledgers_tokens_cost_and_attribution(capture: Capture, db_url: str, prices: PriceBook) -> None:
    led = exporting(db_url, prices)
    try:
        recorded = work(led)
        assert led.otel_export.flush(10)
        events = {e.event_id: e for e in stored(led)}
    finally:
        led.close()
    assert set(events) == {e.event_id for e in recorded}
    spans = by_event(capture)
    assert set(spans) == set(events)
    for event_id, e in events.items():
        a = attrs(spans[event_id])
        assert a["tokentrail.kind"] == e.kind and a["tokentrail.team"] == "legal" and a["tokentrail.project"] == "p1"
        assert a["tokentrail.session"] == a["gen_ai.conversation.id"] == "sess-1"
        assert a["tokentrail.tag.env"] == "t" and a["gen_ai.agent.name"] == "researcher"
        if e.cost_usd is not None:
            assert Decimal(a["tokentrail.cost_nusd"]) / 10**9 == e.cost_usd  # exact
            assert a["tokentrail.cost_usd"] == pytest.approx(float(e.cost_usd))
        if e.kind == "tool":
            assert (a["gen_ai.operation.name"], a["gen_ai.tool.name"], a["gen_ai.tool.call.id"]) == (
                "execute_tool",
                "search",
                "call-1",
            )
            continue
        assert a["gen_ai.usage.input_tokens"] == e.input_tokens
        assert a["gen_ai.usage.output_tokens"] == e.output_tokens
        assert a.get("gen_ai.usage.cache_read.input_tokens", 0) == e.cache_read_tokens
        assert a.get("gen_ai.usage.cache_creation.input_tokens", 0) == e.cache_write_tokens
        assert a.get("gen_ai.usage.reasoning.output_tokens", 0) == e.reasoning_tokens
        assert a["gen_ai.request.model"] == a["gen_ai.response.model"] == e.model
        assert a["gen_ai.provider.name"] == a["gen_ai.system"]
    kinds = {attrs(spans[i])["gen_ai.operation.name"]: e for i, e in events.items()}
    assert set(kinds) == {"chat", "embeddings", "execute_tool"}
    gemini = next(attrs(spans[i]) for i, e in events.items() if e.provider == "google")
    assert gemini["gen_ai.provider.name"] == "gcp.gemini"
    failed = next(spans[i] for i, e in events.items() if e.status == "error")
    assert failed.status.code == 2 and attrs(failed)["error.type"] == "error"
    gpt = next(spans[i] for i, e in events.items() if e.model == "gpt-4o")
    assert gpt.end_time_unix_nano - gpt.start_time_unix_nano == 250_000_000  # the event's latency
    assert gpt.kind == 3  # SPAN_KIND_CLIENT

    # metrics: the same tokens and cost as the ledger
    tokens: dict[str, float] = {}
    for value, labels in sums(capture, "tokentrail.tokens"):
        tokens[labels["gen_ai.token.type"]] = tokens.get(labels["gen_ai.token.type"], 0) + value
    assert tokens == {
        "input": sum(e.input_tokens for e in events.values()),
        "output": sum(e.output_tokens for e in events.values()),
        "cache_read": 200,
        "cache_write": 100,
        "reasoning": 40,
    }
    cost = sum(v for v, _ in sums(capture, "tokentrail.cost"))
    assert cost == pytest.approx(float(sum(e.cost_usd or 0 for e in events.values())))
    assert sum(v for v, _ in sums(capture, "tokentrail.events")) == len(events)
    for _, labels in sums(capture, "tokentrail.cost"):
        assert not any(k in labels for k in ("tokentrail.session", "tokentrail.user", "tokentrail.tag.env"))


def test_a_session_is_a_trace_and_a_step_a_parent_span(capture: Capture, ledger: tt.Ledger, prices: PriceBook) -> None:
    led = exporting(str(ledger.url), prices)
    try:
        recorded = work(led)
        led.otel_export.flush(10)
    finally:
        led.close()
    spans = capture.spans()
    trace = session_trace_id("sess-1").to_bytes(16, "big")
    assert {s.trace_id for s in spans} == {trace}
    named = {s.name: s for s in spans}
    root = named["invoke_agent researcher"]
    assert root.span_id == session_span_id("sess-1").to_bytes(8, "big") and root.parent_span_id == b""
    research, plan, write = named["step research"], named["step research/plan"], named["step write"]
    assert research.parent_span_id == root.span_id and write.parent_span_id == root.span_id
    assert plan.parent_span_id == research.span_id
    ev = by_event(capture)
    gpt, tool, emb, claude, gemini = (ev[e.event_id] for e in recorded)
    assert gpt.parent_span_id == plan.span_id
    assert tool.parent_span_id == gpt.span_id  # the tool run under the call that asked for it
    assert emb.parent_span_id == write.span_id and claude.parent_span_id == write.span_id
    assert gemini.parent_span_id == root.span_id
    # a parent spans its children
    for parent, children in ((plan, (gpt, tool)), (write, (emb, claude)), (root, tuple(ev.values()))):
        assert parent.start_time_unix_nano == min(c.start_time_unix_nano for c in children)
        assert parent.end_time_unix_nano == max(c.end_time_unix_nano for c in children)
    assert attrs(root)["gen_ai.operation.name"] == "invoke_agent" and "gen_ai.usage.input_tokens" not in attrs(root)


def test_another_process_puts_the_same_session_in_the_same_trace(
    capture: Capture, ledger: tt.Ledger, prices: PriceBook, tmp_path: Path
) -> None:
    led = exporting(str(ledger.url), prices)
    try:
        work(led, session_id="shared-sess")
        led.otel_export.flush(10)
    finally:
        led.close()
    other = f"sqlite:///{tmp_path / 'other.db'}"
    script = textwrap.dedent(
        f"""
        import tokentrail as tt
        led = tt.Ledger({other!r}, otel=True)
        with tt.session("helper", session_id="shared-sess", ledger=led):
            with tt.step("research"):
                led.record_llm(provider="openai", model="gpt-4o-mini", input_tokens=5, output_tokens=1)
        led.close()
        """
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": SRC, "OTEL_EXPORTER_OTLP_ENDPOINT": capture.url}
    env["TOKENTRAIL_SPOOL_DIR"] = str(tmp_path / "spool")
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=120)
    models = {attrs(s).get("gen_ai.request.model"): s for s in capture.spans()}
    assert models["gpt-4o-mini"].trace_id == models["gpt-4o"].trace_id
    steps = [s for s in capture.spans() if s.name == "step research"]
    assert len(steps) == 2 and steps[0].span_id == steps[1].span_id  # both processes derive it
    assert models["gpt-4o-mini"].parent_span_id == steps[0].span_id


def test_metric_labels_are_bounded(
    capture: Capture, ledger: tt.Ledger, prices: PriceBook, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(otel_export, "MAX_LABEL_VALUES", 3)
    led = exporting(str(ledger.url), prices)
    try:
        for i in range(12):
            with tt.session(f"agent-{i}", team=f"team-{i}", user=f"user-{i}", ledger=led):
                led.record_llm(provider="openai", model="gpt-4o-mini", input_tokens=10, output_tokens=1)
        led.otel_export.flush(10)
    finally:
        led.close()
    points = sums(capture, "tokentrail.events")
    teams = {labels["tokentrail.team"] for _, labels in points}
    agents = {labels["tokentrail.agent"] for _, labels in points}
    assert teams == {"team-0", "team-1", "team-2", "_other"} and agents == {"agent-0", "agent-1", "agent-2", "_other"}
    assert sum(v for v, _ in points) == 12  # nothing lost: the rest is counted under _other
    assert all(not k.startswith(("tokentrail.user", "tokentrail.session")) for _, labels in points for k in labels)
    assert sum(v for v, labels in sums(capture, "tokentrail.tokens") if labels["gen_ai.token.type"] == "input") == 120


# -- never failing a call ---------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_endpoint_down_never_fails_a_call(
    up: FakeUpstream, ledger: tt.Ledger, prices: PriceBook, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    led = exporting(str(ledger.url), prices)
    try:
        client = tt.wrap(openai.OpenAI(base_url=up.openai_base_url, api_key="sk-test", max_retries=0), ledger=led)
        with tt.session("a", ledger=led):
            answer = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
            led.record_llm(provider="openai", model="gpt-4o", input_tokens=10, output_tokens=2)
        assert answer.choices
        assert led.otel_export.flush(5) is False  # reported, never raised
        status = led.otel_export.status()
        assert status["span_export_errors"] >= 1 and status["spans_failed"] >= 2 and status["spans_exported"] == 0
        assert len(stored(led)) == 2  # the ledger has every call
    finally:
        led.close()


def test_a_failing_exporter_or_mapping_never_fails_a_call(
    ledger: tt.Ledger, prices: PriceBook, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class Broken(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            raise RuntimeError("boom")

    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    export = otel_export.OtelExport(span_exporter=Broken())
    led = tt.Ledger(str(ledger.url), prices=prices, otel=export)
    try:
        led.record_llm(provider="openai", model="gpt-4o", input_tokens=10, output_tokens=2)
        assert export.flush(5) is False
        assert export.status()["span_export_errors"] == 1 and export.status()["spans_failed"] == 1

        def broken(e: tt.UsageEvent) -> None:
            raise RuntimeError("a mapping bug")

        monkeypatch.setattr(export._structure, "event_span", broken)
        led.record_llm(provider="openai", model="gpt-4o", input_tokens=10, output_tokens=2)
        export.flush(5)
        assert export.status()["listener_errors"] == 1
        assert len(stored(led)) == 2
    finally:
        led.close()


# -- opt-in and lazy --------------------------------------------------------------------------


def test_import_tokentrail_imports_no_opentelemetry(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    code = (
        "import sys, tokentrail as tt\n"
        f"led = tt.Ledger({url!r})\n"
        "led.record_llm(provider='openai', model='gpt-4o', input_tokens=1)\n"
        "led.close()\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": SRC, "TOKENTRAIL_SPOOL_DIR": str(tmp_path / "spool")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def test_the_environment_variable_turns_export_on(
    capture: Capture, ledger: tt.Ledger, prices: PriceBook, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOKENTRAIL_OTEL_EXPORT", "1")
    led = tt.Ledger(str(ledger.url), prices=prices)
    try:
        e = led.record_llm(provider="openai", model="gpt-4o", input_tokens=3, output_tokens=1)
        assert led.otel_export.flush(10)
    finally:
        led.close()
    assert list(by_event(capture)) == [e.event_id]
    assert led.otel_export.status()["closed"] is True  # the ledger's close() shut it down


def test_configure_turns_export_on(capture: Capture, tmp_path: Path) -> None:
    default = tt.configure(db=f"sqlite:///{tmp_path / 'default.db'}", otel=True)
    try:
        e = tt.record_llm(provider="openai", model="gpt-4o", input_tokens=3, output_tokens=1)
        assert default.otel_export.flush(10)
    finally:
        default.close()
    assert list(by_event(capture)) == [e.event_id]


def test_an_unsupported_protocol_is_an_error_in_code_and_a_log_line_from_the_environment(
    ledger: tt.Ledger, prices: PriceBook, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    with pytest.raises(ConfigError, match="http/json"):
        tt.Ledger(str(ledger.url), prices=prices, otel=True)
    monkeypatch.setenv("TOKENTRAIL_OTEL_EXPORT", "1")
    led = tt.Ledger(str(ledger.url), prices=prices)  # metering goes on without export
    try:
        assert led.otel_export is None
        led.record_llm(provider="openai", model="gpt-4o", input_tokens=3)
        assert len(stored(led)) == 1
    finally:
        led.close()
    assert "OpenTelemetry export cannot start" in caplog.text


def test_without_the_extra_the_message_names_it(
    ledger: tt.Ledger, prices: PriceBook, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.metrics", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"pip install 'tokentrail\[otel\]'"):
        tt.Ledger(str(ledger.url), prices=prices, otel=True)


def test_an_idle_session_span_is_sent_and_sent_again_whole_when_it_resumes(
    capture: Capture, ledger: tt.Ledger, prices: PriceBook, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    export = otel_export.OtelExport(idle_seconds=0.05)
    led = tt.Ledger(str(ledger.url), prices=prices, otel=export)

    def roots() -> list[Any]:
        export._tracer_provider.force_flush(10_000)  # what the export thread sent, never the open spans
        return [s for s in capture.spans() if s.name == "invoke_agent a"]

    def wait_for(n: int) -> list[Any]:
        for _ in range(600):  # bounded: the export thread runs every 25 ms
            found = roots()
            if len(found) >= n:
                return found
            export._stop.wait(0.05)
        raise AssertionError(f"{n} session span(s) never sent")

    try:
        with tt.session("a", session_id="idle-sess", ledger=led):
            first = led.record_llm(provider="openai", model="gpt-4o", input_tokens=3, latency_ms=5)
            (sent,) = wait_for(1)  # sent without a flush, once idle
            second = led.record_llm(provider="openai", model="gpt-4o", input_tokens=4, latency_ms=5)
        again = wait_for(2)[1]
    finally:
        led.close()
    spans = by_event(capture)
    assert sent.span_id == again.span_id and sent.trace_id == again.trace_id
    assert again.start_time_unix_nano == spans[first.event_id].start_time_unix_nano  # its whole extent
    assert again.end_time_unix_nano == spans[second.event_id].end_time_unix_nano


def test_recording_only_queues_and_a_full_queue_drops_exports_not_calls(
    capture: Capture, ledger: tt.Ledger, prices: PriceBook, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(otel_export, "MAX_QUEUED", 2)
    export = otel_export.OtelExport()
    export._stop.set()  # the export thread stops: events wait in the queue
    export._thread.join(10)
    led = tt.Ledger(str(ledger.url), prices=prices, otel=export)
    try:
        events = [led.record_llm(provider="openai", model="gpt-4o", input_tokens=i + 1) for i in range(5)]
        assert capture.spans() == [] and len(export._queue) == 2  # nothing mapped or sent in the call
        assert export.flush(10)
        assert export.status()["events_dropped"] == 3
        assert len(stored(led)) == 5  # the ledger has every call
    finally:
        led.close()
    assert set(by_event(capture)) == {e.event_id for e in events[:2]}
