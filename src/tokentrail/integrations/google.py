"""The google-genai SDK: generate_content and generate_content_stream, sync and async (client.aio).

google-genai sends through httpx2, requests or aiohttp depending on the setup, but every
call passes through four methods of its BaseApiClient with the REST path and JSON dict; we
meter there. The retries it makes happen below, so one call is one event.
"""

from __future__ import annotations

import json
import logging
import types
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from tokentrail.integrations._httpx import begin, failed, metering
from tokentrail.integrations._patch import Patch, patch
from tokentrail.integrations.exchange import Exchange
from tokentrail.integrations.wire import route_for

Fn = Callable[..., Any]
log = logging.getLogger("tokentrail")
METHODS = ("request", "request_streamed", "async_request", "async_request_streamed")


def _start(ledger: Any, method: str, path: str, body: Any) -> Exchange | None:
    if metering.get():
        return None
    try:
        route = route_for(method, path)
    except Exception:
        return None
    return None if route is None else begin(ledger, route, path, body, None)


def _done(ex: Exchange, response: Any) -> None:
    """A whole response arrived."""
    try:
        ex.response(200, "application/json")
        ex.body_object(_body(response))
    except Exception:
        log.exception("tokentrail: reading a google-genai response failed")
    ex.finish()


def _api_error(ex: Exchange, e: BaseException) -> None:
    code = getattr(e, "code", None)
    if isinstance(code, int):
        ex.response(code, "application/json")
        ex.acc.error_type = str(getattr(e, "status", None) or "error")
        ex.finish()
    else:
        failed(ex, e)


def _body(response: Any) -> Any:
    body = getattr(response, "body", None)
    try:
        return json.loads(body) if isinstance(body, str) and body else None
    except ValueError:
        return None


def _request(original: Fn, ledger: Any = None) -> Fn:
    def request(self: Any, http_method: str, path: str, request_dict: Any, *args: Any, **kwargs: Any) -> Any:
        ex = _start(ledger, http_method, path, request_dict)
        if ex is None:
            return original(self, http_method, path, request_dict, *args, **kwargs)
        token = metering.set(True)
        try:
            response = original(self, http_method, path, request_dict, *args, **kwargs)
        except BaseException as e:
            _api_error(ex, e)
            raise
        finally:
            metering.reset(token)
        _done(ex, response)
        return response

    return request


def _async_request(original: Fn, ledger: Any = None) -> Fn:
    async def async_request(self: Any, http_method: str, path: str, request_dict: Any, *a: Any, **k: Any) -> Any:
        ex = _start(ledger, http_method, path, request_dict)
        if ex is None:
            return await original(self, http_method, path, request_dict, *a, **k)
        token = metering.set(True)
        try:
            response = await original(self, http_method, path, request_dict, *a, **k)
        except BaseException as e:
            _api_error(ex, e)
            raise
        finally:
            metering.reset(token)
        _done(ex, response)
        return response

    return async_request


def _request_streamed(original: Fn, ledger: Any = None) -> Fn:
    def request_streamed(self: Any, http_method: str, path: str, request_dict: Any, *a: Any, **k: Any) -> Any:
        ex = _start(ledger, http_method, path, request_dict)
        if ex is None:
            return original(self, http_method, path, request_dict, *a, **k)
        ex.streamed = True
        token = metering.set(True)
        try:
            chunks = original(self, http_method, path, request_dict, *a, **k)
        except BaseException as e:
            _api_error(ex, e)
            raise
        finally:
            metering.reset(token)
        return _metered_chunks(ex, chunks)

    return request_streamed


def _metered_chunks(ex: Exchange, chunks: Iterator[Any]) -> Iterator[Any]:
    ex.response(200, "text/event-stream")
    try:
        for chunk in chunks:
            ex.event_object(_body(chunk))
            yield chunk
    except GeneratorExit:
        ex.finish(cancelled=True)
        raise
    except BaseException as e:
        _api_error(ex, e)
        raise
    ex.acc.complete = True
    ex.finish()


def _async_request_streamed(original: Fn, ledger: Any = None) -> Fn:
    async def async_request_streamed(self: Any, http_method: str, path: str, body: Any, *a: Any, **k: Any) -> Any:
        ex = _start(ledger, http_method, path, body)
        if ex is None:
            return await original(self, http_method, path, body, *a, **k)
        ex.streamed = True
        token = metering.set(True)
        try:
            chunks = await original(self, http_method, path, body, *a, **k)
        except BaseException as e:
            _api_error(ex, e)
            raise
        finally:
            metering.reset(token)
        return _metered_async_chunks(ex, chunks)

    return async_request_streamed


async def _metered_async_chunks(ex: Exchange, chunks: AsyncIterator[Any]) -> AsyncIterator[Any]:
    ex.response(200, "text/event-stream")
    try:
        async for chunk in chunks:
            ex.event_object(_body(chunk))
            yield chunk
    except GeneratorExit:
        ex.finish(cancelled=True)
        raise
    except BaseException as e:
        import asyncio

        if isinstance(e, asyncio.CancelledError):
            ex.finish(cancelled=True)
        else:
            _api_error(ex, e)
        raise
    ex.acc.complete = True
    ex.finish()


_MAKERS = {
    "request": _request,
    "request_streamed": _request_streamed,
    "async_request": _async_request,
    "async_request_streamed": _async_request_streamed,
}


def instrument() -> list[Patch]:
    from google.genai import _api_client

    patches = [patch(_api_client.BaseApiClient, name, make) for name, make in _MAKERS.items()]
    return [p for p in patches if p is not None]


def wrap(client: Any, ledger: Any = None) -> Any:
    api = client._api_client
    if api.__dict__.get("_tokentrail_wrapped"):
        return client
    for name, make in _MAKERS.items():

        def via_class(self: Any, *args: Any, _name: str = name, **kwargs: Any) -> Any:
            return getattr(type(self), _name)(self, *args, **kwargs)

        setattr(api, name, types.MethodType(make(via_class, ledger), api))
    api._tokentrail_wrapped = True
    return client
