"""`tokentrail advise`: what to change in which agent, and what it would save per month (the
savings advisor, tokentrail.analytics.advise); `--dismiss ID` hides a recommendation for good."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.padding import Padding
from rich.text import Text

from tokentrail.cli._common import (
    DbOption,
    Format,
    SinceOption,
    TzOption,
    UntilOption,
    console,
    emit_json,
    fail,
    note,
    reader,
    span,
    time_range,
    user_errors,
)
from tokentrail.cli._tables import Column, label, money, money_places, print_table, printable


def advise_command(
    since: SinceOption = None,
    until: UntilOption = None,
    agent: Annotated[list[str] | None, typer.Option("--agent", help="Only this agent (repeatable).")] = None,
    kind: Annotated[list[str] | None, typer.Option("--kind", help="Only this kind of advice (repeatable).")] = None,
    show_all: Annotated[bool, typer.Option("--all", help="Show dismissed recommendations too.")] = False,
    dismiss: Annotated[
        str | None, typer.Option("--dismiss", metavar="ID", help="Dismiss this recommendation (stays dismissed).")
    ] = None,
    prices: Annotated[
        str | None,
        typer.Option("--prices", help="A price overrides file (TOML) to price with; default TOKENTRAIL_PRICES."),
    ] = None,
    tz: TzOption = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format: table or json.")] = Format.table,
    db: DbOption = None,
) -> None:
    """Savings advice over --since (default 30d): prompt caching, model routing, context trimming,
    runaway output, redundant calls and unused reasoning, ranked by estimated monthly saving, each
    with its evidence and how the saving was computed."""
    from tokentrail.analytics import advise as adv
    from tokentrail.pricing import PriceBook

    with user_errors():
        if fmt is Format.csv:
            fail("--format: table or json")
        kinds = tuple(kind or adv.KINDS)
        unknown = [k for k in kinds if k not in adv.KINDS]
        if unknown:
            fail(f"--kind: unknown kind {unknown[0]!r} (kinds: {', '.join(adv.KINDS)})")
        start, end = time_range(since or "30d", until, tz)
        book = PriceBook(overrides=prices) if prices is not None else PriceBook()
    assert start is not None
    where = {"agent": list(agent)} if agent else None
    with reader(db) as store, user_errors():
        if dismiss is not None:
            r = adv.dismiss(store, book, dismiss.strip(), since=start, until=end, where=where, by="cli")
            note(printable(f"dismissed {r.advice_id}: {r.title} ({' '.join((r.agent or '(no agent)').split())})"))
            return
        found = adv.advise(store, book, since=start, until=end, where=where, kinds=kinds, include_dismissed=show_all)
    if fmt is Format.json:
        emit_json(found.to_dict())
        return
    _table(found, tz)


def _who(r: Any) -> str:
    """Whose advice, on one line and nothing a terminal would act on (names are anyone's text)."""
    agent = r.agent or "(no agent)"
    return printable(" ".join((f"{agent} ({r.task_type})" if r.task_type else agent).split()))


def _table(found: Any, tz: str | None) -> None:
    out = console()
    title = f"Savings advice · {span(found.since, found.until, tz)}"
    recs = found.recommendations
    if found.truncated:
        note(f"only the first {found.events_read:,} events were read: narrow --since or --agent", to_stderr=True)
    if not recs:
        hidden = f" ({found.dismissed} dismissed: --all shows them)" if found.dismissed else ""
        out.print(f"No savings advice for {span(found.since, found.until, tz)}{hidden}.")
        return
    places = money_places(r.monthly_saving_usd for r in recs)
    columns = [
        Column("#", [Text(str(i + 1)) for i in range(len(recs))]),
        Column(
            "per month",
            [Text(money(r.monthly_saving_usd, places) if r.enough_data else "no data") for r in recs],
        ),
        Column("agent", [label(_who(r)) for r in recs], label=True, justify="left"),
        Column("advice", [label(r.title + (" (dismissed)" if r.dismissed else "")) for r in recs], justify="left"),
    ]
    print_table(out, Text(title), columns, len(recs))
    for i, r in enumerate(recs, 1):
        out.print()
        out.print(Text(f"{i}. {r.title} · {_who(r)} · {r.advice_id}", style="bold"))
        ev = r.evidence
        sessions = f" (e.g. {printable(', '.join(ev['sessions']))})" if ev["sessions"] else ""
        for name, text in (
            ("change", r.change),
            ("evidence", f"{ev['metric']}: {ev['value']}{sessions}"),
            ("saving" if r.enough_data else "estimate", r.formula),
        ):
            out.print(Padding(Text.assemble((f"{name}: ", "dim"), text), (0, 0, 0, 3), expand=False))
    if found.dismissed:
        out.print()
        out.print(Text(f"{found.dismissed} dismissed (--all shows them)", style="dim"))


def register(app: typer.Typer) -> None:
    app.command("advise")(advise_command)
