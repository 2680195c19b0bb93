"""Which provider responses the SDK wrappers have already metered in this process.

A framework hook (LangChain's callback, the Agents SDK's tracing processor, LiteLLM's logger,
...) sees the same model call that `tt.instrument()` may already have metered underneath it.
The wrapper notes the provider's response id here when it records the call; a hook that finds
its response id here records nothing, so one call is always one event (docs/rules.md §Usage).

Bounded: the most recent `_CAPACITY` ids are kept; ids are truncated to `_MAX_ID` characters,
so a hostile upstream cannot grow this.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

_CAPACITY = 4096
_MAX_ID = 256

_lock = threading.Lock()
_ids: OrderedDict[str, None] = OrderedDict()


def _key(response_id: str) -> str:
    return response_id[:_MAX_ID]


def note_metered(response_id: str | None) -> None:
    """An SDK wrapper recorded the call that answered with `response_id`."""
    if not response_id:
        return
    key = _key(response_id)
    with _lock:
        _ids[key] = None
        _ids.move_to_end(key)
        while len(_ids) > _CAPACITY:
            _ids.popitem(last=False)


def was_metered(response_id: str | None) -> bool:
    """Whether an SDK wrapper already recorded the call that answered with `response_id`."""
    if not response_id:
        return False
    with _lock:
        return _key(response_id) in _ids


def forget_all() -> None:
    """Drop every noted id (tests; a process that re-instruments from scratch)."""
    with _lock:
        _ids.clear()
