"""A `*` budget's bucket as text ("k1=v1, k2=v2", the budget's scope keys in order) read back as
its values, only when it reads exactly one way (a value holding ", team=…" must never pass one
team's bucket off as another's). Used by the server's scoping and by budget forecasts."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence


def bucket_values(text: str, keys: Sequence[str]) -> dict[str, str] | None:
    """A bucket shown as `text` ("k1=v1, k2=v2", the budget's scope keys in order) as its values,
    or None unless the text reads exactly one way: a value holding ", team=…" could otherwise
    pass one team's bucket off as another's."""
    found: list[list[str]] = []
    for values in _readings(text, tuple(keys)):
        found.append(values)
        if len(found) > 1:
            return None
    return dict(zip(keys, found[0], strict=True)) if found else None


def bucket_team(text: str, keys: Sequence[str]) -> str | None:
    """The team of a bucket (see bucket_values), or None if it has none or reads two ways."""
    return (bucket_values(text, keys) or {}).get("team")


def visible(text: str, keys: Sequence[str], scope: Mapping[str, str]) -> bool:
    """Whether a key of `scope` may see the bucket: it pins every dimension of the scope to the
    key's value (with no scope: every bucket)."""
    if not scope:
        return True
    values = bucket_values(text, keys)
    return values is not None and all(values.get(d) == v for d, v in scope.items())


def _readings(text: str, keys: tuple[str, ...]) -> Iterator[list[str]]:
    """Every way `text` splits into values of `keys` (memoised by where a value may start, so a
    text full of ", k=" look-alikes stays cheap; the caller stops after two)."""
    dead: set[tuple[int, int]] = set()

    def walk(pos: int, i: int) -> Iterator[list[str]]:
        head = ("" if i == 0 else ", ") + keys[i] + "="
        if (pos, i) in dead or not text.startswith(head, pos):
            return
        start = pos + len(head)
        any_found = False
        if i == len(keys) - 1:
            any_found = True
            yield [text[start:]]
        else:
            sep = ", " + keys[i + 1] + "="
            at = text.find(sep, start)
            while at != -1:
                for rest in walk(at, i + 1):
                    any_found = True
                    yield [text[start:at], *rest]
                at = text.find(sep, at + 1)
        if not any_found:
            dead.add((pos, i))

    return walk(0, 0) if keys else iter(())
