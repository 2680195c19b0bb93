"""`tokentrail migrate`: bring a ledger's schema up to date (creating the ledger if needed)."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.text import Text

from tokentrail.cli._common import DbOption, console, user_errors
from tokentrail.store import default_url, open_store
from tokentrail.store.migrations import applied_migrations


def migrate_command(
    db: DbOption = None,
    grant_app_role: Annotated[
        str | None,
        typer.Option(
            "--grant-app-role",
            help="PostgreSQL: then give this existing role the application's privileges only (read and "
            "append the ledger, never update, delete or truncate it); run the application as that role.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Create the ledger or apply pending schema migrations, and list them."""
    url = db or default_url()
    started_us = int(time.time() * 1_000_000)
    granted: dict[str, tuple[str, ...]] = {}
    with user_errors():
        store = open_store(url)  # opening a store applies the pending migrations
        try:
            rows = applied_migrations(store)
            if grant_app_role is not None:
                grant = getattr(store, "grant_app_role", None)
                if grant is None:
                    raise ValueError(
                        "--grant-app-role needs a PostgreSQL ledger (an SQLite file is guarded by its permissions)"
                    )
                granted = grant(grant_app_role)
        finally:
            store.close()
    applied = [name for name, at in rows if at is not None and at >= started_us]
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
    if granted:
        out.print(f"Role {grant_app_role} may now:")
        for table, privileges in granted.items():
            out.print(f"  {', '.join(privileges)} on {table}")


def register(app: typer.Typer) -> None:
    app.command("migrate")(migrate_command)
