"""The `tokentrail` command. Each command group lives in its own module with a `register(app)`."""

from __future__ import annotations

import importlib
import signal
import sys
from types import FrameType
from typing import Annotated

import typer

from tokentrail.cli._common import INTERRUPTED

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
    "export",
    "reprice",
    "budget",
    "alerts",
    "serve",
    "keys",
    "quarantine",
    "reconcile",
    "forecast",
    "anomalies",
    "advise",
)


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("tokentrail")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"tokentrail {version()}")
        raise typer.Exit()


@app.callback()
def _options(
    show_version: Annotated[
        bool,
        typer.Option("--version", help="Print the version and exit.", is_eager=True, callback=_print_version),
    ] = False,
) -> None:
    """Token accounting for AI agents: meter, price, attribute, budget and audit every model call."""


def _load() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(f"tokentrail.cli.{name}").register(app)


def interrupted(signum: int = signal.SIGINT, frame: FrameType | None = None) -> None:
    """Ctrl-C: stop with status 130 and no traceback. SystemExit, unlike KeyboardInterrupt, is
    neither printed by Python nor turned into "Aborted!" (status 1) by click, and still runs
    the exit handlers (a ledger flushes what it holds)."""
    sys.stderr.write("\ninterrupted\n")
    raise SystemExit(INTERRUPTED)


def main() -> None:
    signal.signal(signal.SIGINT, interrupted)
    try:
        _load()
        app()
    except KeyboardInterrupt:  # raised before the handler was in place, or re-raised by a library
        interrupted()
