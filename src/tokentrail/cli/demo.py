"""`tokentrail demo`: a small agent fleet, fully offline, metered into its own ledger."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import random
import shutil
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from tokentrail.analytics import reports, sessions
from tokentrail.cli._common import NOT_COUNTED, RUNTIME, console, fail, num, require_extra, user_errors
from tokentrail.cli._tables import money, money_places
from tokentrail.cli.report import print_report
from tokentrail.cli.sessions import print_sessions

DEFAULT_DEMO_DB = Path("~/.tokentrail/demo.db")


def demo_command(
    db: Annotated[
        str | None,
        typer.Option(
            "--db", help="Ledger URL to write the demo to (default: a fresh ~/.tokentrail/demo.db).", show_default=False
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed: the same seed gives the same numbers.")] = 7,
    via_gateway: Annotated[
        bool,
        typer.Option(
            "--via-gateway",
            help="Point the fleet's SDK clients at an in-process `tokentrail serve` gateway (which points at the "
            "fake provider) instead of wrapping them.",
        ),
    ] = False,
) -> None:
    """Run a small agent fleet offline through the real SDKs and show what tokentrail recorded.

    Seven agents of three teams work through the real openai, anthropic and google-genai SDKs
    against a local fake provider; one of them is stuck in a tool loop."""
    require_extra("sdks", "openai", "anthropic", "google.genai", "aiohttp")
    if via_gateway:
        require_extra("server", "starlette", "uvicorn", "prometheus_client")
    logger = logging.getLogger("tokentrail")
    level = logger.level
    try:
        with contextlib.ExitStack() as held:
            url = db or held.enter_context(_fresh_default())
            _run(url, db, seed, via_gateway)
    finally:
        logger.setLevel(level)  # the quiet is the demo's own: a caller in the same process keeps its logs


def _run(url: str, db: str | None, seed: int, via_gateway: bool) -> None:
    import tokentrail as tt
    from tokentrail.cli._fleet import FLEET, Fleet, responder, set_budgets, total_sessions
    from tokentrail.testing import FakeUpstream

    rng = random.Random(seed)
    # The fleet's self-hosted model has no price on purpose; the report below says so.
    logging.getLogger("tokentrail").setLevel(logging.ERROR)
    with user_errors():
        ledger = tt.Ledger(url)
        set_budgets(ledger)  # a session budget for the runaway agent, a monthly alert for the legal team
    out = console()
    out.print(Text(f"tokentrail demo → {ledger.url}", style="bold"))
    started = datetime.now(UTC) - timedelta(minutes=1)
    with contextlib.ExitStack() as stack, FakeUpstream(record_requests=False) as upstream:
        upstream.responder = responder(rng)
        urls = {
            "openai": upstream.openai_base_url,
            "anthropic": upstream.anthropic_base_url,
            "gemini": upstream.gemini_base_url,
        }
        if via_gateway:
            from tokentrail.server import ServerThread, create_app

            gateway = stack.enter_context(ServerThread(create_app(ledger, upstreams=urls)))
            out.print(Text(f"through the gateway at {gateway.url}", style="dim"))
            urls = {"openai": gateway.url + "/v1", "anthropic": gateway.url, "gemini": gateway.url}
        fleet = Fleet(upstream, ledger, rng, base_urls=urls, via_gateway=via_gateway)
        columns = (TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=out, transient=False) as progress:
            task = progress.add_task("running the fleet", total=total_sessions())
            for agent in FLEET:
                for n in range(agent.sessions):
                    progress.update(task, description=f"{agent.team}/{agent.name}")
                    fleet.run_session(agent, n)
                    progress.advance(task)
            progress.update(task, description="done")
    ledger.flush()
    ledger.budgets.flush()
    from tokentrail.cli._demo_history import write_history

    try:  # the anomaly detectors' baselines: 14 days like today's normal sessions
        write_history(ledger.store, rng, started)
    except Exception as e:
        out.print(Text(f"(no back-dated history: {e})", style="dim"))
    _show(ledger.store, ledger.url, db, _budget_lines(ledger, fleet.stopped))
    ledger.close()


def _budget_lines(ledger: object, stopped: list[tuple[str, int, str]]) -> list[Text]:
    """What the demo's budgets did: the hard stop of the runaway agent, and the alerts."""
    from tokentrail.budgets.alerts import list_alerts

    lines = [
        Text.assemble(
            ("Budget stop: ", "bold red"),
            f"{agent} was stopped before its call {calls + 1} was sent (BudgetExceeded): {why}",
        )
        for agent, calls, why in stopped
    ]
    for alert in reversed(list_alerts(ledger.store, kind="threshold")):  # type: ignore[attr-defined]
        lines.append(Text.assemble(("Alert: ", "bold yellow"), alert.message))
    return lines


@contextlib.contextmanager
def _fresh_default() -> Iterator[str]:
    """The default demo ledger starts empty every run, so numbers never pile up across runs.
    A lock held for the whole run refuses a second demo on the same file, which would delete
    the first one's ledger while it is written."""
    path = DEFAULT_DEMO_DB.expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "a+b") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fail(
                f"another `tokentrail demo` is writing {path}: wait for it to finish, "
                "or give this one its own ledger with --db sqlite:///other.db",
                code=RUNTIME,
            )
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        yield f"sqlite:///{path}"


def _show(store: object, url: str, db: str | None, budget_lines: list[Text] | None = None) -> None:
    out = console()
    rep = reports.report(store, by=("team", "agent", "model"))  # type: ignore[arg-type]
    out.print()
    print_report(rep)
    found = sessions.sessions(store, since=None, until=None, where={}, limit=1000)  # type: ignore[arg-type]
    costliest = sorted(found, key=lambda s: s.cost_usd or Decimal(0), reverse=True)[:5]
    out.print()
    print_sessions(costliest, title="The 5 costliest sessions", compact=True)
    busiest = max(found, key=lambda s: s.calls, default=None)
    out.print()
    for line in _runaway_lines(store, {s.session_id: s for s in found}):
        out.print(line)
    unpriced = reports.unpriced_models(store)  # type: ignore[arg-type]
    for m in unpriced:
        out.print(
            Text.assemble(
                ("Unpriced: ", "bold yellow"),
                f"{m.provider}/{m.model} ({num(m.calls)} calls) has no price: its calls are {NOT_COUNTED}. "
                "Add it to a TOKENTRAIL_PRICES overrides file.",
            )
        )
    for line in budget_lines or ():
        out.print(line)
    flag = f" --db {url}"
    # `make demo` runs .venv/bin/tokentrail: show the commands as they can be pasted
    prog = "tokentrail" if shutil.which("tokentrail") else os.path.relpath(sys.argv[0])
    out.print()
    out.print(Text("Explore what was recorded:", style="bold"))
    for command in (
        f"tokentrail report{flag} --by team,agent",
        f"tokentrail report{flag} --by customer,model",
        *([f"tokentrail report{flag} --by step --where agent={busiest.agent}"] if busiest else []),
        f"tokentrail sessions{flag}",
        *([f"tokentrail session {busiest.session_id}{flag}"] if busiest else []),
        f"tokentrail prices{flag} --unpriced",
        f"tokentrail budget status{flag}",
        f"tokentrail alerts{flag}",
        f"tokentrail anomalies{flag} --since 30d",
    ):
        out.print(f"  {prog}{command.removeprefix('tokentrail')}", soft_wrap=True)  # whole, to paste


def _runaway_lines(store: object, by_id: dict[str, sessions.SessionSummary]) -> list[Text]:
    """The runaway agent, as the anomaly detectors found it (not a fixed sentence): the costliest
    session of each anomaly kind the replay raised, retry loops first."""
    from tokentrail.analytics.anomalies import replay, save

    try:
        found = replay(store, datetime.now(UTC) - timedelta(days=30))  # type: ignore[arg-type]
        save(store, found)  # type: ignore[arg-type]  # `tokentrail anomalies --stored` and the dashboard show them
    except Exception as e:  # the demo's report stands without them
        return [Text(f"(anomaly detection failed: {e})", style="dim")]
    lines = []
    for kind in ("retry_loop", "context_growth", "token_spike"):
        of_kind = [a for a in found if a.kind == kind]
        if of_kind:
            worst = max(of_kind, key=lambda a: a.cost_nusd or 0)
            head = ("Runaway: " if kind == "retry_loop" else "Anomaly: ", "bold red")
            line = Text.assemble(head, worst.message)
            end = by_id.get(worst.session_id or "")
            if end is not None:  # detected at the threshold; the session went on
                line.append(
                    f" (by its end: {num(end.calls)} calls, {num(end.tool_calls)} tool runs, "
                    f"{money(end.cost_usd, money_places([end.cost_usd]))})",
                    style="dim",
                )
            lines.append(line)
    return lines


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)
