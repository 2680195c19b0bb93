"""`report --by team,agent,model` over one month: the rollup path (whole hours from
`rollup_hourly`, the partial edge hours from raw events) against a raw GROUP BY over `events`,
side by side in the same run, on the same ledger.

    .venv/bin/python bench/report.py [--events 1000000] [--db URL] [--reuse] [--repeat 3]

Events are written straight through `store.write_events` in large batches (no ledger, no
pricing), spread over 30 days: 6 teams x 20 agents x 8 models, 10% tool runs, 2% errors, one
unpriced model, 500 customers, 2000 users, a `region` tag (declared: TOKENTRAIL_ROLLUP_TAGS=region). `--reuse`
skips writing when the ledger already holds events (for 10M runs).

Then the chargeback reports: by customer, user and tag.region from the dimension rollups, each against
the raw scan and against the by-team report of the same run; and `tokentrail sessions` (the
newest 50, a month, a team's and a customer's key) from the session summary against the raw scan."""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta

import uuid_utils

from tokentrail.analytics import reports, sessions
from tokentrail.events import COL, COLUMNS, from_micros, ts_micros
from tokentrail.store import open_store
from tokentrail.types import Store

BASE = datetime(2026, 1, 1, tzinfo=UTC)
DAYS = 30
TEAMS = ("legal", "cx", "eng", "sales", "finance", "research")
# model -> (provider, nano-dollars per input token, per output token); None: unpriced
MODELS = {
    "gpt-4o": ("openai", 2500, 10000),
    "gpt-4o-mini": ("openai", 150, 600),
    "o4-mini": ("openai", 1100, 4400),
    "claude-sonnet-4-6": ("anthropic", 3000, 15000),
    "claude-haiku-4-5": ("anthropic", 1000, 5000),
    "gemini-2.5-flash": ("google", 300, 2500),
    "gemini-2.5-pro": ("google", 1250, 10000),
    "acme-llama-70b": ("acme", None, None),
}
BATCH = 20_000
CUSTOMERS = 500
USERS = 2000
REGIONS = ("eu", "us", "apac")


def rows(n: int, seed: int = 7):
    """Batches of event rows in time order."""
    rng = random.Random(seed)
    agents = [(team, f"{team}-agent-{i:02d}") for team in TEAMS for i in range(20)]
    models = list(MODELS)
    start_us, span_us = ts_micros(BASE), DAYS * 86_400_000_000
    template = [None] * len(COLUMNS)
    region_tags = [json.dumps({"region": region}) for region in REGIONS]
    batch = []
    for i in range(n):
        r = list(template)
        team, agent = agents[rng.randrange(len(agents))]
        r[COL["event_id"]] = str(uuid_utils.uuid7())
        r[COL["ts_us"]] = start_us + i * span_us // n + rng.randrange(max(1, span_us // n))
        r[COL["team"]], r[COL["agent"]], r[COL["org"]] = team, agent, "acme-corp"
        r[COL["session_id"]] = f"{agent}-{i // 40}"
        r[COL["customer"]] = f"cust-{rng.randrange(CUSTOMERS):03d}"
        r[COL["user_id"]] = f"user-{i * 7919 % USERS:04d}"  # not from rng: the other columns stay as before
        r[COL["tags"]] = region_tags[rng.randrange(len(REGIONS))]
        r[COL["status"]] = "error" if rng.random() < 0.02 else "ok"
        for c in ("streamed", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"):
            r[COL[c]] = 0
        r[COL["reasoning_tokens"]] = 0
        r[COL["usage_estimated"]] = 0  # NOT NULL since migration 0010
        for c in ("output_limit", "stopped_on_limit", "system_permille"):  # NOT NULL since 0013
            r[COL[c]] = 0
        if rng.random() < 0.1:
            r[COL["kind"]], r[COL["tool_name"]] = "tool", rng.choice(("web_search", "fetch", "run_tests"))
            r[COL["cost_nusd"]] = 2_000_000 if r[COL["tool_name"]] == "web_search" else None
        else:
            model = models[rng.randrange(len(models))]
            provider, rate_in, rate_out = MODELS[model]
            tokens_in, tokens_out = rng.randint(200, 20_000), rng.randint(20, 2_000)
            r[COL["kind"]], r[COL["provider"]], r[COL["model"]] = "llm", provider, model
            r[COL["input_tokens"]], r[COL["output_tokens"]] = tokens_in, tokens_out
            r[COL["cache_read_tokens"]] = tokens_in // 4
            if rate_in is not None and r[COL["status"]] == "ok":
                r[COL["cost_nusd"]] = tokens_in * rate_in + tokens_out * rate_out
        batch.append(tuple(r))
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def write(store: Store, n: int) -> float:
    t = time.perf_counter()
    done = 0
    for batch in rows(n):
        done += store.write_events(batch)
        if done % 200_000 < BATCH:
            print(f"  {done:,} / {n:,} events written", file=sys.stderr)
    return time.perf_counter() - t


def best(fn, repeat: int) -> tuple[float, reports.Report]:
    times, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    assert result is not None
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--db", default=None, help="ledger URL (default: a new SQLite file in a temp folder)")
    parser.add_argument("--reuse", action="store_true", help="do not write when the ledger already has events")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each query; the best is shown")
    parser.add_argument("--no-raw-sessions", action="store_true", help="list sessions from the summary only")
    args = parser.parse_args()
    url = args.db or f"sqlite:///{tempfile.mkdtemp()}/bench-report.db"
    os.environ["TOKENTRAIL_ROLLUP_TAGS"] = "region"
    store = open_store(url)
    have = int(store.query("SELECT COUNT(*) FROM events")[0][0])
    if not (args.reuse and have):
        print(f"writing {args.events:,} events to {store.url} …", file=sys.stderr)
        took = write(store, args.events)
        print(f"wrote {args.events:,} events in {took:.1f} s ({args.events / took:,.0f} rows/s)")
    total = int(store.query("SELECT COUNT(*) FROM events")[0][0])
    first = from_micros(int(store.query("SELECT MIN(ts_us) FROM events")[0][0]))
    since = first.replace(minute=10, second=0, microsecond=0)  # not on an hour: both edges are partial
    until = since + timedelta(days=DAYS) - timedelta(minutes=20)
    by = ("team", "agent", "model")
    fast_s, fast = best(lambda: reports.report(store, by=by, since=since, until=until), args.repeat)
    raw_s, raw = best(lambda: reports.report(store, by=by, since=since, until=until, rollup=False), args.repeat)
    team_s, _ = best(lambda: reports.report(store, by=("team",), since=since, until=until), args.repeat)
    chargeback = []
    for dim in ("customer", "user", "tag.region"):
        dim_s, dim_rep = best(lambda: reports.report(store, by=(dim,), since=since, until=until), args.repeat)
        scan_s, scan = best(
            lambda: reports.report(store, by=(dim,), since=since, until=until, rollup=False), args.repeat
        )
        ok = dim_rep.rows == scan.rows and dim_rep.totals == scan.totals and not dim_rep.scanned
        chargeback.append((dim, len(dim_rep.rows), dim_s, scan_s, ok))
    listing = session_lists(store, since, until, args.repeat, raw=not args.no_raw_sessions)
    store.close()
    assert fast.source == "rollup" and raw.source == "events"
    same = fast.rows == raw.rows and fast.totals == raw.totals
    print(f"ledger: {total:,} events, {store.url}")
    print(
        f"report --by {','.join(by)} from {since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} UTC: {len(fast.rows)} rows"
    )
    print(f"  rollup + raw edges : {fast_s * 1000:9.1f} ms")
    print(f"  raw GROUP BY events: {raw_s * 1000:9.1f} ms")
    print(f"  ratio              : {raw_s / fast_s:9.1f}x faster with the rollup")
    print(
        f"  same rows and totals: {'yes' if same else 'NO'}; total cost ${fast.totals.cost_usd:,}, "
        f"{fast.totals.calls:,} calls, {fast.totals.unpriced_calls:,} unpriced"
    )
    print(f"report --by team (rollup): {team_s * 1000:9.1f} ms")
    for dim, n, dim_s, scan_s, ok in chargeback:
        print(f"report --by {dim}: {n} rows")
        print(f"  dimension rollup   : {dim_s * 1000:9.1f} ms = {dim_s / team_s:.2f}x the by-team report")
        print(f"  raw GROUP BY events: {scan_s * 1000:9.1f} ms ({scan_s / dim_s:.1f}x slower)")
        print(f"  same rows and totals: {'yes' if ok else 'NO'}")
        same = same and ok
    for name, n, list_s, scan_s, ok in listing:
        print(f"sessions {name}: {n} sessions")
        print(f"  session list       : {list_s * 1000:9.1f} ms")
        if scan_s is not None:
            print(f"  raw GROUP BY events: {scan_s * 1000:9.1f} ms ({scan_s / list_s:.1f}x slower)")
        print(f"  same sessions and totals: {'yes' if ok else 'NO'}")
        same = same and ok
    if not same:
        sys.exit(1)


def session_lists(store: Store, since: datetime, until: datetime, repeat: int, *, raw: bool = True) -> list:
    """`tokentrail sessions` (the newest 50) plain, over the month, and scoped to a team's key and a
    customer's key: from the session summary when this tokentrail has one, and the raw scan."""
    cases = {
        "(newest 50)": {},
        "(the month)": {"since": since, "until": until},
        "(scope team=eng)": {"scope": {"team": "eng"}},
        "(scope customer=cust-007)": {"scope": {"customer": "cust-007"}},
    }
    has_summary = "summary" in sessions.sessions.__code__.co_varnames
    out = []
    for name, kw in cases.items():
        list_s, found = best(lambda kw=kw: sessions.sessions(store, **kw), repeat)
        scan_s, ok = None, True
        if has_summary and raw:
            scan_s, scan = best(lambda kw=kw: sessions.sessions(store, summary=False, **kw), repeat)
            ok = scan == found
        out.append((name if has_summary else f"{name} without a summary", len(found), list_s, scan_s, ok))
    return out


if __name__ == "__main__":
    main()
