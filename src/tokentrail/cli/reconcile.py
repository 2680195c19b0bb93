"""`tokentrail reconcile`: the ledger against the provider's own usage and cost reports."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from tokentrail.analytics.reconcile import TOKENS, Cell, Reconciliation, Side
from tokentrail.cli._common import (
    RUNTIME,
    DbOption,
    Format,
    SinceOption,
    UntilOption,
    console,
    emit_csv,
    emit_json,
    fail,
    note,
    parse_by,
    reader,
    time_range,
    user_errors,
)
from tokentrail.cli._tables import Column, count, label, money, money_places, print_table
from tokentrail.types import Store

_STYLE = {
    "match": "green",
    "missing_from_ledger": "bold red",
    "missing_from_provider": "yellow",
    "token_mismatch": "red",
    "price_drift": "magenta",
}
CSV_COLUMNS = (
    "verdict",
    "provider_input_tokens",
    "provider_cache_read_tokens",
    "provider_cache_write_tokens",
    "provider_output_tokens",
    "provider_cost_usd",
    "ledger_input_tokens",
    "ledger_cache_read_tokens",
    "ledger_cache_write_tokens",
    "ledger_output_tokens",
    "ledger_calls",
    "ledger_cost_usd",
    "token_diff",
    "cost_diff_usd",
    "reason",
)


def reconcile_command(
    provider: Annotated[str, typer.Option("--provider", "-p", help="openai, anthropic or google.")],
    files: Annotated[
        list[Path] | None,
        typer.Option(
            "--file",
            help="A provider report: OpenAI Usage/Costs API JSON, Anthropic usage/cost report JSON, "
            "Google Cloud Billing export (CSV or JSON lines). Repeat for usage and cost files.",
        ),
    ] = None,
    fetch: Annotated[
        bool,
        typer.Option(
            "--fetch",
            help="Fetch the usage and cost reports from the provider's admin API (OpenAI: OPENAI_ADMIN_KEY, "
            "Anthropic: ANTHROPIC_ADMIN_KEY); needs --since.",
        ),
    ] = False,
    since: SinceOption = None,
    until: UntilOption = None,
    api_url: Annotated[
        str | None,
        typer.Option("--api-url", help="With --fetch: the admin API's base URL (https; default the provider's)."),
    ] = None,
    by: Annotated[str, typer.Option("--by", "-b", help="day and/or model.")] = "day,model",
    tolerance: Annotated[str, typer.Option("--tolerance", help="Relative difference still a match.")] = "1%",
    only_differences: Annotated[
        bool, typer.Option("--differences", help="Show only the cells that do not match.")
    ] = False,
    store_run: Annotated[
        bool, typer.Option("--store/--no-store", help="Keep the run in the ledger (coverage over time).")
    ] = True,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
    db: DbOption = None,
) -> None:
    """Compare the ledger with the provider's bill per day × model: what the ledger missed,
    what drifted, and the share of the provider's spend it metered (coverage)."""
    from tokentrail.analytics import reconcile as rec
    from tokentrail.analytics.reconcile_files import PROVIDERS, read_file

    with user_errors():
        if provider not in PROVIDERS:
            raise ValueError(f"--provider {provider!r}: expected one of {', '.join(PROVIDERS)}")
        dims = parse_by(by)
        tol = rec.parse_tolerance(tolerance)
        start, end = time_range(since, until, "UTC")
        if bool(files) == fetch:
            raise ValueError("give the provider's reports with --file, or --fetch them (one of the two)")
        if files:
            reports = [read_file(provider, f) for f in files]
            source = "files: " + ", ".join(f.name for f in files)
        else:
            from tokentrail.analytics.reconcile_fetch import FetchError, fetch_reports

            if start is None:
                raise ValueError("--fetch needs --since (and takes --until, by default the end of yesterday UTC)")
            start, end = rec.window([], start, end or _today())  # usage errors before any request
            try:
                reports = fetch_reports(provider, start, end, base_url=api_url)
            except FetchError as e:
                fail(str(e), code=RUNTIME)
            source = f"fetch: {provider} admin API"
    with reader(db) as store, user_errors():
        result = rec.reconcile(store, provider, reports, since=start, until=end, by=dims, tolerance=tol)
        data = result.to_dict()
        run_id = None
        if store_run:
            run_id = _store(store, data, source)
    if fmt is Format.json:
        emit_json({**data, "run_id": run_id})
    elif fmt is Format.csv:
        emit_csv([*result.by, *CSV_COLUMNS], (_csv_row(c) for c in result.cells))
    else:
        print_result(result, only_differences=only_differences)
    if store_run and run_id is None:
        note("the ledger is read-only here: this run was not stored", to_stderr=fmt is not Format.table)


def _today() -> datetime:
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _store(store: Store, data: dict[str, Any], source: str) -> str | None:
    from tokentrail.store.reconcile import save_run

    if getattr(store, "read_only", False):
        return None
    return save_run(store, data, source=source)


def _csv_row(c: Cell) -> list[object]:
    p, led = c.provider or Side(), c.ledger or Side()
    return [
        *(v for _, v in c.key),
        c.verdict,
        *(getattr(p, f) for f in (*TOKENS, "cost_usd")),
        *(getattr(led, f) for f in (*TOKENS, "requests", "cost_usd")),
        c.token_diff,
        c.cost_diff,
        c.reason,
    ]


def print_result(r: Reconciliation, *, only_differences: bool = False) -> None:
    """The cells as a table, then the totals, the verdicts and the coverage."""
    cells = [c for c in r.cells if c.verdict != "match"] if only_differences else list(r.cells)
    days = f"{r.since:%Y-%m-%d} → {(r.until - timedelta(days=1)):%Y-%m-%d} (UTC)"
    title = Text(f"Reconciliation · {r.provider} · {days} · tolerance {r.tolerance * 100:g}%")
    places = money_places(
        v for c in cells for s in (c.provider, c.ledger) if s is not None for v in (s.cost_usd, c.cost_diff)
    )

    def tokens(s: Side | None) -> Text:
        return Text("—", style="dim") if s is None else Text(f"{s.tokens:,}")

    def cost(s: Side | None) -> Text:
        if s is None:
            return Text("—", style="dim")
        return Text(
            "n/a" if s.cost_usd is None else money(s.cost_usd, places), style="" if s.cost_usd is not None else "dim"
        )

    columns = [Column(d, [label(dict(c.key)[d]) for c in cells], label=True, justify="left") for d in r.by]
    columns += [
        Column(
            "provider tokens",
            [tokens(c.provider) for c in cells],
            compact=[Text(count(c.provider.tokens)) if c.provider else Text("—") for c in cells],
        ),
        Column(
            "ledger tokens",
            [tokens(c.ledger) for c in cells],
            compact=[Text(count(c.ledger.tokens)) if c.ledger else Text("—") for c in cells],
        ),
        Column("Δ tokens", [Text(f"{c.token_diff:+,}" if c.token_diff else "0") for c in cells], drop=1),
        Column("provider cost", [cost(c.provider) for c in cells]),
        Column("ledger cost", [cost(c.ledger) for c in cells]),
        Column("Δ cost", [Text("n/a" if c.cost_diff is None else money(c.cost_diff, places)) for c in cells], drop=2),
        Column("verdict", [Text(c.verdict.replace("_", " "), style=_STYLE[c.verdict]) for c in cells], justify="left"),
        Column("why", [label(c.reason) for c in cells], label=True, justify="left"),
    ]
    out = console()
    if cells:
        print_table(out, title, columns, len(cells))
    else:
        out.print(title)
        out.print(Text("every cell matches" if r.cells else "nothing billed and nothing metered in this window"))
    pc = "n/a (no cost report)" if r.provider_cost_usd is None else money(r.provider_cost_usd, places)
    out.print(Text(f"provider spend {pc} · ledger spend {money(r.ledger_cost_usd, places)}"))
    out.print(Text(" · ".join(f"{v.replace('_', ' ')} {n}" for v, n in r.counts.items())))
    cov = "n/a" if r.coverage is None else f"{r.coverage * 100:.2f}%"
    basis = "of the provider's spend" if "cost" in r.compared else "of the provider's tokens"
    out.print(Text(f"coverage {cov} {basis} metered by the ledger", style="bold"))


def register(app: typer.Typer) -> None:
    app.command("reconcile")(reconcile_command)
