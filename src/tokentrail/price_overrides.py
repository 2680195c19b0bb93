"""The price overrides file (`TOKENTRAIL_PRICES`): negotiated prices and private models, read and
validated strictly (tokentrail.pricing applies them), and the provider names prices are kept under."""

from __future__ import annotations

import fnmatch
import hashlib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path

from tokentrail.exceptions import ConfigError

_PROVIDER_ALIASES = {
    "gemini": "google",
    "google-genai": "google",
    "google_genai": "google",
    "vertex": "google",
    "vertex_ai": "google",
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "azure.ai.openai": "azure",
    "aws.bedrock": "aws",
}
METADATA_KEYS = {"provider", "model", "effective", "context_window", "max_output_tokens"}


def canonical_provider(provider: str) -> str:
    p = provider.strip().lower()
    return _PROVIDER_ALIASES.get(p, p)


def _decimal(value: object, where: str) -> Decimal:
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        raise ConfigError(f"{where}: {value!r} is not a number") from None
    if not d.is_finite() or d < 0:
        raise ConfigError(f"{where}: {value!r} must be a finite non-negative number")
    return d


@dataclass(frozen=True, slots=True)
class Override:
    """One `[[prices]]` entry of the overrides file."""

    model: str
    provider: str | None
    effective: date | None
    prices: Mapping[str, Decimal]
    context_window: int | None
    max_output_tokens: int | None
    file_hash: str

    def matches(self, provider: str, model: str) -> bool:
        if self.provider is not None and self.provider != provider:
            return False
        return fnmatch.fnmatchcase(model.lower(), self.model)

    @property
    def is_glob(self) -> bool:
        return any(c in self.model for c in "*?[")


def load_overrides(path: str | os.PathLike[str]) -> list[Override]:
    """Read and validate an overrides file; errors name the file and the entry."""
    from genai_prices.units import _get_registry

    p = Path(path)
    try:
        raw = p.read_bytes()
        data = tomllib.loads(raw.decode("utf-8"))
    except OSError as e:
        raise ConfigError(f"price overrides {p}: cannot read ({e.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"price overrides {p}: not valid TOML ({e})") from None
    file_hash = hashlib.sha256(raw).hexdigest()[:8]
    entries = data.get("prices", [])
    if not isinstance(entries, list):
        raise ConfigError(f"price overrides {p}: 'prices' must be an array of tables ([[prices]])")
    price_keys = _get_registry()._all_price_keys
    out: list[Override] = []
    for n, entry in enumerate(entries, 1):
        where = f"price overrides {p}, entry {n}"
        if not isinstance(entry, dict) or not isinstance(entry.get("model"), str) or not entry["model"]:
            raise ConfigError(f"{where}: needs a 'model' string")
        unknown = set(entry) - METADATA_KEYS - price_keys
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        effective = entry.get("effective")
        if isinstance(effective, datetime):
            effective = effective.date()
        if effective is not None and not isinstance(effective, date):
            raise ConfigError(f"{where}: 'effective' must be a date such as 2026-01-01")
        ints: dict[str, int | None] = {}
        for key in ("context_window", "max_output_tokens"):
            v = entry.get(key)
            if v is not None and (type(v) is not int or v <= 0):
                raise ConfigError(f"{where}: '{key}' must be a positive integer")
            ints[key] = v
        provider = entry.get("provider")
        out.append(
            Override(
                model=entry["model"].lower(),
                provider=None if provider in (None, "*") else canonical_provider(str(provider)),
                effective=effective,
                prices={k: _decimal(v, f"{where}, {k}") for k, v in entry.items() if k in price_keys},
                context_window=ints["context_window"],
                max_output_tokens=ints["max_output_tokens"],
                file_hash=file_hash,
            )
        )
    return out
