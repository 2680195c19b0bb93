"""The read-side commands: report, sessions, session, prices, migrate. Output content and exit
codes (0 on success, 2 on bad input, an id that names nothing included, 1 on a runtime failure)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

import tokentrail as tt
from tokentrail import cli
from tokentrail.events import UsageEvent
from tokentrail.pricing import PriceBook

if not any(c.name == "report" for c in cli.app.registered_commands):
    cli._load()

T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
ENV = {"COLUMNS": "200", "TOKENTRAIL_DB": None, "TOKENTRAIL_PRICES": None}


@pytest.fixture(scope="module")
def ledger_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small ledger: two teams, a session with a step, a tool run, an unpriced model."""
    url = f"sqlite:///{tmp_path_factory.mktemp('cli') / 'ledger.db'}"
    with tt.Ledger(url, prices=PriceBook(overrides="")) as led:
        with tt.session(
            agent="analyzer", team="legal", session_id="sess-1", tags={"customer": "acme"}, ledger=led
        ) as s:
            with tt.step("review"):
                led.record_llm(
                    provider="openai",
                    model="gpt-4o",
                    input_tokens=1000,
                    output_tokens=500,
                    cache_read_tokens=200,
                    ts=T0,
                    tool_calls=[("call_1", "web_search", {"q": "nda"})],
                )
                led.record_tool("web_search", {"q": "nda"}, cost_usd="0.002")
            s.outcome("contract_reviewed")
        with tt.session(agent="bot", team="cx", session_id="sess-2", ledger=led):
            led.record_llm(
                provider="acme", model="house-llm", input_tokens=40, output_tokens=2, ts=T0 + timedelta(hours=1)
            )
        led.record(UsageEvent(kind="tool", ts=T0 + timedelta(hours=2), tool_name="ocr", cost_usd=Decimal("0.0000001")))
    return url


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli.app, list(args), env=ENV)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


# -- report -----------------------------------------------------------------------------------


def test_report_table(ledger_url: str) -> None:
    code, out, err = run("report", "--by", "team,model", "--db", ledger_url)
    assert code == 0, err
    assert "legal" in out and "gpt-4o" in out and "house-llm" in out
    assert "$0.009250" in out  # gpt-4o: 800 in, 200 cached, 500 out = 0.00725; plus the $0.002 tool
    assert "total" in out
    assert "$0.0092501" in out  # the tiny tool cost is shown in the total, not rounded away
    assert "1 call has no price" in out and "tokentrail prices --unpriced" in out


def test_report_csv_and_json_are_machine_readable(ledger_url: str) -> None:
    code, out, err = run("report", "--by", "team", "--format", "csv", "--db", ledger_url)
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert {r["team"]: int(r["calls"]) for r in rows} == {"legal": 1, "cx": 1, "": 0}
    assert {r["team"]: int(r["tool_runs"]) for r in rows} == {"legal": 1, "cx": 0, "": 1}
    assert Decimal(next(r for r in rows if r["team"] == "legal")["cost_usd"]) == Decimal("0.00925")
    assert "no price" in err  # notes go to stderr, so stdout stays clean
    code, out, _ = run("report", "--by", "tag.customer", "--format", "json", "--db", ledger_url)
    data = json.loads(out)
    assert data["by"] == ["tag.customer"]
    assert data["totals"]["cost_usd"] == "0.0092501"  # plain: no exponent, no trailing zeros
    assert {r["tag.customer"]: r["calls"] + r["tool_runs"] for r in data["rows"]} == {"acme": 2, None: 2}


def test_report_filters_and_time_range(ledger_url: str) -> None:
    code, out, _ = run(
        "report", "--by", "day", "--where", "team=legal", "--since", "2026-01-05", "--until", "2026-01-06",
        "--tz", "Europe/Paris", "--format", "json", "--db", ledger_url,
    )  # fmt: skip
    assert code == 0
    data = json.loads(out)
    assert [(r["day"], r["calls"]) for r in data["rows"]] == [("2026-01-05T00:00:00+01:00", 1)]
    assert data["where"] == {"team": ["legal"]}
    code, out, _ = run("report", "--since", "2026-01-05T10:30:00+00:00", "--format", "json", "--db", ledger_url)
    totals = json.loads(out)["totals"]
    assert totals["calls"] + totals["tool_runs"] == 3  # house-llm at 11:00, ocr at 12:00, web_search (now)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--by", "team,colour"], "unknown dimension 'colour'"),
        (["--where", "team"], "expected KEY=VALUE"),
        (["--where", "size=xl"], "unknown dimension 'size'"),
        (["--since", "last tuesday"], "--since: cannot read the time"),
        (["--until", "2026-13-01"], "--until"),
        (["--since", "1d", "--until", "2d"], "not before"),
        (["--tz", "Mars/Olympus"], "unknown time zone"),
        (["--db", "mysql://somewhere/db"], "database URL"),
    ],
)
def test_report_bad_input_exits_2(ledger_url: str, args: list[str], message: str) -> None:
    db = [] if "--db" in args else ["--db", ledger_url]
    code, out, err = run("report", *args, *db)
    assert code == 2
    assert message in err
    assert "Traceback" not in err + out


def test_bad_flags_exit_2(ledger_url: str) -> None:
    assert run("report", "--format", "xml", "--db", ledger_url)[0] == 2
    assert run("report", "--no-such-flag")[0] == 2
    assert run("sessions", "--limit", "0", "--db", ledger_url)[0] == 2


def test_a_missing_ledger_is_an_error_not_a_new_file(tmp_path: Path) -> None:
    path = tmp_path / "nothing-here.db"
    code, _, err = run("report", "--db", str(path))
    assert code == 2
    assert "no ledger at" in err
    assert not path.exists()


# -- sessions ---------------------------------------------------------------------------------


def test_sessions_list(ledger_url: str) -> None:
    code, out, _ = run("sessions", "--db", ledger_url)
    assert code == 0
    assert out.index("sess-2") < out.index("sess-1")  # newest first
    assert "analyzer" in out and "contract_reviewed" in out
    code, out, _ = run("sessions", "--team", "legal", "--format", "json", "--db", ledger_url)
    [only] = json.loads(out)
    assert only["session_id"] == "sess-1"
    assert (only["calls"], only["tool_calls"], only["cost_usd"]) == (1, 1, "0.00925")
    assert only["outcomes"] == {"contract_reviewed": 1}
    code, out, _ = run("sessions", "--agent", "nobody", "--db", ledger_url)
    assert code == 0 and "No sessions" in out


def test_session_tree(ledger_url: str) -> None:
    code, out, _ = run("session", "sess-1", "--db", ledger_url)
    assert code == 0
    assert "Session sess-1" in out
    lines = out.splitlines()
    review = next(i for i, line in enumerate(lines) if "▸ review" in line)
    call = next(i for i, line in enumerate(lines) if "openai/gpt-4o" in line)
    tool = next(i for i, line in enumerate(lines) if "tool web_search" in line)
    assert review < call < tool
    indent = [len(lines[i]) - len(lines[i].lstrip("│├└─ ")) for i in (review, call, tool)]
    assert indent[0] < indent[1] < indent[2]  # the tool run hangs under the call that asked for it
    assert "asked for web_search" in lines[call]
    code, out, _ = run("session", "sess-1", "--format", "json", "--db", ledger_url)
    tree = json.loads(out)["tree"]
    assert tree[0]["kind"] == "step" and tree[0]["children"][0]["children"][0]["name"] == "web_search"


def test_unknown_session_exits_2(ledger_url: str) -> None:
    code, _, err = run("session", "no-such-session", "--db", ledger_url)
    assert code == 2  # an id that names nothing is a usage error
    assert "no session 'no-such-session'" in err


# -- prices and migrate -----------------------------------------------------------------------


def test_prices_of_a_model() -> None:
    code, out, _ = run("prices", "gpt-4o", "--provider", "openai")
    assert code == 0
    assert "openai/gpt-4o" in out and "genai-prices" in out
    assert "$2.50" in out and "$10.00" in out and "per 1M tokens" in out
    code, out, _ = run("prices", "gpt-4o", "--format", "json")
    assert json.loads(out)["price"]["unit_prices"]["input_mtok"] == "2.5"


def test_prices_of_an_unknown_model_says_how_to_add_one() -> None:
    code, out, _ = run("prices", "house-llm", "--provider", "acme")
    assert code == 1
    assert "unpriced" in out and "TOKENTRAIL_PRICES" in out and 'model = "house-llm"' in out


def test_prices_unpriced_lists_models_from_the_ledger(ledger_url: str) -> None:
    code, out, _ = run("prices", "--unpriced", "--db", ledger_url)
    assert code == 0
    assert "acme" in out and "house-llm" in out and "2026-01-05 11:00" in out
    code, out, _ = run("prices", "--unpriced", "--format", "json", "--db", ledger_url)
    [model] = json.loads(out)
    assert (model["provider"], model["model"], model["calls"]) == ("acme", "house-llm", 1)
    assert run("prices")[0] == 2
    assert run("prices", "gpt-4o", "--unpriced")[0] == 2


def test_migrate_creates_and_reports(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new' / 'ledger.db'}"
    code, out, _ = run("migrate", "--db", url)
    assert code == 0
    from tokentrail.store.migrations import MIGRATIONS

    assert "0001_events  applied now" in out and f"Applied {len(MIGRATIONS)} migrations" in out
    code, out, _ = run("migrate", "--db", url)
    assert code == 0
    assert "Nothing to do" in out and "already applied" in out


def test_console_script(ledger_url: str) -> None:
    exe = Path(sys.executable).parent / "tokentrail"
    done = subprocess.run(
        [str(exe), "report", "--by", "model", "--format", "json", "--db", ledger_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert {r["model"] for r in json.loads(done.stdout)["rows"]} == {"gpt-4o", "house-llm", None}
