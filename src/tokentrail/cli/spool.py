"""`tokentrail spool status|replay`: batches waiting, fsynced, for a store that was unreachable."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from tokentrail.cli._common import DbOption, console, num, user_errors
from tokentrail.spool import Spool, default_dir, folder_for
from tokentrail.store import default_url, open_store

spool_app = typer.Typer(help="Batches waiting in the local spool for an unreachable store.", no_args_is_help=True)
SpoolDirOption = Annotated[
    Path | None,
    typer.Option(
        "--spool-dir",
        help="The spool root (default: $TOKENTRAIL_SPOOL_DIR or ~/.tokentrail/spool).",
        show_default=False,
    ),
]


def _spool(db: str | None, spool_dir: Path | None) -> tuple[str, Spool]:
    url = db or default_url()
    with user_errors():
        # the folder is named after the URL the ledger was opened with (as the store spells it)
        store = open_store(url)
        store_url = store.url
        store.close()
    return store_url, Spool(folder_for(spool_dir or default_dir(), store_url))


@spool_app.command("status")
def status_command(db: DbOption = None, spool_dir: SpoolDirOption = None) -> None:
    """What is waiting in the spool of a ledger."""
    _, spool = _spool(db, spool_dir)
    files = spool.status()
    out = console()
    if not files:
        out.print(f"The spool is empty ({spool.folder}).")
        return
    table = Table(title=Text(f"Spool {spool.folder}"), title_justify="left", show_edge=False)
    for header in ("file", "batches", "events", "state"):
        table.add_column(header, justify="left" if header in ("file", "state") else "right")
    for path, batches, events, held in files:
        state = "held by a running process" if held else "waiting for replay"
        table.add_row(path.name, num(batches), num(events), state)
    out.print(table)


@spool_app.command("replay")
def replay_command(db: DbOption = None, spool_dir: SpoolDirOption = None) -> None:
    """Write every spooled batch no running process holds into the ledger (safe to run twice)."""
    url, spool = _spool(db, spool_dir)
    with user_errors():
        store = open_store(url)
    try:
        waiting = sum(events for _, _, events, held in spool.status() if not held)
        try:
            batches = spool.replay(store)
        except Exception as e:
            console().print(Text(f"error: the ledger is still unavailable: {e}", style="bold red"))
            raise typer.Exit(1) from None
    finally:
        store.close()
    console().print(f"Replayed {num(batches)} batch(es), {num(waiting)} event(s); duplicates were skipped.")


def register(app: typer.Typer) -> None:
    app.add_typer(spool_app, name="spool")
