"""Reversible monkey-patching, safe to apply twice."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MARK = "__tokentrail_original__"


@dataclass
class Patch:
    owner: Any
    name: str
    original: Any

    def undo(self) -> None:
        current = self.owner.__dict__.get(self.name)
        if getattr(current, MARK, None) is self.original:
            setattr(self.owner, self.name, self.original)


def patch(owner: Any, name: str, make: Callable[[Any], Any]) -> Patch | None:
    """Replace owner.name with make(original); None when it is already patched."""
    original = owner.__dict__.get(name)
    if original is None or getattr(original, MARK, None) is not None:
        return None
    replacement = make(original)
    setattr(replacement, MARK, original)
    setattr(owner, name, replacement)
    return Patch(owner, name, original)
