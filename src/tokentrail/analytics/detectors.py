"""The anomaly detectors: pure functions of the events (stored rows, in order) and a small state per
session and per agent. Online (the writer folds each durable batch) and batch (`tokentrail anomalies`
replays history) run this same code, so they find the same anomalies on the same events.

Baselines (an agent's usual session, its 14-day output ratio and cache share) come from a
`Baselines` object, by day: the days before the event's, so both modes see the same numbers."""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from tokentrail.analytics.config import AnomalyConfig
from tokentrail.events import COL, OUTPUT_LIMIT_NONE, OUTPUT_LIMIT_UNKNOWN, nano_to_usd

DAY_US = 86_400_000_000
HOUR_US = 3_600_000_000
MAX_EVIDENCE = 50  # event ids kept per anomaly
MAX_KEYS = 256  # distinct tool/request fingerprints counted per session
MAX_AGENTS = 10_000
_ATTRS = ("org", "team", "project", "agent", "user_id", "customer", "workflow", "task_type")
_ATTR_COLS = tuple(COL[a] for a in _ATTRS)
_ID, _KIND, _TS, _IN, _OUT = COL["event_id"], COL["kind"], COL["ts_us"], COL["input_tokens"], COL["output_tokens"]
_CACHE, _WINDOW, _COST = COL["cache_read_tokens"], COL["context_window_tokens"], COL["cost_nusd"]
_SESSION, _AGENT, _TEAM, _TASK = COL["session_id"], COL["agent"], COL["team"], COL["task_type"]
_TOOLS, _TOOL, _ARGS, _REQ = COL["tool_calls"], COL["tool_name"], COL["tool_args_hash"], COL["request_hash"]
_LIMIT, _STOPPED, _SYSTEM = COL["output_limit"], COL["stopped_on_limit"], COL["system_permille"]


@dataclass(frozen=True, slots=True)
class Anomaly:
    """One anomaly: what, where (its session and attribution), how far off, and its evidence."""

    kind: str
    dedup_key: str  # one anomaly per (kind, dedup_key): a session, or an agent's hour or day
    severity: str  # warning | critical
    ts_us: int
    session_id: str | None
    attrs: tuple[str | None, ...]  # org, team, project, agent, user, customer, workflow, task_type
    metric: float
    baseline: float | None
    threshold: float
    cost_nusd: int | None  # what the session (or the agent's window) had spent
    event_ids: tuple[str, ...]
    message: str

    @property
    def agent(self) -> str | None:
        return self.attrs[3]

    @property
    def team(self) -> str | None:
        return self.attrs[1]


@dataclass(frozen=True, slots=True)
class Stats:
    """A baseline: how many sessions, their median and median absolute deviation."""

    n: int
    median: float
    mad: float


class Baselines(Protocol):
    def sessions(self, agent: str | None, task_type: str | None, day_us: int) -> Stats: ...

    def ratio(self, agent: str | None, day_us: int) -> tuple[int, int, int]:
        """(input tokens, output tokens, model calls) of the agent in the days before `day_us`."""
        ...

    def cache(self, agent: str | None, day_us: int) -> tuple[int, int, int]:
        """(input tokens, cache reads, calls) of the agent's long prompts in the days before `day_us`."""
        ...


class _Session:
    __slots__ = (
        "attrs",
        "calls",
        "cost",
        "day",
        "grow",
        "last_in",
        "last_us",
        "raised",
        "run_len",
        "runs",
        "sys_in",
        "sys_n",
        "sys_w",
        "tokens",
    )

    def __init__(self, row: Any) -> None:
        self.attrs = tuple(row[c] for c in _ATTR_COLS)
        self.day = row[_TS] - row[_TS] % DAY_US
        self.last_us = row[_TS]
        self.tokens = self.cost = self.calls = 0
        self.last_in = -1
        self.run_len = 0
        self.grow: list[tuple[str, int]] = []  # (event id, input tokens) of the current rising run
        # made on first use: most sessions never need them (memory per active session)
        self.runs: dict[tuple[str, ...], str | list[str]] | None = None  # fingerprint -> event id(s)
        self.sys_w = self.sys_in = self.sys_n = 0  # system-weighted input, input, calls (share read)
        self.raised: set[str] | None = None


class _Agent:
    __slots__ = ("cache", "day", "hour", "limitless", "limitless_n", "ratio")

    def __init__(self) -> None:
        self.hour = self.day = -1
        self.ratio = [0, 0, 0]  # input, output, calls this hour
        self.cache = [0, 0, 0]  # input, cache reads, calls this hour (long prompts)
        self.limitless: list[str] = []  # calls without an output limit today (the first few)
        self.limitless_n = 0


def median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return 0.0 if n == 0 else (s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2)


def stats(totals: list[float]) -> Stats:
    m = median(totals)
    return Stats(len(totals), m, median([abs(x - m) for x in totals]))


def _usd(nusd: int) -> str:
    """Cents, or two significant digits below a cent ($0.0045, never a misleading $0.00); Decimal."""
    d = nano_to_usd(nusd) or Decimal(0)
    places = 2 if d == 0 or d >= Decimal("0.01") else 1 - d.adjusted()
    return f"${d:,.{places}f}"


class Detectors:
    """The state of every detector; `fold(rows)` returns the anomalies those rows raise."""

    def __init__(self, config: AnomalyConfig, baselines: Baselines) -> None:
        self.config = config
        self.baselines = baselines
        self.kinds = frozenset(config.kinds)
        self.sessions: OrderedDict[str, _Session] = OrderedDict()
        self.agents: OrderedDict[tuple[str | None, str | None], _Agent] = OrderedDict()
        self._idle_us = int(config.idle_s * 1_000_000)
        self._seen = 0

    def fold(self, rows: Iterable[Any]) -> list[Anomaly]:
        out: list[Anomaly] = []
        for row in rows:
            kind = row[_KIND]
            if kind != "llm" and kind != "tool":
                continue
            sid = row[_SESSION]
            s = None
            if sid is not None:
                s = self.sessions.get(sid)
                if s is None:
                    s = self.sessions[sid] = _Session(row)
                    if len(self.sessions) > self.config.max_sessions:
                        self.sessions.popitem(last=False)
                else:
                    self.sessions.move_to_end(sid)
                s.last_us = row[_TS]
            if kind == "tool":
                if s is not None and row[_ARGS] is not None:
                    self._repeat(out, s, row, ("run", row[_TOOL] or "", row[_ARGS]))
            else:
                self._llm(out, s, row)
            self._seen += 1
            if self._seen % 1024 == 0:
                self._drop_idle(row[_TS])
        return out

    def _drop_idle(self, now_us: int) -> None:
        while self.sessions:
            sid, s = next(iter(self.sessions.items()))
            if now_us - s.last_us < self._idle_us:
                break
            del self.sessions[sid]

    # -- session detectors ----------------------------------------------------------------------

    def _llm(self, out: list[Anomaly], s: _Session | None, row: Any) -> None:
        c, inp = self.config, row[_IN]
        if s is not None:
            s.calls += 1
            s.tokens += inp + row[_OUT]
            s.cost += row[_COST] or 0
            if row[_REQ] is not None:
                self._repeat(out, s, row, ("req", row[_REQ]))
            if row[_TOOLS]:
                for t in _tool_calls(row[_TOOLS]):
                    self._repeat(out, s, row, ("ask", *t))
            self._growth(out, s, row)
            self._spike(out, s, row)
            if row[_LIMIT] != OUTPUT_LIMIT_UNKNOWN:
                self._system(out, s, row)
        window = row[_WINDOW]
        if window and inp >= c.saturation * window and "context_saturation" in self.kinds:
            self._raise(
                out,
                "context_saturation",
                s,
                row,
                inp / window,
                None,
                c.saturation,
                [str(row[_ID])],
                f"a call filled {inp / window:.0%} of {window:,}-token context window",
            )
        if row[_STOPPED] and "output_ratio" in self.kinds:
            limit = row[_LIMIT] if row[_LIMIT] > 0 else None
            self._raise(
                out,
                "output_ratio",
                s,
                row,
                float(row[_OUT]),
                None,
                float(limit or row[_OUT]),
                [str(row[_ID])],
                f"a call stopped on its output limit ({row[_OUT]:,} tokens)",
            )
        self._agent(out, row)

    def _repeat(self, out: list[Anomaly], s: _Session, row: Any, key: tuple[str, ...]) -> None:
        runs = s.runs
        if runs is None:
            runs = s.runs = {}
        seen = runs.get(key)
        if seen is None:  # once: just the id (retry_repeats is at least 2)
            if len(runs) >= MAX_KEYS:
                runs.pop(next(iter(runs)))
            runs[key] = str(row[_ID])
            return
        ids = runs[key] = [seen] if isinstance(seen, str) else seen
        if len(ids) < MAX_EVIDENCE:
            ids.append(str(row[_ID]))
        n = len(ids)
        if n >= self.config.retry_repeats and "retry_loop" in self.kinds and not _raised(s, "retry_loop"):
            what = {
                "run": f"ran tool {key[1]} with the same arguments",
                "ask": f"was asked for tool {key[1]} with the same arguments",
                "req": "sent the same model request",
            }[key[0]]
            self._raise(
                out, "retry_loop", s, row, float(n), None, float(self.config.retry_repeats), ids, f"{what} {n} times"
            )

    def _growth(self, out: list[Anomaly], s: _Session, row: Any) -> None:
        inp = row[_IN]
        if inp > s.last_in and s.grow:
            s.grow.append((str(row[_ID]), inp))
            if len(s.grow) > MAX_EVIDENCE:  # keep the first (the ratio's base) and the latest
                del s.grow[1]
        else:
            s.grow = [(str(row[_ID]), inp)]
        s.last_in = inp
        first = s.grow[0][1]
        n = s.run_len = s.run_len + 1 if len(s.grow) > 1 else 1
        c = self.config
        if n >= c.growth_calls and first > 0 and inp >= c.growth_factor * first and "context_growth" in self.kinds:
            self._raise(
                out,
                "context_growth",
                s,
                row,
                inp / first,
                float(first),
                c.growth_factor,
                [i for i, _ in s.grow],
                f"input tokens rose over {n} calls, from {first:,} to {inp:,}",
            )

    def _spike(self, out: list[Anomaly], s: _Session, row: Any) -> None:
        if "token_spike" not in self.kinds or _raised(s, "token_spike"):
            return
        c = self.config
        b = self.baselines.sessions(s.attrs[3], s.attrs[7], s.day)
        if b.n < c.spike_min_baseline or b.median <= 0:
            return
        bar = c.spike_factor * b.median
        if b.mad > 0:
            bar = min(bar, b.median + c.spike_z * 1.4826 * b.mad)
        if s.tokens >= bar:
            self._raise(
                out,
                "token_spike",
                s,
                row,
                float(s.tokens),
                b.median,
                bar,
                [str(row[_ID])],
                f"the session used {s.tokens:,} tokens, {s.tokens / b.median:.1f}x its agent's "
                f"median session ({b.median:,.0f}, {b.n} sessions)",
            )

    def _system(self, out: list[Anomaly], s: _Session, row: Any) -> None:
        s.sys_w += row[_SYSTEM] * row[_IN]
        s.sys_in += row[_IN]
        s.sys_n += 1
        c = self.config
        if s.sys_n < c.system_min_calls or s.sys_in == 0 or "system_overhead" not in self.kinds:
            return
        share = s.sys_w / s.sys_in / 1000
        if share >= c.system_share:
            self._raise(
                out,
                "system_overhead",
                s,
                row,
                share,
                None,
                c.system_share,
                [str(row[_ID])],
                f"system/developer instructions are {share:.0%} of the session's input",
            )

    # -- agent detectors ------------------------------------------------------------------------

    def _agent(self, out: list[Anomaly], row: Any) -> None:
        key = (row[_TEAM], row[_AGENT])
        a = self.agents.get(key)
        if a is None:
            a = self.agents[key] = _Agent()
            if len(self.agents) > MAX_AGENTS:
                self.agents.popitem(last=False)
        ts, c = row[_TS], self.config
        hour, day = ts - ts % HOUR_US, ts - ts % DAY_US
        if hour != a.hour:
            a.hour, a.ratio, a.cache = hour, [0, 0, 0], [0, 0, 0]
        if day != a.day:
            a.day, a.limitless, a.limitless_n = day, [], 0
        inp = row[_IN]
        if "output_ratio" in self.kinds and inp > 0:
            r = a.ratio
            r[0], r[1], r[2] = r[0] + inp, r[1] + row[_OUT], r[2] + 1
            if r[2] == c.ratio_min_calls or (r[2] > c.ratio_min_calls and r[2] % 10 == 0):
                b_in, b_out, b_calls = self.baselines.ratio(row[_AGENT], day)
                if b_calls >= c.ratio_min_calls and b_in > 0 and b_out > 0:
                    base, now = b_out / b_in, r[1] / r[0]
                    if now >= c.ratio_factor * base:
                        self._raise(
                            out,
                            "output_ratio",
                            None,
                            row,
                            now,
                            base,
                            c.ratio_factor * base,
                            [str(row[_ID])],
                            f"output/input ratio {now:.3f} this hour, {now / base:.1f}x its 14-day {base:.3f}",
                            key=f"a:{key[0]}/{key[1]}:{hour}",
                        )
        if "cache_miss" in self.kinds and inp >= c.cache_min_prompt:
            k = a.cache
            k[0], k[1], k[2] = k[0] + inp, k[1] + row[_CACHE], k[2] + 1
            if k[2] == c.cache_min_calls or (k[2] > c.cache_min_calls and k[2] % 10 == 0):
                b_in, b_read, b_calls = self.baselines.cache(row[_AGENT], day)
                if b_calls >= c.cache_min_calls and b_in > 0 and b_read / b_in >= 0.05:
                    base, now = b_read / b_in, k[1] / k[0]
                    if now < c.cache_factor * base:
                        self._raise(
                            out,
                            "cache_miss",
                            None,
                            row,
                            now,
                            base,
                            c.cache_factor * base,
                            [str(row[_ID])],
                            f"cache reads are {now:.0%} of long prompts' input this hour, against "
                            f"{base:.0%} over 14 days",
                            key=f"a:{key[0]}/{key[1]}:{hour}",
                        )
        if "no_max_tokens" in self.kinds and row[_LIMIT] == OUTPUT_LIMIT_NONE:
            a.limitless_n += 1
            n = a.limitless_n
            if n <= MAX_EVIDENCE:
                a.limitless.append(str(row[_ID]))
            if n == c.no_limit_calls:
                self._raise(
                    out,
                    "no_max_tokens",
                    None,
                    row,
                    float(n),
                    None,
                    float(c.no_limit_calls),
                    a.limitless,
                    f"{n} calls today were sent without an output limit",
                    key=f"a:{key[0]}/{key[1]}:{day}",
                )

    # -- raising ----------------------------------------------------------------------------------

    def _raise(
        self,
        out: list[Anomaly],
        kind: str,
        s: _Session | None,
        row: Any,
        metric: float,
        baseline: float | None,
        threshold: float,
        ids: list[str],
        what: str,
        *,
        key: str | None = None,
    ) -> None:
        sid = row[_SESSION]
        if key is None:
            if s is not None:
                if _raised(s, kind):
                    return
                if s.raised is None:
                    s.raised = set()
                s.raised.add(kind)
            key = f"s:{sid}" if sid is not None else f"e:{row[_ID]!s}"
        attrs = s.attrs if s is not None else tuple(row[c] for c in _ATTR_COLS)
        cost = s.cost if s is not None else (row[_COST] or 0)
        where = f" in session {sid}" if sid is not None else ""
        spent = f"; the session has spent {_usd(cost)}" if s is not None else ""
        agent = attrs[3] or "(no agent)"
        return out.append(
            Anomaly(
                kind=kind,
                dedup_key=key,
                severity="critical" if threshold > 0 and metric >= 3 * threshold else "warning",
                ts_us=row[_TS],
                session_id=sid,
                attrs=attrs,
                metric=float(metric),
                baseline=baseline,
                threshold=float(threshold),
                cost_nusd=cost,
                event_ids=tuple(ids[:MAX_EVIDENCE]),
                message=f"{kind}: agent '{agent}' {what}{where}{spent}",
            )
        )


# tool_calls as the ledger writes them (events.to_row: compact JSON, sorted keys): read without a
# JSON parse; anything else (an edited row) falls back to json.loads
_TOOL_CALL = re.compile(r'\{"args_hash":"([0-9a-f]*)","id":(?:null|"(?:[^"\\]|\\.)*"),"name":"((?:[^"\\]|\\.)*)"\}')


def _raised(s: _Session, kind: str) -> bool:
    return s.raised is not None and kind in s.raised


def _tool_calls(text: str) -> list[tuple[str, str]]:
    found = _TOOL_CALL.findall(text)
    if found and len(found) == text.count('"args_hash"'):
        return [(name, h) for h, name in found]
    try:
        return [(str(t.get("name")), str(t.get("args_hash"))) for t in json.loads(text) if isinstance(t, dict)]
    except (ValueError, TypeError, AttributeError):
        return []
