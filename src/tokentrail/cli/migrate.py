"""`tokentrail migrate`: bring a ledger's schema up to date (creating the ledger if needed)."""

from __future__ import annotations

import time

import typer
from rich.text import Text

from tokentrail.cli._common import DbOption, console, user_errors
from tokentrail.store import default_url, open_store


def migrate_command(db: DbOption = None) -> None:
    """Create the ledger or apply pending schema migrations, and list them."""
    url = db or default_url()
    started_us = int(time.time() * 1_000_000)
    with user_errors():
        store = open_store(url)  # opening a store applies the pending migrations
        try:
            rows = store.query("SELECT name, applied_us FROM schema_migrations ORDER BY name")
        finally:
            store.close()
    applied = [name for name, at in rows if at is not None and int(at) >= started_us]
    out = console()
    out.print(Text(f"Ledger {getattr(store, 'display_url', store.url)}", style="bold"))
    for name, _ in rows:
        line = Text(f"  {name}")
        line.append(
            "  applied now" if name in applied else "  already applied", style="green" if name in applied else "dim"
        )
        out.print(line)
    if applied:
        out.print(f"Applied {len(applied)} migration{'s' if len(applied) != 1 else ''}; the schema is up to date.")
    else:
        out.print("Nothing to do: the schema is up to date.")


def register(app: typer.Typer) -> None:
    app.command("migrate")(migrate_command)
