"""Session reports: the newest sessions with their totals, and one session as a call tree.

Plain frozen dataclasses out, no formatting; the SQL is in tokentrail.store.sessions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from tokentrail.analytics.reports import Measures, to_jsonable
from tokentrail.events import UsageEvent, from_micros, from_row, nano_to_usd, usd_to_nano
from tokentrail.store.reports import Scope, Where, check_range, filters, scope_filters
from tokentrail.store.session_rollup import available as has_session_summary
from tokentrail.store.sessions import outcome_counts, session_events, session_sums, summary_answers, summary_sums
from tokentrail.types import Store


@dataclass(frozen=True, slots=True)
class SessionSummary:
    """One session. `calls` counts model calls, `tool_calls` tool runs; `tokens` is input plus
    output; `cost_usd` includes adjustments and is None when no call had a price (unpriced,
    never $0). `outcomes` are (name, count) pairs, for cost per action."""

    session_id: str
    agent: str | None
    team: str | None
    user: str | None
    started: datetime
    ended: datetime
    calls: int
    tool_calls: int
    tokens: int
    cost_usd: Decimal | None
    unpriced_calls: int
    errors: int
    estimated_calls: int = 0  # calls whose usage the provider never reported (estimated)
    outcomes: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class CallNode:
    """A node of a session's call tree.

    kind: "step" (a step of the agent's work; `step` is its full '/'-joined path), "llm" /
    "embedding" (a model call; `name` is provider/model), "tool" (a tool run; its children never
    exist, it hangs under the model call that asked for it when they can be linked), or
    "adjustment" (a cost correction, under the event it corrects when that is in the session).
    `cost_usd` and `tokens` are the node's own plus its descendants'. `context_growth` (model
    calls only) is input_tokens minus the previous model call's in the session (None for the first).
    """

    kind: str
    name: str
    event: UsageEvent | None = None
    children: tuple[CallNode, ...] = ()
    step: str | None = None
    cost_usd: Decimal = Decimal(0)
    tokens: int = 0
    context_growth: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "name": self.name,
            "step": self.step,
            "cost_usd": None if self.cost_usd is None else format(self.cost_usd, "f"),
            "tokens": self.tokens,
            "context_growth": self.context_growth,
            "event": self.event.to_dict() if self.event else None,
            "children": [c.to_dict() for c in self.children],
        }
        return out


@dataclass(frozen=True, slots=True)
class SessionDetail:
    """Every event of a session, in time order and as a call tree, with the session's totals."""

    session_id: str
    agent: str | None
    team: str | None
    user: str | None
    started: datetime
    ended: datetime
    totals: Measures
    tree: tuple[CallNode, ...]
    events: tuple[UsageEvent, ...] = field(repr=False)
    outcomes: tuple[tuple[str, int], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "agent": self.agent,
            "team": self.team,
            "user": self.user,
            "started": self.started.isoformat(),
            "ended": self.ended.isoformat(),
            "totals": to_jsonable(self.totals.measures()),
            "outcomes": dict(self.outcomes),
            "tree": [n.to_dict() for n in self.tree],
        }


# -- the session list -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionPage:
    """A page of the session list. `scanned`: the session summary could not answer the filters, so
    the events were read (`note` says why): the same sessions and totals, only slower."""

    sessions: list[SessionSummary]
    scanned: bool = False
    note: str | None = None


def sessions(
    store: Store,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    where: Where | None = None,
    limit: int = 50,
    offset: int = 0,
    scope: Scope | None = None,
    summary: bool = True,
) -> list[SessionSummary]:
    """Sessions that started in [since, until) and have at least one event matching `where`,
    newest first (skipping the first `offset`: a page), with the totals of all their events. With
    a `scope` (a key's attribution) a session is only its events inside the scope: sessions are
    listed, timed and totalled from those alone, so another team's events under the same session
    id never show. Read from the session summary when it can answer (`summary=False`: the events)."""
    return session_page(
        store, since=since, until=until, where=where, limit=limit, offset=offset, scope=scope, summary=summary
    ).sessions


def session_page(
    store: Store,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    where: Where | None = None,
    limit: int = 50,
    offset: int = 0,
    scope: Scope | None = None,
    summary: bool = True,
) -> SessionPage:
    """`sessions`, saying whether the events had to be scanned."""
    if type(limit) is not int or limit < 1:
        raise ValueError(f"limit must be a positive whole number, not {limit!r}")
    if type(offset) is not int or offset < 0:
        raise ValueError(f"offset must be a whole number from 0, not {offset!r}")
    lo, hi = check_range(since, until)
    forced = scope_filters(scope)
    flt = filters(where)
    note = None
    if not summary_answers(flt, forced):
        note = "the session summary holds the session and its attribution only: other filters read every event"
    elif summary and not has_session_summary(store):
        note = "this ledger has no session summary yet (run `tokentrail migrate`): every event was read"
    if summary and note is None:
        rows = summary_sums(store, lo, hi, flt, forced, limit, offset)
    else:
        rows = session_sums(store, lo, hi, flt, forced, limit, offset)
    outcomes = outcome_counts(store, [r[0] for r in rows], forced)
    found = [
        SessionSummary(
            session_id=r[0],
            started=from_micros(int(r[1])),
            ended=from_micros(int(r[2])),
            agent=r[3],
            team=r[4],
            user=r[5],
            calls=int(r[6]),
            tool_calls=int(r[7]),
            tokens=int(r[8]),
            cost_usd=None if r[9] is None and int(r[10]) else nano_to_usd(int(r[9] or 0)),
            unpriced_calls=int(r[10]),
            errors=int(r[11]),
            estimated_calls=int(r[12] or 0),
            outcomes=outcomes.get(r[0], ()),
        )
        for r in rows
    ]
    return SessionPage(found, scanned=note is not None, note=note)


# -- one session as a call tree ---------------------------------------------------------------


def session_detail(store: Store, session_id: str, *, scope: Scope | None = None) -> SessionDetail:
    """Every event of a session in time order, as a call tree. LookupError if there is none.
    With a `scope`, only the session's events inside it (LookupError, the same, if none is)."""
    forced = scope_filters(scope)
    rows = session_events(store, session_id, forced)
    if not rows:
        raise LookupError(f"no session {session_id!r} in the ledger")
    events = tuple(from_row(r) for r in rows)
    first = next((e for e in events if e.agent or e.team or e.user), events[0])
    return SessionDetail(
        session_id=session_id,
        agent=first.agent,
        team=first.team,
        user=first.user,
        started=events[0].ts,
        ended=events[-1].ts,
        totals=measure(events),
        tree=build_tree(events),
        events=events,
        outcomes=outcome_counts(store, [session_id], forced).get(session_id, ()),
    )


def measure(events: Iterable[UsageEvent]) -> Measures:
    """Measures over events in Python, with the same definitions as the SQL ones."""
    m = [0] * 12
    for e in events:
        if e.kind in ("llm", "embedding"):
            m[0] += 1  # calls are model calls; tool runs have their own count, as in SQL
        elif e.kind == "tool":
            m[10] += 1
        if e.kind != "adjustment":
            m[1] += e.status != "ok"
        m[2] += e.input_tokens
        m[3] += e.output_tokens
        m[4] += e.cache_read_tokens
        m[5] += e.cache_write_tokens
        m[6] += e.reasoning_tokens
        if e.cost_usd is not None:
            m[7] += usd_to_nano(e.cost_usd) or 0
        elif e.kind in ("llm", "embedding"):
            m[9 if e.status.startswith("invalid_usage") else 8] += 1
        m[11] += e.usage_estimated
    return Measures.from_sums(m)


class _Node:
    """A tree node while the tree is being built (frozen into a CallNode at the end)."""

    __slots__ = ("children", "event", "growth", "kind", "name", "step")

    def __init__(self, kind: str, name: str, event: UsageEvent | None = None, step: str | None = None) -> None:
        self.kind, self.name, self.event, self.step = kind, name, event, step
        self.children: list[_Node] = []
        self.growth: int | None = None

    def freeze(self) -> CallNode:
        children = tuple(c.freeze() for c in self.children)
        own_cost = self.event.cost_usd if self.event and self.event.cost_usd is not None else Decimal(0)
        own_tokens = self.event.total_tokens if self.event else 0
        return CallNode(
            kind=self.kind,
            name=self.name,
            event=self.event,
            children=children,
            step=self.step,
            cost_usd=own_cost + sum((c.cost_usd for c in children), Decimal(0)),
            tokens=own_tokens + sum(c.tokens for c in children),
            context_growth=self.growth,
        )


def _label(e: UsageEvent) -> str:
    if e.kind in ("llm", "embedding"):
        return "/".join(x for x in (e.provider, e.model) if x) or e.kind
    if e.kind == "tool":
        return e.tool_name or "tool"
    return "adjustment"


def build_tree(events: Sequence[UsageEvent]) -> tuple[CallNode, ...]:
    """The call tree of time-ordered events: steps nest by their '/'-joined path (a step entered
    again after others is a new node), tool runs hang under the model call that asked for them
    (by parent span or tool-call id), adjustments under the event they correct."""
    nodes = [_Node(e.kind, _label(e), e) for e in events]
    by_span: dict[str, _Node] = {}
    by_call_id: dict[str, _Node] = {}
    by_event: dict[str, _Node] = {}
    previous_input: int | None = None
    for e, node in zip(events, nodes, strict=True):
        by_event[str(e.event_id)] = node
        if e.kind in ("llm", "embedding"):
            if e.span_id:
                by_span[e.span_id] = node
            for tc in e.tool_calls:
                if tc.id:
                    by_call_id[tc.id] = node
        if e.kind == "llm":
            node.growth = None if previous_input is None else e.input_tokens - previous_input
            previous_input = e.input_tokens
    roots: list[_Node] = []
    open_steps: list[_Node] = []
    for e, node in zip(events, nodes, strict=True):
        parent = None
        if e.kind == "tool":
            parent = by_span.get(e.parent_span_id or "") or by_call_id.get(e.tool_call_id or "")
        elif e.kind == "adjustment":
            parent = by_event.get(e.adjusts_event_id or "")
        if parent is not None and parent is not node:
            parent.children.append(node)
        else:
            _enter(roots, open_steps, e.step).append(node)
    return tuple(n.freeze() for n in roots)


def _enter(roots: list[_Node], open_steps: list[_Node], path: str | None) -> list[_Node]:
    """Make the open steps match `path` (closing the others); the list new nodes go into."""
    parts = path.split("/") if path else []
    keep = 0
    while keep < min(len(parts), len(open_steps)) and open_steps[keep].name == parts[keep]:
        keep += 1
    del open_steps[keep:]
    for i in range(keep, len(parts)):
        step = _Node("step", parts[i], step="/".join(parts[: i + 1]))
        (open_steps[-1].children if open_steps else roots).append(step)
        open_steps.append(step)
    return open_steps[-1].children if open_steps else roots


__all__ = [
    "CallNode",
    "SessionDetail",
    "SessionPage",
    "SessionSummary",
    "build_tree",
    "measure",
    "session_detail",
    "session_page",
    "sessions",
]
