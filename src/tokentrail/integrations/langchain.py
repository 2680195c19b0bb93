"""LangChain and LangGraph: a callback handler that attributes runs and meters model calls.

    handler = TokentrailCallbackHandler()            # the current ledger and tt.session
    graph.invoke(state, config={"callbacks": [handler]})
    with tracking(): graph.invoke(state)             # or: every run inside, no config needed

How runs map (docs/architecture.md, agent trees in analytics/trees.py):
- a LangGraph node (the `langgraph_node` LangGraph puts in a run's metadata) is a step;
- a graph run inside another run (a sub-graph, a graph used as a tool) is a child session, and
  so is a tool whose own work calls a chat model (an agent used as a tool);
- a top-level run outside any `tt.session` opens a session of its own (`sessions=False`: not);
- a tool run is a tool event, linked to the model call that asked for it;
- a chat model call is one event, from its `usage_metadata`, priced with tokentrail's price book,
  unless the SDK wrapper (`tt.instrument()`/`tt.wrap`) underneath already metered it. The run's
  `seen_calls.wrapper_mark` tells: the wrapper recorded a model event while this run was open in
  this context (a Chat Completions stream carries no id through LangChain), or noted this call's
  response id (LangChain keeps it in `response_metadata["id"]`) within this run.

The handler runs inline (`run_inline`), so LangChain calls it in the run's own thread or task,
also for async runs: the attribution it sets at a node's or a model call's start is what the
code and the SDK calls inside see. Its state is bounded: runs are forgotten at their end or
error, and at most `MAX_RUNS` open ones are kept (the oldest dropped), so a graph that never
ends cannot grow memory.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any
from uuid import UUID

from tokentrail import _extras
from tokentrail import context as ctx
from tokentrail import ledger as _ledger
from tokentrail.default_ledger import get_ledger
from tokentrail.integrations import langchain_usage as lu
from tokentrail.integrations import seen_calls
from tokentrail.usage import UsageProblem, from_counts

try:
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_core.tracers.context import register_configure_hook
except ImportError as e:  # pragma: no cover - exercised by tests/integrations/test_langchain.py in a subprocess
    _extras.raise_missing_extra(e, "tokentrail.integrations.langchain", "langchain")

__all__ = ["MAX_RUNS", "TokentrailCallbackHandler", "callbacks_config", "tracking"]

log = logging.getLogger("tokentrail")

MAX_RUNS = 10_000
_MAX_DEPTH = 256  # parent hops followed when resolving a run's attribution
_UNNAMED_GRAPH = "LangGraph"  # the run name LangGraph gives a graph compiled without a name


@dataclass(slots=True)
class _Run:
    kind: str  # "chain", "node", "tool" or "model"
    name: str | None
    parent: UUID | None
    outer: ctx.Attribution  # where the run started: its own event is attributed here
    inner: ctx.Attribution | None = None  # what its children run under; None: the same as outer
    token: contextvars.Token[ctx.Attribution] | None = None
    started: float = 0.0
    # model runs
    provider: str | None = None
    model: str | None = None
    prompt_bytes: int = 0
    prompt_messages: int = 0
    streamed_bytes: int = 0
    streamed: bool = False
    mark: seen_calls.WrapperMark | None = None  # did the SDK wrapper underneath meter this call?
    # tool runs
    args: Any = None
    tool_call_id: str | None = None


# Process-wide, so two handlers on one run (an explicit one and `tracking()`) count it once.
_lock = threading.Lock()
_runs: OrderedDict[UUID, _Run] = OrderedDict()
_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    """Log `message` once per key (a provider name); bounded, whatever names runs bring."""
    if key not in _warned and len(_warned) < 64:
        _warned.add(key)
        log.warning("%s", message)


def _add(run_id: UUID, run: _Run) -> bool:
    """Register a run; False when another handler already did (it is that handler's)."""
    with _lock:
        if run_id in _runs:
            return False
        _runs[run_id] = run
        while len(_runs) > MAX_RUNS:
            _runs.popitem(last=False)
    return True


def _pop(run_id: UUID) -> _Run | None:
    with _lock:
        return _runs.pop(run_id, None)


def _get(run_id: UUID | None) -> _Run | None:
    if run_id is None:
        return None
    with _lock:
        return _runs.get(run_id)


def _inner(run: _Run | None) -> ctx.Attribution:
    """The attribution a new child of `run` starts under (the current one for an unknown parent)."""
    for _ in range(_MAX_DEPTH):
        if run is None:
            break
        if run.inner is not None:
            return run.inner
        if run.parent is None:
            return run.outer
        run = _get(run.parent)
    return ctx.current()


def _structural(run: _Run | None) -> _Run | None:
    """The nearest run at or above `run` that shapes attribution: a node, a tool or a session."""
    for _ in range(_MAX_DEPTH):
        if run is None or run.kind in ("node", "tool") or run.inner is not None:
            return run
        run = _get(run.parent)
    return None


def _child_session(parent: ctx.Attribution, agent: str | None, ledger: _ledger.Ledger | None) -> ctx.Attribution:
    """A session opened under `parent` (its child when `parent` has a session): its attribution."""
    token = ctx.use(parent)
    try:
        return ctx.session(agent=lu.clean(agent), ledger=ledger).attribution
    finally:
        ctx.restore(token)


def _open_once(run: _Run, agent: str | None, ledger: _ledger.Ledger | None) -> None:
    """Make `run` a child session, once (parallel branches may find it at the same moment)."""
    with _lock:
        if run.inner is None:
            run.inner = _child_session(run.outer, agent, ledger)


def _step(parent: ctx.Attribution, name: str) -> ctx.Attribution:
    """`parent` inside step `name` (nested steps join with "/", as tt.step does)."""
    name = lu.clean(name) or "step"
    path = f"{parent.step}/{name}" if parent.step else name
    return replace(
        parent,
        step=lu.clean(path),
        span_id=ctx.new_span_id(),
        trace_id=parent.trace_id or ctx.new_trace_id(),
    )


def _leave(run: _Run) -> None:
    """Undo what the run's start made current, if it still is (never someone else's attribution)."""
    if run.mark is not None:
        run.mark.leave()
    if run.token is not None and run.inner is not None and ctx.current() is run.inner:
        try:
            ctx.restore(run.token)
        except ValueError:
            old = run.token.old_value
            ctx.use(ctx.EMPTY if old is contextvars.Token.MISSING else old)


def _is_node(metadata: Mapping[str, Any], tags: list[str] | None) -> bool:
    """LangGraph runs each node with `langgraph_node` in the metadata and a `graph:step:N` tag;
    the runs inside a node inherit the metadata but not the tag."""
    return isinstance(metadata.get("langgraph_node"), str) and any(
        isinstance(t, str) and t.startswith("graph:step:") for t in tags or ()
    )


class TokentrailCallbackHandler(BaseCallbackHandler):
    """Attributes LangChain/LangGraph runs to tokentrail steps and sessions and meters their model
    calls (see the module's docstring). `ledger`: where the events go (default: the current
    session's ledger, else the default one); `sessions=False`: a top-level run outside any
    `tt.session` opens none."""

    run_inline = True  # called in the run's own context, also from async runs (see module doc)
    raise_error = False

    def __init__(self, *, ledger: _ledger.Ledger | None = None, sessions: bool = True) -> None:
        super().__init__()
        self.ledger = ledger
        self.sessions = sessions

    def _ledger_for(self, attribution: ctx.Attribution) -> _ledger.Ledger:
        found = self.ledger or attribution.ledger
        return found if isinstance(found, _ledger.Ledger) else get_ledger()

    # -- chains: graphs, nodes, sub-graphs ----------------------------------------------------

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        md = metadata or {}
        name = kwargs.get("name") or (serialized or {}).get("name")
        name = name if isinstance(name, str) else None
        parent = _get(parent_run_id)
        if _is_node(md, tags):
            if parent is not None and parent.kind == "chain" and parent.inner is None and parent.parent is not None:
                # the node's graph runs inside another run: a sub-graph (or a graph used as a tool)
                _open_once(parent, _name_of_graph(parent, _get(parent.parent)), self.ledger)
            outer = _inner(parent)
            run = _Run("node", name, parent_run_id, outer, _step(outer, str(md["langgraph_node"])))
        elif parent_run_id is None:
            outer = ctx.current()
            run = _Run("chain", name, None, outer)
            if self.sessions and outer.session is None:
                run.inner = _child_session(outer, name, self.ledger)
        else:
            run = _Run("chain", name, parent_run_id, _inner(parent))
        if not _add(run_id, run):
            return
        if run.kind == "node" and run.inner is not None:
            run.token = ctx.use(run.inner)  # what the node's code and its SDK calls are attributed to

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        run = _pop(run_id)
        if run is not None:
            _leave(run)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self.on_chain_end(None, run_id=run_id)

    # -- model calls ----------------------------------------------------------------------------

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[Any]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        count = sum(len(batch) for batch in messages or [])
        self._model_start(serialized, metadata, lu.text_size(messages), count, run_id, parent_run_id, kwargs)

    def on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._model_start(
            serialized, metadata, lu.text_size(prompts), len(prompts or []), run_id, parent_run_id, kwargs
        )

    def _model_start(
        self,
        serialized: dict[str, Any] | None,
        metadata: dict[str, Any] | None,
        prompt_bytes: int,
        prompt_messages: int,
        run_id: UUID,
        parent_run_id: UUID | None,
        kwargs: dict[str, Any],
    ) -> None:
        md = metadata or {}
        parent = _get(parent_run_id)
        holder = _structural(parent)
        if holder is not None and holder.kind == "tool" and holder.inner is None:
            _open_once(holder, holder.name, self.ledger)  # an agent used as a tool
        attribution = _inner(parent)
        requested = md.get("ls_model_name")
        params = kwargs.get("invocation_params")
        if not isinstance(requested, str) and isinstance(params, Mapping):
            requested = params.get("model") or params.get("model_name")
        run = _Run(
            "model",
            None,
            parent_run_id,
            attribution,
            inner=attribution,
            started=time.perf_counter(),
            provider=lu.provider_of(md, serialized),
            model=lu.clean(requested) if isinstance(requested, str) else None,
            prompt_bytes=prompt_bytes,
            prompt_messages=prompt_messages,
        )
        if not _add(run_id, run):
            return
        # the SDK call underneath is attributed like this run, and its event marks it metered
        run.token = ctx.use(attribution)
        run.mark = seen_calls.wrapper_mark("langchain")
        run.mark.enter()

    def on_llm_new_token(self, token: str | list[str | dict[str, Any]], *, run_id: UUID, **kwargs: Any) -> None:
        run = _get(run_id)
        if run is not None:
            run.streamed = True
            run.streamed_bytes += lu.text_size(token)

    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        run = _pop(run_id)
        if run is None:
            return
        _leave(run)
        if run.mark is not None and (run.mark.metered or run.mark.saw(lu.response_id(response))):
            return  # the SDK wrapper's event is this call's one event
        self._record_call(run, response, "ok")

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        run = _pop(run_id)
        if run is None:
            return
        _leave(run)
        if (run.mark is not None and run.mark.metered) or not run.streamed_bytes:
            return  # the wrapper recorded it, or the provider produced nothing we saw
        # a stream that broke after the provider had worked: an estimate, never $0 (docs/rules.md)
        self._record_call(run, None, "error")

    def _record_call(self, run: _Run, response: Any, status: str) -> None:
        provider = run.provider or (lu.response_metadata(response).get("model_provider") if response else None)
        if not isinstance(provider, str) or not provider:
            _warn_once("", "tokentrail: a LangChain model run names no provider (ls_provider); it is not metered")
            return
        counts = lu.reported_counts(response) if response is not None else None
        estimated = counts is None
        if counts is None:
            counts = lu.estimated_counts(run.prompt_bytes, run.prompt_messages, response)
            if response is None:
                counts["output_tokens"] = max(1, run.streamed_bytes // 4)
            else:
                _warn_once(
                    provider,
                    f"tokentrail: a {provider} model run reported no token usage (a stream without "
                    "stream_usage=True?); its tokens are estimated",
                )
        model = lu.model_of(response, run.model) if response is not None else run.model
        problem = None
        try:
            usage = from_counts(**counts)
        except UsageProblem as e:
            usage, problem = None, e.reason
        ledger = self._ledger_for(run.outer)
        event = ledger.build_call(
            provider=provider,
            model=model,
            usage=usage,
            operation=lu.operation_of(provider, response),
            status=status,
            problem=problem,
            latency_ms=round((time.perf_counter() - run.started) * 1000, 3),
            streamed=run.streamed or type(_first(response)).__name__ == "ChatGenerationChunk",
            tool_calls=lu.tool_calls_of(response) if response is not None else (),
            attribution=run.outer,
            usage_estimated=estimated,
        )
        ledger.record(event, session=run.outer.session)
        ledger.charge(event)

    # -- tools ----------------------------------------------------------------------------------

    def on_tool_start(
        self,
        serialized: dict[str, Any],
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        name = kwargs.get("name") or (serialized or {}).get("name")
        tool_call_id = kwargs.get("tool_call_id")
        run = _Run(
            "tool",
            lu.clean(name) if isinstance(name, str) and name else "tool",
            parent_run_id,
            _inner(_get(parent_run_id)),
            started=time.perf_counter(),
            args=inputs if inputs is not None else input_str,
            tool_call_id=lu.clean(tool_call_id) if isinstance(tool_call_id, str) else None,
        )
        _add(run_id, run)

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._tool_done(run_id, "ok")

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._tool_done(run_id, "error")

    def _tool_done(self, run_id: UUID, status: str) -> None:
        run = _pop(run_id)
        if run is None:
            return
        token = ctx.use(run.outer)  # record_tool links the run to the model call that asked for it
        try:
            self._ledger_for(run.outer).record_tool(
                run.name or "tool",
                run.args,
                tool_call_id=run.tool_call_id,
                latency_ms=round((time.perf_counter() - run.started) * 1000, 3),
                status=status,
            )
        finally:
            ctx.restore(token)


def _name_of_graph(graph: _Run, parent: _Run | None) -> str | None:
    """A sub-graph's agent name: its own, else (compiled without one) the node or tool running it."""
    if graph.name and graph.name != _UNNAMED_GRAPH:
        return graph.name
    if parent is not None and parent.kind in ("node", "tool") and parent.name:
        return parent.name
    return graph.name


def _first(response: Any) -> Any:
    for batch in getattr(response, "generations", None) or []:
        for gen in batch or []:
            return gen
    return None


# -- installing it for every run ------------------------------------------------------------------

_installed: contextvars.ContextVar[TokentrailCallbackHandler | None] = contextvars.ContextVar(
    "tokentrail_langchain_handler", default=None
)
register_configure_hook(_installed, inheritable=True)


@contextmanager
def tracking(*, ledger: _ledger.Ledger | None = None, sessions: bool = True) -> Iterator[TokentrailCallbackHandler]:
    """Every LangChain/LangGraph run started inside (in this context and tasks started from it)
    gets a `TokentrailCallbackHandler`, without passing callbacks in each config."""
    handler = TokentrailCallbackHandler(ledger=ledger, sessions=sessions)
    token = _installed.set(handler)
    try:
        yield handler
    finally:
        _installed.reset(token)


def callbacks_config(*, ledger: _ledger.Ledger | None = None, sessions: bool = True) -> dict[str, Any]:
    """`{"callbacks": [TokentrailCallbackHandler()]}`, for `graph.invoke(state, config=...)`."""
    return {"callbacks": [TokentrailCallbackHandler(ledger=ledger, sessions=sessions)]}
