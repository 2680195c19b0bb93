"""Shared fixtures. Store-facing tests take `db_url`, which runs them on every backend:
SQLite always, PostgreSQL when TOKENTRAIL_TEST_PG names a server (make test starts one).
With CI=true a missing PostgreSQL fails the run instead of skipping."""

from __future__ import annotations

import gc
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import pytest

import tokentrail as tt
from tokentrail.pricing import PriceBook
from tokentrail.testing import FakeUpstream

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

PG_ENV = "TOKENTRAIL_TEST_PG"


def _postgres_url(request: pytest.FixtureRequest) -> Iterator[str]:
    base = os.environ.get(PG_ENV)
    if not base:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {PG_ENV} is not set: the PostgreSQL tests must run in CI")
        pytest.skip(f"PostgreSQL tests skipped: set {PG_ENV}=postgresql://… (or run `make test`, which starts one)")
    from tests.pg import fresh_database

    yield from fresh_database(base, request.node.name)


@pytest.fixture(autouse=True)
def _private_spool(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test spools into a folder of its own, never the user's ~/.tokentrail/spool."""
    monkeypatch.setenv("TOKENTRAIL_SPOOL_DIR", str(tmp_path_factory.mktemp("spool")))


_SERVER_MODULES = ("tokentrail.server", "tests._server")
_serves: dict[str, bool] = {}


def _uses_the_server(module: ModuleType) -> bool:
    """Whether a test module imports the server or the server tests' helpers."""
    if module.__name__ not in _serves:
        names = (
            v.__name__ if isinstance(v, ModuleType) else getattr(v, "__module__", None) for v in vars(module).values()
        )
        _serves[module.__name__] = any(isinstance(n, str) and n.startswith(_SERVER_MODULES) for n in names)
    return _serves[module.__name__]


@pytest.fixture(autouse=True)
def _collect_clients(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test of a module that uses the server: SDK clients a test drops hold sockets until
    collected, so collect them here, where their ResourceWarning is expected, not in whatever test
    the garbage collector next runs in."""
    yield
    if request.module is not None and _uses_the_server(request.module):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL to an empty ledger, on each backend in turn."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
    else:
        yield from _postgres_url(request)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture
def prices() -> PriceBook:
    return PriceBook(overrides="")


@pytest.fixture
def ledger(sqlite_url: str, prices: PriceBook) -> Iterator[tt.Ledger]:
    """An SQLite ledger for tests that are not about the store."""
    led = tt.Ledger(sqlite_url, prices=prices)
    yield led
    led.close()


@pytest.fixture
def any_ledger(db_url: str, prices: PriceBook) -> Iterator[tt.Ledger]:
    """A ledger on each backend in turn."""
    led = tt.Ledger(db_url, prices=prices)
    yield led
    led.close()


@pytest.fixture
def led(any_ledger: tt.Ledger) -> tt.Ledger:
    """`any_ledger` under the short name the report, trail and adjustment tests use."""
    return any_ledger


@pytest.fixture(scope="module")
def server() -> Iterator[FakeUpstream]:
    """One FakeUpstream per test module (it takes a moment to start)."""
    with FakeUpstream() as up:
        yield up


@pytest.fixture
def up(server: FakeUpstream) -> FakeUpstream:
    """The module's FakeUpstream, its scripted replies and recorded requests cleared."""
    server.reset()
    return server


# -- the dashboard tests' browser: Debian's chromium driven by Playwright ---------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the module, driven by Playwright."""
    from playwright.sync_api import sync_playwright

    from tests._browser import ARGS, chromium_path

    binary = chromium_path()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=binary, args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    p = context.new_page()
    p.set_default_timeout(20_000)
    yield p
    context.close()
