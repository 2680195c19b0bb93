"""Requests a web page could make a browser send: refused before any route sees them.

With auth off (the default) the server trusts whoever can reach it, which on 127.0.0.1 means
this machine's users. A web page open in a browser on this machine can reach it too, so:

- a write (any method but GET/HEAD/OPTIONS) from another origin is refused (403): its `Origin`
  header, or `Sec-Fetch-Site`, says so (every current browser sends them on such requests);
- a write to the server's own routes (events, OTLP) in a content type a page may send without a
  CORS preflight (text/plain, form data) is refused (415), for browsers that send no `Origin`;
- a request that reached a loopback address under a `Host` name that is not a loopback name is
  refused (403): that is DNS rebinding (a page's own host name made to resolve to 127.0.0.1),
  unless the name is one the server was told to answer (`--allow-host`, e.g. behind a proxy).

Clients that are not browsers (SDKs, curl, exporters) send no `Origin` and are not affected.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

_SAFE_METHODS = frozenset(("GET", "HEAD", "OPTIONS"))
# what a page may POST cross-origin without a preflight (the "simple" content types)
SIMPLE_CONTENT_TYPES = frozenset(("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"))


@lru_cache(maxsize=256)  # called on every request with the same few names
def is_loopback(host: str) -> bool:
    """True for `localhost`, `*.localhost` and loopback addresses (127.0.0.0/8, ::1)."""
    name = host.strip().lower().rstrip(".")
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if name == "localhost" or name.endswith(".localhost"):
        return True  # browsers resolve these to loopback themselves: a page cannot rebind them
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def host_name(host: str) -> str:
    """The name of a Host header, without its port: `[::1]:8787` -> `::1`."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end > 0 else host
    return (host.split(":", 1)[0] if host.count(":") == 1 else host).rstrip(".")


class Guard:
    """The checks above. `allowed_hosts`: Host names to answer on loopback beyond the loopback
    names themselves (`*`: any)."""

    def __init__(self, allowed_hosts: Iterable[str] = ()) -> None:
        names = {h.strip().lower().rstrip(".") for h in allowed_hosts if h.strip()}
        self.any_host = "*" in names
        self.allowed_hosts = frozenset(host_name(h) for h in names if h != "*")

    def refusal(self, scope: Mapping[str, Any], own: bool) -> tuple[int, str] | None:
        """(status, message) of a request refused, or None. `own`: one of the server's own routes."""
        host = origin = fetch_site = ctype = None
        for k, v in scope["headers"]:
            if k == b"host":
                host = v.decode("latin-1")
            elif k == b"origin":
                origin = v.decode("latin-1").strip()
            elif k == b"sec-fetch-site":
                fetch_site = v.decode("latin-1").strip().lower()
            elif k == b"content-type":
                ctype = v.decode("latin-1").split(";", 1)[0].strip().lower()
        server = scope.get("server")
        if host is not None and server and is_loopback(str(server[0])) and not self.any_host:
            name = host_name(host)
            if not is_loopback(name) and name not in self.allowed_hosts:
                return 403, (
                    f"tokentrail: this server does not answer to the host name {name!r} (a guard against DNS "
                    "rebinding); to serve it behind a proxy under that name, start it with --allow-host NAME"
                )
        if scope["method"] in _SAFE_METHODS:
            return None
        if origin is not None and (origin == "null" or urlsplit(origin).netloc.lower() != (host or "").lower()):
            return 403, f"tokentrail: a write from another origin ({origin}) is refused"
        if fetch_site in ("cross-site", "same-site"):
            return 403, "tokentrail: a write from another site is refused"
        if own and ctype in SIMPLE_CONTENT_TYPES:
            return 415, f"tokentrail: send Content-Type: application/json (or an OTLP type), not {ctype}"
        return None
