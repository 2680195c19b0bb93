"""`tokentrail audit verify|checkpoint`: check the hash chain, and sign its head into a file."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from tokentrail import audit
from tokentrail.cli._common import RUNTIME, DbOption, console, fail, reader, user_errors
from tokentrail.store.rollup_window import ROTATION

audit_app = typer.Typer(help="The tamper-evident audit chain over the events.", no_args_is_help=True)


def _load(path: Path, key: bytes) -> list[audit.Checkpoint]:
    try:
        return audit.load_checkpoints(path, key)
    except audit.CheckpointError as e:
        fail(f"cannot trust the checkpoint: {e}", code=1)


@audit_app.command("verify")
def verify_command(
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint",
            help="A file of signed checkpoints (needs $TOKENTRAIL_AUDIT_KEY): the chain must still have "
            "each signed hash, which catches a chain rebuilt after an edit.",
            show_default=False,
        ),
    ] = None,
    from_seq: Annotated[
        int,
        typer.Option(
            "--from-seq", min=1, help="Start here, trusting the stored hash of the row before (1: from genesis)."
        ),
    ] = 1,
    full: Annotated[
        bool,
        typer.Option(
            "--full",
            help="Recheck every rollup row against the events (default: the days written since the "
            "latest checkpoint, the last two days, and one week in seven of the rest, rotating daily). "
            "Run it periodically (CI, cron).",
        ),
    ] = False,
    db: DbOption = None,
) -> None:
    """Recompute the hash chain and name the first bad row: modified, missing, inserted or reordered.

    The rollups are checked against the events too: every row with --full, else a window of days."""
    with user_errors():
        marks = _load(checkpoint, audit.audit_key()) if checkpoint is not None else []
    with reader(db) as store, user_errors():
        last = audit.head_seq(store)
        if from_seq > last + 1:  # asking past the end is a usage error, not a broken chain
            raise ValueError(f"--from-seq {from_seq} is past the end of the chain (its head is seq {last})")
        result = audit.verify(store, from_seq=from_seq, checkpoints=marks, full=full)
    out = console()
    if result.problem is not None:
        p = result.problem
        line = Text(f"FAILED at seq {p.seq}: {p.reason}", style="bold red")
        line.append(f" — {p.detail}", style="red")
        if p.event_id:
            line.append(f" (event {p.event_id})", style="dim")
        out.print(line, soft_wrap=True)
        out.print(f"verified {result.count:,} events before it, up to seq {result.head_seq}", soft_wrap=True)
        raise typer.Exit(1)
    if result.rollups:
        out.print(
            Text("FAILED: the rollups reports read disagree with the events (changed by hand?)", style="bold red"),
            soft_wrap=True,
        )
        for m in result.rollups:
            out.print(Text(f"  {m}", style="red"), soft_wrap=True)
        out.print(f"the chain itself verified: {result.count:,} events, head {result.head_hash.hex()}", soft_wrap=True)
        raise typer.Exit(1)
    out.print(f"verified {result.count} events, head {result.head_hash.hex()}", soft_wrap=True)
    out.print(_rollup_scope(result.window), soft_wrap=True)
    if marks:
        latest = max(marks, key=lambda c: c.seq)
        out.print(
            f"{result.checkpoints} checkpoint(s) match; the latest signs seq {latest.seq} "
            f"at {latest.time.isoformat(timespec='seconds')}",
            soft_wrap=True,
        )


def _rollup_scope(window: audit.Window | None) -> str:
    """What of the rollups a verification rechecked, in a line."""
    if window is None:
        return "rollups: every row matches the events"
    since = f"the days written after seq {window.anchor_seq}, " if window.anchor_seq is not None else ""
    return (
        f"rollups: {since}the last two days and 1 week in {ROTATION} of the rest "
        f"(rotation {window.rotation}) match the events; --full checks every row"
    )


@audit_app.command("checkpoint")
def checkpoint_command(
    out_file: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Append the signed checkpoint to this file (keep it outside the database); default: print it.",
            show_default=False,
        ),
    ] = None,
    db: DbOption = None,
) -> None:
    """Verify the chain, then sign its head (seq, hash, time) with HMAC-SHA256 under $TOKENTRAIL_AUDIT_KEY.

    With --out FILE holding earlier checkpoints, only the rows after the latest are walked,
    anchored on its signed hash: a chain rebuilt since then is refused, never signed."""
    with user_errors():
        key = audit.audit_key()
        previous = _load(out_file, key) if out_file is not None and out_file.exists() else []
    with reader(db) as store, user_errors():
        try:
            cp, result = audit.checkpoint(store, previous=previous)
        except ValueError as e:
            fail(str(e), code=1)
    line = cp.to_line(key)
    since = f"since the checkpoint at seq {max(c.seq for c in previous)}" if previous else "from genesis"
    note = (
        f"checkpoint: seq {cp.seq}, head {cp.hash.hex()}, {cp.time.isoformat(timespec='seconds')} "
        f"(verified {result.count:,} events {since})"
    )
    if out_file is None:
        sys.stdout.write(line + "\n")  # the signed line alone on stdout, for a pipe to safe storage
        typer.echo(note, err=True)
        return
    with user_errors():
        try:
            audit.append_checkpoint(out_file, cp, key)
        except OSError as e:
            fail(f"cannot write the checkpoint file {out_file}: {e.strerror or e}", code=RUNTIME)
    console().print(f"{note} -> {out_file}", soft_wrap=True)


@audit_app.command("rebuild-rollups")
def rebuild_rollups_command(db: DbOption = None) -> None:
    """Recompute the hourly and daily rollups from the events (after `verify` found rollup rows
    changed by hand). On PostgreSQL, run it as the owner: the application role may not write them."""
    from tokentrail.store.rollup_check import check_rollups, rebuild_rollups

    with reader(db) as store, user_errors():
        wrong = check_rollups(store)
        rows = rebuild_rollups(store)
        left = check_rollups(store)
    if left:
        fail(f"the rollups still disagree with the events after the rebuild: {left[0]}", code=1)
    was = "some were wrong" if wrong else "none was wrong"
    console().print(f"rebuilt the rollups from the events: {rows:,} hourly rows ({was})", soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")
