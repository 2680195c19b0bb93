"""`POST /api/v1/events`: usage events from any language, in JSON batches.

Body: `{"events": [...]}` (or a bare array), at most MAX_EVENTS_PER_BATCH events and
MAX_EVENTS_BODY_BYTES bytes (413 past either). Each event is checked on its own
(tokentrail.server.validate): good events of a mixed batch are kept, bad ones go to the
`quarantine` table with their reason, and the answer lists a result per event, in order.
`event_id` makes a batch safe to send again: an id already stored (or sent earlier in the batch)
with the same content is reported as a duplicate and counted once; with different content (in
anything but what the server fills in: see validate.differences) it is rejected, its result
naming the differing `fields`, and quarantined like any other reject, never silently dropped.
An id stored for events outside the caller's scope (another team's) is refused the same way but
without `fields`, so a team key can neither overwrite nor probe another team's events.
The answer comes only once the accepted events are durable.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tokentrail.events import COLUMNS, UsageEvent, text_problem, to_row
from tokentrail.exceptions import FlushTimeout, TokentrailError
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
from tokentrail.store.event_reads import rows_by_id
from tokentrail.types import Store

log = logging.getLogger("tokentrail")
_COLUMN_OF = {"user": "user_id"}  # an attribution dimension's events column, where the names differ


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
        items = await asyncio.to_thread(_parse, raw)
    except _BadBody as e:
        return error(e.status, e.message)
    # Checking, pricing and recording a batch take a while: off the event loop, so no other
    # request waits on it.
    results = await asyncio.to_thread(_ingest, state, items, dict(key.attribution))
    try:
        await state.flush()
    except FlushTimeout as e:
        log.error("tokentrail: events accepted over HTTP are not durable yet: %s", e)
        return error(503, "the ledger could not make the events durable in time; send the batch again")
    counts = {s: sum(1 for r in results if r["status"] == s) for s in ("accepted", "duplicate", "rejected")}
    status = 422 if items and counts["rejected"] == len(items) else 200
    return JSONResponse({**counts, "results": results}, status_code=status)


class _BadBody(TokentrailError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _parse(raw: bytes) -> list[Any]:
    """The events of a body, or _BadBody saying why there are none."""
    try:
        body = json.loads(raw)
    except RecursionError:
        raise _BadBody(400, "the body nests JSON too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise _BadBody(400, f"the body is not JSON: {e}") from None
    items = body.get("events") if isinstance(body, dict) else body
    if not isinstance(items, list) or (isinstance(body, dict) and set(body) != {"events"}):
        raise _BadBody(400, 'the body must be {"events": [ ... ]} or an array of events')
    if len(items) > MAX_EVENTS_PER_BATCH:
        raise _BadBody(413, f"{len(items)} events in one batch; the limit is {MAX_EVENTS_PER_BATCH}")
    return items


def _ingest(state: Any, items: list[Any], fixed: dict[str, str]) -> list[dict[str, Any]]:
    """Check, price and record a batch (in a worker thread); the result of each event, in order."""
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
    known = rows_by_id(state.store, [e.event_id for _, e, _ in good])
    for i, event, checked in good:
        prior = known.get(event.event_id)
        if prior is None:
            known[event.event_id] = to_row(event)
            ledger.record(event)
            ledger.charge(event)  # unreserved spend reaches the budgets
            continue
        if not _in_scope(prior, fixed):
            # another team's event: refused like any reused id, and nothing about its content
            # (not which fields differ, not whether it is "the same") is told
            results[i].update(status="rejected", reason=CONFLICT)
            ledger.quarantine("api", CONFLICT, _payload(items[i]))
            continue
        differ = differences(prior, event, checked)
        if not differ:
            results[i]["status"] = "duplicate"
            continue
        results[i].update(status="rejected", reason=CONFLICT, fields=differ)
        ledger.quarantine("api", CONFLICT, _payload(items[i]))
    return results


def taken_ids(store: Store, events: list[UsageEvent], scope: Mapping[str, str]) -> tuple[set[str], set[str]]:
    """(ids of these events that the ledger holds for an event of another team, or outside `scope`
    (the caller's key's): a derived id (an OTLP span's) someone else took first; ids it already
    holds for the same team inside the scope: sent before, nothing to add)."""
    if not events:
        return set(), set()
    rows = rows_by_id(store, [str(e.event_id) for e in events])
    team = COLUMNS.index("team")
    taken: set[str] = set()
    held: set[str] = set()
    for e in events:
        row = rows.get(str(e.event_id))
        if row is not None:
            (taken if row[team] != e.team or not _in_scope(row, scope) else held).add(str(e.event_id))
    return taken, held


def _in_scope(row: tuple[Any, ...], scope: Mapping[str, str]) -> bool:
    """Whether a stored events row lies inside a key's scope (its attribution)."""
    return all(row[COLUMNS.index(_COLUMN_OF.get(dim, dim))] == value for dim, value in scope.items())


def _id_of(item: Any) -> dict[str, Any]:
    if isinstance(item, dict) and isinstance(item.get("event_id"), str) and len(item["event_id"]) <= 64:
        return {"event_id": item["event_id"]}
    return {}


def _payload(item: Any) -> str:
    text = json.dumps(item, ensure_ascii=False, default=str)
    # a lone surrogate cannot be stored as UTF-8: keep it as its JSON escape (the same value)
    return text if text_problem(text) is None else json.dumps(item, default=str)
