"""What the savings advisor works on and hands out: the calls of one agent (and task type), a
recommendation, the minimums below which it says "not enough data" instead of guessing, and the
one pricing rule every saving uses (reprice.price_of: the call as recorded, minus the call changed)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from tokentrail.analytics.reports import to_jsonable
from tokentrail.analytics.reprice import price_of
from tokentrail.events import UsageEvent, nano_to_usd
from tokentrail.pricing import PriceBook

KINDS = (
    "prompt_caching",
    "model_routing",
    "context_trimming",
    "runaway_output",
    "redundant_calls",
    "unused_reasoning",
)
# The least evidence a recommendation needs; below it the advisor says "not enough data".
MIN_CALLS = 20  # model calls of the agent (and task type) in the window
MIN_SESSIONS = 3  # sessions showing the pattern (context growth, reasoning on tasks that succeeded)
MIN_REPEATS = 5  # calls repeating one long prefix; redundant calls or tool runs (at least 3)
MIN_REDUNDANT = 3
MIN_SIGNAL = 5  # calls showing a pattern before it is worth a "not enough data" line (below: silence)
MAX_EXAMPLES = 3  # example session ids per recommendation
MONTH_DAYS = 30


@dataclass(slots=True)
class Group:
    """The model calls and tool runs of one (team, agent, task type) in the window, in time order."""

    team: str | None
    agent: str | None
    task_type: str | None
    calls: list[UsageEvent] = field(default_factory=list)
    tools: list[UsageEvent] = field(default_factory=list)

    @property
    def who(self) -> tuple[str | None, str | None, str | None]:
        return self.team, self.agent, self.task_type

    def sessions(self) -> dict[str, list[UsageEvent]]:
        out: dict[str, list[UsageEvent]] = {}
        for c in self.calls:
            if c.session_id is not None:
                out.setdefault(c.session_id, []).append(c)
        return out


@dataclass(slots=True)
class Finding:
    """What one rule found in one group: the saving in the window (None: not enough data)."""

    kind: str
    group: Group
    title: str
    change: str
    metric: str
    value: str
    sessions: list[str]
    calls: int
    saving: Decimal | None
    formula: str  # how the window's saving was computed, with the numbers
    note: str | None = None  # why there is not enough data


@dataclass(frozen=True, slots=True)
class Recommendation:
    advice_id: str
    kind: str
    team: str | None
    agent: str | None
    task_type: str | None
    title: str
    change: str
    evidence: dict[str, Any]
    saving_usd: Decimal | None  # in the window
    monthly_saving_usd: Decimal | None
    formula: str
    enough_data: bool
    note: str | None
    dismissed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.advice_id,
            "kind": self.kind,
            "team": self.team,
            "agent": self.agent,
            "task_type": self.task_type,
            "title": self.title,
            "change": self.change,
            "evidence": self.evidence,
            "saving_usd": to_jsonable(self.saving_usd),
            "monthly_saving_usd": to_jsonable(self.monthly_saving_usd),
            "formula": self.formula,
            "enough_data": self.enough_data,
            "note": self.note,
            "dismissed": self.dismissed,
        }


def advice_id(kind: str, team: str | None, agent: str | None, task_type: str | None) -> str:
    """The stable id of a recommendation: its kind and whose it is (team, agent, task type)."""
    key = "\x00".join(v if v is not None else "\x01" for v in (kind, team, agent, task_type))
    return f"{kind}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def cost(e: UsageEvent, book: PriceBook, **changes: Any) -> Decimal | None:
    """What the call costs with `book` at its own time, as recorded or with `changes` (token counts,
    or `model`); None when unpriced. The same rule as `tokentrail reprice`'s what-if."""
    model_map = {}
    if "model" in changes:
        model_map = {e.model or "": changes.pop("model")}
    if changes:
        e = replace(e, **changes)
    nusd = price_of(e, book, model_map)
    return nano_to_usd(nusd)


def saving(e: UsageEvent, book: PriceBook, **changes: Any) -> Decimal:
    """What the change would have saved on this call (0 when either side is unpriced)."""
    before = cost(e, book)
    after = cost(e, book, **changes)
    return Decimal(0) if before is None or after is None else before - after


def money(d: Decimal | None) -> str:
    """`$1,234.56`: cents, or as many places as keep two significant digits (at most the stored
    nano-dollar), rounded half up: the tables' money rule (cli/_tables)."""
    if d is None:
        return "unpriced"
    places = 2 if not d else max(2, min(1 - d.copy_abs().adjusted(), 9))
    q = d.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    return f"{'-' if q < 0 else ''}${abs(q):,.{places}f}"


def per_mtok(e: UsageEvent, book: PriceBook, key: str) -> str:
    """A unit price of the call's model as the price book shows it ("$2.5/M"), or "?"."""
    p = book.lookup(e.provider or "", e.model or "", e.ts)
    v = None if p is None else p.unit_prices.get(key)
    return f"${v.split(';')[0].strip()}/M" if v else "?"


def examples(sessions: Sequence[str | None]) -> list[str]:
    return [s for s in dict.fromkeys(sessions) if s is not None][:MAX_EXAMPLES]


def not_enough(
    kind: str, g: Group, title: str, change: str, metric: str, value: str, sessions: list[str], calls: int, why: str
) -> Finding:
    return Finding(kind, g, title, change, metric, value, sessions, calls, None, "", why)
