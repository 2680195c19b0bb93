"""The savings advisor's rules about what a call sends: prompt caching, model routing and context
trimming. Each is a function of one agent's calls (a Group) returning a Finding or None; every
saving is the call's cost as recorded minus its cost changed, at the price book's prices."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from decimal import Decimal

from tokentrail.analytics.advise_model import (
    MIN_CALLS,
    MIN_REPEATS,
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
from tokentrail.analytics.config import AnomalyConfig
from tokentrail.analytics.economics import percentile
from tokentrail.events import UsageEvent
from tokentrail.pricing import PriceBook

CACHE_MIN_PREFIX = 1024  # tokens: the shortest prompt prefix the providers cache
CACHE_TTL_US = 5 * 60 * 1_000_000  # a cached prefix lives about 5 minutes after its last use
# model -> the cheaper model of the same provider the routing advice reprices it on
CHEAPER: Mapping[str, str] = {
    "gpt-4o": "gpt-4o-mini",
    "gpt-4.1": "gpt-4.1-mini",
    "gpt-4.1-mini": "gpt-4.1-nano",
    "gpt-5": "gpt-5-mini",
    "gpt-5-mini": "gpt-5-nano",
    "o3": "o4-mini",
    "o1": "o4-mini",
    "claude-opus-4-1": "claude-sonnet-4-5",
    "claude-opus-4-0": "claude-sonnet-4-0",
    "claude-sonnet-4-5": "claude-haiku-4-5",
    "claude-sonnet-4-0": "claude-3-5-haiku-latest",
    "claude-3-7-sonnet-latest": "claude-3-5-haiku-latest",
    "gemini-2.5-pro": "gemini-2.5-flash",
    "gemini-2.5-flash": "gemini-2.5-flash-lite",
}
ROUTE_MAX_INPUT = 1500  # p90 input tokens of a "short" workload
ROUTE_MAX_OUTPUT = 300  # p90 output tokens
ROUTE_MAX_TOOLS = 1.0  # tool calls asked per model call, on average


_DATED = re.compile(r"-(?:20\d\d-\d\d-\d\d|20\d{6})$")  # gpt-4o-2024-08-06, claude-…-20250929


def cheaper(model: str | None) -> str | None:
    """The cheaper sibling of a model (a dated snapshot counts as its model), or None."""
    if not model:
        return None
    return CHEAPER.get(model) or CHEAPER.get(_DATED.sub("", model))


def prefix_of(e: UsageEvent) -> tuple[str, int] | None:
    """(prefix hash, prefix tokens) of a call: its share of the input, from the stored prefix_hash."""
    if not e.prefix_hash:
        return None
    h, _, tail = e.prefix_hash.rpartition(":")
    if not h or not tail.isdigit() or len(tail) > 4:
        return None
    return h, e.input_tokens * min(1000, int(tail)) // 1000


def prompt_caching(g: Group, book: PriceBook) -> Finding | None:
    """Calls repeating a long identical prefix with no cache reads: the repeats inside a cache's
    lifetime would read the prefix from the cache; the first of each burst writes it (where the
    provider charges cache writes, that cost is subtracted)."""
    by_prefix: dict[tuple[str, str | None, str | None], list[tuple[UsageEvent, int]]] = {}
    for c in g.calls:
        p = prefix_of(c)
        if p is None or p[1] < CACHE_MIN_PREFIX or c.cache_read_tokens or c.status != "ok":
            continue
        by_prefix.setdefault((p[0], c.provider, c.model), []).append((c, p[1]))
    repeated = {k: v for k, v in by_prefix.items() if len(v) >= 2}
    if not repeated:
        return None
    title, kind = "Enable prompt caching", "prompt_caching"
    n = sum(len(v) for v in repeated.values())
    if n < MIN_SIGNAL:
        return None
    sessions = examples([c.session_id for v in repeated.values() for c, _ in v])
    metric = "calls repeating a prefix of 1,024+ tokens without cache reads"
    change = "put the stable system prompt and tools first and enable prompt caching (cache_control / a cache key)"
    best = max(len(v) for v in repeated.values())
    if len(g.calls) < MIN_CALLS or best < MIN_REPEATS:
        why = f"{len(g.calls)} calls, longest repeat {best} (needs {MIN_CALLS} calls and {MIN_REPEATS} repeats)"
        return not_enough(kind, g, title, change, metric, f"{n}", sessions, n, why)
    total, hits, tokens, extra = Decimal(0), 0, 0, Decimal(0)
    sample: UsageEvent | None = None
    for calls in repeated.values():
        last_us = None
        for c, prefix in calls:
            ts = int(c.ts.timestamp() * 1_000_000)
            if last_us is not None and ts - last_us <= CACHE_TTL_US:
                total += saving(c, book, cache_read_tokens=min(prefix, c.input_tokens - c.cache_write_tokens))
                hits += 1
                tokens += prefix
                sample = sample or c
            elif c.cache_write_tokens == 0:  # the burst's first call writes the cache
                more = -saving(c, book, cache_write_tokens=prefix)
                extra += more
                total -= more
            last_us = ts
    if hits == 0 or total <= 0 or sample is None:
        return None
    avg = tokens // hits
    write = f" − {money(extra)} of cache writes" if extra else ""
    formula = (
        f"{hits} calls within {CACHE_TTL_US // 60_000_000} min of the same prefix × ~{avg:,} prefix tokens "
        f"read from cache ({per_mtok(sample, book, 'cache_read_mtok')}) instead of input "
        f"({per_mtok(sample, book, 'input_mtok')}){write} = {money(total)}"
    )
    return Finding(kind, g, title, change, metric, f"{n} of {len(g.calls)}", sessions, hits, total, formula)


def model_routing(g: Group, book: PriceBook) -> Finding | None:
    """A model with a cheaper sibling doing short work (short input and output, few tool calls):
    the same calls repriced on the cheaper model (never applied)."""
    by_model: dict[tuple[str | None, str | None], list[UsageEvent]] = {}
    for c in g.calls:
        if cheaper(c.model) is not None and c.status == "ok":
            by_model.setdefault((c.provider, c.model), []).append(c)
    best: Finding | None = None
    for (_, model), calls in by_model.items():
        assert model is not None
        p90_in = percentile([float(c.input_tokens) for c in calls], 0.9) or 0.0
        p90_out = percentile([float(c.output_tokens) for c in calls], 0.9) or 0.0
        tools = sum(len(c.tool_calls) for c in calls) / len(calls)
        if p90_in > ROUTE_MAX_INPUT or p90_out > ROUTE_MAX_OUTPUT or tools > ROUTE_MAX_TOOLS:
            continue
        target = cheaper(model)
        assert target is not None
        kind, title = "model_routing", f"Route to {target}"
        change = f"try {target} instead of {model} for this work (compare quality on a sample first; not applied)"
        metric = "p90 input / output tokens, tool calls per call"
        value = f"{math.ceil(p90_in):,} / {math.ceil(p90_out):,}, {tools:.1f} on {model}"
        sessions = examples([c.session_id for c in calls])
        if len(calls) < MIN_SIGNAL:
            continue
        if len(calls) < MIN_CALLS:
            why = f"{len(calls)} calls on {model} (needs {MIN_CALLS})"
            found = not_enough(kind, g, title, change, metric, value, sessions, len(calls), why)
        else:
            old = new = Decimal(0)
            for c in calls:
                a, b = cost(c, book), cost(c, book, model=target)
                if a is not None and b is not None:
                    old, new = old + a, new + b
            if old - new <= 0:
                continue
            formula = (
                f"{len(calls)} calls repriced from {model} ({money(old)}) to {target} ({money(new)})"
                f" = {money(old - new)}"
            )
            found = Finding(kind, g, title, change, metric, value, sessions, len(calls), old - new, formula)
        if best is None or (found.saving or 0) > (best.saving or 0):
            best = found
    return best


def _growing(calls: list[UsageEvent], config: AnomalyConfig) -> bool:
    """Input rising over `growth_calls` consecutive calls to `growth_factor` x the run's first
    (the context_growth detector's rule)."""
    run_first, run_len, last = 0, 0, -1
    for c in calls:
        inp = c.input_tokens
        if inp > last and run_len:
            run_len += 1
        else:
            run_first, run_len = inp, 1
        last = inp
        if run_len >= config.growth_calls and run_first > 0 and inp >= config.growth_factor * run_first:
            return True
    return False


def context_trimming(g: Group, book: PriceBook, config: AnomalyConfig) -> Finding | None:
    """Sessions whose input grows call after call: the saving if each call's input were capped at
    its session's median (summarise or trim the history)."""
    sessions = g.sessions()
    growing = [s for s, calls in sessions.items() if _growing(calls, config)]
    if not growing:
        return None
    kind, title = "context_trimming", "Trim or summarise the context"
    change = "summarise or drop old turns so each call's input stays near the session's median"
    metric = f"sessions whose input rose {config.growth_factor:g}x over {config.growth_calls}+ calls"
    value = f"{len(growing)} of {len(sessions)}"
    if len(growing) < MIN_SESSIONS or len(g.calls) < MIN_CALLS:
        why = (
            f"sessions with growing context: {len(growing)} ({MIN_SESSIONS} needed), "
            f"calls: {len(g.calls)} ({MIN_CALLS} needed)"
        )
        return not_enough(kind, g, title, change, metric, value, examples(growing), len(growing), why)
    total, cut, n = Decimal(0), 0, 0
    for s in growing:
        calls = sessions[s]
        cap = math.ceil(percentile([float(c.input_tokens) for c in calls], 0.5) or 0)
        for c in calls:
            if c.input_tokens <= cap:
                continue
            read = min(c.cache_read_tokens, cap)
            write = min(c.cache_write_tokens, cap - read)
            total += saving(c, book, input_tokens=cap, cache_read_tokens=read, cache_write_tokens=write)
            cut += c.input_tokens - cap
            n += 1
    if total <= 0:
        return None
    formula = (
        f"{cut:,} input tokens over the session medians on {n} calls of {len(growing)} sessions,"
        f" unsent = {money(total)}"
    )
    return Finding(kind, g, title, change, metric, value, examples(growing), n, total, formula)
