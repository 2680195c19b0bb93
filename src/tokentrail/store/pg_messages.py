"""How the PostgreSQL ledger names its URL and its errors in messages and logs: never a password,
one line, and a hint when the server seems down."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit


def redact_url(url: str) -> str:
    """The URL with its password (if any) replaced by ***, for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return re.sub(r"(password=)[^&\s]*", r"\1***", url)
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return re.sub(r"(password=)[^&\s]*", r"\1***", urlunsplit(parts._replace(netloc=netloc)))


def why(e: BaseException) -> str:
    """An error's reason on one line."""
    from psycopg_pool import PoolTimeout  # here: redact_url is for messages even without the driver

    msg = " ".join(str(e).split()) or type(e).__name__
    if isinstance(e, PoolTimeout):
        return f"{msg} (is the server up?)"
    return msg
