"""`tokentrail copy --from URL --to URL`: move a whole ledger to another store (e.g. SQLite -> PostgreSQL).

Events travel in the source's chain order (seq) and are appended to the destination's own audit
chain, which re-links them: the destination is a new ledger (into an empty one, the links come out
identical to the source's). The destination skips every event_id and outcome_id it already holds,
so a copy can be interrupted and run again, or run twice, without duplicating anything. The source
chain is verified on the way unless --no-verify: a broken source is not laundered into a fresh,
valid-looking chain.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from tokentrail.cli._common import RUNTIME, cannot_write, console, fail, user_errors
from tokentrail.events import GENESIS_HASH, chain_hash
from tokentrail.exceptions import TokentrailError
from tokentrail.store import open_store, sqlite_path
from tokentrail.store.copy import SIDE_TABLES, budgets_changed, copy_table, ledger_size, outcomes_after
from tokentrail.types import Store


def _is_postgres(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def _display(url: str) -> str:
    if _is_postgres(url):
        from tokentrail.store.pg_messages import redact_url

        return redact_url(url)
    return url


def _open_source(url: str) -> Store:
    """The source as it is: never created, never migrated (copying reads, it does not write)."""
    if _is_postgres(url):
        from tokentrail.store.postgres import PostgresStore

        return PostgresStore(url, migrate=False)
    if "://" in url and not url.startswith("sqlite://"):
        return open_store(url)  # raises the usual ConfigError for an unknown scheme
    path = sqlite_path(url)
    if not path.exists():
        fail(f"no ledger at {path}: nothing to copy")
    from tokentrail.store.sqlite import SQLiteStore

    return SQLiteStore(path, migrate=False, read_only=cannot_write(path))


class BrokenChain(TokentrailError):
    """The source's audit chain does not verify: a finding about the ledger (exit 1), not bad input."""


def copy_ledger(
    source: Store, dest: Store, *, batch: int = 5000, verify: bool = True, progress: Progress | None = None
) -> dict[str, int]:
    """Copy every event (in seq order) and outcome of `source` into `dest`; return the counts
    read and newly written. Raises ValueError at the first broken link of the source chain when
    `verify`."""
    total, n_outcomes, first_ts = ledger_size(source)
    ensure = getattr(dest, "ensure_partitions", None)
    if ensure is not None and first_ts is not None:
        ensure(since_us=first_ts)  # monthly partitions for the history, not all of it in DEFAULT
    task = progress.add_task("events", total=total) if progress else None
    counts = {"events": 0, "events_new": 0, "outcomes": 0, "outcomes_new": 0}
    prev = GENESIS_HASH
    rows: list[tuple[Any, ...]] = []

    def flush() -> None:
        counts["events_new"] += dest.write_events(rows)
        counts["events"] += len(rows)
        if progress is not None and task is not None:
            progress.advance(task, len(rows))
        rows.clear()

    for seq, prev_hash, h, row in source.chain():
        if verify and (prev_hash != prev or h != chain_hash(seq, prev_hash, row)):
            flush()
            raise BrokenChain(
                f"the source's audit chain is broken at seq {seq} (event {row[0]}): copied the "
                f"{counts['events']} event(s) before it and stopped; `tokentrail audit verify` says more, "
                "and --no-verify copies anyway"
            )
        prev = h
        rows.append(row)
        if len(rows) >= batch:
            flush()
    flush()

    otask = progress.add_task("outcomes", total=n_outcomes) if progress else None
    last = ""
    while True:
        page = outcomes_after(source, last, batch)
        if not page:
            break
        counts["outcomes_new"] += dest.write_outcomes(page)
        counts["outcomes"] += len(page)
        if progress is not None and otask is not None:
            progress.advance(otask, len(page))
        last = page[-1][0]
    for table in SIDE_TABLES:
        counts[table] = copy_table(source, dest, table)
    if counts.get("budgets") or counts.get("budget_suspensions"):
        budgets_changed(dest)
    return counts


def copy_command(
    from_url: Annotated[
        str, typer.Option("--from", help="The ledger to copy: sqlite:///a.db, a path, or postgresql://…")
    ],
    to_url: Annotated[
        str, typer.Option("--to", help="Where to copy it (created and migrated if need be); may already hold events.")
    ],
    batch: Annotated[int, typer.Option("--batch", min=1, help="Events per destination transaction.")] = 5000,
    verify: Annotated[
        bool, typer.Option("--verify/--no-verify", help="Check the source's audit chain while copying.")
    ] = True,
) -> None:
    """Copy a whole ledger (events in chain order, and outcomes) into another; safe to run twice."""
    if from_url == to_url:
        fail("--from and --to name the same ledger")
    with user_errors():
        source = _open_source(from_url)
        try:
            dest = open_store(to_url)
            try:
                columns = (
                    TextColumn("{task.description:>8}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TimeRemainingColumn(),
                )
                with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
                    try:
                        counts = copy_ledger(source, dest, batch=batch, verify=verify, progress=progress)
                    except BrokenChain as e:
                        fail(str(e), code=RUNTIME)
            finally:
                dest.close()
        finally:
            source.close()
    out = console()
    old_events = counts["events"] - counts["events_new"]
    old_outcomes = counts["outcomes"] - counts["outcomes_new"]
    out.print(
        f"Copied {counts['events_new']:,} event(s) and {counts['outcomes_new']:,} outcome(s) "
        f"from {_display(from_url)} to {_display(to_url)}"
        + (
            f" ({old_events:,} event(s) and {old_outcomes:,} outcome(s) were already there)"
            if old_events or old_outcomes
            else ""
        )
        + ".",
        soft_wrap=True,
    )
    moved = [f"{counts[t]:,} {t.replace('_', ' ')}" for t in SIDE_TABLES if counts.get(t)]
    if moved:
        out.print("Also copied: " + ", ".join(moved) + ".", soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("copy")(copy_command)
