"""FOCUS 1.2 (FinOps Open Cost and Usage Specification) rows from export lines.

Every Mandatory column of FOCUS 1.2, in the spec's names, plus the Conditional and Recommended
ones that carry AI usage (consumed tokens, SKUs per model and token class, tags). tokentrail's
own columns are `x_…`, as the spec's extension rule asks. A FOCUS BilledCost is never null, so
unpriced usage is left out (or, when asked, carried at 0 with `x_Unpriced` true).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, tzinfo
from decimal import Decimal
from functools import lru_cache
from typing import Any

from tokentrail.analytics.export import Line
from tokentrail.events import nano_to_usd

# (column, type, nullable): type is one of Decimal, DateTime, String, JSON, Boolean, Integer.
COLUMNS: tuple[tuple[str, str, bool], ...] = (
    ("BilledCost", "Decimal", False),
    ("BillingAccountId", "String", False),
    ("BillingAccountName", "String", True),
    ("BillingAccountType", "String", True),
    ("BillingCurrency", "String", False),
    ("BillingPeriodEnd", "DateTime", False),
    ("BillingPeriodStart", "DateTime", False),
    ("ChargeCategory", "String", False),
    ("ChargeClass", "String", True),
    ("ChargeDescription", "String", True),
    ("ChargeFrequency", "String", True),
    ("ChargePeriodEnd", "DateTime", False),
    ("ChargePeriodStart", "DateTime", False),
    ("ConsumedQuantity", "Decimal", True),
    ("ConsumedUnit", "String", True),
    ("ContractedCost", "Decimal", False),
    ("ContractedUnitPrice", "Decimal", True),
    ("EffectiveCost", "Decimal", False),
    ("InvoiceIssuerName", "String", False),
    ("ListCost", "Decimal", False),
    ("ListUnitPrice", "Decimal", True),
    ("PricingCategory", "String", True),
    ("PricingCurrency", "String", True),
    ("PricingQuantity", "Decimal", True),
    ("PricingUnit", "String", True),
    ("ProviderName", "String", False),
    ("PublisherName", "String", False),
    ("RegionId", "String", True),
    ("RegionName", "String", True),
    ("ResourceId", "String", True),
    ("ResourceName", "String", True),
    ("ResourceType", "String", True),
    ("ServiceCategory", "String", False),
    ("ServiceName", "String", False),
    ("ServiceSubcategory", "String", True),
    ("SkuId", "String", True),
    ("SkuMeter", "String", True),
    ("SkuPriceId", "String", True),
    ("SubAccountId", "String", True),
    ("SubAccountName", "String", True),
    ("SubAccountType", "String", True),
    ("Tags", "JSON", True),
    ("x_TokenClass", "String", False),
    ("x_Calls", "Integer", False),
    ("x_EstimatedCalls", "Integer", False),
    ("x_Unpriced", "Boolean", False),
    ("x_PriceVersion", "String", True),
    ("x_AllocatedFrom", "String", True),
)
NAMES = tuple(c for c, _, _ in COLUMNS)
CHARGE_CATEGORIES = ("Usage", "Purchase", "Tax", "Credit", "Adjustment")
SERVICE_CATEGORY = "AI and Machine Learning"
_PRICING_UNIT = "1M Tokens"
_MILLION = Decimal(1_000_000)
_DESCRIBE = {
    "input": "input tokens",
    "cached_input": "cached input tokens",
    "cache_write": "cache write tokens",
    "output": "output tokens",
    "tool": "tool runs",
    "request": "requests",
    "adjustment": "cost adjustment",
}
_PROVIDER_NAMES = {
    "openai": "OpenAI",
    "anthropic": "Anthropic",
    "google": "Google",
    "azure": "Microsoft Azure",
    "aws": "Amazon Web Services",
    "mistral": "Mistral AI",
}


def provider_name(provider: str | None) -> str:
    if not provider:
        return "Unknown"
    return _PROVIDER_NAMES.get(provider.lower(), provider)


def tags_json(line: Line) -> str | None:
    """The attribution and the free tags as one JSON object (attribution wins a clash: a free tag
    named like a dimension is kept as `tag.<key>`)."""
    out: dict[str, str] = {k: v for k, v in line.attribution.items() if v}
    for k, v in line.tags.items():
        out[f"tag.{k}" if k in out else k] = v
    return json.dumps(out, sort_keys=True, ensure_ascii=False) if out else None


@lru_cache(maxsize=4096)  # a few distinct period bounds per export: formatted once each
def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@lru_cache(maxsize=4096)
def billing_period(t: datetime, zone: tzinfo = UTC) -> tuple[datetime, datetime]:
    """The calendar month holding `t` in `zone` (the export's time zone, so a local day never
    straddles two billing periods): the billing period, as UTC times."""
    local = t.astimezone(zone).replace(tzinfo=None, day=1, hour=0, minute=0, second=0, microsecond=0)
    nxt = local.replace(year=local.year + 1, month=1) if local.month == 12 else local.replace(month=local.month + 1)
    return local.replace(tzinfo=zone).astimezone(UTC), nxt.replace(tzinfo=zone).astimezone(UTC)


def focus_row(line: Line, *, iso_times: bool = True) -> dict[str, Any]:
    """The FOCUS columns of one line (costs as Decimal USD; unpriced usage at 0, x_Unpriced true)."""
    cost = nano_to_usd(line.cost_nusd) if line.cost_nusd is not None else Decimal(0).scaleb(-9)
    adjustment = line.kind == "adjustment"
    tokens = not adjustment and line.token_class not in ("tool", "request")
    period_start, period_end = billing_period(line.start, line.zone)
    provider = provider_name(line.provider)
    sku = f"{line.provider or 'unknown'}/{line.model or 'unknown'}/{line.token_class}"
    org, team = line.attribution.get("org"), line.attribution.get("team")
    rate = line.unit_price_mtok if tokens and line.cost_nusd is not None else None

    def t(v: datetime) -> Any:
        return _iso(v) if iso_times else v

    return {
        "BilledCost": cost,
        "BillingAccountId": org or "tokentrail",
        "BillingAccountName": org,
        "BillingAccountType": "Organization" if org else None,
        "BillingCurrency": "USD",
        "BillingPeriodEnd": t(period_end),
        "BillingPeriodStart": t(period_start),
        "ChargeCategory": "Adjustment" if adjustment else "Usage",
        "ChargeClass": None,
        "ChargeDescription": f"{line.model or 'unknown model'} {_DESCRIBE.get(line.token_class, line.token_class)}",
        "ChargeFrequency": "Usage-Based",
        "ChargePeriodEnd": t(line.end),
        "ChargePeriodStart": t(line.start),
        "ConsumedQuantity": Decimal(line.tokens) if tokens else (Decimal(line.calls) if not adjustment else None),
        "ConsumedUnit": "Tokens" if tokens else ("Calls" if not adjustment else None),
        "ContractedCost": cost,
        "ContractedUnitPrice": rate,
        "EffectiveCost": cost,
        "InvoiceIssuerName": provider,
        "ListCost": cost,
        "ListUnitPrice": rate,
        "PricingCategory": None if adjustment else "Standard",
        "PricingCurrency": "USD",
        "PricingQuantity": (Decimal(line.tokens) / _MILLION if tokens else Decimal(line.calls))
        if not adjustment
        else None,
        "PricingUnit": (_PRICING_UNIT if tokens else "Calls") if not adjustment else None,
        "ProviderName": provider,
        "PublisherName": provider,
        "RegionId": None,
        "RegionName": None,
        "ResourceId": line.model,
        "ResourceName": line.model,
        "ResourceType": "Model" if line.model else None,
        "ServiceCategory": SERVICE_CATEGORY,
        "ServiceName": f"{provider} {'tools' if line.kind == 'tool' else 'models'}",
        "ServiceSubcategory": "Generative AI" if line.kind != "tool" else "Other (AI and Machine Learning)",
        "SkuId": sku,
        "SkuMeter": _DESCRIBE.get(line.token_class, line.token_class),
        "SkuPriceId": f"{line.price_version}/{line.token_class}" if line.price_version else None,
        "SubAccountId": team,
        "SubAccountName": team,
        "SubAccountType": "Team" if team else None,
        "Tags": tags_json(line),
        "x_TokenClass": line.token_class,
        "x_Calls": line.calls,
        "x_EstimatedCalls": line.estimated_calls,
        "x_Unpriced": line.cost_nusd is None,
        "x_PriceVersion": line.price_version,
        "x_AllocatedFrom": line.allocated_from,
    }


def column_problems(row: Mapping[str, Any]) -> list[str]:
    """What breaks the FOCUS 1.2 column rules in a row read back from a file (strings as written
    to CSV, or typed values from Parquet). Empty when the row is valid."""
    problems = []
    for name, kind, nullable in COLUMNS:
        if name not in row:
            problems.append(f"{name}: missing")
            continue
        v = row[name]
        if v in (None, ""):
            if not nullable:
                problems.append(f"{name}: null in a non-null column")
            continue
        try:
            if kind == "Decimal":
                Decimal(str(v))
            elif kind == "DateTime" and isinstance(v, str):
                if not v.endswith("Z"):
                    raise ValueError("not UTC (…Z)")
                datetime.strptime(v, "%Y-%m-%dT%H:%M:%SZ")
            elif kind == "JSON" and not isinstance(json.loads(v), dict):
                raise ValueError("not a JSON object")
        except (ValueError, ArithmeticError) as e:
            problems.append(f"{name}: {v!r} ({e})")
    if row.get("ChargeCategory") not in CHARGE_CATEGORIES:
        problems.append(f"ChargeCategory: {row.get('ChargeCategory')!r} is not an allowed value")
    if row.get("ServiceCategory") != SERVICE_CATEGORY:
        problems.append("ServiceCategory: not 'AI and Machine Learning'")
    if (row.get("PricingQuantity") in (None, "")) != (row.get("PricingUnit") in (None, "")):
        problems.append("PricingUnit: must be null exactly when PricingQuantity is")
    if (row.get("ConsumedQuantity") in (None, "")) != (row.get("ConsumedUnit") in (None, "")):
        problems.append("ConsumedUnit: must be null exactly when ConsumedQuantity is")
    if row.get("ChargeCategory") == "Usage" and row.get("ConsumedQuantity") in (None, ""):
        problems.append("ConsumedQuantity: required for Usage charges")
    for a, b in (("ChargePeriodStart", "ChargePeriodEnd"), ("BillingPeriodStart", "BillingPeriodEnd")):
        if row.get(a) and row.get(b) and str(row[a]) >= str(row[b]):
            problems.append(f"{a}: not before {b}")
    if str(row.get("ChargePeriodStart")) < str(row.get("BillingPeriodStart")) or str(row.get("ChargePeriodEnd")) > str(
        row.get("BillingPeriodEnd")
    ):
        problems.append("ChargePeriod: not inside the BillingPeriod")
    return problems


__all__ = ["COLUMNS", "NAMES", "billing_period", "column_problems", "focus_row", "provider_name", "tags_json"]
