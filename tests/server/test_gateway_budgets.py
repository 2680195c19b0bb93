"""Budgets through the gateway: a hard stop is a 402 the SDKs do not retry, a throttle a 429 with
Retry-After, each in the provider's own error format, before anything goes upstream."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx2
import openai
import pytest

import tokentrail as tt
from tests._events import stored
from tests._server import serving
from tokentrail.testing import FakeUpstream, Reply

M: Any = [{"role": "user", "content": "hello"}]


def test_hard_stop_is_402_and_not_retried(ledger: tt.Ledger, up: FakeUpstream) -> None:
    ledger.budgets.set("legal-cap", scope={"team": "legal"}, period="month", limit_usd="0.000001", action="block")
    with serving(ledger, up) as s:
        c = openai.OpenAI(
            base_url=s.url + "/v1", api_key="sk-test", default_headers={"X-Tokentrail-Team": "legal"}, max_retries=3
        )
        with pytest.raises(openai.APIStatusError) as err:
            c.chat.completions.create(model="gpt-4o-mini", messages=M, max_tokens=100)
        a = anthropic.Anthropic(base_url=s.url, api_key="sk-ant", default_headers={"X-Tokentrail-Team": "legal"})
        with pytest.raises(anthropic.APIStatusError) as aerr:
            a.messages.create(model="claude-sonnet-4-6", max_tokens=100, messages=M)
        # another team is not held by the legal budget
        other = openai.OpenAI(base_url=s.url + "/v1", api_key="sk-test", default_headers={"X-Tokentrail-Team": "cx"})
        other.chat.completions.create(model="gpt-4o-mini", messages=M, max_tokens=100)
        metrics = httpx2.get(s.url + "/metrics").text
    assert err.value.status_code == 402
    assert "legal-cap" in err.value.message and err.value.body["type"] == "insufficient_quota"  # type: ignore[index]
    assert aerr.value.status_code == 402 and aerr.value.body["error"]["type"] == "billing_error"  # type: ignore[index]
    assert len(up.requests) == 1  # only the other team's call went upstream
    assert 'tokentrail_requests_total{route="chat",status="402"} 1.0' in metrics  # one attempt: no retry
    assert [e.team for e in stored(ledger)] == ["cx"]


def test_throttle_is_429_with_retry_after(ledger: tt.Ledger, up: FakeUpstream) -> None:
    ledger.budgets.set("burn", scope={"agent": "looper"}, period="rolling:1m", limit_tokens=300, action="throttle")
    up.default = Reply(input_tokens=200, output_tokens=50)
    with serving(ledger, up) as s:
        c = openai.OpenAI(
            base_url=s.url + "/v1", api_key="sk-test", default_headers={"X-Tokentrail-Agent": "looper"}, max_retries=0
        )
        c.chat.completions.create(model="gpt-4o-mini", messages=M, max_tokens=20)
        with pytest.raises(openai.RateLimitError) as err:
            for _ in range(5):
                c.chat.completions.create(model="gpt-4o-mini", messages=M, max_tokens=20)
    assert err.value.status_code == 429
    retry = err.value.response.headers["retry-after"]
    assert retry.isdigit() and 1 <= int(retry) <= 60
    assert "burn" in err.value.message


def test_a_finished_stream_posts_and_a_cut_one_resolves(ledger: tt.Ledger, up: FakeUpstream) -> None:
    """Reservations never leak: a completed call posts, a client that leaves mid-stream resolves."""
    import time

    ledger.budgets.set("team-cap", scope={"team": "eng"}, period="day", limit_usd=100, action="block")
    up.push(Reply(input_tokens=100, output_tokens=10), Reply(text="w " * 40, stream_chunks=40, chunk_delay_s=0.05))
    with serving(ledger, up) as s:
        c = openai.OpenAI(base_url=s.url + "/v1", api_key="sk-test", default_headers={"X-Tokentrail-Team": "eng"})
        c.chat.completions.create(model="gpt-4o-mini", messages=M, max_tokens=50)
        stream = c.chat.completions.create(model="gpt-4o-mini", messages=M, max_tokens=50, stream=True)
        next(iter(stream))
        stream.close()
        for _ in range(100):
            if len(stored(ledger)) == 2:
                break
            time.sleep(0.05)
    ledger.budgets.flush()
    [status] = ledger.budgets.status("team-cap")
    assert status.reserved_usd == 0
    assert status.posted_usd == sum(e.cost_usd or 0 for e in stored(ledger))
