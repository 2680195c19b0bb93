"""`tokentrail anomalies`: replay the history through the anomaly detectors (`--rescan` stores what
they find; `--stored` lists what was stored, online or by a rescan)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from tokentrail.analytics.anomaly_rows import FIELDS, from_anomaly, from_stored
from tokentrail.cli._common import (
    DbOption,
    Format,
    SinceOption,
    TzOption,
    UntilOption,
    console,
    emit_csv,
    emit_json,
    fail,
    note,
    reader,
    span,
    time_range,
    user_errors,
    when,
)
from tokentrail.cli._tables import Column, label, print_table, unique_prefix


def load_config(path: Path | None) -> Any:
    from tokentrail.analytics.config import AnomalyConfig

    if path is None:
        return AnomalyConfig()
    try:
        text = path.read_text()
    except OSError as e:
        fail(f"--config: cannot read {path}: {e.strerror}")
    return AnomalyConfig.from_json(text)


def anomalies_command(
    since: SinceOption = None,
    until: UntilOption = None,
    kind: Annotated[str | None, typer.Option("--kind", help="Only this kind of anomaly.")] = None,
    agent: Annotated[str | None, typer.Option("--agent", help="Only this agent's anomalies.")] = None,
    rescan: Annotated[bool, typer.Option("--rescan", help="Store what the replay finds (once each).")] = False,
    stored: Annotated[bool, typer.Option("--stored", help="List the stored anomalies; no replay.")] = False,
    config: Annotated[
        Path | None, typer.Option("--config", help="Detector settings (JSON: thresholds, kinds, policies).")
    ] = None,
    tz: TzOption = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
    db: DbOption = None,
) -> None:
    """Anomalies of the agents (retry loops, token spikes, context growth, …): the history from
    --since (default 7d) replayed through the detectors, as they run online."""
    from tokentrail.analytics import anomalies as an
    from tokentrail.store import anomalies as sql

    with user_errors():
        if kind is not None and kind not in an.KINDS:
            fail(f"--kind: unknown kind {kind!r} (kinds: {', '.join(an.KINDS)})")
        if rescan and stored:
            fail("--rescan and --stored do not go together")
        settings = load_config(config)
        start, end = time_range(since or "7d", until, tz)
    assert start is not None
    with reader(db) as store:
        if stored:
            where = {k: v for k, v in (("kind", kind), ("agent", agent)) if v is not None}
            rows = [from_stored(r) for r in sql.select(store, since_us=int(start.timestamp() * 1e6), where=where)]
        else:
            found = an.replay(store, start, settings, end)
            if rescan:
                new = an.save(store, found)
                note(f"stored {len(new)} new anomal{'y' if len(new) == 1 else 'ies'}", to_stderr=True)
            found = [a for a in found if (kind is None or a.kind == kind) and (agent is None or a.agent == agent)]
            rows = [from_anomaly(a) for a in found]
    if fmt is Format.json:
        emit_json(rows)
        return
    if fmt is Format.csv:
        emit_csv(FIELDS, ([" ".join(r[f]) if f == "event_ids" else r[f] for f in FIELDS] for r in rows))
        return
    if not rows:
        console().print(f"No anomalies in {span(start, end, tz)}.")
        return
    ids = [r["session_id"] or "" for r in rows]
    columns = [
        Column("time", [Text(when(datetime.fromisoformat(r["ts"]), tz)) for r in rows], justify="left"),
        Column("kind", [label(r["kind"]) for r in rows], label=True, justify="left"),
        Column("session", [label(i) for i in ids], floor=unique_prefix(ids), justify="left", drop=2),
        Column("agent", [label(r["agent"] or "") for r in rows], justify="left", drop=3),
        Column("metric", [Text(f"{r['metric']:,.3g}") for r in rows], drop=1),
        Column("threshold", [Text(f"{r['threshold']:,.3g}") for r in rows], drop=1),
        # free text: abbreviated (widest label first) before the kind is; JSON/CSV keep it whole
        Column("what", [label(r["message"].split(": ", 1)[-1]) for r in rows], label=True, justify="left"),
    ]
    print_table(console(), Text(f"Anomalies · {span(start, end, tz)}"), columns, len(rows))


def register(app: typer.Typer) -> None:
    app.command("anomalies")(anomalies_command)
