"""Reconciliation runs over HTTP (`GET /api/v1/reconciliations[/{run_id}]`) and their coverage
gauge in /metrics. A provider's bill is org-wide spend: only keys of no team read it (a team key
gets a 403, as for unpriced models); the gauge is labelled by provider only."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request

from tokentrail.analytics.reconcile_files import PROVIDERS
from tokentrail.server.api import BadRequest, _endpoint, _limit
from tokentrail.server.auth import AuthError
from tokentrail.server.keys import ApiKey
from tokentrail.server.state import state_of
from tokentrail.store import reconcile as runs

log = logging.getLogger("tokentrail")


def _org_wide(key: ApiKey) -> None:
    if key.attribution:
        raise AuthError(403, "reconciliations compare the whole organization's bill: use a key of no team")


@_endpoint("read")
def reconciliations(request: Request, key: ApiKey) -> dict[str, Any]:
    """The latest reconciliation runs (`provider=`, `limit=`), newest first, without their cells."""
    _org_wide(key)
    provider = request.query_params.get("provider") or None
    if provider is not None and provider not in PROVIDERS:
        raise BadRequest(f"provider must be one of {', '.join(PROVIDERS)}")
    return {"runs": runs.list_runs(state_of(request).store, provider=provider, limit=_limit(request, 50))}


@_endpoint("read")
def reconciliation(request: Request, key: ApiKey) -> dict[str, Any]:
    """One run with its cells (day × model: both sides, the difference, the verdict)."""
    _org_wide(key)
    run_id = request.path_params["run_id"]
    found = runs.get_run(state_of(request).store, run_id) if run_id.isalnum() and len(run_id) <= 64 else None
    if found is None:
        raise LookupError(f"no reconciliation run {run_id[:64]!r}")
    return found


class CoverageCollector(Collector):
    """`tokentrail_reconcile_coverage_ratio{provider}`: the share of the provider's spend the
    ledger metered, from each provider's latest stored run (read at scrape time)."""

    def __init__(self, ledger: Any) -> None:
        self.ledger = ledger

    def collect(self) -> Iterator[Metric]:
        g = GaugeMetricFamily(
            "tokentrail_reconcile_coverage_ratio",
            "Share of the provider's spend the ledger metered, in the latest reconciliation run.",
            labels=["provider"],
        )
        try:
            for provider, coverage in runs.latest_coverage(self.ledger.store).items():
                if provider in PROVIDERS:  # bounded: never a label a row could grow
                    g.add_metric([provider], float(coverage))
        except Exception:
            log.exception("tokentrail: reading reconciliation runs for /metrics failed")
        yield g
