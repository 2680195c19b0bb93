"""Who is calling: the tokentrail key of a request, and what it may do.

Auth is on when TOKENTRAIL_ADMIN_KEY is set: then every route but /healthz and the dashboard's
static page needs a valid key with the right role. With auth off, a request without a key acts
as admin (bind to 127.0.0.1, the default), and a request that brings a key is held to it.
"""

from __future__ import annotations

from collections.abc import Mapping

from tokentrail.exceptions import TokentrailError
from tokentrail.server.keys import ADMIN, ApiKey, KeyRing

KEY_HEADER = "x-tokentrail-key"


class AuthError(TokentrailError):
    """401 (no or unknown key) or 403 (a key that may not do this)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def api_key_of(headers: Mapping[str, str]) -> str | None:
    """The tokentrail key of a JSON API / ingest request: X-Tokentrail-Key or a bearer token."""
    key = headers.get(KEY_HEADER)
    if key:
        return key.strip()
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return None


def authorize(ring: KeyRing, key: str | None, role: str) -> ApiKey:
    """The caller's key if it may act in `role`; AuthError otherwise."""
    if key is None:
        if ring.auth_required:
            raise AuthError(401, f"a tokentrail key with the {role!r} role is required (X-Tokentrail-Key header)")
        return ADMIN
    found = ring.lookup(key)
    if found is None:
        raise AuthError(401, "unknown or revoked tokentrail key")
    if not found.allows(role):
        raise AuthError(403, f"this key has the {found.role!r} role; this route needs {role!r}")
    return found
