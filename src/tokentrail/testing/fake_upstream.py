"""A local HTTP server that impersonates the OpenAI, Anthropic and Gemini APIs.

The real, unmodified SDKs talk to it over HTTP and parse every reply, streamed or not::

    from tokentrail.testing import FakeUpstream, Reply, ToolCall

    with FakeUpstream() as up:
        up.push(Reply(text="hi", input_tokens=120, cached_tokens=100, output_tokens=7))
        client = openai.OpenAI(base_url=up.openai_base_url, api_key="sk-test")
        client.chat.completions.create(model="gpt-4o-mini", messages=[...])
        up.requests[-1].json["messages"]

Each model request takes the reply of ``responder`` if it returns one, else the next
pushed reply, else ``default``. Token counts on a :class:`Reply` are in tokentrail's
inclusive convention and are converted to each provider's wire convention.

Routes: ``POST /v1/chat/completions``, ``/v1/responses``, ``/v1/embeddings``,
``/v1/messages`` (``?beta=true`` too), ``/{v1,v1beta,v1alpha}/models/{model}:generateContent``
and ``:streamGenerateContent``. Anything else answers 404 in OpenAI's error format and
does not consume a reply.

The server is an aiohttp low-level server running its own event loop in a daemon
thread, bound to 127.0.0.1 on an ephemeral port, with keep-alive and no access log.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import re
import socket
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web

from tokentrail.testing import _fake_anthropic as fake_anthropic
from tokentrail.testing import _fake_gemini as fake_gemini
from tokentrail.testing import _fake_openai as fake_openai
from tokentrail.testing import _fake_wire as wire

__all__ = ["FakeUpstream", "ReceivedRequest", "Reply", "ToolCall"]

_SECRET_HEADERS = frozenset({"authorization", "x-api-key", "x-goog-api-key", "api-key", "proxy-authorization"})
_SECRET_QUERY = frozenset({"key", "api_key", "api-key"})
_GEMINI_PATH = re.compile(
    r"/(v1|v1beta|v1alpha)/((?:models|tunedModels)/([^/:]+)):(generateContent|streamGenerateContent)"
)
_OPENAI_PATHS = {"/v1/chat/completions": "chat", "/v1/responses": "responses", "/v1/embeddings": "embeddings"}
_SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
_JSON = "application/json"


@dataclass
class ToolCall:
    """A tool (function) call the fake model asks for."""

    name: str
    arguments: dict[str, Any]
    id: str | None = None
    """Generated per server when None: ``call_<n>`` (OpenAI), ``toolu_<n>`` (Anthropic); Gemini sends none."""


@dataclass
class Reply:
    """One scripted model reply. Token counts use tokentrail's inclusive convention."""

    text: str = "Hello from FakeUpstream."
    input_tokens: int | None = None
    """Includes cache reads and writes. None: UTF-8 bytes of the message text // 4 + 8 per message
    (at least 1), plus the cache reads and writes; see ``_fake_wire.estimate_input_tokens``."""
    output_tokens: int | None = None
    """Includes reasoning. None: words in ``text`` + 10 per tool call (at least 1) + ``reasoning_tokens``."""
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    tool_calls: list[ToolCall] = field(default_factory=list)
    model: str | None = None
    """None: echo the request's model."""
    status: int = 200
    """>= 400: an error body in the provider's own format."""
    error_message: str = "Scripted error from FakeUpstream."
    headers: dict[str, str] = field(default_factory=dict)
    """Extra response headers. For instant SDK retries send ``{"retry-after-ms": "1"}``: openai and
    anthropic ignore ``retry-after: 0`` and fall back to their 0.5 s exponential backoff."""
    delay_s: float = 0.0
    """Sleep before the response starts."""
    chunk_delay_s: float = 0.0
    """Sleep between SSE events when streaming."""
    stream_chunks: int = 3
    """The text is split into about this many content deltas when streaming."""
    cut_stream_after: int | None = None
    """When streaming: close the connection abruptly after this many SSE events."""
    raw_usage: dict[str, Any] | None = None
    """Sent verbatim as the provider's usage object (for impossible-usage tests)."""
    raw_body: bytes | None = None
    """Sent verbatim as the whole body (with ``status``, as ``raw_content_type``) instead of the
    provider's reply: a proxy's HTML page, a truncated body."""
    raw_content_type: str = "text/html"


@dataclass(frozen=True, slots=True, repr=False)
class ReceivedRequest:
    """One request as the fake received it. ``repr`` hides credentials; the fields do not."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    """Lower-cased names; the last value wins for repeated headers."""
    json: Any
    """The decoded JSON body, or None when the body is empty or not JSON."""
    body: bytes
    provider: str | None = None
    """``openai``, ``anthropic``, ``gemini``, or None for an unknown route."""
    model: str | None = None
    stream: bool = False

    def __repr__(self) -> str:
        headers = {k: ("<redacted>" if k in _SECRET_HEADERS else v) for k, v in self.headers.items()}
        query = {k: ("<redacted>" if k in _SECRET_QUERY else v) for k, v in self.query.items()}
        return (
            f"ReceivedRequest(method={self.method!r}, path={self.path!r}, query={query!r}, "
            f"headers={headers!r}, provider={self.provider!r}, model={self.model!r}, stream={self.stream!r}, "
            f"json={self.json!r})"
        )


Responder = Callable[[ReceivedRequest], Reply | Awaitable[Reply | None] | None]


@dataclass(slots=True)
class _Route:
    provider: str
    kind: str  # chat | responses | embeddings | messages | gemini
    model: str | None
    stream: bool


class FakeUpstream:
    """Fake OpenAI / Anthropic / Gemini HTTP server for tests, demos and benchmarks.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. ``requests``,
    ``push``, ``default`` and ``responder`` may be used from any thread; a responder
    runs on the server's event loop and must not block.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, record_requests: bool = True) -> None:
        self.host = host
        self.port = port
        self.record_requests = record_requests
        """When False, ``requests`` stays empty (long benchmarks)."""
        self.default: Reply = Reply()
        self.responder: Responder | None = None
        self.requests: list[ReceivedRequest] = []
        self.disconnects: list[ReceivedRequest] = []
        """Requests whose client hung up before their reply was complete (seen while waiting
        ``delay_s`` or writing a stream)."""
        self._queue: deque[Reply] = deque()
        self._counter = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.ServerRunner | None = None
        self._stopping: asyncio.Event | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakeUpstream:
        """Start serving in a daemon thread; returns once the port is bound."""
        if self._thread is not None:
            return self
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        loop = asyncio.new_event_loop()
        started = threading.Event()
        errors: list[BaseException] = []
        thread = threading.Thread(
            target=self._serve,
            args=(loop, sock, started, errors),
            name=f"FakeUpstream:{self.port}",
            daemon=True,
        )
        self._loop, self._thread = loop, thread
        thread.start()
        started.wait()
        if errors:
            thread.join()
            self._loop = self._thread = None
            raise errors[0]
        return self

    def stop(self) -> None:
        """Stop the server, close its connections and join its thread (idempotent)."""
        loop, thread, stopping = self._loop, self._thread, self._stopping
        if loop is None or thread is None:
            return
        if stopping is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stopping.set)
        thread.join()
        self._loop = self._thread = self._stopping = None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _serve(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        started: threading.Event,
        errors: list[BaseException],
    ) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._run(sock, started, errors))
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                asyncio.set_event_loop(None)
                loop.close()
                started.set()

    async def _run(self, sock: socket.socket, started: threading.Event, errors: list[BaseException]) -> None:
        self._stopping = asyncio.Event()
        server = web.Server(self._handle, access_log=None)
        runner = web.ServerRunner(server, shutdown_timeout=0.25)
        try:
            await runner.setup()
            await web.SockSite(runner, sock, backlog=1024).start()
        except BaseException as exc:
            errors.append(exc)
            sock.close()
            await runner.cleanup()
            started.set()
            return
        started.set()
        try:
            await self._stopping.wait()
        finally:
            await runner.cleanup()

    # ------------------------------------------------------------------ public API

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        if self._thread is None:
            raise RuntimeError("FakeUpstream is not running; call start() or use it as a context manager")
        return f"http://{self.host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return self.url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    @property
    def gemini_base_url(self) -> str:
        return self.url

    def push(self, *replies: Reply) -> None:
        """Queue replies; each model request takes the oldest one."""
        self._queue.extend(replies)

    def reset(self) -> None:
        """Forget queued replies, received requests and disconnects; restore the default reply and
        drop the responder."""
        self._queue.clear()
        self.requests.clear()
        self.disconnects.clear()
        self.default = Reply()
        self.responder = None

    # ------------------------------------------------------------------ request handling

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._counter)}"

    async def _pick_reply(self, request: ReceivedRequest) -> Reply:
        responder = self.responder
        if responder is not None:
            chosen = responder(request)
            if inspect.isawaitable(chosen):
                chosen = await chosen
            if chosen is not None:
                return chosen
        try:
            return self._queue.popleft()
        except IndexError:
            return self.default

    async def _handle(self, http: web.BaseRequest) -> web.StreamResponse:
        raw = await http.content.read()
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = None
        route = _route(http.method, http.path, payload)
        received = ReceivedRequest(
            method=http.method,
            path=http.path,
            query=dict(http.query),
            headers={k.lower(): v for k, v in http.headers.items()},
            json=payload,
            body=raw,
            provider=route.provider if route else None,
            model=route.model if route else None,
            stream=route.stream if route else False,
        )
        if self.record_requests:
            self.requests.append(received)
        if route is None:
            message = f"Invalid URL ({http.method} {http.path})"
            return self._error("openai", 404, message, {}, with_code=False)
        if not isinstance(payload, dict):
            message = "We could not parse the JSON body of your request."
            return self._error(route.provider, 400, message, {})

        reply = await self._pick_reply(received)
        if reply.delay_s > 0 and await self._client_left(http, reply.delay_s):
            self.disconnects.append(received)
            return web.Response(status=499)  # nobody is left to read it
        if reply.status >= 400:
            return self._error(route.provider, reply.status, reply.error_message, reply.headers)
        model = reply.model or route.model or "unknown"
        usage = wire.resolve_usage(reply, wire.estimate_input_tokens(route.kind, payload))
        headers = self._headers(route.provider, reply.headers)
        if reply.raw_body is not None:
            return web.Response(
                body=reply.raw_body, status=reply.status, headers=headers, content_type=reply.raw_content_type
            )
        new_id = self._new_id

        if route.kind == "chat":
            if route.stream:
                include_usage = (payload.get("stream_options") or {}).get("include_usage") is True
                frames = fake_openai.openai_chat_sse(reply, usage, model, new_id, include_usage)
                return await self._stream(http, frames, reply, headers, received)
            return self._json(fake_openai.openai_chat(reply, usage, model, new_id), reply.status, headers)
        if route.kind == "responses":
            if route.stream:
                frames = fake_openai.openai_response_sse(reply, usage, model, new_id, payload)
                return await self._stream(http, frames, reply, headers, received)
            return self._json(fake_openai.openai_response(reply, usage, model, new_id, payload), reply.status, headers)
        if route.kind == "embeddings":
            return self._json(fake_openai.openai_embeddings(reply, usage, model, payload), reply.status, headers)
        if route.kind == "messages":
            if route.stream:
                frames = fake_anthropic.anthropic_sse(reply, usage, model, new_id)
                return await self._stream(http, frames, reply, headers, received)
            return self._json(fake_anthropic.anthropic_message(reply, usage, model, new_id), reply.status, headers)
        if route.stream:
            return await self._stream(
                http, fake_gemini.gemini_sse(reply, usage, model, new_id), reply, headers, received
            )
        return self._json(fake_gemini.gemini_response(reply, usage, model, new_id), reply.status, headers)

    @staticmethod
    async def _client_left(http: web.BaseRequest, seconds: float) -> bool:
        """Wait `seconds`; True as soon as the client hangs up (checked every 10 ms)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while True:
            transport = http.transport
            if transport is None or transport.is_closing():
                return True
            left = end - loop.time()
            if left <= 0:
                return False
            await asyncio.sleep(min(0.01, left))

    def _headers(self, provider: str, extra: dict[str, str]) -> dict[str, str]:
        request_id = self._new_id("req_fake")
        headers = {"request-id": request_id} if provider == "anthropic" else {"x-request-id": request_id}
        headers.update(extra)
        return headers

    def _json(self, body: bytes, status: int, headers: dict[str, str]) -> web.Response:
        return web.Response(body=body, status=status, headers=headers, content_type=_JSON)

    def _error(
        self, provider: str, status: int, message: str, extra: dict[str, str], with_code: bool = True
    ) -> web.Response:
        headers = self._headers(provider, extra)
        if provider == "anthropic":
            body = fake_anthropic.anthropic_error(status, message, headers.get("request-id", ""))
        elif provider == "gemini":
            body = fake_gemini.gemini_error(status, message)
        else:
            body = fake_openai.openai_error(status, message, with_code=with_code)
        return self._json(body, status, headers)

    async def _stream(
        self,
        http: web.BaseRequest,
        frames: list[bytes],
        reply: Reply,
        headers: dict[str, str],
        received: ReceivedRequest,
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=reply.status, headers={**_SSE_HEADERS, **headers})
        cut = reply.cut_stream_after
        try:
            await response.prepare(http)
            if cut is None and reply.chunk_delay_s <= 0:
                await response.write(b"".join(frames))
            else:
                for index, frame in enumerate(frames):
                    if cut is not None and index >= cut:
                        if http.transport is not None:
                            http.transport.close()  # flushes what was written, then no terminating chunk
                        return response
                    if index and reply.chunk_delay_s > 0:
                        await asyncio.sleep(reply.chunk_delay_s)
                    await response.write(frame)
        except ConnectionError:
            self.disconnects.append(received)  # the client went away mid-stream
        return response


def _route(method: str, path: str, payload: Any) -> _Route | None:
    if method != "POST":
        return None
    body = payload if isinstance(payload, dict) else {}
    model = body.get("model") if isinstance(body.get("model"), str) else None
    kind = _OPENAI_PATHS.get(path)
    if kind is not None:
        return _Route("openai", kind, model, kind != "embeddings" and body.get("stream") is True)
    if path == "/v1/messages":
        return _Route("anthropic", "messages", model, body.get("stream") is True)
    match = _GEMINI_PATH.fullmatch(path)
    if match is not None:
        return _Route("gemini", "gemini", match.group(3), match.group(4) == "streamGenerateContent")
    return None
