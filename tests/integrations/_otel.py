"""The OpenTelemetry export tests' helpers: a local OTLP/HTTP endpoint that keeps what it is sent
(decoded with opentelemetry-proto), and the work a test ledger records."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

import tokentrail as tt
from tokentrail.pricing import PriceBook


class Capture:
    def __init__(self) -> None:
        self.bodies: dict[str, list[bytes]] = {"/v1/traces": [], "/v1/metrics": []}
        self.lock = threading.Lock()
        self.url = ""

    def traces(self) -> list[ExportTraceServiceRequest]:
        with self.lock:
            return [ExportTraceServiceRequest.FromString(b) for b in self.bodies["/v1/traces"]]

    def metrics(self) -> list[ExportMetricsServiceRequest]:
        with self.lock:
            return [ExportMetricsServiceRequest.FromString(b) for b in self.bodies["/v1/metrics"]]

    def spans(self) -> list[Any]:
        return [s for r in self.traces() for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans]


def attrs(holder: Any) -> dict[str, Any]:
    """The attributes of a decoded span or data point, as Python values."""
    out = {}
    for kv in holder.attributes:
        which = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, which) if which else None
    return out


@contextmanager
def capturing() -> Iterator[Capture]:
    cap = Capture()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            if self.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            with cap.lock:
                cap.bodies.setdefault(self.path, []).append(body)
            answer = ExportTraceServiceResponse() if self.path == "/v1/traces" else ExportMetricsServiceResponse()
            raw = answer.SerializeToString()
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    cap.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield cap
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def capture_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Capture]:
    """A capture that OTEL_EXPORTER_OTLP_ENDPOINT points at (the tests' `capture` fixture)."""
    with capturing() as cap:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", cap.url)
        yield cap


def exporting(url: str, prices: PriceBook, **options: Any) -> tt.Ledger:
    return tt.Ledger(url, prices=prices, otel=True, **options)


def work(led: tt.Ledger, session_id: str = "sess-1") -> list[tt.UsageEvent]:
    """A session with nested steps, a model call asking for a tool, the tool run, an embedding,
    a failed call and a call outside any step."""
    out = []
    with tt.session("researcher", session_id=session_id, team="legal", project="p1", ledger=led, tags={"env": "t"}):
        with tt.step("research"), tt.step("plan"):
            out.append(
                led.record_llm(
                    provider="openai",
                    model="gpt-4o",
                    input_tokens=1200,
                    output_tokens=300,
                    cache_read_tokens=200,
                    reasoning_tokens=40,
                    latency_ms=250,
                    tool_calls=[("call-1", "search", {"q": "x"})],
                )
            )
            out.append(led.record_tool("search", {"q": "x"}, latency_ms=12, cost_usd="0.002"))
        with tt.step("write"):
            out.append(
                led.record_llm(provider="openai", model="text-embedding-3-small", kind="embedding", input_tokens=50)
            )
            out.append(
                led.record_llm(
                    provider="anthropic",
                    model="claude-sonnet-4-5",
                    input_tokens=900,
                    output_tokens=10,
                    cache_write_tokens=100,
                    status="error",
                )
            )
        out.append(led.record_llm(provider="google", model="gemini-2.5-flash", input_tokens=10, output_tokens=5))
    return out


def by_event(cap: Capture) -> dict[str, Any]:
    return {attrs(s)["tokentrail.event_id"]: s for s in cap.spans() if "tokentrail.event_id" in attrs(s)}


def sums(cap: Capture, name: str) -> list[tuple[float, dict[str, Any]]]:
    """The cumulative data points of a counter, from the last export that has it."""
    found: list[tuple[float, dict[str, Any]]] = []
    for request in cap.metrics():
        points = [
            (dp.as_int or dp.as_double, attrs(dp))
            for rm in request.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
            if m.name == name
            for dp in m.sum.data_points
        ]
        if points:
            found = points
    return found
