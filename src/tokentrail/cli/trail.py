"""`tokentrail trail EVENT_ID`: the whole trail of one cost, from the price to the audit chain."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.text import Text

from tokentrail.analytics import trail as trails
from tokentrail.cli._common import (
    DbOption,
    TreeFormat,
    TzOption,
    console,
    emit_json,
    num,
    reader,
    time_range,
    usd,
    user_errors,
    when,
)
from tokentrail.corrections import made_at
from tokentrail.events import UsageEvent
from tokentrail.store import lookup
from tokentrail.timespec import zone


def trail_command(
    event_id: Annotated[
        str,
        typer.Argument(help="The event id, or a start only it has (see `tokentrail session ID --format json`)."),
    ],
    tz: TzOption = None,
    fmt: Annotated[TreeFormat, typer.Option("--format", "-f", help="Output format.")] = TreeFormat.table,
    db: DbOption = None,
) -> None:
    """One cost traced: model, price and version, session, step and parent spans, the tool calls
    around it, the request fingerprint, adjustments, its audit-chain link, and captured content if any."""
    with user_errors():
        time_range(None, None, tz)  # checks --tz
    with reader(db) as store, user_errors():
        t = trails.trail(store, lookup.event_id(store, event_id))
    if fmt is TreeFormat.json:
        emit_json(t.to_dict())
        return
    for line in _lines(t, tz):
        console().print(line, soft_wrap=True)


def _short(e: UsageEvent) -> str:
    if e.kind in ("llm", "embedding"):
        what = "/".join(x for x in (e.provider, e.model) if x) or e.kind
    elif e.kind == "tool":
        what = f"tool {e.tool_name}"
    else:
        what = "adjustment"
    cost = "" if e.cost_usd is None and e.kind == "tool" else f", {usd(e.cost_usd)}"
    return f"{what} {e.event_id}{cost}"


def _lines(t: trails.Trail, tz: str | None) -> list[Text]:
    e = t.event
    out = [Text(f"Event {e.event_id}", style="bold")]

    def row(label: str, value: str, style: str = "") -> None:
        line = Text(f"  {label:<14} ", style="dim")
        line.append(value, style=style)
        out.append(line)

    what = {"llm": "model call", "embedding": "embedding call", "tool": "tool run"}.get(e.kind, e.kind)
    row("kind", f"{what}" + (f" · {e.status}" if e.status != "ok" else ""), "" if e.status == "ok" else "red")
    row("at", f"{e.ts.astimezone(zone(tz)):%Y-%m-%d %H:%M:%S} ({tz or 'UTC'})")
    if e.kind in ("llm", "embedding"):
        row("model", "/".join(x for x in (e.provider, e.model) if x) + (f" ({e.operation})" if e.operation else ""))
        tokens = f"{num(e.input_tokens)} in ({num(e.cache_read_tokens)} cached, {num(e.cache_write_tokens)} written)"
        tokens += f" · {num(e.output_tokens)} out ({num(e.reasoning_tokens)} reasoning)"
        if e.usage_estimated:
            tokens += " · estimated: the provider never reported this call's usage"
        row("tokens", tokens, "yellow" if e.usage_estimated else "")
    if e.kind == "tool":
        row("tool", f"{e.tool_name} (call {e.tool_call_id or '-'}, args {e.tool_args_hash or '-'})")
    row("cost", usd(e.cost_usd) if e.cost_usd is not None or e.kind != "tool" else "none recorded")
    if e.price_source or e.price_version:
        row("price", (e.price_source or "?") + (f", version {e.price_version}" if e.price_version else ""))
    if e.unit_prices:
        row(
            "unit prices",
            ", ".join(f"{k} {v}" for k, v in sorted(e.unit_prices.items())) + " (USD; the unit is in each name)",
        )
    if t.adjustments:
        row("cost now", f"{usd(t.cost_usd)} (with {len(t.adjustments)} adjustment(s))", "bold")
    if e.note:
        row("note", e.note)

    out.append(Text("Attribution", style="bold"))
    for label, value in (
        ("session", e.session_id),
        ("agent", e.agent),
        ("team", e.team),
        ("project", e.project),
        ("org", e.org),
        ("user", e.user),
        ("customer", e.customer),
        ("workflow", e.workflow),
        ("task type", e.task_type),
        ("step", e.step),
        ("trace", e.trace_id),
        ("span", e.span_id),
    ):
        if value:
            row(label, value)
    if e.tags:
        row("tags", json.dumps(dict(e.tags), ensure_ascii=False, sort_keys=True))
    if t.parents:
        out.append(Text("Parent spans", style="bold"))
        for p in t.parents:
            where = _short(p.event) if p.event else f"no event: {'step ' + e.step if e.step else 'the session'}"
            row("parent", f"span {p.span_id}: {where}")

    if e.tool_calls or t.ran or t.asked_by:
        out.append(Text("Tool calls", style="bold"))
        for tc in e.tool_calls:
            ran = [x for x in t.ran if x.tool_call_id == tc.id or (not x.tool_call_id and x.tool_name == tc.name)]
            status = ", ".join(_short(x) for x in ran) if ran else "did not run (not recorded)"
            row("asked for", f"{tc.name} [{tc.id or '-'}] args {tc.args_hash} -> {status}")
        for x in t.ran:
            if not any(x.tool_call_id == tc.id for tc in e.tool_calls if tc.id):
                row("ran", _short(x))
        if t.asked_by is not None:
            row("asked by", _short(t.asked_by))

    if e.request_hash or e.content:
        out.append(Text("Request", style="bold"))
        if e.request_hash:
            row("fingerprint", e.request_hash)
        if e.content:
            row("content", e.content)

    if t.adjustments or t.adjusts:
        out.append(Text("Adjustments", style="bold"))
        for a in t.adjustments:
            made = made_at(a.event_id)
            row("adjusted", f"{usd(a.cost_usd)} by {a.event_id}" + (f" on {when(made, tz)}" if made else ""))
            row("", f"reason: {a.note or '-'}", "dim")
        if t.adjusts is not None:
            row("adjusts", _short(t.adjusts))

    out.append(Text("Audit chain", style="bold"))
    row("seq", f"{t.seq:,}")
    row("hash", t.hash.hex())
    row("prev hash", t.prev_hash.hex())
    row(
        "row",
        "matches its hash" if t.intact else "DOES NOT match its hash: run `tokentrail audit verify`",
        "green" if t.intact else "bold red",
    )
    return out


def register(app: typer.Typer) -> None:
    app.command("trail")(trail_command)
