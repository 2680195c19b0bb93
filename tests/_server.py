"""Helpers of the server tests: a FakeUpstream, a tokentrail server over a ledger, served on an
ephemeral port in a thread (real HTTP), and reading what the ledger stored."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import tokentrail as tt
from tokentrail.server import ServerThread, Timeouts, create_app
from tokentrail.testing import FakeUpstream


def upstreams(up: FakeUpstream) -> dict[str, str]:
    return {"openai": up.openai_base_url, "anthropic": up.anthropic_base_url, "gemini": up.gemini_base_url}


@contextmanager
def serving(
    ledger: tt.Ledger,
    up: FakeUpstream | None = None,
    *,
    admin_key: str | None = None,
    timeouts: Timeouts | None = None,
    urls: dict[str, str] | None = None,
) -> Iterator[ServerThread]:
    app = create_app(
        ledger,
        upstreams=urls if urls is not None else upstreams(up) if up is not None else None,
        admin_key=admin_key,
        timeouts=timeouts or Timeouts(),
    )
    with ServerThread(app) as server:
        yield server


def quarantined(ledger: tt.Ledger) -> list[tuple[Any, ...]]:
    ledger.flush()
    return ledger.store.query("SELECT source, reason, payload FROM quarantine ORDER BY ts_us")
