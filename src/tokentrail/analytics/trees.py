"""Agent trees: a session opened inside another (or given `parent_session=`, or the gateway header
X-Tokentrail-Parent-Session) is its child. Every event carries its own session and that session's
parent, so a tree is read from the events alone, and each event counts exactly once: in its own
session's node, and in the totals of that node's ancestors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from tokentrail.analytics.reports import to_jsonable
from tokentrail.events import from_micros, nano_to_usd
from tokentrail.store import economics as sql
from tokentrail.store.reports import Scope, filter_sql, scope_filters
from tokentrail.types import Store

MAX_DEPTH = 32  # levels walked up or down a tree (a parent link is caller data: never loop on it)
MAX_NODES = 10_000  # sessions in one tree


@dataclass(frozen=True, slots=True)
class TreeNode:
    """One session of an agent tree: its own events' cost, calls, tool runs and tokens, and the
    totals of its subtree (itself and every descendant)."""

    session_id: str
    agent: str | None
    started: datetime | None
    ended: datetime | None
    cost_usd: Decimal
    calls: int
    tool_runs: int
    tokens: int
    unpriced_calls: int
    total_cost_usd: Decimal
    total_calls: int
    total_tokens: int
    total_unpriced_calls: int
    children: tuple[TreeNode, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "agent": self.agent,
            "started": to_jsonable(self.started),
            "ended": to_jsonable(self.ended),
            "cost_usd": to_jsonable(self.cost_usd),
            "calls": self.calls,
            "tool_runs": self.tool_runs,
            "tokens": self.tokens,
            "unpriced_calls": self.unpriced_calls,
            "total_cost_usd": to_jsonable(self.total_cost_usd),
            "total_calls": self.total_calls,
            "total_tokens": self.total_tokens,
            "total_unpriced_calls": self.total_unpriced_calls,
            "children": [c.to_dict() for c in self.children],
        }

    def walk(self) -> list[TreeNode]:
        """This node and its descendants, depth first."""
        out = [self]
        for c in self.children:
            out += c.walk()
        return out


def _scope_sql(store: Store, scope: Scope | None) -> tuple[str, list[Any]]:
    cond, params = filter_sql(store, scope_filters(scope))
    return cond, list(params)


def roots_of(store: Store, session_ids: Sequence[str], scope: Scope | None = None) -> dict[str, str]:
    """The root session of each of these sessions (only those with a parent are in the map).
    Parent links are read inside `scope`: a parent outside it is not followed."""
    cond, params = _scope_sql(store, scope)
    parent: dict[str, str] = {}
    todo = list(dict.fromkeys(session_ids))
    for _ in range(MAX_DEPTH):
        found = sorted((s, p) for s, p in sql.parents(store, todo, cond, params) if s not in parent and p != s)
        for s, p in found:
            parent.setdefault(s, p)
        todo = [p for _, p in found if p not in parent]
        if not todo:
            break
    out: dict[str, str] = {}
    for s in session_ids:
        r, seen = s, {s}
        while r in parent and parent[r] not in seen and len(seen) <= MAX_DEPTH:
            r = parent[r]
            seen.add(r)
        if r != s:
            out[s] = r
    return out


def session_tree(store: Store, root: str, scope: Scope | None = None) -> TreeNode | None:
    """The tree of sessions under `root` (None: no event of it, or of any child, in `scope`)."""
    cond, params = _scope_sql(store, scope)
    kids: dict[str, list[str]] = {}
    seen = {root}
    level = [root]
    for _ in range(MAX_DEPTH):
        nxt: list[str] = []
        for p, s in sorted(sql.children(store, level, cond, params)):
            if s in seen or len(seen) >= MAX_NODES:
                continue  # a session with two parents sits under the first; a cycle is cut
            seen.add(s)
            kids.setdefault(p, []).append(s)
            nxt.append(s)
        if not nxt:
            break
        level = nxt
    own = {r[0]: r for r in sql.tree_session_sums(store, list(seen), cond, params)}
    if root not in own and not kids.get(root):
        return None
    return _build(root, kids, own)


def _build(sid: str, kids: dict[str, list[str]], own: dict[str, Any]) -> TreeNode:
    built = (_build(c, kids, own) for c in kids.get(sid, ()))
    children = tuple(sorted(built, key=lambda n: (n.started.timestamp() if n.started else 0.0, n.session_id)))
    r = own.get(sid)
    cost, calls, tools, tokens, unpriced = (int(v or 0) for v in (r[1:6] if r else (0, 0, 0, 0, 0)))
    return TreeNode(
        session_id=sid,
        agent=r[8] if r else None,
        started=from_micros(r[6]) if r and r[6] is not None else None,
        ended=from_micros(r[7]) if r and r[7] is not None else None,
        cost_usd=nano_to_usd(cost) or Decimal(0),
        calls=calls,
        tool_runs=tools,
        tokens=tokens,
        unpriced_calls=unpriced,
        total_cost_usd=(nano_to_usd(cost) or Decimal(0)) + sum((c.total_cost_usd for c in children), Decimal(0)),
        total_calls=calls + sum(c.total_calls for c in children),
        total_tokens=tokens + sum(c.total_tokens for c in children),
        total_unpriced_calls=unpriced + sum(c.total_unpriced_calls for c in children),
        children=children,
    )
