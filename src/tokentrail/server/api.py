"""The JSON API under /api/v1/: the CLI's reports over HTTP, for the dashboard and any client.

The same filters as the CLI (`by`, `since`, `until`, `tz`, repeatable `where=KEY=VALUE`, `limit`)
and the same report functions (tokentrail.analytics.reports). Every read is scoped by the caller's key: a
team key reads only its team's rows, and asking for another team is a 403, never an empty
answer that could be mistaken for "no spend".
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tokentrail.analytics import reports
from tokentrail.analytics import sessions as session_reports
from tokentrail.exceptions import TokentrailError
from tokentrail.server.auth import AuthError
from tokentrail.server.budget_view import alerts, budget_statuses
from tokentrail.server.heavy import busy
from tokentrail.server.heavy import run as run_heavy
from tokentrail.server.keys import ApiKey
from tokentrail.server.state import auth_error, caller, error, state_of
from tokentrail.store.reports import dimension
from tokentrail.timespec import parse_time, zone

MAX_LIMIT = 1000
MAX_OFFSET = 100_000  # paging deeper than this: narrow the range or the filters instead


class BadRequest(TokentrailError, ValueError):
    """A query or body the API cannot take (400)."""


def _times(request: Request) -> tuple[datetime | None, datetime | None, str | None]:
    q = request.query_params
    tz = q.get("tz") or None
    try:
        zone(tz)
    except ValueError as e:
        raise BadRequest(f"tz: {e}") from None
    now = datetime.now().astimezone()
    out: list[datetime | None] = []
    for name in ("since", "until"):
        text: str | None = q.get(name)
        try:
            out.append(parse_time(text, tz=tz, now=now) if text else None)
        except ValueError as e:
            raise BadRequest(f"{name}: {e}") from None
    return out[0], out[1], tz


def _where(request: Request, key: ApiKey, extra: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """`where=KEY=VALUE` items (the same key twice means either) and the `extra` parameters
    (`agent=…`), keyed by canonical dimension: names are normalised here, once, by the report
    layer's own rule, so the check below sees what the query will. Asking a scoped dimension for
    any value but the key's own is a 403; the scope itself is AND-ed in by the report layer."""
    out: dict[str, list[str]] = {}
    q = request.query_params
    items = [*q.getlist("where"), *(f"{name}={v}" for name in extra for v in q.getlist(name))]
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k.strip():
            raise BadRequest(f"where {item!r}: expected KEY=VALUE, e.g. where=team=legal")
        out.setdefault(dimension(k), []).append(v.strip())
    for dim, value in key.attribution.items():
        asked = out.get(dimension(dim), [value])
        if any(v != value for v in asked):
            raise AuthError(403, f"this key reads only {dim}={value}")
    return out


def _limit(request: Request, default: int) -> int:
    text = request.query_params.get("limit")
    if text is None:
        return default
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise BadRequest(f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return int(text)


def _endpoint(role: str, heavy: str | None = None) -> Callable[[Callable[..., Any]], Callable[[Request], Any]]:
    """Wrap a handler (request, key) -> JSON-ready data: auth, 400s for bad input, work in a thread.
    `heavy` (what the route does): its work grows with the ledger, so it runs only in a free slot
    of the server's heavy runs (tokentrail.server.heavy), else a 429."""

    def wrap(fn: Callable[..., Any]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            try:
                key = caller(request, role)
                if heavy is None:
                    data = await asyncio.to_thread(fn, request, key)
                else:
                    runs = state_of(request).heavy
                    slot = await runs.take()
                    if slot is None:
                        return busy(heavy, runs)
                    data = await run_heavy(slot, fn, request, key)
            except AuthError as e:
                return auth_error(e)
            except BadRequest as e:
                return error(400, str(e))
            except LookupError as e:
                if isinstance(e, (KeyError, IndexError)):
                    raise
                return error(404, str(e))
            except ValueError as e:  # the report layer's word on a bad dimension, range, …
                return error(400, str(e))
            return JSONResponse(data)

        endpoint.__name__ = fn.__name__
        endpoint.__doc__ = fn.__doc__
        return endpoint

    return wrap


@_endpoint("read")
def report(request: Request, key: ApiKey) -> dict[str, Any]:
    """Spend grouped by `by` (comma-separated dimensions, `tag.<key>`, `hour`, `day`)."""
    since, until, tz = _times(request)
    by = [p.strip() for p in request.query_params.get("by", "model").split(",") if p.strip()]
    where = _where(request, key)
    store = state_of(request).store
    rep = reports.report(store, by=by, since=since, until=until, where=where, tz=tz, scope=key.attribution)
    return rep.to_dict()


def _offset(request: Request) -> int:
    text = request.query_params.get("offset")
    if text is None:
        return 0
    if not text.isdigit() or int(text) > MAX_OFFSET:
        raise BadRequest(f"offset must be a whole number from 0 to {MAX_OFFSET}")
    return int(text)


@_endpoint("read")
def sessions(request: Request, key: ApiKey) -> dict[str, Any]:
    """The newest sessions started in [since, until), with their totals: a page of `limit` after
    `offset` of them; `more` says whether another page follows."""
    since, until, _ = _times(request)
    where = _where(request, key, ("agent", "team", "user", "customer"))
    limit, offset = _limit(request, 50), _offset(request)
    page = session_reports.session_page(
        state_of(request).store,
        since=since,
        until=until,
        where=where,
        limit=limit + 1,
        offset=offset,
        scope=key.attribution,
    )
    found = page.sessions
    return {
        "sessions": [_session_dict(s) for s in found[:limit]],
        "offset": offset,
        "limit": limit,
        "more": len(found) > limit,
        "scanned": page.scanned,
        **({"note": page.note} if page.note else {}),
    }


def _session_dict(s: session_reports.SessionSummary) -> dict[str, Any]:
    return {
        "session_id": s.session_id,
        "agent": s.agent,
        "team": s.team,
        "user": s.user,
        "started": s.started.isoformat(),
        "ended": s.ended.isoformat(),
        "calls": s.calls,
        "tool_calls": s.tool_calls,
        "tokens": s.tokens,
        "cost_usd": None if s.cost_usd is None else format(s.cost_usd, "f"),  # None: unpriced, never $0
        "unpriced_calls": s.unpriced_calls,
        "errors": s.errors,
        "estimated_calls": s.estimated_calls,
        "outcomes": dict(s.outcomes),
    }


@_endpoint("read", heavy="a session's events")
def session(request: Request, key: ApiKey) -> dict[str, Any]:
    """One session as a call tree. A team key sees only its team's events of the session: session
    ids are per team, and an id only another team used is a 404 like any unknown one."""
    sid = request.path_params["session_id"]
    from tokentrail.analytics.session_marks import marks_of

    store = state_of(request).store
    detail = session_reports.session_detail(store, sid, scope=key.attribution)
    return {**detail.to_dict(), **marks_of(store, detail, dict(key.attribution)).to_dict()}


@_endpoint("read")
def budgets(request: Request, key: ApiKey) -> dict[str, Any]:
    """Each budget's current period: limit, posted, reserved, remaining, period end, and whether
    an overage locked it (`locked`, until `blocked_until`); and the kill switches in force
    (`suspensions`). A scoped key sees only those inside its scope (its team's)."""
    ledger = state_of(request).ledger
    rows = [s.to_dict() for s in budget_statuses(ledger, key.attribution)]
    found = ledger.budgets.suspensions()
    suspensions = [
        {
            "scope": s.scope_text,
            "reason": s.reason,
            "since": s.created.isoformat() if s.created else None,
        }
        for s in found
        if all(dict(s.scope).get(d) == v for d, v in key.attribution.items())
    ]
    return {"budgets": rows, "suspensions": suspensions}


@_endpoint("read")
def alert_list(request: Request, key: ApiKey) -> dict[str, Any]:
    """Budget alerts, newest first."""
    since, until, _ = _times(request)
    found = alerts(
        state_of(request).ledger,
        key.attribution,
        since=since,
        until=until,
        budget=request.query_params.get("budget"),
        limit=_limit(request, 200),
    )
    return {"alerts": found}


@_endpoint("read")
def unpriced(request: Request, key: ApiKey) -> dict[str, Any]:
    """Models with calls that have no price (admin and all-team keys only: models span teams)."""
    if key.attribution:
        raise AuthError(403, "unpriced models span teams: use a key of no team")
    since, _, _ = _times(request)
    found = reports.unpriced_models(state_of(request).store, since=since)
    return {
        "models": [
            {
                "provider": m.provider,
                "model": m.model,
                "calls": m.calls,
                "first_seen": m.first_seen.isoformat(),
                "last_seen": m.last_seen.isoformat(),
            }
            for m in found
        ]
    }


@_endpoint("read")
def me(request: Request, key: ApiKey) -> dict[str, Any]:
    """Who the caller is: role and scope (the dashboard asks first)."""
    return {
        "role": key.role,
        "team": key.team,
        "attribution": dict(key.attribution),
        "auth_required": state_of(request).keys.auth_required,
    }
