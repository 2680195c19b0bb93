"""The OpenTelemetry SDK pieces of the export (imported only once export is on): the exporters
chosen by the standard environment variables, wrappers that count failed exports, and an id
generator that hands the SDK the ids tokentrail derived (tokentrail.integrations.otel_spans)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator

from tokentrail.exceptions import ConfigError

log = logging.getLogger("tokentrail")


@dataclass(slots=True)
class Counts:
    """What the export did since it started (plain ints: a lost increment under a race only
    miscounts a diagnostic, never an amount)."""

    spans_queued: int = 0
    spans_exported: int = 0
    spans_failed: int = 0
    span_export_errors: int = 0
    metric_export_errors: int = 0
    listener_errors: int = 0
    events_dropped: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _logged(counts: Counts, what: str, n: int, detail: object) -> None:
    if n == 1 or n % 100 == 0:
        log.warning("tokentrail: OpenTelemetry %s export failed (%d so far): %s", what, n, detail)


class CountingSpanExporter(SpanExporter):
    """Delegates to an exporter; a failed or raising export is counted and logged, never raised."""

    def __init__(self, inner: SpanExporter, counts: Counts) -> None:
        self.inner, self.counts = inner, counts

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception as e:
            result, detail = SpanExportResult.FAILURE, repr(e)
        else:
            detail = "the endpoint refused or could not be reached (see the opentelemetry exporter's log)"
        if result is SpanExportResult.SUCCESS:
            self.counts.spans_exported += len(spans)
        else:
            self.counts.span_export_errors += 1
            self.counts.spans_failed += len(spans)
            _logged(self.counts, "span", self.counts.span_export_errors, detail)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class CountingMetricExporter(MetricExporter):
    """The same for metrics; keeps the inner exporter's temporality and aggregation."""

    def __init__(self, inner: MetricExporter, counts: Counts) -> None:
        super().__init__(
            preferred_temporality=inner._preferred_temporality, preferred_aggregation=inner._preferred_aggregation
        )
        self.inner, self.counts = inner, counts

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        try:
            result = self.inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        except Exception as e:
            result, detail = MetricExportResult.FAILURE, repr(e)
        else:
            detail = "the endpoint refused or could not be reached (see the opentelemetry exporter's log)"
        if result is not MetricExportResult.SUCCESS:
            self.counts.metric_export_errors += 1
            _logged(self.counts, "metric", self.counts.metric_export_errors, detail)
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.inner.shutdown(timeout_millis=timeout_millis, **kwargs)


class GivenIds(IdGenerator):
    """The ids of the span being started, given by the thread starting it (`given`); random ones
    otherwise (nothing else uses this provider, but an id is never left unset)."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._random = RandomIdGenerator()

    @contextmanager
    def given(self, trace_id: int, span_id: int) -> Iterator[None]:
        self._local.ids = (trace_id, span_id)
        try:
            yield
        finally:
            self._local.ids = None

    def generate_span_id(self) -> int:
        ids = getattr(self._local, "ids", None)
        return ids[1] if ids else self._random.generate_span_id()

    def generate_trace_id(self) -> int:
        ids = getattr(self._local, "ids", None)
        return ids[0] if ids else self._random.generate_trace_id()


def resource_attributes() -> dict[str, str]:
    """service.name "tokentrail" unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES name one
    (Resource.create reads both)."""
    named = os.environ.get("OTEL_SERVICE_NAME") or "service.name=" in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    return {} if named else {"service.name": "tokentrail"}


def signal_exporter(signal: str) -> Any:
    """The OTLP exporter of `signal` ("traces" | "metrics") the environment asks for, configured by
    the exporter itself from OTEL_EXPORTER_OTLP_*; None when OTEL_<SIGNAL>_EXPORTER=none.
    Only http/protobuf (the default): the otel extra brings no gRPC stack."""
    chosen = os.environ.get(f"OTEL_{signal.upper()}_EXPORTER", "otlp").strip().lower()
    if chosen == "none":
        return None
    if chosen != "otlp":
        raise ConfigError(f"OTEL_{signal.upper()}_EXPORTER={chosen!r}: tokentrail exports over OTLP only (or none)")
    protocol = (
        os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if protocol == "http/protobuf":
        if signal == "traces":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            return OTLPSpanExporter()
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter()
    raise ConfigError(
        f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported: tokentrail exports OTLP over http/protobuf "
        "(a collector's port 4318)"
    )
