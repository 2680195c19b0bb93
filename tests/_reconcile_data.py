"""The reconciliation fixture month (January 2026) of each provider, with planted differences.

`python -m tests._reconcile_data` writes the provider-shaped files under
tests/fixtures/reconcile/ (committed); `seed(ledger, provider)` records what the ledger metered.
Both come from PLAN, so a planted difference is written down once:
- UNTRACKED_DAY: the ledger has no call that day (a key that bypassed tokentrail);
- the provider's NEW_MODEL on NEW_MODEL_DAY, never seen by the ledger;
- from DRIFT_FROM, the provider bills the second model 20% more: the price book missed it;
- on CACHE_DAY the ledger metered the first model's cache reads as plain input.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import tokentrail as tt

FIXTURES = Path(__file__).parent / "fixtures" / "reconcile"
DAYS = [date(2026, 1, 1) + timedelta(days=i) for i in range(31)]
UNTRACKED_DAY = date(2026, 1, 10)
NEW_MODEL_DAY = date(2026, 1, 20)
CACHE_DAY = date(2026, 1, 15)
DRIFT_FROM = date(2026, 1, 25)
DRIFT = Decimal("1.2")
M = Decimal(1_000_000)


@dataclass(frozen=True)
class Model:
    name: str
    ledger_name: str  # how the ledger spells it (Google: the SDK's `-001` version)
    rates: tuple[Decimal, Decimal, Decimal, Decimal]  # $/M: uncached input, cache read, cache write, output
    tokens: tuple[int, int, int, int, int]  # per day: uncached input, cache read, cache 5m, cache 1h, output


PLAN: dict[str, tuple[Model, Model, Model]] = {
    "openai": (
        Model(
            "gpt-4o-2024-08-06",
            "gpt-4o-2024-08-06",
            (Decimal("2.5"), Decimal("1.25"), Decimal(0), Decimal(10)),
            (8000, 2000, 0, 0, 1000),
        ),
        Model(
            "gpt-4o-mini-2024-07-18",
            "gpt-4o-mini-2024-07-18",
            (Decimal("0.15"), Decimal("0.075"), Decimal(0), Decimal("0.6")),
            (50000, 0, 0, 0, 5000),
        ),
        Model(
            "o3-mini-2025-01-31",
            "o3-mini-2025-01-31",
            (Decimal("1.1"), Decimal("0.55"), Decimal(0), Decimal("4.4")),
            (3000, 0, 0, 0, 7000),
        ),
    ),
    "anthropic": (
        Model(
            "claude-sonnet-4-20250514",
            "claude-sonnet-4-20250514",
            (Decimal(3), Decimal("0.3"), Decimal("3.75"), Decimal(15)),
            (8000, 3000, 1000, 500, 900),
        ),
        Model(
            "claude-3-5-haiku-20241022",
            "claude-3-5-haiku-20241022",
            (Decimal("0.8"), Decimal("0.08"), Decimal(1), Decimal(4)),
            (40000, 0, 0, 0, 4000),
        ),
        Model(
            "claude-opus-4-1-20250805",
            "claude-opus-4-1-20250805",
            (Decimal(15), Decimal("1.5"), Decimal("18.75"), Decimal(75)),
            (1000, 0, 0, 0, 500),
        ),
    ),
    "google": (
        Model(
            "gemini-2.5-flash",
            "gemini-2.5-flash-001",
            (Decimal("0.3"), Decimal("0.075"), Decimal(0), Decimal("2.5")),
            (20000, 4000, 0, 0, 2000),
        ),
        Model(
            "gemini-2.5-pro",
            "gemini-2.5-pro",
            (Decimal("1.25"), Decimal("0.31"), Decimal(0), Decimal(10)),
            (6000, 0, 0, 0, 3000),
        ),
        Model(
            "gemini-2.0-flash",
            "gemini-2.0-flash",
            (Decimal("0.1"), Decimal("0.025"), Decimal(0), Decimal("0.4")),
            (9000, 0, 0, 0, 900),
        ),
    ),
}


def billed(provider: str) -> list[tuple[date, Model, tuple[int, int, int, int, int], list[Decimal]]]:
    """What the provider billed: (day, model, tokens, cost per token type: input, cache read, cache write, output)."""
    first, second, new = PLAN[provider]
    out = []
    for d in DAYS:
        for i, m in enumerate((first, second)):
            tokens = tuple(n + (d.day * 10 if n else 0) for n in m.tokens)  # a little different every day
            assert len(tokens) == 5
            out.append((d, m, tokens, costs(m, tokens, drift=i == 1 and d >= DRIFT_FROM)))
        if d == NEW_MODEL_DAY:
            out.append((d, new, new.tokens, costs(new, new.tokens)))
    return out


def costs(m: Model, t: tuple[int, ...], *, drift: bool = False) -> list[Decimal]:
    k = DRIFT if drift else Decimal(1)
    return [
        t[0] * m.rates[0] * k / M,
        t[1] * m.rates[1] * k / M,
        (t[2] + t[3]) * m.rates[2] * k / M,
        t[4] * m.rates[3] * k / M,
    ]


def expected(provider: str) -> dict[tuple[str, str], str]:
    """The verdict of every day × model cell that is not a match."""
    first, second, new = PLAN[provider]
    out = {(UNTRACKED_DAY.isoformat(), m.name): "missing_from_ledger" for m in (first, second)}
    out[(NEW_MODEL_DAY.isoformat(), new.name)] = "missing_from_ledger"
    out[(CACHE_DAY.isoformat(), first.name)] = "token_mismatch"
    for d in DAYS:
        if d >= DRIFT_FROM:
            out[(d.isoformat(), second.name)] = "price_drift"
    return out


def seed(ledger: tt.Ledger, provider: str) -> None:
    """What the ledger metered of the provider's month (see the module docstring)."""
    first, _, new = PLAN[provider]
    for d, m, t, _ in billed(provider):
        if d == UNTRACKED_DAY or m is new:
            continue
        uncached, read, w5, w1, out = t
        cost = sum(costs(m, t), Decimal(0))
        if d >= DRIFT_FROM and m is not first:
            cost = sum(costs(m, t, drift=False), Decimal(0))  # the old price
        if d == CACHE_DAY and m is first:
            uncached, read = uncached + read, 0  # cache reads metered as plain input
            cost = sum(costs(m, (uncached, 0, w5, w1, out)), Decimal(0))
        ledger.record_llm(
            provider=provider,
            model=m.ledger_name,
            input_tokens=uncached + read + w5 + w1,
            cache_read_tokens=read,
            cache_write_tokens=w5 + w1,
            output_tokens=out,
            ts=datetime(d.year, d.month, d.day, 12, tzinfo=UTC),
            cost_usd=cost,
        )
    ledger.flush()


# -- the provider files -------------------------------------------------------------------------


def _pages(buckets: list[dict[str, Any]], per_page: int, *, openai: bool) -> list[dict[str, Any]]:
    pages = []
    for i in range(0, len(buckets), per_page):
        more = i + per_page < len(buckets)
        page: dict[str, Any] = {"object": "page"} if openai else {}
        page |= {
            "data": buckets[i : i + per_page],
            "has_more": more,
            "next_page": f"page_{i // per_page + 2:04d}" if more else None,
        }
        pages.append(page)
    return pages


def _epoch(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp())


def _rfc(d: date) -> str:
    return f"{d.isoformat()}T00:00:00Z"


def openai_files() -> dict[str, Any]:
    usage: dict[date, list[dict[str, Any]]] = {d: [] for d in DAYS}
    cost: dict[date, list[dict[str, Any]]] = {d: [] for d in DAYS}
    for d, m, t, c in billed("openai"):
        usage[d].append(
            {
                "object": "organization.usage.completions.result",
                "input_tokens": t[0] + t[1],
                "output_tokens": t[4],
                "input_cached_tokens": t[1],
                "input_audio_tokens": 0,
                "output_audio_tokens": 0,
                "num_model_requests": 10,
                "project_id": None,
                "user_id": None,
                "api_key_id": None,
                "model": m.name,
                "batch": None,
            }
        )
        for item, amount in ((", input", c[0]), (", cached input", c[1]), (", output", c[3])):
            if amount:
                cost[d].append(
                    {
                        "object": "organization.costs.result",
                        "amount": {"value": float(amount), "currency": "usd"},
                        "line_item": m.name + item,
                        "project_id": "proj_abc123",
                    }
                )

    def buckets(rows: dict[date, list[dict[str, Any]]]) -> list[dict[str, Any]]:
        return [
            {"object": "bucket", "start_time": _epoch(d), "end_time": _epoch(d + timedelta(days=1)), "results": r}
            for d, r in rows.items()
        ]

    return {
        "openai-usage-completions.json": _pages(buckets(usage), 7, openai=True),
        "openai-costs.json": _pages(buckets(cost), 7, openai=True),
    }


def anthropic_files() -> dict[str, Any]:
    usage: dict[date, list[dict[str, Any]]] = {d: [] for d in DAYS}
    cost: dict[date, list[dict[str, Any]]] = {d: [] for d in DAYS}
    for d, m, t, c in billed("anthropic"):
        usage[d].append(
            {
                "uncached_input_tokens": t[0],
                "cache_creation": {"ephemeral_1h_input_tokens": t[3], "ephemeral_5m_input_tokens": t[2]},
                "cache_read_input_tokens": t[1],
                "output_tokens": t[4],
                "server_tool_use": {"web_search_requests": 0},
                "api_key_id": None,
                "workspace_id": None,
                "model": m.name,
                "service_tier": None,
                "context_window": None,
            }
        )
        for token_type, amount in (
            ("uncached_input_tokens", c[0]),
            ("cache_read_input_tokens", c[1]),
            ("cache_creation", c[2]),
            ("output_tokens", c[3]),
        ):
            if amount:
                cost[d].append(
                    {
                        "currency": "USD",
                        "amount": format(amount * 100, "f"),
                        "workspace_id": None,
                        "description": f"{m.name} {token_type}",
                        "cost_type": "tokens",
                        "context_window": "0-200k",
                        "model": m.name,
                        "service_tier": "standard",
                        "token_type": token_type,
                    }
                )

    def buckets(rows: dict[date, list[dict[str, Any]]]) -> list[dict[str, Any]]:
        return [
            {"starting_at": _rfc(d), "ending_at": _rfc(d + timedelta(days=1)), "results": r} for d, r in rows.items()
        ]

    return {
        "anthropic-usage-messages.json": _pages(buckets(usage), 7, openai=False),
        "anthropic-cost-report.json": _pages(buckets(cost), 7, openai=False),
    }


_SKU = {
    "gemini-2.5-flash": "Gemini 2.5 Flash",
    "gemini-2.5-pro": "Gemini 2.5 Pro",
    "gemini-2.0-flash": "Gemini 2.0 Flash",
}
GOOGLE_COLUMNS = (
    "billing_account_id",
    "service.id",
    "service.description",
    "sku.id",
    "sku.description",
    "usage_start_time",
    "usage_end_time",
    "project.id",
    "labels",
    "cost",
    "currency",
    "usage.amount",
    "usage.unit",
)


def google_rows() -> list[dict[str, Any]]:
    rows = []
    for d, m, t, c in billed("google"):
        for hour in (0, 12):  # billing rows are hourly: two per day, each half the tokens
            for kind, n, amount in (
                ("Input Tokens", t[0], c[0]),
                ("Cached Input Tokens", t[1], c[1]),
                ("Output Tokens", t[4], c[3]),
            ):
                if n:
                    start = datetime(d.year, d.month, d.day, hour, tzinfo=UTC)
                    rows.append(
                        {
                            "billing_account_id": "012345-6789AB-CDEF01",
                            "service.id": "AEFD-7695-64FA",
                            "service.description": "Gemini API",
                            "sku.id": "SKU-" + kind[:3].upper(),
                            "sku.description": f"{_SKU[m.name]} {kind}",
                            "usage_start_time": start.strftime("%Y-%m-%d %H:%M:%S UTC"),
                            "usage_end_time": (start + timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S UTC"),
                            "project.id": "acme-agents",
                            "labels": "[]",
                            "cost": format(amount / 2, "f"),
                            "currency": "USD",
                            "usage.amount": n // 2 if hour else n - n // 2,
                            "usage.unit": "count",
                        }
                    )
        if d.day == 1:  # the export holds every service: this one is not the models'
            rows.append(
                {
                    **rows[-1],
                    "service.description": "Compute Engine",
                    "sku.description": "N2 Instance Core",
                    "cost": "3.5",
                    "usage.unit": "seconds",
                }
            )
    return rows


def google_csv() -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, GOOGLE_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(google_rows())
    return buf.getvalue()


def google_jsonl() -> str:
    lines = []
    for r in google_rows():
        nested: dict[str, Any] = {}
        for k, v in r.items():
            if k == "labels":
                v = [{"key": "team", "value": "agents"}]
            elif k == "cost":
                v = float(v)
            head, _, tail = k.partition(".")
            if tail:
                nested.setdefault(head, {})[tail] = v
            else:
                nested[k] = v
        lines.append(json.dumps(nested, default=str))
    return "\n".join(lines) + "\n"


def write_all() -> None:
    FIXTURES.mkdir(parents=True, exist_ok=True)
    for name, pages in {**openai_files(), **anthropic_files()}.items():
        (FIXTURES / name).write_text(json.dumps(pages, indent=1, default=str) + "\n")
    (FIXTURES / "google-billing-export.csv").write_text(google_csv())
    (FIXTURES / "google-billing-export.jsonl").write_text(google_jsonl())


if __name__ == "__main__":
    write_all()
