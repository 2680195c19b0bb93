"""Strict validation of usage events submitted from outside (`POST /api/v1/events`).

Each check names the field and what was wrong. Nothing is coerced (a count of "5" or 5.0 or
true is refused) and nothing is clamped or cut: a string past the limit is refused, not
truncated, so whatever is accepted is stored exactly as sent.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from tokentrail.context import Attribution
from tokentrail.events import (
    COLUMNS,
    MAX_TAGS,
    MAX_TEXT,
    ToolCall,
    UsageEvent,
    args_hash,
    bound_tags,
    quantize_usd,
    text_problem,
    to_row,
    ts_problem,
)
from tokentrail.exceptions import TokentrailError
from tokentrail.usage import MAX_TOKENS, UsageProblem, from_counts

DIMENSIONS = ("org", "team", "project", "agent", "session_id", "user", "customer", "workflow", "task_type", "step")
TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens")
TEXT_FIELDS: tuple[str, ...] = (*DIMENSIONS, "provider", "model", "operation", "trace_id", "span_id")
TEXT_FIELDS += ("parent_span_id", "tool_name", "tool_call_id", "tool_args_hash", "parent_session_id")
_OTHER_FIELDS = ("event_id", "kind", "ts", "status", "latency_ms", "streamed", "cost_usd", "tags", "tool_calls", "note")
FIELDS = frozenset((*TEXT_FIELDS, *TOKEN_FIELDS, *_OTHER_FIELDS))
KINDS = ("llm", "embedding", "tool")
STATUSES = ("ok", "error", "cancelled")
MAX_NOTE = 2000
MAX_TOOL_CALLS = 128
MAX_COST_USD = Decimal(1_000_000)
CONFLICT = "event_id already used with different content"
# Columns of the stored row the server fills whatever the caller sent, and those it fills when the
# caller left something out (see `differences`).
_SERVER_COLUMNS = frozenset(("context_window_tokens", "request_hash", "content"))
_PRICE_COLUMNS = frozenset(("cost_nusd", "price_source", "price_version", "unit_prices"))
_JSON_COLUMNS = frozenset(("unit_prices", "tags", "tool_calls"))
# A stored column by the name of the submitted field it comes from.
_FIELD_OF = {"ts_us": "ts", "user_id": "user", **dict.fromkeys(_PRICE_COLUMNS, "cost_usd")}


class Invalid(TokentrailError, ValueError):
    """An event that fails validation; the message is the reason stored in quarantine."""


@dataclass(frozen=True, slots=True)
class Checked:
    """A valid submitted event, before pricing."""

    data: Mapping[str, Any]
    event_id: str
    ts: datetime
    cost_usd: Decimal | None


def check(obj: Any, *, fixed: Mapping[str, str] | None = None) -> Checked:
    """Validate one submitted event. `fixed`: attribution the caller's key imposes (a team key
    writes only its team); an event that names another value is refused."""
    if not isinstance(obj, dict):
        raise Invalid(f"an event must be a JSON object, not {_type(obj)}")
    unknown = sorted(set(obj) - FIELDS)
    if unknown:
        raise Invalid(f"unknown field(s): {', '.join(repr(u[:64]) for u in unknown[:5])}")
    data = dict(obj)
    if "event_id" not in data:
        raise Invalid("event_id is required: a UUID you generate (UUIDv7 recommended), so a retry never counts twice")
    event_id = _uuid(data["event_id"])
    kind = data.get("kind", "llm")
    if kind not in KINDS:
        raise Invalid(f"kind must be one of {', '.join(KINDS)}, not {_show(kind)}")
    status = data.get("status", "ok")
    if status not in STATUSES:
        raise Invalid(f"status must be one of {', '.join(STATUSES)}, not {_show(status)}")
    for name in TEXT_FIELDS:
        _text(data, name)
    if "note" in data:
        _text(data, "note", MAX_NOTE)
    ts = _ts(data["ts"]) if "ts" in data and data["ts"] is not None else datetime.now(UTC)
    for name in TOKEN_FIELDS:
        _count(data, name)
    if "latency_ms" in data and data["latency_ms"] is not None:
        v = data["latency_ms"]
        if type(v) not in (int, float) or not math.isfinite(v) or v < 0 or v > 1e10:
            raise Invalid(f"latency_ms must be a non-negative number of milliseconds, not {_show(v)}")
    if "streamed" in data and type(data["streamed"]) is not bool:
        raise Invalid(f"streamed must be true or false, not {_show(data['streamed'])}")
    cost = _cost(data.get("cost_usd"))
    _tags(data.get("tags"))
    if kind == "tool":
        if not data.get("tool_name"):
            raise Invalid("a tool event needs tool_name")
        if any(data.get(n) for n in TOKEN_FIELDS):
            raise Invalid("a tool event carries no tokens (send its cost in cost_usd)")
        if data.get("tool_calls"):
            raise Invalid("tool_calls belong on the model call that asked for them, not on a tool event")
    else:
        for name in ("provider", "model"):
            if not data.get(name):
                raise Invalid(f"an {kind} event needs {name}")
        _tool_calls(data.get("tool_calls"))
        try:
            from_counts(**{n: data.get(n) or 0 for n in TOKEN_FIELDS})
        except UsageProblem as e:
            raise Invalid(f"impossible usage: {e.reason}") from None
    for dim, value in (fixed or {}).items():
        given = data.get(dim)
        if given is not None and given != value:
            raise Invalid(f"this key writes only {dim}={value}; the event says {dim}={_show(given)}")
        data[dim] = value
    return Checked(data, event_id, ts, cost)


def build(ledger: Any, c: Checked) -> UsageEvent:
    """The stored event: model calls priced by the ledger unless the caller gave a cost."""
    d = c.data
    kind = d.get("kind", "llm")
    tags = bound_tags(d.get("tags"))
    if kind == "tool":
        return UsageEvent(
            event_id=c.event_id,
            kind="tool",
            ts=c.ts,
            latency_ms=d.get("latency_ms"),
            status=d.get("status", "ok"),
            cost_usd=c.cost_usd,
            price_source="caller" if c.cost_usd is not None else None,
            trace_id=d.get("trace_id"),
            span_id=d.get("span_id"),
            parent_span_id=d.get("parent_span_id"),
            tags=tags,
            tool_name=d["tool_name"],
            tool_call_id=d.get("tool_call_id"),
            tool_args_hash=d.get("tool_args_hash"),
            note=d.get("note"),
            parent_session_id=d.get("parent_session_id"),
            **{k: d.get(k) for k in DIMENSIONS},  # type: ignore[arg-type]
        )
    attribution = Attribution(
        **{k: d.get(k) for k in DIMENSIONS},
        tags=tags,
        trace_id=d.get("trace_id"),
        span_id=d.get("parent_span_id"),
        parent_session_id=d.get("parent_session_id"),
    )
    usage = from_counts(**{n: d.get(n) or 0 for n in TOKEN_FIELDS})
    calls = tuple(
        ToolCall(t.get("id"), t["name"], t.get("args_hash") or args_hash(t.get("args", {})))
        for t in d.get("tool_calls") or ()
    )
    event: UsageEvent = ledger.build_call(
        provider=d["provider"],
        model=d["model"],
        usage=usage,
        kind=kind,
        operation=d.get("operation"),
        status=d.get("status", "ok"),
        latency_ms=d.get("latency_ms"),
        streamed=bool(d.get("streamed", False)),
        tool_calls=calls,
        ts=c.ts,
        event_id=c.event_id,
        span_id=d.get("span_id"),
        note=d.get("note"),
        attribution=attribution,
    )
    if event.status.startswith("invalid_usage"):
        raise Invalid(f"impossible usage: {event.status.split(':', 1)[1]}")
    if c.cost_usd is not None:
        event = replace(event, cost_usd=c.cost_usd, price_source="caller", price_version=None, unit_prices=None)
    return event


def differences(stored: Sequence[Any], event: UsageEvent, c: Checked) -> list[str]:
    """The fields in which `stored` (an events row with the same event_id) and `event` (built
    from the submitted `c`) differ, compared as stored, leaving out what the server fills in at
    ingestion: the price (unless the caller gave cost_usd), the context window, a `ts` or
    `span_id` the caller left out. Empty: a re-post of the same event (a duplicate); else a
    conflict."""
    new = to_row(event)
    skip = set(_SERVER_COLUMNS)
    if c.data.get("ts") is None:
        skip.add("ts_us")
    if c.data.get("span_id") is None:
        skip.add("span_id")
    if c.cost_usd is None:
        skip |= _PRICE_COLUMNS  # priced by the server, perhaps from a price book updated since
    out = [
        _FIELD_OF.get(name, name)
        for i, name in enumerate(COLUMNS)
        if name not in skip and _comparable(name, stored[i]) != _comparable(name, new[i])
    ]
    if c.cost_usd is None and stored[COLUMNS.index("price_source")] == "caller":
        out.append("cost_usd")  # the stored event carried the caller's own cost; this one none
    return list(dict.fromkeys(out))


def _comparable(column: str, v: Any) -> Any:
    """A column value as every backend reads it back (PostgreSQL keeps no NUL in text)."""
    if isinstance(v, str):
        v = v.replace("\x00", "\ufffd")
        if column in _JSON_COLUMNS:
            try:
                return json.loads(v)
            except ValueError:
                return v
    return v


# -- field checks -------------------------------------------------------------------------------


def _type(v: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(v), "a number"
    )


def _show(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def _uuid(v: Any) -> str:
    if not isinstance(v, str):
        raise Invalid(f"event_id must be a UUID string, not {_type(v)}")
    try:
        return str(uuid.UUID(v))
    except ValueError:
        raise Invalid(f"event_id {_show(v)} is not a UUID") from None


def _text(data: dict[str, Any], name: str, limit: int = MAX_TEXT) -> None:
    v = data.get(name)
    if v is None:
        return
    if not isinstance(v, str):
        raise Invalid(f"{name} must be a string, not {_type(v)}")
    if len(v) > limit:
        raise Invalid(f"{name} is {len(v)} characters long; the limit is {limit}")
    if (why := text_problem(v)) is not None:
        raise Invalid(f"{name} {why}")


def _ts(v: Any) -> datetime:
    if not isinstance(v, str):
        raise Invalid(f"ts must be an ISO-8601 string with a UTC offset, not {_type(v)}")
    try:
        t = datetime.fromisoformat(v.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise Invalid(f"ts {_show(v)} is not ISO-8601 (e.g. 2026-01-31T09:30:00+01:00)") from None
    if t.tzinfo is None or t.utcoffset() is None:
        raise Invalid(f"ts {_show(v)} has no UTC offset: add Z or +HH:MM")
    t = t.astimezone(UTC)
    if (why := ts_problem(t)) is not None:
        raise Invalid(f"ts {_show(v)} {why}")
    return t


def _count(data: dict[str, Any], name: str) -> None:
    v = data.get(name)
    if v is None:
        return
    if type(v) is not int:
        raise Invalid(f"{name} must be a whole number, not {_show(v)}")
    if v < 0:
        raise Invalid(f"{name} must not be negative ({v})")
    if v > MAX_TOKENS:
        raise Invalid(f"{name} {v} is past {MAX_TOKENS}: no call uses that many tokens")


def _cost(v: Any) -> Decimal | None:
    if v is None:
        return None
    if type(v) not in (int, float, str):
        raise Invalid(f"cost_usd must be a decimal string or a number, not {_type(v)}")
    try:
        d = Decimal(str(v))
    except InvalidOperation:
        raise Invalid(f"cost_usd {_show(v)} is not a number") from None
    if not d.is_finite() or d < 0 or d > MAX_COST_USD:
        raise Invalid(f"cost_usd {_show(v)} must be between 0 and {MAX_COST_USD}")
    return quantize_usd(d)


def _tags(v: Any) -> None:
    if v is None:
        return
    if not isinstance(v, dict):
        raise Invalid(f"tags must be an object of strings, not {_type(v)}")
    if len(v) > MAX_TAGS:
        raise Invalid(f"{len(v)} tags; the limit is {MAX_TAGS}")
    for k, val in v.items():
        if not k.strip() or len(k) > MAX_TEXT:
            raise Invalid(f"tag key {_show(k)} must be 1 to {MAX_TEXT} characters")
        if (why := text_problem(k)) is not None:
            raise Invalid(f"tag key {_show(k)} {why}")
        if not isinstance(val, str) or len(val) > MAX_TEXT:
            raise Invalid(f"tag {_show(k)} must be a string of at most {MAX_TEXT} characters")
        if (why := text_problem(val)) is not None:
            raise Invalid(f"tag {_show(k)}: its value {why}")
    if len({k.strip().lower() for k in v}) != len(v):
        raise Invalid("two tag keys differ only in case or spacing (keys are stored lower-cased)")


def _tool_calls(v: Any) -> None:
    if v is None:
        return
    if not isinstance(v, list) or len(v) > MAX_TOOL_CALLS:
        raise Invalid(f"tool_calls must be an array of at most {MAX_TOOL_CALLS} objects")
    for i, t in enumerate(v):
        if not isinstance(t, dict) or set(t) - {"id", "name", "args_hash", "args"}:
            raise Invalid(f"tool_calls[{i}] must be an object with name and optional id, args_hash or args")
        if not isinstance(t.get("name"), str) or not t["name"] or len(t["name"]) > MAX_TEXT:
            raise Invalid(f"tool_calls[{i}].name must be a non-empty string")
        for key in ("id", "args_hash"):
            if t.get(key) is not None and (not isinstance(t[key], str) or len(t[key]) > MAX_TEXT):
                raise Invalid(f"tool_calls[{i}].{key} must be a string of at most {MAX_TEXT} characters")
        for key in ("name", "id", "args_hash"):
            if isinstance(t.get(key), str) and (why := text_problem(t[key])) is not None:
                raise Invalid(f"tool_calls[{i}].{key} {why}")
