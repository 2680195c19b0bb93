"""OpenTelemetry spans -> usage events: OTLP/HTTP decoding (protobuf and JSON) and the GenAI mapping.

Read: the GenAI semantic conventions v1.36 to v1.41 (`gen_ai.usage.input_tokens` inclusive of
cache, `gen_ai.usage.cache_read.input_tokens`, `gen_ai.usage.cache_creation.input_tokens`,
`gen_ai.usage.reasoning.output_tokens`, `gen_ai.provider.name`), their deprecated names
(`gen_ai.usage.prompt_tokens` / `completion_tokens`, `gen_ai.system`), and OpenInference
(`openinference.span.kind`, `llm.token_count.*`, `llm.model_name`, `llm.provider`).

Only inference spans count. Agent and workflow spans (`invoke_agent`, `create_agent`,
`invoke_workflow`, OpenInference AGENT / CHAIN) often carry the sum of their children's usage:
they are never counted, and they lend their agent name and conversation id to the inference
spans under them. A span with usage but no operation marker counts only when no span under it
in the same export counts (otherwise it is a sum). `execute_tool` spans become tool events.

Attribution: `gen_ai.agent.name`, `gen_ai.conversation.id` / `session.id`, `user.id`, and any
`tokentrail.<dimension>` / `tokentrail.tag.<key>` attribute, looked up on the span, then its
ancestors in the export, then the resource. The event id is derived from the trace and span id,
so a span exported twice is stored once; a span tokentrail exported itself carries its event's
id (`tokentrail.event_id`), which it keeps.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tokentrail.context import Attribution
from tokentrail.events import MAX_TAGS, MAX_TEXT, UsageEvent, bound_tags, text_problem, ts_problem
from tokentrail.exceptions import TokentrailError
from tokentrail.usage import MAX_TOKENS, UsageProblem, from_counts

INFERENCE_OPS = {"chat": "llm", "text_completion": "llm", "generate_content": "llm", "embeddings": "embedding"}
CONTAINER_OPS = {"invoke_agent", "create_agent", "invoke_workflow"}
OPENINFERENCE_KINDS = {"LLM": "llm", "EMBEDDING": "embedding", "TOOL": "tool"}
_ERROR = 2  # Status.STATUS_CODE_ERROR

_TOKENS = {
    "input_tokens": ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt"),
    "output_tokens": ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "llm.token_count.completion"),
    "cache_read_tokens": (
        "gen_ai.usage.cache_read.input_tokens",
        "gen_ai.usage.cache_read_input_tokens",
        "llm.token_count.prompt_details.cache_read",
    ),
    "cache_write_tokens": (
        "gen_ai.usage.cache_creation.input_tokens",
        "gen_ai.usage.cache_creation_input_tokens",
        "llm.token_count.prompt_details.cache_write",
    ),
    "reasoning_tokens": ("gen_ai.usage.reasoning.output_tokens", "llm.token_count.completion_details.reasoning"),
}
_PROVIDER = ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system")
_MODEL = ("gen_ai.response.model", "gen_ai.request.model", "llm.model_name")
# attribution dimension -> attributes naming it, most specific first (tokentrail.* always wins)
_DIMENSIONS = {
    "agent": ("gen_ai.agent.name", "agent.name"),
    "session_id": ("gen_ai.conversation.id", "session.id", "tokentrail.session"),
    "user": ("user.id", "enduser.id"),
    "org": (),
    "team": (),
    "project": (),
    "customer": (),
    "workflow": (),
    "task_type": (),
    "step": (),
}
_TOOL_NAME = ("gen_ai.tool.name", "tool.name")
_TOOL_CALL_ID = ("gen_ai.tool.call.id", "tool_call.id")


class OTLPError(TokentrailError, ValueError):
    """The body is not an OTLP trace export."""


@dataclass(slots=True)
class Span:
    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    resource: Mapping[str, Any]
    error: bool = False
    children: list[Span] = field(default_factory=list)
    parent: Span | None = None


# -- decoding -------------------------------------------------------------------------------------


def decode_protobuf(raw: bytes) -> list[Span]:
    try:
        from google.protobuf.message import DecodeError
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    except ImportError as e:
        from tokentrail._extras import raise_missing_extra

        raise_missing_extra(e, "decoding OTLP protobuf", "server")

    try:
        request = ExportTraceServiceRequest.FromString(raw)
    except (DecodeError, ValueError, RecursionError) as e:
        raise OTLPError(f"not an OTLP protobuf ExportTraceServiceRequest: {e}") from None
    spans = []
    for rs in request.resource_spans:
        resource = {kv.key: _pb_value(kv.value) for kv in rs.resource.attributes}
        for ss in rs.scope_spans:
            for s in ss.spans:
                if len(s.trace_id) != 16 or len(s.span_id) != 8 or len(s.parent_span_id) not in (0, 8):
                    raise OTLPError("a span's traceId must be 16 bytes, its spanId and parentSpanId 8")
                spans.append(
                    Span(
                        trace_id=s.trace_id.hex(),
                        span_id=s.span_id.hex(),
                        parent_span_id=s.parent_span_id.hex() or None,
                        name=s.name,
                        start_ns=s.start_time_unix_nano,
                        end_ns=s.end_time_unix_nano,
                        attributes={kv.key: _pb_value(kv.value) for kv in s.attributes},
                        resource=resource,
                        error=s.status.code == _ERROR,
                    )
                )
    return spans


def _pb_value(v: Any) -> Any:
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [_pb_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _pb_value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, which)


def decode_json(raw: bytes) -> list[Span]:
    """OTLP/JSON: lowerCamelCase fields (snake_case accepted), hex trace and span ids, 64-bit
    integers as strings or numbers."""
    import json

    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise OTLPError(f"not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise OTLPError("an OTLP/JSON export is an object with resourceSpans")
    spans = []
    for rs in _list(_get(doc, "resourceSpans", "resource_spans"), "resourceSpans"):
        resource = _attrs(_get(_obj(rs, "resourceSpans[]"), "resource") or {})
        for ss in _list(_get(rs, "scopeSpans", "scope_spans"), "scopeSpans"):
            for s in _list(_get(_obj(ss, "scopeSpans[]"), "spans"), "spans"):
                s = _obj(s, "span")
                status = _get(s, "status") or {}
                spans.append(
                    Span(
                        trace_id=_hex_id(_get(s, "traceId", "trace_id"), "traceId", 16),
                        span_id=_hex_id(_get(s, "spanId", "span_id"), "spanId", 8),
                        parent_span_id=_hex_id(_get(s, "parentSpanId", "parent_span_id"), "parentSpanId", 8) or None,
                        name=str(_get(s, "name") or ""),
                        start_ns=_int64(_get(s, "startTimeUnixNano", "start_time_unix_nano"), "startTimeUnixNano"),
                        end_ns=_int64(_get(s, "endTimeUnixNano", "end_time_unix_nano"), "endTimeUnixNano"),
                        attributes=_attrs(s),
                        resource=resource,
                        error=_status_code(status) == _ERROR,
                    )
                )
    return spans


def _get(d: Any, *names: str) -> Any:
    if not isinstance(d, dict):
        return None
    for n in names:
        if n in d:
            return d[n]
    return None


def _obj(v: Any, what: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise OTLPError(f"{what} must be an object")
    return v


def _list(v: Any, what: str) -> list[Any]:
    if v is None:
        return []
    if not isinstance(v, list):
        raise OTLPError(f"{what} must be an array")
    return v


def _hex_id(v: Any, what: str, size: int) -> str:
    if v in (None, ""):
        if what == "parentSpanId":
            return ""
        raise OTLPError(f"a span has no {what}")
    if not isinstance(v, str) or len(v) != size * 2:
        raise OTLPError(f"{what} must be {size * 2} hex digits")
    try:
        bytes.fromhex(v)
    except ValueError:
        raise OTLPError(f"{what} must be {size * 2} hex digits") from None
    return v.lower()


def _int64(v: Any, what: str) -> int:
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        raise OTLPError(f"{what} must be an integer (or a string of one)")
    try:
        n = int(v)
    except ValueError:
        raise OTLPError(f"{what} {v!r} is not an integer") from None
    if not 0 <= n < 2**64:
        raise OTLPError(f"{what} is out of range")
    return n


def _status_code(status: Any) -> int:
    code = _get(status, "code")
    if code == "STATUS_CODE_ERROR":
        return _ERROR
    return code if isinstance(code, int) and not isinstance(code, bool) else 0


def _attrs(holder: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in _list(_get(holder, "attributes"), "attributes"):
        if not isinstance(kv, dict) or not isinstance(kv.get("key"), str):
            raise OTLPError("an attribute must be an object with a string key")
        out[kv["key"]] = _json_value(kv.get("value"))
    return out


def _json_value(v: Any, depth: int = 0) -> Any:
    if not isinstance(v, dict) or depth > 16:
        return None
    if "stringValue" in v or "string_value" in v:
        return _get(v, "stringValue", "string_value")
    if "intValue" in v or "int_value" in v:
        raw = _get(v, "intValue", "int_value")
        if isinstance(raw, bool):
            return raw
        try:
            return int(raw) if isinstance(raw, (int, str)) else raw
        except ValueError:
            return raw
    if "boolValue" in v or "bool_value" in v:
        return _get(v, "boolValue", "bool_value")
    if "doubleValue" in v or "double_value" in v:
        return _get(v, "doubleValue", "double_value")
    if "arrayValue" in v or "array_value" in v:
        values = _get(_get(v, "arrayValue", "array_value"), "values")
        return [_json_value(x, depth + 1) for x in values] if isinstance(values, list) else []
    if "kvlistValue" in v or "kvlist_value" in v:
        values = _get(_get(v, "kvlistValue", "kvlist_value"), "values")
        return {
            kv["key"]: _json_value(kv.get("value"), depth + 1)
            for kv in (values if isinstance(values, list) else [])
            if isinstance(kv, dict) and isinstance(kv.get("key"), str)
        }
    return None


# -- mapping --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rejected:
    span: Span
    reason: str

    def payload(self) -> dict[str, Any]:
        s = self.span
        return {
            "trace_id": s.trace_id,
            "span_id": s.span_id,
            "parent_span_id": s.parent_span_id,
            "name": s.name[:MAX_TEXT],
            "start_ns": s.start_ns,
            "end_ns": s.end_ns,
            "attributes": {k: v for k, v in list(s.attributes.items())[:200] if _safe_attribute(k)},
        }


def _safe_attribute(key: str) -> bool:
    """Prompt and completion text is not stored (docs/rules.md §Security), not even in quarantine."""
    return not any(p in key for p in ("prompt", "completion", "message", "content", "input.value", "output.value")) or (
        "token" in key
    )


def to_events(
    spans: list[Span], ledger: Any, fixed: Mapping[str, str] | None = None
) -> tuple[list[UsageEvent], list[Rejected]]:
    """The usage events of an export, and the GenAI spans that could not become one (with why).
    Spans that are not GenAI calls (HTTP, database, …) are neither."""
    by_id = {s.span_id: s for s in spans}
    for s in spans:
        s.parent = by_id.get(s.parent_span_id) if s.parent_span_id else None
        if s.parent is not None and s.parent is not s:
            s.parent.children.append(s)
    kinds = {id(s): _kind(s) for s in spans}
    events: list[UsageEvent] = []
    rejected: list[Rejected] = []
    for s in spans:
        kind = kinds[id(s)]
        if kind is None:
            continue
        if kind == "candidate":
            if any(kinds[id(d)] in ("llm", "embedding", "candidate") for d in _descendants(s)):
                continue  # a sum of the calls under it
            kind = "llm"
        try:
            events.append(_event(s, kind, ledger, fixed or {}))
        except ValueError as e:
            rejected.append(Rejected(s, str(e)))
    return events, rejected


def _kind(s: Span) -> str | None:
    """llm | embedding | tool | candidate (usage, no marker) | None (not counted)."""
    a = s.attributes
    op = a.get("gen_ai.operation.name")
    if isinstance(op, str):
        if op in INFERENCE_OPS:
            return INFERENCE_OPS[op]
        if op == "execute_tool":
            return "tool"
        if op in CONTAINER_OPS:
            return None
    oi = a.get("openinference.span.kind")
    if isinstance(oi, str):
        return OPENINFERENCE_KINDS.get(oi.upper())
    if isinstance(op, str) and op not in INFERENCE_OPS and not _has_usage(a):
        return None
    if _has_usage(a) and _first(a, _MODEL) is not None:
        return "candidate"
    return None


def _has_usage(a: Mapping[str, Any]) -> bool:
    return any(n in a for names in _TOKENS.values() for n in names)


def _descendants(s: Span) -> Iterable[Span]:
    stack = list(s.children)
    seen = 0
    while stack and seen < 10_000:
        d = stack.pop()
        seen += 1
        yield d
        stack.extend(d.children)


def _first(a: Mapping[str, Any], names: Iterable[str]) -> Any:
    for n in names:
        v = a.get(n)
        if v is not None and v != "":
            return v
    return None


def _lookup(s: Span, names: Iterable[str]) -> Any:
    """An attribute on the span, else on its ancestors in the export, else on the resource."""
    names = tuple(names)
    node: Span | None = s
    depth = 0
    while node is not None and depth < 64:
        v = _first(node.attributes, names)
        if v is not None:
            return v
        node, depth = node.parent, depth + 1
    return _first(s.resource, names)


def _text(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise ValueError(f"{what} must be a string")
    text = str(value)
    if len(text) > MAX_TEXT:
        raise ValueError(f"{what} is {len(text)} characters long; the limit is {MAX_TEXT}")
    if (why := text_problem(text)) is not None:
        raise ValueError(f"{what} {why}")
    return text


def _event(s: Span, kind: str, ledger: Any, fixed: Mapping[str, str]) -> UsageEvent:
    dims: dict[str, str | None] = {}
    for dim, names in _DIMENSIONS.items():
        dims[dim] = _text(_lookup(s, (f"tokentrail.{dim}", *names)), dim)
    for dim, value in fixed.items():
        if dims.get(dim) not in (None, value):
            raise ValueError(f"this key writes only {dim}={value}; the span says {dim}={dims[dim]}")
        dims[dim] = value
    tags = _tags(s)
    ts = datetime.fromtimestamp(s.start_ns / 1e9, UTC) if s.start_ns else datetime.now(UTC)
    if (why := ts_problem(ts)) is not None:  # the range the events API accepts
        raise ValueError(f"startTimeUnixNano {s.start_ns} ({ts:%Y-%m-%d %H:%M:%S} UTC) {why}")
    latency = (s.end_ns - s.start_ns) / 1e6 if s.end_ns >= s.start_ns > 0 else None
    status = "error" if s.error else "ok"
    event_id = _exported_id(s) or span_event_id(s.trace_id, s.span_id, s.start_ns, dims.get("team"))
    if kind == "tool":
        name = _text(_first(s.attributes, _TOOL_NAME), "gen_ai.tool.name") or _text(s.name, "span name")
        return UsageEvent(
            event_id=event_id,
            kind="tool",
            ts=ts,
            latency_ms=latency,
            status=status,
            trace_id=s.trace_id,
            span_id=s.span_id,
            parent_span_id=s.parent_span_id,
            tags=tags,
            tool_name=name or "tool",
            tool_call_id=_text(_first(s.attributes, _TOOL_CALL_ID), "gen_ai.tool.call.id"),
            **dims,  # type: ignore[arg-type]
        )
    model = _text(_first(s.attributes, _MODEL), "gen_ai.request.model")
    if model is None:
        raise ValueError("an inference span needs gen_ai.request.model or gen_ai.response.model")
    counts: dict[str, int] = {}
    for name, attrs in _TOKENS.items():
        key = next((n for n in attrs if n in s.attributes), None)
        if key is None:
            continue
        v = s.attributes[key]
        if type(v) is not int or not 0 <= v <= MAX_TOKENS:
            raise ValueError(f"{key} must be a whole number between 0 and {MAX_TOKENS}, not {v!r}")
        counts[name] = v
    if not counts and not s.error:
        raise ValueError("an inference span without gen_ai.usage.* token counts")
    try:
        usage = from_counts(**counts)
    except UsageProblem as e:
        raise ValueError(f"impossible usage: {e.reason}") from None
    provider = _text(_first(s.attributes, _PROVIDER) or _first(s.resource, _PROVIDER), "gen_ai.provider.name")
    op = s.attributes.get("gen_ai.operation.name")
    event: UsageEvent = ledger.build_call(
        provider=provider or "unknown",
        model=model,
        usage=usage,
        kind=kind,
        operation=_text(op, "gen_ai.operation.name") if isinstance(op, str) else kind,
        status=status,
        latency_ms=latency,
        ts=ts,
        event_id=event_id,
        span_id=s.span_id,
        attribution=Attribution(**dims, tags=tags, trace_id=s.trace_id, span_id=s.parent_span_id),  # type: ignore[arg-type]
    )
    if event.status.startswith("invalid_usage"):
        raise ValueError(f"impossible usage: {event.status.split(':', 1)[1]}")
    return event


def _exported_id(s: Span) -> str | None:
    """The event id of a span tokentrail exported (tokentrail.integrations.otel_export): it is that
    event, so exported back into a ledger that holds it, it is skipped, never counted twice."""
    given = s.attributes.get("tokentrail.event_id")
    if given is None:
        return None
    why = ValueError(f"tokentrail.event_id {str(given)[:64]!r} is not a UUID")
    if not isinstance(given, str) or len(given) > 64:
        raise why
    try:
        return str(uuid.UUID(given))
    except ValueError:
        raise why from None


def _tags(s: Span) -> dict[str, str]:
    found: dict[str, str] = {}
    for source in (s.resource, *_chain(s)):
        for k, v in source.items():
            if k.startswith("tokentrail.tag.") and isinstance(v, (str, int, float, bool)):
                found[k[len("tokentrail.tag.") :]] = str(v)
    if len(found) > MAX_TAGS:
        raise ValueError(f"{len(found)} tokentrail.tag.* attributes; the limit is {MAX_TAGS}")
    return bound_tags(found)


def _chain(s: Span) -> list[Mapping[str, Any]]:
    """Attributes of the span's ancestors (outermost first) and its own, so the nearest wins."""
    out: list[Mapping[str, Any]] = []
    node: Span | None = s
    while node is not None and len(out) < 64:
        out.append(node.attributes)
        node = node.parent
    return out[::-1]


def span_event_id(trace_id: str, span_id: str, start_ns: int, team: str | None = None) -> str:
    """A UUID (version 8) for a span: the start millisecond first (time-ordered, like UUIDv7),
    then a hash of the trace and span ids, so the same span always gets the same id. The span's
    team is hashed in too: ids are per team, so one team's span never shadows (nor is dropped as
    a duplicate of) another team's span with the same trace and span ids."""
    text = f"{trace_id}:{span_id}" if team is None else f"{trace_id}:{span_id}:{json.dumps(team)}"
    digest = hashlib.sha256(text.encode()).digest()
    b = bytearray(((start_ns // 1_000_000) & (2**48 - 1)).to_bytes(6, "big") + digest[:10])
    b[6] = 0x80 | (b[6] & 0x0F)
    b[8] = 0x80 | (b[8] & 0x3F)
    return str(uuid.UUID(bytes=bytes(b)))
