"""What a new user tripped on in the first hour (issue 11): tables at 80/100/160 columns, the
money rule, one vocabulary, id prefixes, empty dimensions, --version, exit codes, Ctrl-C, two
demos at once, the unpriced wording and read-only ledgers."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

import tokentrail as tt
from tests.unprivileged import run_as_nobody
from tokentrail import cli
from tokentrail.cli import _common, demo
from tokentrail.pricing import PriceBook
from tokentrail.store import sqlite_path

if not any(c.name == "report" for c in cli.app.registered_commands):
    cli._load()

T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
WIDTHS = (80, 100, 160)
README = Path(__file__).resolve().parents[2] / "README.md"


def run(*args: str, columns: int = 200, **env: str | None) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        cli.app, list(args), env={"COLUMNS": str(columns), "TOKENTRAIL_DB": None, "TOKENTRAIL_PRICES": None, **env}
    )
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def _fleet(led: tt.Ledger) -> None:
    """Long agent and model names, cache writes, an error, tool runs, an unpriced model."""
    agents = [
        ("legal", "contract-analyzer", "anthropic", "claude-sonnet-4-5"),
        ("engineering", "ci-fixer", "openai", "gpt-4.1"),
        ("customer-experience", "support-bot", "openai", "gpt-4o-mini"),
        ("legal", "clause-extractor", "google", "gemini-2.5-flash"),
        ("engineering", "docs-writer", "acme", "house-llama-70b"),
    ]
    for n, (team, agent, provider, model) in enumerate(agents):
        with tt.session(agent=agent, team=team, session_id=f"01a2337d-23dc-7{n}00-8000-00000000000{n}", ledger=led):
            for i in range(2):
                led.record_llm(
                    provider=provider,
                    model=model,
                    input_tokens=40_000 + 1_000 * n,
                    output_tokens=800 + i,
                    cache_read_tokens=30_000 if n == 0 else 0,
                    cache_write_tokens=2_000 if n == 0 and i == 0 else 0,
                    status="error" if n == 1 and i == 1 else "ok",
                    ts=T0 + timedelta(minutes=10 * n + i),
                    tool_calls=[(f"call_{n}_{i}", "run_tests", {"i": i})],
                )
                led.record_tool("run_tests", {"i": i}, tool_call_id=f"call_{n}_{i}")
    with tt.session(agent="support-bot", team="customer-experience", session_id="tiny-session", ledger=led):
        led.record_llm(provider="openai", model="gpt-4o-mini", input_tokens=3, output_tokens=1, ts=T0)


@pytest.fixture(scope="module")
def fleet_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('first-hour') / 'ledger.db'}"
    with tt.Ledger(url, prices=PriceBook(overrides="")) as led:
        _fleet(led)
    return url


# -- tables -----------------------------------------------------------------------------------


def _body(out: str) -> list[list[str]]:
    """The cells of a table's body lines (rows, then the totals line), however it is drawn."""
    return [[c.strip() for c in line.split("│")] for line in out.splitlines() if "│" in line]


def _header(out: str) -> str:
    return " ".join(line for line in out.splitlines() if "┃" in line)


def _shows(cell: str, full: str) -> bool:
    """The full text, or a visible abbreviation of it (a start of it and `…`)."""
    return cell == full or (len(cell) > 1 and cell.endswith("…") and full.startswith(cell[:-1]))


@pytest.mark.parametrize("columns", WIDTHS)
def test_report_labels_never_collapse(fleet_url: str, columns: int) -> None:
    code, out, err = run("report", "--by", "team,agent,model", "--db", fleet_url, columns=columns)
    assert code == 0, err
    code, data, _ = run("report", "--by", "team,agent,model", "--format", "json", "--db", fleet_url)
    rows = json.loads(data)["rows"]
    body = _body(out)
    assert len(body) == len(rows) + 1  # one line per row and the totals: nothing folded onto a second line
    for line, row in zip(body, rows, strict=False):
        for cell, dim in zip(line[:3], ("team", "agent", "model"), strict=True):
            assert _shows(cell, row[dim] or "(none)"), (columns, cell, row[dim])
    assert body[-1][0] == "total"
    assert all(len(line) <= columns for line in out.splitlines() if "│" in line or "┃" in line)
    if columns == 160:  # room enough: nothing abbreviated
        assert "…" not in out


@pytest.mark.parametrize("columns", WIDTHS)
def test_sessions_labels_never_collapse(fleet_url: str, columns: int) -> None:
    code, out, err = run("sessions", "--db", fleet_url, columns=columns)
    assert code == 0, err
    found = json.loads(run("sessions", "--format", "json", "--db", fleet_url)[1])
    body = _body(out)
    assert len(body) == len(found)
    shown = []
    for line, s in zip(body, found, strict=True):
        assert _shows(line[0], s["session_id"])
        assert any(_shows(c, s["agent"]) for c in line), (line, s["agent"])
        assert any(_shows(c, s["team"]) for c in line), (line, s["team"])
        shown.append(line[0].rstrip("…"))
    # an abbreviated id still tells its session apart, and `session` takes it
    assert all(sum(s["session_id"].startswith(p) for s in found) == 1 for p in shown)
    code, out, _ = run("session", shown[-1], "--db", fleet_url, columns=columns)
    assert code == 0 and found[-1]["session_id"] in out


@pytest.mark.parametrize("columns", WIDTHS)
def test_cache_writes_and_errors_are_in_the_table(fleet_url: str, columns: int) -> None:
    _, out, _ = run("report", "--by", "agent", "--db", fleet_url, columns=columns)
    header = _header(out)
    assert "write" in header and "errors" in header
    row = next(line for line in _body(out) if line[0].startswith("contract"))
    assert "2,000" in row  # the 2,000 cache-write tokens that explain the row's cost
    fixer = next(line for line in _body(out) if line[0].startswith("ci-fixer"))
    errors_at = next(i for i, h in enumerate(_header_cells(out)) if h == "errors")
    assert fixer[errors_at] == "1"


def _header_cells(out: str) -> list[str]:
    """Header names per column, two-line headers joined."""
    lines = [[c.strip() for c in line.split("┃")] for line in out.splitlines() if "┃" in line]
    return [" ".join(p for p in parts if p) for parts in zip(*lines, strict=True)]


@pytest.mark.parametrize("columns", WIDTHS)
def test_money_column_has_one_decimals_rule(fleet_url: str, columns: int) -> None:
    for args in (["report", "--by", "agent,model"], ["sessions"]):
        _, out, _ = run(*args, "--db", fleet_url, columns=columns)
        lines = [line for line in out.splitlines() if "│" in line]
        costs = [(line, m) for line in lines for m in re.finditer(r"\$[\d,]+\.(\d+)", line)]
        assert len(costs) >= 4
        places = {len(m.group(1)) for _, m in costs}
        assert len(places) == 1, places  # the same number of decimals on every row
        dots = {line.index(m.group(0)) + m.group(0).index(".") for line, m in costs}
        assert len(dots) == 1  # aligned on the decimal point
        # enough decimals for the smallest amount: two significant digits of the tiny session
        if args[0] == "sessions":  # the tiny session's $0.00000105 keeps two significant digits
            assert places == {7}
    # CSV and JSON keep full precision
    _, out, _ = run("sessions", "--format", "json", "--db", fleet_url)
    tiny = next(s for s in json.loads(out) if s["session_id"] == "tiny-session")
    assert tiny["cost_usd"] == "0.00000105"  # exact, in plain form


def test_the_money_rule_is_in_the_readme() -> None:
    text = " ".join(README.read_text().split())
    assert "two significant digits" in text and "CSV and JSON give the exact stored amount" in text


# -- one vocabulary ---------------------------------------------------------------------------


def test_session_and_sessions_use_the_same_words(fleet_url: str) -> None:
    sid = "01a2337d-23dc-7000-8000-000000000000"
    code, out, _ = run("session", sid, "--db", fleet_url)
    assert code == 0
    assert "2 calls · 2 tool runs" in out  # not "4 calls": tool runs are not model calls
    headers = _header_cells(run("sessions", "--db", fleet_url)[1])
    assert "calls" in headers and "tool runs" in headers
    assert "tool runs" in _header_cells(run("report", "--by", "agent", "--db", fleet_url)[1])
    totals = json.loads(run("session", sid, "--format", "json", "--db", fleet_url)[1])["totals"]
    assert (totals["calls"], totals["tool_runs"]) == (2, 2)


# -- id prefixes (both backends) --------------------------------------------------------------


@pytest.fixture
def prefixed(db_url: str) -> Iterator[tuple[str, list[str]]]:
    with tt.Ledger(db_url, prices=PriceBook(overrides="")) as led:
        ids = []
        for sid in ("abc-1", "abc-2", "xyz-1"):
            with tt.session(agent="a", session_id=sid, ledger=led):
                ids.append(str(led.record_llm(provider="openai", model="gpt-4o", input_tokens=5, ts=T0).event_id))
    yield db_url, ids


def test_session_accepts_a_unique_prefix(prefixed: tuple[str, list[str]]) -> None:
    url, _ = prefixed
    code, out, err = run("session", "xy", "--db", url)
    assert code == 0, err
    assert "Session xyz-1" in out
    code, out, err = run("session", "abc", "--db", url)
    assert code == 2
    assert "ambiguous" in err and "abc-1" in err and "abc-2" in err
    code, _, err = run("session", "nope", "--db", url)
    assert code == 2 and "no session 'nope'" in err


def test_trail_accepts_a_unique_prefix(prefixed: tuple[str, list[str]]) -> None:
    url, ids = prefixed
    first = ids[0]
    unique = next(first[:n] for n in range(1, 37) if sum(i.startswith(first[:n]) for i in ids) == 1)
    code, out, err = run("trail", unique.upper(), "--db", url)
    assert code == 0, err
    assert f"Event {first}" in out
    common = ids[0][: next(n for n in range(36, 0, -1) if all(i.startswith(ids[0][:n]) for i in ids))]
    code, _, err = run("trail", common, "--db", url)
    assert code == 2 and "ambiguous" in err and all(i in err for i in ids)
    code, _, err = run("trail", "ffffffff", "--db", url)
    assert code == 2 and "no event" in err


def test_adjust_accepts_a_unique_prefix(prefixed: tuple[str, list[str]]) -> None:
    url, ids = prefixed
    start = next(ids[0][:n] for n in range(1, 37) if sum(i.startswith(ids[0][:n]) for i in ids) == 1)
    code, out, err = run("adjust", "--event", start, "--cost-usd", "0.5", "--reason", "credit", "--db", url)
    assert code == 0, err
    assert f"of event {ids[0]}" in " ".join(out.split())


# -- flags and exit codes ---------------------------------------------------------------------


@pytest.mark.parametrize("by", ["team,,agent", "team,", ",team", "team, ,agent"])
def test_an_empty_dimension_is_refused(fleet_url: str, by: str) -> None:
    code, _, err = run("report", "--by", by, "--db", fleet_url)
    assert code == 2
    assert "empty dimension" in err


@pytest.mark.parametrize(
    "args", [["--alert-at", "0.5,,0.8"], ["--alert-at", "0.5,"], ["--scope", "team=legal,,agent=x"]]
)
def test_an_empty_item_in_a_budget_list_is_refused(tmp_path: Path, args: list[str]) -> None:
    scope = [] if "--scope" in args else ["--scope", "team=legal"]
    code, _, err = run("budget", "set", "b", *scope, "--limit-usd", "5", *args, "--db", str(tmp_path / "l.db"))
    assert code == 2
    assert "empty item" in err


def test_version() -> None:
    from importlib.metadata import version

    code, out, _ = run("--version")
    assert code == 0
    assert out.strip() == f"tokentrail {version('tokentrail')}"


def test_runtime_failures_exit_1_usage_errors_exit_2(tmp_path: Path) -> None:
    refused = "postgresql://nobody@127.0.0.1:1/ledger?connect_timeout=2"  # nothing listens on port 1
    for args in (["report"], ["sessions"], ["audit", "verify"]):
        code, _, err = run(*args, "--db", refused)
        assert code == 1, (args, err)
        assert "cannot connect" in err
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not an SQLite file " * 200)
    for args in (["report"], ["session", "x"], ["audit", "verify"]):
        code, _, err = run(*args, "--db", str(garbage))
        assert code == 1, (args, err)
        assert "not a database" in err and "Traceback" not in err
    assert run("report", "--no-such-flag")[0] == 2
    assert run("report", "--by", "colour", "--db", str(garbage))[0] == 2
    # a file the command cannot write is a runtime failure too
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    with tt.Ledger(ledger, prices=PriceBook(overrides="")) as led:
        led.record_llm(provider="openai", model="gpt-4o", input_tokens=5)
    out_file = str(tmp_path / "no-such-folder" / "checkpoints.jsonl")
    code, _, err = run("audit", "checkpoint", "--out", out_file, "--db", ledger, TOKENTRAIL_AUDIT_KEY="k" * 32)
    assert code == 1 and "cannot write the checkpoint file" in err


def test_a_gateway_that_cannot_start_exits_1(tmp_path: Path) -> None:
    pytest.importorskip("uvicorn")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [
                str(Path(sys.executable).parent / "tokentrail"),
                "serve",
                "--port",
                str(port),
                "--db",
                str(tmp_path / "l.db"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={**os.environ, "PYTHONPATH": str(Path(tt.__file__).parent.parent)},
        )
    assert done.returncode == 1, done.stderr  # uvicorn's own 3 was no status of ours
    assert "could not serve" in done.stderr and "address already in use" in done.stderr


def test_ctrl_c_while_starting_is_quiet() -> None:
    """SIGINT at several moments of the start ends with status 130 and no traceback. The child
    starts like the console script (import tokentrail.cli, main()); it says "ready" once Python
    has found the package, since before that no code of ours can run."""
    launcher = (
        "import importlib.util, sys; sys.argv[0] = 'tokentrail'; importlib.util.find_spec('tokentrail'); "
        "print('ready', flush=True); from tokentrail.cli import main; main()"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(tt.__file__).parent.parent)}
    for delay in (0.005, 0.02, 0.05, 0.1, 0.2, 0.3):
        for _attempt in range(5):
            child = subprocess.Popen(
                [sys.executable, "-c", launcher, "report", "--db", "/nonexistent/ledger.db"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
            time.sleep(delay)
            child.send_signal(signal.SIGINT)
            _, err = child.communicate(timeout=60)
            ours = [f for f in re.findall(r'File "([^"]+)"', err) if "tokentrail" in f]
            if "Traceback" in err and all(f.endswith(("tokentrail/__init__.py", "_cli_interrupt.py")) for f in ours):
                # a loaded machine: the signal came before the package's first line set the handler
                # (the import had not begun, or was on that line): not ours to handle
                continue
            assert "Traceback" not in err and "KeyboardInterrupt" not in err, (delay, err)
            # interrupted (130), or the answer was already given (the signal came as it exited)
            assert child.returncode == 130 or "no ledger" in err, (delay, child.returncode, err)
            break
        else:
            pytest.fail(f"the signal never reached the import at {delay}s")


# -- the demo ---------------------------------------------------------------------------------


def test_a_second_demo_on_the_same_home_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    with demo._fresh_default() as url:  # the first demo, still writing
        path = sqlite_path(url)
        path.write_bytes(b"the first demo's ledger")
        code, _, err = run("demo", HOME=str(tmp_path))
        assert code == 1
        assert "another `tokentrail demo` is writing" in err and "--db" in err
        assert path.read_bytes() == b"the first demo's ledger"  # not deleted under it


# -- wording ----------------------------------------------------------------------------------


def test_one_wording_for_unpriced_calls(fleet_url: str) -> None:
    _, out, _ = run("prices", "--unpriced", "--db", fleet_url)
    text = " ".join(out.split())
    assert _common.NOT_COUNTED in text and "past calls stay unpriced until repriced" in text
    assert "tokentrail reprice" in text
    assert "$0 in reports" not in text
    _, out, err = run("report", "--db", fleet_url)
    assert _common.NOT_COUNTED in " ".join((out + err).split())
    _, out, _ = run("prices", "house-llama-70b", "--provider", "acme")
    assert _common.NOT_COUNTED in " ".join(out.split()) and "until repriced" in " ".join(out.split())
    readme = " ".join(README.read_text().split())
    assert _common.NOT_COUNTED in readme and "past calls stay unpriced until repriced" in readme


# -- read-only ledgers ------------------------------------------------------------------------


def _read_commands(path: Path, copy_to: Path) -> list[tuple[int, str]]:
    return [
        run("report", "--by", "agent", "--db", str(path))[:2],
        run("audit", "verify", "--db", str(path))[:2],
        run("sessions", "--db", str(path))[:2],
        run("copy", "--from", str(path), "--to", str(copy_to))[:2],  # the source is only read
    ]


def _check(results: list[tuple[int, str]]) -> None:
    (rc, report), (vc, verified), (sc, sessions), *copied = results
    assert rc == 0 and "contract-analyzer" in report
    assert vc == 0 and "verified 21 events" in verified
    assert sc == 0 and "tiny-session" in sessions
    for cc, out in copied:
        assert cc == 0 and "Copied 21 event(s)" in " ".join(out.split()), out


def test_a_ledger_this_user_cannot_write_is_read(fleet_url: str) -> None:
    """An auditor's account: it may read the copy but not write it nor its folder."""
    folder = Path(tempfile.mkdtemp(prefix="tokentrail-ro-", dir="/tmp"))
    theirs = Path(tempfile.mkdtemp(prefix="tokentrail-auditor-", dir="/tmp"))
    try:
        copy = folder / "ledger.db"
        shutil.copy(sqlite_path(fleet_url), copy)
        folder.chmod(0o755)
        copy.chmod(0o644)
        theirs.chmod(0o777)  # where the auditor may write
        _check(run_as_nobody(lambda: _read_commands(copy, theirs / "mine.db")))
        assert sorted(p.name for p in folder.iterdir()) == ["ledger.db"]  # nothing written next to it
    finally:
        shutil.rmtree(folder)
        shutil.rmtree(theirs)


def test_a_ledger_on_a_read_only_mount_is_read(fleet_url: str, tmp_path: Path) -> None:
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("needs root to mount a read-only file system")
    folder = Path(tempfile.mkdtemp(prefix="tokentrail-mnt-"))
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(folder)], check=False).returncode:
        folder.rmdir()
        pytest.skip("this container may not mount file systems (the unprivileged test covers it)")
    try:
        shutil.copy(sqlite_path(fleet_url), folder / "ledger.db")
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        _check(_read_commands(folder / "ledger.db", tmp_path / "copy.db"))
        assert run("migrate", "--db", str(folder / "ledger.db"))[0] == 1  # a write is a runtime failure
    finally:
        # lazy: a file still open somewhere must not leave the mount behind
        subprocess.run(["umount", "-l", str(folder)], check=True)
        folder.rmdir()


def test_a_read_only_postgres_role_reads_the_ledger(db_url: str) -> None:
    """The PostgreSQL side of a read-only ledger: a role that may only SELECT (an auditor's)."""
    if not db_url.startswith("postgresql://"):
        pytest.skip("the SQLite side: the two tests above")
    import secrets
    from urllib.parse import parse_qs, urlsplit

    import psycopg

    from tests.pg import terminate, with_params

    with tt.Ledger(db_url, prices=PriceBook(overrides="")) as led:
        _fleet(led)
    base = os.environ["TOKENTRAIL_TEST_PG"]
    schema = parse_qs(urlsplit(db_url).query)["application_name"][0]
    role = f"tt_auditor_{secrets.token_hex(4)}"
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
        admin.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
        admin.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role}")
    try:
        url = with_params(db_url, user=role)
        results = [
            run("report", "--by", "agent", "--db", url)[:2],
            run("audit", "verify", "--db", url)[:2],
            run("sessions", "--db", url)[:2],
        ]
        _check(results)
    finally:
        terminate(base, schema)
        with psycopg.connect(base, autocommit=True) as admin:
            admin.execute(f"DROP OWNED BY {role}")
            admin.execute(f"DROP ROLE {role}")
