"""A large OTLP export or events batch is decoded, checked, priced and recorded off the event
loop: other requests (here `/healthz`) are answered while it is in progress.

No timing is measured. The heavy steps are gated: each waits, in whatever thread runs it, until a
`/healthz` request sent after it started has been answered. Off the loop that happens at once; on
the loop the gate would block the very loop that must answer, and it gives up, failing the test.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Callable
from typing import Any

import httpx2
import pytest

import tokentrail as tt
from tests._events import stored
from tokentrail.server import create_app
from tokentrail.server import ingest as ingest_module
from tokentrail.server import otlp as otlp_module

GIVE_UP_S = 5.0


class Gate:
    """Wraps a function: its first call waits for `opened` (set by the test once a /healthz request
    sent after that call began has been answered) and records whether it came."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.reached = threading.Event()
        self.opened = threading.Event()
        self.came: bool | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.reached.is_set():
            self.reached.set()
            self.came = self.opened.wait(GIVE_UP_S)
        return self.fn(*args, **kwargs)


async def answered_while_busy(app: Any, path: str, body: bytes, gates: list[Gate]) -> httpx2.Response:
    """Send the heavy request; each time a gate is reached, ask /healthz and open the gate once
    it answered. Returns the heavy request's response."""
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://tokentrail.test", timeout=60) as c:
        heavy = asyncio.create_task(c.post(path, content=body, headers={"Content-Type": "application/json"}))
        for _ in range(20_000):  # bounded: the heavy request ends long before
            if heavy.done():
                break
            gate = next((g for g in gates if g.reached.is_set() and not g.opened.is_set()), None)
            if gate is None:
                await asyncio.sleep(0.001)
                continue
            r = await c.get("/healthz")
            assert r.status_code == 200
            gate.opened.set()
        return await heavy


def big_export(spans: int, pad: int) -> bytes:
    """An OTLP/JSON export of `spans` GenAI spans, each padded with a `pad`-byte attribute."""
    filler = "x" * pad
    out = []
    for i in range(spans):
        attrs = {
            "gen_ai.operation.name": {"stringValue": "chat"},
            "gen_ai.request.model": {"stringValue": "gpt-4o"},
            "gen_ai.usage.input_tokens": {"intValue": str(100 + i)},
            "gen_ai.usage.output_tokens": {"intValue": "7"},
            "http.request.body.note": {"stringValue": filler},
        }
        out.append(
            {
                "traceId": f"{i:032x}",
                "spanId": f"{i + 1:016x}",
                "name": "chat",
                "startTimeUnixNano": str(1767225600000000000 + i),
                "endTimeUnixNano": str(1767225600000001000 + i),
                "attributes": [{"key": k, "value": v} for k, v in attrs.items()],
            }
        )
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": out}]}]}).encode()


def test_a_large_otlp_export_never_stalls_other_requests(ledger: tt.Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    body = big_export(2000, 2500)
    assert 5_000_000 < len(body) < 10_000_000
    gates = [Gate(otlp_module.decode_json), Gate(otlp_module.to_events)]
    monkeypatch.setattr(otlp_module, "decode_json", gates[0])
    monkeypatch.setattr(otlp_module, "to_events", gates[1])
    r = asyncio.run(answered_while_busy(create_app(ledger), "/v1/traces", body, gates))
    assert r.status_code == 200 and r.json() == {}
    assert [g.came for g in gates] == [True, True], "/healthz waited for the export's decoding or mapping"
    assert len(stored(ledger)) == 2000


def test_a_large_events_batch_never_stalls_other_requests(ledger: tt.Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    events = [
        {"event_id": str(uuid.uuid4()), "provider": "openai", "model": "gpt-4o", "input_tokens": 10, "note": "n" * 1500}
        for _ in range(4000)
    ]
    body = json.dumps({"events": events}).encode()
    gate = Gate(ingest_module.check)
    monkeypatch.setattr(ingest_module, "check", gate)
    r = asyncio.run(answered_while_busy(create_app(ledger), "/api/v1/events", body, [gate]))
    assert r.status_code == 200 and r.json()["accepted"] == 4000
    assert gate.came is True, "/healthz waited for the batch's checking"
