"""Shared-cost allocation: fixed fixtures with hand-computed splits, exact remainders, both
backends; the ledger is never changed and allocated lines say where they came from."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import tokentrail as tt
from tokentrail import cli
from tokentrail.analytics.allocation import allocate, allocated_report, load_rules, parse_rule
from tokentrail.analytics.export import lines
from tokentrail.analytics.export_write import write
from tokentrail.events import COLUMNS
from tokentrail.exceptions import ConfigError
from tokentrail.pricing import PriceBook

if not any(c.name == "export" for c in cli.app.registered_commands):
    cli._load()

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
# Costs chosen by hand: adjustments on tool runs of known cost (tools are priced as given).
SPEND = [  # (day, team, cost in USD)
    (0, "platform", "0.000000010"),  # 10 nano, shared
    (0, "a", "0.000000300"),
    (0, "b", "0.000000100"),
    (0, "c", "0.000000200"),
    (1, "platform", "0.000000007"),  # day 2: only b spent
    (1, "b", "0.000000050"),
    (2, "platform", "0.000000009"),  # day 3: nobody else spent: it stays
]


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli.app, list(args), env={"COLUMNS": "300"})


@pytest.fixture
def led(db_url: str, prices: PriceBook) -> Iterator[tt.Ledger]:
    ledger = tt.Ledger(db_url, prices=prices)
    for day, team, cost in SPEND:
        ledger.record(
            tt.UsageEvent(kind="tool", tool_name="t", ts=T0 + timedelta(days=day), team=team, cost_usd=Decimal(cost))
        )
    ledger.flush()
    yield ledger
    ledger.close()


def rules(text: str, tmp_path: Path) -> Path:
    p = tmp_path / "alloc.toml"
    p.write_text(text)
    return p


USAGE = """
[[allocations]]
name = "platform-shared"
from = { team = "platform" }
to = "team"
method = "usage"
"""
WEIGHTS = """
[[allocations]]
name = "fixed"
from = { team = "platform" }
to = { team = ["a", "b"] }
weights = { a = 0.7, b = 0.3 }
"""


def by_team(led: tt.Ledger, path: Path, since: datetime | None = None) -> dict[tuple[str, str | None], int]:
    out: dict[tuple[str, str | None], int] = {}
    for ln in allocate(lines(led.store, since=since, until=None), load_rules(path)):
        key = (ln.start.date().isoformat(), ln.attribution["team"])
        out[key] = out.get(key, 0) + (ln.cost_nusd or 0)
    return out


def test_usage_split_by_hand(led: tt.Ledger, tmp_path: Path) -> None:
    before = led.store.query(f"SELECT {', '.join(COLUMNS)} FROM events ORDER BY seq")
    got = by_team(led, rules(USAGE, tmp_path))
    # day 1: 10 nano over a:b:c = 300:100:200 -> 5, 1.67, 3.33 -> floors 5,1,3 = 9; the 1 left goes
    # to the largest remainder (b: .67 vs c: .33)
    assert got[("2026-03-02", "a")] == 300 + 5
    assert got[("2026-03-02", "b")] == 100 + 2
    assert got[("2026-03-02", "c")] == 200 + 3
    assert ("2026-03-02", "platform") not in got or got[("2026-03-02", "platform")] == 0
    assert got[("2026-03-03", "b")] == 57  # day 2: all to b
    assert got[("2026-03-04", "platform")] == 9  # day 3: nobody to spread it over
    assert sum(got.values()) == 10 + 300 + 100 + 200 + 7 + 50 + 9
    assert led.store.query(f"SELECT {', '.join(COLUMNS)} FROM events ORDER BY seq") == before


def test_fixed_weights_and_provenance(led: tt.Ledger, tmp_path: Path) -> None:
    path = rules(WEIGHTS, tmp_path)
    got = by_team(led, path)
    assert got[("2026-03-02", "a")] == 300 + 7 and got[("2026-03-02", "b")] == 100 + 3
    # 7 nano × 0.7 / 0.3 = 4.9 / 2.1 -> 4 / 2 + 1 to a (remainder .9 beats .1)
    assert got[("2026-03-03", "a")] == 5 and got[("2026-03-03", "b")] == 50 + 2
    assert got[("2026-03-04", "a")] == 6 and got[("2026-03-04", "b")] == 3  # 6.3 / 2.7 -> 6 / 3
    buf = io.BytesIO()
    written = write(allocate(lines(led.store, since=None, until=None), load_rules(path)), "focus", buf)
    rows = list(csv.DictReader(io.StringIO(buf.getvalue().decode())))
    assert written.cost_nusd == 676
    marked = [r for r in rows if r["x_AllocatedFrom"]]
    assert marked and all(r["x_AllocatedFrom"] == "fixed:team=platform" for r in marked)
    assert {json.loads(r["Tags"])["team"] for r in marked} == {"a", "b"}


def test_allocated_report_cli(led: tt.Ledger, tmp_path: Path) -> None:
    path = rules(USAGE, tmp_path)
    res = invoke("report", "--db", led.store.url, "--by", "team", "--allocated", "--rules", str(path), "-f", "json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["totals"]["cost_usd"] == "0.000000676"
    teams = {r["team"]: r["cost_usd"] for r in data["rows"]}
    assert teams["a"] == "0.000000305" and teams["platform"] == "0.000000009"
    _, total = allocated_report(allocate(lines(led.store, since=None, until=None), load_rules(path)), ["team"])
    assert total.cost_nusd == 676
    missing = invoke("report", "--db", led.store.url, "--allocated")
    assert missing.exit_code == 2 and "rules" in missing.output


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"name": "x", "from": {"team": "p"}, "to": "planet"}, "not an attribution dimension"),
        ({"name": "x", "from": {"team": "p"}, "to": {"team": ["a"]}, "weights": {"b": 1}}, "exactly the targets"),
        ({"name": "x", "from": {"team": "p"}, "to": "team", "method": "weights", "weights": {"a": -1}}, "positive"),
        ({"name": "x", "from": {"team": "p"}, "to": {"team": ["p"]}}, "its own targets"),
        ({"name": "x", "from": {"team": "p"}, "to": "team", "method": "magic"}, "usage or weights"),
    ],
)
def test_bad_rules_are_refused(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_rule(entry, "rules")


def test_cli_export_allocated_by_the_env_rules(led: tt.Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENTRAIL_ALLOCATION", str(rules(WEIGHTS, tmp_path)))
    out = tmp_path / "f.csv"
    res = invoke("export", "--db", led.store.url, "--allocated", "-f", "focus", "-o", str(out))
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert sum(Decimal(r["BilledCost"]) for r in rows) == Decimal("0.000000676")
    assert {r["x_AllocatedFrom"] for r in rows} == {"", "fixed:team=platform"}
    assert "platform" not in {json.loads(r["Tags"]).get("team") for r in rows}
    bad = tmp_path / "bad.toml"
    bad.write_text("[[allocations]]\nname = 'x'\n")
    res = invoke("export", "--db", led.store.url, "--rules", str(bad))
    assert res.exit_code == 2 and "entry 1" in res.output
