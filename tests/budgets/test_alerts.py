"""Budget alerts: each threshold fires exactly once per period per budget (across processes too), is
stored and listed, and is delivered to the log, a webhook (retried, never blocking) or a callback."""

from __future__ import annotations

import http.server
import json
import logging
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any, ClassVar

import pytest
from typer.testing import CliRunner

import tokentrail as tt
from tokentrail.budgets import Budgets
from tokentrail.budgets.alerts import Alert, Dispatcher, WebhookSink, list_alerts, threshold_message
from tokentrail.cli import _load as load_cli
from tokentrail.cli import app
from tokentrail.events import UsageEvent


def post(ledger: tt.Ledger, usd: str, budgets: Budgets | None = None) -> None:
    b = budgets or ledger.budgets
    hold = b.reserve(cost_usd=usd)
    b.settle(hold, UsageEvent(input_tokens=10, cost_usd=Decimal(usd)))


def test_message_format() -> None:
    msg = threshold_message(
        "legal-monthly",
        "team=legal",
        "month",
        0.8,
        posted_usd=Decimal("400.12"),
        limit_usd=Decimal(500),
        posted_tokens=None,
        limit_tokens=None,
        session_id=None,
    )
    assert msg == "Budget 'legal-monthly' (team=legal, month) reached 80%: $400.12 of $500.00"


def test_each_threshold_fires_once_per_period(any_ledger: tt.Ledger) -> None:
    b = any_ledger.budgets
    b.set("legal-monthly", scope={"team": "legal"}, period="month", limit_usd=500, action="alert")
    got: list[Alert] = []
    b.on_alert(got.append)
    with tt.session(team="legal", ledger=any_ledger):
        for usd in ("100", "100", "100", "100.12", "50", "100", "100"):  # 20%, 40%, 60%, 80%, 90%, 110%, 130%
            post(any_ledger, usd)
        # a second process posting into the same period does not fire them again
        other = Budgets(any_ledger)
        post(any_ledger, "1", other)
    b.flush()
    stored = list_alerts(any_ledger.store, kind="threshold")
    assert sorted(a.threshold for a in stored) == [0.5, 0.8, 1.0]  # type: ignore[type-var]
    assert sorted(a.threshold for a in got) == [0.5, 0.8, 1.0]  # type: ignore[type-var]
    eighty = next(a for a in stored if a.threshold == 0.8)
    assert eighty.message.startswith("Budget 'legal-monthly' (team=legal, month) reached 80%: $400.12 of $500.00")
    assert "(session " in eighty.message and eighty.session_id is not None
    assert eighty.period_end is not None and eighty.posted_usd == Decimal("400.12")


def test_a_new_period_alerts_again(ledger: tt.Ledger) -> None:
    ledger.budgets.set("per-session", period="session", limit_usd=1, alert_at=(0.5,))
    for _ in range(2):
        with tt.session(ledger=ledger):
            post(ledger, "0.3")
            post(ledger, "0.3")
            post(ledger, "0.3")
    assert len(list_alerts(ledger.store)) == 2


def test_wildcard_budgets_alert_per_bucket(ledger: tt.Ledger) -> None:
    ledger.budgets.set("per-agent", scope={"agent": "*"}, period="day", limit_usd=1, alert_at=(0.8,))
    for agent in ("a", "b"):
        with tt.session(agent=agent, ledger=ledger):
            post(ledger, "0.9")
    assert sorted(a.scope for a in list_alerts(ledger.store)) == ["agent=a", "agent=b"]


def test_the_log_is_the_default_sink(ledger: tt.Ledger, caplog: pytest.LogCaptureFixture) -> None:
    ledger.budgets.set("b", period="day", limit_usd=1, alert_at=(0.5,))
    with caplog.at_level(logging.WARNING, logger="tokentrail.alerts"):
        post(ledger, "0.6")
    assert "Budget 'b' (all, day) reached 50%: $0.60 of $1.00" in caplog.text


class _Hook(http.server.BaseHTTPRequestHandler):
    bodies: ClassVar[list[Any]] = []
    fail_first = 0
    delay = 0.0

    def do_POST(self) -> None:
        time.sleep(type(self).delay)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if type(self).fail_first > 0:
            type(self).fail_first -= 1
            self.send_response(500)
            self.end_headers()
            return
        type(self).bodies.append(body)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hook() -> Iterator[tuple[str, type[_Hook]]]:
    handler = type("Hook", (_Hook,), {"bodies": [], "fail_first": 0, "delay": 0.0})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", handler
    server.shutdown()
    server.server_close()


def test_webhook_is_retried_and_never_blocks(ledger: tt.Ledger, hook: tuple[str, type[_Hook]]) -> None:
    url, handler = hook
    handler.fail_first, handler.delay = 2, 0.3
    ledger.budgets.alerts.add(WebhookSink(url, backoff=0.05))
    ledger.budgets.set("b", period="day", limit_usd=1, alert_at=(0.5,))
    t = time.perf_counter()
    post(ledger, "0.6")
    assert time.perf_counter() - t < 0.25  # the slow, failing webhook did not hold the call up
    ledger.budgets.flush()
    [body] = handler.bodies
    assert body["type"] == "tokentrail.budget_alert" and body["budget"] == "b" and body["threshold"] == 0.5


def test_slack_body(hook: tuple[str, type[_Hook]]) -> None:
    url, handler = hook
    d = Dispatcher([WebhookSink(url, slack=True)])
    alert = Alert.from_row(
        ("id", "key", 0, "threshold", "b", "all", "day", None, None, 0.5, 1, 2, None, None, None, "hi")
    )
    d.dispatch([alert])
    assert d.flush(10)
    assert handler.bodies == [{"text": "hi"}]


def test_a_failing_webhook_is_given_up_on_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    d = Dispatcher([WebhookSink("http://127.0.0.1:9/nothing-listens", retries=1, backoff=0.01, timeout=1)])
    alert = Alert.from_row(
        ("id", "key", 0, "threshold", "b", "all", "day", None, None, 0.5, 1, 2, None, None, None, "x")
    )
    with caplog.at_level(logging.ERROR, logger="tokentrail.alerts"):
        d.dispatch([alert])
        assert d.flush(10)
    assert d.failed == 1 and "after 2 attempt(s)" in caplog.text


def test_cli_alerts(ledger: tt.Ledger) -> None:
    ledger.budgets.set("b", period="day", limit_usd=1, alert_at=(0.5,))
    post(ledger, "0.6")
    ledger.flush()
    load_cli()
    runner = CliRunner()
    result = runner.invoke(app, ["alerts", "--db", ledger.url, "--format", "json"])
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.output)
    assert row["budget"] == "b" and row["message"].startswith("Budget 'b' (all, day) reached 50%")
    bad = runner.invoke(app, ["alerts", "--db", ledger.url, "--kind", "loud"])
    assert bad.exit_code == 2
