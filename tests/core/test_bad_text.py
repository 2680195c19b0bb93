"""Text no store can keep is refused at every door, with the field named: a NUL (PostgreSQL text
holds none, and one `\\u0000` in the tags' JSON broke every tag report on PostgreSQL) and a lone
surrogate (no store encodes it as UTF-8). A `%` in a tag key reports like any other character,
and hostile shapes (JSON nested 10k deep, event times out of range) get a 4xx with a message."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

import tokentrail as tt
from tests._events import stored
from tests._server import quarantined
from tokentrail import cli
from tokentrail.analytics.reports import report
from tokentrail.events import UsageEvent, to_row
from tokentrail.server import create_app

if not any(c.name == "report" for c in cli.app.registered_commands):
    cli._load()

NUL = "v\x00x"
SURROGATE = "v\ud800x"


@pytest.fixture
def client(any_ledger: tt.Ledger) -> Iterator[TestClient]:
    with TestClient(create_app(any_ledger, upstreams={"openai": "http://127.0.0.1:9"})) as c:
        yield c


def event(**kw: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "provider": "openai",
        "model": "gpt-4o",
        "input_tokens": 10,
        "output_tokens": 2,
        "ts": "2026-01-31T09:30:00Z",
        **kw,
    }


def post_json(client: TestClient, path: str, doc: Any) -> Any:
    """JSON with any lone surrogate spelled as its escape (`json=` would fail to encode it)."""
    return client.post(path, content=json.dumps(doc).encode(), headers={"Content-Type": "application/json"})


def tag_report_works(ledger: tt.Ledger, key: str = "k") -> dict[Any, Any]:
    ledger.flush()
    r = report(ledger.store, by=(f"tag.{key}",))
    return {row.value(f"tag.{key}"): row.calls for row in r.rows}


BAD_FIELDS = [
    ("tag-value-nul", {"tags": {"k": NUL}}, "tag 'k': its value contains a NUL"),
    ("tag-key-nul", {"tags": {"k\x00": "v"}}, "contains a NUL"),
    ("agent-nul", {"agent": NUL}, "agent contains a NUL"),
    ("tag-value-surrogate", {"tags": {"k": SURROGATE}}, "tag 'k': its value contains a lone surrogate"),
    ("tag-key-surrogate", {"tags": {"k\ud800": "v"}}, "lone surrogate"),
    ("agent-surrogate", {"agent": SURROGATE}, "agent contains a lone surrogate"),
    ("tool-call-surrogate", {"tool_calls": [{"name": SURROGATE}]}, "tool_calls[0].name contains a lone surrogate"),
]


@pytest.mark.parametrize(("field", "bad", "reason"), BAD_FIELDS, ids=[f[0] for f in BAD_FIELDS])
def test_events_api_refuses_what_no_store_can_keep(
    client: TestClient, any_ledger: tt.Ledger, field: str, bad: dict[str, Any], reason: str
) -> None:
    r = post_json(client, "/api/v1/events", {"events": [event(**bad)]})
    assert r.status_code == 422, r.text
    [result] = r.json()["results"]
    assert result["status"] == "rejected" and reason in result["reason"]
    assert stored(any_ledger) == []
    assert [q[1] for q in quarantined(any_ledger)] == [result["reason"]]  # kept, with the reason
    ok = post_json(client, "/api/v1/events", {"events": [event(tags={"k": "v"})]})
    assert ok.status_code == 200 and ok.json()["accepted"] == 1
    assert tag_report_works(any_ledger) == {"v": 1}
    api = client.get("/api/v1/report", params={"by": "tag.k"})
    assert api.status_code == 200, api.text


def otlp_span(sid: str, attrs: dict[str, Any], start_ns: int = 1767225600000000000) -> dict[str, Any]:
    values = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", **attrs}
    return {
        "traceId": "0af7651916cd43dd8448eb211c80319c",
        "spanId": sid,
        "name": "chat",
        "startTimeUnixNano": str(start_ns),
        "endTimeUnixNano": str(min(start_ns + 1000, 2**64 - 1)),
        "attributes": [
            {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "10"}},
            *({"key": k, "value": {"stringValue": v}} for k, v in values.items()),
        ],
    }


def otlp(*spans: dict[str, Any]) -> dict[str, Any]:
    return {"resourceSpans": [{"scopeSpans": [{"spans": list(spans)}]}]}


def test_otlp_refuses_each_bad_span_and_keeps_the_good_ones(client: TestClient, any_ledger: tt.Ledger) -> None:
    bad = [
        otlp_span("0000000000000001", {"tokentrail.tag.k": NUL}),
        otlp_span("0000000000000002", {"tokentrail.tag.k\x00": "v"}),
        otlp_span("0000000000000003", {"gen_ai.agent.name": NUL}),
        otlp_span("0000000000000004", {"gen_ai.agent.name": SURROGATE}),
        otlp_span("0000000000000005", {"tokentrail.tag.k": SURROGATE}),
        otlp_span("0000000000000006", {"gen_ai.operation.name": "chat\x00"}),
    ]
    good = otlp_span("00000000000000aa", {"tokentrail.tag.k": "v"})
    r = post_json(client, "/v1/traces", otlp(*bad, good))
    assert r.status_code == 200, r.text
    partial = r.json()["partialSuccess"]
    assert partial["rejectedSpans"] == str(len(bad))
    for words in ("tag 'k': its value contains a NUL", "agent contains a NUL", "agent contains a lone surrogate"):
        assert words in partial["errorMessage"]
    assert [e.tags for e in stored(any_ledger)] == [{"k": "v"}]
    assert len(quarantined(any_ledger)) == len(bad)
    assert tag_report_works(any_ledger) == {"v": 1}


def test_otlp_refuses_event_times_the_events_api_refuses(client: TestClient, any_ledger: tt.Ledger) -> None:
    spans = [
        otlp_span("0000000000000001", {}, start_ns=1),  # 1970
        otlp_span("0000000000000002", {}, start_ns=2**64 - 1),  # 2554
        otlp_span("00000000000000aa", {}),
    ]
    r = post_json(client, "/v1/traces", otlp(*spans))
    assert r.status_code == 200, r.text
    partial = r.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "2"
    assert "is before 2000" in partial["errorMessage"] and "more than a day in the future" in partial["errorMessage"]
    [e] = stored(any_ledger)
    assert e.span_id == "00000000000000aa"
    for when in ("1970-01-01T00:00:00Z", "2554-07-21T23:34:33Z"):  # the same times, refused by the events API
        refused = post_json(client, "/api/v1/events", [event(ts=when)])
        assert refused.status_code == 422


@pytest.mark.parametrize(
    ("header", "value"),
    [("X-Tokentrail-Tag-k", NUL), ("X-Tokentrail-Agent", NUL), ("X-Tokentrail-Tag-k", "\x00")],
    ids=["tag-value", "agent", "only-nul"],
)
def test_gateway_refuses_a_nul_in_an_attribution_header(
    client: TestClient, any_ledger: tt.Ledger, header: str, value: str
) -> None:
    r = client.post(
        "/v1/chat/completions",
        json={"model": "gpt-4o", "messages": []},
        headers={header: value, "Authorization": "Bearer sk-test"},
    )
    assert r.status_code == 400
    message = r.json()["error"]["message"]
    assert header.lower() in message and "NUL" in message
    assert stored(any_ledger) == []
    assert tag_report_works(any_ledger) == {}


def test_the_sdk_refuses_what_no_store_can_keep(any_ledger: tt.Ledger) -> None:
    for tags in ({"k": NUL}, {"k\x00": "v"}, {"k": SURROGATE}):
        with pytest.raises(ValueError, match="tag"):
            tt.session(tags=tags, ledger=any_ledger)
        with pytest.raises(tt.InvalidUsage, match="tag"):
            any_ledger.record_llm(provider="openai", model="gpt-4o", input_tokens=1, tags=tags)
        with pytest.raises(ValueError, match="tag"), tt.attributes(tags=tags):
            pass
    for bad in (NUL, SURROGATE):
        with pytest.raises(ValueError, match="agent"):
            tt.session(agent=bad, ledger=any_ledger)
        with pytest.raises(ValueError, match="step"), tt.step(bad):
            pass
        with pytest.raises(tt.InvalidUsage, match="model"):
            any_ledger.record_llm(provider="openai", model=bad, input_tokens=1)
        with pytest.raises(tt.InvalidUsage, match="name"):
            any_ledger.record_tool(bad)
    with tt.session(tags={"k": "v"}, ledger=any_ledger):
        any_ledger.record_llm(provider="openai", model="gpt-4o", input_tokens=1)
    assert tag_report_works(any_ledger) == {"v": 1}


def test_a_nul_stored_in_tags_before_they_were_refused_breaks_no_report(any_ledger: tt.Ledger) -> None:
    """A ledger written by an older version may hold one: its tag reports must still run."""
    any_ledger.store.write_events([to_row(UsageEvent(provider="openai", model="m", tags={"k": NUL}))])
    any_ledger.record(UsageEvent(provider="openai", model="m", tags={"k": "v"}))
    assert sum(tag_report_works(any_ledger).values()) == 2


@pytest.mark.parametrize("key", ["a%b", "100%", "%s", "a%%b"])
def test_a_percent_in_a_tag_key_reports(any_ledger: tt.Ledger, db_url: str, key: str) -> None:
    with tt.session(tags={key: "x"}, ledger=any_ledger):
        any_ledger.record_llm(provider="openai", model="gpt-4o", input_tokens=1)
    assert tag_report_works(any_ledger, key) == {"x": 1}
    filtered = report(any_ledger.store, by=("model",), where={f"tag.{key}": "x"})
    assert [r.calls for r in filtered.rows] == [1]
    result = CliRunner().invoke(
        cli.app, ["report", "--by", f"tag.{key}", "--where", f"tag.{key}=x", "--db", db_url], env={"COLUMNS": "200"}
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 0, result.output
    assert "x" in result.stdout
    with TestClient(create_app(any_ledger)) as c:
        r = c.get("/api/v1/report", params={"by": f"tag.{key}"})
        assert r.status_code == 200, r.text


def test_json_nested_10k_deep_is_a_400_with_a_message(client: TestClient) -> None:
    deep = b"[" * 10_000 + b"]" * 10_000
    r = client.post("/api/v1/events", content=deep, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "nests JSON too deeply" in r.json()["error"]["message"]
    body = b'{"model": "gpt-4o", "messages": ' + deep + b"}"
    g = client.post("/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
    assert g.status_code == 400
    assert "too deeply" in g.json()["error"]["message"]  # in OpenAI's error shape
    o = client.post("/v1/traces", content=deep, headers={"Content-Type": "application/json"})
    assert o.status_code == 400 and o.json()["message"]


def test_read_paths_answer_a_nul_with_a_4xx(client: TestClient, any_ledger: tt.Ledger) -> None:
    """Filters and ids are parameters: a NUL in one is a 400 (or no such session), never a 500."""
    post_json(client, "/api/v1/events", {"events": [event(session_id="s1", team="legal")]})
    r = client.get("/api/v1/report", params={"by": "team", "where": f"team={NUL}"})
    assert r.status_code == 400 and "NUL" in r.json()["error"]["message"]
    r = client.get("/api/v1/sessions", params={"team": NUL})
    assert r.status_code == 400 and "NUL" in r.json()["error"]["message"]
    r = client.get("/api/v1/sessions/s%001")
    assert r.status_code == 404
    with pytest.raises(ValueError, match="tag"):
        report(any_ledger.store, by=("tag.k\ud800",))
    assert client.get("/api/v1/sessions/s1").status_code == 200


def test_an_unexpected_failure_is_a_json_500(
    any_ledger: tt.Ledger, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug is answered in JSON (the gateway: in the provider's error shape), and logged."""
    from tokentrail.server import api, gateway

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(gateway, "_attribution", broken)
    monkeypatch.setattr(api.reports, "report", broken)
    app = create_app(any_ledger, upstreams={"openai": "http://127.0.0.1:9"})
    with TestClient(app, raise_server_exceptions=False) as c:
        g = c.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": []})
        assert g.status_code == 500 and g.json()["error"]["message"].startswith("tokentrail: internal error")
        r = c.get("/api/v1/report")
        assert r.status_code == 500 and r.json()["error"]["message"].startswith("internal error")
    assert "a bug" in caplog.text


def test_otlp_protobuf_refuses_a_nul_in_a_tag(client: TestClient, any_ledger: tt.Ledger) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    )

    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name = bytes(range(16)), bytes(range(8)), "chat"
    span.start_time_unix_nano = span.end_time_unix_nano = 1767225600000000000
    for k, v in (("gen_ai.operation.name", "chat"), ("gen_ai.request.model", "gpt-4o"), ("tokentrail.tag.k", NUL)):
        kv = span.attributes.add()
        kv.key, kv.value.string_value = k, v
    kv = span.attributes.add()
    kv.key, kv.value.int_value = "gen_ai.usage.input_tokens", 10
    r = client.post(
        "/v1/traces", content=request.SerializeToString(), headers={"Content-Type": "application/x-protobuf"}
    )
    assert r.status_code == 200
    answer = ExportTraceServiceResponse.FromString(r.content)
    assert answer.partial_success.rejected_spans == 1
    assert "contains a NUL" in answer.partial_success.error_message
    assert stored(any_ledger) == [] and tag_report_works(any_ledger) == {}
