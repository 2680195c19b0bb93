"""`tokentrail serve`: the metering gateway, ingestion, JSON API, dashboard and /metrics."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from tokentrail.cli._common import INTERRUPTED, RUNTIME, DbOption, fail, require_extra, user_errors


def serve_command(
    host: Annotated[str, typer.Option("--host", help="Address to bind (keep 127.0.0.1 unless auth is on).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option("--port", help="Port to listen on.", min=1, max=65535)] = 8787,
    upstream: Annotated[
        list[str] | None,
        typer.Option(
            "--upstream",
            "-u",
            help="PROVIDER=URL (openai, anthropic, gemini), repeatable; the base URL its SDK takes, with or "
            "without /v1 (default: the providers' own APIs).",
            show_default=False,
        ),
    ] = None,
    db: DbOption = None,
    connect_timeout: Annotated[float, typer.Option("--connect-timeout", help="Upstream connect timeout, s.")] = 10.0,
    read_timeout: Annotated[
        float, typer.Option("--read-timeout", help="Longest wait between two reads of an upstream response, s.")
    ] = 300.0,
    total_timeout: Annotated[
        float | None, typer.Option("--total-timeout", help="Longest upstream call, s (default: none).")
    ] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn log level.")] = "info",
    allow_unauthenticated: Annotated[
        bool,
        typer.Option(
            "--allow-unauthenticated",
            help="Serve on an address other than loopback with auth off (anyone who reaches it may write and "
            "read everything).",
        ),
    ] = False,
    allow_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-host",
            help="A Host name to answer on a loopback address besides localhost and 127.0.0.1 (e.g. behind a "
            "reverse proxy); repeatable, * for any.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve the gateway (/v1/chat/completions, /v1/responses, /v1/embeddings, /v1/messages, Gemini),
    /api/v1/events, /v1/traces (OTLP), the JSON API, the dashboard (/) and /metrics.

    Setting TOKENTRAIL_ADMIN_KEY turns auth on (see `tokentrail keys`)."""
    require_extra("server", "starlette", "uvicorn", "aiohttp", "prometheus_client")
    import tokentrail as tt
    from tokentrail.server import Timeouts, create_app, serve
    from tokentrail.server.guard import is_loopback

    upstreams: dict[str, str] = {}
    for item in upstream or ():
        name, sep, url = item.partition("=")
        if not sep or not url.strip():
            fail(f"--upstream {item!r}: expected PROVIDER=URL, e.g. --upstream openai=https://api.openai.com/v1")
        upstreams[name.strip().lower()] = url.strip()
    admin_key = os.environ.get("TOKENTRAIL_ADMIN_KEY") or None
    if not is_loopback(host) and admin_key is None:
        if not allow_unauthenticated:
            fail(
                f"--host {host} with auth off would let anyone who reaches {host} write and read the ledger: set "
                "TOKENTRAIL_ADMIN_KEY to turn auth on (see `tokentrail keys`), or pass --allow-unauthenticated"
            )
        typer.echo(f"warning: serving on {host} with auth off (set TOKENTRAIL_ADMIN_KEY to turn it on)", err=True)
    with user_errors():
        ledger = tt.Ledger(db)
        try:
            app = create_app(
                ledger,
                upstreams=upstreams,
                admin_key=admin_key,
                timeouts=Timeouts(connect_s=connect_timeout, read_s=read_timeout, total_s=total_timeout),
                allowed_hosts=allow_host or (),
            )
        except BaseException:
            ledger.close()
            raise
    typer.echo(
        f"tokentrail serve: http://{host}:{port} → ledger {ledger.display_url}, auth {'on' if admin_key else 'off'}"
    )
    try:
        serve(app, host, port, log_level=log_level)
    except SystemExit as e:
        if e.code not in (None, 0, INTERRUPTED):  # uvicorn's own status (3: could not start)
            fail(f"the gateway could not serve on {host}:{port} (the log above says why)", code=RUNTIME)
        raise
    finally:
        ledger.close()


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)
