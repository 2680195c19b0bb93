"""The sub_agents allocation: an orchestrator session's own cost goes to the owners of its
sub-agent sessions (the whole subtree), by what each spent there. A fixed fixture with
hand-computed splits (remainders and a tie), exact totals, both backends, the CLI once."""

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
from tokentrail.analytics.allocation import allocate, load_rules, parse_rule
from tokentrail.analytics.allocation_trees import allocated_lines
from tokentrail.analytics.export_write import write
from tokentrail.events import COLUMNS
from tokentrail.exceptions import ConfigError
from tokentrail.pricing import PriceBook

if not any(c.name == "export" for c in cli.app.registered_commands):
    cli._load()

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
# (day, session, parent, team, agent, cost in nano-dollars; None: unpriced)
EVENTS: list[tuple[int, str, str | None, str, str, int | None]] = [
    (0, "orch", None, "platform", "orchestrator", 10),
    (1, "orch", None, "platform", "orchestrator", 7),
    (0, "orch", None, "platform", "orchestrator", None),  # unpriced: stays as it is
    (0, "c1", "orch", "a", "researcher", 300),
    (0, "c2", "orch", "b", "writer", 100),
    (1, "g1", "c1", "b", "checker", 50),  # a grandchild, on the next day
    (0, "orch2", None, "platform", "orchestrator", 5),
    (0, "c3", "orch2", "b", "writer", 40),
    (0, "c4", "orch2", "a", "writer", 40),
    (0, "orch3", None, "platform", "orchestrator", 9),  # its only child is unpriced: keeps its cost
    (0, "c5", "orch3", "a", "writer", None),
    (0, "solo", None, "c", "solo", 20),  # no children
]
PRICED_TOTAL = 581

ORCHESTRATORS = """
[[allocations]]
name = "orchestrators"
method = "sub_agents"
from = { agent = "orchestrator" }
by = "team"
"""
EVERY_PARENT = """
[[allocations]]
name = "trees"
method = "sub_agents"
by = "team"
"""


def event(day: int, sid: str, parent: str | None, team: str, agent: str, nusd: int | None) -> tt.UsageEvent:
    common: dict[str, Any] = {
        "ts": T0 + timedelta(days=day),
        "session_id": sid,
        "parent_session_id": parent,
        "team": team,
        "agent": agent,
    }
    if nusd is None:  # a model with no price: unpriced, never $0
        return tt.UsageEvent(kind="llm", provider="openai", model="no-such-model-x", input_tokens=10, **common)
    return tt.UsageEvent(kind="tool", tool_name="t", cost_usd=Decimal(nusd) / 10**9, **common)


@pytest.fixture
def led(db_url: str, prices: PriceBook) -> Iterator[tt.Ledger]:
    ledger = tt.Ledger(db_url, prices=prices)
    for e in EVENTS:
        ledger.record(event(*e))
    ledger.flush()
    yield ledger
    ledger.close()


def rules_file(text: str, tmp_path: Path) -> Path:
    p = tmp_path / "alloc.toml"
    p.write_text(text)
    return p


def by_team(led: tt.Ledger, path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for ln in allocated_lines(led.store, load_rules(path), since=None, until=None):
        team = ln.attribution["team"] or ""
        out[team] = out.get(team, 0) + (ln.cost_nusd or 0)
    return out


def test_orchestrator_cost_goes_to_the_subtree_owners(led: tt.Ledger, tmp_path: Path) -> None:
    before = led.store.query(f"SELECT {', '.join(COLUMNS)} FROM events ORDER BY seq")
    path = rules_file(ORCHESTRATORS, tmp_path)
    got = by_team(led, path)
    # orch's subtree (c1, c2, grandchild g1, all days): a = 300, b = 100 + 50 = 150.
    # day 1 line: 10 × 300/450 = 6.67 -> 6 and 3.33 -> 3; the nano left goes to a (.67 > .33): a 7, b 3
    #   (direct children only would be 7.5 / 2.5; that day's spend only would be the same 300:100)
    # day 2 line: 7 × 2/3 = 4.67 / 2.33 -> 4 / 2, +1 to a: a 5, b 2
    # orch2: 5 over a = 40, b = 40: 2.5 / 2.5, the tie goes to the first by name: a 3, b 2
    # orch3: its child is unpriced: it keeps 9; solo has no children
    assert got == {"a": 300 + 40 + 7 + 5 + 3, "b": 100 + 50 + 40 + 3 + 2 + 2, "platform": 9, "c": 20}
    assert sum(got.values()) == PRICED_TOTAL
    out = list(allocated_lines(led.store, load_rules(path), since=None, until=None))
    unpriced = [ln for ln in out if ln.cost_nusd is None]
    assert len(unpriced) == 2 and all(ln.allocated_from is None for ln in unpriced)
    assert {ln.attribution["team"] for ln in unpriced} == {"platform", "a"}  # orch's own, c5's
    moved = [ln for ln in out if ln.allocated_from]
    assert {ln.allocated_from for ln in moved} == {"orchestrators:sub_agents,agent=orchestrator"}
    assert sum(ln.cost_nusd or 0 for ln in moved) == 10 + 7 + 5
    assert all(not ln.extra for ln in out)  # summed back over sessions: the export keeps its shape
    per_day = {d: sum(ln.cost_nusd or 0 for ln in out if ln.start.day == d) for d in (2, 3)}
    assert per_day == {2: 10 + 300 + 100 + 5 + 40 + 40 + 9 + 20, 3: 7 + 50}
    assert led.store.query(f"SELECT {', '.join(COLUMNS)} FROM events ORDER BY seq") == before


def test_every_parent_when_from_is_left_out(led: tt.Ledger, tmp_path: Path) -> None:
    got = by_team(led, rules_file(EVERY_PARENT, tmp_path))
    # c1 is a parent too: its own 300 goes to g1's team b; orch still splits by the spend as
    # recorded (a 300 : b 150), before any split
    assert got == {"a": 40 + 7 + 5 + 3, "b": 100 + 50 + 40 + 300 + 3 + 2 + 2, "platform": 9, "c": 20}
    assert sum(got.values()) == PRICED_TOTAL


def test_sub_agents_then_a_usage_rule(led: tt.Ledger, tmp_path: Path) -> None:
    text = ORCHESTRATORS + '\n[[allocations]]\nname = "shared"\nfrom = { team = "platform" }\nto = "team"\n'
    got = by_team(led, rules_file(text, tmp_path))
    # day 1 after the trees: a 310 (300+7+3), b 145 (100+3+40+2), c 20, shared platform 9 over them
    # by usage: 9 × 310/475 = 5.87, 145/475 = 2.75, 20/475 = .38 -> 5, 2, 0 and 2 left: a (.87), b (.75)
    assert got["platform"] == 0 or "platform" not in got
    assert sum(got.values()) == PRICED_TOTAL
    assert got["c"] == 20 and got["a"] == 355 + 6 and got["b"] == 197 + 3


@pytest.mark.parametrize("fmt", ["focus", "csv"])
def test_export_formats(led: tt.Ledger, tmp_path: Path, fmt: str) -> None:
    buf = io.BytesIO()
    plan = load_rules(rules_file(ORCHESTRATORS, tmp_path))
    written = write(allocated_lines(led.store, plan, since=None, until=None), fmt, buf)
    assert written.cost_nusd == PRICED_TOTAL
    rows = list(csv.DictReader(io.StringIO(buf.getvalue().decode())))
    if fmt == "focus":
        team, cost, origin = (lambda r: json.loads(r["Tags"])["team"]), "BilledCost", "x_AllocatedFrom"
    else:
        team, cost, origin = (lambda r: r["team"]), "cost_usd", "allocated_from"
    marked = [r for r in rows if r[origin]]
    assert {r[origin] for r in marked} == {"orchestrators:sub_agents,agent=orchestrator"}
    assert sum(Decimal(r[cost]) for r in marked) == Decimal("0.000000022")
    assert {team(r) for r in marked} == {"a", "b"}
    assert sum(Decimal(r[cost] or 0) for r in rows) == Decimal("0.000000581")


def test_cli_report_and_export(led: tt.Ledger, tmp_path: Path) -> None:
    path = rules_file(ORCHESTRATORS, tmp_path)
    run = CliRunner()
    res = run.invoke(cli.app, ["report", "--db", led.store.url, "--by", "team", "--rules", str(path), "-f", "json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["totals"]["cost_usd"] == "0.000000581"
    assert {r["team"]: r["cost_usd"] for r in data["rows"]}["a"] == "0.000000355"
    out = tmp_path / "f.csv"
    res = run.invoke(cli.app, ["export", "--db", led.store.url, "--rules", str(path), "-f", "focus", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert sum(Decimal(r["BilledCost"]) for r in csv.DictReader(io.StringIO(out.read_text()))) == Decimal("581e-9")
    bad = tmp_path / "bad.toml"
    bad.write_text(ORCHESTRATORS.replace('by = "team"', 'by = "planet"'))
    res = run.invoke(cli.app, ["report", "--db", led.store.url, "--rules", str(bad)])
    said = " ".join(res.output.split())  # rich wraps the message
    assert res.exit_code == 2 and "bad.toml, entry 1" in said and "'planet' is not an attribution dimension" in said


def test_api_export_gives_a_team_its_share(led: tt.Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from starlette.testclient import TestClient

    from tokentrail.server import create_app
    from tokentrail.server.keys import create_key

    monkeypatch.setenv("TOKENTRAIL_ALLOCATION", str(rules_file(ORCHESTRATORS, tmp_path)))
    key = create_key(led.store, role="read", attribution={"team": "a"})[0]
    with TestClient(create_app(led, admin_key="admin-key-for-tests-0123")) as c:
        r = c.get("/api/v1/export", params={"format": "csv", "allocated": "1"}, headers={"X-Tokentrail-Key": key})
    assert r.status_code == 200, r.text
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert {x["team"] for x in rows} == {"a"}
    assert sum(Decimal(x["cost_usd"] or 0) for x in rows) == Decimal("355e-9")
    assert sum(Decimal(x["cost_usd"]) for x in rows if x["allocated_from"]) == Decimal("15e-9")  # 7 + 5 + 3


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"by": "planet"}, "not an attribution dimension"),
        ({"by": "team", "to": "team"}, "not 'to' or 'weights'"),
        ({"by": "team", "weights": {"a": 1}}, "not 'to' or 'weights'"),
        ({}, "needs by"),
        ({"by": "team", "from": {"planet": "x"}}, "not an attribution dimension"),
    ],
)
def test_bad_sub_agents_rules(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_rule({"name": "x", "method": "sub_agents", **extra}, "rules")


def test_by_is_only_for_sub_agents_and_plain_allocate_refuses_them() -> None:
    with pytest.raises(ConfigError, match="'by' is for"):
        parse_rule({"name": "x", "from": {"team": "p"}, "to": "team", "by": "team"}, "rules")
    rule = parse_rule({"name": "x", "method": "sub_agents", "by": "team"}, "rules")
    with pytest.raises(ValueError, match="agent trees"):
        list(allocate(iter([]), [rule]))
