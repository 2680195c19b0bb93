"""Dated price book: genai-prices underneath, local overrides on top, memoised unit prices.

`genai_prices.calc_price` looks the model up, resolves the dated price and decomposes the
usage on every call (~150 µs). A PriceBook does the lookup and the resolution once per
(provider, model, UTC day) and keeps a compiled list of priced units, so pricing one call is
a handful of Decimal operations. The arithmetic is genai-prices' own: the same leaf
decomposition (more specific units are subtracted from their parents) and the same
`calc_unit_price`, so both give identical Decimals.

Overrides come from a TOML file (`TOKENTRAIL_PRICES`), for negotiated prices and private
models::

    [[prices]]
    provider = "openai"          # optional; omitted matches any provider
    model = "gpt-4o"             # exact (case-insensitive) or a glob such as "acme-*"
    effective = 2026-01-01       # optional; the price applies from this UTC date on
    input_mtok = "2.00"          # USD per million tokens; any genai-prices price key works
    output_mtok = "8.00"
    cache_read_mtok = "0.50"
    context_window = 128000      # optional metadata, used by budget estimates
    max_output_tokens = 16384
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, cast

from tokentrail.exceptions import InvalidUsage
from tokentrail.price_overrides import Override, canonical_provider, load_overrides
from tokentrail.price_units import (
    Cost,
    PlainPricer,
    _Unit,
    compile_units,
    make_cost,
    parts_of,
    plain,
    plain_pricer,
    slow_cost,
    usage_values,
)
from tokentrail.usage import MAX_TOKENS, Usage, UsageProblem, from_counts

__all__ = [
    "Cost",
    "Override",
    "Price",
    "PriceBook",
    "canonical_provider",
    "default_price_book",
    "load_overrides",
    "price",
    "set_default_price_book",
]

log = logging.getLogger("tokentrail.pricing")

_MISSING = object()
_TIME_OF_DAY = object()


@dataclass(frozen=True, slots=True)
class Price:
    """The unit prices of one model as they stood at one time."""

    provider: str
    model: str
    source: str  # "genai-prices" or "override"
    version: str  # identifies exactly which price row was used
    effective_from: date | None
    unit_prices: Mapping[str, str]  # price key -> USD per unit (tiers as "base; >N: price")
    context_window: int | None = None
    max_output_tokens: int | None = None
    units: tuple[_Unit, ...] = field(default=(), repr=False, compare=False)
    exact: bool = field(default=True, repr=False, compare=False)  # False: fall back to genai-prices' own calc
    model_price: Any = field(default=None, repr=False, compare=False)
    plain_cost: PlainPricer | None = field(default=None, repr=False, compare=False)  # exact prices: the public path


class PriceBook:
    """Prices calls. Thread-safe; lookups are memoised per (provider, model, UTC day)."""

    def __init__(self, overrides: str | os.PathLike[str] | None = None) -> None:
        path = overrides if overrides is not None else os.environ.get("TOKENTRAIL_PRICES") or None
        self.overrides_path = Path(path) if path else None
        self.overrides = load_overrides(path) if path else []
        self._memo: dict[tuple[str, str, int], object] = {}
        self._time_of_day: set[tuple[str, str]] = set()  # models whose price changes within a day
        # (provider, model) -> (from, until, price): the memo entry in force now, read without a key
        # of the day; as bounded as the memo (cleared with it; one entry per model the memo holds)
        self._hot: dict[tuple[str, str], tuple[float, float, Price | None]] = {}
        self._lock = threading.Lock()

    # -- lookup -------------------------------------------------------------------------------

    def lookup(self, provider: str, model: str, at: datetime | None = None) -> Price | None:
        """The price in force for `model` at `at` (default now), or None when it is unpriced."""
        if at is None:
            t = time.time()
            hot = self._hot.get((provider, model))
            if hot is not None and hot[0] <= t < hot[1]:
                return hot[2]
        else:
            t = (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()
        day = int(t // 86_400)
        key, span = (provider, model, day), (day * 86_400, day * 86_400 + 86_400)
        price = self._memo.get(key, _MISSING)
        if price is _TIME_OF_DAY:  # this model's price changes within a day: memoise per minute
            minute = int(t // 60)
            key, span = (provider, model, -minute), (minute * 60, minute * 60 + 60)
            price = self._memo.get(key, _MISSING)
        if price is _MISSING:
            moment = datetime.fromtimestamp(t, UTC)
            price = self._resolve(canonical_provider(provider), model, moment)
            with self._lock:
                if len(self._memo) > 50_000:  # unbounded model names must not grow memory forever
                    self._memo.clear()
                    self._hot.clear()
                if (canonical_provider(provider), model) in self._time_of_day and key[2] >= 0:
                    self._memo[key] = _TIME_OF_DAY
                    minute = int(t // 60)
                    key, span = (provider, model, -minute), (minute * 60, minute * 60 + 60)
                self._memo[key] = price
        if at is None:  # the price now, until the day (or minute) ends: one read for the next call
            self._hot[(provider, model)] = (span[0], span[1], cast("Price | None", price))
        return price  # type: ignore[return-value]

    def _resolve(self, provider: str, model: str, at: datetime) -> Price | None:
        if not provider:  # unknown provider: the one genai-prices knows the model by, so its overrides apply
            provider = _genai_provider(model) or ""
        override = self._override(provider, model, at.astimezone(UTC).date())
        base = self._genai(provider, model, at)
        if override is None or not override.prices:
            if base is None or override is None:
                return base
            return _with_metadata(base, override)
        from genai_prices.types import ModelPrice

        model_price = ModelPrice(**override.prices)
        units, exact, shown = compile_units(model_price)
        effective = override.effective.isoformat() if override.effective else "always"
        return Price(
            provider=provider or override.provider or "",
            model=model,
            source="override",
            version=f"override/{override.file_hash}/{override.model}/{effective}",
            effective_from=override.effective,
            unit_prices=shown,
            context_window=override.context_window or (base.context_window if base else None),
            max_output_tokens=override.max_output_tokens or (base.max_output_tokens if base else None),
            units=units,
            exact=exact,
            model_price=model_price,
            plain_cost=plain_pricer(units) if exact else None,
        )

    def _override(self, provider: str, model: str, day: date) -> Override | None:
        candidates = [
            o for o in self.overrides if o.matches(provider, model) and (o.effective is None or o.effective <= day)
        ]
        if not candidates:
            return None
        # exact names beat globs, then the latest effective date wins, then the later entry
        return max(
            enumerate(candidates),
            key=lambda io: (not io[1].is_glob, io[1].effective or date.min, io[0]),
        )[1]

    def _genai(self, provider: str, model: str, at: datetime) -> Price | None:
        from genai_prices import __version__ as gp_version
        from genai_prices import data_snapshot
        from genai_prices.types import StartDateConstraint, TimeOfDateConstraint

        snapshot = data_snapshot.get_snapshot()
        try:
            gp_provider, info = snapshot.find_provider_model(model, None, provider or None, None)
        except LookupError:
            return None
        start: date | None = None
        if isinstance(info.prices, list):
            if any(isinstance(c.constraint, TimeOfDateConstraint) for c in info.prices):
                self._time_of_day.add((provider, model))
            for conditional in reversed(info.prices):
                if conditional.constraint is None or conditional.constraint.active(at):
                    if isinstance(conditional.constraint, StartDateConstraint):
                        start = conditional.constraint.start_date
                    break
        model_price = info.get_prices(at)
        units, exact, shown = compile_units(model_price)
        effective = start.isoformat() if start else "base"
        return Price(
            provider=gp_provider.id,
            model=info.id,
            source="genai-prices",
            version=f"genai-prices/{gp_version}/{info.id}/{effective}",
            effective_from=start,
            unit_prices=shown,
            context_window=info.context_window,
            units=units,
            exact=exact,
            model_price=model_price,
            plain_cost=plain_pricer(units) if exact else None,
        )

    # -- arithmetic ---------------------------------------------------------------------------

    def cost(self, price: Price, usage: Usage) -> Cost:
        """Price one call's usage. Raises UsageProblem when the usage cannot be decomposed."""
        if not price.exact:
            return slow_cost(price.model_price, price.version, usage)
        return make_cost(parts_of(price.units, usage_values(usage), usage.input_tokens), price.version)

    def price(self, provider: str, model: str, usage: Usage, at: datetime | None = None) -> Cost | None:
        """Cost of one call, or None when the model has no price. Exact, in plain form (0.003,
        0.00009, never 0.003000 or 9.00E-5); `cost()`, the ledger's hot path, leaves that out."""
        p = self.lookup(provider, model, at)
        if p is None:
            return None
        if p.plain_cost is not None:
            return p.plain_cost(usage_values(usage), usage.input_tokens, p.version)
        return plain(self.cost(p, usage))

    def history(self, provider: str, model: str) -> list[Price]:
        """Every dated price of a model, oldest first, overrides included."""
        from genai_prices import data_snapshot
        from genai_prices.types import StartDateConstraint

        provider = canonical_provider(provider)
        days: set[date] = set()
        try:
            _, info = data_snapshot.get_snapshot().find_provider_model(model, None, provider or None, None)
        except LookupError:
            pass
        else:
            if isinstance(info.prices, list):
                days.update(
                    c.constraint.start_date for c in info.prices if isinstance(c.constraint, StartDateConstraint)
                )
        days.update(o.effective for o in self.overrides if o.effective and o.matches(provider, model))
        moments = [datetime(2000, 1, 1, tzinfo=UTC)]
        moments += [datetime(d.year, d.month, d.day, tzinfo=UTC) for d in sorted(days)]
        out: list[Price] = []
        for moment in moments:
            p = self._resolve(provider, model, moment)
            if p is not None and (not out or out[-1].version != p.version):
                out.append(p)
        return out


def _genai_provider(model: str) -> str | None:
    from genai_prices import data_snapshot

    try:
        gp_provider, _ = data_snapshot.get_snapshot().find_provider_model(model, None, None, None)
    except LookupError:
        return None
    return str(gp_provider.id)


def _with_metadata(base: Price, override: Override) -> Price:
    from dataclasses import replace

    return replace(
        base,
        context_window=override.context_window or base.context_window,
        max_output_tokens=override.max_output_tokens or base.max_output_tokens,
    )


_default_book: PriceBook | None = None
_default_lock = threading.Lock()


def default_price_book() -> PriceBook:
    """The process-wide price book (overrides from TOKENTRAIL_PRICES)."""
    global _default_book
    if _default_book is None:
        with _default_lock:
            if _default_book is None:
                _default_book = PriceBook()
    return _default_book


def set_default_price_book(book: PriceBook | None) -> None:
    global _default_book
    _default_book = book


def price(
    *,
    provider: str,
    model: str,
    input_tokens: int = 0,
    output_tokens: int = 0,
    cache_read_tokens: int = 0,
    cache_write_tokens: int = 0,
    reasoning_tokens: int = 0,
    at: datetime | None = None,
    book: PriceBook | None = None,
) -> Cost | None:
    """What a call would cost (inclusive counts), or None when the model is unpriced.

    Raises InvalidUsage on impossible counts."""
    b = book or _default_book or default_price_book()
    # The fast path: counts that are plainly possible go straight to the compiled units, without a
    # Usage (its frozen dataclass and its checks cost more than the arithmetic). Anything else
    # takes the checked path below, which gives the same answer or the same error.
    if (
        type(input_tokens) is int
        and type(output_tokens) is int
        and type(cache_read_tokens) is int
        and type(cache_write_tokens) is int
        and type(reasoning_tokens) is int
        and cache_read_tokens >= 0 <= cache_write_tokens
        and cache_read_tokens + cache_write_tokens <= input_tokens <= MAX_TOKENS
        and 0 <= reasoning_tokens <= output_tokens <= MAX_TOKENS
    ):
        hot = b._hot.get((provider, model)) if at is None else None  # lookup()'s first step, inlined
        p = hot[2] if hot is not None and hot[0] <= time.time() < hot[1] else b.lookup(provider, model, at)
        if p is None:
            return None
        if p.plain_cost is not None:
            values = (input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, 0, cache_write_tokens,
                      0, 0, reasoning_tokens, 0, 1)  # fmt: skip
            try:
                return p.plain_cost(values, input_tokens, p.version)
            except UsageProblem as e:
                raise InvalidUsage(f"impossible usage for {provider}/{model}: {e.reason}") from None
    try:
        usage = from_counts(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cache_read_tokens=cache_read_tokens,
            cache_write_tokens=cache_write_tokens,
            reasoning_tokens=reasoning_tokens,
        )
        return b.price(provider, model, usage, at)
    except UsageProblem as e:
        raise InvalidUsage(f"impossible usage for {provider}/{model}: {e.reason}") from None
