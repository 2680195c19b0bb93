"""`tokentrail keys create|list|revoke`: keys for `tokentrail serve`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from tokentrail.cli._common import DbOption, console, emit_json, fail, user_errors
from tokentrail.cli._tables import Column, label, print_table
from tokentrail.events import from_micros

keys_app = typer.Typer(help="Keys for `tokentrail serve` (auth is on when TOKENTRAIL_ADMIN_KEY is set).")


def _store(db: str | None) -> object:
    from tokentrail.store import open_store

    return open_store(db)


@keys_app.command("create")
def create_command(
    role: Annotated[
        str, typer.Option("--role", help="read (API, dashboard), ingest (events, OTLP) or proxy (gateway).")
    ] = ("proxy"),
    team: Annotated[str | None, typer.Option("--team", help="The one team this key reads and writes.")] = None,
    agent: Annotated[
        str | None, typer.Option("--agent", help="Attribute the key's gateway calls to this agent.")
    ] = None,
    project: Annotated[str | None, typer.Option("--project", help="… to this project.")] = None,
    org: Annotated[str | None, typer.Option("--org", help="… to this org.")] = None,
    provider_key_env: Annotated[
        str | None,
        typer.Option(
            "--provider-key-env",
            help="A virtual key: the server sends the provider key held in this environment variable (of the "
            "server's process) in the caller's place. The provider key is never stored.",
            show_default=False,
        ),
    ] = None,
    provider: Annotated[
        str | None,
        typer.Option(
            "--provider",
            help="The provider (openai, anthropic, gemini) whose key --provider-key-env holds: the key is never "
            "sent to another upstream (default: the one its variable's name names, e.g. OPENAI_API_KEY).",
            show_default=False,
        ),
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="A note to recognise the key by.")] = None,
    db: DbOption = None,
) -> None:
    """Issue a key. It is printed once: only its hash and last 4 characters are kept."""
    from tokentrail.store.keys import create_key

    with user_errors():
        store = _store(db)
        try:
            key, record = create_key(
                store,  # type: ignore[arg-type]
                role=role,
                attribution={"team": team, "agent": agent, "project": project, "org": org},
                name=name,
                provider_key_env=provider_key_env,
                provider=provider,
            )
        finally:
            store.close()  # type: ignore[attr-defined]
    typer.echo(key)
    scope = ", ".join(f"{k}={v}" for k, v in record.attribution.items()) or "every team"
    typer.echo(f"key {record.key_id}: role {record.role}, {scope}; shown once, store it now", err=True)


@keys_app.command("list")
def list_command(
    all_: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
    db: DbOption = None,
) -> None:
    """The keys issued (never the keys themselves: id, role, scope, last 4 characters)."""
    from tokentrail.store.keys import list_keys

    with user_errors():
        store = _store(db)
        try:
            found = list_keys(store, include_revoked=all_)  # type: ignore[arg-type]
        finally:
            store.close()  # type: ignore[attr-defined]
    if json_:
        emit_json(
            [
                {
                    "key_id": k.key_id,
                    "role": k.role,
                    "attribution": dict(k.attribution),
                    "last4": k.last4,
                    "name": k.name,
                    "provider_key_env": k.provider_key_env,
                    "provider": k.provider,
                    "created": from_micros(k.created_us).isoformat(),
                    "revoked": from_micros(k.revoked_us).isoformat() if k.revoked_us else None,
                }
                for k in found
            ]
        )
        return
    ids = [k.key_id for k in found]  # a column of no one's provider key or no revocation may go when short
    envs = [f"{k.provider_key_env} ({k.provider or 'no provider'})" if k.provider_key_env else "" for k in found]
    revoked = [from_micros(k.revoked_us).strftime("%Y-%m-%d %H:%M") if k.revoked_us else "" for k in found]
    columns = [
        # `keys revoke` takes the whole id: it is never abbreviated
        Column("id", [label(i) for i in ids], label=True, floor=max(map(len, ids), default=2), justify="left"),
        Column("role", [Text(k.role) for k in found], justify="left"),
        Column(
            "scope",
            [label(", ".join(f"{a}={v}" for a, v in k.attribution.items()) or "every team") for k in found],
            label=True,
            justify="left",
        ),
        Column("key", [Text(f"tt-…{k.last4}") for k in found], justify="left"),
        Column(
            "provider key from", [label(e) for e in envs], label=any(envs), drop=0 if any(envs) else 2, justify="left"
        ),
        Column("name", [label(k.name or "") for k in found], label=True, justify="left"),
        Column("created", [Text(from_micros(k.created_us).strftime("%Y-%m-%d %H:%M")) for k in found], justify="left"),
        Column("revoked", [Text(r) for r in revoked], drop=0 if any(revoked) else 1, justify="left"),
    ]
    print_table(console(), Text("API keys"), columns, len(found))


@keys_app.command("revoke")
def revoke_command(
    key_id: Annotated[str, typer.Argument(help="The key's id (see `tokentrail keys list`).")],
    db: DbOption = None,
) -> None:
    """Revoke a key; a running server stops taking it within seconds."""
    from tokentrail.store.keys import revoke_key

    with user_errors():
        store = _store(db)
        try:
            done = revoke_key(store, key_id)  # type: ignore[arg-type]
        finally:
            store.close()  # type: ignore[attr-defined]
    if not done:
        fail(f"no live key {key_id!r} (see `tokentrail keys list --all`)")
    typer.echo(f"revoked {key_id}")


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
