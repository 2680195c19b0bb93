"""The savings advisor over HTTP (tokentrail.analytics.advise).

- `GET /api/v1/advice?since=30d&agent=…&kind=…&all=true`: the recommendations, best monthly saving
  first, with their evidence and how each saving was computed.
- `POST /api/v1/advice/{id}/dismiss` (same query): dismiss one for good.

A key's attribution is AND-ed into what is read (a team key sees its team's agents only), and a
key can dismiss only a recommendation it can see: an id of another team's is a 404, as if it did
not exist. A recommendation covers all the calls of its (team, agent, task type), so a key scoped
more narrowly than that (by project, customer, user, …) sees it computed from part of them and
cannot dismiss it for everyone: a 403. Dismissing needs the read role, like seeing the advice.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from starlette.requests import Request

from tokentrail.server.api import BadRequest, _endpoint, _times, _where
from tokentrail.server.auth import AuthError
from tokentrail.server.keys import ApiKey
from tokentrail.server.state import state_of

DEFAULT_DAYS = 30
MAX_ID = 128
ID_DIMENSIONS = ("team", "agent", "task_type")  # what a recommendation's id covers


def _query(request: Request, key: ApiKey) -> dict[str, Any]:
    from tokentrail.analytics.advise import KINDS

    since, until, _ = _times(request)
    kinds = request.query_params.getlist("kind")
    for k in kinds:
        if k not in KINDS:
            raise BadRequest(f"kind: unknown kind {k[:64]!r} (kinds: {', '.join(KINDS)})")
    show_all = request.query_params.get("all", "false").lower()
    if show_all not in ("true", "false", "1", "0"):
        raise BadRequest("all must be true or false")
    if since is None:
        since = (until or datetime.now().astimezone()) - timedelta(days=DEFAULT_DAYS)
    return {
        "since": since,
        "until": until,
        "where": _where(request, key, ("agent", "team", "task_type")) or None,
        "scope": key.attribution,
        "kinds": tuple(kinds) or KINDS,
        "include_dismissed": show_all in ("true", "1"),
    }


def _book() -> Any:
    from tokentrail.pricing import default_price_book

    return default_price_book()


@_endpoint("read", heavy="advice")
def advice(request: Request, key: ApiKey) -> dict[str, Any]:
    """Savings advice for the key's scope over `since` (default the last 30 days)."""
    from tokentrail.analytics.advise import advise

    return advise(state_of(request).store, _book(), **_query(request, key)).to_dict()


@_endpoint("read", heavy="advice")
def dismiss(request: Request, key: ApiKey) -> dict[str, Any]:
    """Dismiss a recommendation the key can see (404 otherwise); it stays dismissed."""
    from tokentrail.analytics.advise import dismiss as dismiss_advice

    rec_id = request.path_params["advice_id"]
    if not rec_id or len(rec_id) > MAX_ID:
        raise BadRequest(f"a recommendation id has 1 to {MAX_ID} characters")
    narrower = sorted(d for d in key.attribution if d not in ID_DIMENSIONS)
    if narrower:
        raise AuthError(
            403, f"this key sees only part of a recommendation's calls ({narrower[0]}=…): a team key dismisses it"
        )
    q = _query(request, key)
    found = dismiss_advice(
        state_of(request).store,
        _book(),
        rec_id,
        since=q["since"],
        until=q["until"],
        where=q["where"],
        scope=q["scope"],
        by=key.key_id,
    )
    return {"dismissed": found.to_dict()}


__all__ = ["advice", "dismiss"]
