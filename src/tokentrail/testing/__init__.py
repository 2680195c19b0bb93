"""Test helpers for tokentrail and for its users: a fake provider server and event capture."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from tokentrail.events import UsageEvent

if TYPE_CHECKING:
    from tokentrail.testing.fake_upstream import FakeUpstream, ReceivedRequest, Reply, ToolCall

__all__ = ["FakeUpstream", "ReceivedRequest", "Reply", "ToolCall", "capture_events"]


@contextmanager
def capture_events() -> Iterator[list[UsageEvent]]:
    """Collect every UsageEvent recorded in this process (any ledger, thread or task) while the
    block runs. The events are still stored as usual."""
    from tokentrail import ledger

    captured: list[UsageEvent] = []
    ledger._listeners.append(captured.append)
    try:
        yield captured
    finally:
        ledger._listeners.remove(captured.append)


def __getattr__(name: str) -> Any:
    # FakeUpstream needs aiohttp; load it only when asked for, so capture_events works without it.
    if name in ("FakeUpstream", "ReceivedRequest", "Reply", "ToolCall"):
        try:
            from tokentrail.testing import fake_upstream
        except ImportError as e:
            from tokentrail._extras import raise_missing_extra

            raise_missing_extra(e, f"tokentrail.testing.{name}", "testing")
        return getattr(fake_upstream, name)
    raise AttributeError(name)
