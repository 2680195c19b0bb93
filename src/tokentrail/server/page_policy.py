"""The security headers of the dashboard page: a Content-Security-Policy that lets run only the
page's own inline scripts (by their SHA-256, computed from the page served, so an edit to the
page never needs a matching edit here), fetch only this server, and be framed by no one."""

from __future__ import annotations

import base64
import hashlib
import re
from functools import lru_cache

_EXTERNAL_SCRIPT = re.compile(rb"<script[^>]*\bsrc\s*=", re.I)
_INLINE_SCRIPT = re.compile(rb"<script(?![^>]*\bsrc\s*=)[^>]*>(.*?)</script\s*>", re.S | re.I)


def script_hashes(page: bytes) -> list[str]:
    """CSP sources (`'sha256-…'`) of the page's inline scripts."""
    return [
        "'sha256-" + base64.b64encode(hashlib.sha256(m.group(1)).digest()).decode() + "'"
        for m in _INLINE_SCRIPT.finditer(page)
    ]


def _script_sources(page: bytes) -> list[str]:
    # a <script src> of the page's own is served by this server: 'self' (never another origin)
    external = ["'self'"] if _EXTERNAL_SCRIPT.search(page) else []
    return external + script_hashes(page)


@lru_cache(maxsize=4)
def page_headers(page: bytes) -> dict[str, str]:
    """The headers to send with `page`. Inline styles stay allowed: the page builds tables whose
    bars and colours are `style` attributes, and a style cannot run code."""
    policy = "; ".join(
        (
            "default-src 'none'",
            "script-src " + (" ".join(_script_sources(page)) or "'none'"),
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data:",
            "connect-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )
    return {
        "Content-Security-Policy": policy,
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
