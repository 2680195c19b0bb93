"""Unit economics and agent trees over HTTP, and outcomes for callers that do not use the SDK.

- `GET /api/v1/economics?by=agent&tree=true&since=…&where=…`: the metrics of docs/metrics.md.
- `GET /api/v1/trees/{session_id}`: the agent tree under a session, own and total cost per node.
- `POST /api/v1/outcomes` (ingest role): `{"outcomes": [{"outcome_id", "session_id", "name",
  "count", "success", "value_usd"}]}`; `outcome_id` makes a retry count once.
- The gateway header `X-Tokentrail-Outcome: NAME` (with `X-Tokentrail-Outcome-Success: false`,
  `X-Tokentrail-Outcome-Value: 2.50`) records an outcome of the request's session once the
  provider answered it successfully.

Every read and write takes the key's attribution as an AND-ed scope (a team key's tree sums only
its team's events) or, for writes, as the values written: never widened.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tokentrail.analytics.economics import METRICS, unit_economics
from tokentrail.analytics.trees import session_tree
from tokentrail.context import Attribution
from tokentrail.events import bound_text, text_problem, usd_to_nano
from tokentrail.server.api import BadRequest, _endpoint, _times, _where
from tokentrail.server.auth import AuthError
from tokentrail.server.keys import ApiKey
from tokentrail.server.state import TooLarge, auth_error, caller, error, read_body, state_of

MAX_OUTCOMES = 1000  # per request
MAX_OUTCOMES_BODY = 1_000_000
MAX_VALUE_USD = Decimal(1_000_000)
_DIMS = ("org", "team", "project", "agent", "user", "customer", "workflow", "task_type")
_FIELDS = frozenset(("outcome_id", "session_id", "name", "count", "success", "value_usd", *_DIMS))


@_endpoint("read", heavy="economics")
def economics(request: Request, key: ApiKey) -> dict[str, Any]:
    """Unit economics by `by` (comma-separated report dimensions); `tree=true` rolls agent trees up."""
    since, until, _ = _times(request)
    q = request.query_params
    by = [p.strip() for p in q.get("by", "agent").split(",") if p.strip()]
    tree = q.get("tree", "false").lower()
    if tree not in ("true", "false", "1", "0"):
        raise BadRequest("tree must be true or false")
    rep = unit_economics(
        state_of(request).store,
        by=by,
        since=since,
        until=until,
        where=_where(request, key),
        scope=key.attribution,
        tree=tree in ("true", "1"),
    )
    return rep.to_dict()


@_endpoint("read", heavy="an agent tree")
def tree(request: Request, key: ApiKey) -> dict[str, Any]:
    """The agent tree under a session (only the key's scope counts); 404 when none of it is in scope."""
    sid = request.path_params["session_id"]
    found = session_tree(state_of(request).store, sid, scope=key.attribution)
    if found is None:
        raise LookupError(f"no session {sid!r}")
    return found.to_dict()


def _value(text: object, where: str) -> Decimal | None:
    if text is None:
        return None
    if isinstance(text, bool):
        raise ValueError(f"{where} must be a number of US dollars")
    try:
        v = Decimal(str(text).strip())
    except InvalidOperation:
        raise ValueError(f"{where} {str(text)[:64]!r} is not a number") from None
    if not v.is_finite() or v < 0 or v > MAX_VALUE_USD:
        raise ValueError(f"{where} must be between 0 and {MAX_VALUE_USD:,}")
    return v


def _name(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where} must be a non-empty string")
    if (why := text_problem(value)) is not None:
        raise ValueError(f"{where} {why}")
    return bound_text(value.strip()) or ""


def outcome_from_headers(
    headers: Mapping[str, str], attribution: Attribution
) -> tuple[str, bool, Decimal | None] | None:
    """The outcome a gateway request declares (X-Tokentrail-Outcome[-Success|-Value]), or None;
    ValueError (a 400) when it is malformed or the request names no session."""
    name = headers.get("x-tokentrail-outcome")
    if name is None:
        if "x-tokentrail-outcome-success" in headers or "x-tokentrail-outcome-value" in headers:
            raise ValueError("X-Tokentrail-Outcome-Success/-Value need X-Tokentrail-Outcome")
        return None
    name = _name(name, "the X-Tokentrail-Outcome header")
    if not attribution.session_id:
        raise ValueError("an outcome belongs to a session: send X-Tokentrail-Session with X-Tokentrail-Outcome")
    success = headers.get("x-tokentrail-outcome-success", "true").strip().lower()
    if success not in ("true", "false"):
        raise ValueError("X-Tokentrail-Outcome-Success must be true or false")
    value = _value(headers.get("x-tokentrail-outcome-value"), "X-Tokentrail-Outcome-Value")
    return name, success == "true", value


def _outcome_row(obj: Any, fixed: Mapping[str, str]) -> tuple[Any, ...]:
    if not isinstance(obj, dict):
        raise ValueError("an outcome must be a JSON object")
    unknown = sorted(set(obj) - _FIELDS)
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(repr(u[:64]) for u in unknown[:5])}")
    oid = _name(obj.get("outcome_id"), "outcome_id")
    sid = _name(obj.get("session_id"), "session_id")
    name = _name(obj.get("name"), "name")
    count = obj.get("count", 1)
    if type(count) is not int or not 1 <= count <= 1_000_000:
        raise ValueError("count must be a whole number from 1 to 1,000,000")
    success = obj.get("success", True)
    if type(success) is not bool:
        raise ValueError("success must be true or false")
    value = _value(obj.get("value_usd"), "value_usd")
    dims: dict[str, str | None] = {}
    for d in _DIMS:
        v = obj.get(d)
        dims[d] = None if v is None else _name(v, d)
    for d, v in fixed.items():
        if dims.get(d) is not None and dims[d] != v:
            raise ValueError(f"this key writes only {d}={v}; the outcome says {d}={dims[d]}")
        dims[d] = v
    return (
        oid, int(time.time() * 1_000_000), name, count, sid,
        *(dims[d] for d in _DIMS), 1 if success else 0, usd_to_nano(value),
    )  # fmt: skip


async def ingest_outcomes(request: Request) -> Response:
    """POST /api/v1/outcomes: the whole batch is checked first (400 naming the bad item, nothing
    written), then written; an outcome_id already stored is skipped."""
    try:
        key = caller(request, "ingest")
    except AuthError as e:
        return auth_error(e)
    try:
        raw = await read_body(request, MAX_OUTCOMES_BODY)
    except TooLarge:
        return error(413, f"the body is over {MAX_OUTCOMES_BODY} bytes: send smaller batches")
    try:
        body = json.loads(raw)
    except ValueError:
        return error(400, "the body is not JSON")
    items = body.get("outcomes") if isinstance(body, dict) else body
    if not isinstance(items, list) or not items:
        return error(400, 'expected {"outcomes": [...]} with at least one outcome')
    if len(items) > MAX_OUTCOMES:
        return error(413, f"at most {MAX_OUTCOMES} outcomes per request")
    rows = []
    for i, obj in enumerate(items):
        try:
            rows.append(_outcome_row(obj, key.attribution))
        except ValueError as e:
            return error(400, f"outcome {i}: {e}")
    store = state_of(request).store
    written = await asyncio.to_thread(store.write_outcomes, rows)
    return JSONResponse({"accepted": written, "duplicate": len(rows) - written})


__all__ = ["METRICS", "economics", "ingest_outcomes", "outcome_from_headers", "tree"]
