"""The anthropic SDK: every HTTP attempt of Anthropic / AsyncAnthropic clients is metered."""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

from tokentrail.integrations._httpx import attach, begin, failed, metering
from tokentrail.integrations._patch import Patch, patch
from tokentrail.integrations.exchange import Exchange
from tokentrail.integrations.wire import route_for

AttemptFn = Callable[..., Any]


def _start(ledger: Any, options: Any) -> Exchange | None:
    if metering.get():
        return None
    try:
        route = route_for(options.method, options.url)
    except Exception:
        return None
    return None if route is None else begin(ledger, route, options.url, options.json_data, None)


def _metered_sync(original: AttemptFn, ledger: Any = None) -> AttemptFn:
    def _attempt_request(self: Any, options: Any, *args: Any, **kwargs: Any) -> Any:
        ex = _start(ledger, options)
        if ex is None:
            return original(self, options, *args, **kwargs)
        token = metering.set(True)
        try:
            result = original(self, options, *args, **kwargs)
        except BaseException as e:
            failed(ex, e)
            raise
        finally:
            metering.reset(token)
        attach(ex, result[0] if isinstance(result, tuple) else result, is_async=False)  # (response, prepared options)
        return result

    return _attempt_request


def _metered_async(original: AttemptFn, ledger: Any = None) -> AttemptFn:
    async def _attempt_request(self: Any, options: Any, *args: Any, **kwargs: Any) -> Any:
        ex = _start(ledger, options)
        if ex is None:
            return await original(self, options, *args, **kwargs)
        token = metering.set(True)
        try:
            result = await original(self, options, *args, **kwargs)
        except BaseException as e:
            failed(ex, e)
            raise
        finally:
            metering.reset(token)
        attach(ex, result[0] if isinstance(result, tuple) else result, is_async=True)  # (response, prepared options)
        return result

    return _attempt_request


def instrument() -> list[Patch]:
    from anthropic import _base_client

    patches = [
        patch(_base_client.SyncAPIClient, "_attempt_request", _metered_sync),
        patch(_base_client.AsyncAPIClient, "_attempt_request", _metered_async),
    ]
    return [p for p in patches if p is not None]


def wrap(client: Any, ledger: Any = None) -> Any:
    from anthropic import _base_client

    if client.__dict__.get("_tokentrail_wrapped"):
        return client

    def via_class(self: Any, *args: Any, **kwargs: Any) -> Any:
        return type(self)._attempt_request(self, *args, **kwargs)

    is_async = isinstance(client, _base_client.AsyncAPIClient)
    metered = _metered_async(via_class, ledger) if is_async else _metered_sync(via_class, ledger)
    client._attempt_request = types.MethodType(metered, client)
    copy = client.copy

    def copy_wrapped(*args: Any, **kwargs: Any) -> Any:
        return wrap(copy(*args, **kwargs), ledger)

    client.copy = copy_wrapped
    client.with_options = copy_wrapped
    client._tokentrail_wrapped = True
    return client
