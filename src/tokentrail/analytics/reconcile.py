"""Reconciliation: the ledger against the provider's own bill, per day × model.

Both sides are summed to the cells of `by` (day and/or model); each cell gets a verdict:
- `match`: tokens and cost agree within the tolerance;
- `missing_from_ledger`: the provider billed it, the ledger has no call (a key that bypasses
  tokentrail, an uninstrumented framework, an untracked day);
- `missing_from_provider`: the ledger has calls the provider did not bill;
- `token_mismatch`: both have it but a token count differs (e.g. cache reads metered as input);
- `price_drift`: the tokens agree but the cost does not (a price change the price book missed).
Coverage is the share of the provider's spend the ledger metered: per cell the provider's cost
times min(1, ledger tokens / provider tokens), over the provider's cost (tokens weigh when the
reports carry no cost). The ledger side comes from `reports.report`, never its own SQL.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from tokentrail.analytics.reconcile_files import ProviderFile, ProviderLine
from tokentrail.types import Store

VERDICTS = ("match", "missing_from_ledger", "missing_from_provider", "token_mismatch", "price_drift")
BY = ("day", "model")
DEFAULT_TOLERANCE = Decimal("0.01")
TOKENS = ("input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens")
# The token counts each provider reports (OpenAI and Google never report cache writes).
COMPARED = {
    "openai": ("input_tokens", "cache_read_tokens", "output_tokens"),
    "anthropic": TOKENS,
    "google": ("input_tokens", "cache_read_tokens", "output_tokens"),
}
_GOOGLE_VERSION = re.compile(r"-0\d\d$")
Key = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Side:
    """One side of a cell: tokens (inclusive), requests or calls, cost (None: not known)."""

    input_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    requests: int | None = None
    cost_usd: Decimal | None = None

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, o: Side) -> Side:
        def plus(a: Any, b: Any) -> Any:
            return b if a is None else a if b is None else a + b

        return Side(*(plus(getattr(self, f), getattr(o, f)) for f in Side.__slots__))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {f: getattr(self, f) for f in Side.__slots__}
        d["cost_usd"] = None if self.cost_usd is None else str(self.cost_usd)
        return d


@dataclass(frozen=True, slots=True)
class Cell:
    """One day × model (or whatever `by` asked): both sides, their difference and the verdict."""

    key: tuple[tuple[str, str], ...]
    provider: Side | None
    ledger: Side | None
    verdict: str
    reason: str = ""

    @property
    def token_diff(self) -> int:
        """Ledger minus provider tokens."""
        return (self.ledger.tokens if self.ledger else 0) - (self.provider.tokens if self.provider else 0)

    @property
    def cost_diff(self) -> Decimal | None:
        """Ledger minus provider cost (None when either is unknown)."""
        p = self.provider.cost_usd if self.provider else Decimal(0)
        lc = self.ledger.cost_usd if self.ledger else Decimal(0)
        return None if p is None or lc is None else lc - p

    def to_dict(self) -> dict[str, Any]:
        diff = self.cost_diff
        return {
            **dict(self.key),
            "verdict": self.verdict,
            "reason": self.reason,
            "provider": self.provider.to_dict() if self.provider else None,
            "ledger": self.ledger.to_dict() if self.ledger else None,
            "token_diff": self.token_diff,
            "cost_diff_usd": None if diff is None else str(diff),
        }


@dataclass(frozen=True, slots=True)
class Reconciliation:
    provider: str
    since: datetime
    until: datetime
    by: tuple[str, ...]
    tolerance: Decimal
    files: tuple[str, ...]
    compared: tuple[str, ...]  # "tokens", "cost": what the files let us compare
    cells: tuple[Cell, ...]
    provider_cost_usd: Decimal | None
    ledger_cost_usd: Decimal | None
    coverage: Decimal | None
    counts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "by": list(self.by),
            "tolerance": str(self.tolerance),
            "files": list(self.files),
            "compared": list(self.compared),
            "provider_cost_usd": _s(self.provider_cost_usd),
            "ledger_cost_usd": _s(self.ledger_cost_usd),
            "coverage": _s(self.coverage),
            "verdicts": dict(self.counts),
            "cells": [c.to_dict() for c in self.cells],
        }


def _s(v: Decimal | None) -> str | None:
    return None if v is None else str(v)


def parse_tolerance(text: str) -> Decimal:
    """`1%`, `0.5%` or a fraction (`0.01`); ValueError otherwise."""
    t = text.strip()
    try:
        v = Decimal(t[:-1]) / 100 if t.endswith("%") else Decimal(t)
    except ArithmeticError:
        v = Decimal(-1)
    if not v.is_finite() or not 0 <= v < 1:
        raise ValueError(f"--tolerance {text!r}: expected a percentage such as 1% or 0.5% (below 100%)")
    return v


def canonical_model(provider: str, model: str) -> str:
    """One spelling per model on both sides (Google: no `models/` prefix, no `-001` version)."""
    if provider == "google":
        model = _GOOGLE_VERSION.sub("", model.removeprefix("models/"))
    return model


def window(files: Sequence[ProviderFile], since: datetime | None, until: datetime | None) -> tuple[datetime, datetime]:
    """[since, until) in whole UTC days: the options' or else the span the files cover."""
    for flag, t in (("--since", since), ("--until", until)):
        if t is not None and t.astimezone(UTC).timetz().replace(tzinfo=None) != time():
            raise ValueError(f"{flag}: the providers report whole UTC days: give a midnight UTC, e.g. 2026-01-01")
    days = [line.day for f in files for line in f.lines]
    lo = since.astimezone(UTC) if since else _midnight(min(days)) if days else None
    hi = until.astimezone(UTC) if until else _midnight(max(days)) + timedelta(days=1) if days else None
    if lo is None or hi is None:
        raise ValueError("the files hold no usage: give --since and --until to reconcile an empty window")
    if lo >= hi:
        raise ValueError("--since must be before --until")
    return lo, hi


def _midnight(d: date) -> datetime:
    return datetime.combine(d, time(), UTC)


def reconcile(
    store: Store,
    provider: str,
    files: Sequence[ProviderFile],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    by: Sequence[str] = BY,
    tolerance: Decimal = DEFAULT_TOLERANCE,
) -> Reconciliation:
    """Compare the provider's reports (`files`) with the ledger over whole UTC days."""
    from tokentrail.analytics import reports

    by = tuple(dict.fromkeys(by))
    bad = [b for b in by if b not in BY]
    if bad or not by:
        raise ValueError(
            f"--by {','.join(by)!r}: reconciliation groups by day and/or model (the ledger does not know the "
            "provider's projects or API keys)"
        )
    lo, hi = window(files, since, until)
    has_usage = any(f.kind in ("usage", "billing") for f in files)
    has_cost = any(f.kind in ("cost", "billing") for f in files)
    theirs: dict[Key, Side] = {}
    for line in (ln for f in files for ln in f.lines if lo <= _midnight(ln.day) < hi):
        k = _key(by, line.day, canonical_model(provider, line.model))
        theirs[k] = theirs.get(k, Side(cost_usd=Decimal(0) if has_cost else None)) + _side(line)
    rep = reports.report(store, by=("day", "model"), where={"provider": [provider]}, since=lo, until=hi, tz="UTC")
    ours: dict[Key, Side] = {}
    for r in rep.rows:
        if not r.calls:
            continue  # tool runs and adjustments alone are no model calls
        day, model = r.value("day"), r.value("model")
        assert isinstance(day, datetime)
        k = _key(by, day.date(), canonical_model(provider, str(model or "")))
        s = Side(r.input_tokens, r.cache_read_tokens, r.cache_write_tokens, r.output_tokens, r.calls, r.cost_usd)
        ours[k] = _plus(ours[k], s) if k in ours else s
    compared = tuple(x for x, yes in (("tokens", has_usage), ("cost", has_cost)) if yes)
    cells = [
        _judge(tuple(zip(by, k, strict=True)), theirs.get(k), ours.get(k), COMPARED[provider], compared, tolerance)
        for k in sorted({*theirs, *ours})
        if k in ours or theirs[k].tokens or theirs[k].cost_usd  # an all-zero provider line alone says nothing
    ]
    counts = {v: sum(c.verdict == v for c in cells) for v in VERDICTS}
    p_cost = sum((s.cost_usd or Decimal(0) for s in theirs.values()), Decimal(0)) if has_cost else None
    l_cost = sum((s.cost_usd or Decimal(0) for s in ours.values()), Decimal(0))
    return Reconciliation(
        provider,
        lo,
        hi,
        by,
        tolerance,
        tuple(f.path for f in files),
        compared,
        tuple(cells),
        p_cost,
        l_cost,
        coverage(cells, has_usage=has_usage, has_cost=has_cost),
        counts,
    )


def _key(by: Sequence[str], day: date, model: str) -> Key:
    return tuple(day.isoformat() if b == "day" else model for b in by)


def _plus(a: Side, b: Side) -> Side:
    """Two ledger sides: an unpriced one makes the sum unpriced (never a smaller cost)."""
    total = a + b
    return total if a.cost_usd is not None and b.cost_usd is not None else replace(total, cost_usd=None)


def _side(line: ProviderLine) -> Side:
    if not line.usage:
        return Side(cost_usd=line.cost_usd)
    return Side(
        line.input_tokens,
        line.cache_read_tokens,
        line.cache_write_tokens,
        line.output_tokens,
        line.requests,
        line.cost_usd,
    )


def _close(a: Decimal | int, b: Decimal | int, tolerance: Decimal) -> bool:
    return abs(Decimal(a) - Decimal(b)) <= tolerance * max(abs(Decimal(a)), abs(Decimal(b)))


def _judge(
    key: tuple[tuple[str, str], ...],
    p: Side | None,
    led: Side | None,
    fields: Sequence[str],
    compared: Sequence[str],
    tolerance: Decimal,
) -> Cell:
    if led is None:
        return Cell(key, p, led, "missing_from_ledger", "the ledger has no call")
    if p is None or (not p.tokens and not p.cost_usd):
        return Cell(key, p, led, "missing_from_provider", "the provider billed nothing")
    if "tokens" in compared:
        off = [f for f in fields if not _close(getattr(p, f), getattr(led, f), tolerance)]
        if off:
            why = "; ".join(f"{f.removesuffix('_tokens')} {getattr(led, f):,} vs {getattr(p, f):,} billed" for f in off)
            return Cell(key, p, led, "token_mismatch", why)
    if "cost" in compared and p.cost_usd is not None:
        if led.cost_usd is None:
            return Cell(key, p, led, "price_drift", "the ledger has no price for it")
        if not _close(p.cost_usd, led.cost_usd, tolerance):
            pct = "" if not p.cost_usd else f" {(led.cost_usd - p.cost_usd) / p.cost_usd * 100:+.1f}%"
            return Cell(key, p, led, "price_drift", f"cost{pct or ' unlike'} vs the bill")
    return Cell(key, p, led, "match")


def coverage(cells: Iterable[Cell], *, has_usage: bool, has_cost: bool) -> Decimal | None:
    """The share of the provider's spend (tokens when there is no cost) the ledger metered."""
    total = metered = Decimal(0)
    for c in cells:
        p = c.provider
        if p is None:
            continue
        weight = Decimal(p.cost_usd or 0) if has_cost else Decimal(p.tokens)
        if not weight:
            continue
        total += weight
        if c.ledger is None:
            continue
        if has_usage and p.tokens:
            share = min(Decimal(1), Decimal(c.ledger.tokens) / p.tokens)
        elif has_cost and c.ledger.cost_usd is not None:
            share = min(Decimal(1), c.ledger.cost_usd / weight)
        else:
            share = Decimal(1)
        metered += weight * share
    if not total:
        return None
    return (metered / total).quantize(Decimal("0.000001"))
