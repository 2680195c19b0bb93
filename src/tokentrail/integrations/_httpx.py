"""Metering at the HTTP layer of the openai and anthropic SDKs (httpx2, or a legacy httpx client).

Every billable entry point of those SDKs (create, parse, stream, with_raw_response,
with_streaming_response, sync and async) ends in one HTTP attempt; metering there covers
them all, sees each retry as the separate attempt it is, and reads usage from the same
bytes the SDK parses.
"""

from __future__ import annotations

import contextvars
import json
import logging
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

from tokentrail.exceptions import BudgetExceeded, DefaultLedgerUnavailable
from tokentrail.integrations.exchange import Exchange
from tokentrail.integrations.wire import Route

if TYPE_CHECKING:
    from tokentrail.ledger import Ledger

log = logging.getLogger("tokentrail")

# Set while one layer meters a request, so a second layer (wrap() on an instrumented client) passes it through.
metering: contextvars.ContextVar[bool] = contextvars.ContextVar("tokentrail_metering", default=False)


def begin(ledger: Ledger | None, route: Route, path: str, body: Any, raw: bytes | None) -> Exchange | None:
    """An Exchange for a billable request, or None if metering it failed. Never raises except
    BudgetExceeded (a budget refused the call before it was sent). `ledger` None: the session's or
    the default one, resolved here so that a default ledger that cannot open never fails the call."""
    try:
        from tokentrail.default_ledger import resolve_ledger

        ledger = resolve_ledger(ledger)
        if body is None and raw:
            try:
                body = json.loads(raw)
            except (ValueError, RecursionError):  # too deep for json: the budget estimate reads its bytes
                body = None
        if raw is None and isinstance(body, dict):
            try:
                raw = json.dumps(body, sort_keys=True, default=str).encode()
            except RecursionError:  # nested too deep to hash: metered (and budgeted) all the same
                raw = None
        return Exchange(ledger, route, body, path=path, raw_body=raw)
    except BudgetExceeded:
        raise
    except DefaultLedgerUnavailable:
        return None  # logged once when it failed to open; counted in tt.ledger_status()
    except Exception:
        log.exception("tokentrail: could not meter a request to %s", path)
        return None


def rebuilt_request(request: Any, body: dict[str, Any]) -> Any:
    """The same request with a new JSON body (and no compression, so the stream can be filtered)."""
    content = json.dumps(body, separators=(",", ":")).encode()
    headers = request.headers.copy()
    headers["content-length"] = str(len(content))
    headers["accept-encoding"] = "identity"
    return type(request)(request.method, request.url, headers=headers, content=content, extensions=request.extensions)


def _decoder(encoding: str) -> Callable[[bytes], bytes] | None:
    """A decoder for a compressed stream we only read (the caller still gets the raw bytes)."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "deflate"):
        d = zlib.decompressobj(zlib.MAX_WBITS | 32)  # auto-detects gzip and zlib headers
        broken = False

        def decode(chunk: bytes) -> bytes:
            nonlocal broken
            if broken:
                return b""
            try:
                return d.decompress(chunk)
            except zlib.error:  # corrupt for us is the SDK's problem to report, not ours to raise
                broken = True
                return b""

        return decode
    return lambda _chunk: b""  # br/zstd: not read; the event records missing usage, never a guess


def attach(exchange: Exchange, response: Any, *, is_async: bool) -> None:
    """Meter a response: read its body now if it is already read, else wrap its byte stream
    (an async one for an async client: some streams, like httpx's ByteStream, are both)."""
    try:
        exchange.response(response.status_code, response.headers.get("content-type"))
        if response.is_closed:
            exchange.body_bytes(response.content)
            exchange.finish()
            return
        decode = _decoder(response.headers.get("content-encoding", ""))
        base = _stream_bases(response)
        if is_async:
            response.stream = _async_stream_class(base[1])(response.stream, exchange, decode)
        else:
            response.stream = _sync_stream_class(base[0])(response.stream, exchange, decode)
    except Exception:
        log.exception("tokentrail: could not meter a response")
        exchange.finish(error="metering_failed")


def _stream_bases(response: Any) -> tuple[type, type]:
    """SyncByteStream / AsyncByteStream of the HTTP library the response comes from."""
    import importlib

    module = importlib.import_module(type(response).__module__.split(".")[0])
    return module.SyncByteStream, module.AsyncByteStream


_classes: dict[tuple[str, type], type] = {}


def _sync_stream_class(base: type) -> type:
    cls = _classes.get(("sync", base))
    if cls is None:
        cls = _classes[("sync", base)] = type("MeteredSyncStream", (_SyncStream, base), {})
    return cls


def _async_stream_class(base: type) -> type:
    cls = _classes.get(("async", base))
    if cls is None:
        cls = _classes[("async", base)] = type("MeteredAsyncStream", (_AsyncStream, base), {})
    return cls


class _SyncStream:
    def __init__(self, inner: Any, exchange: Exchange, decode: Callable[[bytes], bytes] | None) -> None:
        self._inner = inner
        self._ex = exchange
        self._decode = decode

    def __iter__(self) -> Iterator[bytes]:
        ex, decode = self._ex, self._decode
        try:
            for raw in self._inner:
                if decode is None:
                    out = ex.chunk(raw)
                    if out:
                        yield out
                else:
                    ex.chunk(decode(raw))
                    yield raw
            tail = ex.stream_tail()
            if tail:
                yield tail
        except GeneratorExit:
            raise
        except BaseException as e:
            ex.finish(error=e)
            raise
        ex.finish()

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            self._ex.finish(cancelled=True)

    def __del__(self) -> None:  # an abandoned stream is still recorded
        self._ex.finish(cancelled=True)


class _AsyncStream:
    def __init__(self, inner: Any, exchange: Exchange, decode: Callable[[bytes], bytes] | None) -> None:
        self._inner = inner
        self._ex = exchange
        self._decode = decode

    async def __aiter__(self) -> AsyncIterator[bytes]:
        ex, decode = self._ex, self._decode
        try:
            async for raw in self._inner:
                if decode is None:
                    out = ex.chunk(raw)
                    if out:
                        yield out
                else:
                    ex.chunk(decode(raw))
                    yield raw
            tail = ex.stream_tail()
            if tail:
                yield tail
        except GeneratorExit:
            raise
        except BaseException as e:  # CancelledError included: the task was cancelled mid-stream
            import asyncio

            if isinstance(e, asyncio.CancelledError):
                ex.finish(cancelled=True)
            else:
                ex.finish(error=e)
            raise
        ex.finish()

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            self._ex.finish(cancelled=True)

    def __del__(self) -> None:
        self._ex.finish(cancelled=True)


def failed(exchange: Exchange, error: BaseException) -> None:
    """The request never got a response (timeout, connection error, cancellation)."""
    import asyncio

    if isinstance(error, asyncio.CancelledError):
        exchange.finish(cancelled=True)
    else:
        exchange.finish(error=error)
