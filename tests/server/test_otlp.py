"""`POST /v1/traces`: the real OpenTelemetry SDK and its OTLP/HTTP exporter send GenAI spans; the
events carry the right tokens and attribution, with no double counting through parent spans."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode
from starlette.testclient import TestClient

import tokentrail as tt
from tests._events import stored
from tests._server import quarantined, serving
from tokentrail.integrations.otlp import OTLPError, decode_json, decode_protobuf, span_event_id, to_events
from tokentrail.server import ServerThread, create_app


@pytest.fixture
def served(ledger: tt.Ledger) -> Iterator[ServerThread]:
    with serving(ledger) as s:
        yield s


def provider(url: str, batch: bool = False, **resource: Any) -> TracerProvider:
    tp = TracerProvider(resource=Resource.create({"service.name": "agent-svc", **resource}))
    exporter = OTLPSpanExporter(endpoint=url + "/v1/traces")
    if batch:
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        tp.add_span_processor(BatchSpanProcessor(exporter))
    else:
        tp.add_span_processor(SimpleSpanProcessor(exporter))
    return tp


def test_genai_spans_from_the_otel_sdk(served: ServerThread, ledger: tt.Ledger) -> None:
    tp = provider(served.url, batch=True, **{"tokentrail.team": "legal"})
    tracer = tp.get_tracer("test")
    with tracer.start_as_current_span("invoke_agent contract-analyzer") as agent:
        agent.set_attribute("gen_ai.operation.name", "invoke_agent")
        agent.set_attribute("gen_ai.agent.name", "contract-analyzer")
        agent.set_attribute("gen_ai.conversation.id", "conv-7")
        # the agent span sums its children: it must never be counted
        agent.set_attribute("gen_ai.usage.input_tokens", 3000)
        agent.set_attribute("gen_ai.usage.output_tokens", 300)
        with tracer.start_as_current_span("chat gpt-4o") as s:
            s.set_attributes(
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": "gpt-4o",
                    "gen_ai.response.model": "gpt-4o-2024-08-06",
                    "gen_ai.usage.input_tokens": 2000,
                    "gen_ai.usage.cache_read.input_tokens": 500,
                    "gen_ai.usage.output_tokens": 200,
                    "gen_ai.usage.reasoning.output_tokens": 20,
                }
            )
        with tracer.start_as_current_span("execute_tool web_search") as t:
            t.set_attributes({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "web_search"})
        with tracer.start_as_current_span("chat claude") as s:
            # deprecated names (semconv before v1.37)
            s.set_attributes(
                {
                    "gen_ai.system": "anthropic",
                    "gen_ai.request.model": "claude-sonnet-4-6",
                    "gen_ai.usage.prompt_tokens": 1000,
                    "gen_ai.usage.completion_tokens": 100,
                }
            )
            s.set_status(Status(StatusCode.ERROR))
    tp.force_flush()
    tp.shutdown()
    evs = stored(ledger)
    by_kind = sorted(evs, key=lambda e: (e.kind, e.provider or ""))
    assert [(e.kind, e.provider, e.model, e.input_tokens, e.output_tokens) for e in by_kind] == [
        ("llm", "anthropic", "claude-sonnet-4-6", 1000, 100),
        ("llm", "openai", "gpt-4o-2024-08-06", 2000, 200),
        ("tool", None, None, 0, 0),
    ]
    claude, gpt, tool = by_kind
    assert (gpt.cache_read_tokens, gpt.reasoning_tokens, gpt.cost_usd is not None) == (500, 20, True)
    assert claude.status == "error"
    assert tool.tool_name == "web_search"
    for e in evs:  # attribution from the agent span above, and the resource
        assert (e.agent, e.session_id, e.team) == ("contract-analyzer", "conv-7", "legal")
        assert e.trace_id and e.span_id and e.parent_span_id
    assert sum(e.input_tokens for e in evs) == 3000  # not 6000: the agent span is not counted


def test_openinference_and_json_and_gzip(client_json: TestClient, ledger: tt.Ledger) -> None:
    span = {
        "traceId": "0af7651916cd43dd8448eb211c80319c",
        "spanId": "b7ad6b7169203331",
        "name": "ChatCompletion",
        "startTimeUnixNano": "1767225600000000000",
        "endTimeUnixNano": "1767225601500000000",
        "attributes": [
            {"key": "openinference.span.kind", "value": {"stringValue": "LLM"}},
            {"key": "llm.model_name", "value": {"stringValue": "gpt-4o-mini"}},
            {"key": "llm.provider", "value": {"stringValue": "openai"}},
            {"key": "llm.token_count.prompt", "value": {"intValue": "120"}},
            {"key": "llm.token_count.completion", "value": {"intValue": 30}},
            {"key": "session.id", "value": {"stringValue": "sess-1"}},
            {"key": "user.id", "value": {"stringValue": "u-9"}},
            {"key": "tokentrail.tag.env", "value": {"stringValue": "prod"}},
        ],
    }
    chain = {
        **span,
        "spanId": "00000000000000a1",
        "attributes": [{"key": "openinference.span.kind", "value": {"stringValue": "CHAIN"}}],
    }
    doc = {"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"spans": [span, chain]}]}]}
    body = gzip.compress(json.dumps(doc).encode())
    r = client_json.post(
        "/v1/traces", content=body, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}
    )
    assert r.status_code == 200 and r.json() == {}
    again = client_json.post("/v1/traces", json=doc)  # exported twice: stored once
    assert again.status_code == 200
    [e] = stored(ledger)
    assert (e.model, e.input_tokens, e.output_tokens, e.session_id, e.user, e.tags) == (
        "gpt-4o-mini",
        120,
        30,
        "sess-1",
        "u-9",
        {"env": "prod"},
    )
    assert e.latency_ms == 1500 and e.event_id == span_event_id(span["traceId"], span["spanId"], 1767225600000000000)


@pytest.fixture
def client_json(ledger: tt.Ledger) -> Iterator[TestClient]:
    with TestClient(create_app(ledger)) as c:
        yield c


def test_bad_genai_spans_are_quarantined_and_reported(client_json: TestClient, ledger: tt.Ledger) -> None:
    def span(sid: str, attrs: dict[str, Any]) -> dict[str, Any]:
        return {
            "traceId": "0af7651916cd43dd8448eb211c80319c",
            "spanId": sid,
            "name": "chat",
            "attributes": [{"key": k, "value": v} for k, v in attrs.items()],
        }

    chat = {"gen_ai.operation.name": {"stringValue": "chat"}, "gen_ai.request.model": {"stringValue": "gpt-4o"}}
    spans = [
        span("0000000000000001", {**chat, "gen_ai.usage.input_tokens": {"intValue": "-5"}}),
        span(
            "0000000000000002",
            {
                **chat,
                "gen_ai.usage.input_tokens": {"intValue": "5"},
                "gen_ai.usage.cache_read.input_tokens": {"intValue": "9"},
            },
        ),
        span(
            "0000000000000003",
            {"gen_ai.operation.name": {"stringValue": "chat"}, "gen_ai.usage.input_tokens": {"intValue": "5"}},
        ),
        span("0000000000000004", {"http.method": {"stringValue": "GET"}}),  # not GenAI: ignored
    ]
    doc = {"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}
    r = client_json.post("/v1/traces", json=doc)
    assert r.status_code == 200
    assert r.json()["partialSuccess"]["rejectedSpans"] == "3"
    reasons = sorted(q[1] for q in quarantined(ledger))
    assert any("between 0" in x for x in reasons) and any("cache_exceeds_input" in x for x in reasons)
    assert any("needs gen_ai.request.model" in x for x in reasons)
    assert stored(ledger) == []


def test_protobuf_errors_and_content_types(served: ServerThread) -> None:
    r = httpx2.post(
        served.url + "/v1/traces", content=b"\xff\x00garbage", headers={"Content-Type": "application/x-protobuf"}
    )
    assert r.status_code == 400
    assert (
        httpx2.post(served.url + "/v1/traces", content=b"x", headers={"Content-Type": "text/plain"}).status_code == 415
    )
    r = httpx2.post(served.url + "/v1/traces", content=b"[1]", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "resourceSpans" in r.json()["message"]


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=400))
def test_property_protobuf_decoder_never_crashes(raw: bytes) -> None:
    try:
        spans = decode_protobuf(raw)
    except OTLPError:
        return
    to_events(spans, _NoLedger())


_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=40))
_json = st.recursive(
    _json_leaf,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=st.one_of(_json, st.fixed_dictionaries({"resourceSpans": st.lists(_json, max_size=3)})))
def test_property_json_decoder_never_crashes(doc: Any) -> None:
    try:
        spans = decode_json(json.dumps(doc).encode())
    except OTLPError:
        return
    to_events(spans, _NoLedger())


class _NoLedger:
    """Enough of a ledger for to_events (it only prices)."""

    def build_call(self, **kw: Any) -> Any:
        from tokentrail.events import UsageEvent

        return UsageEvent(status="ok", event_id=kw["event_id"])
