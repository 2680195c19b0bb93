"""`tokentrail forecast`: month-end spend projected from the daily rollup, with an 80 % band."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Annotated

import typer
from rich.text import Text

from tokentrail.cli._common import (
    DbOption,
    Format,
    TzOption,
    console,
    emit_json,
    fail,
    parse_where,
    reader,
    user_errors,
)
from tokentrail.cli._tables import Column, label, money, print_table
from tokentrail.store.reports import dimension
from tokentrail.store.reports import filters as reports_filters


def forecast_command(
    scope: Annotated[
        list[str] | None,
        typer.Option(
            "--scope",
            "-s",
            help="Forecast only KEY=VALUE (repeatable; the same key twice means either value), e.g. team=legal.",
            show_default=False,
        ),
    ] = None,
    by: Annotated[
        str | None,
        typer.Option("--by", "-b", help="One dimension to forecast each value of, e.g. team.", show_default=False),
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="Forecast as if it were this day (YYYY-MM-DD), from the data before it: a backtest on your ledger.",
            show_default=False,
        ),
    ] = None,
    tz: TzOption = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format (table or json).")] = Format.table,
    db: DbOption = None,
) -> None:
    """Month-end spend projected from the daily history (weekly pattern and trend), with an 80 % band."""
    from tokentrail.analytics.forecast_ledger import EARLIEST, LATEST, forecast

    with user_errors():
        filters = parse_where(scope)
        reports_filters(filters)
        if by is not None:
            if by.strip() in ("hour", "day"):
                raise ValueError(f"--by {by.strip()}: forecast by an attribution dimension, e.g. --by team")
            by = dimension(by.strip())
        day = None
        if as_of is not None:
            try:
                day = date.fromisoformat(as_of.strip())
            except ValueError:
                raise ValueError(f"--as-of {as_of!r}: expected a date YYYY-MM-DD") from None
            if not EARLIEST <= day <= LATEST:
                raise ValueError(f"--as-of {day}: a day from {EARLIEST} to {LATEST}")
    if fmt is Format.csv:
        fail("--format csv is not supported by forecast: use table or json")
    with reader(db) as store, user_errors():
        results = forecast(store, as_of=day, tz=tz, where=filters, by=by)
    if fmt is Format.json:
        emit_json({"tz": tz or "UTC", "scope": filters, "by": by, "forecasts": [f.to_dict() for f in results]})
        return
    if not results:
        console().print("nothing to forecast: no spend in the last half year")
        return
    p0 = results[0].projection
    title = f"Spend forecast · {p0.start:%Y-%m-%d} to {p0.end:%Y-%m-%d} · as of {p0.as_of:%Y-%m-%d}"
    if filters:
        title += " · " + ", ".join(f"{k}={'|'.join(v)}" for k, v in filters.items())
    columns: list[Column] = []
    if by:
        cells = [label(f.group) if f.group is not None else Text("(none)", style="dim") for f in results]
        columns.append(Column(by, cells, label=True, justify="left"))

    def usd(v: float) -> Text:
        return Text(money(Decimal(f"{v:.2f}"), 2))

    columns += [
        Column("spent", [usd(f.projection.spent) for f in results]),
        Column("projected", [usd(f.projection.expected) for f in results]),
        Column("80% low", [usd(f.projection.low) for f in results]),
        Column("80% high", [usd(f.projection.high) for f in results]),
        Column("naive linear", [usd(f.naive) for f in results]),
        Column("history days", [Text(str(f.history_days)) for f in results]),
    ]
    print_table(console(), Text(title), columns, len(results))


def register(app: typer.Typer) -> None:
    app.command("forecast")(forecast_command)
