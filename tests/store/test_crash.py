"""kill -9 while recording, 20 times on every backend: every event `flush()` acknowledged is stored
exactly once, and the audit chain verifies after each recovery.

A child process records events in a loop, flushing every few hundred, and prints the ids of each
flushed batch only after `flush()` returned (an acknowledgement). The parent kills it with SIGKILL
at a random moment (mid-transaction, mid-flush, mid-print), restarts the ledger as a new process
would (replaying anything the child left in its spool), and checks the ledger."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

import tokentrail as tt
from tokentrail import audit, cli
from tokentrail.pricing import PriceBook

if not any(getattr(g, "name", None) == "audit" for g in cli.app.registered_groups):
    cli._load()

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 20

CHILD = r"""
import random, sys
import tokentrail as tt
from tokentrail.pricing import PriceBook

url, seed = sys.argv[1], int(sys.argv[2])
rnd = random.Random(seed)
ledger = tt.Ledger(url, prices=PriceBook(overrides=""))
import genai_prices  # the price data loads (a second or more on a busy machine) before the clock starts
sys.stdout.write("ready\n")
sys.stdout.flush()
batch = []
while True:
    for _ in range(rnd.randint(1, 400)):
        e = ledger.record_llm(provider="openai", model="gpt-4o", input_tokens=rnd.randint(1, 9000), output_tokens=7)
        batch.append(e.event_id)
    ledger.flush(timeout=60)
    sys.stdout.write("".join(i + "\n" for i in batch))  # acknowledged: durable before this line
    sys.stdout.flush()
    batch.clear()
"""


def run_and_kill(url: str, seed: int, kill_after: float) -> list[str]:
    """Start a recording child, SIGKILL it `kill_after` seconds after it is ready; return the ids
    it acknowledged (complete lines only: a line cut by the kill was never fully acknowledged)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, url, str(seed)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    try:
        assert child.stdout is not None
        ready = child.stdout.readline()
        assert ready == b"ready\n", (ready, child.stderr.read() if child.stderr else b"")
        time.sleep(kill_after)
        child.send_signal(signal.SIGKILL)
        out, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL, err.decode(errors="replace")[-2000:]
    text = out.decode()
    complete = text if text.endswith("\n") else text[: text.rfind("\n") + 1]
    return complete.split()


@pytest.mark.slow
def test_kill_9_while_recording(db_url: str, prices: PriceBook) -> None:
    rnd = random.Random(4)
    acknowledged: list[str] = []
    for round_ in range(ROUNDS):
        acknowledged += run_and_kill(db_url, seed=round_, kill_after=rnd.uniform(0.05, 1.0))
        # Recovery: a new process opens the ledger; anything spooled by the dead one is replayed.
        with tt.Ledger(db_url, prices=prices) as led:
            if led.spool is not None:
                led.spool.replay(led.store)
            ids = Counter(r[0] for r in led.store.query("SELECT event_id FROM events"))
            twice = [i for i, n in ids.items() if n > 1]
            assert not twice, f"round {round_}: stored more than once: {twice[:5]}"
            lost = [i for i in acknowledged if i not in ids]
            assert not lost, f"round {round_}: {len(lost)} acknowledged event(s) lost, e.g. {lost[:3]}"
            result = audit.verify(led.store)
            assert result.ok, f"round {round_}: {result.problem}"
            # a COMMIT the dead process sent before the kill may still land after the count above
            # (the server finishes it): verify saw at least those rows and at most what is there now
            after = int(led.store.query("SELECT COUNT(*) FROM events")[0][0])
            assert sum(ids.values()) <= result.count <= after
    assert len(acknowledged) > 1000, "the kills came too early to test anything"
    out = CliRunner().invoke(cli.app, ["audit", "verify", "--db", db_url])
    assert out.exit_code == 0 and out.stdout.startswith("verified "), out.output
