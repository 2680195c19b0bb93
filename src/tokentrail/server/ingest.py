"""`POST /api/v1/events`: usage events from any language, in JSON batches.

Body: `{"events": [...]}` (or a bare array), at most MAX_EVENTS_PER_BATCH events and
MAX_EVENTS_BODY_BYTES bytes (413 past either). Each event is checked on its own
(tokentrail.server.validate): good events of a mixed batch are kept, bad ones go to the
`quarantine` table with their reason, and the answer lists a result per event, in order.
`event_id` makes a batch safe to send again: an id already stored (or sent earlier in the batch)
with the same content is reported as a duplicate and counted once; with different content (in
anything but what the server fills in: see validate.differences) it is rejected, its result
naming the differing `fields`, and quarantined like any other reject, never silently dropped.
The answer comes only once the accepted events are durable.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tokentrail.events import COLUMNS, UsageEvent, to_row
from tokentrail.exceptions import FlushTimeout
from tokentrail.server.auth import AuthError
from tokentrail.server.state import (
    MAX_EVENTS_BODY_BYTES,
    MAX_EVENTS_PER_BATCH,
    TooLarge,
    auth_error,
    caller,
    error,
    read_body,
    state_of,
)
from tokentrail.server.validate import CONFLICT, Checked, Invalid, build, check, differences

log = logging.getLogger("tokentrail")
_ID_CHUNK = 500


async def ingest_events(request: Request) -> Response:
    try:
        key = caller(request, "ingest")
    except AuthError as e:
        return auth_error(e)
    state = state_of(request)
    try:
        raw = await read_body(request, MAX_EVENTS_BODY_BYTES)
    except TooLarge:
        return error(413, f"the body is over {MAX_EVENTS_BODY_BYTES} bytes: send smaller batches")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        return error(400, f"the body is not JSON: {e}")
    items = body.get("events") if isinstance(body, dict) else body
    if not isinstance(items, list) or (isinstance(body, dict) and set(body) != {"events"}):
        return error(400, 'the body must be {"events": [ ... ]} or an array of events')
    if len(items) > MAX_EVENTS_PER_BATCH:
        return error(413, f"{len(items)} events in one batch; the limit is {MAX_EVENTS_PER_BATCH}")
    fixed = dict(key.attribution)
    ledger = state.ledger
    results: list[dict[str, Any]] = []
    good: list[tuple[int, UsageEvent, Checked]] = []
    for i, item in enumerate(items):
        try:
            checked = check(item, fixed=fixed)
            event = build(ledger, checked)
        except Invalid as e:
            results.append({"index": i, "status": "rejected", "reason": str(e), **_id_of(item)})
            ledger.quarantine("api", str(e), _payload(item))
            continue
        results.append({"index": i, "status": "accepted", "event_id": event.event_id})
        good.append((i, event, checked))
    known = await _stored_rows(state.store, [e.event_id for _, e, _ in good])
    for i, event, checked in good:
        prior = known.get(event.event_id)
        if prior is None:
            known[event.event_id] = to_row(event)
            ledger.record(event)
            ledger.charge(event)  # unreserved spend reaches the budgets
            continue
        differ = differences(prior, event, checked)
        if not differ:
            results[i]["status"] = "duplicate"
            continue
        results[i].update(status="rejected", reason=CONFLICT, fields=differ)
        ledger.quarantine("api", CONFLICT, _payload(items[i]))
    try:
        await state.flush()
    except FlushTimeout as e:
        log.error("tokentrail: events accepted over HTTP are not durable yet: %s", e)
        return error(503, "the ledger could not make the events durable in time; send the batch again")
    counts = {s: sum(1 for r in results if r["status"] == s) for s in ("accepted", "duplicate", "rejected")}
    status = 422 if items and counts["rejected"] == len(items) else 200
    return JSONResponse({**counts, "results": results}, status_code=status)


def _id_of(item: Any) -> dict[str, Any]:
    if isinstance(item, dict) and isinstance(item.get("event_id"), str) and len(item["event_id"]) <= 64:
        return {"event_id": item["event_id"]}
    return {}


def _payload(item: Any) -> str:
    return json.dumps(item, ensure_ascii=False, default=str)


async def _stored_rows(store: Any, ids: list[str]) -> dict[str, tuple[Any, ...]]:
    """The stored rows (tokentrail.events.COLUMNS) of those of these event ids the ledger holds."""
    if not ids:
        return {}
    import asyncio

    return await asyncio.to_thread(_query_rows, store, ids)


def _query_rows(store: Any, ids: list[str]) -> dict[str, tuple[Any, ...]]:
    p = store.dialect.param
    cast = "::uuid" if store.dialect.name == "postgresql" else ""
    found: dict[str, tuple[Any, ...]] = {}
    unique = list(dict.fromkeys(ids))
    for i in range(0, len(unique), _ID_CHUNK):
        chunk = unique[i : i + _ID_CHUNK]
        sql = f"SELECT {', '.join(COLUMNS)} FROM events WHERE event_id IN ({', '.join(f'{p}{cast}' for _ in chunk)})"
        for r in store.query(sql, chunk):
            found.setdefault(str(r[0]), tuple(r))
    return found
