"""The running server's side of the keys (`tt-…`): a KeyRing caches the live keys the ledger
holds (tokentrail.store.keys issues, lists and revokes them; its names are re-exported here).
"""

from __future__ import annotations

import secrets
import threading
import time

from tokentrail.store.keys import (
    ADMIN,
    PREFIX,
    PROVIDERS,
    ROLES,
    ApiKey,
    KeyStore,
    create_key,
    hash_key,
    list_keys,
    live_keys,
    provider_named_by,
    revoke_key,
)

__all__ = [
    "ADMIN",
    "PREFIX",
    "PROVIDERS",
    "ROLES",
    "ApiKey",
    "KeyRing",
    "create_key",
    "hash_key",
    "list_keys",
    "provider_named_by",
    "revoke_key",
]

_RELOAD_S = 5.0  # a revoked key stops working within this long in a running server
_MISS_RELOAD_S = 1.0  # an unknown key re-reads the table at most this often


class KeyRing:
    """The live keys, cached in memory (a lookup is a hash and a dict get) and re-read from the
    ledger every few seconds, so keys issued or revoked by the CLI take effect in a running server."""

    def __init__(self, store: KeyStore, admin_key: str | None = None) -> None:
        self.store = store
        self._admin_hash = hash_key(admin_key) if admin_key else None
        self._keys: dict[str, ApiKey] = {}
        self._loaded = float("-inf")
        self._lock = threading.Lock()

    @property
    def auth_required(self) -> bool:
        """Auth is on when an admin key is set."""
        return self._admin_hash is not None

    def lookup(self, key: str) -> ApiKey | None:
        """The live key `key` names, or None."""
        h = hash_key(key)
        if self._admin_hash is not None and secrets.compare_digest(h, self._admin_hash):
            return ADMIN
        now = time.monotonic()
        if now - self._loaded > _RELOAD_S:
            self._reload(now)
        found = self._keys.get(h)
        if found is None and key.startswith(PREFIX) and now - self._loaded > _MISS_RELOAD_S:
            self._reload(now)
            found = self._keys.get(h)
        return found

    def _reload(self, now: float) -> None:
        with self._lock:
            if now - self._loaded <= _MISS_RELOAD_S:  # another thread just did
                return
            self._keys = live_keys(self.store)
            self._loaded = now
