"""SQL of the reconciliation runs (`reconcile_runs`, migration 0015): append, list, read."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from tokentrail.events import from_micros, ts_micros
from tokentrail.types import Store

_SUMMARY = (
    "run_id, created_us, provider, since_us, until_us, source, tolerance, provider_cost_usd, ledger_cost_usd, "
    "coverage, verdicts"
)
MAX_LIST = 500


def save_run(store: Store, run: dict[str, Any], *, source: str, now: datetime | None = None) -> str:
    """Append one run (a Reconciliation.to_dict()); returns its id."""
    run_id = uuid.uuid4().hex
    p = store.dialect.param
    store.execute_write(
        f"INSERT INTO reconcile_runs ({_SUMMARY}, cells) VALUES ({', '.join([p] * 12)})",
        (
            run_id,
            ts_micros(now or datetime.now(UTC)),
            run["provider"],
            ts_micros(datetime.fromisoformat(run["since"])),
            ts_micros(datetime.fromisoformat(run["until"])),
            source,
            run["tolerance"],
            run["provider_cost_usd"],
            run["ledger_cost_usd"],
            run["coverage"],
            json.dumps(run["verdicts"]),
            json.dumps(run["cells"]),
        ),
    )
    return run_id


def _summary(row: Any) -> dict[str, Any]:
    run_id, created, provider, since, until, source, tol, pcost, lcost, cov, verdicts = row[:11]
    return {
        "run_id": run_id,
        "created": from_micros(int(created)).isoformat(),
        "provider": provider,
        "since": from_micros(int(since)).isoformat(),
        "until": from_micros(int(until)).isoformat(),
        "source": source,
        "tolerance": tol,
        "provider_cost_usd": pcost,
        "ledger_cost_usd": lcost,
        "coverage": cov,
        "verdicts": json.loads(verdicts),
    }


def list_runs(store: Store, *, provider: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """The latest runs first (without their cells)."""
    p = store.dialect.param
    where, params = (f" WHERE provider = {p}", [provider]) if provider else ("", [])
    rows = store.query(
        f"SELECT {_SUMMARY} FROM reconcile_runs{where} ORDER BY created_us DESC, run_id LIMIT {p}",
        [*params, max(1, min(int(limit), MAX_LIST))],
    )
    return [_summary(r) for r in rows]


def get_run(store: Store, run_id: str) -> dict[str, Any] | None:
    """One run with its cells, or None."""
    p = store.dialect.param
    rows = store.query(f"SELECT {_SUMMARY}, cells FROM reconcile_runs WHERE run_id = {p}", [run_id])
    if not rows:
        return None
    return {**_summary(rows[0]), "cells": json.loads(rows[0][11])}


def latest_coverage(store: Store) -> dict[str, str]:
    """Each provider's coverage in its latest run (the Prometheus gauge)."""
    rows = store.query(
        "SELECT r.provider, r.coverage FROM reconcile_runs r JOIN (SELECT provider, MAX(created_us) AS c "
        "FROM reconcile_runs GROUP BY provider) m ON r.provider = m.provider AND r.created_us = m.c "
        "WHERE r.coverage IS NOT NULL ORDER BY r.provider"
    )
    return {str(provider): str(cov) for provider, cov in rows}
