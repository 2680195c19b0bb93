"""A local OTLP/HTTP endpoint that keeps what it is sent, decoded with opentelemetry-proto."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


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
