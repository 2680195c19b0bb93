"""Attribution carried by contextvars: who and what a call is for.

`session(...)` and `step(...)` push an immutable `Attribution` onto a context variable, so
every call made inside them, in this thread or in asyncio tasks started inside them, carries
the same org / team / project / agent / session / user / customer / workflow / task type /
step and tags. Threads do not inherit context variables: run pool work through
`with_context(fn)` (or `contextvars.copy_context().run`) to carry it over.

Spans follow OpenTelemetry's shape: the session is the trace, steps, model calls and tools
are spans, and each event records its own span id and its parent's.
"""

from __future__ import annotations

import contextvars
import functools
import random
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from tokentrail.events import bound_tags, checked_text, new_event_id
from tokentrail.money import usd
from tokentrail.types import OutcomeRecorder

if TYPE_CHECKING:
    from tokentrail.events import UsageEvent

P = ParamSpec("P")
R = TypeVar("R")

ATTRIBUTES = ("org", "team", "project", "agent", "user", "customer", "workflow", "task_type")


# Span and trace ids need uniqueness, not secrecy: random.getrandbits is ~40x faster than
# os.urandom here, and the random module reseeds itself in a forked child.
def new_span_id() -> str:
    return f"{random.getrandbits(64):016x}"


def new_trace_id() -> str:
    return f"{random.getrandbits(128):032x}"


@dataclass(frozen=True, slots=True)
class Attribution:
    """The attribution in force at one point of the program."""

    org: str | None = None
    team: str | None = None
    project: str | None = None
    agent: str | None = None
    user: str | None = None
    customer: str | None = None
    workflow: str | None = None
    task_type: str | None = None
    session_id: str | None = None
    step: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    trace_id: str | None = None
    span_id: str | None = None  # the innermost open span: the parent of the next call
    session: Session | None = None
    ledger: OutcomeRecorder | None = None  # the ledger a session was opened on, if any
    parent_session_id: str | None = None  # the session this one was opened inside (agent trees)

    def as_event_fields(self) -> dict[str, Any]:
        return {
            "org": self.org,
            "team": self.team,
            "project": self.project,
            "agent": self.agent,
            "user": self.user,
            "customer": self.customer,
            "workflow": self.workflow,
            "task_type": self.task_type,
            "session_id": self.session_id,
            "step": self.step,
            "tags": self.tags,
            "trace_id": self.trace_id,
            "parent_span_id": self.span_id,
            "parent_session_id": self.parent_session_id,
        }


EMPTY = Attribution()
_current: contextvars.ContextVar[Attribution] = contextvars.ContextVar("tokentrail_attribution", default=EMPTY)


def current() -> Attribution:
    """The attribution of the calling code."""
    return _current.get()


# The context sits below the ledger, so the default ledger's module tells it how to find the default
# ledger (tokentrail.default_ledger.get_ledger) when it is imported, which `import tokentrail` always does.
_default_recorder: Callable[[], OutcomeRecorder] | None = None


def set_default_recorder(find: Callable[[], OutcomeRecorder]) -> None:
    global _default_recorder
    _default_recorder = find


class Session:
    """A unit of agent work. Use as `with tt.session(...) as s:`; exposes running totals."""

    def __init__(self, attribution: Attribution) -> None:
        self.attribution = attribution
        self.session_id: str = attribution.session_id or ""
        self.trace_id: str = attribution.trace_id or ""
        self._lock = threading.RLock()  # re-entrant: an abandoned stream may record from __del__
        self._cost = Decimal(0)
        self._tokens = 0
        self._calls = 0
        self._tool_runs = 0
        self._unpriced = 0
        self._token: contextvars.Token[Attribution] | None = None
        # tool calls the model asked for, so record_tool can link a tool run to its request
        self.requested_tools: dict[tuple[str, str], tuple[str | None, str | None]] = {}

    @property
    def cost_usd(self) -> Decimal:
        """Money spent so far in this session (priced calls only; see `unpriced_calls`)."""
        return usd(self._cost)

    @property
    def tokens(self) -> int:
        """Input plus output tokens so far."""
        return self._tokens

    @property
    def calls(self) -> int:
        """Model calls so far (tool runs are counted in `tool_runs`)."""
        return self._calls

    @property
    def tool_runs(self) -> int:
        return self._tool_runs

    @property
    def unpriced_calls(self) -> int:
        return self._unpriced

    def add(self, event: UsageEvent) -> None:
        """Count one recorded event into the running totals."""
        with self._lock:
            if event.kind in ("llm", "embedding"):
                self._calls += 1
            elif event.kind == "tool":
                self._tool_runs += 1
            if event.kind != "adjustment":
                self._tokens += event.input_tokens + event.output_tokens
            if event.cost_usd is not None:
                self._cost += event.cost_usd
            elif event.unpriced:
                self._unpriced += 1
        for tc in event.tool_calls:
            self.requested_tools[(tc.name, tc.args_hash)] = (tc.id, event.span_id)

    def outcome(
        self, name: str, *, count: int = 1, success: bool = True, value_usd: Decimal | float | str | None = None
    ) -> None:
        """Record that this session reached `name` (cost per action, docs/metrics.md). `success=False`:
        it tried and failed (its cost still counts against the successful ones); `value_usd`: what the
        outcome was worth, for ROI."""
        recorder = self.attribution.ledger or current().ledger
        if recorder is None:
            if _default_recorder is None:  # cannot happen: the package's __init__ imports the ledger
                raise RuntimeError("tokentrail.default_ledger was not imported")
            recorder = _default_recorder()
        recorder.record_outcome(self.attribution, name, count=count, success=success, value_usd=value_usd)

    def __enter__(self) -> Session:
        self._token = _current.set(self.attribution)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _current.reset(self._token)
            self._token = None

    async def __aenter__(self) -> Session:
        return self.__enter__()

    async def __aexit__(self, *exc: object) -> None:
        self.__exit__()

    def __repr__(self) -> str:
        return (
            f"<Session {self.session_id} agent={self.attribution.agent!r} cost_usd={self._cost} tokens={self._tokens}>"
        )


def session(
    agent: str | None = None,
    *,
    session_id: str | None = None,
    org: str | None = None,
    team: str | None = None,
    project: str | None = None,
    user: str | None = None,
    customer: str | None = None,
    workflow: str | None = None,
    task_type: str | None = None,
    tags: Mapping[str, Any] | None = None,
    ledger: OutcomeRecorder | None = None,
    parent_session: str | Session | None = None,
) -> Session:
    """Open a session: every call inside is attributed to it. Unset dimensions are inherited
    from an enclosing session; tags are merged. A session opened inside another is its child (an
    agent tree: `tokentrail session <root>`); `parent_session` names the parent explicitly (a
    session id, or a Session), e.g. for a sub-agent running in another process."""
    outer = _current.get()
    if isinstance(parent_session, Session):
        parent: str | None = parent_session.session_id
    else:
        parent = checked_text(parent_session, "parent_session") if parent_session is not None else outer.session_id
    given = {
        "org": org,
        "team": team,
        "project": project,
        "agent": agent,
        "user": user,
        "customer": customer,
        "workflow": workflow,
        "task_type": task_type,
    }
    dims: dict[str, Any] = {k: checked_text(v, k) if v is not None else getattr(outer, k) for k, v in given.items()}
    merged_tags = {**outer.tags, **bound_tags(tags)} if tags else dict(outer.tags)
    attribution = Attribution(
        **dims,
        session_id=checked_text(session_id, "session_id") or new_event_id(),
        step=None,
        tags=bound_tags(merged_tags),
        trace_id=new_trace_id(),
        span_id=new_span_id(),
        ledger=ledger or outer.ledger,
        parent_session_id=parent or None,
    )
    if attribution.parent_session_id == attribution.session_id:
        raise ValueError(f"session {attribution.session_id!r} cannot be its own parent")
    s = Session(attribution)
    object.__setattr__(attribution, "session", s)
    return s


@contextmanager
def step(name: str) -> Iterator[Attribution]:
    """Name a step of the agent's work; nested steps join with '/' (e.g. "research/planning")."""
    outer = _current.get()
    name = checked_text(name, "step") or "step"
    path = f"{outer.step}/{name}" if outer.step else name
    trace_id = outer.trace_id or new_trace_id()
    inner = replace(outer, step=checked_text(path, "step"), span_id=new_span_id(), trace_id=trace_id)
    token = _current.set(inner)
    try:
        yield inner
    finally:
        _current.reset(token)


def use(attribution: Attribution) -> contextvars.Token[Attribution]:
    """Make `attribution` the current one until `restore(token)`: for framework hooks whose runs
    open and close in separate callbacks (integrations/langchain.py), where a `with` cannot span."""
    return _current.set(attribution)


def restore(token: contextvars.Token[Attribution]) -> None:
    """Undo `use`. Raises ValueError when called in another context than the `use` was."""
    _current.reset(token)


@contextmanager
def attributes(**dims: Any) -> Iterator[Attribution]:
    """Set attribution dimensions (and `tags=`) without opening a session."""
    outer = _current.get()
    tags = dims.pop("tags", None)
    unknown = set(dims) - set(ATTRIBUTES)
    if unknown:
        raise TypeError(f"unknown attribution dimension(s): {', '.join(sorted(unknown))}")
    changes: dict[str, Any] = {k: checked_text(v, k) for k, v in dims.items()}
    if tags:
        changes["tags"] = bound_tags({**outer.tags, **tags})
    token = _current.set(replace(outer, **changes))
    try:
        yield _current.get()
    finally:
        _current.reset(token)


def with_context(fn: Callable[P, R]) -> Callable[P, R]:
    """Bind `fn` to a copy of the current context, for thread pools:
    `pool.submit(tt.with_context(work), item)` attributes work's calls to the caller's session."""
    ctx = contextvars.copy_context()

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        return ctx.copy().run(fn, *args, **kwargs)  # a fresh copy per call: safe in many threads at once

    return run
