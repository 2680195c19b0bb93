"""A resolved price compiled for the hot path, and the arithmetic of one call's cost.

A model's genai-prices units are compiled once into `_Unit`s, most specific first; pricing a call
is then the leaf decomposition genai-prices does (more specific units are subtracted from their
parents) and a multiplication per unit, so both give identical Decimals. Prices with a unit we
have no count for fall back to genai-prices' own `calc_price` (`slow_cost`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple

from tokentrail.money import usd
from tokentrail.usage import Usage, UsageProblem

_ZERO = Decimal(0)
_USD_ZERO = usd(_ZERO)

_BUCKETS = ("input", "cache_read", "cache_write", "output", "other")


@dataclass(frozen=True, slots=True)
class _Unit:
    """One priced unit of a resolved price, compiled for the hot path."""

    usage_key: str
    source: int  # index into usage_values(); -1 when not supplied (the slow path prices it)
    per_unit: Decimal  # USD per single unit (price / per: exact, `per` is a power of ten)
    tiers: tuple[tuple[int, Decimal], ...]  # (start, USD per unit), highest start first; cliff pricing
    bucket: int  # index into _BUCKETS
    descendants: tuple[int, ...]  # indexes of more specific priced units, all earlier in the tuple


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


def usage_values(u: Usage) -> tuple[int, ...]:
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


def compile_units(model_price: Any) -> tuple[tuple[_Unit, ...], bool, dict[str, str]]:
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


def parts_of(units: Sequence[_Unit], values: Sequence[int], total_input: int) -> list[Decimal]:
    """The cost of one call by bucket (_BUCKETS order), `values` in _SOURCES order. Raises
    UsageProblem when the usage cannot be decomposed (a more specific count exceeds its parent)."""
    leaves = [0] * len(units)
    parts = [_ZERO, _ZERO, _ZERO, _ZERO, _ZERO]
    for i, unit in enumerate(units):
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
    return parts


def plain_cost(parts: list[Decimal], version: str) -> Cost:
    """make_cost in plain form (money.usd: 0.003, never 0.003000 or 3E-3), built once."""
    i, cr, cw, o, other = parts
    total = i + cr + cw + o + other
    z = _USD_ZERO  # most calls have no cache or fee parts: no call for those
    # tuple.__new__: a NamedTuple's own __new__ is Python code, a third of this function's time
    return tuple.__new__(
        Cost, (usd(i) if i else z, usd(o) if o else z, usd(cr) if cr else z, usd(cw) if cw else z,
               usd(total) if total else z, version, usd(other) if other else z)
    )  # fmt: skip


def make_cost(parts: list[Decimal], version: str) -> Cost:
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


def plain(c: Cost) -> Cost:
    return c._replace(
        input_usd=usd(c.input_usd),
        output_usd=usd(c.output_usd),
        cache_read_usd=usd(c.cache_read_usd),
        cache_write_usd=usd(c.cache_write_usd),
        total_usd=usd(c.total_usd),
        other_usd=usd(c.other_usd),
    )


def slow_cost(model_price: Any, version: str, usage: Usage) -> Cost:
    """Models priced by units we do not supply (e.g. per-modality text prices): let
    genai-prices infer and decompose, and split the total by its input/output figures."""
    from genai_prices.types import Usage as GenaiUsage

    values = {k: v for k, v in zip(_SOURCES[:-1], usage_values(usage), strict=False) if v}
    try:
        calc = model_price.calc_price(GenaiUsage(**values))
    except ValueError as e:
        raise UsageProblem("unpriceable") from e
    other = calc["total_price"] - calc["input_price"] - calc["output_price"]
    return make_cost([calc["input_price"], _ZERO, _ZERO, calc["output_price"], other], version)
