"""`make test` on a fresh machine: the dashboard tests need Chromium, so scripts/ensure-chromium
(run by scripts/test) installs Debian's package when it can and otherwise says how in one line.
Run with a faked PATH: nothing is installed or removed for real."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "ensure-chromium"


def _tool(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)


def _run(bin_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PATH",)}
    env["PATH"] = str(bin_dir)  # only the fakes: no real chromium, apt-get or id
    return subprocess.run(["/bin/bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def fake_bin(tmp_path: Path) -> Path:
    d = tmp_path / "bin"
    d.mkdir()
    return d


def test_chromium_present_nothing_to_do(fake_bin: Path) -> None:
    _tool(fake_bin, "chromium", "exit 0")
    _tool(fake_bin, "apt-get", f"echo called >> {fake_bin}/apt.log")
    r = _run(fake_bin)
    assert (r.returncode, r.stderr) == (0, "")
    assert not (fake_bin / "apt.log").exists()


def test_as_root_with_apt_it_installs_debians_chromium(fake_bin: Path) -> None:
    _tool(fake_bin, "id", "echo 0")
    # the fake apt-get logs what it was asked and "installs" chromium when asked to
    _tool(
        fake_bin,
        "apt-get",
        f'echo "$*" >> {fake_bin}/apt.log\n'
        f'case "$*" in *install*chromium*) printf "#!/bin/sh\\n" > {fake_bin}/chromium; '
        f"/bin/chmod +x {fake_bin}/chromium;; esac",
    )
    r = _run(fake_bin)
    assert r.returncode == 0, r.stderr
    log = (fake_bin / "apt.log").read_text().splitlines()
    assert log[0] == "update -qq"
    assert log[1].startswith("install -y") and log[1].split()[-1] == "chromium"


@pytest.mark.parametrize(
    ("root", "apt", "how"),
    [
        (False, True, "sudo apt-get install chromium"),
        (True, False, "`chromium` is on PATH"),
    ],
)
def test_otherwise_it_stops_with_one_line_saying_how(fake_bin: Path, root: bool, apt: bool, how: str) -> None:
    _tool(fake_bin, "id", f"echo {0 if root else 1000}")
    if apt:
        _tool(fake_bin, "apt-get", f"echo called >> {fake_bin}/apt.log")
    r = _run(fake_bin)
    assert r.returncode == 1
    assert len(r.stderr.splitlines()) == 1 and how in r.stderr, r.stderr
    assert r.stdout == ""
    assert not (fake_bin / "apt.log").exists()  # a non-root user is never run apt-get for


def test_the_test_command_runs_it() -> None:
    """scripts/test (what `make test` and .ci/run run) ensures Chromium before any test."""
    text = (SCRIPT.parent / "test").read_text()
    assert text.index("scripts/ensure-chromium") < text.index("pytest=")
