"""Which model a call is budgeted as: the names its model goes by, and the one its hold is priced on.

A request may name a model by an alias the provider resolves (a deployment name, a router alias,
`gpt-4o` answered as `gpt-4o-2024-08-06`). Budget scopes match any of the names a call's model goes
by: the name it asked for, the price book's id for it, and the model the provider answered as
the last time this process asked for that name. A hold is priced on the name asked for, or, when
that has no price, on the model it was last answered as: the response names the model it is charged
at, so that is the best bound known before the call (a dearer answer is an overage).
"""

from __future__ import annotations

import threading

from tokentrail.pricing import PriceBook

MAX_ALIASES = 10_000  # a caller can invent names without end: the table is bounded


class ModelNames:
    """Aliases learned from responses (request model -> the model the provider answered as)."""

    def __init__(self, prices: PriceBook) -> None:
        self.prices = prices
        self._answered: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def learn(self, provider: str, asked: str, answered: str) -> None:
        if asked == answered or self._answered.get((provider, asked)) == answered:
            return
        with self._lock:
            if len(self._answered) >= MAX_ALIASES:
                self._answered.clear()
            self._answered[(provider, asked)] = answered

    def answered_as(self, provider: str, model: str) -> str | None:
        return self._answered.get((provider, model))

    def priced(self, provider: str, model: str | None) -> str | None:
        """The name to price a hold for `model` on: itself, unless it has no price and was answered
        as a model that has one."""
        if not model or self.prices.lookup(provider, model) is not None:
            return model
        answered = self._answered.get((provider, model))
        if answered and self.prices.lookup(provider, answered) is not None:
            return answered
        return model

    def names(self, provider: str | None, model: str | None) -> tuple[str, ...]:
        """Every name the model goes by, the one asked for first."""
        if not model:
            return ()
        out = [model]
        answered = self._answered.get((provider or "", model))
        for name in (model, answered):
            if not name:
                continue
            price = self.prices.lookup(provider or "", name)
            for alt in (name, price.model if price is not None else None):
                if alt and alt not in out:
                    out.append(alt)
        return tuple(out)
