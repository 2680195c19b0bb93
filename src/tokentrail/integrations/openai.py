"""The openai SDK: every HTTP attempt of OpenAI / AsyncOpenAI (and Azure) clients is metered."""

from __future__ import annotations

import logging
import types
from collections.abc import Callable
from typing import Any

from tokentrail.exceptions import BudgetExceeded
from tokentrail.integrations._httpx import attach, begin, failed, metering, rebuilt_request
from tokentrail.integrations._patch import Patch, patch
from tokentrail.integrations.exchange import Exchange
from tokentrail.integrations.wire import route_for

SendFn = Callable[..., Any]
log = logging.getLogger("tokentrail")


def _start(ledger: Any, request: Any, *, ask_for_usage: bool = True) -> tuple[Exchange | None, Any]:
    """The Exchange metering this request (None: not billable, already metered, or metering failed)
    and the request to send (chat streams are rebuilt to ask for usage)."""
    if metering.get():
        return None, request
    try:
        route = route_for(request.method, request.url.path)
        if route is None:
            return None, request
        ex = begin(ledger, route, request.url.path, None, request.content)
        if ex is not None and ask_for_usage:
            new_body = ex.prepared_body()
            if new_body is not None:
                try:
                    request = rebuilt_request(request, new_body)
                except Exception:  # send the caller's request as it was; usage may then be missing
                    ex.hide_usage_chunk = False
                    log.exception("tokentrail: could not ask for stream usage")
        return ex, request
    except BudgetExceeded:
        raise
    except Exception:
        log.exception("tokentrail: could not meter a request")
        return None, request


def _refused(body: bytes | None) -> bool:
    """A server that does not know stream_options (an old Azure API version, some compatible
    servers) refused the request we changed: 400 naming it."""
    return body is not None and b"stream_options" in body


def _metered_sync(original: SendFn, ledger: Any = None) -> SendFn:
    def attempt(self: Any, ex: Exchange, request: Any, stream: bool, kwargs: Any) -> Any:
        token = metering.set(True)
        try:
            return original(self, request, stream=stream, **kwargs)
        except BaseException as e:
            failed(ex, e)
            raise
        finally:
            metering.reset(token)

    def _send_request(self: Any, request: Any, *, stream: bool, **kwargs: Any) -> Any:
        ex, sent = _start(ledger, request)
        if ex is None:
            return original(self, request, stream=stream, **kwargs)
        response = attempt(self, ex, sent, stream, kwargs)
        if sent is not request and _refused(_error_body(response)):
            # never let our stream_options break the call: send the caller's request as it was
            response.close()
            ex, _ = _start(ledger, request, ask_for_usage=False)
            if ex is None:
                return original(self, request, stream=stream, **kwargs)
            response = attempt(self, ex, request, stream, kwargs)
        attach(ex, response, is_async=False)
        return response

    return _send_request


def _metered_async(original: SendFn, ledger: Any = None) -> SendFn:
    async def attempt(self: Any, ex: Exchange, request: Any, stream: bool, kwargs: Any) -> Any:
        token = metering.set(True)
        try:
            return await original(self, request, stream=stream, **kwargs)
        except BaseException as e:
            failed(ex, e)
            raise
        finally:
            metering.reset(token)

    async def _send_request(self: Any, request: Any, *, stream: bool, **kwargs: Any) -> Any:
        ex, sent = _start(ledger, request)
        if ex is None:
            return await original(self, request, stream=stream, **kwargs)
        response = await attempt(self, ex, sent, stream, kwargs)
        if sent is not request and _refused(await _aerror_body(response)):
            await response.aclose()
            ex, _ = _start(ledger, request, ask_for_usage=False)
            if ex is None:
                return await original(self, request, stream=stream, **kwargs)
            response = await attempt(self, ex, request, stream, kwargs)
        attach(ex, response, is_async=True)
        return response

    return _send_request


def _error_body(response: Any) -> bytes | None:
    """The body of a 400 (small; the SDK reads it anyway), else None."""
    try:
        return response.read() if response.status_code == 400 else None
    except Exception:
        return None


async def _aerror_body(response: Any) -> bytes | None:
    try:
        return await response.aread() if response.status_code == 400 else None
    except Exception:
        return None


def instrument() -> list[Patch]:
    from openai import _base_client

    patches = [
        patch(_base_client.SyncAPIClient, "_send_request", _metered_sync),
        patch(_base_client.AsyncAPIClient, "_send_request", _metered_async),
    ]
    return [p for p in patches if p is not None]


def wrap(client: Any, ledger: Any = None) -> Any:
    from openai import _base_client

    if client.__dict__.get("_tokentrail_wrapped"):
        return client

    def via_class(self: Any, *args: Any, **kwargs: Any) -> Any:
        return type(self)._send_request(self, *args, **kwargs)

    is_async = isinstance(client, _base_client.AsyncAPIClient)
    metered = _metered_async(via_class, ledger) if is_async else _metered_sync(via_class, ledger)
    client._send_request = types.MethodType(metered, client)
    _wrap_copies(client, ledger)
    client._tokentrail_wrapped = True
    return client


def _wrap_copies(client: Any, ledger: Any) -> None:
    """client.with_options(...) / copy(...) make new clients; they stay wrapped."""
    copy = client.copy

    def copy_wrapped(*args: Any, **kwargs: Any) -> Any:
        return wrap(copy(*args, **kwargs), ledger)

    client.copy = copy_wrapped
    client.with_options = copy_wrapped
