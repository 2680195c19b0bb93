"""What every route of one server shares: the ledger, keys, metrics and limits."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tokentrail.exceptions import TokentrailError
from tokentrail.server.auth import AuthError, api_key_of, authorize
from tokentrail.server.heavy import HeavyRuns
from tokentrail.server.keys import ApiKey, KeyRing
from tokentrail.server.metrics import Metrics

# Documented limits of the ingestion routes.
MAX_EVENTS_BODY_BYTES = 10 * 1024 * 1024
MAX_EVENTS_PER_BATCH = 5000
MAX_OTLP_BODY_BYTES = 16 * 1024 * 1024


@dataclass
class State:
    ledger: Any  # a CountingLedger around the server's Ledger
    keys: KeyRing
    metrics: Metrics
    flush_timeout_s: float = 30.0
    heavy: HeavyRuns = field(default_factory=HeavyRuns.from_env)  # TOKENTRAIL_HEAVY_RUNS

    @property
    def store(self) -> Any:
        return self.ledger.store

    async def flush(self) -> None:
        """Make everything recorded so far durable before acknowledging it (off the event loop)."""
        await asyncio.to_thread(self.ledger.flush, self.flush_timeout_s)


class TooLarge(TokentrailError):
    """A request body over the size limit (413)."""


def state_of(request: Request) -> State:
    s: State = request.app.state.tokentrail
    return s


def caller(request: Request, role: str) -> ApiKey:
    """The caller's key for `role`, or AuthError."""
    return authorize(state_of(request).keys, api_key_of(request.headers), role)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or TooLarge past `limit` bytes (checked before and while reading)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise TooLarge
    parts, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge
        parts.append(chunk)
    return b"".join(parts)


def error(status: int, message: str, **extra: Any) -> JSONResponse:
    """A tokentrail error body: {"error": {"status", "message", ...}}."""
    return JSONResponse({"error": {"status": status, "message": message, **extra}}, status_code=status)


def auth_error(e: AuthError) -> Response:
    headers: Mapping[str, str] | None = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
    return JSONResponse({"error": {"status": e.status, "message": e.message}}, status_code=e.status, headers=headers)
