"""OpenTelemetry export into tokentrail's own OTLP receiver: the same events under the same ids,
and sending an export back to a ledger that holds its events adds nothing (within the key's scope)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

import tokentrail as tt
from tests._events import stored
from tests._server import quarantined, serving
from tests.integrations._otel import Capture, capture_env, exporting, work
from tokentrail.pricing import PriceBook
from tokentrail.store.keys import create_key

ADMIN = "tt-admin-otel-test"


@pytest.fixture
def capture(monkeypatch: pytest.MonkeyPatch) -> Iterator[Capture]:
    yield from capture_env(monkeypatch)


# -- into tokentrail's own OTLP receiver ------------------------------------------------------


def test_export_into_our_own_receiver_keeps_tokens_cost_and_ids(
    any_ledger: tt.Ledger, prices: PriceBook, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")  # the receiver takes traces
    with serving(any_ledger) as server:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", server.url + "/v1/traces")
        led = exporting(f"sqlite:///{tmp_path / 'agent.db'}", prices)
        try:
            work(led)
            assert led.otel_export.flush(10)
            assert led.otel_export.status()["span_export_errors"] == 0
            mine = {e.event_id: e for e in stored(led)}
        finally:
            led.close()
    theirs = {e.event_id: e for e in stored(any_ledger)}
    assert set(theirs) == set(mine)  # the same events, not copies under new ids
    for event_id, e in mine.items():
        t = theirs[event_id]
        assert (t.kind, t.team, t.session_id, t.agent, t.step) == (e.kind, e.team, e.session_id, e.agent, e.step)
        if e.kind != "tool":
            assert (t.input_tokens, t.output_tokens, t.cache_read_tokens, t.cache_write_tokens) == (
                e.input_tokens,
                e.output_tokens,
                e.cache_read_tokens,
                e.cache_write_tokens,
            )
            assert (t.reasoning_tokens, t.model, t.status, t.cost_usd) == (
                e.reasoning_tokens,
                e.model,
                e.status,
                e.cost_usd,
            )
    assert quarantined(any_ledger) == []


def _post(url: str, body: bytes, key: str | None = None) -> httpx2.Response:
    headers = {"content-type": "application/x-protobuf"}
    if key:
        headers["X-Tokentrail-Key"] = key
    return httpx2.post(url + "/v1/traces", content=body, headers=headers, timeout=30)


def _response_message(raw: bytes) -> tuple[int, str]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    r = ExportTraceServiceResponse.FromString(raw)
    return r.partial_success.rejected_spans, r.partial_success.error_message


def _exported(capture: Capture, db_url: str, prices: PriceBook) -> list[bytes]:
    """Record `work` through a second ledger on the same database, exporting; the bodies sent."""
    led = exporting(db_url, prices)
    try:
        work(led)
        assert led.otel_export.flush(10)
    finally:
        led.close()
    assert capture.bodies["/v1/traces"]
    return capture.bodies["/v1/traces"]


def test_reingesting_our_own_export_adds_nothing(
    capture: Capture, db_url: str, any_ledger: tt.Ledger, prices: PriceBook
) -> None:
    any_ledger.budgets.set("legal-cap", scope={"team": "legal"}, period="month", limit_usd=100)
    bodies = _exported(capture, db_url, prices)
    before = [e.event_id for e in stored(any_ledger)]
    assert len(before) == 5
    any_ledger.budgets.flush()
    (charged,) = any_ledger.budgets.status("legal-cap")  # by the ledger that recorded the calls
    assert charged.posted_usd > 0
    with serving(any_ledger) as server:
        for _ in range(2):
            for body in bodies:
                r = _post(server.url, body)
                assert r.status_code == 200
                rejected, message = _response_message(r.content)
                assert rejected == 0 and "already in the ledger" in message
    assert [e.event_id for e in stored(any_ledger)] == before  # zero events added
    assert quarantined(any_ledger) == []  # and none taken for a conflict
    any_ledger.budgets.flush()
    (status,) = any_ledger.budgets.status("legal-cap")
    # nor charged to the budget again
    assert (status.posted_usd, status.posted_tokens) == (charged.posted_usd, charged.posted_tokens)


def test_reingest_respects_the_keys_scope(
    capture: Capture, db_url: str, any_ledger: tt.Ledger, prices: PriceBook
) -> None:
    body = _exported(capture, db_url, prices)[0]
    before = [e.event_id for e in stored(any_ledger)]
    legal = str(create_key(any_ledger.store, role="ingest", attribution={"team": "legal"})[0])
    other = str(create_key(any_ledger.store, role="ingest", attribution={"team": "cx"})[0])
    with serving(any_ledger, admin_key=ADMIN) as server:
        assert _post(server.url, body).status_code == 401
        r = _post(server.url, body, legal)
        assert r.status_code == 200 and _response_message(r.content)[0] == 0
        r = _post(server.url, body, other)  # the spans say team=legal: a cx key cannot write them
        rejected, message = _response_message(r.content)
        assert r.status_code == 200 and rejected == 5 and "this key writes only team=cx" in message
    assert [e.event_id for e in stored(any_ledger)] == before
    assert {q[1] for q in quarantined(any_ledger)} == {"this key writes only team=cx; the span says team=legal"}
