"""What a budget is: its definition, validation and scope matching (its TOML file form:
tokentrail.budgets.budget_file).

A budget = a scope (attribution dimensions; `*` makes one budget per distinct value) + a period
(see tokentrail.budgets.periods) + a limit in USD and/or tokens + alert thresholds + an action at the
limit (`block`, `alert`, `throttle`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any

from tokentrail.budgets.periods import Period, bounds, check_tz, parse_period
from tokentrail.context import Attribution
from tokentrail.events import MAX_TEXT, from_micros, nano_to_usd
from tokentrail.exceptions import ConfigError
from tokentrail.money import usd

SCOPE_KEYS = (
    "org",
    "team",
    "project",
    "agent",
    "user",
    "customer",
    "workflow",
    "task_type",
    "session",
    "provider",
    "model",
)
_ALIASES = {"session_id": "session", "user_id": "user"}
ACTIONS = ("block", "alert", "throttle")
DEFAULT_ALERT_AT = (0.5, 0.8, 1.0)
MAX_THRESHOLDS = 16
WILDCARD = "*"


def normalise_scope(scope: Mapping[str, Any] | None) -> tuple[tuple[str, str], ...]:
    """A scope as sorted (dimension, value) pairs; ConfigError naming what is wrong."""
    out: dict[str, str] = {}
    for raw_key, raw_value in (scope or {}).items():
        key = _ALIASES.get(str(raw_key).strip().lower(), str(raw_key).strip().lower())
        if key.startswith("tag."):
            if len(key) == 4:
                raise ConfigError("scope key 'tag.' needs a tag name, e.g. tag.customer")
        elif key not in SCOPE_KEYS:
            raise ConfigError(f"unknown scope dimension {raw_key!r}: use {', '.join(SCOPE_KEYS)} or tag.<key>")
        if raw_value is None or (isinstance(raw_value, str) and not raw_value.strip()):
            raise ConfigError(f"scope {key}: needs a value (or * for one budget per {key})")
        value = str(raw_value).strip()
        if len(value) > MAX_TEXT:
            raise ConfigError(f"scope {key}: value longer than {MAX_TEXT} characters")
        out[key] = value
    return tuple(sorted(out.items()))


def scope_text(scope: tuple[tuple[str, str], ...]) -> str:
    return ", ".join(f"{k}={v}" for k, v in scope) if scope else "all"


def parse_scope_items(items: list[str] | tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """`["team=legal", "agent=*"]` (the CLI's --scope) as a scope."""
    out: dict[str, str] = {}
    for item in items:
        for part in item.split(","):
            if not part.strip():  # `team=a,,agent=b`: a typo, never "no constraint"
                raise ConfigError(f"--scope {item!r}: empty item; write KEY=VALUE,KEY=VALUE, e.g. team=legal,agent=*")
            key, sep, value = part.partition("=")
            if not sep:
                raise ConfigError(f"--scope {part!r}: expected KEY=VALUE, e.g. --scope team=legal or --scope agent=*")
            out[key.strip()] = value.strip()
    return normalise_scope(out)


def _decimal_limit(value: Any, what: str) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise ConfigError(f"{what} must be a number")
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        raise ConfigError(f"{what} {value!r} is not a number") from None
    if not d.is_finite() or d < 0 or d > Decimal(1_000_000_000):
        raise ConfigError(f"{what} {value!r} must be between 0 and 1,000,000,000")
    return d.quantize(Decimal("0.000000001"))


def _int_limit(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str, float, Decimal)):
        raise ConfigError(f"{what} must be a whole number")
    try:
        d = Decimal(str(value).replace("_", ""))
    except InvalidOperation:
        raise ConfigError(f"{what} {value!r} is not a whole number") from None
    if not d.is_finite() or d != d.to_integral_value() or d < 0 or d > 10**15:
        raise ConfigError(f"{what} {value!r} must be a whole number between 0 and 10^15")
    return int(d)


def _thresholds(alert_at: Any) -> tuple[float, ...]:
    if alert_at is None:
        return ()
    if isinstance(alert_at, (int, float, str)) and not isinstance(alert_at, bool):
        alert_at = [alert_at]
    out = set()
    for v in alert_at:
        try:
            f = float(str(v).rstrip("%")) / (100 if str(v).endswith("%") else 1)
        except ValueError:
            raise ConfigError(f"alert threshold {v!r} is not a number (use fractions such as 0.8, or 80%)") from None
        if not 0 < f <= 10:
            raise ConfigError(f"alert threshold {v!r} must be a fraction of the limit above 0 (0.8 is 80%)")
        out.add(round(f, 6))
    if len(out) > MAX_THRESHOLDS:
        raise ConfigError(f"at most {MAX_THRESHOLDS} alert thresholds")
    return tuple(sorted(out))


@dataclass(frozen=True, slots=True)
class Budget:
    """One budget definition, as stored in the ledger."""

    name: str
    scope: tuple[tuple[str, str], ...] = ()
    period: str = "month"
    limit_usd: Decimal | None = None
    limit_tokens: int | None = None
    alert_at: tuple[float, ...] = DEFAULT_ALERT_AT
    action: str = "block"
    tz: str = "UTC"
    source: str = "api"
    allow_unpriced: bool = False  # a USD limit lets through calls to models it cannot price (they hold $0)
    created: datetime | None = field(default=None, compare=False)
    updated: datetime | None = field(default=None, compare=False)

    @classmethod
    def build(
        cls,
        name: str,
        *,
        scope: Mapping[str, Any] | tuple[tuple[str, str], ...] | None = None,
        period: str = "month",
        limit_usd: Any = None,
        limit_tokens: Any = None,
        alert_at: Any = DEFAULT_ALERT_AT,
        action: str = "block",
        tz: str | None = "UTC",
        source: str = "api",
        allow_unpriced: bool = False,
    ) -> Budget:
        """A validated budget; ConfigError saying what is wrong otherwise."""
        if not isinstance(name, str) or not name.strip() or len(name) > 128 or any(c in name for c in "\x00\x1f\n"):
            raise ConfigError(f"budget name {name!r}: a non-empty name of at most 128 characters")
        name = name.strip()
        scope_pairs = normalise_scope(dict(scope) if scope else None)
        p = parse_period(period)
        usd = _decimal_limit(limit_usd, f"budget {name!r}: limit_usd")
        tokens = _int_limit(limit_tokens, f"budget {name!r}: limit_tokens")
        if usd is None and tokens is None:
            raise ConfigError(f"budget {name!r}: give limit_usd and/or limit_tokens")
        if action not in ACTIONS:
            raise ConfigError(f"budget {name!r}: action {action!r} must be one of {', '.join(ACTIONS)}")
        if action == "throttle" and not (p.calendar or p.rolling):
            raise ConfigError(f"budget {name!r}: throttle needs a time period (hour, day, …, or rolling:<duration>)")
        tz_name = (tz or "UTC").strip() or "UTC"
        check_tz(tz_name)
        if p.kind == "session" and "session" in dict(scope_pairs):
            raise ConfigError(f"budget {name!r}: a session period already means one budget per session")
        if not isinstance(allow_unpriced, bool):
            raise ConfigError(f"budget {name!r}: allow_unpriced must be true or false")
        return cls(
            name=name,
            scope=scope_pairs,
            period=p.text,
            limit_usd=usd,
            limit_tokens=tokens,
            alert_at=_thresholds(alert_at),
            action=action,
            tz="UTC" if tz_name.upper() == "UTC" else tz_name,
            source=source,
            allow_unpriced=allow_unpriced,
        )

    @property
    def scope_text(self) -> str:
        return scope_text(self.scope)

    @property
    def wildcards(self) -> tuple[str, ...]:
        return tuple(k for k, v in self.scope if v == WILDCARD)

    def to_row(self, now_us: int) -> tuple[Any, ...]:
        return (
            self.name,
            json.dumps(dict(self.scope), sort_keys=True),
            self.period,
            None if self.limit_usd is None else int(self.limit_usd.scaleb(9)),
            self.limit_tokens,
            json.dumps(list(self.alert_at)),
            self.action,
            self.tz,
            self.source,
            now_us,
            now_us,
            int(self.allow_unpriced),
        )

    @classmethod
    def from_row(cls, r: tuple[Any, ...]) -> Budget:
        return cls(
            name=r[0],
            scope=tuple(sorted(json.loads(r[1]).items())),
            period=r[2],
            limit_usd=nano_to_usd(int(r[3])) if r[3] is not None else None,
            limit_tokens=int(r[4]) if r[4] is not None else None,
            alert_at=tuple(float(v) for v in json.loads(r[5])),
            action=r[6],
            tz=r[7],
            source=r[8],
            created=from_micros(int(r[9])),
            updated=from_micros(int(r[10])),
            allow_unpriced=bool(r[11]) if len(r) > 11 else False,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "scope": dict(self.scope),
            "period": self.period,
            "limit_usd": None if self.limit_usd is None else str(usd(self.limit_usd)),  # 100, not 1E+2
            "limit_tokens": self.limit_tokens,
            "alert_at": list(self.alert_at),
            "action": self.action,
            "tz": self.tz,
            "source": self.source,
            "allow_unpriced": self.allow_unpriced,
        }

    def same_definition(self, other: Budget) -> bool:
        return self.to_dict() | {"source": ""} == other.to_dict() | {"source": ""}


@dataclass(frozen=True, slots=True)
class Suspension:
    """A kill switch: every call in `scope` is refused until it is resumed."""

    scope: tuple[tuple[str, str], ...]
    reason: str | None = None
    created: datetime | None = None

    @property
    def scope_text(self) -> str:
        return scope_text(self.scope)


# -- matching -------------------------------------------------------------------------------------


def call_dims(a: Attribution, provider: str | None, model: str | None) -> dict[str, str | None]:
    """The values a call has for each scope dimension."""
    dims: dict[str, str | None] = {
        "org": a.org,
        "team": a.team,
        "project": a.project,
        "agent": a.agent,
        "user": a.user,
        "customer": a.customer,
        "workflow": a.workflow,
        "task_type": a.task_type,
        "session": a.session_id,
        "provider": provider,
        "model": model,
    }
    return dims


def dim_value(dims: Mapping[str, str | None], tags: Mapping[str, str], key: str) -> str | None:
    if key.startswith("tag."):
        return tags.get(key[4:])
    return dims.get(key)


def matches(
    scope: tuple[tuple[str, str], ...], dims: Mapping[str, str | None], tags: Mapping[str, str]
) -> tuple[tuple[str, str], ...] | None:
    """The scope with its wildcards filled in from the call (its bucket), or None if it does not apply.
    A `*` dimension applies only to calls that have a value for it."""
    filled = []
    for key, want in scope:
        have = dim_value(dims, tags, key)
        if have is None or (want != WILDCARD and have != want):
            return None
        filled.append((key, have))
    return tuple(filled)


@dataclass(frozen=True, slots=True)
class Rule:
    """A budget compiled for the hot path."""

    budget: Budget
    period: Period
    zone: tzinfo
    limit_nusd: int | None
    limit_tokens: int | None
    # the current calendar period's bounds and each bucket's key prefix, computed once
    memo: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def enforce(self) -> bool:
        return self.budget.action != "alert"

    @property
    def scopes_model(self) -> bool:
        return any(k == "model" for k, _ in self.budget.scope)

    @classmethod
    def of(cls, b: Budget) -> Rule:
        return cls(
            budget=b,
            period=parse_period(b.period),
            zone=check_tz(b.tz),
            limit_nusd=None if b.limit_usd is None else int(b.limit_usd.scaleb(9)),
            limit_tokens=b.limit_tokens,
        )

    def counter(
        self, bucket: tuple[tuple[str, str], ...], session_id: str | None, now_us: int
    ) -> tuple[str, int | None, int | None]:
        """(counter key, period start, period end) of the counter this call charges."""
        memo = self.memo
        prefix = memo.get(bucket)
        if prefix is None:
            if len(memo) > _MEMO_MAX:
                memo.clear()
            prefix = memo[bucket] = f"{self.budget.name}\x1f{json.dumps(bucket, separators=(',', ':'))}\x1f"
        if self.period.calendar:
            span = memo.get(_SPAN)
            if span is None or not span[0] <= now_us < span[1]:
                span = memo[_SPAN] = bounds(self.period, from_micros(now_us), self.zone)
            return f"{prefix}{span[0]}", span[0], span[1]
        if self.period.kind == "session":
            return f"{prefix}session:{session_id}", None, None
        return f"{prefix}{self.period.text}", None, None


_SPAN = "span"  # the memo's key for the current period's bounds (every other key is a bucket tuple)
_MEMO_MAX = 10_000


def utc_now() -> datetime:
    return datetime.now(UTC)


def window_end(start_us: int | None, end_us: int | None) -> tuple[datetime | None, datetime | None]:
    return (
        from_micros(start_us) if start_us is not None else None,
        from_micros(end_us) if end_us is not None else None,
    )
