"""A missing optional extra is an ImportError (or a CLI message) that names the extra to install,
in one wording everywhere, never a bare ModuleNotFoundError."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "tokentrail"


def _without(modules: list[str], code: str) -> str:
    """The ImportError message `code` raises in a fresh interpreter where `modules` are missing."""
    blocker = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in modules)
    script = blocker + textwrap.dedent(
        f"""
        try:
        {textwrap.indent(textwrap.dedent(code), "    ")}
        except ImportError as e:
            print(type(e).__name__ + ": " + str(e))
        else:
            print("no error")
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("missing", "code", "extra"),
    [
        (["aiohttp"], "from tokentrail.testing import FakeUpstream", "testing"),
        (["aiohttp"], "import tokentrail.testing as t; t.Reply", "testing"),
        (["starlette"], "from tokentrail.server import create_app", "server"),
        (["opentelemetry"], "from tokentrail.integrations.otlp import decode_protobuf; decode_protobuf(b'')", "server"),
    ],
)
def test_a_missing_extra_names_what_to_install(missing: list[str], code: str, extra: str) -> None:
    message = _without(missing, code)
    assert message.startswith("ImportError: ")
    assert f"pip install 'tokentrail[{extra}]'" in message and missing[0] in message
    assert "  " not in message


def test_capture_events_needs_no_extra() -> None:
    assert _without(["aiohttp"], "from tokentrail.testing import capture_events") == "no error"


def test_every_missing_extra_message_comes_from_one_helper() -> None:
    """No hand-written install hint outside tokentrail._extras (they drifted apart before)."""
    offenders = [
        f"{p.relative_to(SRC)}:{n}"
        for p in SRC.rglob("*.py")
        if p.name != "_extras.py"
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if re.search(r"pip install|tokentrail\[", line)
    ]
    assert offenders == []
