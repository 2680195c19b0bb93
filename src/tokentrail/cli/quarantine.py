"""`tokentrail quarantine list|show`: what was kept aside instead of recorded, and why."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.text import Text

from tokentrail.cli._common import DbOption, SinceOption, console, emit_json, fail, reader, time_range, user_errors
from tokentrail.cli._tables import Column, label, print_table
from tokentrail.events import from_micros, ts_micros
from tokentrail.store.quarantine import quarantine_list, quarantined

quarantine_app = typer.Typer(
    help="Events that failed validation (event API, OTLP) or that a store refused, kept with the reason.",
    no_args_is_help=True,
)


@quarantine_app.command("list")
def list_command(
    since: SinceOption = None,
    source: Annotated[str | None, typer.Option("--source", help="Only this source (api, otlp, store, …).")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="How many, newest first.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
    db: DbOption = None,
) -> None:
    """The newest quarantined items: when, from where, and why."""
    with user_errors():
        start, _ = time_range(since, None, None)
    with reader(db) as store:
        rows = quarantine_list(store, since_us=None if start is None else ts_micros(start), source=source, limit=limit)
    if as_json:
        emit_json([{"id": r[0], "ts": from_micros(r[1]).isoformat(), "source": r[2], "reason": r[3]} for r in rows])
        return
    if not rows:
        console().print("Nothing is in quarantine.")
        return
    ids = [str(r[0]) for r in rows]
    columns = [
        # `quarantine show` takes the whole id: it is never abbreviated
        Column("id", [label(i) for i in ids], label=True, floor=max(map(len, ids)), justify="left"),
        Column("when (UTC)", [Text(from_micros(r[1]).strftime("%Y-%m-%d %H:%M:%S")) for r in rows], justify="left"),
        Column("source", [label(r[2]) for r in rows], label=True, justify="left"),
        Column("reason", [label(r[3]) for r in rows], label=True, justify="left"),  # whole: `quarantine show`
    ]
    print_table(console(), Text("Quarantine (newest first)"), columns, len(rows))


@quarantine_app.command("show")
def show_command(
    item: Annotated[str, typer.Argument(help="The id shown by `tokentrail quarantine list`.")],
    db: DbOption = None,
) -> None:
    """One quarantined item: its reason and the payload exactly as it was received."""
    with reader(db) as store:
        found = quarantined(store, item)
    if found is None:
        fail(f"nothing in quarantine has the id {item!r} (see `tokentrail quarantine list`)")
    ts_us, src, reason, payload = found
    try:
        payload = json.dumps(json.loads(payload), indent=2, ensure_ascii=False)
    except ValueError:
        pass  # not JSON: shown as received
    out = console()
    out.print(Text(f"{from_micros(ts_us).isoformat()}  from {src}", style="bold"))
    out.print(Text(f"why: {reason}"))
    out.print(Text(payload))


def register(app: typer.Typer) -> None:
    app.add_typer(quarantine_app, name="quarantine")
