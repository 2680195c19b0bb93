"""`tokentrail prices MODEL` (unit prices and their history) and `tokentrail prices --unpriced`."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from tokentrail.analytics import reports
from tokentrail.cli._common import (
    NOT_COUNTED,
    PAST_CALLS,
    DbOption,
    SinceOption,
    TreeFormat,
    TzOption,
    console,
    emit_json,
    fail,
    num,
    reader,
    span,
    time_range,
    user_errors,
    when,
)
from tokentrail.cli._tables import Column, label, print_table
from tokentrail.pricing import Price, PriceBook

_UNITS = {"mtok": "per 1M tokens", "ktok": "per 1K tokens", "kcount": "per 1,000", "count": "each"}


def prices_command(
    model: Annotated[str | None, typer.Argument(help="A model name, e.g. gpt-4o.", show_default=False)] = None,
    provider: Annotated[str, typer.Option("--provider", "-p", help="The provider, e.g. openai.")] = "",
    unpriced: Annotated[
        bool, typer.Option("--unpriced", help="List the models in the ledger whose calls have no price.")
    ] = False,
    since: SinceOption = None,
    tz: TzOption = None,
    fmt: Annotated[TreeFormat, typer.Option("--format", "-f", help="Output format.")] = TreeFormat.table,
    db: DbOption = None,
) -> None:
    """Today's unit prices of a model and their history, or the models that have no price."""
    if unpriced == (model is not None):
        fail(
            "give a MODEL (tokentrail prices gpt-4o) or --unpriced, not both"
            if unpriced
            else "give a MODEL or --unpriced"
        )
    if unpriced:
        _unpriced(since, tz, fmt, db)
        return
    assert model is not None
    with user_errors():
        book = PriceBook()
        today = book.lookup(provider, model)
        history = book.history(provider, model) if today is not None else []
    if today is None:
        _no_price(provider, model, book, fmt)
        raise typer.Exit(1)
    if fmt is TreeFormat.json:
        emit_json({"price": _price_dict(today), "history": [_price_dict(p) for p in history]})
        return
    out = console()
    head = Text(f"{today.provider}/{today.model}" if today.provider else f"{today.model} (any provider)", style="bold")
    head.append(f"  {today.source} · {today.version}", style="dim")
    if today.context_window:
        head.append(f"\ncontext window {num(today.context_window)} tokens")
    if today.max_output_tokens:
        head.append(f" · max output {num(today.max_output_tokens)} tokens")
    out.print(head)
    table = Table(show_edge=False, title=Text("Unit prices in force today (USD)"), title_justify="left")
    table.add_column("unit")
    table.add_column("price", justify="right")
    table.add_column("")
    for key, value in today.unit_prices.items():
        name, unit = _unit(key)
        table.add_row(name, _amount(value), Text(unit, style="dim"))
    out.print(table)
    if len(history) > 1:
        keys = list(dict.fromkeys(k for p in history for k in p.unit_prices if k.endswith("mtok")))
        hist = Table(show_edge=False, title=Text("History (USD per 1M tokens)"), title_justify="left")
        hist.add_column("from")
        for k in keys:
            hist.add_column(_unit(k)[0], justify="right")
        hist.add_column("source", style="dim")
        for p in history:
            start = p.effective_from.isoformat() if p.effective_from else "the start"
            hist.add_row(start, *(_amount(p.unit_prices.get(k, "")) for k in keys), p.source)
        out.print(hist)


def _price_dict(p: Price) -> dict[str, object]:
    return {
        "provider": p.provider,
        "model": p.model,
        "source": p.source,
        "version": p.version,
        "effective_from": p.effective_from.isoformat() if p.effective_from else None,
        "unit_prices": dict(p.unit_prices),
        "context_window": p.context_window,
        "max_output_tokens": p.max_output_tokens,
    }


def _unit(key: str) -> tuple[str, str]:
    base, _, suffix = key.rpartition("_")
    if suffix in _UNITS:
        return base.replace("_", " "), _UNITS[suffix]
    return key.replace("_", " "), ""


def _amount(value: str) -> str:
    """'3; >200000: 6' (a tiered price) as '$3.00 (>200,000 input tokens: $6.00)'."""
    if not value:
        return ""
    base, *tiers = (part.strip() for part in value.split(";"))
    out = _money(base)
    for tier in tiers:
        start, _, price = tier.partition(":")
        out += f" (>{int(start.lstrip('>')):,} input tokens: {_money(price.strip())})"
    return out


def _money(text: str) -> str:
    try:
        d = Decimal(text)
    except InvalidOperation:
        return text
    return f"${d:,.2f}" if d == d.quantize(Decimal("0.01")) else f"${d.normalize():,f}"


def _no_price(provider: str, model: str, book: PriceBook, fmt: TreeFormat) -> None:
    name = f"{provider}/{model}" if provider else model
    if fmt is TreeFormat.json:
        emit_json({"price": None, "history": [], "model": model, "provider": provider or None})
        return
    where = f"the overrides file {book.overrides_path}" if book.overrides_path else "any TOKENTRAIL_PRICES file"
    message = Text(f"{name} is unpriced", style="bold yellow")
    message.append(
        f": no price in genai-prices nor in {where}.\n"
        f"Its calls are {NOT_COUNTED} and flagged in reports.\n{PAST_CALLS}\n"
        "To price it, write a TOML file "
        "and point TOKENTRAIL_PRICES at it:\n\n"
        "  [[prices]]\n"
        f'  provider = "{provider or "your-provider"}"\n'
        f'  model = "{model}"\n'
        '  input_mtok = "1.00"    # USD per million input tokens\n'
        '  output_mtok = "4.00"   # USD per million output tokens\n'
    )
    console().print(message)


def _unpriced(since: str | None, tz: str | None, fmt: TreeFormat, db: str | None) -> None:
    with user_errors():
        start, _ = time_range(since, None, tz)
    with reader(db) as store:
        models = reports.unpriced_models(store, since=start)
    if fmt is TreeFormat.json:
        emit_json([reports.to_jsonable(m) for m in models])
        return
    out = console()
    if not models:
        out.print(f"Every model call in {span(start, None, tz)} is priced.")
        return
    columns = [
        Column("provider", [label(m.provider or "(none)") for m in models], label=True, justify="left"),
        Column("model", [label(m.model or "(none)") for m in models], label=True, justify="left"),
        Column("calls", [Text(num(m.calls)) for m in models]),
        Column("first seen", [Text(when(m.first_seen, tz)) for m in models], justify="left", drop=1),
        Column("last seen", [Text(when(m.last_seen, tz)) for m in models], justify="left"),
    ]
    print_table(out, Text(f"Models with unpriced calls · {span(start, None, tz)}"), columns, len(models))
    out.print(
        Text(
            f"Their calls are {NOT_COUNTED}. {PAST_CALLS} Add prices in a TOML file named by "
            "TOKENTRAIL_PRICES (see `tokentrail prices MODEL` for the format).",
            style="dim",
        )
    )


def register(app: typer.Typer) -> None:
    app.command("prices")(prices_command)
