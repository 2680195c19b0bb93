"""Anomalies as the CLI, the API and `tokentrail session` show them: one dict shape for a found
anomaly and a stored row (amounts exact, in plain form: never a float)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tokentrail.events import nano_to_usd

FIELDS = (
    "kind",
    "severity",
    "ts",
    "session_id",
    "agent",
    "team",
    "project",
    "user",
    "task_type",
    "metric",
    "baseline",
    "threshold",
    "cost_usd",
    "event_ids",
    "message",
)
_ATTRS = ("org", "team", "project", "agent", "user", "customer", "workflow", "task_type")


def from_anomaly(a: Any) -> dict[str, Any]:
    return {
        "kind": a.kind,
        "severity": a.severity,
        "ts": datetime.fromtimestamp(a.ts_us / 1e6, UTC).isoformat(),
        "session_id": a.session_id,
        **dict(zip(_ATTRS, a.attrs, strict=True)),
        "metric": a.metric,
        "baseline": a.baseline,
        "threshold": a.threshold,
        "cost_usd": None if a.cost_nusd is None else str(nano_to_usd(a.cost_nusd)),
        "event_ids": list(a.event_ids),
        "message": a.message,
    }


def from_stored(r: dict[str, Any]) -> dict[str, Any]:
    """A stored anomaly row (store/anomalies.select) as the CLI and API show it."""
    out = {k: r.get(k) for k in FIELDS if k not in ("ts", "cost_usd")}
    out["ts"] = datetime.fromtimestamp(r["ts_us"] / 1e6, UTC).isoformat()
    out["cost_usd"] = None if r.get("cost_nusd") is None else str(nano_to_usd(r["cost_nusd"]))
    return out
