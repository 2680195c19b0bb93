"""`tokentrail report`: spend grouped by any dimension over a time range."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from tokentrail import reports
from tokentrail.cli._common import (
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
    usd,
    user_errors,
    when,
)

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
# (header, measure) of the table; errors and invalid calls show only when there are some
_TABLE = (
    ("calls", "calls"),
    ("input", "input_tokens"),
    ("output", "output_tokens"),
    ("cached", "cache_read_tokens"),
    ("reasoning", "reasoning_tokens"),
    ("cost", "cost_usd"),
    ("unpriced", "unpriced_calls"),
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
    db: DbOption = None,
) -> None:
    """Spend grouped by any dimension: calls, tokens and cost, with a totals line."""
    with user_errors():
        dims = parse_by(by)
        filters = parse_where(where)
        start, end = time_range(since, until, tz)
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
    _notes(rep.totals, machine=fmt is not Format.table)


def print_report(rep: reports.Report) -> None:
    """The report as a rich table with a totals line (also used by `tokentrail demo`)."""
    out = console()
    title = f"Spend by {', '.join(rep.by)}" if rep.by else "Total spend"
    title += f" · {span(rep.since, rep.until, rep.tz)}"
    if rep.where:
        title += " · " + ", ".join(f"{d}={'|'.join(v)}" for d, v in rep.where)
    columns = list(_TABLE)
    if rep.totals.tool_runs:
        columns.insert(1, ("tools", "tool_runs"))
    if rep.totals.errors:
        columns.insert(1, ("errors", "errors"))
    if rep.totals.invalid_calls:
        columns.append(("invalid", "invalid_calls"))
    if rep.totals.estimated_calls:
        columns.append(("estimated", "estimated_calls"))
    table = Table(title=Text(title), title_justify="left", show_edge=False, pad_edge=False)
    for d in rep.by:
        table.add_column(d, overflow="fold")
    for header, _ in columns:
        table.add_column(header, justify="right", no_wrap=True)
    for row in rep.rows if rep.by else ():  # without groups the totals line says it all
        groups = [_group(row.value(d), d, rep.tz) for d in rep.by]
        table.add_row(*groups, *(_cell(getattr(row, m), m) for _, m in columns))
    if rep.rows and rep.by:
        table.add_section()
    label = [Text("total", style="bold")] + [Text("")] * (len(rep.by) - 1) if rep.by else []
    table.add_row(*label, *(_cell(getattr(rep.totals, m), m, bold=True) for _, m in columns))
    out.print(table)


def _group(value: object, dimension: str, tz: str | None) -> Text:
    if value is None:
        return Text("(none)", style="dim")
    if dimension in ("hour", "day"):
        return Text(when(value, tz, unit=dimension))  # type: ignore[arg-type]
    return Text(str(value))


def _cell(value: object, measure: str, *, bold: bool = False) -> Text:
    if measure == "cost_usd" and value is None:
        return Text("unpriced", style="yellow")  # nothing here had a price: never show it as $0
    text = usd(value) if measure == "cost_usd" else num(value)  # type: ignore[arg-type]
    style = "bold" if bold else ""
    if measure in ("unpriced_calls", "invalid_calls", "errors", "estimated_calls") and value:
        style += " yellow"
    return Text(text, style=style.strip())


def _notes(totals: reports.Measures, *, machine: bool) -> None:
    if totals.unpriced_calls:
        n = totals.unpriced_calls
        note(
            f"{n:,} call{'s' if n != 1 else ''} {'have' if n != 1 else 'has'} no price (not counted in the cost): "
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
