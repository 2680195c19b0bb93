"""`tokentrail budget set|list|status|rm|suspend|resume|load`: budgets kept in the ledger."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Annotated

import typer
from rich.text import Text

from tokentrail.budgets import Budgets, BudgetStatus
from tokentrail.budgets.definitions import parse_scope_items
from tokentrail.cli._common import (
    DbOption,
    Format,
    console,
    emit_csv,
    emit_json,
    fail,
    note,
    parse_by,
    user_errors,
    when,
)
from tokentrail.cli._tables import Column, label, money, money_places, print_table
from tokentrail.store import default_url, open_store
from tokentrail.timespec import zone

app = typer.Typer(
    name="budget",
    help="Budgets that cannot be overspent: set, list, status, rm, suspend, resume.",
    no_args_is_help=True,
)

ScopeOption = Annotated[
    list[str] | None,
    typer.Option(
        "--scope",
        "-s",
        help="KEY=VALUE (repeatable): org, team, project, agent, user, customer, workflow, task_type, session, "
        "provider, model or tag.<key>; VALUE * means one budget per distinct value. None: every call.",
        show_default=False,
    ),
]


@contextmanager
def _budgets(db: str | None) -> Iterator[Budgets]:
    with user_errors():
        store = open_store(db or default_url())
        try:
            yield Budgets.for_store(store)
        finally:
            store.close()


@app.command("set")
def set_command(
    name: Annotated[str, typer.Argument(help="The budget's name (set again to change it).")],
    scope: ScopeOption = None,
    period: Annotated[
        str,
        typer.Option("--period", "-p", help="call, session, hour, day, week, month, or rolling:<duration> (e.g. 5m)."),
    ] = "month",
    limit_usd: Annotated[
        str | None, typer.Option("--limit-usd", "--usd", help="Limit in US dollars.", show_default=False)
    ] = None,
    limit_tokens: Annotated[
        int | None, typer.Option("--limit-tokens", "--tokens", help="Limit in tokens (input + output).")
    ] = None,
    alert_at: Annotated[
        str, typer.Option("--alert-at", help="Alert thresholds, comma-separated fractions or percentages.")
    ] = "0.5,0.8,1.0",
    action: Annotated[str, typer.Option("--action", help="At the limit: block, alert, or throttle.")] = "block",
    tz: Annotated[str, typer.Option("--tz", help="Time zone of hour/day/week/month periods.")] = "UTC",
    allow_unpriced: Annotated[
        bool,
        typer.Option("--allow-unpriced", help="Let calls to models with no price through a USD limit (they hold $0)."),
    ] = False,
    db: DbOption = None,
) -> None:
    """Create or replace a budget."""
    with _budgets(db) as budgets, user_errors():
        thresholds = parse_by(alert_at, "--alert-at") if alert_at.strip() != "none" else []
        b = budgets.set(
            name,
            scope=dict(parse_scope_items(scope or [])),
            period=period,
            limit_usd=limit_usd,
            limit_tokens=limit_tokens,
            alert_at=thresholds,  # type: ignore[arg-type]
            action=action,
            tz=tz,
            source="cli",
            allow_unpriced=allow_unpriced,
        )
    places = money_places([b.limit_usd])
    console().print(
        f"budget {b.name!r} set: {b.scope_text}, {b.period}, {_limit(b.limit_usd, b.limit_tokens, places)}, "
        f"action {b.action}" + (f", tz {b.tz}" if b.tz != "UTC" else "")
    )


@app.command("list")
def list_command(
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
    db: DbOption = None,
) -> None:
    """The budgets and suspended scopes kept in the ledger."""
    with _budgets(db) as budgets:
        rows = budgets.list()
        susp = budgets.suspensions()
    if fmt is Format.json:
        emit_json({"budgets": [b.to_dict() for b in rows], "suspended": [dict(s.scope) for s in susp]})
        return
    if fmt is Format.csv:
        emit_csv(
            ("name", "scope", "period", "limit_usd", "limit_tokens", "alert_at", "action", "tz", "source"),
            [
                (
                    b.name,
                    b.scope_text,
                    b.period,
                    b.limit_usd,
                    b.limit_tokens,
                    " ".join(map(str, b.alert_at)),
                    b.action,
                    b.tz,
                    b.source,
                )
                for b in rows
            ],
        )
        return
    out = console()
    places = money_places(b.limit_usd for b in rows)
    columns = [
        Column("name", [label(b.name) for b in rows], label=True, justify="left"),
        Column("scope", [label(b.scope_text) for b in rows], label=True, justify="left"),
        Column("period", [Text(b.period) for b in rows], justify="left"),
        Column("limit", [Text(_limit(b.limit_usd, b.limit_tokens, places)) for b in rows]),
        Column("alerts at", [Text(", ".join(f"{t * 100:g}%" for t in b.alert_at) or "-") for b in rows]),
        Column("action", [Text(b.action) for b in rows], justify="left"),
        Column("tz", [Text(b.tz) for b in rows], justify="left", drop=2),
        Column("source", [Text(b.source) for b in rows], justify="left", drop=1),
    ]
    print_table(out, Text("Budgets"), columns, len(rows))
    if not rows:
        note("no budgets: add one with `tokentrail budget set NAME --scope team=legal --limit-usd 500`")
    for s in susp:
        out.print(Text.assemble(("suspended: ", "bold red"), s.scope_text, f" ({s.reason})" if s.reason else ""))


def _bar(fraction: float, width: int = 20) -> Text:
    filled = min(width, round(fraction * width))
    style = "green" if fraction < 0.8 else "yellow" if fraction < 1 else "red"
    return Text.assemble(("█" * filled, style), ("░" * (width - filled), "dim"), f" {fraction * 100:5.1f}%")


@app.command("status")
def status_command(
    name: Annotated[str | None, typer.Argument(help="One budget (default: all).", show_default=False)] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
    tz: Annotated[str | None, typer.Option("--tz", help="Show period ends in this time zone.")] = None,
    db: DbOption = None,
) -> None:
    """Each budget's current period: limit, posted, reserved, remaining, period end, and a bar."""
    with _budgets(db) as budgets, user_errors():
        if name is not None and budgets.get(name) is None:
            fail(f"no budget named {name!r} (see `tokentrail budget list`)")
        rows = budgets.status(name)
        zone(tz)  # a bad --tz is an error before anything is shown
    if fmt is Format.json:
        emit_json([s.to_dict() for s in rows])
        return
    if fmt is Format.csv:
        dicts = [s.to_dict() for s in rows]
        for d in dicts:  # one cell: the projected day (empty: none, or not within the period)
            d["projected_exhaustion"] = (d["projected_exhaustion"] or {}).get("date")
        header = tuple(dicts[0]) if dicts else ("budget",)
        emit_csv(header, [tuple(d.values()) for d in dicts])
        return
    out = console()
    amounts = (a for s in rows for a in (s.budget.limit_usd, s.posted_usd, s.reserved_usd, s.remaining_usd))
    places = money_places(amounts)
    reserved = [_pair(s.reserved_usd, s.reserved_tokens, s, places) for s in rows]
    held = any(s.reserved_usd or s.reserved_tokens for s in rows)  # zero reservations may go when short of room
    columns = [
        Column("budget", [label(s.budget.name) for s in rows], label=True, justify="left"),
        Column("scope", [label(s.bucket) for s in rows], label=True, justify="left"),
        Column("period", [Text(s.budget.period) for s in rows], justify="left"),
        Column("limit", [Text(_limit(s.budget.limit_usd, s.budget.limit_tokens, places)) for s in rows]),
        Column("posted", [Text(_pair(s.posted_usd, s.posted_tokens, s, places)) for s in rows]),
        Column(
            "reserved",
            [Text(r) for r in reserved],
            drop=0 if held else 1,
        ),
        Column("remaining", [Text(_pair(s.remaining_usd, s.remaining_tokens, s, places)) for s in rows]),
        Column("period end", [Text(_end(s, tz)) for s in rows], justify="left"),
        Column("projected exhaustion", [_exhaustion(s) for s in rows], justify="left", drop=2),
        # short of room, a shorter bar
        Column("used", [_bar(s.used) for s in rows], compact=[_bar(s.used, 4) for s in rows], justify="left"),
    ]
    print_table(out, Text("Budget status"), columns, len(rows))
    if not rows:
        note("no budgets: add one with `tokentrail budget set NAME --scope team=legal --limit-usd 500`")


def _exhaustion(s: BudgetStatus) -> Text:
    p = s.projection
    if p is None:
        return Text("—", style="dim")
    return Text(p.text(), style="red" if p.exhaustion.expected is not None else "")


def _limit(usd: Decimal | None, tokens: int | None, places: int) -> str:
    parts = []
    if usd is not None:
        parts.append(money(usd, places))
    if tokens is not None:
        parts.append(f"{tokens:,} tok")
    return " / ".join(parts)


def _pair(usd: Decimal | None, tokens: int | None, s: BudgetStatus, places: int) -> str:
    parts = []
    if s.budget.limit_usd is not None and usd is not None:
        parts.append(money(usd, places))
    if s.budget.limit_tokens is not None and tokens is not None:
        parts.append(f"{tokens:,} tok")
    return " / ".join(parts)


def _end(s: BudgetStatus, tz: str | None) -> str:
    if s.locked:
        return f"blocked until {when(s.blocked_until, tz)}" if s.blocked_until else "blocked until the session ends"
    if s.period_end is not None:
        return when(s.period_end, tz)
    return {"session": "session end", "call": "each call"}.get(s.budget.period, s.budget.period)


@app.command("rm")
def rm_command(name: Annotated[str, typer.Argument(help="The budget to remove.")], db: DbOption = None) -> None:
    """Remove a budget (and its counters)."""
    with _budgets(db) as budgets:
        found = budgets.rm(name)
    if not found:
        fail(f"no budget named {name!r} (see `tokentrail budget list`)")
    console().print(f"budget {name!r} removed")


@app.command("suspend")
def suspend_command(
    scope: ScopeOption = None,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (shown in the refusal).")] = None,
    db: DbOption = None,
) -> None:
    """Kill switch: refuse every call in a scope (e.g. --scope agent=ci-fixer) until `resume`."""
    with _budgets(db) as budgets, user_errors():
        if not scope:
            fail("suspend needs --scope KEY=VALUE, e.g. --scope agent=ci-fixer")
        s = budgets.suspend(dict(parse_scope_items(scope)), reason)
    console().print(f"suspended {s.scope_text}: every call in it is refused until `tokentrail budget resume`")


@app.command("resume")
def resume_command(scope: ScopeOption = None, db: DbOption = None) -> None:
    """Lift a suspension."""
    with _budgets(db) as budgets, user_errors():
        if not scope:
            fail("resume needs --scope KEY=VALUE, as given to suspend")
        pairs = parse_scope_items(scope)
        found = budgets.resume(dict(pairs))
    if not found:
        fail(f"{', '.join(f'{k}={v}' for k, v in pairs)} is not suspended")
    console().print(f"resumed {', '.join(f'{k}={v}' for k, v in pairs)}")


@app.command("load")
def load_command(
    path: Annotated[str, typer.Argument(help="A budgets TOML file (the TOKENTRAIL_BUDGETS format).")],
    db: DbOption = None,
) -> None:
    """Store the budgets of a TOML file in the ledger."""
    with _budgets(db) as budgets, user_errors():
        loaded = budgets.load(path)
    console().print(f"{len(loaded)} budget(s) loaded from {path}")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="budget")
