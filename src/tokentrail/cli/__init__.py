"""The `tokentrail` command. Each command group lives in its own module with a `register(app)`."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="tokentrail",
    help="Token accounting for AI agents: meter, price, attribute, budget and audit every model call.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Modules under tokentrail.cli that add commands; append a name here when adding a module.
COMMAND_MODULES: tuple[str, ...] = (
    "demo",
    "report",
    "sessions",
    "prices",
    "migrate",
    "copy",
    "spool",
    "audit",
    "adjust",
    "trail",
    "budget",
    "alerts",
    "serve",
    "keys",
    "quarantine",
)


def _load() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(f"tokentrail.cli.{name}").register(app)


def main() -> None:
    _load()
    app()
