"""`tokentrail export`: usage and cost as FOCUS 1.2, CSV or Parquet, for FinOps tools."""

from __future__ import annotations

import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any

import typer

from tokentrail.cli._common import (
    DbOption,
    Format,
    SinceOption,
    TzOption,
    UntilOption,
    WhereOption,
    console,
    emit_csv,
    emit_json,
    fail,
    note,
    parse_by,
    parse_scope,
    reader,
    require_extra,
    user_errors,
)


def export_command(
    fmt: Annotated[str, typer.Option("--format", "-f", help="focus, csv, parquet or focus-parquet.")] = "focus",
    output: Annotated[
        str, typer.Option("--output", "-o", help="File to write ('-' for stdout; CSV formats only).")
    ] = "-",
    since: SinceOption = None,
    until: UntilOption = None,
    granularity: Annotated[str, typer.Option("--granularity", help="Charge period: hour or day.")] = "day",
    where: WhereOption = None,
    tz: TzOption = None,
    include_unpriced: Annotated[
        bool,
        typer.Option("--include-unpriced", help="FOCUS: keep unpriced usage at cost 0, marked x_Unpriced=true."),
    ] = False,
    allocated: Annotated[
        bool, typer.Option("--allocated", help="Spread shared spend by the allocation rules.")
    ] = False,
    rules: Annotated[
        str | None, typer.Option("--rules", help="Allocation rules (TOML); default $TOKENTRAIL_ALLOCATION.")
    ] = None,
    db: DbOption = None,
) -> None:
    """Export usage and cost: one row per period × model × token class × attribution.

    The costs add up to the ledger's total for the window, to the nano-dollar. A FOCUS file
    cannot hold a null cost, so unpriced usage is left out (and said so) unless --include-unpriced."""
    from tokentrail.analytics.export import lines
    from tokentrail.analytics.export_write import FORMATS, write

    with user_errors():
        if fmt not in FORMATS:
            raise ValueError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
        if granularity not in ("hour", "day"):
            raise ValueError(f"--granularity {granularity!r}: use hour or day")
        filters, start, end = parse_scope(where, since, until, tz)
        plan = _allocation(allocated, rules)
    if fmt.endswith("parquet"):
        require_extra("export", "pyarrow")
        if output == "-":
            fail("Parquet is binary: give a file with -o FILE")
    with reader(db) as store, user_errors():
        if plan is None:
            source = lines(store, since=start, until=end, granularity=granularity, tz=tz, where=filters)
        else:
            from tokentrail.analytics.allocation_trees import allocated_lines

            source = allocated_lines(store, plan, since=start, until=end, granularity=granularity, tz=tz, where=filters)
        with _open(output) as out, _progress(output != "-") as advance:
            written = write(source, fmt, out, include_unpriced=include_unpriced, progress=advance)
    if written.skipped.total:
        note(
            f"left out of the FOCUS file (FOCUS forbids a null cost): {written.skipped.describe()}; "
            "--include-unpriced keeps them at cost 0 marked x_Unpriced, `tokentrail reprice` prices them",
            to_stderr=True,
        )
    if written.unpriced_rows:
        note(f"{written.unpriced_rows:,} rows are unpriced usage (no cost, never $0)", to_stderr=True)
    if output != "-":
        from tokentrail.events import nano_to_usd

        note(f"wrote {written.rows:,} rows, ${nano_to_usd(written.cost_nusd)} to {output}", to_stderr=True)


def _open(output: str) -> Any:
    """stdout for '-', else the file (created or truncated)."""
    if output == "-":
        return nullcontext(sys.stdout.buffer)
    try:
        return Path(output).open("wb")
    except OSError as e:
        raise ValueError(f"-o {output}: cannot write ({e.strerror})") from None


def _allocation(allocated: bool, rules: str | None) -> Any:
    import os

    path = rules or os.environ.get("TOKENTRAIL_ALLOCATION") or None
    if rules and not allocated:
        allocated = True
    if not allocated:
        return None
    if not path:
        raise ValueError("--allocated needs a rules file: --rules FILE or TOKENTRAIL_ALLOCATION")
    from tokentrail.analytics.allocation import load_rules

    return load_rules(path)


def _progress(enabled: bool) -> Any:
    """A progress bar (rows written) on a terminal; nothing otherwise."""
    from contextlib import contextmanager

    @contextmanager
    def bar() -> Any:
        if not enabled or not sys.stderr.isatty():
            yield None
            return
        from rich.progress import Progress, SpinnerColumn, TextColumn

        with Progress(SpinnerColumn(), TextColumn("{task.completed:,} rows"), transient=True) as p:
            task = p.add_task("export", total=None)
            yield lambda n: p.advance(task, n)

    return bar()


def allocated_report_command(
    by: str,
    since: str | None,
    until: str | None,
    where: list[str] | None,
    tz: str | None,
    fmt: Format,
    rules: str | None,
    db: str | None,
) -> None:
    """`report --allocated`: spend after the allocation rules spread shared spend."""
    from rich.text import Text

    from tokentrail.analytics.allocation import allocated_report
    from tokentrail.analytics.allocation_trees import allocated_lines
    from tokentrail.cli._tables import Column, label, money, money_places, print_table
    from tokentrail.events import nano_to_usd

    with user_errors():
        dims = parse_by(by)
        filters, start, end = parse_scope(where, since, until, tz)
        plan = _allocation(True, rules)
    with reader(db) as store, user_errors():
        rows, total = allocated_report(allocated_lines(store, plan, since=start, until=end, tz=tz, where=filters), dims)
    if fmt is Format.json:
        emit_json({"by": dims, "allocated": True, "rows": [r.to_dict() for r in rows], "totals": total.to_dict()})
        return
    header = [*dims, "calls", "tokens", "cost_usd", "unpriced_calls"]
    if fmt is Format.csv:
        emit_csv(header, ([r.to_dict()[h] for h in header] for r in rows))
        return
    every = [*rows, total]
    places = money_places(nano_to_usd(r.cost_nusd) for r in every)
    columns = [
        Column(d, [*(label(r.group[i][1] or "(none)") for r in rows), Text("total")], label=True, justify="left")
        for i, d in enumerate(dims)
    ]
    columns += [
        Column("calls", [Text(f"{r.calls:,}") for r in every]),
        Column("tokens", [Text(f"{r.tokens:,}") for r in every]),
        Column("cost", [Text(money(nano_to_usd(r.cost_nusd), places)) for r in every]),
        Column("unpriced", [Text(f"{r.unpriced_calls:,}") for r in every]),
    ]
    print_table(console(), Text(f"Allocated spend by {', '.join(dims)}"), columns, len(every), section_before=len(rows))


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)


__all__ = ["export_command", "register"]
