"""The request's stable prefix, as a hash (never the text), for the savings advisor's caching advice.

The prefix is what stays the same from one call of an agent to the next and what the providers'
prompt caches key on: the model, the system instructions, the tool definitions and the leading
system/developer messages (everything before the first user or assistant turn). Its value is
`"<hash>:<permille>"`: 24 hex digits of SHA-256 over those parts in canonical JSON, and the
prefix's share of the prompt's bytes in per mille (so its length in tokens can be estimated from
the call's input tokens). None when the request has no such prefix. Key order does not matter (the
JSON is canonical: sorted keys). The rest of the prompt (often most of a large body) is only
measured, never serialised, and the prefix is hashed in slices: a huge body costs no second copy.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tokentrail.integrations.wire import Route

_SYSTEM_ROLES = ("system", "developer")


_SLICE = 1 << 20  # characters encoded at a time (bounds the extra memory of a huge prefix)
_MAX_DEPTH = 1_000  # deeper than any real prompt: such a body reads as no prefix


def _json(v: Any) -> str:
    return json.dumps(v, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def _utf8_len(s: str) -> int:
    if s.isascii():  # no copy: escapes are left out, the share is an estimate anyway
        return len(s)
    return sum(len(s[i : i + _SLICE].encode("utf-8", "surrogatepass")) for i in range(0, len(s), _SLICE))


def json_size(v: Any) -> int:
    """About the byte length of `v` as compact JSON, without building that JSON (a string: its
    UTF-8 length). RecursionError past a depth no real prompt reaches."""
    if isinstance(v, str):
        return _utf8_len(v)
    n = 0
    stack: list[tuple[Any, int]] = [(v, 0)]
    while stack:
        x, depth = stack.pop()
        if depth > _MAX_DEPTH:
            raise RecursionError("a body nested too deep")
        if isinstance(x, str):
            n += _utf8_len(x) + 2
        elif isinstance(x, dict):
            n += 1 + 2 * len(x)  # braces, colons and commas
            for k, item in x.items():
                n += _utf8_len(str(k)) + 2
                stack.append((item, depth + 1))
        elif isinstance(x, (list, tuple)):
            n += 1 + len(x)
            stack.extend((item, depth + 1) for item in x)
        elif x is None:
            n += 4
        else:
            n += _utf8_len(str(x))
    return n


def _parts(route: Route, body: dict[str, Any]) -> tuple[list[Any], Any]:
    """(the prefix's parts, the rest of the prompt) of a request."""
    if route.flavor in ("openai_chat", "openai_responses", "openai_any"):
        items = body.get("messages") if "messages" in body else body.get("input")
        items = items if isinstance(items, list) else ([] if items is None else [items])
        lead = 0
        while lead < len(items) and isinstance(items[lead], dict) and items[lead].get("role") in _SYSTEM_ROLES:
            lead += 1
        return [body.get("instructions"), body.get("tools"), items[:lead]], items[lead:]
    if route.flavor == "anthropic":
        return [body.get("system"), body.get("tools")], body.get("messages")
    if route.flavor == "gemini":
        system = body.get("systemInstruction") or body.get("system_instruction")
        return [system, body.get("tools")], body.get("contents")
    return [], None


def prefix_hash(route: Route, body: dict[str, Any]) -> str | None:
    """`"<hash>:<permille>"` of the request's stable prefix, or None when it has none (or cannot
    be read: a hostile body never costs the call its other request facts)."""
    try:
        parts, rest = _parts(route, body)
        if not any(parts):
            return None
        prefix = _json([body.get("model"), *parts])
        digest, prefix_size = hashlib.sha256(), 0
        for i in range(0, len(prefix), _SLICE):
            chunk = prefix[i : i + _SLICE].encode("utf-8", "surrogatepass")
            digest.update(chunk)
            prefix_size += len(chunk)
        size = prefix_size + json_size(rest) if rest else prefix_size
    except (ValueError, TypeError, RecursionError):
        return None
    permille = min(1000, prefix_size * 1000 // max(1, size))
    return f"{digest.hexdigest()[:24]}:{permille}"
