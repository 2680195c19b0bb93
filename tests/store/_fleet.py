"""Helpers of the many-gateways tests: `tokentrail serve` processes, SDK client processes and a
sampler of the ledger's server connections, all on loopback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx2
import psycopg

import tokentrail as tt

SRC = str(Path(tt.__file__).resolve().parent.parent)
TOKENTRAIL = str(Path(sys.executable).parent / "tokentrail")
ADMIN_KEY = "tt-admin-" + "a" * 32

# One client process: `calls` calls through the gateways in turn (call i to gateway i % n), with the
# real SDK of its provider and a virtual key; prints one JSON line: each answered call's model, usage
# and cost (tt.price from the usage it returned), the refused calls' statuses, and any other error.
CLIENT = r"""
import json, sys
import tokentrail as tt

provider, key, calls, urls = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
answered, refused, errors = [], [], []
if provider == "openai":
    import openai as sdk
    clients = [sdk.OpenAI(base_url=u + "/v1", api_key=key, max_retries=0, timeout=60) for u in urls]
else:
    import anthropic as sdk
    clients = [sdk.Anthropic(base_url=u, api_key=key, max_retries=0, timeout=60) for u in urls]
for i in range(calls):
    c = clients[i % len(clients)]
    text = f"call {i} of {key[-6:]}: " + "tell me why " * 10
    try:
        if provider == "openai":
            m = [{"role": "user", "content": text}]
            r = c.chat.completions.create(model="gpt-4o-mini", max_tokens=30, messages=m)
            inp, out, model = r.usage.prompt_tokens, r.usage.completion_tokens, r.model
        else:
            r = c.messages.create(model="claude-haiku-4-5", max_tokens=30, messages=[{"role": "user", "content": text}])
            inp, out, model = r.usage.input_tokens, r.usage.output_tokens, r.model
        cost = tt.price(provider=provider, model=model, input_tokens=inp, output_tokens=out)
        answered.append({"model": model, "in": inp, "out": out, "cost": None if cost is None else str(cost.total_usd)})
    except sdk.APIStatusError as e:
        refused.append(e.status_code)
    except Exception as e:
        errors.append(repr(e))
print(json.dumps({"answered": answered, "refused": refused, "errors": errors}), flush=True)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": SRC, **extra}


@contextmanager
def gateways(db_url: str, upstreams: dict[str, str], count: int, logs: Path, **env_extra: str) -> Iterator[list[str]]:
    """Start `count` `tokentrail serve` processes on one ledger, their stderr in `logs`/serve-N.log;
    yield their base URLs; stop them."""
    env = child_env(
        TOKENTRAIL_ADMIN_KEY=ADMIN_KEY, OPENAI_API_KEY="sk-fleet", ANTHROPIC_API_KEY="sk-ant-fleet", **env_extra
    )
    up_args = [a for name, url in upstreams.items() for a in ("-u", f"{name}={url}")]
    procs: list[tuple[subprocess.Popen[str], str]] = []
    with ExitStack() as stack:
        for n in range(count):
            port = free_port()
            log = stack.enter_context(open(logs / f"serve-{n}.log", "w"))
            p = subprocess.Popen(
                [TOKENTRAIL, "serve", "--port", str(port), "--db", db_url, "--log-level", "warning", *up_args],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
                text=True,
            )
            stack.callback(_stop, p)
            procs.append((p, f"http://127.0.0.1:{port}"))
        for p, url in procs:
            _wait_ready(p, url)
        yield [url for _, url in procs]


def _wait_ready(p: subprocess.Popen[str], url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise AssertionError(f"tokentrail serve exited with {p.returncode}")
        try:
            httpx2.get(url + "/metrics", headers={"X-Tokentrail-Key": ADMIN_KEY}, timeout=2)
            return
        except httpx2.TransportError:
            time.sleep(0.1)
    raise AssertionError(f"tokentrail serve at {url} never answered")


def _stop(p: subprocess.Popen[str]) -> None:
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)


def tails(logs: Path) -> str:
    """The end of each gateway's log, for an assertion's message."""
    return "\n".join(f"{f.name}: {f.read_text()[-2000:]}" for f in sorted(logs.glob("serve-*.log")))


def run_clients(specs: list[tuple[str, str]], calls: int, urls: list[str]) -> list[dict[str, Any]]:
    """One process per (provider, virtual key), all at once; their JSON reports."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLIENT, provider, key, str(calls), *urls],
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for provider, key in specs
    ]
    reports = []
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err[-3000:]
        reports.append(json.loads(out.strip().splitlines()[-1]))
    return reports


def requests_by_status(url: str, routes: tuple[str, ...] = ("chat", "messages")) -> dict[str, float]:
    """`tokentrail_requests_total` of one gateway's model routes, summed per status."""
    text = httpx2.get(url + "/metrics", headers={"X-Tokentrail-Key": ADMIN_KEY}, timeout=10).text
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("tokentrail_requests_total{"):
            labels, value = line.rsplit(" ", 1)
            if labels.split('route="', 1)[1].split('"', 1)[0] not in routes:
                continue
            status = labels.split('status="', 1)[1].split('"', 1)[0]
            counts[status] = counts.get(status, 0.0) + float(value)
    return counts


class ConnectionSampler(threading.Thread):
    """Counts, as often as it can, the server connections whose `column` (application_name or
    datname) is `value`."""

    def __init__(self, admin_url: str, column: str, value: str) -> None:
        super().__init__(daemon=True)
        assert column in ("application_name", "datname")
        self.admin_url, self.column, self.value = admin_url, column, value
        self.samples: list[int] = []
        self.busiest: list[tuple[Any, ...]] = []  # the connections at the highest count seen
        self.stop = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            while not self.stop.is_set():
                sql = (
                    "SELECT pid, backend_start, state, left(query, 50) FROM pg_stat_activity "
                    f"WHERE {self.column} = %s AND pid <> pg_backend_pid() "
                    "AND backend_type = 'client backend'"  # not autovacuum, which visits the database too
                )
                rows = conn.execute(sql, (self.value,)).fetchall()
                if len(rows) > max(self.samples, default=0):
                    self.busiest = rows
                self.samples.append(len(rows))
                self.stop.wait(0.02)
