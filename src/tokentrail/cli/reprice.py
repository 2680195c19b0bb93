"""`tokentrail reprice`: what history would have cost under other prices or models (a what-if),
and pricing the calls that were unpriced (as audited adjustments; history is never rewritten)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated

import typer
from rich.text import Text

from tokentrail.analytics.reprice import Diff, WhatIf
from tokentrail.cli._common import (
    DbOption,
    Format,
    FormatOption,
    SinceOption,
    TzOption,
    UntilOption,
    WhereOption,
    console,
    emit_csv,
    emit_json,
    fail,
    note,
    parse_by,
    parse_scope,
    reader,
    span,
    user_errors,
)
from tokentrail.cli._tables import Column, label, money, money_places, print_table


def reprice_command(
    since: SinceOption = None,
    until: UntilOption = None,
    prices: Annotated[
        str | None,
        typer.Option("--prices", help="A price overrides file (TOML) to price with; default TOKENTRAIL_PRICES."),
    ] = None,
    model_map: Annotated[
        list[str] | None,
        typer.Option("--model-map", help="FROM=TO: price FROM's calls as TO's (what-if only). Repeatable."),
    ] = None,
    by: Annotated[str, typer.Option("--by", "-b", help="Dimensions of the diff (as in report).")] = "model",
    where: WhereOption = None,
    tz: TzOption = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Only show the diff. Without it, unpriced calls are priced by adjustments."),
    ] = False,
    fmt: FormatOption = Format.table,
    db: DbOption = None,
) -> None:
    """What history would have cost under another price book or model (--dry-run), or price the
    calls that were unpriced with the price known now (one audited adjustment per call)."""
    from tokentrail.analytics.reprice import parse_model_map, reprice_unpriced, what_if
    from tokentrail.pricing import PriceBook

    with user_errors():
        dims = parse_by(by)
        filters, start, end = parse_scope(where, since, until, tz)
        mapping = parse_model_map(model_map)
        if mapping and not dry_run:
            raise ValueError("--model-map is a what-if: add --dry-run (only unpriced calls are ever written)")
        book = PriceBook(overrides=prices) if prices is not None else PriceBook()
    if dry_run:
        with reader(db) as store, user_errors():
            diff = what_if(store, book, since=start, until=end, by=dims, where=filters, model_map=mapping)
            pending = reprice_unpriced(store, book, since=start, until=end, where=filters)
        if fmt is Format.json:
            emit_json({**diff.to_dict(), "unpriced_to_price": pending.to_dict()})
            return
        if fmt is Format.csv:
            rows = [r.to_dict() for r in diff.rows]
            header = [*diff.by, "calls", "cost_usd", "repriced_usd", "delta_usd", "unpriced_before", "unpriced_after"]
            emit_csv(header, ([r[h] for h in header] for r in rows))
            return
        _print(diff, start, end, tz)
        if pending.priced:
            note(
                f"{pending.priced:,} unpriced calls now have a price ({money(pending.cost_usd(), 9)}): "
                "run without --dry-run to price them by adjustments"
            )
        return
    with reader(db) as store:
        url = store.url
    from tokentrail.exceptions import FlushTimeout
    from tokentrail.ledger import Ledger

    with user_errors():
        ledger = Ledger(url, prices=PriceBook(overrides=""))
        try:
            done = reprice_unpriced(ledger.store, book, since=start, until=end, where=filters, ledger=ledger)
        except FlushTimeout as e:
            fail(f"an adjustment was recorded but is not durable yet: {e}", code=1)
        finally:
            ledger.close()
    if fmt is Format.json:
        emit_json(done.to_dict())
        return
    console().print(
        f"priced {done.priced:,} unpriced calls by {len(done.adjustments):,} adjustments "
        f"({money(done.cost_usd(), 9)}); {done.still_unpriced:,} still have no price, "
        f"{done.already:,} were adjusted before and were left alone",
        soft_wrap=True,
    )


def _print(diff: WhatIf, start: datetime | None, end: datetime | None, tz: str | None) -> None:
    title = f"Repriced by {', '.join(diff.by)}" if diff.by else "Repriced"
    title += f" · {span(start, end, tz)}"
    if diff.model_map:
        title += " · " + ", ".join(f"{a} → {b}" for a, b in diff.model_map.items())
    lines = [*diff.rows, diff.totals]
    places = money_places(v for r in lines for v in (r.old_usd, r.new_usd, r.delta_usd))
    columns = [
        Column(
            d,
            [*(label(v if v is not None else "(none)") for _, v in (r.group[i] for r in diff.rows)), Text("total")],
            label=True,
            justify="left",
        )
        for i, d in enumerate(diff.by)
    ]

    def cells(f: Callable[[Diff], str]) -> list[Text]:
        return [Text(f(r), style="bold" if r is diff.totals else "") for r in lines]

    columns += [
        Column("calls", cells(lambda r: f"{r.calls:,}")),
        Column("cost", cells(lambda r: money(r.old_usd, places))),  # "unpriced", never $0
        Column("repriced", cells(lambda r: money(r.new_usd, places))),
        Column("delta", cells(lambda r: money(r.delta_usd, places))),
        Column("unpriced before", cells(lambda r: f"{r.unpriced_before:,}")),
        Column("unpriced after", cells(lambda r: f"{r.unpriced_after:,}")),
    ]
    print_table(console(), Text(title), columns, len(lines), section_before=len(diff.rows) or None)


def register(app: typer.Typer) -> None:
    app.command("reprice")(reprice_command)
