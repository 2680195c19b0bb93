"""`GET /api/v1/anomalies`: the stored anomalies, newest first, scoped by the caller's key exactly as
the report and sessions routes are (the key's attribution AND-ed in; asking for another team is a
403). Filters: since, until, kind (repeatable), agent, team, user, session, where=KEY=VALUE, limit."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from tokentrail.analytics.config import KINDS
from tokentrail.server.api import BadRequest, _endpoint, _limit, _times, _where
from tokentrail.server.auth import AuthError
from tokentrail.server.keys import ApiKey
from tokentrail.server.state import state_of

# report dimension -> anomalies column
_COLUMN = {
    "org": "org",
    "team": "team",
    "project": "project",
    "agent": "agent",
    "user": "user_id",
    "customer": "customer",
    "workflow": "workflow",
    "task_type": "task_type",
    "session_id": "session_id",
}


@_endpoint("read")
def anomaly_list(request: Request, key: ApiKey) -> dict[str, Any]:
    """Anomalies found by the detectors (online, or `tokentrail anomalies --rescan`), newest first."""
    from tokentrail.analytics.anomaly_rows import from_stored
    from tokentrail.store import anomalies as sql

    since, until, _ = _times(request)
    kinds = request.query_params.getlist("kind")
    for k in kinds:
        if k not in KINDS:
            raise BadRequest(f"kind: unknown kind {k[:64]!r} (kinds: {', '.join(KINDS)})")
    asked = _where(request, key, ("agent", "team", "user", "session_id"))
    where: dict[str, Any] = {}
    for dim, values in asked.items():
        if dim not in _COLUMN:
            raise BadRequest(f"anomalies cannot be filtered by {dim!r}")
        where[_COLUMN[dim]] = values
    for dim, value in key.attribution.items():  # the key's scope, AND-ed in (never widened)
        column = _COLUMN.get(dim)
        if column is None:
            raise AuthError(403, f"this key's scope ({dim}) does not apply to anomalies")
        where[column] = [value]
    if kinds:
        where["kind"] = kinds
    rows = sql.select(
        state_of(request).store,
        since_us=None if since is None else int(since.timestamp() * 1_000_000),
        until_us=None if until is None else int(until.timestamp() * 1_000_000),
        where=where,
        limit=_limit(request, 200),
    )
    return {"anomalies": [from_stored(r) for r in rows]}
