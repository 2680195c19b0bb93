"""`GET /metrics`: tokens, cost and requests this process metered, the gateway latency histograms,
budget gauges read from the ledger, and never a session or user label."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx2
import openai
from prometheus_client.parser import text_string_to_metric_families

import tokentrail as tt
from tests._server import serving
from tokentrail.server import create_app
from tokentrail.server.metrics import MAX_LABEL_VALUES, OTHER
from tokentrail.testing import FakeUpstream, Reply


def test_metrics_after_gateway_and_ingest(ledger: tt.Ledger) -> None:
    ledger.budgets.set("legal-day", scope={"team": "legal"}, period="day", limit_usd=1)
    with FakeUpstream() as up, serving(ledger, up) as s:
        up.push(Reply(input_tokens=1000, cached_tokens=200, output_tokens=50))
        headers = {
            "X-Tokentrail-Team": "legal",
            "X-Tokentrail-Agent": "a1",
            "X-Tokentrail-Session": "s1",
            "X-Tokentrail-User": "u1",
        }
        c = openai.OpenAI(base_url=s.url + "/v1", api_key="sk-test", default_headers=headers)
        c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        event = {
            "event_id": str(uuid.uuid4()),
            "provider": "anthropic",
            "model": "claude-haiku-4-5",
            "input_tokens": 10,
            "output_tokens": 5,
            "team": "cx",
        }
        assert httpx2.post(s.url + "/api/v1/events", json=[event]).status_code == 200
        text = httpx2.get(s.url + "/metrics").text
    samples = {
        (f.name, sm.name, tuple(sorted(sm.labels.items()))): sm.value
        for f in text_string_to_metric_families(text)
        for sm in f.samples
    }
    legal = (("agent", "a1"), ("model", "gpt-4o-mini"), ("provider", "openai"), ("team", "legal"))
    assert samples[("tokentrail_tokens", "tokentrail_tokens_total", (*legal[:3], legal[3], ("type", "input")))] == 1000
    assert samples[("tokentrail_tokens", "tokentrail_tokens_total", (*legal, ("type", "cache_read")))] == 200
    assert samples[("tokentrail_cost_usd", "tokentrail_cost_usd_total", legal)] > 0
    cx = (("agent", ""), ("model", "claude-haiku-4-5"), ("provider", "anthropic"), ("team", "cx"))
    assert samples[("tokentrail_tokens", "tokentrail_tokens_total", (*cx, ("type", "output")))] == 5
    assert samples[("tokentrail_requests", "tokentrail_requests_total", (("route", "chat"), ("status", "200")))] == 1
    assert samples[("tokentrail_requests", "tokentrail_requests_total", (("route", "events"), ("status", "200")))] == 1
    assert any(k[1] == "tokentrail_gateway_request_duration_seconds_count" and v == 1 for k, v in samples.items())
    assert any(k[1] == "tokentrail_gateway_overhead_seconds_bucket" for k in samples)
    ratio = samples[("tokentrail_budget_used_ratio", "tokentrail_budget_used_ratio", (("budget", "legal-day"),))]
    assert 0 < ratio < 1
    assert "session" not in text and "u1" not in text and "s1" not in text.replace("seconds", "")


# -- bounded cardinality (issue 9, item 17) ---------------------------------------------------------


def _series(text: str, family: str) -> list[dict[str, str]]:
    return [sm.labels for f in text_string_to_metric_families(text) if f.name == family for sm in f.samples]


def test_request_labels_stay_few_whatever_paths_are_asked_for(ledger: tt.Ledger) -> None:
    """Thousands of distinct 404 paths (own routes and gateway pass-through alike) add no series:
    a route is labelled by what it is, never by its path."""
    app = create_app(ledger)

    async def get(path: str) -> int:
        sent: list[Any] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Any) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": "GET",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": [],
            "scheme": "http",
            "server": ("testserver", 80),
            "root_path": "",
            "http_version": "1.1",
        }
        await app(scope, receive, send)
        return int(sent[0]["status"])

    async def run() -> list[int]:
        return [await get(f"/{where}/{uuid.uuid4().hex}") for where in ("dashboard", "api/v1") for _ in range(1500)]

    assert set(asyncio.run(run())) == {404}
    series = _series(app.state.metrics.exposition().decode(), "tokentrail_requests")
    assert len(series) <= 3 and {s["route"] for s in series} <= {"dashboard", "api"}
    assert not any(len(s["route"]) > 20 for s in series)


def test_caller_given_labels_are_bounded_with_an_other_bucket(ledger: tt.Ledger) -> None:
    """3,000 distinct agents, teams and models: each label keeps at most MAX_LABEL_VALUES values,
    the rest counted under `_other`, and no token is lost from the totals."""
    n = 3000
    events = [
        {
            "event_id": str(uuid.uuid4()),
            "provider": "openai",
            "model": f"model-{i}",
            "input_tokens": 10,
            "output_tokens": 1,
            "team": f"team-{i}",
            "agent": f"agent-{i}",
        }
        for i in range(n)
    ]
    with serving(ledger) as s:
        r = httpx2.post(s.url + "/api/v1/events", json={"events": events}, timeout=120)
        assert r.status_code == 200
        text = httpx2.get(s.url + "/metrics").text
    series = [x for x in _series(text, "tokentrail_tokens") if x["type"] == "input"]
    samples = [
        sm.value
        for f in text_string_to_metric_families(text)
        if f.name == "tokentrail_tokens"
        for sm in f.samples
        if sm.labels["type"] == "input"
    ]
    for label in ("agent", "team", "model"):
        values = {x[label] for x in series}
        assert len(values) <= MAX_LABEL_VALUES + 1 and OTHER in values
    assert len(series) <= MAX_LABEL_VALUES + 1
    assert sum(samples) == 10 * n
    assert len(text) < 1_000_000
