"""What the anomaly detectors read at metering time (migration 0013): the request's output limit,
whether the call stopped on it, the system/developer share of the prompt; stored and hashed so that
events of before still verify."""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest

import tokentrail as tt
from tests._events import stored
from tokentrail.audit import verify
from tokentrail.events import (
    COLUMNS,
    V1_COLUMNS,
    UsageEvent,
    canonical_bytes,
    from_row,
    to_row,
    upgraded_row,
)
from tokentrail.integrations.wire import (
    ANTHROPIC_MESSAGES,
    GEMINI,
    OPENAI_CHAT,
    OPENAI_RESPONSES,
    Accumulator,
    output_limit,
    system_permille,
)
from tokentrail.testing import FakeUpstream, capture_events


@pytest.mark.parametrize(
    ("body", "limit"),
    [
        ({"max_tokens": 100}, 100),
        ({"max_output_tokens": 50}, 50),
        ({"max_completion_tokens": 7}, 7),
        ({"generationConfig": {"maxOutputTokens": 9}}, 9),
        ({"generation_config": {"max_output_tokens": 11}}, 11),
        ({}, -1),
        ({"max_tokens": "100"}, -1),  # not a number: no limit the provider would honour
        ({"max_tokens": True}, -1),
        ({"max_tokens": None}, -1),
    ],
)
def test_output_limit(body: dict[str, Any], limit: int) -> None:
    assert output_limit(body) == limit


def test_system_share_per_provider() -> None:
    sys, user = "s" * 800, "u" * 200
    chat = {"messages": [{"role": "system", "content": sys}, {"role": "user", "content": user}]}
    assert system_permille(OPENAI_CHAT, chat) == 800
    dev = {"messages": [{"role": "developer", "content": sys}, {"role": "user", "content": user}]}
    assert system_permille(OPENAI_CHAT, dev) == 800
    assert system_permille(OPENAI_RESPONSES, {"instructions": sys, "input": user}) == 800
    assert system_permille(ANTHROPIC_MESSAGES, {"system": sys, "messages": [{"role": "user", "content": user}]}) > 700
    gem = {"systemInstruction": {"parts": [{"text": sys}]}, "contents": [{"parts": [{"text": user}]}]}
    assert system_permille(GEMINI, gem) > 700
    assert system_permille(OPENAI_CHAT, {"messages": [{"role": "user", "content": user}]}) == 0
    assert system_permille(OPENAI_CHAT, {}) == 0
    assert system_permille(OPENAI_CHAT, {"messages": "junk"}) == 0  # hostile shapes read as nothing


def test_stopped_on_limit_bodies_and_streams() -> None:
    cases: list[tuple[Any, Any, bool]] = [
        (OPENAI_CHAT, {"choices": [{"finish_reason": "length"}]}, True),
        (OPENAI_CHAT, {"choices": [{"finish_reason": "stop"}]}, False),
        (ANTHROPIC_MESSAGES, {"stop_reason": "max_tokens", "content": []}, True),
        (ANTHROPIC_MESSAGES, {"stop_reason": "end_turn", "content": []}, False),
        (GEMINI, {"candidates": [{"finishReason": "MAX_TOKENS"}]}, True),
        (OPENAI_RESPONSES, {"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}}, True),
    ]
    for route, body, want in cases:
        acc = Accumulator(route)
        acc.body(body)
        assert acc.stopped_on_limit is want, (route, body)
    acc = Accumulator(OPENAI_CHAT)
    acc.event(None, {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]})
    assert acc.stopped_on_limit
    acc = Accumulator(ANTHROPIC_MESSAGES)
    acc.event("message_delta", {"type": "message_delta", "delta": {"stop_reason": "max_tokens"}})
    assert acc.stopped_on_limit
    acc = Accumulator(OPENAI_RESPONSES)
    incomplete = {"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}}
    acc.event(None, {"type": "response.incomplete", "response": incomplete})
    assert acc.stopped_on_limit
    acc = Accumulator(GEMINI)
    acc.event(None, {"candidates": [{"finishReason": "MAX_TOKENS"}]})
    assert acc.stopped_on_limit


def test_new_columns_round_trip_and_old_hashes_hold() -> None:
    e = UsageEvent(output_limit=-1, stopped_on_limit=True, system_permille=850)
    row = to_row(e)
    assert len(row) == len(COLUMNS)
    back = from_row(row)
    assert (back.output_limit, back.stopped_on_limit, back.system_permille) == (-1, True, 850)
    # an event of before 0013 with usage_estimated set: hashed as 42 columns, read back with all of them
    old = to_row(UsageEvent(usage_estimated=True))[: V1_COLUMNS + 1]
    assert canonical_bytes(upgraded_row(old)) == canonical_bytes(old)
    # an event of before 0010: 41 columns
    v1 = to_row(UsageEvent())[:V1_COLUMNS]
    assert canonical_bytes(upgraded_row(v1)) == canonical_bytes(v1)
    # a set new column is hashed (changing it breaks the chain)
    assert canonical_bytes(to_row(e)) != canonical_bytes(to_row(UsageEvent(event_id=e.event_id, ts=e.ts)))


def test_sdks_record_the_request_facts(up: FakeUpstream, any_ledger: tt.Ledger) -> None:
    ledger = any_ledger
    oa = tt.wrap(openai.OpenAI(base_url=up.openai_base_url, api_key="sk-test", max_retries=0), ledger=ledger)
    an = tt.wrap(anthropic.Anthropic(base_url=up.anthropic_base_url, api_key="sk-test", max_retries=0), ledger=ledger)
    sys = "You are a careful assistant. " * 40
    with capture_events() as events:
        oa.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "system", "content": sys}, {"role": "user", "content": "hi"}],
        )
        oa.chat.completions.create(model="gpt-4o-mini", max_tokens=64, messages=[{"role": "user", "content": "hi"}])
        an.messages.create(
            model="claude-sonnet-4-5", max_tokens=128, system=sys, messages=[{"role": "user", "content": "hi"}]
        )
    first, second, third = events
    assert (first.output_limit, second.output_limit, third.output_limit) == (-1, 64, 128)
    assert first.system_permille > 900 and second.system_permille == 0 and third.system_permille > 900
    assert not any(e.stopped_on_limit for e in events)
    by_id = {e.event_id: e for e in stored(ledger)}
    assert by_id[first.event_id].output_limit == -1 and by_id[third.event_id].system_permille > 900
    assert by_id[second.event_id].output_limit == 64
    v = verify(ledger.store)
    assert v.problem is None and v.count == 3
