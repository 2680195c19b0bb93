"""The bound on heavy reads (tokentrail.server.heavy): with TOKENTRAIL_HEAVY_RUNS=1, a second heavy
request while one runs is a 429; the slot comes back after success, an error, a client that hung
up; light routes are never limited. The first run is held on an Event, never by sleeping."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
from starlette.testclient import TestClient

import tokentrail as tt
from tokentrail.server import create_app
from tokentrail.server.heavy import ENV, HeavyRuns

WAIT_S = 10.0  # an upper bound on waiting for another thread, never a timing assertion


class Gate:
    """Holds a run until `open()`: `entered` is set once the run is inside its heavy work."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.go = threading.Event()
        self.fail = False

    def hold(self) -> None:
        self.entered.set()
        assert self.go.wait(WAIT_S), "the test never let the run go"
        if self.fail:
            raise RuntimeError("the analysis failed")

    def blocking(self, result: Any) -> Callable[..., Any]:
        def fn(*args: Any, **kwargs: Any) -> Any:
            self.hold()
            return result

        return fn


class _Report:
    def to_dict(self) -> dict[str, Any]:
        return {"held": True}


def _patch_lines(gate: Gate) -> Callable[..., Iterator[Any]]:
    def lines(*args: Any, **kwargs: Any) -> Iterator[Any]:
        gate.hold()
        yield from ()

    return lines


def _patch_no_session(gate: Gate) -> Callable[..., Any]:
    def session_detail(*args: Any, **kwargs: Any) -> Any:
        gate.hold()
        raise LookupError("no session 's1' in the ledger")

    return session_detail


# route -> (module attribute patched to block, its replacement)
HEAVY: dict[str, tuple[str, Callable[[Gate], Any]]] = {
    "/api/v1/advice": ("tokentrail.analytics.advise.advise", lambda g: g.blocking(_Report())),
    "/api/v1/economics": ("tokentrail.server.economics_api.unit_economics", lambda g: g.blocking(_Report())),
    "/api/v1/reprice": ("tokentrail.analytics.reprice.what_if", lambda g: g.blocking(_Report())),
    "/api/v1/export": ("tokentrail.server.chargeback_api.lines", _patch_lines),
    "/api/v1/trees/s1": ("tokentrail.server.economics_api.session_tree", lambda g: g.blocking(_Report())),
    "/api/v1/sessions/s1": ("tokentrail.analytics.sessions.session_detail", _patch_no_session),
}


@pytest.fixture
def app(ledger: tt.Ledger, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A server that runs one heavy read at a time and lets a second wait only briefly."""
    monkeypatch.setenv(ENV, "1")
    app = create_app(ledger)
    assert app.state.heavy.limit == 1
    app.state.heavy = HeavyRuns(1, wait_s=0.01)
    return app


def _start(pool: ThreadPoolExecutor, c: TestClient, path: str, gate: Gate) -> Future[Any]:
    first = pool.submit(lambda: c.get(path))
    assert gate.entered.wait(WAIT_S), "the first run never started"
    return first


@pytest.mark.parametrize("path", sorted(HEAVY))
def test_a_second_heavy_run_is_refused_while_one_runs_and_the_slot_comes_back(
    app: Any, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = Gate()
    target, make = HEAVY[path]
    monkeypatch.setattr(target, make(gate))
    runs = app.state.heavy
    with TestClient(app) as c, ThreadPoolExecutor(1) as pool:
        first = _start(pool, c, path, gate)
        assert runs.in_use == 1
        for other in ("/api/v1/advice", "/api/v1/export", path):
            r = c.get(other)
            assert r.status_code == 429, (other, r.text)
            assert r.headers["retry-after"].isdigit()
            assert r.json()["error"]["status"] == 429
            assert "TOKENTRAIL_HEAVY_RUNS" in r.json()["error"]["message"]
        gate.go.set()
        done = 404 if path.startswith("/api/v1/sessions/") else 200
        assert first.result(WAIT_S).status_code == done
        assert runs.wait_idle(WAIT_S)
        gate.entered.clear()
        assert c.get(path).status_code == done  # the slot came back: the next run is served


def test_a_request_waits_for_a_slot_bounded_in_number_and_is_then_served(
    app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = Gate()
    monkeypatch.setattr("tokentrail.analytics.advise.advise", gate.blocking(_Report()))
    runs = app.state.heavy = HeavyRuns(1, wait_s=WAIT_S * 3, max_waiting=1)
    with TestClient(app) as c, ThreadPoolExecutor(2) as pool:
        first = _start(pool, c, "/api/v1/advice", gate)
        second = pool.submit(lambda: c.get("/api/v1/economics"))
        assert runs.wait_until(lambda in_use, waiting: waiting == 1, WAIT_S)
        r = c.get("/api/v1/reprice")  # the waiting room (1) is full: refused at once
        assert r.status_code == 429 and r.headers["retry-after"].isdigit()
        monkeypatch.setattr("tokentrail.server.economics_api.unit_economics", lambda *a, **k: _Report())
        gate.go.set()
        assert first.result(WAIT_S).status_code == 200
        assert second.result(WAIT_S).status_code == 200  # it got the slot the first gave back
        assert runs.wait_idle(WAIT_S) and runs.waiting == 0


def test_a_run_that_raises_gives_its_slot_back(app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    gate = Gate()
    gate.fail = True
    monkeypatch.setattr("tokentrail.analytics.advise.advise", gate.blocking(_Report()))
    with TestClient(app, raise_server_exceptions=False) as c, ThreadPoolExecutor(1) as pool:
        first = _start(pool, c, "/api/v1/advice", gate)
        assert c.get("/api/v1/advice").status_code == 429
        gate.go.set()
        assert first.result(WAIT_S).status_code == 500
        assert app.state.heavy.wait_idle(WAIT_S)
        gate.fail = False
        assert c.get("/api/v1/advice").status_code == 200


def test_light_routes_are_never_limited(app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    gate = Gate()
    monkeypatch.setattr("tokentrail.analytics.advise.advise", gate.blocking(_Report()))
    with TestClient(app) as c, ThreadPoolExecutor(1) as pool:
        first = _start(pool, c, "/api/v1/advice", gate)
        for light in (
            "/api/v1/report?by=team",
            "/api/v1/report?by=day",
            "/api/v1/sessions",
            "/api/v1/budgets",
            "/api/v1/alerts",
            "/api/v1/anomalies",
            "/api/v1/forecast",
            "/api/v1/me",
            "/healthz",
            "/metrics",
        ):
            assert c.get(light).status_code == 200, light
        gate.go.set()
        assert first.result(WAIT_S).status_code == 200


def test_bad_input_and_auth_take_no_slot(ledger: tt.Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "1")
    app = create_app(ledger, admin_key="admin-secret-key-0123456789")
    with TestClient(app) as c:
        assert c.get("/api/v1/advice").status_code == 401
        assert (
            c.get(
                "/api/v1/export?format=nope", headers={"Authorization": "Bearer admin-secret-key-0123456789"}
            ).status_code
            == 400
        )
        assert app.state.heavy.in_use == 0


# --- a client that hangs up (the ASGI app driven directly) -------------------------------------


def _scope(path: str, query: str = "") -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "headers": [(b"host", b"127.0.0.1")],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8787),
    }


async def _request() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


def test_a_hang_up_mid_run_keeps_the_slot_until_the_work_ends_then_gives_it_back(
    app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server cancels the request when its client goes: the run still holds memory in its
    thread, so the slot is held until that thread is done, and given back then."""
    gate = Gate()
    monkeypatch.setattr("tokentrail.analytics.advise.advise", gate.blocking(_Report()))
    runs = app.state.heavy = HeavyRuns(1, wait_s=WAIT_S * 3)

    async def noop(message: Any) -> None:
        return None

    async def main() -> None:
        task = asyncio.create_task(app(_scope("/api/v1/advice"), _request, noop))
        assert await asyncio.to_thread(gate.entered.wait, WAIT_S)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert runs.in_use == 1  # the thread still runs (held on the gate)
        waiting = asyncio.create_task(app(_scope("/api/v1/economics"), _request, noop))
        assert await asyncio.to_thread(runs.wait_until, lambda in_use, n: n == 1, WAIT_S)
        waiting.cancel()  # a waiting client hangs up: it leaves the waiting room, holding nothing
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert (runs.in_use, runs.waiting) == (1, 0)
        gate.go.set()
        assert await asyncio.to_thread(runs.wait_idle, WAIT_S)

    asyncio.run(main())


def test_a_hang_up_mid_export_stream_gives_the_slot_back(app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    held: list[int] = []

    def endless(src: Any, fmt: str) -> Iterator[bytes]:
        held.append(runs.in_use)
        for _ in range(1_000_000):  # bounded: the client hangs up after two chunks
            yield b"x" * 100

    runs = app.state.heavy
    monkeypatch.setattr("tokentrail.server.chargeback_api.csv_chunks", endless)
    sent: list[Any] = []

    async def send(message: Any) -> None:
        if message["type"] == "http.response.body" and len(sent) >= 3:
            raise OSError("the client hung up")
        sent.append(message)

    async def main() -> None:
        from starlette.requests import ClientDisconnect

        with pytest.raises(ClientDisconnect):
            await app(_scope("/api/v1/export"), _request, send)

    asyncio.run(main())
    assert sent[0]["status"] == 200
    assert held == [1]  # the stream held the slot while it ran
    assert runs.in_use == 0


def test_a_slot_abandoned_before_its_work_began_is_given_back_once() -> None:
    runs = HeavyRuns(1)
    slot = runs.try_take()
    assert slot is not None and runs.try_take() is None
    slot.abandon()
    assert runs.in_use == 0
    assert not slot.begin()  # the work, starting late, does not run and does not give it back twice
    slot.release()
    assert runs.in_use == 0
    again = runs.try_take()
    assert again is not None and again.begin()
    again.abandon()  # running: its thread gives it back
    assert runs.in_use == 1
    again.release()
    assert runs.in_use == 0


@pytest.mark.parametrize("value", ["0", "-1", "two", "65"])
def test_a_bad_setting_is_refused_at_startup(ledger: tt.Ledger, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(ENV, value)
    with pytest.raises(ValueError, match=ENV):
        create_app(ledger)


def test_the_schema_names_the_429_of_heavy_reads(app: Any) -> None:
    with TestClient(app) as c:
        paths = c.get("/api/v1/openapi.json").json()["paths"]
    assert "429" in paths["/api/v1/advice"]["get"]["responses"]
    assert "429" in paths["/api/v1/export"]["get"]["responses"]
    assert "429" not in paths["/api/v1/report"]["get"]["responses"]


def test_the_default_is_two(ledger: tt.Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    assert create_app(ledger).state.heavy.limit == 2
