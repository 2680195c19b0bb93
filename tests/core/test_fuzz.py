"""Hypothesis over what tokentrail is handed from outside: provider usage payloads, the arguments of
record_llm / record_tool, response bytes and decoded wire events, and batches for the store.

Each property runs a few dozen examples (the whole file takes seconds, not minutes); a failure
prints the smallest example hypothesis could find.
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tokentrail as tt
from tests._doubles import Outage
from tokentrail.events import COLUMNS, MAX_TAGS, MAX_TEXT, UsageEvent, from_row
from tokentrail.integrations.exchange import Exchange
from tokentrail.integrations.wire import (
    ANTHROPIC_MESSAGES,
    GEMINI,
    OPENAI_CHAT,
    OPENAI_EMBEDDINGS,
    OPENAI_RESPONSES,
    Accumulator,
    Route,
    SSEParser,
)
from tokentrail.pricing import PriceBook
from tokentrail.testing import capture_events
from tokentrail.usage import (
    MAX_TOKENS,
    Usage,
    UsageProblem,
    from_anthropic,
    from_gemini,
    from_openai_chat,
    from_openai_responses,
)

ROUTES = [OPENAI_CHAT, OPENAI_RESPONSES, OPENAI_EMBEDDINGS, ANTHROPIC_MESSAGES, GEMINI]
FEW = settings(max_examples=60, deadline=None)
SOME = settings(max_examples=150, deadline=None)

# -- strategies -------------------------------------------------------------------------------------

# Counts as providers send them, as they should never be sent, and at the edges of what is sane.
counts = st.one_of(
    st.integers(min_value=0, max_value=5_000),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, MAX_TOKENS, MAX_TOKENS + 1, 2**63]),
    st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4),
    st.none(),
)
USAGE_KEYS = [
    "prompt_tokens",
    "completion_tokens",
    "prompt_tokens_details",
    "completion_tokens_details",
    "cached_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "audio_tokens",
    "input_tokens",
    "output_tokens",
    "input_tokens_details",
    "output_tokens_details",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "cache_creation",
    "ephemeral_1h_input_tokens",
    "thinking_tokens",
    "promptTokenCount",
    "prompt_token_count",
    "candidatesTokenCount",
    "candidates_token_count",
    "thoughtsTokenCount",
    "thoughts_token_count",
    "cachedContentTokenCount",
    "cached_content_token_count",
    "toolUsePromptTokenCount",
]
usage_payloads = st.one_of(
    st.recursive(counts, lambda kids: st.dictionaries(st.sampled_from(USAGE_KEYS), kids, max_size=7), max_leaves=14),
    st.lists(counts, max_size=3),
)

# Wire events: JSON built from the keys and type names the accumulators look for, so that examples
# reach deep into each provider's branch rather than stopping at "not a dict".
WIRE_KEYS = [
    *USAGE_KEYS,
    "type",
    "index",
    "id",
    "call_id",
    "name",
    "model",
    "modelVersion",
    "usage",
    "usageMetadata",
    "error",
    "code",
    "status",
    "choices",
    "delta",
    "message",
    "content",
    "refusal",
    "tool_calls",
    "function",
    "arguments",
    "content_block",
    "input",
    "partial_json",
    "text",
    "output",
    "output_index",
    "item",
    "response",
    "candidates",
    "finishReason",
    "parts",
    "functionCall",
    "args",
    "thought",
]
WIRE_TYPES = [
    "message_start",
    "message_delta",
    "message_stop",
    "content_block_start",
    "content_block_delta",
    "error",
    "tool_use",
    "server_tool_use",
    "input_json_delta",
    "text_delta",
    "text",
    "function_call",
    "response.completed",
    "response.incomplete",
    "response.failed",
    "response.output_item.done",
    "response.output_text.delta",
]
scalars = st.one_of(counts, st.sampled_from(WIRE_TYPES), st.text(max_size=6))
wire_json = st.recursive(
    scalars,
    lambda kids: st.one_of(
        st.lists(kids, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(WIRE_KEYS), st.text(max_size=3)), kids, max_size=6),
    ),
    max_leaves=30,
)


# -- usage normalisers ------------------------------------------------------------------------------


def _expected_count(raw: object, *path: str) -> int:
    """The spec of one count: absent, null or under a non-object is 0; else a sane int, else a problem."""
    value: Any = raw
    for key in path:
        if not isinstance(value, Mapping):
            return 0
        value = value.get(key)
    if value is None:
        return 0
    if type(value) is not int or not 0 <= value <= MAX_TOKENS:
        raise UsageProblem("bad count")
    return value


def _gemini_count(raw: Mapping[str, Any], camel: str, snake: str) -> int:
    return _expected_count(raw, camel) if camel in raw else _expected_count(raw, snake)


def _expected(name: str, raw: object) -> Usage:
    """What each normaliser must return, written from the rules in docs/rules.md §Usage (not from its code)."""
    if not isinstance(raw, Mapping):
        raise UsageProblem("not_an_object")
    c = _expected_count
    if name == "openai_chat":
        u = Usage(
            input_tokens=c(raw, "prompt_tokens"),
            output_tokens=c(raw, "completion_tokens"),
            cache_read_tokens=c(raw, "prompt_tokens_details", "cached_tokens"),
            cache_write_tokens=c(raw, "prompt_tokens_details", "cache_write_tokens"),
            reasoning_tokens=c(raw, "completion_tokens_details", "reasoning_tokens"),
            input_audio_tokens=c(raw, "prompt_tokens_details", "audio_tokens"),
            output_audio_tokens=c(raw, "completion_tokens_details", "audio_tokens"),
        )
    elif name == "openai_responses":
        u = Usage(
            input_tokens=c(raw, "input_tokens"),
            output_tokens=c(raw, "output_tokens"),
            cache_read_tokens=c(raw, "input_tokens_details", "cached_tokens"),
            cache_write_tokens=c(raw, "input_tokens_details", "cache_write_tokens"),
            reasoning_tokens=c(raw, "output_tokens_details", "reasoning_tokens"),
        )
    elif name == "anthropic":
        write, read = c(raw, "cache_creation_input_tokens"), c(raw, "cache_read_input_tokens")
        u = Usage(
            input_tokens=c(raw, "input_tokens") + write + read,  # Anthropic's input excludes the cache
            output_tokens=c(raw, "output_tokens"),
            cache_read_tokens=read,
            cache_write_tokens=write,
            cache_write_1h_tokens=c(raw, "cache_creation", "ephemeral_1h_input_tokens"),
            reasoning_tokens=c(raw, "output_tokens_details", "thinking_tokens"),
        )
    else:
        g = _gemini_count
        thoughts = g(raw, "thoughtsTokenCount", "thoughts_token_count")
        u = Usage(
            input_tokens=g(raw, "promptTokenCount", "prompt_token_count")
            + g(raw, "toolUsePromptTokenCount", "tool_use_prompt_token_count"),
            output_tokens=g(raw, "candidatesTokenCount", "candidates_token_count") + thoughts,
            cache_read_tokens=g(raw, "cachedContentTokenCount", "cached_content_token_count"),
            reasoning_tokens=thoughts,
        )
    if u.problem() is not None:
        raise UsageProblem("impossible")
    return u


NORMALISERS: dict[str, Callable[[object], Usage]] = {
    "openai_chat": from_openai_chat,
    "openai_responses": from_openai_responses,
    "anthropic": from_anthropic,
    "gemini": from_gemini,
}


@pytest.mark.parametrize("name", list(NORMALISERS))
def test_usage_normalisers_accept_exactly_the_possible_payloads_and_never_clamp(name: str) -> None:
    normalise = NORMALISERS[name]

    @SOME
    @given(raw=usage_payloads)
    def check(raw: object) -> None:
        try:
            want: Usage | None = _expected(name, raw)
        except UsageProblem:
            want = None
        try:
            got = normalise(raw)
        except UsageProblem as e:  # the only exception a payload may cause, with a short reason
            assert want is None, f"{raw!r} is possible ({want}) but was refused: {e.reason}"
            assert isinstance(e.reason, str) and 0 < len(e.reason) < 80
            return
        assert want is not None, f"{raw!r} is impossible but was accepted as {got}"
        assert got == want  # exactly the counts sent: nothing clamped, nothing coerced
        assert got.problem() is None
        assert all(type(getattr(got, f)) is int for f in got.__slots__)

    check()


# -- record_llm / record_tool -----------------------------------------------------------------------

MODELS = ["gpt-4o", "gpt-4o-mini", "claude-sonnet-4-6", "gemini-2.5-flash", "acme-unknown-model"]
names = st.one_of(st.sampled_from(MODELS), st.text(max_size=5), st.text(min_size=250, max_size=2_000))
tag_maps = st.dictionaries(
    st.one_of(st.text(max_size=300), st.integers()),
    st.one_of(st.text(max_size=600), st.integers(), st.none(), st.booleans()),
    max_size=90,
)
tool_args = st.one_of(st.none(), wire_json, st.text(max_size=40))


@pytest.fixture
def fuzz_ledger(tmp_path: Path) -> Iterator[tt.Ledger]:
    led = tt.Ledger(f"sqlite:///{tmp_path / 'fuzz.db'}", prices=PriceBook(overrides=""), spool=tmp_path / "spool")
    yield led
    led.close()


def _stored(ledger: tt.Ledger, ids: list[str]) -> dict[str, UsageEvent]:
    """The stored events among `ids` (read whole: a PostgreSQL ledger refuses a non-UUID in a query)."""
    ledger.flush(timeout=30)
    wanted = set(ids)
    rows = ledger.store.query(f"SELECT {', '.join(COLUMNS)} FROM events")
    return {r[0]: from_row(r) for r in rows if r[0] in wanted}


def _check_bounded(e: UsageEvent) -> None:
    for name in ("model", "tool_name", "tool_call_id"):
        value = getattr(e, name)
        assert value is None or len(value) <= MAX_TEXT, f"{name} is {len(value)} characters"
    assert len(e.tags) <= MAX_TAGS
    assert all(
        type(k) is str and type(v) is str and len(k) <= MAX_TEXT and len(v) <= MAX_TEXT for k, v in e.tags.items()
    )


def test_record_llm_raises_only_invalid_usage_and_records_every_call_it_accepts(fuzz_ledger: tt.Ledger) -> None:
    accepted: list[UsageEvent] = []

    @SOME
    @given(
        provider=st.one_of(
            st.sampled_from(["openai", "anthropic", "google", "OpenAI ", "gemini"]), st.text(max_size=8)
        ),
        model=names,
        tokens=st.fixed_dictionaries(
            {},
            optional={
                k: counts
                for k in (
                    "input_tokens",
                    "output_tokens",
                    "cache_read_tokens",
                    "cache_write_tokens",
                    "reasoning_tokens",
                )
            },
        ),
        kind=st.sampled_from(["llm", "embedding", "tool", "adjustment", ""]),
        tags=st.one_of(st.none(), tag_maps),
        tool_calls=st.one_of(
            st.none(), st.lists(st.tuples(st.none() | st.text(max_size=8), names, tool_args), max_size=3)
        ),
        latency_ms=st.one_of(st.none(), st.floats(min_value=0, max_value=1e7)),
        streamed=st.booleans(),
    )
    def check(
        provider: str,
        model: str,
        tokens: dict[str, Any],
        kind: str,
        tags: dict[Any, Any] | None,
        tool_calls: list[tuple[str | None, str, Any]] | None,
        latency_ms: float | None,
        streamed: bool,
    ) -> None:
        try:
            e = fuzz_ledger.record_llm(
                provider=provider,
                model=model,
                kind=kind,
                tags=tags,
                tool_calls=tool_calls,
                latency_ms=latency_ms,
                streamed=streamed,
                **tokens,
            )
        except tt.InvalidUsage as err:
            assert str(err)
            return
        assert e.status == "ok" and e.kind == kind
        for k, v in tokens.items():  # accepted counts are stored as given: never clamped or coerced
            assert getattr(e, k) == v and type(v) is int
        if e.cost_usd is None:  # unpriced: no price fields at all
            assert e.price_version is None and e.unit_prices is None
        else:
            assert e.cost_usd >= 0 and e.price_version and e.price_source
        _check_bounded(e)
        accepted.append(e)

    check()
    stored = _stored(fuzz_ledger, [e.event_id for e in accepted])
    assert set(stored) == {e.event_id for e in accepted}
    for e in accepted:
        s = stored[e.event_id]
        assert (s.model, s.input_tokens, s.output_tokens, s.cost_usd, s.tags) == (
            e.model,
            e.input_tokens,
            e.output_tokens,
            e.cost_usd,
            dict(e.tags),
        )


def test_record_tool_raises_only_invalid_usage_and_records_every_run_it_accepts(fuzz_ledger: tt.Ledger) -> None:
    accepted: list[UsageEvent] = []

    @SOME
    @given(
        name=st.one_of(names, st.integers(), st.none()),
        args=tool_args,
        cost=st.one_of(
            st.none(),
            st.decimals(allow_nan=True, allow_infinity=True),
            st.floats(allow_nan=True),
            st.integers(min_value=-(2**70), max_value=2**70),
            st.text(max_size=8),
            st.booleans(),
        ),
        latency_ms=st.one_of(
            st.none(), st.floats(allow_nan=False, allow_infinity=False), st.integers(), st.text(max_size=3)
        ),
        tool_call_id=st.one_of(st.none(), names),
        tags=st.one_of(st.none(), tag_maps),
    )
    def check(name: Any, args: Any, cost: Any, latency_ms: Any, tool_call_id: str | None, tags: Any) -> None:
        try:
            e = fuzz_ledger.record_tool(
                name, args, cost_usd=cost, latency_ms=latency_ms, tool_call_id=tool_call_id, tags=tags
            )
        except tt.InvalidUsage as err:
            assert str(err)
            return
        assert e.kind == "tool" and e.tool_args_hash
        assert e.cost_usd is None or (e.cost_usd.is_finite() and 0 <= e.cost_usd <= 1_000_000)
        assert e.latency_ms is None or (math.isfinite(e.latency_ms) and e.latency_ms >= 0)
        _check_bounded(e)
        accepted.append(e)

    check()
    stored = _stored(fuzz_ledger, [e.event_id for e in accepted])
    assert set(stored) == {e.event_id for e in accepted}
    assert all(stored[e.event_id].cost_usd == e.cost_usd for e in accepted)


# -- the wire: SSE parser, accumulators and the whole exchange ---------------------------------------

sse_lines = st.lists(
    st.one_of(
        st.sampled_from(["", "data: [DONE]", ": keep-alive", "event: message_delta", "data:", "retry: 10"]),
        st.builds(lambda v: "data: " + json.dumps(v), wire_json),
        st.text(max_size=12),
    ),
    max_size=12,
)
sse_bytes = st.one_of(
    st.binary(max_size=300),
    st.tuples(sse_lines, st.sampled_from(["\n", "\r\n", "\r"])).map(lambda t: t[1].join(t[0]).encode()),
)


def _parse(chunks: list[bytes]) -> tuple[list[tuple[bytes, str | None, str]], bytes]:
    p = SSEParser()
    events = [e for c in chunks for e in p.feed(c)]
    return events + p.flush(), p.tail()


@SOME
@given(data=sse_bytes, cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_the_sse_parser_never_raises_and_gives_the_same_events_however_the_bytes_are_split(
    data: bytes, cuts: list[int]
) -> None:
    points = sorted({min(c, len(data)) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    whole = _parse([data])
    assert _parse(chunks) == whole
    assert _parse([bytes([b]) for b in data]) == whole  # one byte at a time, "\r" | "\n" split included


@SOME
@given(
    route=st.sampled_from(ROUTES),
    body=st.one_of(st.none(), wire_json),
    events=st.lists(st.tuples(st.one_of(st.none(), st.sampled_from(WIRE_TYPES)), wire_json), max_size=8),
    capture=st.booleans(),
)
def test_accumulators_never_raise_on_any_decoded_json(
    route: Route, body: Any, events: list[tuple[str | None, Any]], capture: bool
) -> None:
    acc = Accumulator(route, capture=capture)
    for name, data in events:
        acc.event(name, data)
    if body is not None:
        acc.body(body)
    usage, problem = acc.usage()
    assert usage is None or usage.problem() is None
    assert problem is None or isinstance(problem, str)
    for tc in acc.tool_calls():
        assert isinstance(tc.name, str) and len(tc.args_hash) == 16
    assert all(isinstance(n, str) and isinstance(a, str) for n, a in acc.tool_call_texts())
    assert all(isinstance(t, str) for t in acc.text_parts)


@pytest.fixture
def capture_ledger(tmp_path: Path) -> Iterator[tt.Ledger]:
    led = tt.Ledger(
        f"sqlite:///{tmp_path / 'wire.db'}", prices=PriceBook(overrides=""), capture_content=True, spool=tmp_path / "sp"
    )
    yield led
    led.close()


def test_an_exchange_fed_arbitrary_response_bytes_records_one_event_and_never_needs_its_safety_net(
    capture_ledger: tt.Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    """The try/except blocks of Exchange are a last resort; no input should reach them."""
    recorded: list[UsageEvent] = []

    @SOME
    @given(
        route=st.sampled_from(ROUTES),
        request=st.one_of(st.none(), wire_json),
        status=st.sampled_from([200, 200, 400, 401, 429, 500]),
        sse=st.booleans(),
        data=sse_bytes,
        cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=5),
        ending=st.sampled_from(["done", "error", "cancelled"]),
    )
    def check(route: Route, request: Any, status: int, sse: bool, data: bytes, cuts: list[int], ending: str) -> None:
        raw = json.dumps(request).encode() if request is not None else None
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="tokentrail"), capture_events() as events:
            ex = Exchange(
                capture_ledger, route, request, path="/v1/models/gemini-2.5-flash:generateContent", raw_body=raw
            )
            ex.prepared_body()
            ex.response(status, "text/event-stream" if sse else "application/json")
            points = sorted({min(c, len(data)) for c in cuts})
            out = b""
            for a, b in zip([0, *points], [*points, len(data)], strict=True):
                out += ex.chunk(data[a:b])
            out += ex.stream_tail()
            if not ex.hide_usage_chunk:
                assert out == data  # the caller gets exactly the bytes the provider sent
            if ending == "done":
                ex.finish()
            elif ending == "error":
                ex.finish(error=TimeoutError("read timed out"))
            else:
                ex.finish(cancelled=True)
            ex.finish()  # a second end records nothing more
        assert len(events) == 1, "one call is one event"
        problems = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
        assert not problems, [r.getMessage() for r in problems]
        e = events[0]
        assert e.status in ("ok", "error", "cancelled") or e.status.startswith("invalid_usage:")
        if e.content is not None:
            assert set(json.loads(e.content)) == {"prompt", "completion"}
        recorded.append(e)

    check()
    stored = _stored(capture_ledger, [e.event_id for e in recorded])
    assert set(stored) == {e.event_id for e in recorded}


# -- the store's batch path, both backends -----------------------------------------------------------

OK_TEXT = st.text(max_size=40)  # NUL included: PostgreSQL stores it as U+FFFD, SQLite as it is


@st.composite
def batch_events(draw: st.DrawFn, pg: bool = False) -> tuple[UsageEvent, str]:
    """One event and what the store must do with it: 'keep', 'refuse' (on every backend),
    'refuse-pg' (PostgreSQL only), or 'ledger' (the writer itself cannot serialise it)."""
    base: dict[str, Any] = {
        "provider": draw(st.sampled_from(["openai", "anthropic", "google"])),
        "model": draw(OK_TEXT),
        "input_tokens": draw(st.integers(min_value=0, max_value=10**6)),
        "tags": draw(st.dictionaries(st.text(min_size=1, max_size=8), OK_TEXT, max_size=3)),
        "note": draw(st.none() | OK_TEXT),
        "content": draw(st.none() | st.text(max_size=400)),
        "session_id": draw(st.none() | OK_TEXT),
    }
    fate = draw(
        st.sampled_from(["keep", "keep", "keep", "null-kind", "null-status", "overflow", "uuid", "naive", "lat"])
    )
    if fate == "null-kind":
        return UsageEvent(kind=None, **base), "refuse"  # type: ignore[arg-type]
    if fate == "null-status":
        return UsageEvent(status=None, **base), "refuse"  # type: ignore[arg-type]
    if fate == "overflow":
        return UsageEvent(**{**base, "input_tokens": draw(st.integers(min_value=2**63, max_value=2**80))}), "refuse"
    if fate == "uuid":  # SQLite takes any text; the PostgreSQL ledger stores UUIDs
        return UsageEvent(event_id=f"order-{uuid.uuid4().hex[:12]}", **base), "refuse-pg"
    if fate == "naive":  # cannot be turned into a row at all
        return UsageEvent(ts=datetime(2026, 1, 1), **base), "ledger"
    if fate == "lat":
        return UsageEvent(latency_ms="slow", **base), "ledger"  # type: ignore[arg-type]
    return UsageEvent(**base), "keep"


def test_mixed_batches_keep_every_good_event_and_quarantine_each_bad_one_with_its_reason(
    db_url: str, tmp_path: Path
) -> None:
    pg = db_url.startswith("postgres")
    ledger = tt.Ledger(db_url, prices=PriceBook(overrides=""), spool=tmp_path / "spool")
    try:

        @settings(max_examples=12 if pg else 30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(batch=st.lists(batch_events(pg), min_size=1, max_size=12), repeat=st.booleans())
        def check(batch: list[tuple[UsageEvent, str]], repeat: bool) -> None:
            before = ledger.store.query("SELECT count(*) FROM events")[0][0]
            for e, _ in batch:
                ledger.record(e)
            if repeat:  # the same event twice in one batch is stored once
                ledger.record(batch[0][0])
            keep = [e for e, fate in batch if fate == "keep" or (fate == "refuse-pg" and not pg)]
            bad = [(e, fate) for e, fate in batch if e not in keep]
            stored = _stored(ledger, [e.event_id for e, _ in batch])
            assert set(stored) == {e.event_id for e in keep}
            assert ledger.store.query("SELECT count(*) FROM events")[0][0] == before + len(keep)
            for e in keep:
                s = stored[e.event_id]
                want = e.model.replace("\x00", "\ufffd") if pg else e.model
                assert (s.model, s.input_tokens, s.content is None) == (want, e.input_tokens, e.content is None)
            quarantined = ledger.store.query("SELECT source, reason, payload FROM quarantine")
            for e, fate in bad:
                hits = [(src, why) for src, why, payload in quarantined if e.event_id in payload]
                assert hits, f"{fate} event {e.event_id} is neither stored nor quarantined"
                src, why = hits[0]
                assert src == ("ledger" if fate == "ledger" else "store") and len(why) > 10

        check()
        assert ledger._writer.is_alive()
    finally:
        ledger.close()


def test_oversized_strings_and_tags_from_a_session_are_bounded(fuzz_ledger: tt.Ledger) -> None:
    huge = "x" * 100_000
    tags = {f"K{i}{huge}": huge for i in range(200)}
    with tt.session(agent=huge, team=huge, tags=tags, ledger=fuzz_ledger), tt.step(huge):
        e = fuzz_ledger.record_llm(provider="openai", model=huge, input_tokens=1)
        t = fuzz_ledger.record_tool(huge, {"q": huge}, tool_call_id=huge)
    for ev in (e, t):
        _check_bounded(ev)
        assert all(getattr(ev, d) is None or len(getattr(ev, d)) <= MAX_TEXT for d in ("agent", "team", "step"))
    stored = _stored(fuzz_ledger, [e.event_id, t.event_id])
    assert max(len(json.dumps(s.to_dict())) for s in stored.values()) < 40_000


def test_a_lone_surrogate_from_the_wire_becomes_valid_text(capture_ledger: tt.Ledger) -> None:
    """JSON may spell "\\ud800": an upstream's model, tool names and the captured text reach events as
    valid text (no store, nor the spool, can encode a lone surrogate)."""
    body = (
        '{"model": "gpt-\\ud800", "choices": [{"message": {"content": "a\\udfffb", "tool_calls": [{"id": "c\\ud801",'
        ' "function": {"name": "f\\ud802", "arguments": "{}"}}]}}],'
        ' "usage": {"prompt_tokens": 3, "completion_tokens": 1}}'
    )
    request = json.loads('{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi \\udc00"}]}')
    with capture_events() as events:
        ex = Exchange(capture_ledger, OPENAI_CHAT, request, raw_body=b"{}")
        ex.response(200, "application/json")
        ex.body_bytes(body.encode())
        ex.finish()
    (e,) = events
    for text in (e.model, e.content, e.tool_calls[0].name, e.tool_calls[0].id):
        assert text is not None
        text.encode()  # valid UTF-8: no surrogate left
    assert e.event_id in _stored(capture_ledger, [e.event_id])


# -- findings of this fuzzing, fixed in ledger.py, spool.py and store/postgres.py ------------------


@pytest.mark.parametrize(
    "call",
    [
        {"latency_ms": "slow"},
        {"latency_ms": -5.0},
        {"ts": datetime(2026, 1, 1)},
        {"tool": True, "latency_ms": math.inf},
    ],
    ids=["llm-latency-text", "llm-latency-negative", "llm-ts-naive", "tool-latency-inf"],
)
def test_finding_every_argument_is_refused_or_stored_as_given(fuzz_ledger: tt.Ledger, call: dict[str, Any]) -> None:
    try:
        if call.pop("tool", False):
            e = fuzz_ledger.record_tool("search", {"q": 1}, **call)
        else:
            e = fuzz_ledger.record_llm(provider="openai", model="gpt-4o", input_tokens=1, **call)
    except tt.InvalidUsage:
        return
    stored = _stored(fuzz_ledger, [e.event_id])
    assert e.event_id in stored
    lat = stored[e.event_id].latency_ms
    assert lat is None or (math.isfinite(lat) and lat >= 0)


def test_finding_record_llm_bounds_every_string(fuzz_ledger: tt.Ledger) -> None:
    big = "y" * 10_000
    e = fuzz_ledger.record_llm(provider=big, model="m", operation=big, status=big)
    assert max(len(e.provider or ""), len(e.operation or ""), len(e.status)) <= MAX_TEXT


def test_finding_session_and_call_tags_together_stay_bounded(fuzz_ledger: tt.Ledger) -> None:
    with tt.session(tags={f"s{i}": "v" for i in range(MAX_TAGS)}, ledger=fuzz_ledger):
        e = fuzz_ledger.record_llm(provider="openai", model="m", tags={"extra": "v"})
    assert len(e.tags) <= MAX_TAGS


def test_finding_a_lone_surrogate_recorded_directly_never_stops_the_writer(
    db_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    _one_bad_row_then_a_good_one(db_url, tmp_path, UsageEvent(provider="openai", model="bad\ud800text"))


def test_finding_a_row_refused_by_a_non_database_error_is_quarantined(
    db_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    _one_bad_row_then_a_good_one(db_url, tmp_path, UsageEvent(status=None))  # type: ignore[arg-type]


def _one_bad_row_then_a_good_one(db_url: str, tmp_path: Path, bad: UsageEvent) -> None:
    ledger = tt.Ledger(db_url, spool=tmp_path / "spool")
    try:
        ledger.record(bad)
        good = ledger.record(UsageEvent(provider="openai", model="fine"))
        try:
            ledger.flush(timeout=4)
        except tt.FlushTimeout:
            pytest.fail("the writer never made the events durable")
        ids = {r[0] for r in ledger.store.query("SELECT event_id FROM events")}
        assert good.event_id in ids and ledger._writer.is_alive()
        assert ledger.spool is None or not ledger.spool.pending
        payloads = [r[0] for r in ledger.store.query("SELECT payload FROM quarantine")]
        assert any(bad.event_id in p for p in payloads)
    finally:
        ledger.close(timeout=2)


def test_finding_a_spooled_row_the_store_refuses_does_not_block_the_spool(tmp_path: Path) -> None:
    store = Outage(f"sqlite:///{tmp_path / 'l.db'}")
    ledger = tt.Ledger(store=store, spool=tmp_path / "spool")  # type: ignore[arg-type]
    try:
        first = ledger.record(UsageEvent(provider="openai", model="m"))
        ledger.record(UsageEvent(kind=None))  # type: ignore[arg-type]  # NOT NULL: refused for good
        ledger.flush(timeout=10)  # durable in the spool
        store.up = True
        deadline = time.monotonic() + 5
        while ledger.spool is not None and ledger.spool.pending and time.monotonic() < deadline:
            time.sleep(0.05)
        later = ledger.record(UsageEvent(provider="openai", model="later"))
        ledger.flush(timeout=10)
        ids = {r[0] for r in store.inner.query("SELECT event_id FROM events")}
        assert {first.event_id, later.event_id} <= ids
    finally:
        ledger.close(timeout=2)
