"""`tokentrail export` over N events, per format: rows/s and peak memory.

    .venv/bin/python bench/export.py [--events 1000000] [--db URL] [--reuse] [--formats focus,csv,...]

The ledger is the one bench/report.py writes (30 days, 6 teams x 20 agents x 8 models, 10% tool
runs, one unpriced model). Each format runs in a child process of its own, so its peak RSS
(ru_maxrss) is the export's alone; the output goes to a temporary file. Read also the line count
and the BilledCost / cost total, checked against the report's total."""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from report import write  # bench/report.py: the same synthetic ledger

from tokentrail.analytics import reports
from tokentrail.store import open_store

FORMATS = ("csv", "focus", "parquet", "focus-parquet")


def child(url: str, fmt: str) -> None:
    """Run one export and print its numbers as JSON (in a fresh process)."""
    from tokentrail.analytics.export import lines
    from tokentrail.analytics.export_write import write as write_export

    store = open_store(url)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with tempfile.TemporaryFile() as out:
        t = time.perf_counter()
        written = write_export(lines(store, since=None, until=None, granularity="day"), fmt, out, include_unpriced=True)
        elapsed = time.perf_counter() - t
        size = out.tell()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "format": fmt,
                "rows": written.rows,
                "seconds": round(elapsed, 2),
                "rows_per_s": round(written.rows / elapsed) if elapsed else None,
                "cost_nusd": written.cost_nusd,
                "bytes": size,
                "peak_rss_mb": round(peak / 1024, 1),
                "rss_before_mb": round(before / 1024, 1),
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--db")
    ap.add_argument("--reuse", action="store_true")
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    url = args.db or f"sqlite:///{tempfile.mkdtemp()}/export-bench.db"
    store = open_store(url)
    have = store.query("SELECT COUNT(*) FROM events")[0][0]
    if not (args.reuse and have):
        if have:
            sys.exit(f"{url} already holds {have} events: give --reuse or an empty ledger")
        print(f"writing {args.events:,} events ...", file=sys.stderr)
        write(store, args.events)
    events = store.query("SELECT COUNT(*) FROM events")[0][0]
    total = reports.report(store).totals.cost_usd
    store.close()
    print(f"ledger {url}: {events:,} events, report total ${total}")
    for fmt in args.formats.split(","):
        out = subprocess.run(
            [sys.executable, __file__, "--child", url, fmt],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        result["events_per_s"] = round(events / result["seconds"]) if result["seconds"] else None
        result["total_matches_report"] = result["cost_nusd"] == int(total.scaleb(9)) if total is not None else None
        print(json.dumps(result))


if __name__ == "__main__":
    main()
