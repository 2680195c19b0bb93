"""Did the SDK wrapper already meter the model call a framework hook is inside?

A framework hook (LangChain's callback, the Agents SDK's tracing processor, LiteLLM's logger)
sees the same model call that `tt.instrument()` may already have metered underneath it; one call
must stay one event (docs/rules.md §Usage). Each hook opens a `WrapperMark` for the call it is in
(`wrapper_mark()`, made current in the hook's context until the call ends) and asks it at the end:

- `.metered`: the wrapper (or any hook below) recorded a model event while this mark, or a mark
  nested in it, was current. One process-wide ledger listener sets it.
- `.saw(response_id)`: the wrapper noted that provider response id while this mark was current,
  or, when the mark did not reach the wrapper's context (a callback run in a copied context), noted
  it with no mark current at all, after this mark was opened (up to the hook's decision: a LiteLLM
  stream's last byte, and so the wrapper's note, may come after the hook left its mark). An id the
  wrapper noted for another call, before, or inside another hook's call, is never enough: an
  upstream that answers every call with one constant id cannot make a hook skip a call the
  wrapper did not meter.

Bounded: ids noted outside every mark are the most recent `_CAPACITY`, a mark keeps at most
`_MARK_IDS`, and ids are truncated to `_MAX_ID` characters, so a hostile upstream cannot grow this.
"""

from __future__ import annotations

import contextvars
import itertools
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tokentrail.events import UsageEvent

_CAPACITY = 4096
_MAX_ID = 256
_MARK_IDS = 32

_lock = threading.Lock()
_ids: OrderedDict[str, int] = OrderedDict()  # id noted outside every mark -> when (a _clock tick)
_clock = itertools.count(1)  # next() is atomic under the GIL: a global order of marks and notes
_current: contextvars.ContextVar[WrapperMark | None] = contextvars.ContextVar("tokentrail_wrapper_mark", default=None)
_listening = False


class WrapperMark:
    """One framework call, as far as the SDK wrapper underneath can tell (see the module doc)."""

    __slots__ = ("_ids", "_token", "done", "metered", "opened", "owner", "parent")

    def __init__(self, owner: str) -> None:
        self.owner = owner  # the hook: a mark of the same hook found current is a call never left
        self.metered = False
        self.done = False  # left: a context where it is still current (left from elsewhere) ignores it
        self.opened = next(_clock)
        self.parent: WrapperMark | None = None
        self._ids: set[str] = set()
        self._token: contextvars.Token[WrapperMark | None] | None = None

    def enter(self) -> None:
        """Make this mark current in the caller's context (a hook's start callback; again for a
        retried request)."""
        self.done = False
        parent = _current.get()
        for _ in range(16):  # bounded like _chain: a mark re-entered inside its child makes a cycle
            if parent is None or not (parent.done or parent.owner == self.owner):  # (never left)
                break
            parent = parent.parent
        self.parent = parent if parent is not self else None
        self._token = _current.set(self)

    def leave(self) -> None:
        """No longer current (a hook's end callback), if it still is: never someone else's mark."""
        self.done = True
        token, self._token = self._token, None
        if token is None or _current.get() is not self:
            return
        try:
            _current.reset(token)
        except ValueError:  # ended in another context than it started in
            _current.set(self.parent)

    def __enter__(self) -> WrapperMark:
        self.enter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.leave()

    def saw(self, response_id: str | None) -> bool:
        """Whether the wrapper noted `response_id` for this very call (see the module doc)."""
        if not response_id:
            return False
        key = _key(response_id)
        if key in self._ids:
            return True
        with _lock:
            noted = _ids.get(key)
        return noted is not None and noted > self.opened


def wrapper_mark(owner: str) -> WrapperMark:
    """A mark for one call of the hook `owner`; enter it (or use it as a context manager) where the
    call runs."""
    _listen()
    return WrapperMark(owner)


def current() -> WrapperMark | None:
    return _current.get()


def _chain() -> list[WrapperMark]:
    """The current mark and the marks it is nested in (a LiteLLM call inside a LangChain run),
    those already left excepted."""
    out: list[WrapperMark] = []
    mark = _current.get()
    for _ in range(16):  # nesting is shallow; the bound only guards a cycle
        if mark is None:
            break
        if not mark.done:
            out.append(mark)
        mark = mark.parent
    return out


def _saw_event(event: UsageEvent) -> None:
    if event.kind in ("llm", "embedding"):
        for mark in _chain():
            mark.metered = True


def _listen() -> None:
    """Hear every event any ledger records (once per process)."""
    global _listening
    if _listening:
        return
    from tokentrail import ledger

    with _lock:
        if not _listening:
            ledger._listeners.append(_saw_event)
            _listening = True


def _key(response_id: str) -> str:
    return response_id[:_MAX_ID]


def note_metered(response_id: str | None) -> None:
    """An SDK wrapper recorded the call that answered with `response_id`."""
    if not response_id:
        return
    key = _key(response_id)
    marks = _chain()
    if marks:
        for mark in marks:
            if len(mark._ids) < _MARK_IDS:
                mark._ids.add(key)
        return
    tick = next(_clock)
    with _lock:
        _ids[key] = tick
        _ids.move_to_end(key)
        while len(_ids) > _CAPACITY:
            _ids.popitem(last=False)


def was_metered(response_id: str | None) -> bool:
    """Whether an SDK wrapper noted `response_id` outside every mark, at any time. Too weak for a
    hook's decision (`WrapperMark.saw` is the one): kept for tests and diagnostics."""
    if not response_id:
        return False
    with _lock:
        return _key(response_id) in _ids


def forget_all() -> None:
    """Drop every noted id (tests; a process that re-instruments from scratch)."""
    with _lock:
        _ids.clear()
