"""The server's ASGI app: the gateway on every path the server does not claim for itself.

The server's own routes (`/`, `/healthz`, `/metrics`, `/v1/traces`, `/api/...`) are a Starlette
app; every other path goes straight to the gateway, with no framework in between (it is the
hot path), so no provider path is ever an unmetered hole.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tokentrail.server import (
    advise_api,
    anomalies_api,
    api,
    chargeback_api,
    economics_api,
    forecast_api,
    reconcile_api,
)
from tokentrail.server.auth import AuthError
from tokentrail.server.dashboard import script as dashboard_script
from tokentrail.server.errors import provider_error
from tokentrail.server.gateway import DEFAULT_TIMEOUTS, Gateway, Receive, Scope, Send, Timeouts
from tokentrail.server.guard import Guard
from tokentrail.server.ingest import ingest_events
from tokentrail.server.keys import KeyRing
from tokentrail.server.metrics import CountingLedger, Metrics
from tokentrail.server.openapi import schema
from tokentrail.server.otlp import receive_traces
from tokentrail.server.page_policy import page_headers
from tokentrail.server.state import State, auth_error, caller, error, state_of
from tokentrail.server.upstreams import Upstreams

log = logging.getLogger("tokentrail")
_OWN = ("/api/", "/dashboard/")
_OWN_EXACT = frozenset(("/", "/healthz", "/metrics", "/v1/traces", "/openapi.json", "/favicon.ico"))


class TokentrailApp:
    """The ASGI app of `tokentrail serve`. Owns the gateway's aiohttp session (opened at startup,
    closed at shutdown); the ledger belongs to the caller."""

    def __init__(self, own: Starlette, gateway: Gateway, state: State, guard: Guard | None = None) -> None:
        self.own = own
        self.gateway = gateway
        self.state = state
        self.guard = guard or Guard()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path: str = scope["path"]
            own = path in _OWN_EXACT or path.startswith(_OWN)
            refused = self.guard.refusal(scope, own)
            if refused is not None:
                await self._refuse(scope, send, own, *refused)
            elif own:
                await self._own(scope, receive, send, path)
            else:
                await self.gateway(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        else:  # websockets: not served
            await send({"type": "websocket.close", "code": 1000})

    async def _own(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        status = 500
        label = _label(path)

        async def counting(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.own(scope, receive, counting)
        finally:
            self.state.metrics.request(label, status)

    async def _refuse(self, scope: Scope, send: Send, own: bool, status: int, message: str) -> None:
        """A refusal by the guard: tokentrail's error format on its own routes, the provider's
        on the gateway's (so its SDK raises a readable error). The body is never read."""
        if own:
            body = json.dumps({"error": {"status": status, "message": message}}).encode()
        else:
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            body = provider_error(Upstreams.provider_for(scope["path"], headers), status, message)
        out = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": body})
        self.state.metrics.request("refused", status)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.gateway.start()
                except Exception as e:
                    await send({"type": "lifespan.startup.failed", "message": str(e)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.gateway.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def start(self) -> None:
        """For ASGI servers that do not run the lifespan protocol."""
        await self.gateway.start()


def _label(path: str) -> str:
    """The route label of a request to the server's own routes: one of a fixed few, never the
    path itself (a caller could grow the metrics without bound with paths that 404)."""
    if path == "/v1/traces":
        return "otlp"
    if path == "/api/v1/events":
        return "events"
    if path.startswith("/api/"):
        return "api"
    if path in _OWN_EXACT:
        return path.strip("/") or "dashboard"
    return "dashboard"  # /dashboard/...


def create_app(
    ledger: Any,
    *,
    upstreams: Mapping[str, str] | None = None,
    admin_key: str | None = None,
    timeouts: Timeouts = DEFAULT_TIMEOUTS,
    flush_timeout_s: float = 30.0,
    allowed_hosts: Iterable[str] = (),
) -> TokentrailApp:
    """The server over `ledger` (a tokentrail.Ledger). `upstreams`: provider -> base URL
    (openai, anthropic, gemini; a trailing /v1 is fine). `admin_key` turns auth on.
    `allowed_hosts`: Host names answered on a loopback address besides loopback names (see guard)."""
    metrics = Metrics(ledger)
    counted = CountingLedger(ledger, metrics)
    keys = KeyRing(ledger.store, admin_key or None)
    state = State(ledger=counted, keys=keys, metrics=metrics, flush_timeout_s=flush_timeout_s)
    gateway = Gateway(counted, upstreams=Upstreams.of(upstreams), keys=keys, metrics=metrics, timeouts=timeouts)
    routes = [
        Route("/", dashboard),
        Route("/dashboard/{name}", dashboard_script),
        Route("/healthz", healthz),
        Route("/metrics", metrics_endpoint),
        Route("/v1/traces", receive_traces, methods=["POST"]),
        Route("/api/v1/events", ingest_events, methods=["POST"]),
        Route("/api/v1/report", api.report),
        Route("/api/v1/sessions", api.sessions),
        Route("/api/v1/sessions/{session_id:path}", api.session),
        Route("/api/v1/budgets", api.budgets),
        Route("/api/v1/forecast", forecast_api.forecast),
        Route("/api/v1/alerts", api.alert_list),
        Route("/api/v1/anomalies", anomalies_api.anomaly_list),
        Route("/api/v1/unpriced", api.unpriced),
        Route("/api/v1/me", api.me),
        Route("/api/v1/reconciliations", reconcile_api.reconciliations),
        Route("/api/v1/reconciliations/{run_id}", reconcile_api.reconciliation),
        Route("/api/v1/economics", economics_api.economics),
        Route("/api/v1/trees/{session_id:path}", economics_api.tree),
        Route("/api/v1/outcomes", economics_api.ingest_outcomes, methods=["POST"]),
        Route("/api/v1/export", chargeback_api.export),
        Route("/api/v1/reprice", chargeback_api.reprice),
        Route("/api/v1/advice", advise_api.advice),
        Route("/api/v1/advice/{advice_id}/dismiss", advise_api.dismiss, methods=["POST"]),
        Route("/api/v1/openapi.json", openapi),
        Route("/openapi.json", openapi),
    ]
    own = Starlette(routes=routes, exception_handlers={404: _not_found, 405: _not_allowed, 500: _internal})
    own.state.tokentrail = state
    return TokentrailApp(own, gateway, state, Guard(allowed_hosts))


_STARTED = time.time()


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok", "uptime_s": round(time.time() - _STARTED, 1)})


async def metrics_endpoint(request: Request) -> Response:
    """Prometheus text format. With auth on: the admin key or a read key of no team (the metrics
    carry every team's labels)."""
    try:
        key = caller(request, "read")
    except AuthError as e:
        return auth_error(e)
    if key.attribution:
        return error(403, "the metrics span every team: scrape with a read key of no team")
    import asyncio

    body = await asyncio.to_thread(state_of(request).metrics.exposition)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


async def openapi(request: Request) -> Response:
    return JSONResponse(schema())


async def dashboard(request: Request) -> Response:
    page = resources.files("tokentrail.server.dashboard").joinpath("index.html").read_bytes()
    headers = {"Cache-Control": "no-cache", **page_headers(page)}
    return Response(page, media_type="text/html; charset=utf-8", headers=headers)


async def _not_found(request: Request, exc: Exception) -> Response:
    return error(404, f"no route {request.url.path}")


async def _not_allowed(request: Request, exc: Exception) -> Response:
    return error(405, f"{request.method} is not allowed on {request.url.path}")


async def _internal(request: Request, exc: Exception) -> Response:
    log.exception("tokentrail: %s %s failed", request.method, request.url.path, exc_info=exc)
    return error(500, "internal error (logged on the server)")
