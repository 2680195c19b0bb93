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

import fnmatch
import hashlib
import logging
import os
import threading
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, NamedTuple

from tokentrail.exceptions import ConfigError
from tokentrail.money import usd
from tokentrail.usage import Usage, UsageProblem

log = logging.getLogger("tokentrail.pricing")

_PROVIDER_ALIASES = {
    "gemini": "google",
    "google-genai": "google",
    "google_genai": "google",
    "vertex": "google",
    "vertex_ai": "google",
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "azure.ai.openai": "azure",
    "aws.bedrock": "aws",
}
_METADATA_KEYS = {"provider", "model", "effective", "context_window", "max_output_tokens"}
_ZERO = Decimal(0)
_MISSING = object()
_TIME_OF_DAY = object()


def canonical_provider(provider: str) -> str:
    p = provider.strip().lower()
    return _PROVIDER_ALIASES.get(p, p)


_BUCKETS = ("input", "cache_read", "cache_write", "output", "other")


@dataclass(frozen=True, slots=True)
class _Unit:
    """One priced unit of a resolved price, compiled for the hot path."""

    usage_key: str
    source: int  # index into _usage_values(); -1 when not supplied (the slow path prices it)
    per_unit: Decimal  # USD per single unit (price / per: exact, `per` is a power of ten)
    tiers: tuple[tuple[int, Decimal], ...]  # (start, USD per unit), highest start first; cliff pricing
    bucket: int  # index into _BUCKETS
    descendants: tuple[int, ...]  # indexes of more specific priced units, all earlier in the tuple


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


class Cost(NamedTuple):
    """What one call cost, split by part. `total_usd` also holds per-request fees (`other_usd`).
    An immutable named tuple: built on every priced call, so it must be cheap."""

    input_usd: Decimal
    output_usd: Decimal
    cache_read_usd: Decimal
    cache_write_usd: Decimal
    total_usd: Decimal
    price_version: str
    other_usd: Decimal = _ZERO


# -- usage keys genai-prices understands, as our Usage supplies them ---------------------------


_SOURCES = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "cache_write_5m_tokens",
    "input_audio_tokens",
    "output_audio_tokens",
    "output_reasoning_tokens",
    "cache_audio_read_tokens",
    "requests",
)


def _usage_values(u: Usage) -> tuple[int, ...]:
    """Counts for the genai-prices usage keys in _SOURCES order (a tuple: this is the hot path)."""
    return (
        u.input_tokens,
        u.output_tokens,
        u.cache_read_tokens,
        u.cache_write_tokens,
        u.cache_write_1h_tokens,
        u.cache_write_tokens - u.cache_write_1h_tokens,
        u.input_audio_tokens,
        u.output_audio_tokens,
        u.reasoning_tokens,
        0,  # cache reads of audio: providers do not split them out for us, so none are claimed
        1,  # one request per call
    )


_SUPPLIED_KEYS = frozenset(_SOURCES)


def _bucket(dimensions: Mapping[str, str]) -> str:
    token_type = dimensions.get("token_type")
    direction = dimensions.get("direction")
    if direction == "input":
        return token_type if token_type in ("cache_read", "cache_write") else "input"
    if direction == "output":
        return "output"
    return "other"


def _compile(model_price: Any) -> tuple[tuple[_Unit, ...], bool, dict[str, str]]:
    """Turn a genai-prices ModelPrice into priced units ordered most specific first."""
    from genai_prices.types import TieredPrices, _collect_resolved_model_prices
    from genai_prices.units import _get_registry

    registry = _get_registry()
    resolved = _collect_resolved_model_prices(model_price, registry)
    shown: dict[str, str] = {}
    for unit, price in resolved:
        if isinstance(price, TieredPrices):
            steps = "; ".join(f">{t.start}: {t.price}" for t in price.tiers)
            shown[unit.price_key] = f"{price.base}; {steps}" if steps else str(price.base)
        else:
            shown[unit.price_key] = str(price)
    # Units outside the token family that we have no count for (web searches, pages...) price
    # at zero in genai-prices too, so they are left out; per-request fees are kept.
    ordered = sorted(
        (up for up in resolved if up[0].usage_key in _SUPPLIED_KEYS or up[0].dimensions.get("family") == "tokens"),
        key=lambda up: (-len(up[0].dimensions), up[0].usage_key),
    )
    exact = all(unit.usage_key in _SUPPLIED_KEYS for unit, _ in ordered)
    units: list[_Unit] = []
    for i, (unit, price) in enumerate(ordered):
        descendants = tuple(
            j
            for j, (other, _) in enumerate(ordered[:i])
            if other.usage_key != "requests" and unit.dimensions.items() <= other.dimensions.items()
        )
        base, tiers = (price.base, price.tiers) if isinstance(price, TieredPrices) else (price, [])
        units.append(
            _Unit(
                usage_key=unit.usage_key,
                source=_SOURCES.index(unit.usage_key) if unit.usage_key in _SUPPLIED_KEYS else -1,
                per_unit=base / unit.per,
                tiers=tuple((t.start, t.price / unit.per) for t in reversed(tiers)),
                bucket=_BUCKETS.index(_bucket(unit.dimensions)),
                descendants=descendants,
            )
        )
    return tuple(units), exact, shown


def _decimal(value: object, where: str) -> Decimal:
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        raise ConfigError(f"{where}: {value!r} is not a number") from None
    if not d.is_finite() or d < 0:
        raise ConfigError(f"{where}: {value!r} must be a finite non-negative number")
    return d


@dataclass(frozen=True, slots=True)
class Override:
    """One `[[prices]]` entry of the overrides file."""

    model: str
    provider: str | None
    effective: date | None
    prices: Mapping[str, Decimal]
    context_window: int | None
    max_output_tokens: int | None
    file_hash: str

    def matches(self, provider: str, model: str) -> bool:
        if self.provider is not None and self.provider != provider:
            return False
        return fnmatch.fnmatchcase(model.lower(), self.model)

    @property
    def is_glob(self) -> bool:
        return any(c in self.model for c in "*?[")


def load_overrides(path: str | os.PathLike[str]) -> list[Override]:
    """Read and validate an overrides file; errors name the file and the entry."""
    from genai_prices.units import _get_registry

    p = Path(path)
    try:
        raw = p.read_bytes()
        data = tomllib.loads(raw.decode("utf-8"))
    except OSError as e:
        raise ConfigError(f"price overrides {p}: cannot read ({e.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"price overrides {p}: not valid TOML ({e})") from None
    file_hash = hashlib.sha256(raw).hexdigest()[:8]
    entries = data.get("prices", [])
    if not isinstance(entries, list):
        raise ConfigError(f"price overrides {p}: 'prices' must be an array of tables ([[prices]])")
    price_keys = _get_registry()._all_price_keys
    out: list[Override] = []
    for n, entry in enumerate(entries, 1):
        where = f"price overrides {p}, entry {n}"
        if not isinstance(entry, dict) or not isinstance(entry.get("model"), str) or not entry["model"]:
            raise ConfigError(f"{where}: needs a 'model' string")
        unknown = set(entry) - _METADATA_KEYS - price_keys
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        effective = entry.get("effective")
        if isinstance(effective, datetime):
            effective = effective.date()
        if effective is not None and not isinstance(effective, date):
            raise ConfigError(f"{where}: 'effective' must be a date such as 2026-01-01")
        ints: dict[str, int | None] = {}
        for key in ("context_window", "max_output_tokens"):
            v = entry.get(key)
            if v is not None and (type(v) is not int or v <= 0):
                raise ConfigError(f"{where}: '{key}' must be a positive integer")
            ints[key] = v
        provider = entry.get("provider")
        out.append(
            Override(
                model=entry["model"].lower(),
                provider=None if provider in (None, "*") else canonical_provider(str(provider)),
                effective=effective,
                prices={k: _decimal(v, f"{where}, {k}") for k, v in entry.items() if k in price_keys},
                context_window=ints["context_window"],
                max_output_tokens=ints["max_output_tokens"],
                file_hash=file_hash,
            )
        )
    return out


class PriceBook:
    """Prices calls. Thread-safe; lookups are memoised per (provider, model, UTC day)."""

    def __init__(self, overrides: str | os.PathLike[str] | None = None) -> None:
        path = overrides if overrides is not None else os.environ.get("TOKENTRAIL_PRICES") or None
        self.overrides_path = Path(path) if path else None
        self.overrides = load_overrides(path) if path else []
        self._memo: dict[tuple[str, str, int], object] = {}
        self._time_of_day: set[tuple[str, str]] = set()  # models whose price changes within a day
        self._lock = threading.Lock()

    # -- lookup -------------------------------------------------------------------------------

    def lookup(self, provider: str, model: str, at: datetime | None = None) -> Price | None:
        """The price in force for `model` at `at` (default now), or None when it is unpriced."""
        t = time.time() if at is None else (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()
        key = (provider, model, int(t // 86_400))
        price = self._memo.get(key, _MISSING)
        if price is _TIME_OF_DAY:  # this model's price changes within a day: memoise per minute
            key = (provider, model, -int(t // 60))
            price = self._memo.get(key, _MISSING)
        if price is _MISSING:
            moment = datetime.fromtimestamp(t, UTC)
            price = self._resolve(canonical_provider(provider), model, moment)
            with self._lock:
                if len(self._memo) > 50_000:  # unbounded model names must not grow memory forever
                    self._memo.clear()
                if (canonical_provider(provider), model) in self._time_of_day and key[2] >= 0:
                    self._memo[key] = _TIME_OF_DAY
                    key = (provider, model, -int(t // 60))
                self._memo[key] = price
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
        units, exact, shown = _compile(model_price)
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
        units, exact, shown = _compile(model_price)
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
        )

    # -- arithmetic ---------------------------------------------------------------------------

    def cost(self, price: Price, usage: Usage) -> Cost:
        """Price one call's usage. Raises UsageProblem when the usage cannot be decomposed."""
        if not price.exact:
            return _slow_cost(price, usage)
        values = _usage_values(usage)
        total_input = usage.input_tokens
        leaves = [0] * len(price.units)
        parts = [_ZERO, _ZERO, _ZERO, _ZERO, _ZERO]
        for i, unit in enumerate(price.units):
            count = values[unit.source]
            for j in unit.descendants:
                count -= leaves[j]
            if count < 0:
                raise UsageProblem(f"unpriceable:{unit.usage_key}")
            leaves[i] = count
            if not count:
                continue
            rate = unit.per_unit
            for start, tier_rate in unit.tiers:  # as genai-prices: the tier is chosen by total input
                if total_input > start:
                    rate = tier_rate
                    break
            parts[unit.bucket] += rate * count
        return _make_cost(parts, price.version)

    def price(self, provider: str, model: str, usage: Usage, at: datetime | None = None) -> Cost | None:
        """Cost of one call, or None when the model has no price. Exact, in plain form (0.003,
        0.00009, never 0.003000 or 9.00E-5); `cost()`, the ledger's hot path, leaves that out."""
        p = self.lookup(provider, model, at)
        return None if p is None else _plain(self.cost(p, usage))

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


def _make_cost(parts: list[Decimal], version: str) -> Cost:
    input_usd, cache_read_usd, cache_write_usd, output_usd, other_usd = parts
    return Cost(
        input_usd=input_usd,
        output_usd=output_usd,
        cache_read_usd=cache_read_usd,
        cache_write_usd=cache_write_usd,
        total_usd=input_usd + cache_read_usd + cache_write_usd + output_usd + other_usd,
        price_version=version,
        other_usd=other_usd,
    )


def _plain(c: Cost) -> Cost:
    return c._replace(
        input_usd=usd(c.input_usd),
        output_usd=usd(c.output_usd),
        cache_read_usd=usd(c.cache_read_usd),
        cache_write_usd=usd(c.cache_write_usd),
        total_usd=usd(c.total_usd),
        other_usd=usd(c.other_usd),
    )


def _slow_cost(price: Price, usage: Usage) -> Cost:
    """Models priced by units we do not supply (e.g. per-modality text prices): let
    genai-prices infer and decompose, and split the total by its input/output figures."""
    from genai_prices.types import Usage as GenaiUsage

    values = {k: v for k, v in zip(_SOURCES[:-1], _usage_values(usage), strict=False) if v}
    try:
        calc = price.model_price.calc_price(GenaiUsage(**values))
    except ValueError as e:
        raise UsageProblem("unpriceable") from e
    other = calc["total_price"] - calc["input_price"] - calc["output_price"]
    return _make_cost([calc["input_price"], _ZERO, _ZERO, calc["output_price"], other], price.version)


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
    from tokentrail.exceptions import InvalidUsage
    from tokentrail.usage import from_counts

    try:
        usage = from_counts(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cache_read_tokens=cache_read_tokens,
            cache_write_tokens=cache_write_tokens,
            reasoning_tokens=reasoning_tokens,
        )
        return (book or default_price_book()).price(provider, model, usage, at)
    except UsageProblem as e:
        raise InvalidUsage(f"impossible usage for {provider}/{model}: {e.reason}") from None
