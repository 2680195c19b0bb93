"""The OpenAI Agents SDK (`openai-agents`): a tracing processor that gives agent runs their sessions.

    from tokentrail.integrations import openai_agents
    openai_agents.install()          # or agents.add_trace_processor(openai_agents.TokentrailProcessor())

What becomes what:
- a trace (one `Runner.run`, or the user's `agents.trace(...)` block) is the root session, whose id
  is the trace id; inside a `tt.session` the user opened, that session is the root instead. Its
  `workflow` is the trace's workflow name (unless an enclosing session set one);
- each agent span is a session named after the agent, a child of the root; an agent
  that takes over by a handoff is a child of the agent that handed off; an agent run as a tool
  (`agent.as_tool()`) is a child of the agent that called it;
- a function (tool) span is a tool event with the span's duration and outcome;
- a generation / response span (a model call) is metered from the span's usage with tokentrail's
  prices, unless the SDK wrapper (`tt.instrument()` / `tt.wrap`) already metered that call.

How events find their agent: the SDK calls a processor synchronously, in the task that runs the
agent, when a span starts and ends (the Runner starts and finishes each agent span in its own
task, tools and model calls in tasks it starts inside it). So the processor *enters* the agent's
`tt.session` in that context when the span starts and leaves it when the span ends: every call the
wrapper meters under it, even before the processor hears about the model call, carries the
agent's session. A model span marks its context too (`seen_calls.wrapper_mark`): a model event the
wrapper records inside it, or the Responses API's response id the wrapper notes inside it, marks
the span as metered, so the processor never counts a call twice. With tracing disabled
(`RunConfig(tracing_disabled=True)`, `OPENAI_AGENTS_DISABLE_TRACING`) the SDK calls no processor:
calls are metered by the wrapper only, in the enclosing session. When the run's model calls go
through the tokentrail gateway (metered there), pass `meter_calls=False`.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from tokentrail import context as ctx
from tokentrail import ledger as _ledger_module
from tokentrail.events import ToolCall, args_hash, text_problem
from tokentrail.exceptions import DefaultLedgerUnavailable
from tokentrail.integrations import seen_calls
from tokentrail.usage import UsageProblem, from_openai_responses

try:
    from agents import tracing as _tracing
    from agents.tracing import (
        AgentSpanData,
        FunctionSpanData,
        GenerationSpanData,
        HandoffSpanData,
        ResponseSpanData,
        Span,
        Trace,
        TracingProcessor,
    )
except ImportError as e:  # pragma: no cover - depends on the environment
    from tokentrail._extras import raise_missing_extra

    raise_missing_extra(e, "tokentrail.integrations.openai_agents", "agents")

if TYPE_CHECKING:
    from tokentrail.ledger import Ledger

__all__ = ["TokentrailProcessor", "install", "uninstall"]

log = logging.getLogger("tokentrail")
R = TypeVar("R")

MAX_LIVE = 10_000  # open spans and traces remembered at once (spans never finished are dropped oldest first)


@dataclass(slots=True)
class _Live:
    """What the processor keeps about one open span or trace."""

    attribution: ctx.Attribution  # the session its events belong to
    scope: AbstractContextManager[Any] | None = None  # the session (or attributes) it entered
    mark: seen_calls.WrapperMark | None = None  # a model span's: did the SDK wrapper meter it?


class TokentrailProcessor(TracingProcessor):
    """An Agents SDK tracing processor that records agent runs in a tokentrail ledger.

    `ledger`: where to record (default: the enclosing session's ledger, else the default one);
    the sessions it opens carry it, so the SDK wrapper records there too. `meter_calls=False`:
    never meter model calls from spans (when something else meters them, e.g. the gateway)."""

    def __init__(self, ledger: Ledger | None = None, *, meter_calls: bool = True) -> None:
        self.ledger = ledger
        self.meter_calls = meter_calls
        self.enabled = True  # uninstall() turns it off: nothing new is opened, what was open still closes
        self._lock = threading.Lock()
        self._live: OrderedDict[str, _Live] = OrderedDict()
        self._handoffs: OrderedDict[str, tuple[str | None, str | None]] = OrderedDict()  # trace -> (from session, to)

    # -- traces -----------------------------------------------------------------------------

    def on_trace_start(self, trace: Trace) -> None:
        if not self.enabled:
            return
        try:
            outer = ctx.current()
            group = (trace.export() or {}).get("group_id")
            dims: dict[str, Any] = {}
            if not outer.workflow and _short(trace.name):
                dims["workflow"] = _short(trace.name)
            if isinstance(group, str) and group:
                dims["tags"] = {"agents.group_id": _short(group)}
            scope: AbstractContextManager[Any]
            if outer.session is None:
                scope = ctx.session(session_id=_bounded_id(trace.trace_id), ledger=self.ledger, **dims)
            else:
                # Inside the user's session, that session is the run's root: a session of the trace
                # between them would have no event of its own, and trees are read from events.
                scope = ctx.attributes(**dims)
            self._open("trace:" + trace.trace_id, scope)
        except Exception:
            log.exception("tokentrail: opening the session of an Agents SDK trace failed")

    def on_trace_end(self, trace: Trace) -> None:
        try:
            self._close("trace:" + trace.trace_id)
            with self._lock:
                self._handoffs.pop(trace.trace_id, None)
        except Exception:
            log.exception("tokentrail: closing the session of an Agents SDK trace failed")

    # -- spans ------------------------------------------------------------------------------

    def on_span_start(self, span: Span[Any]) -> None:
        if not self.enabled:
            return
        try:
            data = span.span_data
            if isinstance(data, AgentSpanData):
                parent = None
                with self._lock:
                    handoff = self._handoffs.get(span.trace_id)
                    if handoff is not None and handoff[1] == data.name:
                        parent = handoff[0]
                        del self._handoffs[span.trace_id]
                session = ctx.session(
                    agent=_short(data.name) or "agent",
                    session_id=_bounded_id(span.span_id),
                    parent_session=parent,
                    ledger=self.ledger,
                )
                self._open(span.span_id, session)
                return
            live = _Live(ctx.current())
            if isinstance(data, (GenerationSpanData, ResponseSpanData)):
                live.mark = seen_calls.wrapper_mark("openai_agents")
                live.mark.enter()
            self._remember(span.span_id, live)
        except Exception:
            log.exception("tokentrail: reading an Agents SDK span failed")

    def on_span_end(self, span: Span[Any]) -> None:
        try:
            data = span.span_data
            if isinstance(data, AgentSpanData):
                self._close(span.span_id)
                return
            with self._lock:
                live = self._live.pop(span.span_id, None)
            if live is None and not self.enabled:
                return
            attribution = live.attribution if live is not None else ctx.current()
            if isinstance(data, (GenerationSpanData, ResponseSpanData)):
                mark = live.mark if live is not None else None
                if mark is not None:
                    mark.leave()
                if self.meter_calls and not (mark is not None and mark.metered):
                    self._meter(span, data, attribution, mark)
            elif isinstance(data, FunctionSpanData):
                self._tool(span, data, attribution)
            elif isinstance(data, HandoffSpanData):
                with self._lock:
                    self._handoffs[span.trace_id] = (attribution.session_id, data.to_agent)
                    _trim(self._handoffs)
        except Exception:
            log.exception("tokentrail: recording an Agents SDK span failed")

    def shutdown(self) -> None:
        with self._lock:
            self._live.clear()
            self._handoffs.clear()

    def force_flush(self) -> None:
        """Nothing is buffered here: events are in the ledger's queue (`Ledger.flush` makes them durable)."""

    # -- sessions ---------------------------------------------------------------------------

    def _open(self, key: str, scope: AbstractContextManager[Any]) -> None:
        scope.__enter__()  # in the caller's context: the run's task (see the module docstring)
        self._remember(key, _Live(ctx.current(), scope=scope))

    def _close(self, key: str) -> None:
        with self._lock:
            live = self._live.pop(key, None)
        if live is not None and live.scope is not None:
            try:
                live.scope.__exit__(None, None, None)
            except ValueError:  # finished from another context than it started in: that one keeps it
                log.debug("tokentrail: an Agents SDK span ended in another context than it started in")

    def _remember(self, key: str, live: _Live) -> None:
        with self._lock:
            self._live[key] = live
            _trim(self._live)

    # -- events -----------------------------------------------------------------------------

    def _ledger(self, attribution: ctx.Attribution) -> Ledger | None:
        from tokentrail.default_ledger import resolve_ledger

        found = self.ledger or attribution.ledger
        try:
            return resolve_ledger(found if isinstance(found, _ledger_module.Ledger) else None)
        except DefaultLedgerUnavailable:
            return None  # logged once when it failed to open; counted in tt.ledger_status()

    def _tool(self, span: Span[Any], data: FunctionSpanData, attribution: ctx.Attribution) -> None:
        ledger = self._ledger(attribution)
        if ledger is None:
            return
        name = _short(data.name) or "tool"
        status = "error" if span.error else "ok"
        latency = _duration_ms(span)
        _within(attribution, lambda: ledger.record_tool(name, data.input, latency_ms=latency, status=status))

    def _meter(
        self,
        span: Span[Any],
        data: GenerationSpanData | ResponseSpanData,
        attribution: ctx.Attribution,
        mark: seen_calls.WrapperMark | None,
    ) -> None:
        """A model call the wrapper did not meter: from the span's usage, with our prices."""
        response = data.response if isinstance(data, ResponseSpanData) else None
        response_id = response.id if response is not None else getattr(data, "_response_id", None)
        if mark is not None and mark.saw(response_id):
            return  # the wrapper noted this response id for this very call
        raw_usage = data.usage
        if raw_usage is None and response is not None and response.usage is not None:
            raw_usage = response.usage.model_dump()
        if raw_usage is None and span.error is None:
            return  # no call was made (nothing to count), or the span was never filled in
        ledger = self._ledger(attribution)
        if ledger is None:
            return
        model = data.model if isinstance(data, GenerationSpanData) else (response.model if response else None)
        provider, model = _provider_model(model)
        usage, problem = None, None
        if raw_usage is not None:
            try:
                usage = from_openai_responses(raw_usage)
            except UsageProblem as e:
                problem = e.reason
            if usage is not None and span.error is None and usage.total_tokens == 0:
                usage, problem = None, "missing_usage"  # a call that answered used tokens; none were reported
        error = span.error
        event = ledger.build_call(
            provider=provider,
            model=model,
            usage=usage,
            operation="chat" if isinstance(data, GenerationSpanData) else "responses",
            status="error" if error else "ok",
            problem=problem,
            latency_ms=_duration_ms(span),
            tool_calls=_requested_tools(data),
            note=_short(error.get("message")) if error else None,
            attribution=attribution,
        )
        ledger.record(event, session=attribution.session)
        ledger.charge(event)


def _within(attribution: ctx.Attribution, fn: Callable[[], R]) -> R:
    """Run `fn` with `attribution` current (a tool span may end in a context that is not the agent's)."""

    def run() -> R:
        with ctx.Session(attribution):  # counts into attribution.session, the real one
            return fn()

    return contextvars.copy_context().run(run)


def _trim(d: OrderedDict[str, Any]) -> None:
    while len(d) > MAX_LIVE:
        d.popitem(last=False)


def _short(value: Any, limit: int = 200) -> str | None:
    """A name from the SDK as text any store keeps: bounded, without NULs or lone surrogates."""
    if not isinstance(value, str) or not value:
        return None
    text = value[:limit]
    if text_problem(text) is not None:
        text = "".join(c for c in text if c != "\x00" and not 0xD800 <= ord(c) <= 0xDFFF)
    return text or None


def _bounded_id(value: str) -> str:
    return _short(value, 128) or "agents"


def _duration_ms(span: Span[Any]) -> float | None:
    try:
        started, ended = span.started_at, span.ended_at
        if not started or not ended:
            return None
        ms = (datetime.fromisoformat(ended) - datetime.fromisoformat(started)).total_seconds() * 1000
    except (TypeError, ValueError):
        return None
    return round(ms, 3) if ms >= 0 else None


_PROVIDER_PREFIXES = ("openai", "anthropic", "gemini", "google", "vertex_ai", "mistral", "groq", "deepseek", "xai")


def _provider_model(model: str | None) -> tuple[str, str | None]:
    """The provider and model of a span: OpenAI's, unless the name is LiteLLM style
    ("anthropic/claude-…", from the SDK's LitellmModel)."""
    if not model:
        return "openai", None
    prefix, _, rest = model.partition("/")
    if rest and prefix.lower() in _PROVIDER_PREFIXES:
        return prefix.lower(), rest
    return "openai", model


def _requested_tools(data: GenerationSpanData | ResponseSpanData) -> tuple[Any, ...]:
    """The tool calls the model asked for (only when the span carries its output), so the tool
    events link to the call that asked for them."""
    found: list[tuple[Any, Any, Any]] = []
    if isinstance(data, ResponseSpanData) and data.response is not None:
        for item in data.response.output:
            if getattr(item, "type", None) == "function_call":
                call = (getattr(item, "call_id", None), getattr(item, "name", None), getattr(item, "arguments", None))
                found.append(call)
    elif isinstance(data, GenerationSpanData):
        # a chat message (non-streamed), or the Responses-shaped dump the SDK builds from a chat stream
        for entry in data.output or ():
            if not isinstance(entry, dict):
                continue
            for call in entry.get("tool_calls") or ():
                fn = call.get("function") if isinstance(call, dict) else None
                if isinstance(fn, dict):
                    found.append((call.get("id"), fn.get("name"), fn.get("arguments")))
            for item in entry.get("output") or ():
                if isinstance(item, dict) and item.get("type") == "function_call":
                    found.append((item.get("call_id"), item.get("name"), item.get("arguments")))
    return tuple(
        ToolCall(_short(i), name[:200], args_hash(args))
        for i, name, args in found[:128]
        if isinstance(name, str) and name
    )


# -- installation -----------------------------------------------------------------------------

_installed: TokentrailProcessor | None = None
_install_lock = threading.Lock()


def install(ledger: Ledger | None = None, *, meter_calls: bool = True) -> TokentrailProcessor:
    """Add tokentrail's processor to the Agents SDK's trace processors (idempotent: a second call
    updates the installed one's options and returns it)."""
    global _installed
    with _install_lock:
        if _installed is None:
            _installed = TokentrailProcessor(ledger, meter_calls=meter_calls)
            _tracing.add_trace_processor(_installed)
        else:
            _installed.ledger, _installed.meter_calls = ledger, meter_calls
            _installed.enabled = True
        return _installed


def uninstall() -> None:
    """Stop the processor install() added: it opens nothing more (what it opened still closes).
    The SDK has no way to remove one processor, so it stays registered, idle, until install()."""
    with _install_lock:
        if _installed is not None:
            _installed.enabled = False
