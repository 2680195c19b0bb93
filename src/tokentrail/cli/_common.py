"""Shared options and helpers of the read-side commands: the ledger, times, filters, output."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.text import Text

from tokentrail.exceptions import StoreError
from tokentrail.store import default_url, open_store, sqlite_path
from tokentrail.timespec import parse_time, zone
from tokentrail.types import Store


class Format(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


class TreeFormat(StrEnum):
    table = "table"
    json = "json"


DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="Ledger URL: sqlite:///path.db, a file path, or postgresql://… "
        "(default: $TOKENTRAIL_DB, else ~/.tokentrail/ledger.db).",
        show_default=False,
    ),
]
SinceOption = Annotated[
    str | None,
    typer.Option(
        "--since", help="Start (inclusive): 30m, 12h, 7d, 4w ago, YYYY-MM-DD, or ISO-8601.", show_default=False
    ),
]
UntilOption = Annotated[
    str | None,
    typer.Option("--until", help="End (exclusive), in the same forms as --since.", show_default=False),
]
TzOption = Annotated[
    str | None,
    typer.Option(
        "--tz", help="Time zone for dates, hours and days, e.g. Europe/Paris (default: UTC).", show_default=False
    ),
]
WhereOption = Annotated[
    list[str] | None,
    typer.Option(
        "--where",
        "-w",
        help="Filter KEY=VALUE (repeatable; the same key twice means either value). KEY= matches unset.",
        show_default=False,
    ),
]

FormatOption = Annotated[Format, typer.Option("--format", "-f", help="Output format.")]


# -- errors -----------------------------------------------------------------------------------


# What happens to a call that has no price, in the one wording every command (and the README) uses.
NOT_COUNTED = "not counted in the cost (never as $0)"
PAST_CALLS = (
    "Adding a price prices new calls only: past calls stay unpriced until repriced with "
    "`tokentrail reprice` (one audited adjustment each; the calls themselves are never changed)."
)
USAGE = 2  # the user can fix the command: a bad flag, value, dimension or id
RUNTIME = 1  # the command was right but could not be carried out: the ledger is unreachable or unreadable
INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C


def fail(message: str, code: int = USAGE) -> NoReturn:
    """Print a red error on stderr and exit (2: bad input; 1: a runtime failure)."""
    Console(stderr=True, highlight=False).print(Text(f"error: {message}", style="bold red"))
    raise typer.Exit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the errors a user can fix into a message and an exit code instead of a traceback."""
    try:
        yield
    except ValueError as e:  # ConfigError is a ValueError
        fail(str(e))
    except LookupError as e:
        if isinstance(e, (KeyError, IndexError)):
            raise  # a bug, not a missing record
        fail(str(e))  # an id that names nothing is bad input, like an unknown dimension
    except StoreError as e:
        fail(str(e), code=RUNTIME)
    except sqlite3.DatabaseError as e:
        fail(f"cannot read the ledger: {e}", code=RUNTIME)


def require_extra(extra: str, *modules: str) -> None:
    """Exit with the install command when an optional extra is missing (not a traceback)."""
    import importlib.util

    def absent(module: str) -> bool:
        try:
            return importlib.util.find_spec(module) is None
        except ModuleNotFoundError:  # its parent package is missing too
            return True

    missing = [m for m in modules if absent(m)]
    if missing:
        from tokentrail._extras import missing_extra_message

        fail(missing_extra_message("this command", extra, missing))


# -- the ledger -------------------------------------------------------------------------------


@contextmanager
def reader(db: str | None) -> Iterator[Store]:
    """Open an existing ledger for reading (an SQLite file that does not exist is an error, not
    a new empty ledger; one this user cannot write, e.g. on a read-only mount, is opened read-only)."""
    url = db or default_url()
    read_only = False
    with user_errors():
        if not url.startswith(("postgresql://", "postgres://")) and ("://" not in url or url.startswith("sqlite://")):
            path = sqlite_path(url)
            if not path.exists():
                fail(f"no ledger at {path}: nothing has been recorded there (pass --db URL or set TOKENTRAIL_DB)")
            read_only = cannot_write(path)
        store = open_store(url, read_only=read_only)
        try:
            yield store
        finally:
            store.close()


def cannot_write(path: Path) -> bool:
    """Whether this process cannot write an SQLite ledger (the file, or the folder its journal
    files go in): then it is opened read-only. access() says no on a read-only mount even to root."""
    return not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK | os.X_OK))


# -- input ------------------------------------------------------------------------------------


def parse_by(text: str, flag: str = "--by") -> list[str]:
    """A comma-separated list such as --by's dimensions (an empty TEXT: none, the totals only);
    ValueError for an empty item (`team,,agent`, a trailing comma): a typo, not "no dimension"."""
    if not text.strip():
        return []
    parts = [part.strip() for part in text.split(",")]
    if all(parts):
        return parts
    what, example = ("dimension", "team,agent") if flag == "--by" else ("item", "0.5,0.8")
    raise ValueError(f"{flag} {text!r}: empty {what}; write comma-separated {what}s, e.g. {flag} {example}")


def parse_where(items: Sequence[str] | None) -> dict[str, list[str]]:
    """KEY=VALUE items as {key: [values]}; ValueError for an item without '='."""
    out: dict[str, list[str]] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--where {item!r}: expected KEY=VALUE, e.g. --where team=legal")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def time_range(since: str | None, until: str | None, tz: str | None) -> tuple[datetime | None, datetime | None]:
    """--since/--until as UTC datetimes; ValueError naming the option that was wrong."""
    zone(tz)
    now = datetime.now().astimezone()
    out: list[datetime | None] = []
    for flag, text in (("--since", since), ("--until", until)):
        try:
            out.append(None if text is None else parse_time(text, tz=tz, now=now))
        except ValueError as e:
            raise ValueError(f"{flag}: {e}") from None
    return out[0], out[1]


# -- output -----------------------------------------------------------------------------------


def parse_scope(
    where: Sequence[str] | None, since: str | None, until: str | None, tz: str | None
) -> tuple[dict[str, list[str]], datetime | None, datetime | None]:
    """--where, --since, --until and --tz as a read command takes them: (filters, start, end)."""
    return parse_where(where), *time_range(since, until, tz)


def console() -> Console:
    out = Console(highlight=False)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        # piped or captured: rich would assume 80 columns and fold the tables; be wide instead
        out = Console(highlight=False, width=160)
    return out


def usd(value: Decimal | None) -> str:
    """`$1,234.567890`: micro-dollars always, down to the stored nano-dollar when there are
    digits there, so tiny costs are never shown as $0."""
    if value is None:
        return "unpriced"
    sign = "-" if value < 0 else ""
    whole, _, frac = f"{abs(value):,.9f}".partition(".")
    return f"{sign}${whole}.{frac.rstrip('0').ljust(6, '0')}"


def num(value: int) -> str:
    return f"{value:,}"


def when(value: datetime, tz: str | None, *, unit: str = "minute") -> str:
    local = value.astimezone(zone(tz))
    fmt = {"day": "%Y-%m-%d", "hour": "%Y-%m-%d %H:00", "minute": "%Y-%m-%d %H:%M", "second": "%H:%M:%S"}[unit]
    return local.strftime(fmt)


def span(since: datetime | None, until: datetime | None, tz: str | None) -> str:
    if since is None and until is None:
        return "all time"
    start = when(since, tz) if since else "the start"
    end = when(until, tz) if until else "now"
    return f"{start} → {end} ({tz or 'UTC'})"


def emit_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def emit_csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row in rows:
        w.writerow([_cell(v) for v in row])
    typer.echo(buf.getvalue(), nl=False)


def _cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, Decimal):
        return format(v, "f")  # fixed point, never 0E-9
    return v


def note(message: str, *, to_stderr: bool = False) -> None:
    """A visible remark under the output (on stderr when stdout is machine-readable)."""
    out = Console(stderr=to_stderr, highlight=False)
    out.print(Text(message, style="yellow"), soft_wrap=not out.is_terminal)  # piped: one line, not cut at 80
