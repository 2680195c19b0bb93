"""The public path's compiled pricer (`Price.plain_cost`, what `tt.price` and `PriceBook.price`
call) gives exactly what `plain_cost(parts_of(...))` gives (the path it replaced): the same
Decimals down to the exponent, the same type and str(), the same errors. Over every model
genai-prices knows, random and edge usages, and overrides with odd prices."""

from __future__ import annotations

import random
from decimal import localcontext
from pathlib import Path

import pytest
from genai_prices import data_snapshot

from tokentrail.money import Usd
from tokentrail.price_units import Cost, parts_of, plain_cost, plain_pricer
from tokentrail.pricing import Price, PriceBook
from tokentrail.usage import MAX_TOKENS, UsageProblem


def _reference(p: Price, values: tuple[int, ...], total_input: int) -> Cost | str:
    try:
        return plain_cost(parts_of(p.units, values, total_input), p.version)
    except UsageProblem as e:
        return e.reason


def _compiled(p: Price, values: tuple[int, ...], total_input: int) -> Cost | str:
    assert p.plain_cost is not None
    try:
        return p.plain_cost(values, total_input, p.version)
    except UsageProblem as e:
        return e.reason


def _same(a: Cost | str, b: Cost | str) -> bool:
    """Equal, field by field: type, value, exponent (as_tuple) and str()."""
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return all(
        type(x) is type(y) and (x == y if isinstance(x, str) else x.as_tuple() == y.as_tuple() and str(x) == str(y))
        for x, y in zip(a, b, strict=True)
    ) and all(isinstance(x, Usd) for x in a if not isinstance(x, str))


def _public(i: int, o: int, cr: int, cw: int, r: int) -> tuple[int, ...]:
    """values() as tt.price builds them from its five counts."""
    return (i, o, cr, cw, 0, cw, 0, 0, r, 0, 1)


EDGES = [
    _public(0, 0, 0, 0, 0),
    _public(1, 1, 0, 0, 0),
    _public(200_000, 10, 0, 0, 0),
    _public(200_001, 10, 1, 0, 0),
    _public(128_001, 7, 0, 0, 0),
    _public(MAX_TOKENS, MAX_TOKENS, MAX_TOKENS // 2, MAX_TOKENS // 2, MAX_TOKENS),  # hundreds of dollars
    _public(10, 0, 6, 5, 0),  # cache beyond input: impossible
    (10, 5, 0, 4, 7, 0, 3, 2, 1, 1, 1),  # every source, as a Usage gives them (some impossible)
]


def _random_values(rng: random.Random) -> tuple[int, ...]:
    scale = rng.choice((10, 1_000, 100_000, 1_000_000, MAX_TOKENS))
    i, o = rng.randrange(scale), rng.randrange(scale)
    cr = rng.randrange(i + 1) if rng.random() < 0.6 else 0
    cw = rng.randrange(i - cr + 1) if rng.random() < 0.4 else 0
    r = rng.randrange(o + 1) if rng.random() < 0.4 else 0
    if rng.random() < 0.2:  # the sources tt.price never fills, and now and then an impossible mix
        return (i, o, cr, cw, rng.randrange(cw + 2), rng.randrange(cw + 1), rng.randrange(3), rng.randrange(3),
                r, rng.randrange(2), 1)  # fmt: skip
    return _public(i, o, cr, cw, r)


def test_every_genai_prices_model_prices_as_before() -> None:
    rng = random.Random(17)
    book = PriceBook(overrides="")
    checked = tiered = 0
    for provider in data_snapshot.get_snapshot().providers:
        for model in provider.models:
            p = book.lookup(provider.id, model.id)
            if p is None or p.plain_cost is None:  # unpriced, or genai-prices' own calc (slow path)
                continue
            tiered += any(u.tiers for u in p.units)
            for values in [*EDGES, *(_random_values(rng) for _ in range(6))]:
                ref, got = _reference(p, values, values[0]), _compiled(p, values, values[0])
                assert _same(got, ref), (provider.id, model.id, values, got, ref)
                checked += 1
    assert checked > 10_000 and tiered > 20  # the snapshot was really walked, tiered prices included


@pytest.mark.parametrize(
    "prices",
    [
        'input_mtok = "0.123456789012345"\noutput_mtok = "1000000"',  # $1 a token: whole dollars, 1E+2 before usd()
        'input_mtok = "3"\noutput_mtok = "15"\ncache_read_mtok = "0.30"\ncache_write_mtok = "3.75"',
        'input_mtok = "0"\noutput_mtok = "0.000001"',  # a free unit: zero parts stay Decimal 0
        'input_mtok = "2.5000"\noutput_mtok = "10.00"\ninput_audio_mtok = "40"\noutput_audio_mtok = "80"',
    ],
)
def test_overrides_price_as_before(tmp_path: Path, prices: str) -> None:
    f = tmp_path / "prices.toml"
    f.write_text(f'[[prices]]\nprovider = "acme"\nmodel = "house-*"\n{prices}\n')
    p = PriceBook(overrides=f).lookup("acme", "house-llama")
    assert p is not None and p.plain_cost is not None
    rng = random.Random(prices)
    for values in [*EDGES, *(_random_values(rng) for _ in range(300))]:
        assert _same(_compiled(p, values, values[0]), _reference(p, values, values[0])), values


def test_a_narrow_decimal_context_rounds_as_before() -> None:
    """The arithmetic runs in the caller's decimal context, as parts_of's does."""
    p = PriceBook(overrides="").lookup("openai", "gpt-4o")
    assert p is not None
    values = _public(123_457, 98_765, 1_234, 0, 0)
    exact = _compiled(p, values, values[0])
    with localcontext() as ctx:
        ctx.prec = 3
        narrow = _compiled(p, values, values[0])
        assert _same(narrow, _reference(p, values, values[0]))
    assert narrow != exact  # it did round


def test_models_of_one_price_share_one_pricer_and_the_cache_is_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataclasses import replace

    from tokentrail import price_units

    f = tmp_path / "prices.toml"
    f.write_text('[[prices]]\nmodel = "house-*"\ninput_mtok = "0.30"\noutput_mtok = "1.20"\n')
    book = PriceBook(overrides=f)
    prices = [book.lookup("acme", f"house-{n}") for n in range(50)]
    assert len({id(p.plain_cost) for p in prices if p is not None}) == 1
    units = prices[0].units if prices[0] is not None else ()
    monkeypatch.setattr(price_units, "_MAX_PRICERS", 40)
    for n in range(45):  # more distinct prices than the cache keeps
        plain_pricer(tuple(replace(u, per_unit=u.per_unit + n) for u in units))
    assert 0 < len(price_units._PRICERS) <= 40


def test_a_negative_rate_keeps_the_reference_path() -> None:
    """No price source gives one, but the compiled shortcuts assume none: such units are priced
    by the reference itself."""
    from dataclasses import replace

    p = PriceBook(overrides="").lookup("openai", "gpt-4o")
    assert p is not None
    units = tuple(replace(u, per_unit=-u.per_unit) for u in p.units)
    pricer = plain_pricer(units)
    for values in [_public(20_000_000, 1, 0, 0, 0), _public(1000, 900, 0, 0, 0), _public(1, 2_000_000, 0, 0, 0)]:
        ref = plain_cost(parts_of(units, values, values[0]), "v")
        assert _same(pricer(values, values[0], "v"), ref)
