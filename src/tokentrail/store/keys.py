"""Server keys (`tt-…`) as the ledger keeps them: who may call `tokentrail serve`, for which
team, in which role. Issued, listed and revoked here (the CLI needs no server extra for that);
the running server checks them through tokentrail.server.keys.KeyRing.

A key is shown once, when it is created; the ledger keeps only its SHA-256 and last 4
characters. Keys are long random strings, so a plain hash is enough (no slow KDF needed).
A *virtual* key also carries attribution (team, agent, …) and names the environment variable
that holds the provider key the server sends upstream in its place: the provider key itself
is never stored. A virtual key is bound to one provider (the upstream its provider key is
for): the server never sends that key to another upstream. The binding is kept in the
`provider_key_env` column as `provider:ENV_NAME` (an environment variable's name has no colon).

Roles: `read` (the JSON API, the dashboard, /metrics for a key of no team), `ingest`
(`/api/v1/events`, `/v1/traces`), `proxy` (the gateway). The admin key (TOKENTRAIL_ADMIN_KEY)
may do everything.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from tokentrail.context import ATTRIBUTES
from tokentrail.events import bound_text, new_event_id

ROLES = ("read", "ingest", "proxy")
PROVIDERS = ("openai", "anthropic", "gemini")
PREFIX = "tt-"


class KeyStore(Protocol):
    """What the keys need of a store (every tokentrail.types.Store has it)."""

    dialect: Any

    def query(self, sql: str, params: Any = ()) -> list[tuple[Any, ...]]: ...

    def execute_write(self, sql: str, params: Any = ()) -> int: ...


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key as the server knows it (never the key itself)."""

    key_id: str
    role: str  # read | ingest | proxy | admin
    last4: str = ""
    name: str | None = None
    attribution: Mapping[str, str] = field(default_factory=dict)
    provider_key_env: str | None = None
    created_us: int = 0
    revoked_us: int | None = None
    provider: str | None = None  # the one upstream a virtual key's provider key may go to

    @property
    def team(self) -> str | None:
        """The one team this key may see and write, or None for every team."""
        return self.attribution.get("team")

    @property
    def admin(self) -> bool:
        return self.role == "admin"

    def allows(self, role: str) -> bool:
        return self.role in ("admin", role)


ADMIN = ApiKey(key_id="admin", role="admin")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(
    store: KeyStore,
    *,
    role: str,
    attribution: Mapping[str, str | None] | None = None,
    name: str | None = None,
    provider_key_env: str | None = None,
    provider: str | None = None,
) -> tuple[str, ApiKey]:
    """Issue a key; returns (the key, shown once, and its record). ValueError on bad input.
    A virtual key (`provider_key_env`) is bound to `provider`, by default the one provider its
    variable's name names (OPENAI_API_KEY: openai)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    attrs = {k: bound_text(v) or "" for k, v in (attribution or {}).items() if v}
    unknown = set(attrs) - set(ATTRIBUTES)
    if unknown:
        raise ValueError(f"unknown attribution dimension(s): {', '.join(sorted(unknown))}")
    if provider_key_env is not None and not provider_key_env.replace("_", "").isalnum():
        raise ValueError(f"--provider-key-env takes the name of an environment variable, not {provider_key_env!r}")
    if provider is not None and provider not in PROVIDERS:
        raise ValueError(f"--provider must be one of {', '.join(PROVIDERS)}, not {provider!r}")
    if provider is not None and provider_key_env is None:
        raise ValueError("--provider binds a virtual key: give --provider-key-env with it")
    if provider_key_env is not None:
        provider = provider or provider_named_by(provider_key_env)
        if provider is None:
            raise ValueError(
                f"name the provider whose key {provider_key_env} holds with --provider ({', '.join(PROVIDERS)}): "
                "a virtual key is only ever sent to that provider's upstream"
            )
    key = PREFIX + secrets.token_urlsafe(32)
    record = ApiKey(
        key_id="k" + new_event_id().replace("-", "")[-11:],
        role=role,
        last4=key[-4:],
        name=bound_text(name),
        attribution=attrs,
        provider_key_env=provider_key_env,
        created_us=int(time.time() * 1_000_000),
        provider=provider,
    )
    p = store.dialect.param
    store.execute_write(
        "INSERT INTO api_keys (key_id, key_hash, last4, role, name, attribution, provider_key_env, created_us) "
        f"VALUES ({', '.join([p] * 8)})",
        (
            record.key_id,
            hash_key(key),
            record.last4,
            role,
            record.name,
            json.dumps(attrs, sort_keys=True),
            f"{provider}:{provider_key_env}" if provider_key_env else None,
            record.created_us,
        ),
    )
    return key, record


def list_keys(store: KeyStore, *, include_revoked: bool = False) -> list[ApiKey]:
    rows = store.query(
        "SELECT key_id, role, last4, name, attribution, provider_key_env, created_us, revoked_us FROM api_keys"
        + ("" if include_revoked else " WHERE revoked_us IS NULL")
        + " ORDER BY created_us, key_id"
    )
    return [_record(r) for r in rows]


def revoke_key(store: KeyStore, key_id: str) -> bool:
    """Revoke a key by its id; False if there is no such live key."""
    p = store.dialect.param
    n = store.execute_write(
        f"UPDATE api_keys SET revoked_us = {p} WHERE key_id = {p} AND revoked_us IS NULL",
        (int(time.time() * 1_000_000), key_id),
    )
    return n > 0


_PROVIDER_WORDS = (("openai", ("OPENAI",)), ("anthropic", ("ANTHROPIC", "CLAUDE")), ("gemini", ("GEMINI", "GOOGLE")))


def provider_named_by(env: str) -> str | None:
    """The one provider an environment variable's name names (OPENAI_API_KEY, CLAUDE_KEY,
    GOOGLE_API_KEY), or None (none or several)."""
    name = env.upper()
    found = {p for p, words in _PROVIDER_WORDS if any(w in name for w in words)}
    return found.pop() if len(found) == 1 else None


def _record(r: tuple[Any, ...]) -> ApiKey:
    provider, sep, env = (r[5] or "").rpartition(":")
    if not sep:  # a key issued before keys were bound: bound to the provider its variable names
        provider = provider_named_by(env) or ""
    return ApiKey(
        key_id=r[0],
        role=r[1],
        last4=r[2],
        name=r[3],
        attribution=json.loads(r[4]) if r[4] else {},
        provider_key_env=env or None,
        created_us=int(r[6]),
        revoked_us=None if r[7] is None else int(r[7]),
        provider=provider or None,
    )


def live_keys(store: KeyStore) -> dict[str, ApiKey]:
    """Every live key, by the SHA-256 of the key."""
    rows = store.query(
        "SELECT key_id, role, last4, name, attribution, provider_key_env, created_us, revoked_us, key_hash "
        "FROM api_keys WHERE revoked_us IS NULL"
    )
    return {r[8]: _record(r) for r in rows}
