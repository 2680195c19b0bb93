"""The demo's back-dated sessions have ids of their own (not `<live id>-d14`), so `tokentrail
sessions` after `make demo` shows each id by a short unique start and fits 80 columns."""

from __future__ import annotations

import random
import re
import uuid
from datetime import timedelta
from pathlib import Path

import tokentrail as tt
from tests.cli.test_cli_first_hour import run
from tokentrail.cli._demo_history import write_history
from tokentrail.events import utcnow


def test_backdated_sessions_fit_the_sessions_table(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/demo.db"
    led = tt.Ledger(url)
    started = utcnow() - timedelta(minutes=5)
    for n in range(3):
        with tt.session(agent=f"agent-{n}", team="cx", user=f"u-{n}", ledger=led, session_id=str(uuid.uuid4())):
            led.record_llm(provider="openai", model="gpt-4o-mini", input_tokens=100 + n, output_tokens=10)
    led.flush()
    assert write_history(led.store, random.Random(1), started) > 0
    led.close()
    code, out, _ = run("sessions", "--db", url, "--since", "30d", "--limit", "50", columns=80)
    assert code == 0
    lines = out.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80, out
    ids = [line.split("│")[0].strip() for line in lines[3:] if "│" in line]
    assert len(ids) == 3 * 15 and len(set(ids)) == len(ids)
    assert not any(re.search(r"-d\d+$", i) for i in ids)  # no `<live id>-d14`
