"""The gateway's request intake (issue 9, items 4 and 16): the caller's key is checked before a
byte of the body is read, the bodies held at once are bounded, a virtual key's provider key goes
to its own provider only, and no request path climbs out of an upstream's base path."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
from typing import Any

import httpx2
import pytest

import tokentrail as tt
from tests._events import stored
from tests._server import serving, upstreams
from tokentrail.server import ServerThread, create_app
from tokentrail.server.keys import create_key
from tokentrail.testing import FakeUpstream, Reply

ADMIN = "admin-secret-key-0123456789"
GPT = "gpt-4o-mini"
M: Any = [{"role": "user", "content": "hi"}]
OPENAI_SECRET = "sk-held-by-the-server-for-openai-only"


# -- the key before the body ------------------------------------------------------------------------


def test_the_key_is_checked_before_the_body_is_read(ledger: tt.Ledger, up: FakeUpstream) -> None:
    """A caller without a valid proxy key is answered without the gateway receiving any of its body."""
    read, _ = create_key(ledger.store, role="read")  # type: ignore[arg-type]
    app = create_app(ledger, upstreams=upstreams(up), admin_key=ADMIN)
    received: list[Any] = []

    async def receive() -> dict[str, Any]:
        received.append(1)
        return {"type": "http.request", "body": b"x" * 65536, "more_body": True}

    async def call(headers: list[tuple[bytes, bytes]]) -> int:
        sent: list[dict[str, Any]] = []

        async def send(message: Any) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/v1/chat/completions",
            "raw_path": b"/v1/chat/completions",
            "query_string": b"",
            "headers": [(b"content-length", b"67108000"), *headers],
        }
        await app.gateway(scope, receive, send)
        status: int = sent[0]["status"]
        return status

    statuses = [
        asyncio.run(call(h))
        for h in (
            [],
            [(b"authorization", b"Bearer sk-own")],
            [(b"x-tokentrail-key", b"tt-unknown")],
            [(b"x-tokentrail-key", read.encode())],
        )
    ]
    assert statuses == [401, 401, 401, 403]
    assert received == []  # not one chunk of the body was read
    assert up.requests == []


def test_an_unauthenticated_large_body_is_answered_before_it_is_sent(ledger: tt.Ledger, up: FakeUpstream) -> None:
    """Over a real socket: a request that declares a 60 MiB body and sends 64 KiB of it gets its
    401 while the rest is still unsent (the gateway used to wait for all of it)."""
    with serving(ledger, up, admin_key=ADMIN) as s, socket.create_connection(("127.0.0.1", s.port), timeout=20) as sock:
        head = (
            "POST /v1/chat/completions HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{s.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {60 * 1024 * 1024}\r\n\r\n"
        )
        sock.sendall(head.encode() + b"{" + b" " * 65535)
        answer = sock.recv(4096)  # the old gateway blocked here until the socket timed out
    assert answer.startswith(b"HTTP/1.1 401")
    assert up.requests == []


def test_the_bodies_held_at_once_are_bounded(ledger: tt.Ledger, up: FakeUpstream) -> None:
    app = create_app(ledger, upstreams=upstreams(up))
    app.gateway.max_buffered_bytes = 100_000
    body = {"model": GPT, "messages": [{"role": "user", "content": "x" * 150_000}]}
    up.push(Reply(input_tokens=5))
    with ServerThread(app) as s:
        over = httpx2.post(s.url + "/v1/chat/completions", json=body)
        small = httpx2.post(s.url + "/v1/chat/completions", json={"model": GPT, "messages": M})
    assert over.status_code == 503 and "too many request bodies" in over.json()["error"]["message"]
    assert small.status_code == 200
    assert app.gateway.buffered == 0  # what each request held is given back when it ends
    assert [r.json["messages"] for r in up.requests] == [M]


# -- a virtual key goes to its own provider only ---------------------------------------------------


def test_a_virtual_key_is_only_sent_to_its_own_provider(
    any_ledger: tt.Ledger, up: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TT_TEST_OPENAI_KEY", OPENAI_SECRET)
    virtual, record = create_key(
        any_ledger.store,  # type: ignore[arg-type]
        role="proxy",
        attribution={"team": "legal"},
        provider_key_env="TT_TEST_OPENAI_KEY",
    )
    assert record.provider == "openai"
    up.push(Reply(input_tokens=10))
    with serving(any_ledger, up, admin_key=ADMIN) as s:
        gemini = httpx2.post(
            s.url + "/v1beta/models/gemini-2.5-flash:generateContent",
            json={"contents": [{"parts": [{"text": "hi"}]}]},
            headers={"x-goog-api-key": virtual},
        )
        gemini_query = httpx2.post(
            s.url + f"/v1beta/models/gemini-2.5-flash:generateContent?key={virtual}",
            json={"contents": [{"parts": [{"text": "hi"}]}]},
        )
        anthropic = httpx2.post(
            s.url + "/v1/messages",
            json={"model": "claude-sonnet-4-6", "max_tokens": 5, "messages": M},
            headers={"x-api-key": virtual, "anthropic-version": "2023-06-01"},
        )
        # an anthropic-version header routes even an OpenAI path to Anthropic
        disguised = httpx2.post(
            s.url + "/v1/chat/completions",
            json={"model": GPT, "messages": M},
            headers={"Authorization": f"Bearer {virtual}", "anthropic-version": "2023-06-01"},
        )
        openai_ = httpx2.post(
            s.url + "/v1/chat/completions",
            json={"model": GPT, "messages": M},
            headers={"Authorization": f"Bearer {virtual}"},
        )
    assert [r.status_code for r in (gemini, gemini_query, anthropic, disguised)] == [403] * 4
    assert "bound to the openai upstream, not gemini" in gemini.json()["error"]["message"]
    assert anthropic.json()["error"]["type"] == "permission_error"
    assert openai_.status_code == 200
    [only] = up.requests  # the OpenAI call; the provider key never went anywhere else
    assert only.path == "/v1/chat/completions" and only.headers["authorization"] == f"Bearer {OPENAI_SECRET}"
    assert [e.team for e in stored(any_ledger)] == ["legal"]


def test_a_virtual_key_is_bound_when_it_is_issued(any_ledger: tt.Ledger) -> None:
    store: Any = any_ledger.store
    assert create_key(store, role="proxy", provider_key_env="ANTHROPIC_API_KEY")[1].provider == "anthropic"
    assert create_key(store, role="proxy", provider_key_env="MY_KEY", provider="gemini")[1].provider == "gemini"
    with pytest.raises(ValueError, match="--provider"):
        create_key(store, role="proxy", provider_key_env="MY_LLM_KEY")  # names no provider
    with pytest.raises(ValueError, match="--provider must be one of"):
        create_key(store, role="proxy", provider_key_env="MY_KEY", provider="azure")
    from tokentrail.server.keys import list_keys

    assert sorted((k.provider_key_env, k.provider) for k in list_keys(store)) == [
        ("ANTHROPIC_API_KEY", "anthropic"),
        ("MY_KEY", "gemini"),
    ]


def test_a_virtual_key_of_no_provider_is_never_forwarded(
    ledger: tt.Ledger, up: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key issued before keys were bound, whose variable names no provider: refused, not guessed."""
    monkeypatch.setenv("TT_TEST_LLM_KEY", OPENAI_SECRET)
    virtual, record = create_key(ledger.store, role="proxy", provider_key_env="TT_TEST_OPENAI_KEY")  # type: ignore[arg-type]
    ledger.store.execute_write(  # type: ignore[attr-defined]
        "UPDATE api_keys SET provider_key_env = 'TT_TEST_LLM_KEY' WHERE key_id = ?", (record.key_id,)
    )
    with serving(ledger, up, admin_key=ADMIN) as s:
        r = httpx2.post(
            s.url + "/v1/chat/completions",
            json={"model": GPT, "messages": M},
            headers={"Authorization": f"Bearer {virtual}"},
        )
    assert r.status_code == 403 and "--provider" in r.json()["error"]["message"]
    assert up.requests == []


# -- the request path -------------------------------------------------------------------------------

TRAVERSALS = [
    "/v1/../../x",
    "/v1/chat/../../../x",
    "/v1/%2e%2e/%2e%2e/x",
    "/v1/%2E%2E/%2e./x",
    "/v1/%252e%252e/%252e%252e/x",
    "/v1/..%2f..%2fx",
    "/v1/..%2F..%2Fx",
    "/v1/..\\..\\x",
    "/v1/..%5c..%5cx",
    "//evil.example/x",
    "/v1//x",
    "/v1/./chat/completions",
    "/v1/..;/x",
]


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_path_that_leaves_the_upstreams_base_is_refused(ledger: tt.Ledger, up: FakeUpstream, method: str) -> None:
    urls = {"openai": up.url + "/base/v1", "anthropic": up.url + "/base", "gemini": up.url + "/base"}
    with serving(ledger, urls=urls) as s:
        statuses = []
        for path in TRAVERSALS:
            conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=20)
            try:
                conn.request(method, path, body=b"{}" if method == "POST" else None)
                resp = conn.getresponse()
                statuses.append((path, resp.status, resp.read()))
            finally:
                conn.close()
        up.push(Reply(input_tokens=3))
        fine = httpx2.post(s.url + "/v1/chat/completions", json={"model": GPT, "messages": M})
    assert [(p, st) for p, st, _ in statuses] == [(p, 400) for p in TRAVERSALS]
    assert all(b"request path" in body for _, _, body in statuses)
    # nothing reached the upstream but the one good call, inside the base path
    assert [r.path for r in up.requests] == ["/base/v1/chat/completions"]
    assert fine.status_code == 404  # FakeUpstream serves no /base: its own answer, passed through
    assert len(stored(ledger)) == 1


def test_keys_create_binds_a_virtual_key_to_a_provider(sqlite_url: str) -> None:
    from typer.testing import CliRunner

    from tokentrail.cli import _load, app

    _load()
    runner = CliRunner()
    unnamed = runner.invoke(app, ["keys", "create", "--provider-key-env", "LLM_KEY", "--db", sqlite_url])
    assert unnamed.exit_code == 2 and "--provider" in unnamed.output
    made = runner.invoke(
        app, ["keys", "create", "--provider-key-env", "LLM_KEY", "--provider", "anthropic", "--db", sqlite_url]
    )
    assert made.exit_code == 0, made.output
    named = runner.invoke(app, ["keys", "create", "--provider-key-env", "OPENAI_API_KEY", "--db", sqlite_url])
    assert named.exit_code == 0, named.output
    listed = runner.invoke(app, ["keys", "list", "--json", "--db", sqlite_url])
    rows = json.loads(listed.stdout)
    assert sorted((r["provider_key_env"], r["provider"]) for r in rows) == [
        ("LLM_KEY", "anthropic"),
        ("OPENAI_API_KEY", "openai"),
    ]
