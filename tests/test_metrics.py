"""`GET /metrics`: tokens, cost and requests this process metered, the gateway latency histograms,
budget gauges read from the ledger, and never a session or user label."""

from __future__ import annotations

import uuid

import httpx2
import openai
from prometheus_client.parser import text_string_to_metric_families

import tokentrail as tt
from tests._server import _collect_clients, serving  # noqa: F401 (an autouse fixture)
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
