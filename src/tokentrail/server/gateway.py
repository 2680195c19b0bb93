"""The metering gateway: an OpenAI-, Anthropic- and Gemini-compatible pass-through.

A raw ASGI handler (no framework per request: this is the hot path) that reads the request,
works out attribution and the caller's key, reserves budget through an `Exchange`, forwards
the request upstream on one shared aiohttp session (keep-alive), and streams the response back
chunk by chunk while the Exchange reads usage from it. The Exchange records exactly one event
however the call ends; the caller's bytes are the upstream's, except OpenAI's usage chunk the
gateway asked for on a caller's behalf.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

import aiohttp

from tokentrail.context import Attribution
from tokentrail.events import bound_tags, bound_text, text_problem
from tokentrail.exceptions import BudgetExceeded, BudgetThrottled, LedgerUnavailable, TokentrailError
from tokentrail.integrations.exchange import Exchange
from tokentrail.server.auth import KEY_HEADER
from tokentrail.server.economics_api import outcome_from_headers
from tokentrail.server.errors import provider_error
from tokentrail.server.keys import PREFIX, ApiKey, KeyRing
from tokentrail.server.metrics import Metrics
from tokentrail.server.relay import HOP_HEADERS, Caller, ClientGone, Relay, UpstreamFailed
from tokentrail.server.upstreams import Upstreams

log = logging.getLogger("tokentrail")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# Attribution headers (docs/rules.md §Gateway) -> Attribution fields.
ATTRIBUTION_HEADERS = {
    "x-tokentrail-session": "session_id",
    "x-tokentrail-agent": "agent",
    "x-tokentrail-team": "team",
    "x-tokentrail-org": "org",
    "x-tokentrail-project": "project",
    "x-tokentrail-user": "user",
    "x-tokentrail-customer": "customer",
    "x-tokentrail-workflow": "workflow",
    "x-tokentrail-task-type": "task_type",
    "x-tokentrail-step": "step",
    "x-tokentrail-parent-session": "parent_session_id",  # agent trees: the session this one runs inside
}
TAG_PREFIX = "x-tokentrail-tag-"
_HOP = HOP_HEADERS
_CREDENTIAL_HEADERS = ("authorization", "x-api-key", "x-goog-api-key", "api-key")
_JSON = [(b"content-type", b"application/json")]


@dataclass(frozen=True)
class Timeouts:
    """Upstream timeouts in seconds: connecting, between two reads of the response, and the whole
    call (None: no limit; a long generation may legitimately take minutes)."""

    connect_s: float = 10.0
    read_s: float = 300.0
    total_s: float | None = None


DEFAULT_TIMEOUTS = Timeouts()


class GatewayError(TokentrailError):
    def __init__(self, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []


class Gateway:
    """The ASGI gateway. `start()` on the server's loop before serving, `close()` after."""

    def __init__(
        self,
        ledger: Any,
        *,
        upstreams: Upstreams,
        keys: KeyRing,
        metrics: Metrics,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        max_buffered_bytes: int = 256 * 1024 * 1024,
        max_body_bytes: int = 64 * 1024 * 1024,
        durable_timeout_s: float = 10.0,
    ) -> None:
        """`durable_timeout_s`: how long the last byte of a metered response waits for the call's
        event to be durable when the ledger cannot write (then it goes, the event kept in memory)."""
        self.ledger = ledger
        self.upstreams = upstreams
        self.keys = keys
        self.metrics = metrics
        self.timeouts = timeouts
        self.max_buffered_bytes = max_buffered_bytes
        self.buffered = 0  # bytes of request bodies held by requests in flight (one event loop)
        self.max_body_bytes = max_body_bytes
        self.durable_timeout_s = durable_timeout_s
        self.session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(
            total=timeouts.total_s, connect=timeouts.connect_s, sock_read=timeouts.read_s
        )

    async def start(self) -> None:
        if self.session is None:
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60, ttl_dns_cache=300)
            # Bytes pass through as the upstream sent them (compressed or not); no cookies kept.
            self.session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=self._timeout,
                skip_auto_headers=("User-Agent", "Content-Type"),
            )

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    # -- one request ------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        t0 = time.perf_counter()
        raw_headers: list[tuple[bytes, bytes]] = scope["headers"]
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in raw_headers}
        path: str = scope.get("raw_path", b"").decode("latin-1").split("?", 1)[0] or scope["path"]
        query: str = scope.get("query_string", b"").decode("latin-1")
        method: str = scope["method"]
        provider = self.upstreams.provider_for(path, headers)
        route = self.upstreams.route_for(provider, method, path)
        label = route.operation if route is not None else "passthrough"
        status = 500
        held = [0]  # bytes of this request's body counted in self.buffered
        try:
            problem = self.upstreams.path_problem(path)
            if problem is not None:
                raise GatewayError(400, f"tokentrail: {problem}")
            # who is calling, before a byte of the body is read: a caller without a valid key
            # costs the server no memory
            key, credential = self._caller(headers, query, provider)
            attribution = _attribution(headers, key)
            try:
                outcome = outcome_from_headers(headers, attribution)
            except ValueError as e:
                raise GatewayError(400, f"tokentrail: {e}") from None
            body = await self._body(headers, receive, held)
            out_headers, query = self._forward_headers(raw_headers, provider, key, credential, query, route)
            exchange = None
            if route is not None:
                exchange, body = await self._begin(route, path, body, attribution)
            status = await self._forward(
                scope, receive, send, provider, method, path, query, out_headers, body, exchange, t0, label
            )
            if outcome is not None and status < 400:  # a failed request is retried: its outcome would count twice
                name, success, value = outcome
                try:
                    self.ledger.record_outcome(attribution, name, success=success, value_usd=value)
                except Exception:  # the answer is already sent: the failure is logged, never the caller's
                    log.exception(
                        "tokentrail: could not record the outcome %r of session %s", name, attribution.session_id
                    )
        except GatewayError as e:
            status = e.status
            await _respond(send, e.status, provider_error(provider, e.status, e.message), e.headers)
        except Exception:
            # a bug, not the caller's fault: logged, and answered in the provider's error shape
            log.exception("tokentrail: the gateway failed on %s %s", method, path)
            status = 500
            await _respond(
                send, 500, provider_error(provider, 500, "tokentrail: internal error (logged on the server)")
            )
        finally:
            self.buffered -= held[0]
            self.metrics.request(label, status)
            self.metrics.latency.labels(label).observe(time.perf_counter() - t0)

    async def _body(self, headers: dict[str, str], receive: Receive, held: list[int]) -> bytes:
        """The whole body (metering reads it), at most max_body_bytes of it, and only while all
        requests in flight together hold less than max_buffered_bytes (else 503): many large
        bodies at once cannot exhaust the server's memory. `held[0]` counts what this one holds."""
        declared = headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise GatewayError(413, f"request body over the gateway's limit of {self.max_body_bytes} bytes")
        chunks = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise GatewayError(499, "client disconnected")
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > self.max_body_bytes:
                    raise GatewayError(413, f"request body over the gateway's limit of {self.max_body_bytes} bytes")
                if self.buffered + len(chunk) > self.max_buffered_bytes:
                    raise GatewayError(503, "tokentrail: the gateway is holding too many request bodies: retry")
                self.buffered += len(chunk)
                held[0] += len(chunk)
                chunks.append(chunk)
            if not message.get("more_body"):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _caller(self, headers: dict[str, str], query: str, provider: str) -> tuple[ApiKey | None, str | None]:
        """The caller's tokentrail key (if any) and, when that key stands in the provider
        credential's place (a virtual key), the provider key the server sends instead."""
        credential = _credential(headers, query)[1]
        virtual = credential is not None and credential.startswith(PREFIX)
        token = credential if virtual else headers.get(KEY_HEADER)
        if not token:
            if self.keys.auth_required:
                raise GatewayError(401, "tokentrail: a key is required: send it in X-Tokentrail-Key")
            return None, None
        key = self.keys.lookup(token.strip())
        if key is None:
            raise GatewayError(401, "tokentrail: unknown or revoked tokentrail key")
        if not key.allows("proxy"):
            raise GatewayError(403, f"tokentrail: this key has the {key.role!r} role; the gateway needs 'proxy'")
        if not virtual:
            return key, None
        if key.provider != provider:
            # a provider key goes to its own provider only, never to another upstream
            bound = f"the {key.provider} upstream" if key.provider else "no provider: issue it again with --provider"
            raise GatewayError(403, f"tokentrail: this virtual key is bound to {bound}, not {provider}")
        env = key.provider_key_env
        secret = os.environ.get(env) if env else None
        if not secret:
            raise GatewayError(
                401,
                "tokentrail: this key holds no provider key on this server: send your own provider key and the "
                "tokentrail key in X-Tokentrail-Key",
            )
        return key, secret

    def _forward_headers(
        self,
        raw: list[tuple[bytes, bytes]],
        provider: str,
        key: ApiKey | None,
        credential: str | None,
        query: str,
        metered: Any,
    ) -> tuple[list[tuple[str, str]], str]:
        """The caller's headers minus hop-by-hop and tokentrail's own; a virtual key replaced by the
        provider key it stands for. Metered calls ask for an uncompressed response (to read it)."""
        out = []
        for k, v in raw:
            if k in _HOP or k.startswith(b"x-tokentrail-"):
                continue
            if credential is not None and k.decode("latin-1") in _CREDENTIAL_HEADERS:
                continue
            if metered is not None and k == b"accept-encoding":
                continue
            out.append((k.decode("latin-1"), v.decode("latin-1")))
        if metered is not None:
            out.append(("accept-encoding", "identity"))
        if credential is not None:
            # the provider key goes where the caller put the virtual key (a ?key= goes in a header)
            where = _credential({k.decode("latin-1"): "" for k, _ in raw}, "")[0] or "x-goog-api-key"
            out.append((where, f"Bearer {credential}" if where == "authorization" else credential))
            if query:
                query = urlencode([(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "key"])
        return out, query

    async def _begin(self, route: Any, path: str, body: bytes, attribution: Attribution) -> tuple[Exchange, bytes]:
        """The Exchange of a metered call, its budget reserved (or BudgetExceeded) without blocking
        the event loop, and the body to send upstream."""
        parsed = None
        if body[:1] in (b"{", b" ", b"\n", b"\r", b"\t"):
            try:
                parsed = json.loads(body)
            except ValueError:  # not JSON: relayed as it is, budgeted from its bytes
                parsed = None
            except RecursionError:  # no provider takes it either: refused before any budget or upstream
                raise GatewayError(400, "tokentrail: the request body nests JSON too deeply") from None
        try:
            exchange = Exchange(
                self.ledger, route, parsed, path=path, raw_body=body, attribution=attribution, reserve=False
            )
            await exchange.areserve()
            prepared = exchange.prepared_body()
        except BudgetThrottled as e:
            retry = max(1, int(-(-e.retry_after // 1)))
            raise GatewayError(429, str(e), [(b"retry-after", str(retry).encode())]) from None
        except LedgerUnavailable as e:
            raise GatewayError(503, str(e)) from None
        except BudgetExceeded as e:
            raise GatewayError(402, str(e), [(b"x-should-retry", b"false")]) from None
        if prepared is not None:
            body = json.dumps(prepared, separators=(",", ":"), ensure_ascii=False).encode()
        return exchange, body

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        provider: str,
        method: str,
        path: str,
        query: str,
        headers: list[tuple[str, str]],
        body: bytes,
        exchange: Exchange | None,
        t0: float,
        label: str,
    ) -> int:
        session = self.session
        assert session is not None, "Gateway.start() was not awaited"
        url = self.upstreams.urls[provider] + path + (f"?{query}" if query else "")
        overhead = time.perf_counter() - t0
        caller = Caller(receive)
        relay = Relay(session, caller, send, exchange, self.ledger, self.metrics, label, self.durable_timeout_s)
        try:
            try:
                resp = await relay.request(method, url, headers, body)
            except UpstreamFailed as e:
                # the exception's text may hold the URL (a Gemini ?key=): only its type is logged
                log.warning("tokentrail: the %s upstream %s (%s %s)", provider, e, method, path)
                raise GatewayError(504 if e.timeout else 502, f"tokentrail: the {provider} upstream {e}") from None
            except ClientGone:
                raise GatewayError(499, "client disconnected") from None
            t_headers = time.perf_counter()
            try:
                return await relay.relay(resp, overhead, t_headers)
            except UpstreamFailed as e:
                log.warning("tokentrail: the %s upstream %s (%s %s)", provider, e, method, path)
                raise GatewayError(502, f"tokentrail: the {provider} upstream {e}") from None
            except ClientGone:
                raise GatewayError(499, "client disconnected") from None
            finally:
                resp.release()
        finally:
            caller.close()


def _credential(headers: dict[str, str], query: str) -> tuple[str | None, str | None]:
    """Where the caller put its provider credential and what it is: a bearer token, x-api-key,
    x-goog-api-key, api-key, or a ?key= query parameter (name "key")."""
    auth = headers.get("authorization")
    if auth is not None:
        return "authorization", auth[7:].strip() if auth[:7].lower() == "bearer " else auth.strip()
    for name in _CREDENTIAL_HEADERS[1:]:
        value = headers.get(name)
        if value is not None:
            return name, value.strip()
    if "key=" in query:
        for k, v in parse_qsl(query):
            if k == "key":
                return None, v
    return None, None


def _attribution(headers: dict[str, str], key: ApiKey | None) -> Attribution:
    """Attribution from the X-Tokentrail-* headers, with the key's own attribution authoritative:
    a header that contradicts the key is refused (403), never silently obeyed."""
    fields: dict[str, str | None] = {}
    tags: dict[str, str] = {}
    for name, value in headers.items():
        if not name.startswith("x-tokentrail-"):
            continue
        attr = ATTRIBUTION_HEADERS.get(name)
        tagged = attr is not None or name.startswith(TAG_PREFIX)
        if tagged and (why := text_problem(value)) is not None:  # never stored: it would break reports
            raise GatewayError(400, f"tokentrail: the {name} header {why}")
        if attr is not None:
            fields[attr] = bound_text(value.strip()) or None
        elif name.startswith(TAG_PREFIX) and len(name) > len(TAG_PREFIX):
            tags[name[len(TAG_PREFIX) :]] = value.strip()
    if key is not None:
        for attr, value in key.attribution.items():
            given = fields.get(attr)
            if given is not None and given != value:
                raise GatewayError(403, f"tokentrail: this key is for {attr}={value}, not {attr}={given}")
            fields[attr] = value
    if not fields and not tags:
        return _EMPTY
    return Attribution(**fields, tags=bound_tags(tags))  # type: ignore[arg-type]


_EMPTY = Attribution()


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    if status == 499:
        return  # the client is gone: nobody to answer
    out = [*_JSON, (b"content-length", str(len(body)).encode()), *(headers or [])]
    try:
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": body})
    except Exception:
        pass  # the response had already started (a failure mid-stream): nothing more to say
