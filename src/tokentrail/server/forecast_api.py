"""GET /api/v1/forecast: the month-end spend projection of `tokentrail forecast` over HTTP.

Scoped like every read: `where=KEY=VALUE` filters, and the key's attribution is AND-ed in by the
report layer (a team key forecasts only its team; asking for another team is a 403).
"""

from __future__ import annotations

from datetime import date
from typing import Any

from starlette.requests import Request

from tokentrail.server.api import BadRequest, _endpoint, _where
from tokentrail.server.keys import ApiKey
from tokentrail.server.state import state_of
from tokentrail.store.reports import dimension
from tokentrail.timespec import zone


@_endpoint("read")
def forecast(request: Request, key: ApiKey) -> dict[str, Any]:
    """Spend projected to the end of the month with an 80 % band, per `by` value if given."""
    from tokentrail.analytics.forecast_ledger import forecast as project

    q = request.query_params
    tz = q.get("tz") or None
    try:
        zone(tz)
    except ValueError as e:
        raise BadRequest(f"tz: {e}") from None
    by = (q.get("by") or "").strip() or None
    if by is not None:
        if by in ("hour", "day") or "," in by:
            raise BadRequest(f"by {by!r}: forecast by one attribution dimension, e.g. by=team")
        by = dimension(by)
    as_of = None
    if q.get("as_of"):
        try:
            as_of = date.fromisoformat(q["as_of"].strip())
        except ValueError:
            raise BadRequest(f"as_of {q['as_of']!r}: expected a date YYYY-MM-DD") from None
    where = _where(request, key)
    store = state_of(request).store
    results = project(store, as_of=as_of, tz=tz, where=where, scope=key.attribution, by=by)
    return {"tz": tz or "UTC", "where": where, "by": by, "forecasts": [f.to_dict() for f in results]}
