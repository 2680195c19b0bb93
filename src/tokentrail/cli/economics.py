"""`tokentrail report --metrics`: unit economics by any dimension (docs/metrics.md), and the agent
tree printed by `tokentrail session <root>`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal

from rich.text import Text
from rich.tree import Tree

from tokentrail.analytics.economics import METRICS, EconomicsReport, UnitEconomics, unit_economics
from tokentrail.analytics.trees import TreeNode
from tokentrail.cli._common import Format, console, emit_csv, emit_json, num, span
from tokentrail.cli._tables import Column, label, money, money_places, print_table
from tokentrail.types import Store

_MONEY = ("cost_usd", "avg_cost_per_session", "avg_cost_per_call", "cost_per_action", "outcome_value_usd")
_PERCENT = ("token_efficiency", "cache_hit_rate", "context_utilisation_p95")
_HEADERS = {
    "avg_cost_per_session": "per session",
    "avg_cost_per_call": "per call",
    "successful_outcomes": "outcomes",
    "failed_outcomes": "failed",
    "cost_per_action": "per action",
    "outcome_value_usd": "value",
    "token_efficiency": "token eff.",
    "cache_hit_rate": "cache hit",
    "output_input_ratio": "out/in",
    "context_utilisation_p95": "context p95",
    "latency_p50": "latency p50",
    "latency_p95": "latency p95",
    "cost_usd": "cost",
}


def parse_metrics(text: str) -> tuple[str, ...]:
    """`all`, or metric names separated by commas; ValueError naming an unknown one."""
    names = [m.strip().lower() for m in text.split(",") if m.strip()]
    if not names or names == ["all"]:
        return METRICS
    for m in names:
        if m not in METRICS:
            raise ValueError(f"unknown metric {m!r}; metrics: all, {', '.join(METRICS)}")
    return tuple(dict.fromkeys(names))


def run_metrics(
    store: Store,
    metrics: tuple[str, ...],
    fmt: Format,
    *,
    tree: bool,
    tz: str | None,
    by: Sequence[str],
    since: datetime | None,
    until: datetime | None,
    where: Mapping[str, Sequence[str]],
) -> None:
    rep = unit_economics(store, by=by, since=since, until=until, where=where, tree=tree)
    if fmt is Format.json:
        emit_json(rep.to_dict())
    elif fmt is Format.csv:
        emit_csv(
            [*rep.by, *metrics],
            ([*(r.value(d) for d in rep.by), *(getattr(r, m) for m in metrics)] for r in rep.rows),
        )
    else:
        print_metrics(rep, metrics, tz)


def _cell(value: object, metric: str, places: int) -> Text:
    if value is None:
        return Text("–", style="dim")
    if isinstance(value, Decimal):
        return Text(money(value, places))
    if isinstance(value, float):
        if metric in _PERCENT:
            return Text(f"{value:.1%}")
        if metric.startswith("latency"):
            return Text(f"{value:,.0f} ms")
        return Text(f"{value:.2f}")
    return Text(num(value) if isinstance(value, int) else str(value))


def print_metrics(rep: EconomicsReport, metrics: tuple[str, ...], tz: str | None) -> None:
    title = Text(f"Unit economics{' by ' + ', '.join(rep.by) if rep.by else ''} · {span(rep.since, rep.until, tz)}")
    if rep.tree:
        title.append(" · agent trees rolled up to their root")
    lines: list[UnitEconomics] = [*rep.rows] if rep.by else []
    section = len(lines) if lines else None
    lines.append(rep.totals)
    columns = [
        Column(
            d,
            [
                *(label(r.value(d)) if r.value(d) is not None else Text("(none)", style="dim") for r in rep.rows),
                Text(""),
            ],
            label=True,
            justify="left",
        )
        for d in rep.by
    ]
    if columns:
        columns[0].cells[-1] = Text("total", style="bold")
    places = money_places(getattr(m, k) for m in lines for k in _MONEY if k in metrics)
    for m in metrics:
        cells = [_cell(getattr(line, m), m, places) for line in lines]
        cells[-1].stylize("bold")
        columns.append(Column(_HEADERS.get(m, m), cells))
    print_table(console(), title, columns, len(lines), section_before=section)
    if rep.totals.unpriced_calls:
        console().print(
            Text(f"{rep.totals.unpriced_calls:,} call(s) have no price and are not in the costs", style="yellow")
        )


def print_agent_tree(root: TreeNode) -> None:
    """Each session of the tree with its own cost and its subtree's total."""
    places = money_places(c for n in root.walk() for c in (n.cost_usd, n.total_cost_usd))
    head = Text("Agent tree", style="bold")
    head.append(f"  (own cost · total with sub-agents) · {len(root.walk())} sessions", style="dim")
    tree = Tree(head, guide_style="dim")
    _branch(tree, root, places)
    console().print(tree)


def _branch(parent: Tree, node: TreeNode, places: int) -> None:
    line = Text(node.session_id, style="bold")
    if node.agent:
        line.append(f" {node.agent}", style="cyan")
    line.append(f"  own {money(node.cost_usd, places)} · total {money(node.total_cost_usd, places)}")
    line.append(f" · {num(node.total_calls)} calls · {num(node.total_tokens)} tok", style="dim")
    if node.total_unpriced_calls:
        line.append(f" · {num(node.total_unpriced_calls)} unpriced", style="yellow")
    branch = parent.add(line)
    for c in node.children:
        _branch(branch, c, places)
