"""`tokentrail report`: spend grouped by any dimension over a time range."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from tokentrail.analytics import reports
from tokentrail.cli import economics
from tokentrail.cli._common import (
    NOT_COUNTED,
    DbOption,
    Format,
    SinceOption,
    TzOption,
    UntilOption,
    WhereOption,
    console,
    emit_csv,
    emit_json,
    note,
    num,
    parse_by,
    parse_where,
    reader,
    span,
    time_range,
    user_errors,
    when,
)
from tokentrail.cli._tables import Column, count, label, money, money_places, print_table
from tokentrail.store.reports import dimension
from tokentrail.store.reports import filters as reports_filters

MEASURES = (
    "calls",
    "errors",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cost_usd",
    "unpriced_calls",
    "invalid_calls",
    "tool_runs",
    "estimated_calls",
)
# The table's measures: (header, measure, when shown). "always"; "some": only when not all zero;
# n > 0: always when not all zero (cache writes and errors explain a row's cost), and while all
# zero only where there is room, going first (lowest n first) when the table is short of room.
# Reasoning (part of output) may always go, first of all.
_REASONING = 1
_TABLE: tuple[tuple[str, str, str | int], ...] = (
    ("calls", "calls", "always"),
    ("errors", "errors", 4),
    ("tool runs", "tool_runs", "some"),
    ("input", "input_tokens", "always"),
    ("output", "output_tokens", "always"),
    ("cache read", "cache_read_tokens", 6),
    ("cache write", "cache_write_tokens", 5),
    ("reasoning", "reasoning_tokens", _REASONING),
    ("cost", "cost_usd", "always"),
    ("unpriced", "unpriced_calls", 3),
    ("invalid", "invalid_calls", "some"),
    ("estimated", "estimated_calls", "some"),
)


def report_command(
    by: Annotated[
        str,
        typer.Option(
            "--by",
            "-b",
            help="Comma-separated dimensions: org, team, project, agent, provider, model, task_type, kind, "
            "session, user, customer, workflow, step, status, tool, tag.<key>, hour, day.",
        ),
    ] = "model",
    since: SinceOption = None,
    until: UntilOption = None,
    where: WhereOption = None,
    tz: TzOption = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
    metrics: Annotated[
        str | None,
        typer.Option(
            "--metrics",
            "-m",
            help="Unit economics instead of spend: 'all' or comma-separated metrics (docs/metrics.md), "
            "e.g. cost_per_action,latency_p95.",
        ),
    ] = None,
    tree: Annotated[
        bool, typer.Option("--tree", help="With --metrics: roll each agent tree up to its root session.")
    ] = False,
    allocated: Annotated[
        bool, typer.Option("--allocated", help="Spread shared spend by the allocation rules.")
    ] = False,
    rules: Annotated[
        str | None, typer.Option("--rules", help="Allocation rules (TOML); default $TOKENTRAIL_ALLOCATION.")
    ] = None,
    db: DbOption = None,
) -> None:
    """Spend grouped by any dimension: calls, tokens and cost, with a totals line."""
    if allocated or rules:
        from tokentrail.cli.export import allocated_report_command

        allocated_report_command(by, since, until, where, tz, fmt, rules, db)
        return
    with user_errors():
        dims = parse_by(by)
        filters = parse_where(where)
        start, end = time_range(since, until, tz)
        for d in dims:  # a usage error is told before the ledger is opened (which may fail too)
            dimension(d, allow_time=metrics is None)
        reports_filters(filters)
        chosen = economics.parse_metrics(metrics) if metrics is not None else None
        if tree and chosen is None:
            raise ValueError("--tree rolls up unit economics: use it with --metrics")
    if chosen is not None:
        with reader(db) as store, user_errors():
            economics.run_metrics(store, chosen, fmt, tree=tree, tz=tz, by=dims, since=start, until=end, where=filters)
        return
    with reader(db) as store:
        rep = reports.report(store, by=dims, since=start, until=end, where=filters, tz=tz)
    if fmt is Format.json:
        emit_json(rep.to_dict())
    elif fmt is Format.csv:
        emit_csv(
            [*rep.by, *MEASURES],
            ([*(r.value(d) for d in rep.by), *(getattr(r, m) for m in MEASURES)] for r in rep.rows),
        )
    else:
        print_report(rep)
    if rep.note:  # read by a raw scan: slower, and the reader should know why (JSON carries it too)
        note(f"Note: {rep.note}", to_stderr=fmt is not Format.table)
    _notes(rep.totals, machine=fmt is not Format.table)


def print_report(rep: reports.Report) -> None:
    """The report as a table with a totals line (also used by `tokentrail demo`)."""
    title = f"Spend by {', '.join(rep.by)}" if rep.by else "Total spend"
    title += f" · {span(rep.since, rep.until, rep.tz)}"
    if rep.where:
        title += " · " + ", ".join(f"{d}={'|'.join(v)}" for d, v in rep.where)
    lines: list[reports.Measures] = [*rep.rows] if rep.by else []  # without groups the totals say it all
    section = len(lines) if lines else None
    lines.append(rep.totals)
    columns = [
        Column(d, [*(_group(r.value(d), d, rep.tz) for r in rep.rows), Text("")], label=True, justify="left")
        for d in rep.by
    ]
    if columns:
        columns[0].cells[-1] = Text("total", style="bold")
    places = money_places(m.cost_usd for m in lines)
    for header, measure, shown in _TABLE:
        some = any(getattr(m, measure) for m in lines)
        if shown == "some" and not some:
            continue
        drop = shown if isinstance(shown, int) and (not some or shown == _REASONING) else 0
        cells = [_cell(getattr(m, measure), measure, places) for m in lines]
        cells[-1].stylize("bold")
        compact = None
        if measure.endswith("_tokens"):  # rounded only when even abbreviated labels leave no room
            compact = [Text(count(getattr(m, measure)), style=c.style) for m, c in zip(lines, cells, strict=True)]
        columns.append(Column(header, cells, compact=compact, drop=drop))
    print_table(console(), Text(title), columns, len(lines), section_before=section)


def _group(value: object, dimension: str, tz: str | None) -> Text:
    if value is None:
        return Text("(none)", style="dim")
    if dimension in ("hour", "day"):
        return Text(when(value, tz, unit=dimension))  # type: ignore[arg-type]
    return label(value)


def _cell(value: object, measure: str, places: int) -> Text:
    if measure == "cost_usd":
        if value is None:
            return Text("unpriced", style="yellow")  # nothing here had a price: never show it as $0
        return Text(money(value, places))  # type: ignore[arg-type]
    style = "yellow" if measure in ("unpriced_calls", "invalid_calls", "errors", "estimated_calls") and value else ""
    return Text(num(value), style=style)  # type: ignore[arg-type]


def _notes(totals: reports.Measures, *, machine: bool) -> None:
    if totals.unpriced_calls:
        n = totals.unpriced_calls
        note(
            f"{n:,} call{'s' if n != 1 else ''} {'have' if n != 1 else 'has'} no price, {NOT_COUNTED}: "
            "see `tokentrail prices --unpriced`",
            to_stderr=machine,
        )
    if totals.invalid_calls:
        n = totals.invalid_calls
        note(
            f"{n:,} call{'s' if n != 1 else ''} reported impossible usage (status invalid_usage:…) "
            "and have no cost: see `tokentrail report --by status,model`",
            to_stderr=machine,
        )
    if totals.estimated_calls:
        n = totals.estimated_calls
        note(
            f"{n:,} call{'s' if n != 1 else ''} never had {'their' if n != 1 else 'its'} usage reported by the "
            "provider (a stream cut or abandoned): tokens and cost are estimated",
            to_stderr=machine,
        )


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)
