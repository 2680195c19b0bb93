"""Optional extras: one wording, everywhere, for a package an extra would have installed."""

from __future__ import annotations

from typing import NoReturn

# the top-level modules each extra brings (what an ImportError may name)
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "sdks": ("openai", "anthropic", "google", "aiohttp"),
    "server": ("starlette", "uvicorn", "aiohttp", "prometheus_client", "opentelemetry", "google"),
    "postgres": ("psycopg", "psycopg_pool"),
    "testing": ("aiohttp",),
    "export": ("pyarrow",),
    "otel": ("opentelemetry",),
    "langchain": ("langchain_core",),
    "agents": ("agents", "openai"),
    "litellm": ("litellm",),
}


def missing_extra_message(what: str, extra: str, modules: list[str] | tuple[str, ...]) -> str:
    """`what` needs `modules`: the command that installs them."""
    return f"{what} needs {', '.join(modules)}: pip install 'tokentrail[{extra}]'"


def raise_missing_extra(error: ImportError, what: str, extra: str) -> NoReturn:
    """Re-raise a failed import as an ImportError naming the extra to install, when the missing
    module is one the extra brings; any other import error is re-raised as it is (a bug)."""
    name = error.name or ""
    if name.split(".")[0] not in EXTRA_MODULES[extra]:
        raise error
    raise ImportError(missing_extra_message(what, extra, [name]), name=name) from error
