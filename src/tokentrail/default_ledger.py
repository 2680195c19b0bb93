"""The default ledger: the one `tt.configure()` sets, else opened from TOKENTRAIL_DB on first use,
and `record_llm` / `record_tool` on it (or on the current session's ledger).

A default ledger that cannot be opened never breaks the agent's calls: the failure is logged once,
with what to do, and the calls that went unmetered meanwhile are counted (`ledger_status()`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from tokentrail import context as ctx
from tokentrail.events import UsageEvent
from tokentrail.exceptions import ConfigError, DefaultLedgerUnavailable, StoreError
from tokentrail.ledger import Ledger

log = logging.getLogger("tokentrail")

_default: Ledger | None = None
_default_lock = threading.Lock()


def configure(*, db: str | None = None, ledger: Ledger | None = None, **options: Any) -> Ledger:
    """Set the default ledger (from a URL or an instance) and return it; the previous default
    is flushed and closed."""
    global _default
    if db is not None and ledger is not None:
        raise ConfigError("configure() takes db= or ledger=, not both")
    new = ledger if ledger is not None else Ledger(db, **options)
    with _default_lock:
        old, _default = _default, new
        _default_failure["error"] = None
    if old is not None and old is not new:
        old.close()
    return new


def get_ledger() -> Ledger:
    """The default ledger, opened from TOKENTRAIL_DB (default ~/.tokentrail/ledger.db) on first use.
    Raises DefaultLedgerUnavailable while it cannot be opened (logged once, then counted)."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = _open_default()
    return _default


_RETRY_DEFAULT_S = 30.0  # how often a default ledger that failed to open is tried again
_default_failure: dict[str, Any] = {"error": None, "retry_at": 0.0, "unmetered": 0}


def _open_default() -> Ledger:
    """Open the default ledger (under _default_lock). A failure is logged once, with what to do;
    later calls fail fast and are only counted, with a new try every _RETRY_DEFAULT_S."""
    f = _default_failure
    if f["error"] is not None and time.monotonic() < f["retry_at"]:
        f["unmetered"] += 1
        raise DefaultLedgerUnavailable(f["error"])
    try:
        led = Ledger()
    except Exception as e:
        first = f["error"] is None
        f["error"] = str(e) if isinstance(e, (ConfigError, StoreError)) else f"cannot open the default ledger: {e!r}"
        f["retry_at"] = time.monotonic() + _RETRY_DEFAULT_S
        f["unmetered"] += 1
        if first:
            source = "TOKENTRAIL_DB" if os.environ.get("TOKENTRAIL_DB") else "the default path"
            log.error(
                "tokentrail: %s. Calls on the default ledger (%s) are NOT metered until it opens: point "
                "TOKENTRAIL_DB at a writable file or a database URL, or call tokentrail.configure(db=...). "
                "Logged once; tokentrail.ledger_status() counts the calls not metered.",
                f["error"],
                source,
            )
        raise DefaultLedgerUnavailable(f["error"]) from None
    if f["error"] is not None:
        log.warning("tokentrail: opened the default ledger; %d call(s) before were not metered", f["unmetered"])
        f["error"] = None
    return led


def ledger_status() -> dict[str, Any]:
    """The default ledger's state: `open`, `url` (without a password; None until it opens),
    `error` (why it cannot be opened, else None) and `unmetered_calls` (calls that went
    unmetered because it could not)."""
    led = _default
    return {
        "open": led is not None and not led.closed,
        "url": led.display_url if led is not None else None,
        "error": _default_failure["error"],
        "unmetered_calls": _default_failure["unmetered"],
    }


def resolve_ledger(explicit: Ledger | None = None) -> Ledger:
    """An explicit ledger, else the one the current session was opened on, else the default."""
    found = explicit or ctx.current().ledger
    return found if isinstance(found, Ledger) else get_ledger()


ctx.set_default_recorder(get_ledger)


def record_llm(**kwargs: Any) -> UsageEvent:
    """Meter a model call by hand on the default (or session's) ledger; see Ledger.record_llm."""
    return resolve_ledger(kwargs.pop("ledger", None)).record_llm(**kwargs)


def record_tool(name: str, args: Any = None, **kwargs: Any) -> UsageEvent:
    """Record a tool run on the default (or session's) ledger; see Ledger.record_tool."""
    return resolve_ledger(kwargs.pop("ledger", None)).record_tool(name, args, **kwargs)
