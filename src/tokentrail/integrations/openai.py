"""The openai SDK: every HTTP attempt of OpenAI / AsyncOpenAI (and Azure) clients is metered."""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

from tokentrail.integrations._httpx import attach, begin, failed, metering, rebuilt_request
from tokentrail.integrations._patch import Patch, patch
from tokentrail.integrations._wire import route_for

SendFn = Callable[..., Any]


def _metered_sync(original: SendFn, ledger: Any = None) -> SendFn:
    def _send_request(self: Any, request: Any, *, stream: bool, **kwargs: Any) -> Any:
        route = route_for(request.method, request.url.path)
        if route is None or metering.get():
            return original(self, request, stream=stream, **kwargs)
        from tokentrail.ledger import resolve_ledger

        ex = begin(resolve_ledger(ledger), route, request.url.path, None, request.content)
        if ex is None:
            return original(self, request, stream=stream, **kwargs)
        new_body = ex.prepared_body()
        if new_body is not None:
            request = rebuilt_request(request, new_body)
        token = metering.set(True)
        try:
            response = original(self, request, stream=stream, **kwargs)
        except BaseException as e:
            failed(ex, e)
            raise
        finally:
            metering.reset(token)
        attach(ex, response)
        return response

    return _send_request


def _metered_async(original: SendFn, ledger: Any = None) -> SendFn:
    async def _send_request(self: Any, request: Any, *, stream: bool, **kwargs: Any) -> Any:
        route = route_for(request.method, request.url.path)
        if route is None or metering.get():
            return await original(self, request, stream=stream, **kwargs)
        from tokentrail.ledger import resolve_ledger

        ex = begin(resolve_ledger(ledger), route, request.url.path, None, request.content)
        if ex is None:
            return await original(self, request, stream=stream, **kwargs)
        new_body = ex.prepared_body()
        if new_body is not None:
            request = rebuilt_request(request, new_body)
        token = metering.set(True)
        try:
            response = await original(self, request, stream=stream, **kwargs)
        except BaseException as e:
            failed(ex, e)
            raise
        finally:
            metering.reset(token)
        attach(ex, response)
        return response

    return _send_request


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
