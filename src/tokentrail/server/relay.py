"""The gateway's response half: the upstream call, watched for the caller hanging up, and its
answer relayed back (whole, or chunk by chunk) while the Exchange meters it.

Three rules hold however a call ends:
- a caller who hangs up stops the upstream call at once (before its headers: the request is
  cancelled; during the body: the connection is closed, and the provider stops generating);
- an upstream that fails part-way fails the caller's response too (the connection is closed
  without the end of the body), never a clean end of a truncated answer;
- the end of a metered response (a body, or a stream from the event that completes it) leaves
  only once the call's event is durable (committed, or fsynced to the spool), so a caller who got
  a whole answer never finds it unrecorded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import aiohttp

from tokentrail.exceptions import TokentrailError
from tokentrail.integrations.exchange import Exchange
from tokentrail.server.metrics import Metrics

log = logging.getLogger("tokentrail")

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

HOP_HEADERS = frozenset(
    (b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te", b"trailer", b"trailers")
).union((b"transfer-encoding", b"upgrade", b"content-length", b"host"))


_MAX_HELD = 1 << 20


class ClientGone(TokentrailError):
    """The caller hung up before the response started."""


class UpstreamFailed(TokentrailError):
    """The upstream call failed before its response started (`timeout`: it timed out)."""

    def __init__(self, timeout: bool, what: str) -> None:
        super().__init__(what)
        self.timeout = timeout


class Caller:
    """Watches the caller's connection once its request body is read: `gone` is set when it hangs
    up, and `on_gone` (cancel the upstream request, or close its response) runs at once."""

    def __init__(self, receive: Receive) -> None:
        self.gone = asyncio.Event()
        self.on_gone: Callable[[], Any] | None = None
        self._task = asyncio.ensure_future(self._watch(receive))

    async def _watch(self, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.gone.set()
                if self.on_gone is not None:
                    self.on_gone()
                return

    def close(self) -> None:
        self._task.cancel()


class Relay:
    """One call's upstream request and response (see the module docstring)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        caller: Caller,
        send: Send,
        exchange: Exchange | None,
        ledger: Any,
        metrics: Metrics,
        label: str,
        durable_timeout_s: float,
    ) -> None:
        self.session = session
        self.caller = caller
        self.send = send
        self.exchange = exchange
        self.ledger = ledger
        self.metrics = metrics
        self.label = label
        self.durable_timeout_s = durable_timeout_s

    async def request(self, method: str, url: str, headers: list[tuple[str, str]], body: bytes) -> Any:
        """The upstream response (its headers), or ClientGone / UpstreamFailed."""
        ex = self.exchange
        task = asyncio.ensure_future(
            self.session.request(method, url, headers=headers, data=body or None, allow_redirects=False)
        )
        self.caller.on_gone = task.cancel
        if self.caller.gone.is_set():
            task.cancel()
        try:
            await asyncio.wait((task,))
        except asyncio.CancelledError:  # the server is stopping this request
            task.cancel()
            if task.done() and not task.cancelled() and task.exception() is None:
                task.result().close()  # the answer came just then: nobody reads it
            if ex is not None:
                ex.finish(cancelled=True)
            raise
        if task.cancelled():
            if ex is not None:
                ex.finish(cancelled=True)
            raise ClientGone
        error = task.exception()
        if error is not None:
            if ex is not None:
                ex.finish(error=error)
            timeout = isinstance(error, asyncio.TimeoutError)
            raise UpstreamFailed(timeout, "timed out" if timeout else f"failed: {type(error).__name__}")
        resp = task.result()
        self.caller.on_gone = resp.close
        if self.caller.gone.is_set():
            resp.close()
        return resp

    async def relay(self, resp: aiohttp.ClientResponse, overhead: float, t_headers: float) -> int:
        ex = self.exchange
        ctype = resp.headers.get("content-type")
        sse = ctype is not None and "text/event-stream" in ctype
        status = resp.status
        if ex is not None:
            ex.response(status, ctype)
        filtering = ex is not None and sse and ex.hide_usage_chunk
        # uvicorn adds its own Date: the upstream's would make two
        out_headers = [(k, v) for k, v in resp.raw_headers if k.lower() not in HOP_HEADERS and k.lower() != b"date"]
        length = resp.headers.get("content-length")
        if length is not None and not filtering:
            out_headers.append((b"content-length", length.encode()))
        if not sse and length is not None:
            # a whole body: read it, meter it, record it durably, then send it in one piece
            try:
                raw = await resp.read()
            except BaseException as e:
                if self.caller.gone.is_set() and not isinstance(e, asyncio.CancelledError):
                    _end(ex, cancelled=True)
                    raise ClientGone from None
                _end(ex, error=e)
                if isinstance(e, Exception):
                    raise UpstreamFailed(False, f"failed mid-response: {type(e).__name__}") from None
                raise
            if ex is not None:
                ex.body_bytes(raw)
                await self._durable()
            await self.send({"type": "http.response.start", "status": status, "headers": out_headers})
            self.metrics.overhead.labels(self.label).observe(overhead + time.perf_counter() - t_headers)
            await self.send({"type": "http.response.body", "body": raw})
            return status
        await self.send({"type": "http.response.start", "status": status, "headers": out_headers})
        self.metrics.overhead.labels(self.label).observe(overhead + time.perf_counter() - t_headers)
        await self._stream(resp)
        return status

    async def _stream(self, resp: aiohttp.ClientResponse) -> None:
        """Pass a streamed body through chunk by chunk. A caller who goes away mid-stream closes the
        upstream connection (the provider stops generating) and the call is recorded cancelled."""
        ex, gone, send = self.exchange, self.caller.gone, self.send
        held = b""  # the end of the answer: it leaves once the call's event is durable
        try:
            async for raw in resp.content.iter_any():
                if gone.is_set():
                    break
                out = ex.chunk(raw) if ex is not None else raw
                # An SDK stops reading at the last event (OpenAI's [DONE]): the bytes from the one
                # that completes the answer on wait for the event (bounded, for an upstream that
                # would keep talking after it).
                if ex is not None and (held or ex.acc.complete) and len(held) < _MAX_HELD:
                    held += out
                    continue
                if out:
                    await send({"type": "http.response.body", "body": out, "more_body": True})
            if gone.is_set():
                _end(ex, cancelled=True)
                return
            tail = ex.stream_tail() if ex is not None else b""
        except asyncio.CancelledError:
            _end(ex, cancelled=True)
            raise
        except Exception as e:
            if gone.is_set():
                _end(ex, cancelled=True)
                return
            _end(ex, error=e)
            log.warning("tokentrail: an upstream stream failed: %s", type(e).__name__)
            # The status line is gone already: return without the end of the body, so the server
            # closes the connection and the caller sees a cut stream, as it would from the provider.
            return
        await self._durable()
        await send({"type": "http.response.body", "body": held + tail, "more_body": False})

    async def _durable(self) -> None:
        """Record the call (once) and wait until its event is durable, bounded: a store and a spool
        that both refuse it keep it in memory, retrying, and the caller still gets its answer."""
        ex = self.exchange
        if ex is None:
            return
        ex.finish()
        try:
            ok = await self.ledger.adurable(self.durable_timeout_s)
        except Exception:
            log.exception("tokentrail: waiting for a call's event to be durable failed")
            return
        if not ok:
            log.warning(
                "tokentrail: a call's event is not durable after %gs (the ledger cannot write); answering anyway",
                self.durable_timeout_s,
            )


def _end(exchange: Exchange | None, *, error: BaseException | None = None, cancelled: bool = False) -> None:
    if exchange is None:
        return
    if isinstance(error, asyncio.CancelledError):
        exchange.finish(cancelled=True)
    else:
        exchange.finish(error=error, cancelled=cancelled)
