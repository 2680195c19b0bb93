"""Issue 10's rules that a linter cannot see: the CLI's key commands need no server extra, every
exception of the package is a TokentrailError, and the declared dependencies are exactly the
third-party packages src/ imports. (The import layers themselves: `lint-imports`, in `make check`.)"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import pkgutil
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from importlib.metadata import files, packages_distributions
from pathlib import Path

import pytest

import tokentrail as tt
from tokentrail.exceptions import TokentrailError

SRC = Path(tt.__file__).parent
ROOT = SRC.parent.parent

# A child that runs the console script with every module of the named packages unimportable.
_BLOCKED_LAUNCHER = """
import importlib.abc, sys
BLOCKED = set(sys.argv[1].split(","))
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None
sys.meta_path.insert(0, Blocker())
sys.argv = ["tokentrail", *sys.argv[2:]]
from tokentrail.cli import main
main()
"""


def _run_blocked(blocked: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _BLOCKED_LAUNCHER, blocked, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONPATH": str(SRC.parent), "COLUMNS": "200"},
    )


def test_keys_commands_run_without_the_server_extra(tmp_path: Path) -> None:
    """`tokentrail keys create|list|revoke` only touch the ledger: they work with starlette (and
    the rest of the [server] extra) missing."""
    db = str(tmp_path / "l.db")
    blocked = "starlette,uvicorn,aiohttp,prometheus_client"
    made = _run_blocked(blocked, "keys", "create", "--team", "legal", "--role", "read", "--db", db)
    assert made.returncode == 0, made.stderr
    listed = _run_blocked(blocked, "keys", "list", "--json", "--db", db)
    assert listed.returncode == 0, listed.stderr
    assert '"legal"' in listed.stdout
    # the blocker works: the server itself cannot load in such a child
    served = _run_blocked(blocked, "serve", "--db", db)
    assert served.returncode != 0 and "starlette" in served.stderr


def _all_modules() -> list[str]:
    names = ["tokentrail"]
    for info in pkgutil.walk_packages([str(SRC)], prefix="tokentrail."):
        names.append(info.name)
    return sorted(names)


def test_every_exception_of_the_package_is_a_tokentrail_error() -> None:
    """One tree: whatever tokentrail defines to raise derives from TokentrailError (a caller can
    catch them all with one clause)."""
    strays: list[str] = []
    for name in _all_modules():
        try:
            module = importlib.import_module(name)
        except ImportError as e:  # an optional extra that is not installed: nothing of it can raise
            pytest.skip(f"{name}: {e}")
        for attr, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == name
                and not issubclass(value, TokentrailError)
            ):
                strays.append(f"{name}.{attr}")
    assert not strays, f"not TokentrailError subclasses: {strays}"


def _imported_modules() -> dict[str, set[str]]:
    """Third-party modules imported anywhere in src/ (lazily or not), with where."""
    found: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                # `from google import genai` imports the module google.genai
                names = [f"{node.module}.{a.name}" if node.module == "google" else node.module for a in node.names]
            else:
                continue
            for n in names:
                top = n.split(".")[0]
                if top not in ("tokentrail", "__future__") and top not in sys.stdlib_module_names:
                    found.setdefault(n, set()).add(str(path.relative_to(SRC)))
    return found


def _distribution_of(module: str, dists: Mapping[str, list[str]]) -> str | None:
    """The distribution that installs `module`; for a namespace package shared by several (google,
    opentelemetry), the one whose files hold the module."""
    candidates = dists.get(module.split(".")[0], [])
    if len(candidates) <= 1:
        return candidates[0] if candidates else None
    path = module.replace(".", "/")
    for dist in candidates:
        for f in files(dist) or []:
            if str(f).startswith((path + "/", path + ".py")):
                return dist
    return None


def _canonical(dist: str) -> str:
    return dist.lower().replace("_", "-").replace(".", "-")


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for name, extra in project["optional-dependencies"].items():
        if name not in ("all", "dev"):  # `all` names extras; `dev` holds the tools, not runtime imports
            reqs += extra
    out = set()
    for r in reqs:
        name = r.split(";")[0]
        for stop in "<>=!~[ ":
            name = name.split(stop)[0]
        out.add(_canonical(name))
    return out


# Declared on purpose although src/ never imports them: uvicorn's speedups, the time zones the
# standard library's zoneinfo reads, and the PostgreSQL driver's binary build.
_DECLARED_UNIMPORTED = {"uvloop", "httptools", "tzdata"}
# Imported when present, declared nowhere on purpose: tiktoken tightens estimates only if it is
# installed with its encodings already on disk (tokentrail.budgets.estimate).
_USED_IF_INSTALLED = {"tiktoken"}


def test_declared_dependencies_are_exactly_the_imported_ones() -> None:
    if not (ROOT / "pyproject.toml").exists():
        pytest.skip("not a source checkout")
    dists = packages_distributions()
    imported: dict[str, set[str]] = {}
    unknown = []
    for module, where in _imported_modules().items():
        if module.split(".")[0] in _USED_IF_INSTALLED:
            continue
        dist = _distribution_of(module, dists)
        if dist is None:
            unknown.append(f"{module} (imported by {sorted(where)})")
            continue
        imported.setdefault(_canonical(dist), set()).update(where)
    assert not unknown, f"imported but not installed, so not declared either: {unknown}"
    declared = _declared()
    undeclared = {d: sorted(w) for d, w in imported.items() if d not in declared}
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"
    unused = declared - set(imported) - _DECLARED_UNIMPORTED
    assert not unused, f"declared in pyproject.toml but never imported by src/: {sorted(unused)}"


def test_an_outcome_finds_its_ledger_though_the_context_sits_below_it(tmp_path: Path) -> None:
    """Session.outcome records on the session's ledger, else the enclosing one's, else the default
    ledger, which tokentrail.default_ledger tells the context how to find (the context imports no ledger)."""
    default = tt.configure(db=f"sqlite:///{tmp_path / 'default.db'}")
    try:
        with tt.Ledger(f"sqlite:///{tmp_path / 'own.db'}") as own:
            with tt.session(agent="a", ledger=own), tt.session(agent="inner") as inner:
                inner.outcome("inherited")  # the enclosing session's ledger
            with tt.session(agent="b") as plain:
                plain.outcome("defaulted")
            own.flush()
            assert own.store.query("SELECT name FROM outcomes") == [("inherited",)]
        default.flush()
        assert default.store.query("SELECT name, session_id FROM outcomes") == [("defaulted", plain.session_id)]
    finally:
        default.close()
