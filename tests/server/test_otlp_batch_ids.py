"""One OTLP export that gives the same `tokentrail.event_id` to two spans: the ledger keeps one
event per id, so the second is never silently dropped (nor charged to the budgets): the same span
sent twice is skipped like a re-sent span, a different one is refused and quarantined."""

from __future__ import annotations

import uuid
from typing import Any

from starlette.testclient import TestClient

import tokentrail as tt
from tests._events import stored
from tests._server import quarantined
from tokentrail.server import create_app

ADMIN = "admin-key-for-otlp-batch-ids"
TRACE = "0af7651916cd43dd8448eb211c80319c"


def _span(span_id: str, event_id: str, tokens: int) -> dict[str, Any]:
    attrs = {
        "gen_ai.operation.name": {"stringValue": "chat"},
        "gen_ai.request.model": {"stringValue": "gpt-4o"},
        "gen_ai.provider.name": {"stringValue": "openai"},
        "gen_ai.usage.input_tokens": {"intValue": str(tokens)},
        "gen_ai.usage.output_tokens": {"intValue": "1"},
        "tokentrail.event_id": {"stringValue": event_id},
    }
    return {
        "traceId": TRACE,
        "spanId": span_id,
        "name": "chat",
        "startTimeUnixNano": "1767225600000000000",
        "endTimeUnixNano": "1767225601000000000",
        "attributes": [{"key": k, "value": v} for k, v in attrs.items()],
    }


def _export(c: TestClient, *spans: dict[str, Any]) -> Any:
    doc = {"resourceSpans": [{"scopeSpans": [{"spans": list(spans)}]}]}
    r = c.post("/v1/traces", json=doc, headers={"X-Tokentrail-Key": ADMIN})
    assert r.status_code == 200, r.text
    return r.json()


def test_an_id_given_twice_in_one_export_is_refused_when_the_spans_differ(any_ledger: tt.Ledger) -> None:
    same, other = str(uuid.uuid4()), str(uuid.uuid4())
    with TestClient(create_app(any_ledger, admin_key=ADMIN)) as c:
        answer = _export(c, _span("b7ad6b7169203331", same, 100), _span("b7ad6b7169203332", same, 999))
        assert answer["partialSuccess"]["rejectedSpans"] == "1"
        assert "different content" in answer["partialSuccess"]["errorMessage"]
        resent = _export(c, _span("b7ad6b7169203333", other, 7), _span("b7ad6b7169203333", other, 7))
        assert resent.get("partialSuccess", {}).get("rejectedSpans", "0") == "0"  # the same span twice
    events = {e.event_id: e.input_tokens for e in stored(any_ledger)}
    assert events == {same: 100, other: 7}
    [(source, reason, payload)] = quarantined(any_ledger)
    assert source == "otlp" and "different content" in reason and '"input_tokens": 999' in payload
