"""The request's stable prefix, as a hash (never the text), for the savings advisor's caching advice.

The prefix is what stays the same from one call of an agent to the next and what the providers'
prompt caches key on: the model, the system instructions, the tool definitions and the leading
system/developer messages (everything before the first user or assistant turn). Its value is
`"<hash>:<permille>"`: 24 hex digits of SHA-256 over those parts in canonical JSON, and the
prefix's share of the prompt's bytes in per mille (so its length in tokens can be estimated from
the call's input tokens). None when the request has no such prefix.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from tokentrail.integrations.wire import Route

_SYSTEM_ROLES = ("system", "developer")


def _json(v: Any) -> bytes:
    return json.dumps(v, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str).encode(
        "utf-8", "surrogatepass"
    )


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
        size = len(prefix) + len(_json(rest)) if rest else len(prefix)
    except (ValueError, TypeError, RecursionError):
        return None
    permille = min(1000, len(prefix) * 1000 // max(1, size))
    return f"{hashlib.sha256(prefix).hexdigest()[:24]}:{permille}"
