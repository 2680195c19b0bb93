"""The gateway against calling FakeUpstream directly, and against a LiteLLM proxy, in one run.

    python bench/gateway.py [--requests 2000] [--seconds 20] [--pg URL] [--litellm PATH]
    python bench/gateway.py --c32-rounds 3 [--pg URL]    # budgets at gateway speed (issue 17)

Each server runs in its own process on 127.0.0.1 (FakeUpstream, `tokentrail serve`, LiteLLM); the
load comes from this process over aiohttp with keep-alive. Columns:
- direct: FakeUpstream itself (the floor);
- gateway: metering on, no budget (SQLite ledger);
- gateway+budget sqlite / postgres: one month budget that every call reserves and posts;
- litellm: `litellm[proxy]==1.108.0` from a separate venv (LITELLM_VENV or --litellm, default
  /tmp/litellm-venv), LITELLM_LOCAL_MODEL_COST_MAP=True, no database; skipped with a message when
  absent. Install: python -m venv /tmp/litellm-venv && /tmp/litellm-venv/bin/pip install 'litellm[proxy]==1.108.0'
Rows: non-streamed latency p50/p99 at concurrency 1 (and added over direct), req/s at 1 and 32,
streamed time to first byte p50 at concurrency 1. Every phase stops at --requests or --seconds.

--c32-rounds N: only req/s at concurrency 32 of the gateway with and without a budget, N rounds
taking turns (so a busy machine weighs on each alike), each as a % of the no-budget gateway, with
the gateway process's CPU per request (from /proc: a figure that load inflates less than req/s) and
the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello in five words."}], "max_tokens": 50}
STREAM_BODY = {**BODY, "stream": True}
KEY = "sk-bench-" + "0123456789abcdef" * 3  # also the LiteLLM proxy's master key (it refuses to start without one)
HEADERS = {"Authorization": f"Bearer {KEY}", "X-Tokentrail-Team": "bench", "X-Tokentrail-Agent": "bench-agent"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[Any], timeout: float = 90) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2)  # loopback only
            return
        except Exception as e:
            if getattr(e, "code", None) is not None:  # any HTTP answer means it is up
                return
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up in {timeout}s")


def start(stack: ExitStack, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[Any]:
    proc = subprocess.Popen(args, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()

    stack.callback(stop)
    return proc


def start_upstream(stack: ExitStack) -> str:
    port = free_port()
    code = textwrap.dedent(f"""
        import time
        from tokentrail.testing import FakeUpstream, Reply
        up = FakeUpstream(port={port}, record_requests=False).start()
        up.default = Reply(text="Hello there, how are you today", input_tokens=40, output_tokens=8)
        while True:
            time.sleep(3600)
    """)
    proc = start(stack, [sys.executable, "-c", code])
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/v1/models", proc)
    return url


def start_gateway(stack: ExitStack, upstream: str, db: str, budget: bool) -> str:
    if budget:
        import tokentrail as tt

        ledger = tt.Ledger(db)
        ledger.budgets.set("bench-month", scope={"team": "bench"}, period="month", limit_usd=1_000_000)
        ledger.close()
    port = free_port()
    args = [str(Path(sys.executable).parent / "tokentrail"), "serve", "--port", str(port), "--db", db]
    args += ["--upstream", f"openai={upstream}/v1", "--log-level", "warning"]
    proc = start(stack, args, {"TOKENTRAIL_ADMIN_KEY": ""})
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/healthz", proc)
    PIDS[url] = proc.pid
    return url


PIDS: dict[str, int] = {}  # gateway url -> its process


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def c32_rounds(servers: dict[str, str], rounds: int, n: int, seconds: float) -> None:
    """req/s at concurrency 32 and server CPU per request, the servers taking turns each round."""
    rps: dict[str, list[float]] = {k: [] for k in servers}
    cpu: dict[str, list[float]] = {k: [] for k in servers}
    for r in range(rounds):
        for name, url in servers.items():
            before = cpu_seconds(PIDS[url])
            lat, rate = asyncio.run(phase(url, 32, n, seconds))
            cpu[name].append((cpu_seconds(PIDS[url]) - before) * 1e6 / max(1, len(lat) + 50))  # + the warm-up
            rps[name].append(rate)
        print(f"round {r + 1}: " + "  ".join(f"{k} {v[-1]:.0f}" for k, v in rps.items()), flush=True)
    base, base_cpu = statistics.mean(rps["gateway"]), statistics.mean(cpu["gateway"])
    print(f"\nload average {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} CPUs")
    print(f"{'':26}{'req/s c32':>11}{'% of no budget':>16}{'CPU us/req':>12}{'CPU % of it':>13}   runs")
    for name in servers:
        m, c = statistics.mean(rps[name]), statistics.mean(cpu[name])
        runs = ", ".join(f"{x:.0f}" for x in rps[name])
        print(f"{name:26}{m:11.0f}{100 * m / base:15.1f}%{c:12.0f}{100 * base_cpu / c:12.1f}%   {runs}")


def start_litellm(stack: ExitStack, upstream: str, binary: Path, workdir: Path) -> str:
    port = free_port()
    cfg = workdir / "litellm.yaml"
    cfg.write_text(
        textwrap.dedent(f"""
        model_list:
          - model_name: gpt-4o-mini
            litellm_params:
              model: openai/gpt-4o-mini
              api_base: {upstream}/v1
              api_key: sk-bench
        litellm_settings:
          telemetry: false
        """)
    )
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR", "LITELLM_MASTER_KEY": KEY}
    proc = start(stack, [str(binary), "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port)], env)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health/liveliness", proc, timeout=180)
    return url


async def one(session: aiohttp.ClientSession, url: str, stream: bool) -> float:
    """Seconds to the whole response (or, streamed, to its first byte); the body is read fully."""
    t = time.perf_counter()
    async with session.post(url + "/v1/chat/completions", json=STREAM_BODY if stream else BODY, headers=HEADERS) as r:
        if stream:
            await r.content.readany()
            first = time.perf_counter() - t
            await r.read()
            if r.status != 200:
                raise RuntimeError(f"{url}: HTTP {r.status}")
            return first
        await r.read()
        if r.status != 200:
            raise RuntimeError(f"{url}: HTTP {r.status}: {(await r.text())[:200]}")
        return time.perf_counter() - t


async def phase(url: str, concurrency: int, n: int, seconds: float, stream: bool = False) -> tuple[list[float], float]:
    """(latencies, requests per second) of up to n requests in up to `seconds`."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(min(50, n)):  # warm-up: connections, caches
            await one(session, url, stream)
        lat: list[float] = []
        deadline = time.perf_counter() + seconds
        left = n

        async def worker() -> None:
            nonlocal left
            while left > 0 and time.perf_counter() < deadline:
                left -= 1
                lat.append(await one(session, url, stream))

        t = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return lat, len(lat) / (time.perf_counter() - t)


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(len(s) * q))] * 1000


def measure(url: str, n: int, seconds: float) -> dict[str, float]:
    lat1, rps1 = asyncio.run(phase(url, 1, n, seconds))
    _, rps32 = asyncio.run(phase(url, 32, n * 2, seconds))
    ttfb, _ = asyncio.run(phase(url, 1, n // 2, seconds / 2, stream=True))
    return {
        "p50_ms": statistics.median(lat1) * 1000,
        "p99_ms": pct(lat1, 0.99),
        "rps_1": rps1,
        "rps_32": rps32,
        "ttfb_p50_ms": statistics.median(ttfb) * 1000,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--pg", default=os.environ.get("TOKENTRAIL_BENCH_PG") or os.environ.get("TOKENTRAIL_TEST_PG"))
    default_litellm = Path(os.environ.get("LITELLM_VENV", "/tmp/litellm-venv")) / "bin" / "litellm"
    ap.add_argument("--litellm", type=Path, default=default_litellm)
    ap.add_argument("--c32-rounds", type=int, default=0, help="only req/s at c=32, with and without a budget")
    args = ap.parse_args()
    results: dict[str, dict[str, float]] = {}
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        upstream = start_upstream(stack)
        if args.c32_rounds:
            gateways = {"gateway": start_gateway(stack, upstream, f"sqlite:///{work / 'plain.db'}", budget=False)}
            gateways["gateway+budget sqlite"] = start_gateway(stack, upstream, f"sqlite:///{work / 'b.db'}", True)
            if args.pg:
                gateways["gateway+budget postgres"] = start_gateway(stack, upstream, args.pg, budget=True)
            c32_rounds(gateways, args.c32_rounds, args.requests * 2, args.seconds)
            return
        servers = {"direct": upstream}
        servers["gateway"] = start_gateway(stack, upstream, f"sqlite:///{work / 'plain.db'}", budget=False)
        servers["gateway+budget sqlite"] = start_gateway(stack, upstream, f"sqlite:///{work / 'b.db'}", budget=True)
        if args.pg:
            servers["gateway+budget postgres"] = start_gateway(stack, upstream, args.pg, budget=True)
        else:
            print("postgres: skipped (pass --pg URL, or run under scripts/pg-test-cluster run --)")
        if args.litellm.exists():
            servers["litellm"] = start_litellm(stack, upstream, args.litellm, work)
        else:
            print(f"litellm: skipped ({args.litellm} not found; see the module docstring to install it)")
        for name, url in servers.items():
            n = args.requests if name != "litellm" else min(args.requests, 1000)
            results[name] = measure(url, n, args.seconds)
            print(f"measured {name}", flush=True)
    base = results["direct"]
    print()
    print(
        f"{'':26}{'p50 ms':>9}{'+p50 ms':>9}{'p99 ms':>9}{'+p99 ms':>9}{'req/s c1':>10}{'req/s c32':>11}{'TTFB ms':>9}"
    )
    for name, r in results.items():
        print(
            f"{name:26}{r['p50_ms']:9.2f}{r['p50_ms'] - base['p50_ms']:9.2f}{r['p99_ms']:9.2f}"
            f"{r['p99_ms'] - base['p99_ms']:9.2f}{r['rps_1']:10.0f}{r['rps_32']:11.0f}{r['ttfb_p50_ms']:9.2f}"
        )
    if "litellm" in results:
        lite = results["litellm"]["rps_32"]
        for name in ("gateway", "gateway+budget sqlite", "gateway+budget postgres"):
            if name in results:
                print(f"{name}: {results[name]['rps_32'] / lite:.1f}x LiteLLM's req/s at concurrency 32")


if __name__ == "__main__":
    main()
