"""Usage events -> span descriptions for the OpenTelemetry export (pure: no OpenTelemetry import).

The GenAI semantic conventions (v1.37+, with the older `gen_ai.system` too) describe each model
call, embedding and tool run; the cost and the attribution go under `tokentrail.`. The shape of
the trace is derived, never random, so every process exporting events of one session agrees on it:

- the trace id is a hash of the session id (a session is a trace); an event without a session
  keeps its own trace id (a `step()` outside any session, a span received over OTLP), else gets
  one from its event id;
- the session is a root span (`invoke_agent`, span id hashed from the session id), each step path
  a span under it (`research`, then `research/planning` under that), each event a span under
  its innermost step; a tool run goes under the model call that asked for it when that call was
  exported by this process, an adjustment under the event it corrects;
- an event's span ends at the event's time (tokentrail records a call once it has ended) and
  starts `latency_ms` before it.

The session and step spans are not events: `Structure` keeps their running extent until they
are sent (idle, or at flush: see tokentrail.integrations.otel_export). One that gets events after
it was sent is sent again, with the same id, covering its whole extent (backends keep one).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from tokentrail.events import UsageEvent, ts_micros, usd_to_nano

# tokentrail's operations -> gen_ai.operation.name
_OPERATIONS = {
    "chat": "chat",
    "responses": "chat",
    "messages": "chat",
    "generate_content": "generate_content",
    "completions": "text_completion",
    "text_completion": "text_completion",
    "embeddings": "embeddings",
}
# tokentrail's provider names -> gen_ai.provider.name (the receiver maps them back: pricing aliases)
_PROVIDERS = {"google": "gcp.gemini", "azure": "azure.ai.openai", "aws": "aws.bedrock"}
_DIMENSIONS = ("org", "team", "project", "agent", "user", "customer", "workflow", "task_type")
MAX_TOOL_PARENTS = 4096  # model-call span ids remembered, so a tool run can be put under its call
MAX_OPEN = 10_000  # session and step spans kept open at once; past it the oldest is sent


@dataclass(slots=True)
class SpanSpec:
    """One span to send: ids as integers (OpenTelemetry's form), times in ns since the epoch."""

    name: str
    trace_id: int
    span_id: int
    parent_id: int | None
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    client: bool = False  # SpanKind.CLIENT (a call to a provider), else INTERNAL
    error: str | None = None  # the status description of a failed call
    links: list[tuple[int, int]] = field(default_factory=list)  # (trace id, span id)


def _hash_id(text: str, bits: int) -> int:
    n = int.from_bytes(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[: bits // 8], "big")
    return n or 1  # an all-zero id is invalid in OpenTelemetry


def _hex_id(value: str | None, digits: int) -> int | None:
    """A valid (non-zero) hex trace or span id, else None."""
    if value is None or len(value) != digits:
        return None
    try:
        n = int(value, 16)
    except ValueError:
        return None
    return n or None


def session_trace_id(session_id: str) -> int:
    return _hash_id(f"tokentrail/session/{session_id}", 128)


def session_span_id(session_id: str) -> int:
    return _hash_id(f"tokentrail/session-span/{session_id}", 64)


def trace_of(e: UsageEvent) -> tuple[int, str]:
    """(the trace id of an event's span, the key its step spans are hashed with)."""
    if e.session_id:
        return session_trace_id(e.session_id), f"session/{e.session_id}"
    own = _hex_id(e.trace_id, 32)
    if own is not None:
        return own, f"trace/{own:032x}"
    return _hash_id(f"tokentrail/event/{e.event_id}", 128), f"event/{e.event_id}"


def step_span_id(key: str, path: str) -> int:
    return _hash_id(f"tokentrail/step/{key}/{path}", 64)


def step_paths(step: str) -> list[str]:
    """'a/b/c' -> ['a', 'a/b', 'a/b/c']: the step spans, outermost first."""
    parts = step.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def cost_attributes(e: UsageEvent) -> dict[str, Any]:
    if e.cost_usd is None:
        return {"tokentrail.unpriced": True} if e.unpriced else {}
    out: dict[str, Any] = {"tokentrail.cost_usd": float(e.cost_usd), "tokentrail.cost_nusd": usd_to_nano(e.cost_usd)}
    if e.price_source:
        out["tokentrail.price_source"] = e.price_source
    if e.price_version:
        out["tokentrail.price_version"] = e.price_version
    return out


def attribution_attributes(e: UsageEvent) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dim in _DIMENSIONS:
        v = getattr(e, dim)
        if v is not None:
            out[f"tokentrail.{dim}"] = v
    if e.session_id:
        out["tokentrail.session"] = out["gen_ai.conversation.id"] = e.session_id
    if e.parent_session_id:
        out["tokentrail.parent_session"] = e.parent_session_id
    if e.step:
        out["tokentrail.step"] = e.step
    if e.agent:
        out["gen_ai.agent.name"] = e.agent
    for k, v in e.tags.items():
        out[f"tokentrail.tag.{k}"] = v
    return out


def event_attributes(e: UsageEvent) -> dict[str, Any]:
    """Every attribute of an event's span. Never the captured content (docs/rules.md §Security)."""
    a: dict[str, Any] = {"tokentrail.event_id": str(e.event_id), "tokentrail.kind": e.kind}
    a["tokentrail.status"] = e.status
    if e.kind in ("llm", "embedding"):
        provider = e.provider or "unknown"
        a["gen_ai.operation.name"] = operation_of(e)
        a["gen_ai.provider.name"] = a["gen_ai.system"] = provider_name(provider)
        if e.model:
            a["gen_ai.request.model"] = a["gen_ai.response.model"] = e.model
        a["gen_ai.usage.input_tokens"] = e.input_tokens
        a["gen_ai.usage.output_tokens"] = e.output_tokens
        for name, n in (
            ("gen_ai.usage.cache_read.input_tokens", e.cache_read_tokens),
            ("gen_ai.usage.cache_creation.input_tokens", e.cache_write_tokens),
            ("gen_ai.usage.reasoning.output_tokens", e.reasoning_tokens),
        ):
            if n:
                a[name] = n
        if e.operation:
            a["tokentrail.operation"] = e.operation
        a["tokentrail.streamed"] = e.streamed
        if e.usage_estimated:
            a["tokentrail.usage_estimated"] = True
    elif e.kind == "tool":
        a["gen_ai.operation.name"] = "execute_tool"
        a["gen_ai.tool.name"] = e.tool_name or "tool"
        if e.tool_call_id:
            a["gen_ai.tool.call.id"] = e.tool_call_id
    else:  # an adjustment: its cost is the change, its parent the event it corrects
        if e.adjusts_event_id:
            a["tokentrail.adjusts_event_id"] = str(e.adjusts_event_id)
        if e.provider:
            a["tokentrail.provider"] = e.provider
        if e.model:
            a["tokentrail.model"] = e.model
    if e.status != "ok":
        a["error.type"] = e.status.split(":", 1)[0]
    a.update(cost_attributes(e))
    a.update(attribution_attributes(e))
    return a


def provider_name(provider: str) -> str:
    """gen_ai.provider.name of one of tokentrail's provider names."""
    return _PROVIDERS.get(provider, provider)


def operation_of(e: UsageEvent) -> str:
    if e.kind == "embedding":
        return "embeddings"
    return _OPERATIONS.get(e.operation or "", "chat")


def span_name(e: UsageEvent) -> str:
    if e.kind == "tool":
        return f"execute_tool {e.tool_name or 'tool'}"
    if e.kind == "adjustment":
        return "tokentrail.adjustment"
    return f"{operation_of(e)} {e.model or 'unknown'}"


def times(e: UsageEvent) -> tuple[int, int]:
    """(start, end) in ns: the span ends at the event's time and lasts its latency."""
    end = ts_micros(e.ts) * 1000
    latency = e.latency_ms if e.latency_ms is not None and e.latency_ms >= 0 else 0.0
    return end - int(latency * 1_000_000), end


class Structure:
    """The session and step spans of the events seen, open until sent, and the model calls a
    tool run may hang under. Bounded: MAX_OPEN open spans, MAX_TOOL_PARENTS call ids. Not
    thread-safe: the caller holds a lock."""

    def __init__(self) -> None:
        self.open: OrderedDict[tuple[int, int], SpanSpec] = OrderedDict()  # least recently used first
        self._calls: OrderedDict[int, None] = OrderedDict()  # model-call span ids, in this process
        # when each span sent went back to: one that gets events again is sent again (same id),
        # covering its whole extent (MAX_OPEN of them remembered)
        self._sent: OrderedDict[tuple[int, int], int] = OrderedDict()

    def event_span(self, e: UsageEvent) -> tuple[SpanSpec, list[SpanSpec]]:
        """The span of an event, and the open spans pushed out by the bound (to send now)."""
        trace_id, key = trace_of(e)
        start, end = times(e)
        parent = self._extend(e, trace_id, key, start, end)
        own = _hex_id(e.span_id, 16) or _hash_id(f"tokentrail/event-span/{e.event_id}", 64)
        given_parent = _hex_id(e.parent_span_id, 16)
        if given_parent is not None and (
            (e.kind == "tool" and given_parent in self._calls)  # under the model call that asked for it
            or e.kind == "adjustment"  # under the event it corrects
            or not (e.session_id or e.step)  # a span of someone else's trace (OTLP): its own parent
        ):
            parent = given_parent
        if e.kind in ("llm", "embedding"):
            self._calls[own] = None
            if len(self._calls) > MAX_TOOL_PARENTS:
                self._calls.popitem(last=False)
        spec = SpanSpec(
            name=span_name(e),
            trace_id=trace_id,
            span_id=own,
            parent_id=parent,
            start_ns=start,
            end_ns=end,
            attributes=event_attributes(e),
            client=e.kind in ("llm", "embedding"),
            error=e.status if e.status != "ok" else None,
        )
        pushed = []
        while len(self.open) > MAX_OPEN:
            pushed.append(self.open.popitem(last=False)[1])
        for p in pushed:
            self._sent[(p.trace_id, p.span_id)] = p.start_ns
        while len(self._sent) > MAX_OPEN:
            self._sent.popitem(last=False)
        return spec, pushed

    def _extend(self, e: UsageEvent, trace_id: int, key: str, start: int, end: int) -> int | None:
        """Open (or widen) the session and step spans above an event; the id of its parent."""
        parent: int | None = None
        if e.session_id:
            parent = session_span_id(e.session_id)
            self._widen(trace_id, parent, None, start, end, lambda: _session_spec(e, trace_id))
        for path in step_paths(e.step) if e.step else ():
            sid = step_span_id(key, path)
            above = parent
            self._widen(trace_id, sid, above, start, end, lambda p=path, a=above: _step_spec(e, trace_id, p, a))
            parent = sid
        return parent

    def _widen(self, trace_id: int, span_id: int, parent: int | None, start: int, end: int, make: Any) -> None:
        spec = self.open.get((trace_id, span_id))
        if spec is None:
            spec = self.open[(trace_id, span_id)] = make()
            start = min(start, self._sent.pop((trace_id, span_id), start))
            spec.span_id, spec.parent_id, spec.start_ns, spec.end_ns = span_id, parent, start, end
            return
        self.open.move_to_end((trace_id, span_id))
        spec.start_ns, spec.end_ns = min(spec.start_ns, start), max(spec.end_ns, end)

    def take(self, idle_before_ns: int | None = None) -> list[SpanSpec]:
        """The open spans that ended before `idle_before_ns` (None: all), removed."""
        out = [s for s in self.open.values() if idle_before_ns is None or s.end_ns < idle_before_ns]
        for s in out:
            del self.open[(s.trace_id, s.span_id)]
            self._sent[(s.trace_id, s.span_id)] = s.start_ns
            if len(self._sent) > MAX_OPEN:
                self._sent.popitem(last=False)
        return out


def _session_spec(e: UsageEvent, trace_id: int) -> SpanSpec:
    sid = e.session_id or ""
    a: dict[str, Any] = {"gen_ai.operation.name": "invoke_agent", "tokentrail.kind": "session"}
    a.update({k: v for k, v in attribution_attributes(e).items() if k != "tokentrail.step"})
    links = []
    if e.parent_session_id:  # an agent tree: the parent session is another trace
        links.append((session_trace_id(e.parent_session_id), session_span_id(e.parent_session_id)))
    name = f"invoke_agent {e.agent}" if e.agent else "invoke_agent"
    return SpanSpec(name, trace_id, session_span_id(sid), None, 0, 0, a, links=links)


def _step_spec(e: UsageEvent, trace_id: int, path: str, parent: int | None) -> SpanSpec:
    a: dict[str, Any] = {"tokentrail.kind": "step", "tokentrail.step": path}
    if e.session_id:
        a["tokentrail.session"] = a["gen_ai.conversation.id"] = e.session_id
    for dim in ("team", "project", "agent"):
        if (v := getattr(e, dim)) is not None:
            a[f"tokentrail.{dim}"] = v
    return SpanSpec(f"step {path}", trace_id, 0, parent, 0, 0, a)
