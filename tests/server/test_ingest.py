"""`POST /api/v1/events`: per-event results, mixed batches, idempotency, limits, quarantine, and a
property test: whatever is sent, no 500, and every event is either stored or quarantined."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

import tokentrail as tt
from tests._events import stored
from tests._server import quarantined
from tokentrail.pricing import PriceBook
from tokentrail.server import create_app
from tokentrail.server.keys import create_key
from tokentrail.server.state import MAX_EVENTS_PER_BATCH


@pytest.fixture
def client(ledger: tt.Ledger) -> Iterator[TestClient]:
    with TestClient(create_app(ledger)) as c:
        yield c


@pytest.fixture
def any_client(any_ledger: tt.Ledger) -> Iterator[TestClient]:
    """A client of a server over each backend in turn (the stored row is read back to compare)."""
    with TestClient(create_app(any_ledger)) as c:
        yield c


def good(**kw: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "provider": "openai",
        "model": "gpt-4o",
        "input_tokens": 1000,
        "output_tokens": 200,
        "cache_read_tokens": 400,
        "ts": "2026-01-31T09:30:00+01:00",
        "team": "legal",
        "agent": "a1",
        "session_id": "s1",
        "tags": {"Customer": "acme"},
        **kw,
    }


def test_a_batch_is_priced_attributed_and_stored(client: TestClient, ledger: tt.Ledger, prices: PriceBook) -> None:
    tool = {"event_id": str(uuid.uuid4()), "kind": "tool", "tool_name": "web_search", "cost_usd": "0.002"}
    priced = good(cost_usd=0.5, model="acme-private")
    r = client.post("/api/v1/events", json={"events": [good(), tool, priced]})
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 3
    a, b, c = stored(ledger)
    expected = tt.price(
        provider="openai", model="gpt-4o", input_tokens=1000, output_tokens=200, cache_read_tokens=400, book=prices
    )
    assert expected is not None and a.cost_usd == expected.total_usd.quantize(Decimal("1e-9"))
    assert (a.team, a.agent, a.session_id, a.tags, a.ts.isoformat()) == (
        "legal",
        "a1",
        "s1",
        {"customer": "acme"},
        "2026-01-31T08:30:00+00:00",
    )
    assert (b.kind, b.tool_name, b.cost_usd, b.price_source) == ("tool", "web_search", Decimal("0.002"), "caller")
    assert (c.cost_usd, c.price_source) == (Decimal("0.5"), "caller")


BAD = [
    ({"provider": "openai", "model": "m"}, "event_id is required"),
    (good(event_id="not-a-uuid"), "is not a UUID"),
    (good(input_tokens=-1), "must not be negative"),
    (good(input_tokens="5"), "must be a whole number"),
    (good(input_tokens=5.0), "must be a whole number"),
    (good(input_tokens=True), "must be a whole number"),
    (good(cache_read_tokens=5000), "impossible usage: cache_exceeds_input"),
    (good(ts="2026-01-31T09:30:00"), "has no UTC offset"),
    (good(ts="yesterday"), "is not ISO-8601"),
    (good(team="x" * 300), "the limit is 256"),
    (good(tags={str(i): "v" for i in range(65)}), "the limit is 64"),
    (good(tags={"a": 1}), "must be a string"),
    (good(kind="adjustment"), "kind must be one of"),
    (good(cost_usd="-1"), "must be between 0"),
    (good(colour="red"), "unknown field"),
    (good(model=None), "needs model"),
    ({"event_id": str(uuid.uuid4()), "kind": "tool"}, "needs tool_name"),
    ([1, 2], "must be a JSON object"),
]


@pytest.mark.parametrize(("event", "reason"), BAD)
def test_a_bad_event_is_rejected_with_its_reason_and_quarantined(
    client: TestClient, ledger: tt.Ledger, event: Any, reason: str
) -> None:
    ok = good()
    r = client.post("/api/v1/events", json={"events": [event, ok]})
    assert r.status_code == 200
    body = r.json()
    assert (body["accepted"], body["rejected"]) == (1, 1)
    assert body["results"][0]["status"] == "rejected" and reason in body["results"][0]["reason"]
    assert [e.event_id for e in stored(ledger)] == [ok["event_id"]]  # the good one of a mixed batch is kept
    [(source, why, payload)] = quarantined(ledger)
    assert source == "api" and reason in why and json.loads(payload) == event


def test_idempotent_on_event_id(client: TestClient, ledger: tt.Ledger) -> None:
    e = good()
    first = client.post("/api/v1/events", json=[e, e]).json()
    again = client.post("/api/v1/events", json=[e]).json()
    assert [r["status"] for r in first["results"]] == ["accepted", "duplicate"]
    assert again["results"][0]["status"] == "duplicate"
    assert len(stored(ledger)) == 1


def test_an_identical_repost_is_a_duplicate_whatever_the_server_filled_in(
    any_client: TestClient, any_ledger: tt.Ledger
) -> None:
    """No ts, no span_id, no cost: the server fills them in at ingestion (now, a new span, the
    price); re-sending the very same JSON later is still the same event."""
    e = good()
    del e["ts"]
    tool = {"event_id": str(uuid.uuid4()), "kind": "tool", "tool_name": "web_search", "cost_usd": "0.002"}
    first = any_client.post("/api/v1/events", json=[e, tool]).json()
    assert [r["status"] for r in first["results"]] == ["accepted"] * 2
    again = any_client.post("/api/v1/events", json=[e, tool, dict(e, tags={"customer": "acme"})]).json()
    assert [r["status"] for r in again["results"]] == ["duplicate"] * 3  # tag keys are stored lower-cased
    assert (again["accepted"], again["duplicate"], again["rejected"]) == (0, 3, 0)
    assert len(stored(any_ledger)) == 2 and quarantined(any_ledger) == []
    changed = any_client.post("/api/v1/events", json=[{**e, "agent": "a2"}]).json()
    assert changed["results"][0] == {
        "index": 0,
        "status": "rejected",
        "reason": "event_id already used with different content",
        "event_id": e["event_id"],
        "fields": ["agent"],
    }
    assert [why for _, why, _ in quarantined(any_ledger)] == ["event_id already used with different content"]


@pytest.mark.parametrize(
    "change",
    [
        {"input_tokens": 1001},
        {"model": "gpt-4o-mini"},
        {"team": "cx"},
        {"team": None},
        {"ts": "2026-01-31T09:30:01+01:00"},
        {"tags": {"customer": "globex"}},
        {"cost_usd": "0.5"},
        {"status": "error"},
        {"span_id": "another-span"},
    ],
)
def test_a_repost_with_different_content_is_rejected_and_quarantined(
    client: TestClient, ledger: tt.Ledger, change: dict[str, Any]
) -> None:
    e = good(span_id="span-1")
    assert client.post("/api/v1/events", json=[e]).json()["accepted"] == 1
    changed = {**e, **change}
    r = client.post("/api/v1/events", json={"events": [changed, good()]})
    assert r.status_code == 200
    body = r.json()
    assert (body["accepted"], body["duplicate"], body["rejected"]) == (1, 0, 1)
    res = body["results"][0]
    assert res["status"] == "rejected" and res["reason"] == "event_id already used with different content"
    assert res["event_id"] == e["event_id"] and res["fields"] == list(change)
    [(source, why, payload)] = quarantined(ledger)
    assert (source, why, json.loads(payload)) == ("api", "event_id already used with different content", changed)
    first = stored(ledger)[0]
    assert (first.event_id, first.input_tokens, first.model, first.team) == (e["event_id"], 1000, "gpt-4o", "legal")
    alone = client.post("/api/v1/events", json=[changed])  # every event of the batch rejected: 422
    assert alone.status_code == 422 and alone.json()["results"][0]["reason"] == res["reason"]


def test_a_conflict_inside_one_batch_keeps_the_first(client: TestClient, ledger: tt.Ledger) -> None:
    e = good()
    body = client.post("/api/v1/events", json=[e, e, {**e, "output_tokens": 1}]).json()
    assert [r["status"] for r in body["results"]] == ["accepted", "duplicate", "rejected"]
    assert body["results"][2]["fields"] == ["output_tokens"]
    assert [x.output_tokens for x in stored(ledger)] == [200]
    promised = client.get("/api/v1/openapi.json").json()["paths"]["/api/v1/events"]["post"]["responses"]["200"]
    schema = promised["content"]["application/json"]["schema"]
    assert set(body) == set(schema["properties"])
    assert all(set(r) <= set(schema["properties"]["results"]["items"]["properties"]) for r in body["results"])
    assert [why for _, why, _ in quarantined(ledger)] == ["event_id already used with different content"]


def test_a_repost_priced_by_a_newer_price_book_is_a_duplicate(ledger: tt.Ledger, tmp_path: Any) -> None:
    """The price is filled in by the server: a re-post after the price book changed is the same
    event (the stored cost stands), but a caller's own cost_usd is content."""
    e = good()
    with TestClient(create_app(ledger)) as c:
        assert c.post("/api/v1/events", json=[e]).json()["accepted"] == 1
    book = tmp_path / "prices.toml"
    book.write_text('[[prices]]\nprovider = "openai"\nmodel = "gpt-4o"\ninput_mtok = 99\noutput_mtok = 99\n')
    other = tt.Ledger(ledger.url, prices=PriceBook(overrides=book))
    try:
        with TestClient(create_app(other)) as c:
            r = c.post("/api/v1/events", json=[e, {**e, "cost_usd": "0.01"}]).json()
    finally:
        other.close()
    assert [x["status"] for x in r["results"]] == ["duplicate", "rejected"]
    assert r["results"][1]["fields"] == ["cost_usd"]
    [first] = stored(ledger)
    assert first.price_source != "caller" and first.cost_usd is not None and first.cost_usd < Decimal("0.01")


def test_limits_and_shapes(client: TestClient) -> None:
    assert client.post("/api/v1/events", content=b"{nope").status_code == 400
    assert client.post("/api/v1/events", json={"event": []}).status_code == 400
    assert client.post("/api/v1/events", json={"events": [{}] * (MAX_EVENTS_PER_BATCH + 1)}).status_code == 413
    big = b'{"events": [' + b'"' + b"x" * (11 * 1024 * 1024) + b'"]}'
    r = client.post("/api/v1/events", content=big)
    assert r.status_code == 413 and "smaller batches" in r.json()["error"]["message"]
    all_bad = client.post("/api/v1/events", json=[{"kind": "llm"}])
    assert all_bad.status_code == 422 and all_bad.json()["rejected"] == 1


def test_a_team_key_writes_only_its_team(ledger: tt.Ledger) -> None:
    key, _ = create_key(ledger.store, role="ingest", attribution={"team": "legal"})  # type: ignore[arg-type]
    with TestClient(create_app(ledger, admin_key="admin-key-123456")) as c:
        assert c.post("/api/v1/events", json=[good()]).status_code == 401
        h = {"X-Tokentrail-Key": key}
        r = c.post("/api/v1/events", json=[good(team=None), good(team="cx")], headers=h).json()
    assert [x["status"] for x in r["results"]] == ["accepted", "rejected"]
    assert "writes only team=legal" in r["results"][1]["reason"]
    assert [e.team for e in stored(ledger)] == ["legal"]


# -- property test --------------------------------------------------------------------------------

_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=300),
)
_field = st.sampled_from(
    [
        *("provider", "model", "input_tokens", "output_tokens", "cache_read_tokens", "kind", "ts", "team", "tags"),
        *("cost_usd", "latency_ms", "streamed", "status", "tool_name", "tool_calls", "note", "whatever"),
    ]
)
_event = st.one_of(
    st.fixed_dictionaries(
        {"event_id": st.uuids().map(str), "provider": st.just("openai"), "model": st.just("gpt-4o")},
        optional={"input_tokens": st.integers(0, 5000), "output_tokens": st.integers(0, 5000)},
    ).flatmap(lambda d: st.dictionaries(_field, _scalar, max_size=3).map(lambda extra: {**d, **extra})),
    st.dictionaries(st.text(max_size=20), _scalar, max_size=5),
    _scalar,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(_event, max_size=6))
def test_property_no_500_and_nothing_accepted_is_lost(client: TestClient, ledger: tt.Ledger, batch: list[Any]) -> None:
    before_events = len(stored(ledger))
    before_quarantine = len(quarantined(ledger))
    r = client.post("/api/v1/events", json={"events": batch})
    assert r.status_code in (200, 422), r.text
    body = r.json()
    assert len(body["results"]) == len(batch)
    for res in body["results"]:
        assert res["status"] != "rejected" or res["reason"]
    new = {e.event_id for e in stored(ledger)[before_events:]}
    accepted = {res["event_id"] for res in body["results"] if res["status"] == "accepted"}
    assert accepted == new
    assert len(quarantined(ledger)) - before_quarantine == body["rejected"]
