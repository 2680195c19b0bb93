"""A local stand-in for the OpenAI and Anthropic admin APIs: serves the fixture pages one at a
time (`page=<next_page>`), checks the admin key's header, and records every request."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests._reconcile_data import anthropic_files, openai_files

ADMIN_KEY = "sk-admin-fixture-0123456789abcdef"
EMPTY_OPENAI = [{"object": "page", "data": [], "has_more": False, "next_page": None}]


@dataclass
class AdminFake:
    url: str = ""
    routes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, list[str]], dict[str, str]]] = field(default_factory=list)


def _routes() -> dict[str, list[dict[str, Any]]]:
    o, a = openai_files(), anthropic_files()
    return {
        "/v1/organization/usage/completions": o["openai-usage-completions.json"],
        "/v1/organization/usage/embeddings": EMPTY_OPENAI,
        "/v1/organization/costs": o["openai-costs.json"],
        "/v1/organizations/usage_report/messages": a["anthropic-usage-messages.json"],
        "/v1/organizations/cost_report": a["anthropic-cost-report.json"],
    }


@contextmanager
def admin_fake() -> Iterator[AdminFake]:
    fake = AdminFake(routes=_routes())

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, body: Any) -> None:
            data = json.dumps(body, default=float).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = parse_qs(parts.query)
            fake.requests.append((parts.path, query, {k.lower(): v for k, v in self.headers.items()}))
            openai = parts.path.startswith("/v1/organization/")
            given = self.headers.get("Authorization", "") if openai else self.headers.get("x-api-key", "")
            if given not in (f"Bearer {ADMIN_KEY}", ADMIN_KEY):
                # both providers' documented error shapes; the OpenAI one echoes part of the key
                msg = f"Incorrect API key provided: {given[7:]}" if openai else "invalid x-api-key"
                self._send(401, {"error": {"type": "authentication_error", "message": msg}})
                return
            pages = fake.routes.get(parts.path)
            if pages is None:
                self._send(404, {"error": {"message": "not found"}})
                return
            cursor = query.get("page", [None])[0]
            index = 0 if cursor is None else int(cursor.removeprefix("page_")) - 1
            self._send(200, pages[index])

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
