"""Shared-cost allocation: spread the spend of a shared scope over other scopes, period by period.

Rules come from a TOML file (`--rules FILE`, or TOKENTRAIL_ALLOCATION)::

    [[allocations]]
    name = "platform-shared"
    from = { team = "platform" }     # the shared spend ("" matches events with no team)
    to = { team = ["a", "b"] }       # spread over these; to = "team": every other team
    method = "usage"                 # each target's share of cost in the same period
    # weights = { a = 0.7, b = 0.3 } # method = "weights": fixed weights

The ledger is never changed: allocation rewrites export lines. Each shared line becomes one
line per target (its `allocated_from` names the rule and the source), its cost, calls and
tokens split by the largest remainder on integers, so the allocated total equals the original
to the nano-dollar, deterministically. A period in which no target spent anything keeps its
shared cost where it was (there is no usage to split it by). Unpriced lines have no cost to
share and stay. `method = "sub_agents"` spreads an orchestrator session's own cost over the
owners of its sub-agent sessions (analytics/allocation_trees.py).
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from tokentrail.analytics.export import ATTRIBUTION, Line, share
from tokentrail.exceptions import ConfigError

METHODS = ("usage", "weights", "sub_agents")
MAX_RULES = 100
MAX_TARGETS = 1000


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    source: tuple[tuple[str, str | None], ...]  # (dimension, value; None: the dimension is missing)
    dimension: str  # the dimension the cost is spread over
    targets: tuple[str, ...] | None  # None: every other value seen in the period
    method: str
    weights: Mapping[str, Decimal]

    def matches(self, line: Line) -> bool:
        return line.allocated_from is None and all(line.attribution.get(d) == v for d, v in self.source)

    def label(self) -> str:
        scope = [*(["sub_agents"] if self.method == "sub_agents" else []), *(f"{d}={v or ''}" for d, v in self.source)]
        return f"{self.name}:" + ",".join(scope)


def load_rules(path: str | Path) -> tuple[Rule, ...]:
    """Read and check a rules file; ConfigError (a ValueError) naming the file and the entry."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"allocation rules {p}: cannot read ({e.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"allocation rules {p}: not valid TOML ({e})") from None
    entries = data.get("allocations")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"allocation rules {p}: needs [[allocations]] entries")
    if len(entries) > MAX_RULES:
        raise ConfigError(f"allocation rules {p}: at most {MAX_RULES} rules")
    return tuple(parse_rule(e, f"allocation rules {p}, entry {n}") for n, e in enumerate(entries, 1))


def _dim(name: object, where: str) -> str:
    if not isinstance(name, str) or name.strip().lower() not in ATTRIBUTION:
        raise ConfigError(f"{where}: {name!r} is not an attribution dimension ({', '.join(ATTRIBUTION)})")
    return name.strip().lower()


def parse_rule(entry: Any, where: str) -> Rule:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be a table")
    unknown = set(entry) - {"name", "from", "to", "method", "weights", "by"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}: needs a 'name'")
    sub_agents = entry.get("method") == "sub_agents"
    src = entry.get("from", {} if sub_agents else None)
    if not isinstance(src, dict) or not (src or sub_agents):
        raise ConfigError(f"{where}: 'from' must be a table such as {{ team = \"platform\" }}")
    source = []
    for d, v in src.items():
        if not isinstance(v, str):
            raise ConfigError(f"{where}: from.{d} must be a string ('' for none)")
        source.append((_dim(d, where), v or None))
    if sub_agents:  # a parent session's own cost over the owners (`by`) of its sub-agent sessions
        if "to" in entry or "weights" in entry:
            raise ConfigError(f"{where}: method = \"sub_agents\" takes 'by', not 'to' or 'weights'")
        if "by" not in entry:
            raise ConfigError(f'{where}: method = "sub_agents" needs by = "team" (the owner of a sub-agent session)')
        return Rule(name.strip(), tuple(source), _dim(entry["by"], where), None, "sub_agents", {})
    if "by" in entry:
        raise ConfigError(f"{where}: 'by' is for method = \"sub_agents\"")
    to = entry.get("to")
    targets: tuple[str, ...] | None
    if isinstance(to, str):
        dimension, targets = _dim(to, where), None
    elif isinstance(to, dict) and len(to) == 1:
        ((d, values),) = to.items()
        dimension = _dim(d, where)
        values = [values] if isinstance(values, str) else values
        if not isinstance(values, list) or not values or not all(isinstance(v, str) and v for v in values):
            raise ConfigError(f"{where}: to.{d} must be a non-empty list of names")
        targets = tuple(dict.fromkeys(values))
    else:
        raise ConfigError(f'{where}: \'to\' must be a dimension (to = "team") or {{ team = ["a", "b"] }}')
    method = entry.get("method", "weights" if "weights" in entry else "usage")
    if method not in METHODS:
        raise ConfigError(f"{where}: method must be usage or weights (or sub_agents), not {method!r}")
    weights: dict[str, Decimal] = {}
    if method == "weights":
        raw = entry.get("weights")
        if not isinstance(raw, dict) or not raw:
            raise ConfigError(f'{where}: method = "weights" needs weights = {{ a = 0.7, b = 0.3 }}')
        for k, v in raw.items():
            try:
                w = Decimal(str(v))
            except InvalidOperation:
                w = Decimal(-1)
            if isinstance(v, bool) or not w.is_finite() or w <= 0:
                raise ConfigError(f"{where}: weight of {k!r} must be a positive number")
            weights[k] = w
        if targets is None:
            targets = tuple(weights)
        elif set(targets) != set(weights):
            raise ConfigError(f"{where}: the weights must name exactly the targets ({', '.join(targets)})")
    elif "weights" in entry:
        raise ConfigError(f'{where}: weights are for method = "weights"')
    if targets is not None and len(targets) > MAX_TARGETS:
        raise ConfigError(f"{where}: at most {MAX_TARGETS} targets")
    if any(d == dimension for d, _ in source) and targets and any(v in targets for d, v in source if d == dimension):
        raise ConfigError(f"{where}: the shared scope cannot be one of its own targets")
    return Rule(name.strip(), tuple(source), dimension, targets, method, weights)


def allocate(lines: Iterable[Line], rules: Iterable[Rule]) -> Iterator[Line]:
    """The lines with shared spend spread by the rules, one period at a time (lines come period
    by period, as `analytics.export.lines` yields them)."""
    rules = tuple(rules)
    if any(r.method == "sub_agents" for r in rules):  # never skipped silently
        raise ValueError("sub_agents rules need the agent trees: use allocation_trees.allocated_lines")
    period: list[Line] = []
    for line in lines:
        if period and (line.start, line.end) != (period[0].start, period[0].end):
            yield from _period(period, rules)
            period = []
        period.append(line)
    if period:
        yield from _period(period, rules)


def _period(lines: list[Line], rules: tuple[Rule, ...]) -> list[Line]:
    for rule in rules:
        out: list[Line] = []
        shared = [ln for ln in lines if rule.matches(ln) and ln.cost_nusd]
        if not shared:
            continue
        shared_ids = {id(ln) for ln in shared}
        targets, weights = _weights(rule, [ln for ln in lines if id(ln) not in shared_ids])
        if not targets:  # nothing to spread it by in this period: it stays where it was
            continue
        for ln in lines:
            out += split_line(ln, rule, targets, weights) if id(ln) in shared_ids else [ln]
        lines = out
    return lines


def split_line(ln: Line, rule: Rule, targets: list[str], weights: list[int | Decimal]) -> list[Line]:
    """One line per target: its cost, calls and tokens split by the largest remainder (the parts
    add up to the line exactly), marked with the rule."""
    costs = share(ln.cost_nusd or 0, weights)
    calls = share(ln.calls, weights)
    tokens = share(ln.tokens, weights)
    estimated = share(ln.estimated_calls, weights)
    return [
        replace(
            ln,
            attribution={**ln.attribution, rule.dimension: target},
            cost_nusd=costs[i],
            calls=calls[i],
            tokens=tokens[i],
            estimated_calls=estimated[i],
            allocated_from=rule.label(),
        )
        for i, target in enumerate(targets)
        if costs[i] or calls[i] or tokens[i]
    ]


def _weights(rule: Rule, others: list[Line]) -> tuple[list[str], list[int | Decimal]]:
    """The targets (sorted: deterministic) and their weights in this period."""
    if rule.method == "weights":
        names = sorted(rule.weights)
        return names, [rule.weights[n] for n in names]
    spent: dict[str, int] = {}
    own = {v for d, v in rule.source if d == rule.dimension}  # "every other team": never the shared one
    for ln in others:
        v = ln.attribution.get(rule.dimension)
        if v is not None and v not in own and (rule.targets is None or v in rule.targets) and ln.cost_nusd:
            spent[v] = spent.get(v, 0) + ln.cost_nusd
    names = sorted(v for v, c in spent.items() if c > 0)
    return names, [spent[n] for n in names]


REPORT_DIMENSIONS = (*ATTRIBUTION, "provider", "model", "kind", "token_class", "allocated_from")


@dataclass
class AllocatedRow:
    group: tuple[tuple[str, str | None], ...]
    calls: int = 0
    tokens: int = 0
    cost_nusd: int = 0
    unpriced_calls: int = 0

    def to_dict(self) -> dict[str, Any]:
        from tokentrail.events import nano_to_usd

        return {
            **dict(self.group),
            "calls": self.calls,
            "tokens": self.tokens,
            "cost_usd": format(nano_to_usd(self.cost_nusd) or Decimal(0), "f"),
            "unpriced_calls": self.unpriced_calls,
        }


def allocated_report(lines: Iterable[Line], by: Iterable[str]) -> tuple[list[AllocatedRow], AllocatedRow]:
    """Allocated lines summed by `by` (attribution, provider, model, kind, token_class,
    allocated_from), most cost first; and the totals. ValueError for another dimension."""
    dims = tuple(dict.fromkeys(d.strip().lower() for d in by))
    for d in dims:
        if d not in REPORT_DIMENSIONS:
            raise ValueError(f"an allocated report groups by {', '.join(REPORT_DIMENSIONS)}, not {d!r}")
    groups: dict[tuple[str | None, ...], AllocatedRow] = {}
    total = AllocatedRow(())
    for ln in lines:
        key = tuple(_value(ln, d) for d in dims)
        row = groups.get(key)
        if row is None:
            if len(groups) >= 100_000:
                raise ValueError("more than 100,000 groups: group by fewer dimensions")
            row = groups[key] = AllocatedRow(tuple(zip(dims, key, strict=True)))
        model_calls = ln.calls if ln.kind in ("llm", "embedding") else 0  # tool runs are not calls
        for r in (row, total):
            r.calls += model_calls
            r.tokens += ln.tokens
            r.cost_nusd += ln.cost_nusd or 0
            r.unpriced_calls += model_calls if ln.cost_nusd is None else 0
    rows = sorted(groups.values(), key=lambda r: (-r.cost_nusd, tuple(str(v) for _, v in r.group)))
    return rows, total


def _value(ln: Line, d: str) -> str | None:
    if d in ATTRIBUTION:
        return ln.attribution.get(d)
    v = getattr(ln, d)
    return None if v is None else str(v)


__all__ = [
    "METHODS",
    "AllocatedRow",
    "Rule",
    "allocate",
    "allocated_report",
    "load_rules",
    "parse_rule",
    "split_line",
]
