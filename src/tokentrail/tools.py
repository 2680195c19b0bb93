"""`@tt.tool`: record a function as a tool run, with its latency and outcome."""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable
from typing import Any, TypeVar, overload

from tokentrail.default_ledger import resolve_ledger
from tokentrail.exceptions import DefaultLedgerUnavailable

F = TypeVar("F", bound=Callable[..., Any])


@overload
def tool(fn: F) -> F: ...
@overload
def tool(fn: None = None, *, name: str | None = None) -> Callable[[F], F]: ...


def tool(fn: Callable[..., Any] | None = None, *, name: str | None = None) -> Any:
    """Decorate a sync or async function; each call is recorded as a `kind="tool"` event whose
    arguments hash links it to the model call that asked for it."""

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        tool_name = name or f.__name__
        signature = inspect.signature(f)

        def arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
            try:
                bound = signature.bind(*args, **kwargs)
            except TypeError:
                return {"args": list(args), **kwargs}
            return dict(bound.arguments)

        def finish(args: tuple[Any, ...], kwargs: dict[str, Any], started: float, status: str) -> None:
            try:
                resolve_ledger().record_tool(
                    tool_name,
                    arguments(args, kwargs),
                    latency_ms=(time.perf_counter() - started) * 1000,
                    status=status,
                )
            except DefaultLedgerUnavailable:
                pass  # logged once when it failed to open; counted in tt.ledger_status()
            except Exception:  # metering never breaks the tool
                import logging

                logging.getLogger("tokentrail").exception("tokentrail: recording tool %s failed", tool_name)

        if inspect.iscoroutinefunction(f):

            @functools.wraps(f)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                started, status = time.perf_counter(), "error"
                try:
                    result = await f(*args, **kwargs)
                    status = "ok"
                    return result
                finally:
                    finish(args, kwargs, started, status)

            return run_async

        @functools.wraps(f)
        def run(*args: Any, **kwargs: Any) -> Any:
            started, status = time.perf_counter(), "error"
            try:
                result = f(*args, **kwargs)
                status = "ok"
                return result
            finally:
                finish(args, kwargs, started, status)

        return run

    return decorate(fn) if fn is not None else decorate
