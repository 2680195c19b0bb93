"""The savings advisor's rules about work that was not needed: runaway output, redundant calls and
tool runs, and reasoning far above what tasks that succeed used. Same shape as advise_rules."""

from __future__ import annotations

import math
from collections.abc import Set
from decimal import Decimal

from tokentrail.analytics.advise_model import (
    MIN_CALLS,
    MIN_REDUNDANT,
    MIN_SESSIONS,
    MIN_SIGNAL,
    Finding,
    Group,
    cost,
    examples,
    money,
    not_enough,
    per_mtok,
    saving,
)
from tokentrail.analytics.economics import percentile
from tokentrail.events import OUTPUT_LIMIT_NONE, UsageEvent
from tokentrail.pricing import PriceBook

REASONING_RATIO = 4.0  # reasoning tokens at least this x the visible output
REASONING_CUT = 2  # a lower effort is assumed to divide the reasoning tokens by this (conservative)


def runaway_output(g: Group, book: PriceBook) -> Finding | None:
    """Calls sent without an output limit, or that stopped on theirs: the saving from a limit at
    the agent's p95 output (only calls above it save anything)."""
    unbounded = [c for c in g.calls if c.output_limit == OUTPUT_LIMIT_NONE or c.stopped_on_limit]
    if len(unbounded) < MIN_SIGNAL:
        return None
    kind, title = "runaway_output", "Set an output limit"
    outputs = [float(c.output_tokens) for c in g.calls if c.status == "ok" and c.output_tokens > 0]
    metric = "calls without max_tokens or stopped on it"
    value = f"{len(unbounded)} of {len(g.calls)}"
    sessions = examples([c.session_id for c in unbounded])
    if len(outputs) < MIN_CALLS:
        why = f"{len(outputs)} calls with output (needs {MIN_CALLS} for a p95)"
        return not_enough(kind, g, title, "set max_tokens", metric, value, sessions, len(unbounded), why)
    p95 = math.ceil(percentile(outputs, 0.95) or 0)
    change = f"set max_tokens={p95:,} (the agent's p95 output)"
    total, over, n = Decimal(0), 0, 0
    runaway: list[str | None] = []
    for c in unbounded:
        if c.output_tokens <= p95:
            continue
        total += saving(c, book, output_tokens=p95, reasoning_tokens=min(c.reasoning_tokens, p95))
        over += c.output_tokens - p95
        n += 1
        runaway.append(c.session_id)
    if n == 0 or total <= 0:
        return None
    rate = per_mtok(unbounded[0], book, "output_mtok")
    formula = f"{over:,} output tokens above p95 ({p95:,}) on {n} calls, at {rate} = {money(total)}"
    return Finding(kind, g, title, change, metric, value, examples(runaway), n, total, formula)


def redundant_calls(g: Group, book: PriceBook) -> Finding | None:
    """Identical model requests (request hash) and identical tool runs (tool, arguments) inside one
    session, after one that succeeded: the saving from caching their answer is their cost."""
    seen: set[tuple[str | None, str]] = set()
    repeats: list[UsageEvent] = []
    for c in g.calls:
        if c.request_hash is None or c.session_id is None:
            continue
        key = (c.session_id, c.request_hash)
        if key in seen:
            repeats.append(c)
        elif c.status == "ok":
            seen.add(key)
    runs: set[tuple[str | None, str, str]] = set()
    tool_repeats: list[UsageEvent] = []
    for t in g.tools:
        if t.tool_args_hash is None or t.session_id is None:
            continue
        tkey = (t.session_id, t.tool_name or "", t.tool_args_hash)
        if tkey in runs:
            tool_repeats.append(t)
        elif t.status == "ok":
            runs.add(tkey)
    n = len(repeats) + len(tool_repeats)
    if n < 2:  # one repeat is a retry, not a pattern
        return None
    kind, title = "redundant_calls", "Cache repeated calls and tool runs"
    change = "cache model answers and tool results by request inside a session (or stop the loop that repeats them)"
    metric = "identical requests / tool runs repeated in a session"
    value = f"{len(repeats)} calls, {len(tool_repeats)} tool runs"
    sessions = examples([e.session_id for e in (*repeats, *tool_repeats)])
    if n < MIN_REDUNDANT or len(g.calls) < MIN_CALLS:
        why = f"repeats: {n} ({MIN_REDUNDANT} needed), calls: {len(g.calls)} ({MIN_CALLS} needed)"
        return not_enough(kind, g, title, change, metric, value, sessions, n, why)
    calls_cost = Decimal(0)
    for c in repeats:
        calls_cost += cost(c, book) or 0
    tools_cost = Decimal(0)
    for t in tool_repeats:
        tools_cost += t.cost_usd or 0
    total = calls_cost + tools_cost
    if total <= 0:
        return None
    formula = (
        f"{len(repeats)} repeated calls ({money(calls_cost)}) + {len(tool_repeats)} repeated tool runs"
        f" ({money(tools_cost)}) = {money(total)}"
    )
    return Finding(kind, g, title, change, metric, value, sessions, n, total, formula)


def unused_reasoning(g: Group, book: PriceBook, succeeded: Set[str]) -> Finding | None:
    """Reasoning tokens far above the visible output on calls of sessions whose task succeeded:
    a lower reasoning effort, assumed to halve the reasoning tokens."""
    heavy = [
        c
        for c in g.calls
        if c.reasoning_tokens > 0
        and c.session_id in succeeded
        and c.reasoning_tokens >= REASONING_RATIO * max(1, c.output_tokens - c.reasoning_tokens)
    ]
    if len(heavy) < MIN_SIGNAL:
        return None
    kind, title = "unused_reasoning", "Lower the reasoning effort"
    change = "set a lower reasoning effort (reasoning_effort / thinking budget) for this task type"
    metric = f"calls of successful sessions reasoning {REASONING_RATIO:g}x+ their visible output"
    reasoning = sum(c.reasoning_tokens for c in heavy)
    visible = sum(max(0, c.output_tokens - c.reasoning_tokens) for c in heavy)
    value = f"{len(heavy)} calls, {reasoning:,} reasoning vs {visible:,} visible tokens"
    sessions = {c.session_id for c in heavy if c.session_id is not None}
    if len(sessions) < MIN_SESSIONS or len(g.calls) < MIN_CALLS:
        why = (
            f"successful sessions: {len(sessions)} ({MIN_SESSIONS} needed), calls: {len(g.calls)} ({MIN_CALLS} needed)"
        )
        return not_enough(
            kind, g, title, change, metric, value, examples([c.session_id for c in heavy]), len(heavy), why
        )
    total, cut = Decimal(0), 0
    for c in heavy:
        drop = c.reasoning_tokens - c.reasoning_tokens // REASONING_CUT
        total += saving(c, book, reasoning_tokens=c.reasoning_tokens - drop, output_tokens=c.output_tokens - drop)
        cut += drop
    if total <= 0:
        return None
    rate = per_mtok(heavy[0], book, "output_mtok")
    formula = f"half of {reasoning:,} reasoning tokens on {len(heavy)} calls = {cut:,} at {rate} = {money(total)}"
    shown = examples([c.session_id for c in heavy])
    return Finding(kind, g, title, change, metric, value, shown, len(heavy), total, formula)
