"""OpenTelemetry export: every event a ledger records becomes a GenAI span, and token and cost
counters, sent by the official OpenTelemetry SDK and OTLP exporter in the background.

`tt.configure(otel=True)`, `Ledger(..., otel=True)` or `TOKENTRAIL_OTEL_EXPORT=1` turn it on; the
standard `OTEL_EXPORTER_OTLP_*` variables say where and how (the exporter reads them itself),
`OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES` describe the service, `OTEL_TRACES_EXPORTER=none`
or `OTEL_METRICS_EXPORTER=none` leave one signal out. The spans' shape and attributes are
tokentrail.integrations.otel_spans'.

Never on a call's path, never failing one: recording an event only appends it to a bounded queue.
The export thread maps it to its span (handed to the SDK's BatchSpanProcessor, which sends
batches from its own thread) and adds it to the counters (a PeriodicExportingMetricReader sends
them). An export that fails is logged (once, then every 100th) and counted in `status()`, as is
an event the queue had no room for; an error of the mapping is logged and counted, never raised.

Metric labels are bounded like the server's Prometheus metrics: provider, model, team and agent
each keep at most MAX_LABEL_VALUES distinct values (new ones count as `_other`), at most
MAX_SERIES label sets in all; never session, user or tags.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections import deque
from typing import Any

from tokentrail.events import UsageEvent
from tokentrail.exceptions import ConfigError
from tokentrail.integrations.otel_spans import SpanSpec, Structure, provider_name

log = logging.getLogger("tokentrail")

ENV = "TOKENTRAIL_OTEL_EXPORT"
TOKEN_TYPES = ("input", "output", "cache_read", "cache_write", "reasoning")
MAX_LABEL_VALUES = 500  # as tokentrail.server.metrics: distinct values of one caller-given label
MAX_SERIES = 5000  # distinct (provider, model, team, agent) sets
OTHER = "_other"
IDLE_SECONDS = 30.0  # a session or step span with no new event for this long is sent
POLL_SECONDS = 0.2  # how often the export thread takes the queued events
MAX_QUEUED = 100_000  # events waiting for the export thread; past it they are counted, not exported


def start(ledger: Any, otel: Any, *, strict: bool) -> OtelExport | None:
    """`Ledger(otel=...)`: attach an export (True: one configured from the environment; or an
    OtelExport) to the ledger's listeners. A missing extra or an unsupported protocol raises
    ConfigError when asked for explicitly (`strict`), else (the environment variable) is logged
    and the ledger works without export: turning export on never stops metering."""
    try:
        export = otel if isinstance(otel, OtelExport) else OtelExport()
    except (ImportError, ConfigError) as e:
        if strict:
            raise ConfigError(f"OpenTelemetry export: {e}") from None
        log.error("tokentrail: %s=1 but OpenTelemetry export cannot start: %s; events are not exported", ENV, e)
        return None
    ledger.listeners.append(export.on_event)
    return export


class OtelExport:
    """One export pipeline: a TracerProvider and a MeterProvider of its own (the application's
    global providers are left alone), each with its OTLP exporter. `span_exporter` /
    `metric_exporter` replace the OTLP ones (tests, other backends; False: that signal is not sent;
    None: as the environment says); `idle_seconds`: how long a session or step span stays open
    after its last event before it is sent. Every span is sampled: they are accounting records."""

    def __init__(
        self,
        *,
        span_exporter: Any = None,
        metric_exporter: Any = None,
        idle_seconds: float = IDLE_SECONDS,
        metric_interval_ms: float | None = None,
    ) -> None:
        try:
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
            from opentelemetry.sdk.trace.sampling import ALWAYS_ON
        except ImportError as e:
            from tokentrail._extras import raise_missing_extra

            raise_missing_extra(e, "OpenTelemetry export", "otel")
        from tokentrail.integrations.otel_wiring import (
            CountingMetricExporter,
            CountingSpanExporter,
            Counts,
            GivenIds,
            resource_attributes,
            signal_exporter,
        )

        # both exporters first: a bad setting raises before any thread starts
        if span_exporter is None:
            span_exporter = signal_exporter("traces")
        if metric_exporter is None:
            metric_exporter = signal_exporter("metrics")
        self.counts = Counts()
        self.idle_ns = int(idle_seconds * 1e9)
        resource = Resource.create(resource_attributes())
        self._ids = GivenIds()
        self._structure = Structure()
        self._lock = threading.Lock()
        self._closed = False
        self._tracer: Any = None
        self._tracer_provider: Any = None
        self._meter_provider: Any = None
        if span_exporter:
            self._tracer_provider = TracerProvider(
                resource=resource, id_generator=self._ids, sampler=ALWAYS_ON, shutdown_on_exit=False
            )
            self._tracer_provider.add_span_processor(
                BatchSpanProcessor(CountingSpanExporter(span_exporter, self.counts))
            )
            self._tracer = self._tracer_provider.get_tracer("tokentrail")
        self._instruments: Any = None
        if metric_exporter:
            reader = PeriodicExportingMetricReader(
                CountingMetricExporter(metric_exporter, self.counts), export_interval_millis=metric_interval_ms
            )
            self._meter_provider = MeterProvider(resource=resource, metric_readers=[reader], shutdown_on_exit=False)
            self._instruments = _Instruments(self._meter_provider.get_meter("tokentrail"))
        self._queue: deque[UsageEvent] = deque()
        self._drain_lock = threading.Lock()  # one drain at a time, so spans keep their order
        self._stop = threading.Event()
        self._start_worker()
        atexit.register(self.shutdown)
        me = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _after_fork(me))

    def _start_worker(self) -> None:
        self._thread = threading.Thread(target=self._work, name="tokentrail-otel-export", daemon=True)
        self._thread.start()

    # -- the listener (in the recording thread): only a queue append ----------------------------

    def on_event(self, e: UsageEvent) -> None:
        """Queue an event for the export thread. Never raises, never waits: past MAX_QUEUED waiting
        events (the export thread cannot keep up) the event is not exported, and counted."""
        if self._closed:
            return
        if len(self._queue) >= MAX_QUEUED:
            self.counts.events_dropped += 1
            n = self.counts.events_dropped
            if n == 1 or n % 1000 == 0:
                log.warning("tokentrail: the OpenTelemetry export is behind; %d event(s) not exported so far", n)
            return
        self._queue.append(e)

    # -- the export thread ---------------------------------------------------------------------

    def _work(self) -> None:
        """Map the queued events to spans and counts, and send the idle session and step spans."""
        while not self._stop.wait(max(0.01, min(self.idle_ns / 2e9, POLL_SECONDS))):
            self._drain()
            self._send_structure(time.time_ns() - self.idle_ns)

    def _drain(self) -> None:
        with self._drain_lock:
            while self._queue:
                e = self._queue.popleft()
                try:
                    self._export(e)
                except Exception:
                    self.counts.listener_errors += 1
                    n = self.counts.listener_errors
                    if n == 1 or n % 100 == 0:
                        log.exception("tokentrail: exporting an event to OpenTelemetry failed (%d so far)", n)

    def _export(self, e: UsageEvent) -> None:
        if self._instruments is not None:
            self._instruments.count(e)
        if self._tracer is not None:
            with self._lock:
                spec, pushed = self._structure.event_span(e)
            for s in (spec, *pushed):
                self._send(s)

    def _send(self, spec: SpanSpec) -> None:
        from opentelemetry import trace
        from opentelemetry.context import Context
        from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

        sampled = TraceFlags(TraceFlags.SAMPLED)
        ctx = Context()  # never the application's current span: our traces are our own
        if spec.parent_id is not None:
            parent = SpanContext(spec.trace_id, spec.parent_id, is_remote=True, trace_flags=sampled)
            ctx = trace.set_span_in_context(NonRecordingSpan(parent), ctx)
        links = [Link(SpanContext(t, s, is_remote=True, trace_flags=sampled)) for t, s in spec.links]
        with self._ids.given(spec.trace_id, spec.span_id):
            span = self._tracer.start_span(
                spec.name,
                context=ctx,
                kind=SpanKind.CLIENT if spec.client else SpanKind.INTERNAL,
                attributes=spec.attributes,
                links=links,
                start_time=spec.start_ns,
            )
        if spec.error is not None:
            span.set_status(Status(StatusCode.ERROR, spec.error))
        span.end(end_time=max(spec.end_ns, spec.start_ns))
        self.counts.spans_queued += 1

    def _send_structure(self, idle_before_ns: int | None) -> None:
        if self._tracer is None:
            return
        with self._lock:
            specs = self._structure.take(idle_before_ns)
        for s in specs:
            try:
                self._send(s)
            except Exception:
                self.counts.listener_errors += 1
                log.exception("tokentrail: exporting a session or step span to OpenTelemetry failed")

    # -- lifecycle ----------------------------------------------------------------------------

    def flush(self, timeout: float = 10) -> bool:
        """Send the open session and step spans and everything queued; False if that did not
        finish within `timeout` or an export failed meanwhile (counted in status())."""
        failures = self.counts.span_export_errors + self.counts.metric_export_errors
        self._drain()
        self._send_structure(None)
        ok = True
        ms = int(timeout * 1000)
        if self._tracer_provider is not None:
            ok = bool(self._tracer_provider.force_flush(ms)) and ok
        if self._meter_provider is not None:
            ok = bool(self._meter_provider.force_flush(ms)) and ok
        return ok and self.counts.span_export_errors + self.counts.metric_export_errors == failures

    def shutdown(self, timeout: float = 10) -> None:
        """Flush and stop (the ledger's close() calls it, and atexit). Idempotent. Returns within about
        `timeout` seconds even when the collector accepts and never answers (the SDK's own waits add
        up to far more, each export having its own timeout): what is not sent by then is dropped,
        and said so."""
        if self._closed:
            return
        self._stop.set()
        done = threading.Thread(target=self._finish, args=(timeout,), name="tokentrail-otel-shutdown", daemon=True)
        done.start()
        done.join(timeout)
        self._closed = True
        atexit.unregister(self.shutdown)
        if done.is_alive():
            log.warning(
                "tokentrail: the OpenTelemetry collector did not take the last spans and counts within %gs; "
                "they are not exported (the ledger has every event)",
                timeout,
            )

    def _finish(self, timeout: float) -> None:
        try:
            self.flush(timeout)
        except Exception:
            log.exception("tokentrail: flushing the OpenTelemetry export failed")
        self._closed = True
        for provider in (self._tracer_provider, self._meter_provider):
            if provider is not None:
                try:
                    provider.shutdown()
                except Exception:
                    log.exception("tokentrail: shutting the OpenTelemetry export down failed")

    def status(self) -> dict[str, Any]:
        """What was queued and what failed, since this export started."""
        with self._lock:
            open_spans = len(self._structure.open)
        return {**self.counts.as_dict(), "open_structure_spans": open_spans, "closed": self._closed}


def _after_fork(ref: weakref.ref[OtelExport]) -> None:
    """In a forked child: fresh locks (a parent's thread may have held one) and an export thread of its
    own; the SDK restarts its own export threads."""
    export = ref()
    if export is None or export._closed:
        return
    export._lock, export._drain_lock = threading.Lock(), threading.Lock()
    if export._instruments is not None:
        export._instruments._lock = threading.Lock()
    export._start_worker()


class _Instruments:
    """The counters, and the bounded label sets they are counted under."""

    def __init__(self, meter: Any) -> None:
        self.tokens = meter.create_counter(
            "tokentrail.tokens", unit="{token}", description="Tokens of the events recorded, by type (inclusive)."
        )
        self.cost = meter.create_counter("tokentrail.cost", unit="USD", description="Cost of the events recorded.")
        self.credited = meter.create_counter(
            "tokentrail.cost.credited", unit="USD", description="Cost taken back by adjustments (refunds, corrections)."
        )
        self.events = meter.create_counter("tokentrail.events", unit="{event}", description="Events recorded.")
        self._lock = threading.Lock()
        self._labels: dict[tuple[str, ...], dict[str, str]] = {}
        self._values: tuple[set[str], ...] = (set(), set(), set(), set())

    def count(self, e: UsageEvent) -> None:
        labels = {**self.labels_of(e), "tokentrail.kind": e.kind}
        for kind, n in zip(
            TOKEN_TYPES,
            (e.input_tokens, e.output_tokens, e.cache_read_tokens, e.cache_write_tokens, e.reasoning_tokens),
            strict=True,
        ):
            if n > 0:
                self.tokens.add(n, {**labels, "gen_ai.token.type": kind})
        if e.cost_usd is not None and e.cost_usd > 0:
            self.cost.add(float(e.cost_usd), labels)
        elif e.cost_usd is not None and e.cost_usd < 0:
            self.credited.add(float(-e.cost_usd), labels)
        self.events.add(1, {**labels, "tokentrail.outcome": "ok" if e.status == "ok" else "error"})

    def labels_of(self, e: UsageEvent) -> dict[str, str]:
        """The bounded labels of an event's (provider, model, team, agent), as the server's metrics."""
        key = (provider_name(e.provider) if e.provider else "", e.model or "", e.team or "", e.agent or "")
        found = self._labels.get(key)
        if found is not None:
            return found
        with self._lock:
            if len(self._labels) >= MAX_SERIES:
                values = [OTHER] * 4
            else:
                values = []
                for v, seen in zip(key, self._values, strict=True):
                    if v not in seen:
                        if len(seen) >= MAX_LABEL_VALUES:
                            v = OTHER
                        else:
                            seen.add(v)
                    values.append(v)
            names = ("gen_ai.provider.name", "gen_ai.request.model", "tokentrail.team", "tokentrail.agent")
            found = dict(zip(names, values, strict=True))
            if len(self._labels) < MAX_SERIES:
                self._labels[key] = found
            return found
