"""The request's prefix hash (migration 0016), read at metering time for the savings advisor: the
same system prompt and tools give the same hash whatever the user asks; never the text; stored,
hashed into the audit chain only when set (events of before still verify)."""

from __future__ import annotations

import anthropic
import openai

import tokentrail as tt
from tests._events import stored
from tokentrail.audit import verify
from tokentrail.events import V1_COLUMNS, UsageEvent, canonical_bytes, from_row, to_row, upgraded_row
from tokentrail.integrations.prefix import prefix_hash
from tokentrail.integrations.wire import ANTHROPIC_MESSAGES, GEMINI, OPENAI_CHAT, OPENAI_RESPONSES
from tokentrail.testing import FakeUpstream, capture_events

SYSTEM = "You are a careful contracts analyst. Follow the house style. " * 30
TOOLS = [{"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}}]


def _chat(user: str, system: str = SYSTEM, model: str = "gpt-4o") -> dict[str, object]:
    return {
        "model": model,
        "tools": TOOLS,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
    }


def test_the_same_prefix_hashes_alike_and_never_holds_the_text() -> None:
    a, b = prefix_hash(OPENAI_CHAT, _chat("first question")), prefix_hash(OPENAI_CHAT, _chat("another one"))
    assert a is not None and b is not None
    assert a.split(":")[0] == b.split(":")[0]
    assert prefix_hash(OPENAI_CHAT, _chat("first question", system=SYSTEM + "!")) != a
    assert prefix_hash(OPENAI_CHAT, _chat("first question", model="gpt-4o-mini")) != a  # caches are per model
    h, permille = a.split(":")
    assert len(h) == 24 and int(h, 16) >= 0 and 900 < int(permille) <= 1000
    assert "careful" not in a
    # no system prompt nor tools: no prefix
    assert prefix_hash(OPENAI_CHAT, {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}) is None
    assert prefix_hash(OPENAI_CHAT, {"messages": "junk"}) is None  # hostile shapes read as nothing
    deep: list[object] = []
    for _ in range(100_000):
        deep = [deep]
    assert prefix_hash(OPENAI_CHAT, {"instructions": "x", "tools": deep}) is None
    assert prefix_hash(OPENAI_RESPONSES, {"instructions": SYSTEM, "input": "q"}) is not None
    assert prefix_hash(ANTHROPIC_MESSAGES, {"system": SYSTEM, "messages": [{"role": "user", "content": "q"}]})
    assert prefix_hash(GEMINI, {"systemInstruction": {"parts": [{"text": SYSTEM}]}, "contents": []})


def test_old_events_keep_their_hash() -> None:
    row = to_row(UsageEvent(parent_session_id="p"))
    assert canonical_bytes(upgraded_row(row[:-1])) == canonical_bytes(row[:-1])  # before 0016: 46 columns
    assert canonical_bytes(row) == canonical_bytes(row[:-1])
    v1 = to_row(UsageEvent())[:V1_COLUMNS]
    assert canonical_bytes(upgraded_row(v1)) == canonical_bytes(v1)
    marked = UsageEvent(prefix_hash="ab" * 12 + ":500")
    assert from_row(to_row(marked)).prefix_hash == "ab" * 12 + ":500"
    assert canonical_bytes(to_row(marked)) != canonical_bytes(
        to_row(UsageEvent(event_id=marked.event_id, ts=marked.ts))
    )


def test_sdks_record_the_prefix_hash(up: FakeUpstream, any_ledger: tt.Ledger) -> None:
    oa = tt.wrap(openai.OpenAI(base_url=up.openai_base_url, api_key="sk-test", max_retries=0), ledger=any_ledger)
    an = tt.wrap(
        anthropic.Anthropic(base_url=up.anthropic_base_url, api_key="sk-test", max_retries=0), ledger=any_ledger
    )
    with capture_events() as events:
        for q in ("one", "two"):
            oa.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}]
            )
        oa.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "no system"}])
        an.messages.create(
            model="claude-sonnet-4-5", max_tokens=64, system=SYSTEM, messages=[{"role": "user", "content": "hi"}]
        )
    first, second, bare, claude = events
    assert first.prefix_hash and second.prefix_hash and claude.prefix_hash
    assert first.prefix_hash.split(":")[0] == second.prefix_hash.split(":")[0] != claude.prefix_hash.split(":")[0]
    assert bare.prefix_hash is None
    by_id = {e.event_id: e for e in stored(any_ledger)}
    assert by_id[first.event_id].prefix_hash == first.prefix_hash and by_id[bare.event_id].prefix_hash is None
    v = verify(any_ledger.store)
    assert v.problem is None and v.count == 4


def test_a_huge_body_is_measured_not_copied_and_key_order_does_not_matter() -> None:
    import tracemalloc

    from tokentrail.integrations.wire import system_permille

    body = _chat("q" * 8_000_000)
    tracemalloc.start()
    try:
        h = prefix_hash(OPENAI_CHAT, body)
        share = system_permille(OPENAI_CHAT, body)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000  # the 8 MB user turn is never serialised nor encoded again
    assert h is not None and h.endswith(":0") and share == 0
    short = prefix_hash(OPENAI_CHAT, _chat("short"))
    assert short is not None and h.split(":")[0] == short.split(":")[0]
    reordered = {"messages": body["messages"], "tools": [{"function": TOOLS[0]["function"], "type": "function"}]}
    assert prefix_hash(OPENAI_CHAT, {**reordered, "model": "gpt-4o"}) == h
