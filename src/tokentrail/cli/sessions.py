"""`tokentrail sessions` (the newest sessions) and `tokentrail session ID` (one as a call tree)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Annotated

import typer
from rich.text import Text
from rich.tree import Tree

from tokentrail.analytics import reports, sessions
from tokentrail.analytics.trees import session_tree
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
    user_errors,
    when,
)
from tokentrail.cli._tables import Column, count, label, money, money_places, print_table, unique_prefix
from tokentrail.cli.economics import print_agent_tree
from tokentrail.store import lookup

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
        page = sessions.session_page(store, since=start, until=end, where=filters, limit=limit)
    found = page.sessions
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
    if page.note:
        console().print(Text(f"({page.note})", style="dim"))


def print_sessions(
    found: list[sessions.SessionSummary], *, title: str, tz: str | None = None, compact: bool = False
) -> None:
    """Sessions as a table (also used by `tokentrail demo`); `compact` leaves out the times, the
    user and the outcomes. Short of room, a session id keeps a start that tells it apart."""
    ids = [s.session_id for s in found]
    columns = [Column("session", [label(i) for i in ids], label=True, floor=unique_prefix(ids), justify="left")]
    if not compact:
        columns.append(Column("started", [Text(when(s.started, tz)) for s in found], justify="left"))
        columns.append(Column("took", [Text(_duration(s.ended - s.started)) for s in found], drop=3))
    for who in ("agent", "team") if compact else ("agent", "team", "user"):
        values = [getattr(s, who) for s in found]
        # a person column nobody filled in may go when short of room; a filled one is a label
        cells = [label(v or "") for v in values]
        columns.append(Column(who, cells, label=any(values), drop=0 if any(values) else 2, justify="left"))
    places = money_places(s.cost_usd for s in found)
    columns += [
        Column("calls", [Text(num(s.calls)) for s in found]),
        Column("tool runs", [Text(num(s.tool_calls)) for s in found]),
        Column("tokens", [Text(num(s.tokens)) for s in found], compact=[Text(count(s.tokens)) for s in found]),
        Column(
            "cost",
            [Text(money(s.cost_usd, places), style="" if s.cost_usd is not None else "yellow") for s in found],
        ),
    ]
    for header, measure, drop in (
        ("unpriced", "unpriced_calls", 4),
        ("errors", "errors", 5),
        ("estimated", "estimated_calls", 3),
    ):
        counts = [getattr(s, measure) for s in found]
        if measure == "estimated_calls" and not any(counts):
            continue  # a rare flag: shown only when some session has it
        columns.append(
            Column(header, [Text(num(n), style="yellow" if n else "") for n in counts], drop=0 if any(counts) else drop)
        )
    if not compact:
        columns.append(Column("outcomes", [label(_outcomes(s)) for s in found], drop=1, justify="left"))
    print_table(console(), Text(title), columns, len(found))


def _outcomes(s: sessions.SessionSummary) -> str:
    return ", ".join(f"{name}×{count}" if count != 1 else name for name, count in s.outcomes)


def _duration(d: timedelta) -> str:
    seconds = int(d.total_seconds())
    if seconds < 60:
        return f"{d.total_seconds():.1f}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def session_command(
    session_id: Annotated[
        str, typer.Argument(help="The session id, or a start only it has (see `tokentrail sessions`).")
    ],
    tz: TzOption = None,
    fmt: Annotated[TreeFormat, typer.Option("--format", "-f", help="Output format.")] = TreeFormat.table,
    db: DbOption = None,
) -> None:
    """One session as a call tree: steps, model calls, the tool runs they asked for, adjustments; and the
    agent tree of the sessions opened inside it, each with its own and its total cost."""
    with user_errors():
        time_range(None, None, tz)  # checks --tz
    from tokentrail.analytics.session_marks import marks_of

    with reader(db) as store, user_errors():
        try:
            sid = lookup.session_id(store, session_id)
        except LookupError:
            # an orchestrator that made no call of its own: only its sub-agents' sessions name it
            agents = session_tree(store, session_id)
            if agents is None or not agents.children:
                raise
            if fmt is TreeFormat.json:
                emit_json({"session_id": session_id, "agent_tree": agents.to_dict()})
            else:
                print_agent_tree(agents)
            return
        detail = sessions.session_detail(store, sid)
        agents = session_tree(store, detail.session_id)  # the sessions opened inside this one
        marks = marks_of(store, detail)
    if fmt is TreeFormat.json:
        emit_json({**detail.to_dict(), **marks.to_dict(), "agent_tree": agents.to_dict() if agents else None})
        return
    t = detail.totals
    # one decimals rule for every amount of the tree, as for a table's money column
    places = money_places([t.cost_usd, *(e.cost_usd for e in detail.events), *_step_costs(detail.tree)])
    head = Text(f"Session {detail.session_id}", style="bold")
    who = " · ".join(
        f"{k} {v}" for k, v in (("agent", detail.agent), ("team", detail.team), ("user", detail.user)) if v
    )
    head.append(f"\n{who}\n" if who else "\n")
    head.append(
        f"{when(detail.started, tz)} → {when(detail.ended, tz)} ({tz or 'UTC'}, "
        f"took {_duration(detail.ended - detail.started)})"
        f"\n{_counted(t.calls, 'call')} · {_counted(t.tool_runs, 'tool run')} · "
        f"{num(t.input_tokens)} in · {num(t.output_tokens)} out · {money(t.cost_usd, places)}"
    )
    if t.unpriced_calls:
        head.append(f" · {num(t.unpriced_calls)} unpriced", style="yellow")
    if t.errors:
        head.append(f" · {num(t.errors)} errors", style="red")
    if t.estimated_calls:
        head.append(f" · {num(t.estimated_calls)} estimated", style="yellow")
    if detail.outcomes:
        head.append("\noutcomes: " + ", ".join(f"{n}×{c}" if c != 1 else n for n, c in detail.outcomes))
    marks.describe(head)
    tree = Tree(head, guide_style="dim")
    for node in detail.tree:
        _add(tree, node, tz, places, marks.flagged)
    console().print(tree)
    if agents is not None and agents.children:
        print_agent_tree(agents)


def _counted(n: int, noun: str) -> str:
    """`20 calls`, `1 tool run`: the words of the sessions table's columns (calls, tool runs)."""
    return f"{num(n)} {noun}{'' if n == 1 else 's'}"


def _step_costs(nodes: tuple[sessions.CallNode, ...]) -> list[Decimal]:
    return [c for n in nodes if n.event is None for c in (n.cost_usd, *_step_costs(n.children))]


def _add(parent: Tree, node: sessions.CallNode, tz: str | None, places: int, flagged: dict[str, str]) -> None:
    line = _label(node, tz, places)
    if node.event is not None and (kinds := flagged.get(str(node.event.event_id))):
        line.append(f"  ⚠ {kinds}", style="bold red")  # an anomaly's evidence
    branch = parent.add(line)
    for child in node.children:
        _add(branch, child, tz, places, flagged)


def _label(node: sessions.CallNode, tz: str | None, places: int) -> Text:
    e = node.event
    if e is None:  # a step
        line = Text(f"▸ {node.name}", style="bold cyan")
        line.append(f"  {money(node.cost_usd, places)} · {num(node.tokens)} tok", style="dim")
        return line
    line = Text(when(e.ts, tz, unit="second") + "  ", style="dim")
    if node.kind in ("llm", "embedding"):
        line.append(node.name, style="bold")
        line.append(f"  {num(e.input_tokens)} in")
        if node.context_growth:
            line.append(f" ({node.context_growth:+,})", style="magenta" if node.context_growth > 0 else "dim")
        line.append(f" · {num(e.output_tokens)} out")
        if e.cache_read_tokens:
            line.append(f" · {num(e.cache_read_tokens)} cache read")
        if e.cache_write_tokens:
            line.append(f" · {num(e.cache_write_tokens)} cache write")
        if e.reasoning_tokens:
            line.append(f" · {num(e.reasoning_tokens)} reasoning")
    elif node.kind == "tool":
        line.append(f"tool {node.name}", style="bold green")
        if e.tool_call_id:
            line.append(f" [{e.tool_call_id}]", style="dim")
    else:
        line.append("adjustment", style="bold yellow")
    if e.cost_usd is None and node.kind in ("llm", "embedding"):
        line.append(" · unpriced", style="yellow")
    elif e.cost_usd is not None:
        line.append(f" · {money(e.cost_usd, places)}")
    if e.latency_ms is not None:
        line.append(f" · {e.latency_ms:,.0f} ms", style="dim")
    if e.status != "ok":
        line.append(f" · {e.status}", style="red")
    if e.usage_estimated:
        line.append(" · usage estimated", style="yellow")
    if e.tool_calls:
        line.append(" → asked for " + ", ".join(tc.name for tc in e.tool_calls), style="green")
    if e.note:
        line.append(f" ({e.note})", style="dim")
    return line


def register(app: typer.Typer) -> None:
    app.command("sessions")(sessions_command)
    app.command("session")(session_command)
