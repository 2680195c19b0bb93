"""Prometheus metrics of one server process (`GET /metrics`).

Counters count what this process metered or ingested since it started, as Prometheus expects
(a restart resets them; `rate()` copes). Budget gauges are read from the ledger at scrape time.
Labels are provider, model, team and agent: never session or user (unbounded cardinality),
never tags. Those four come from callers (headers, events, spans), so each is bounded: past
MAX_LABEL_VALUES distinct values of one label, new values are counted under `_other`, and past
MAX_SERIES label sets every new one is (a scrape stays small whatever callers send).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tokentrail.events import UsageEvent

if TYPE_CHECKING:
    from tokentrail.context import Session
    from tokentrail.ledger import Ledger

log = logging.getLogger("tokentrail")

TOKEN_TYPES = ("input", "output", "cache_read", "cache_write", "reasoning")
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
MAX_LABEL_VALUES = 500  # distinct values of one caller-given label (provider, model, team, agent)
MAX_SERIES = 5000  # distinct (provider, model, team, agent) sets
OTHER = "_other"


class Metrics:
    """The metrics of one app, in a registry of its own (so two apps in one process never mix)."""

    def __init__(self, ledger: Ledger | None = None) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # `*_created` series double the scrape and say little here
        r = self.registry = CollectorRegistry(auto_describe=False)
        labels = ["provider", "model", "team", "agent"]
        self._tokens = Counter(
            "tokentrail_tokens", "Tokens metered or ingested by this server, by type.", ["type", *labels], registry=r
        )
        self._cost = Counter("tokentrail_cost_usd", "Cost in USD of priced calls.", labels, registry=r)
        self._events = Counter("tokentrail_events", "Events recorded, by kind and status class.", ["kind"], registry=r)
        self._requests = Counter("tokentrail_requests", "HTTP requests served.", ["route", "status"], registry=r)
        self.latency = Histogram(
            "tokentrail_gateway_request_duration_seconds",
            "Gateway requests, from the request to the last byte of the response.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.overhead = Histogram(
            "tokentrail_gateway_overhead_seconds",
            "Time the gateway itself adds: before the request goes upstream and before the response headers go back.",
            ["route"],
            buckets=_OVERHEAD_BUCKETS,
            registry=r,
        )
        if ledger is not None:
            from tokentrail.server.reconcile_api import CoverageCollector

            r.register(_BudgetCollector(ledger))
            r.register(CoverageCollector(ledger))
            if getattr(ledger, "anomaly_watch", None) is not None:
                r.register(AnomalyCollector(ledger.anomaly_watch))
        self._children: dict[tuple[str | None, ...], tuple[Any, ...]] = {}
        self._values: tuple[set[str], ...] = (set(), set(), set(), set())  # per label: values in use
        self._request_children: dict[tuple[str, int], Any] = {}

    def observe(self, e: UsageEvent) -> None:
        """Count one recorded event."""
        key = (e.provider, e.model, e.team, e.agent)
        children = self._children.get(key)
        if children is None:
            children = self._children_of(key)
        counts = (e.input_tokens, e.output_tokens, e.cache_read_tokens, e.cache_write_tokens, e.reasoning_tokens)
        for child, n in zip(children, counts, strict=False):
            if n:
                child.inc(n)
        if e.cost_usd is not None and e.cost_usd > 0:
            children[-1].inc(float(e.cost_usd))
        self._events.labels(e.kind).inc()

    def _children_of(self, key: tuple[str | None, ...]) -> tuple[Any, ...]:
        """The counters of a label set never seen: its own while the bounds allow, else those of
        `_other` in each label past its bound (all four past MAX_SERIES)."""
        if len(self._children) >= MAX_SERIES:
            values = [OTHER] * 4
        else:
            values = []
            for v, seen in zip(key, self._values, strict=True):
                v = v or ""
                if v not in seen:
                    if len(seen) >= MAX_LABEL_VALUES:
                        v = OTHER
                    else:
                        seen.add(v)
                values.append(v)
        bounded = tuple(values)
        children = self._children.get(bounded)
        if children is None:
            children = (*(self._tokens.labels(t, *values) for t in TOKEN_TYPES), self._cost.labels(*values))
            self._children[bounded] = children
        if bounded != key and len(self._children) < MAX_SERIES:
            self._children[key] = children  # the next event of this set finds its counters at once
        return children

    def request(self, route: str, status: int) -> None:
        child = self._request_children.get((route, status))
        if child is None:
            child = self._request_children[(route, status)] = self._requests.labels(route, str(status))
        child.inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class CountingLedger:
    """A ledger that also counts every event it records into the server's metrics. Everything
    else is the wrapped ledger's (budgets, flush, …)."""

    def __init__(self, ledger: Ledger, metrics: Metrics) -> None:
        self._ledger = ledger
        self._metrics = metrics

    def record(self, event: UsageEvent, *, session: Session | None = None) -> UsageEvent:
        out = self._ledger.record(event, session=session)
        try:
            self._metrics.observe(event)
        except Exception:
            log.exception("tokentrail: counting an event into the metrics failed")
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ledger, name)


class _BudgetCollector(Collector):
    """`tokentrail_budget_used_ratio{budget}`: (posted + reserved) / limit of each budget's
    current period, read from the ledger at scrape time."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def collect(self) -> Iterator[Metric]:
        g = GaugeMetricFamily(
            "tokentrail_budget_used_ratio",
            "Share of each budget's limit used in its current period (posted + reserved) / limit.",
            labels=["budget"],
        )
        try:
            from tokentrail.server.budget_view import budget_ratios

            for name, ratio in budget_ratios(self.ledger, team=None):
                g.add_metric([name], ratio)
        except Exception:
            log.exception("tokentrail: reading budgets for /metrics failed")
        yield g


class AnomalyCollector:
    """`tokentrail_anomalies_total{kind}`: anomalies this process raised (no session or user label)."""

    def __init__(self, watch: Any) -> None:
        self.watch = watch

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily

        family = CounterMetricFamily(
            "tokentrail_anomalies", "Anomalies raised by this process, by kind.", labels=["kind"]
        )
        for kind, n in sorted(self.watch.counts.items()):
            family.add_metric([kind], n)
        yield family
