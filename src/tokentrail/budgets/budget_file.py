"""The budgets file (TOKENTRAIL_BUDGETS, `budget load`): budgets, settings and alert webhooks in
TOML, read strictly (an unknown section or key is an error that says where)."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokentrail.budgets.definitions import DEFAULT_ALERT_AT, Budget
from tokentrail.exceptions import ConfigError


@dataclass
class FileConfig:
    budgets: list[Budget]
    settings: dict[str, Any]
    webhooks: list[dict[str, Any]]


def load_file(path: str | os.PathLike[str]) -> FileConfig:
    """Read a budgets file (TOKENTRAIL_BUDGETS)::

    [settings]                 # optional
    fail_closed = false        # refuse calls when the ledger cannot be reached
    hold_timeout = "2m"        # a reservation nobody resolves returns after this

    [[budgets]]
    name = "legal-monthly"
    scope = { team = "legal" }
    period = "month"
    limit_usd = 500
    alert_at = [0.5, 0.8, 1.0]
    action = "block"           # block | alert | throttle
    tz = "Europe/Paris"
    allow_unpriced = false     # a model with no price: refused under a USD limit (true: let it through)

    [[alerts.webhooks]]
    url = "https://hooks.slack.com/services/…"
    slack = true
    """
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text("utf-8"))
    except OSError as err:
        raise ConfigError(f"budgets file {p}: cannot read ({err.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"budgets file {p}: not valid TOML ({err})") from None
    unknown = set(data) - {"budgets", "settings", "alerts"}
    if unknown:
        raise ConfigError(f"budgets file {p}: unknown section(s) {', '.join(sorted(unknown))}")
    entries = data.get("budgets", [])
    if not isinstance(entries, list):
        raise ConfigError(f"budgets file {p}: 'budgets' must be an array of tables ([[budgets]])")
    out = []
    keys = {"name", "scope", "period", "limit_usd", "limit_tokens", "alert_at", "action", "tz", "allow_unpriced"}
    for n, entry in enumerate(entries, 1):
        e: dict[str, Any] = entry if isinstance(entry, dict) else {}
        where = f"budgets file {p}, budget {n}"
        if not isinstance(entry, dict) or not isinstance(e.get("name"), str):
            raise ConfigError(f"{where}: needs a 'name'")
        bad = set(e) - keys
        if bad:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(bad))}")
        try:
            out.append(
                Budget.build(
                    e["name"],
                    scope=e.get("scope"),
                    period=e.get("period", "month"),
                    limit_usd=e.get("limit_usd"),
                    limit_tokens=e.get("limit_tokens"),
                    alert_at=e.get("alert_at", DEFAULT_ALERT_AT),
                    action=e.get("action", "block"),
                    tz=e.get("tz", "UTC"),
                    source=f"file:{p}",
                    allow_unpriced=e.get("allow_unpriced", False),
                )
            )
        except ConfigError as problem:
            raise ConfigError(f"{where}: {problem}") from None
    settings = data.get("settings", {})
    if not isinstance(settings, dict) or set(settings) - {"fail_closed", "hold_timeout"}:
        raise ConfigError(f"budgets file {p}: [settings] takes fail_closed and hold_timeout")
    alerts = data.get("alerts", {})
    hooks = alerts.get("webhooks", []) if isinstance(alerts, dict) else None
    if not isinstance(hooks, list) or any(not isinstance(h, dict) or "url" not in h for h in hooks):
        raise ConfigError(f"budgets file {p}: [[alerts.webhooks]] entries need a url")
    return FileConfig(out, dict(settings), hooks)


__all__ = ["FileConfig", "load_file"]
