"""`tokentrail anomalies` at 80 columns: the table fits, the kind stays whole, the message is
abbreviated with a visible `…` (JSON and CSV keep it whole)."""

from __future__ import annotations

from pathlib import Path

import tokentrail as tt
from tests._anomaly_fleet import build
from tests.cli.test_cli_first_hour import run


def test_the_anomalies_table_fits_80_columns(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/a.db"
    led = tt.Ledger(url)
    for e in build(seed=4).events:
        led.record(e)
    led.flush()
    led.close()
    code, out, _ = run("anomalies", "--db", url, "--since", "20d", columns=80)
    assert code == 0
    lines = out.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80, out
    body = [line for line in lines[3:] if line.strip()]
    assert any("retry_loop" in line for line in body)  # the kind is never cut to `retr…`
    assert any("context_saturation" in line for line in body)
    assert any("…" in line for line in body)
