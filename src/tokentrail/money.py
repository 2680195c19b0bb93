"""Dollar amounts as the API hands them out: exact Decimals that print plainly.

A Decimal's own str() picks scientific notation for small or rounded values (`0E-9`,
`1.5E-7`, `1E+2`) and keeps the trailing zeros of its exponent (`0.003000000`). Every cost
tokentrail returns (events, prices, reports, budgets) goes through `usd()` instead: the same
value, without trailing zeros, and a `str()` that is always plain (`0`, `0.00000015`, `100`).
The ledger still stores integer nano-dollars; only the form of the Decimal changes.
"""

from __future__ import annotations

from decimal import MAX_PREC, Context, Decimal
from typing import Any

_EXACT = Context(prec=MAX_PREC)  # normalize() must never round (the default keeps 28 digits)
_ONE = Decimal(1)
# x.normalize(context) parses its arguments as keywords; the context's own method takes one
# argument and is a good part faster (tt.price renders up to five amounts per call)
exact_normalize = _EXACT.normalize


class Usd(Decimal):
    """A US-dollar amount: a Decimal whose str() and f-string form never use an exponent."""

    __slots__ = ()

    def __str__(self) -> str:
        return super().__format__("f")

    def __repr__(self) -> str:
        return f"Decimal('{self}')"

    def __format__(self, specifier: str, context: Any = None, /) -> str:
        if context is not None:
            return super().__format__(specifier, context)
        return super().__format__(specifier or "f")


def usd(value: Decimal) -> Usd:
    """`value` as a Usd: the same number, trailing zeros dropped, no positive exponent."""
    if type(value) is Usd:
        return value
    if not value:
        return _ZERO  # not 0E-9, nor -0
    n = exact_normalize(value)
    if n.adjusted() > 0 and n == n.to_integral_value():  # 1E+2 -> 100 (as_tuple() is slow)
        n = n.quantize(_ONE, context=_EXACT)
    return Usd(n)


_ZERO = Usd(0)
