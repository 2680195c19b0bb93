"""`tokentrail alerts`: budget thresholds crossed and overages, newest first."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from tokentrail.budgets.alerts import list_alerts
from tokentrail.cli._common import (
    DbOption,
    Format,
    SinceOption,
    TzOption,
    UntilOption,
    console,
    emit_csv,
    emit_json,
    note,
    reader,
    time_range,
    user_errors,
    when,
)


def alerts_command(
    since: SinceOption = None,
    until: UntilOption = None,
    budget: Annotated[str | None, typer.Option("--budget", "-b", help="Only this budget.", show_default=False)] = None,
    kind: Annotated[
        str | None, typer.Option("--kind", help="threshold, overage or forecast.", show_default=False)
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="At most this many.", min=1)] = 100,
    tz: TzOption = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
    db: DbOption = None,
) -> None:
    """Budget alerts: each threshold once per period per budget, and overages."""
    with user_errors():
        start, end = time_range(since, until, tz)
        if kind is not None and kind not in ("threshold", "overage", "forecast"):
            raise ValueError(f"--kind {kind!r}: use threshold, overage or forecast")
    with reader(db) as store, user_errors():
        rows = list_alerts(store, since=start, until=end, budget=budget, kind=kind, limit=limit)
    if fmt is Format.json:
        emit_json([a.to_dict() for a in rows])
        return
    if fmt is Format.csv:
        dicts = [a.to_dict() for a in rows]
        emit_csv(tuple(dicts[0]) if dicts else ("alert_id",), [tuple(d.values()) for d in dicts])
        return
    table = Table(title="Budget alerts", title_justify="left")
    for col in ("when", "kind", "budget", "message"):
        table.add_column(col, overflow="fold")
    for a in rows:
        table.add_row(when(a.ts, tz), a.kind, a.budget, a.message)
    console().print(table)
    if not rows:
        note("no alerts")


def register(app: typer.Typer) -> None:
    app.command("alerts")(alerts_command)
