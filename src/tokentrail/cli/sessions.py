"""`tokentrail sessions` (the newest sessions) and `tokentrail session ID` (one as a call tree)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from tokentrail import reports
from tokentrail.cli._common import (
    DbOption,
    Format,
    SinceOption,
    TreeFormat,
    TzOption,
    UntilOption,
    WhereOption,
    console,
    emit_csv,
    emit_json,
    num,
    parse_where,
    reader,
    span,
    time_range,
    usd,
    user_errors,
    when,
)

_FIELDS = (
    "session_id",
    "started",
    "ended",
    "agent",
    "team",
    "user",
    "calls",
    "tool_calls",
    "tokens",
    "cost_usd",
    "unpriced_calls",
    "errors",
    "estimated_calls",
)


def sessions_command(
    agent: Annotated[str | None, typer.Option("--agent", help="Only this agent's sessions.")] = None,
    team: Annotated[str | None, typer.Option("--team", help="Only this team's sessions.")] = None,
    user: Annotated[str | None, typer.Option("--user", help="Only this user's sessions.")] = None,
    since: SinceOption = None,
    until: UntilOption = None,
    where: WhereOption = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="How many sessions.")] = 50,
    tz: TzOption = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
    db: DbOption = None,
) -> None:
    """The newest sessions (started in the time range), with their calls, tokens, cost and outcomes."""
    with user_errors():
        filters = parse_where(where)
        for key, value in (("agent", agent), ("team", team), ("user", user)):
            if value is not None:
                filters.setdefault(key, []).append(value)
        start, end = time_range(since, until, tz)
    with reader(db) as store:
        found = reports.sessions(store, since=start, until=end, where=filters, limit=limit)
    if fmt is Format.json:
        emit_json([{**reports.to_jsonable(s), "outcomes": dict(s.outcomes)} for s in found])
        return
    if fmt is Format.csv:
        emit_csv([*_FIELDS, "outcomes"], ([*(getattr(s, f) for f in _FIELDS), _outcomes(s)] for s in found))
        return
    if not found:
        console().print(
            f"No sessions started in {span(start, end, tz)}" + (" matching the filters." if filters else ".")
        )
        return
    print_sessions(found, title=f"Sessions · {span(start, end, tz)}", tz=tz)
    if len(found) == limit:
        console().print(Text(f"(the newest {limit}; --limit shows more)", style="dim"))


def print_sessions(
    found: list[reports.SessionSummary], *, title: str, tz: str | None = None, compact: bool = False
) -> None:
    """Sessions as a rich table (also used by `tokentrail demo`); `compact` leaves out the
    times, the user and the outcomes."""
    out = console()
    extra = [("unpriced", "unpriced_calls")] if any(s.unpriced_calls for s in found) else []
    extra += [("errors", "errors")] if any(s.errors for s in found) else []
    extra += [("estimated", "estimated_calls")] if any(s.estimated_calls for s in found) else []
    table = Table(title=Text(title), title_justify="left", show_edge=False)
    table.add_column("session", no_wrap=True)
    times = () if compact else ("started", "took")
    people = ("agent", "team") if compact else ("agent", "team", "user")
    for header in times:
        table.add_column(header, justify="right", no_wrap=True)
    for header in people:
        table.add_column(header, overflow="fold")
    for header in ("calls", "tools", "tokens", "cost", *(h for h, _ in extra)):
        table.add_column(header, justify="right", no_wrap=True)
    if not compact:
        table.add_column("outcomes", overflow="fold")
    for s in found:
        cells = [Text(s.session_id)]
        if not compact:
            cells += [Text(when(s.started, tz)), Text(_duration(s.ended - s.started))]
        cells += [Text(getattr(s, p) or "") for p in people]
        cells += [Text(num(s.calls)), Text(num(s.tool_calls)), Text(num(s.tokens)), Text(usd(s.cost_usd))]
        cells += [Text(num(getattr(s, m)), style="yellow" if getattr(s, m) else "") for _, m in extra]
        if not compact:
            cells.append(Text(_outcomes(s)))
        table.add_row(*cells)
    out.print(table)


def _outcomes(s: reports.SessionSummary) -> str:
    return ", ".join(f"{name}×{count}" if count != 1 else name for name, count in s.outcomes)


def _duration(d: timedelta) -> str:
    seconds = int(d.total_seconds())
    if seconds < 60:
        return f"{d.total_seconds():.1f}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def session_command(
    session_id: Annotated[str, typer.Argument(help="The session id (see `tokentrail sessions`).")],
    tz: TzOption = None,
    fmt: Annotated[TreeFormat, typer.Option("--format", "-f", help="Output format.")] = TreeFormat.table,
    db: DbOption = None,
) -> None:
    """One session as a call tree: steps, model calls, the tool runs they asked for, adjustments."""
    with user_errors():
        time_range(None, None, tz)  # checks --tz
    with reader(db) as store:
        detail = reports.session_detail(store, session_id)
    if fmt is TreeFormat.json:
        emit_json(detail.to_dict())
        return
    t = detail.totals
    head = Text(f"Session {detail.session_id}", style="bold")
    who = " · ".join(
        f"{k} {v}" for k, v in (("agent", detail.agent), ("team", detail.team), ("user", detail.user)) if v
    )
    head.append(f"\n{who}\n" if who else "\n")
    head.append(
        f"{when(detail.started, tz)} → {when(detail.ended, tz)} ({tz or 'UTC'}, "
        f"took {_duration(detail.ended - detail.started)})"
        f"\n{num(t.calls)} calls · {num(t.input_tokens)} in · {num(t.output_tokens)} out · {usd(t.cost_usd)}"
    )
    if t.unpriced_calls:
        head.append(f" · {num(t.unpriced_calls)} unpriced", style="yellow")
    if t.errors:
        head.append(f" · {num(t.errors)} errors", style="red")
    if t.estimated_calls:
        head.append(f" · {num(t.estimated_calls)} estimated", style="yellow")
    if detail.outcomes:
        head.append("\noutcomes: " + ", ".join(f"{n}×{c}" if c != 1 else n for n, c in detail.outcomes))
    tree = Tree(head, guide_style="dim")
    for node in detail.tree:
        _add(tree, node, tz)
    console().print(tree)


def _add(parent: Tree, node: reports.CallNode, tz: str | None) -> None:
    branch = parent.add(_label(node, tz))
    for child in node.children:
        _add(branch, child, tz)


def _label(node: reports.CallNode, tz: str | None) -> Text:
    e = node.event
    if e is None:  # a step
        label = Text(f"▸ {node.name}", style="bold cyan")
        label.append(f"  {usd(node.cost_usd)} · {num(node.tokens)} tok", style="dim")
        return label
    label = Text(when(e.ts, tz, unit="second") + "  ", style="dim")
    if node.kind in ("llm", "embedding"):
        label.append(node.name, style="bold")
        label.append(f"  {num(e.input_tokens)} in")
        if node.context_growth:
            label.append(f" ({node.context_growth:+,})", style="magenta" if node.context_growth > 0 else "dim")
        label.append(f" · {num(e.output_tokens)} out")
        if e.cache_read_tokens:
            label.append(f" · {num(e.cache_read_tokens)} cached")
        if e.reasoning_tokens:
            label.append(f" · {num(e.reasoning_tokens)} reasoning")
    elif node.kind == "tool":
        label.append(f"tool {node.name}", style="bold green")
        if e.tool_call_id:
            label.append(f" [{e.tool_call_id}]", style="dim")
    else:
        label.append("adjustment", style="bold yellow")
    if e.cost_usd is None and node.kind in ("llm", "embedding"):
        label.append(" · unpriced", style="yellow")
    elif e.cost_usd is not None:
        label.append(f" · {usd(e.cost_usd)}")
    if e.latency_ms is not None:
        label.append(f" · {e.latency_ms:,.0f} ms", style="dim")
    if e.status != "ok":
        label.append(f" · {e.status}", style="red")
    if e.usage_estimated:
        label.append(" · usage estimated", style="yellow")
    if e.tool_calls:
        label.append(" → asked for " + ", ".join(tc.name for tc in e.tool_calls), style="green")
    if e.note:
        label.append(f" ({e.note})", style="dim")
    return label


def register(app: typer.Typer) -> None:
    app.command("sessions")(sessions_command)
    app.command("session")(session_command)
