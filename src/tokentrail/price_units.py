"""A resolved price compiled for the hot path, and the arithmetic of one call's cost.

A model's genai-prices units are compiled once into `_Unit`s, most specific first; pricing a call
is then the leaf decomposition genai-prices does (more specific units are subtracted from their
parents) and a multiplication per unit, so both give identical Decimals. Prices with a unit we
have no count for fall back to genai-prices' own `calc_price` (`slow_cost`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple

from tokentrail.money import Usd, exact_normalize, usd
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


# -- the public path: one price's arithmetic as straight-line code ----------------------------

PlainPricer = Callable[[Sequence[int], int, str], Cost]
"""(values in _SOURCES order, total input tokens, price version) -> the call's Cost in plain form."""

_PRICERS: dict[tuple[_Unit, ...], PlainPricer] = {}  # by units: every model of one price shares one
_MAX_PRICERS = 4096


def plain_pricer(units: tuple[_Unit, ...]) -> PlainPricer:
    """The function that prices one call of these (exact) units in plain form: exactly
    `plain_cost(parts_of(units, values, total_input), version)` (the same Decimals, exponent and
    str() included, the same errors), in well under half the time."""
    pricer = _PRICERS.get(units)
    if pricer is None:
        if len(_PRICERS) >= _MAX_PRICERS:  # bounded: model names (and so prices) can be hostile
            _PRICERS.clear()
        if all(r >= 0 for u in units for r in (u.per_unit, *(t for _, t in u.tiers))):
            pricer = _generate(units)
        else:  # never from genai-prices or an overrides file; the shortcuts below assume it
            pricer = functools.partial(_by_parts, units)
        _PRICERS[units] = pricer
    return pricer


def _by_parts(units: tuple[_Unit, ...], values: Sequence[int], total_input: int, version: str) -> Cost:
    return plain_cost(parts_of(units, values, total_input), version)


def _generate(units: tuple[_Unit, ...]) -> PlainPricer:
    """parts_of and plain_cost unrolled for these units (no rate is negative, so neither is any
    part). A Python loop over units, descendants and tiers costs more than the Decimal arithmetic it
    drives, so that loop runs here, once per price. The source holds only indexes; every price,
    tier start and message is a name bound in `env`."""
    env: dict[str, Any] = {"UsageProblem": UsageProblem, "Cost": Cost, "Usd": Usd, "normalize": exact_normalize,
                           "z": _USD_ZERO, "whole": _whole_dollars}  # fmt: skip
    lines = ["def plain(v, total_input, version):"]
    terms: list[list[tuple[str, str]]] = [[], [], [], [], []]  # by bucket, in unit order: (count, product)
    for n, unit in enumerate(units):
        if unit.source < 0:
            raise ValueError("only exact units are compiled")  # callers check Price.exact
        # the leaf count: more specific units (all earlier) are subtracted from their parents
        leaf = f"v[{unit.source:d}]" + "".join(f" - c{j:d}" for j in unit.descendants)
        env[f"k{n}"] = f"unpriceable:{unit.usage_key}"
        lines += [f"    c{n} = {leaf}", f"    if c{n} < 0:", f"        raise UsageProblem(k{n})"]
        env[f"r{n}"] = unit.per_unit
        rate = f"r{n}"
        for m, (start, tier_rate) in enumerate(unit.tiers):  # as genai-prices: chosen by total input
            env[f"s{n}_{m}"], env[f"r{n}_{m}"] = start, tier_rate
            lines += [f"    {'el' if m else ''}if total_input > s{n}_{m}:", f"        q{n} = r{n}_{m}"]
            rate = f"q{n}"
        if unit.tiers:
            lines += ["    else:", f"        q{n} = r{n}"]
        terms[unit.bucket].append((f"c{n}", f"{rate} * c{n}"))
    parts = []  # each bucket's name, or "None" for a bucket no unit prices
    for b, bucket_terms in enumerate(terms):
        for k, (count, product) in enumerate(bucket_terms):
            if k == 0:
                lines.append(f"    b{b} = {product} if {count} else None")
            else:
                lines += [f"    if {count}:", f"        b{b} = {product} if b{b} is None else b{b} + {product}"]
        parts.append(f"b{b}" if bucket_terms else "None")
    # plain_cost, without its additions of zero (they change no value; the order is kept) and
    # without rendering zeros; usd()'s whole-dollar rule can only apply from $10 up
    lines += ["    total = None", "    nonzero = 0"]
    for part in parts:
        if part != "None":
            lines += [f"    if {part}:", f"        total = {part} if total is None else total + {part}",
                      "        nonzero += 1"]  # fmt: skip
    i, cr, cw, o, other = parts

    def fields(amount: str) -> str:  # Cost's fields, each part of a priced bucket written as `amount`
        order = (i, o, cr, cw, "t", "version", other)
        return ", ".join(p if p in ("t", "version") else "z" if p == "None" else amount.format(p) for p in order)

    lines += [
        "    if total is None:",
        "        return tuple.__new__(Cost, (z, z, z, z, z, version, z))",
        "    if total.adjusted() > 0:",
        f"        return whole({', '.join(parts)}, version)",
        "    t = Usd(normalize(total))",
        "    if nonzero == 1:  # the one part is the total",
        f"        return tuple.__new__(Cost, ({fields('t if {0} else z')}))",
        f"    return tuple.__new__(Cost, ({fields('Usd(normalize({0})) if {0} else z')}))",
    ]
    exec(compile("\n".join(lines), "<tokentrail price>", "exec"), env)
    pricer: PlainPricer = env["plain"]
    return pricer


def _whole_dollars(*parts_and_version: Any) -> Cost:
    """$10 or more: plain_cost itself, whose usd() writes whole numbers without an exponent."""
    *parts, version = parts_and_version
    return plain_cost([x or _ZERO for x in parts], version)


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
