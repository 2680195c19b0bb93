"""One batch of the budget engine, inside its one transaction: lock the counters the requests touch,
read their figures once, decide each request in memory in arrival order (as if each were its own
transaction), then write the holds, counters, window rows and alerts (tokentrail.budgets.engine)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tokentrail.budgets.ops import POST, RENEW, RESERVE, SWEEP, VOID, Hold, Op
from tokentrail.budgets.post_alerts import alerts_for, cap_overage
from tokentrail.budgets.refusals import block_until, decide
from tokentrail.events import ts_micros
from tokentrail.store.budgets import BudgetSQL, Counter, Exec, Later, Row


class _State:
    """One counter as the batch has it so far."""

    __slots__ = (
        "added_nusd",
        "added_tokens",
        "alerted",
        "blocked",
        "created",
        "dirty",
        "oldest",
        "posted_nusd",
        "posted_tokens",
        "reserved_nusd",
        "reserved_tokens",
        "win_nusd",
        "win_tokens",
        "window_us",
    )

    def __init__(self, row: Row, window_us: int) -> None:
        _, n, t, blocked, alerted, created = row
        self.created = bool(created)  # by this batch: dropped again if nothing lands on it
        self.posted_nusd, self.posted_tokens, self.blocked, self.alerted = int(n), int(t), blocked, int(alerted)
        self.reserved_nusd = self.reserved_tokens = 0
        self.window_us = window_us
        self.win_nusd = self.win_tokens = self.added_nusd = self.added_tokens = 0
        self.oldest: int | None = None
        self.dirty = False

    def show(self, c: Counter) -> None:
        """Put these figures on `c`, the counter as one request sees it (its own rule in c.extra)."""
        if self.window_us:
            c.posted_nusd, c.posted_tokens, c.oldest_us = self.win_nusd, self.win_tokens, self.oldest
        else:
            c.posted_nusd, c.posted_tokens = self.posted_nusd, self.posted_tokens
        c.reserved_nusd, c.reserved_tokens = self.reserved_nusd, self.reserved_tokens
        c.blocked_until_us, c.alerted = self.blocked, self.alerted


class Batch:
    """The requests of one transaction, decided in memory against the counters they lock."""

    def __init__(self, sql: BudgetSQL, x: Exec, now: datetime, timeout_us: int) -> None:
        self.sql = sql
        self.x = x
        self.now = now
        self.now_us = ts_micros(now)
        self.timeout_us = timeout_us
        self.state: dict[str, _State] = {}
        self.live: dict[str, list[tuple[str, int, int]]] | None = None  # released holds that still count
        self.new_holds: dict[str, Hold] = {}  # reserved in this batch (and not released in it)
        self.deleted: list[str] = []
        self.renewed: list[str] = []
        self.sweep = False
        self.alerts: list[tuple[Row, Later]] = []  # inserted unless their key was there already
        self.fired: list[Row] = []  # those this batch inserted, to deliver

    def load(self, ops: list[Op]) -> None:
        """Lock every counter the batch touches, and read what the requests need of them."""
        counters: dict[str, Counter] = {}
        reserving: set[str] = set()
        released: list[str] = []
        for op in ops:
            hold = op.hold
            if hold is None:
                continue
            if op.kind == RESERVE:
                for c in hold.enforced:
                    counters.setdefault(c.key, c)
                    reserving.add(c.key)
            elif op.kind == POST:
                for c in hold.counters:
                    counters.setdefault(c.key, c)
            if op.kind in (POST, VOID) and hold.reserved:
                released.append(hold.hold_id)
        if not counters:
            return
        sql, x, now_us = self.sql, self.x, self.now_us
        # the lock first; the reads after it (pipelined: one round trip for them all)
        locked = sql.lock(x, sorted(counters.values(), key=_key), now_us)
        windows = {k: sql.window(x, k, c.window_us, now_us) for k, c in counters.items() if c.window_us}
        reserved = sql.reserved(x, sorted(reserving), now_us) if reserving else None
        # what releasing the holds before a reservation gives back to it
        live = sql.live_holds(x, released, now_us) if reserving and released else None
        for row in locked():
            self.state[row[0]] = _State(row, counters[row[0]].window_us)
        for key, later in windows.items():
            st = self.state[key]
            n, t, st.oldest = later()[0]
            st.win_nusd, st.win_tokens = int(n), int(t)
        if reserved is not None:
            for key, n, t in reserved():
                self.state[key].reserved_nusd, self.state[key].reserved_tokens = int(n), int(t)
        if live is not None:
            self.live = {}
            for hold_id, key, n, t in live():
                self.live.setdefault(hold_id, []).append((key, int(n), int(t)))

    def apply(self, op: Op) -> Any:
        kind, hold = op.kind, op.hold
        if kind == RESERVE and hold is not None:
            return self._reserve(hold)
        if kind == POST and hold is not None:
            self._post(hold, op.nusd, op.tokens)
        elif kind == VOID and hold is not None:
            self._release(hold)
        elif kind == RENEW:
            self.renewed += [h.hold_id for h in op.holds or ()]
        elif kind == SWEEP:
            self.sweep = True
        return None

    def _reserve(self, hold: Hold) -> Any:
        enforced = hold.enforced
        for c in enforced:
            self.state[c.key].show(c)
        refusal = decide(enforced, hold.nusd, hold.tokens, self.now_us, hold.session_id)
        if refusal is not None:
            return refusal
        for c in enforced:
            st = self.state[c.key]
            st.reserved_nusd += hold.nusd
            st.reserved_tokens += hold.tokens
        hold.expires_us = self.now_us + self.timeout_us
        self.new_holds[hold.hold_id] = hold
        return None

    def _post(self, hold: Hold, nusd: int, tokens: int) -> None:
        sql, x, now, now_us = self.sql, self.x, self.now, self.now_us
        for r in hold.call_rules:
            if hold.charge:
                break
            if (r.limit_nusd is not None and nusd > r.limit_nusd) or (
                r.limit_tokens is not None and tokens > r.limit_tokens
            ):
                row = cap_overage(r, hold, nusd, tokens, now)
                self.alerts.append((row, sql.insert_alert(x, row)))
        if hold.counters and (nusd or tokens):
            blocks: dict[str, int] = {}
            for c in hold.counters:
                r = c.extra
                if (
                    c.enforce
                    and not hold.charge
                    and (
                        (r.limit_nusd is not None and nusd > hold.nusd)
                        or (r.limit_tokens is not None and tokens > hold.tokens)
                    )
                ):
                    blocks[c.key] = block_until(c, now_us)
            for c in hold.counters:
                st = self.state[c.key]
                st.posted_nusd = max(0, st.posted_nusd + nusd)  # a credit never takes a budget below zero
                st.posted_tokens = max(0, st.posted_tokens + tokens)
                if st.window_us:
                    st.win_nusd += nusd
                    st.win_tokens += tokens
                    st.added_nusd += nusd
                    st.added_tokens += tokens
                    st.oldest = now_us if st.oldest is None else min(st.oldest, now_us)
                until = blocks.get(c.key)
                if until is not None and (st.blocked is None or st.blocked < until):
                    st.blocked = until
                st.dirty = True
                st.show(c)
                bits = 0
                for alert_row, bit in alerts_for(c, hold, nusd, tokens, now, blocks):
                    self.alerts.append((alert_row, sql.insert_alert(x, alert_row)))
                    bits |= bit
                st.alerted |= bits
        self._release(hold)

    def _release(self, hold: Hold) -> None:
        """Drop a hold: what it reserved no longer counts."""
        if self.new_holds.pop(hold.hold_id, None) is not None:  # reserved in this batch: never written
            for c in hold.enforced:
                st = self.state[c.key]
                st.reserved_nusd -= hold.nusd
                st.reserved_tokens -= hold.tokens
            return
        if not hold.reserved:
            return
        self.deleted.append(hold.hold_id)
        if self.live is not None:
            for key, n, t in self.live.pop(hold.hold_id, ()):
                left = self.state.get(key)
                if left is not None:
                    left.reserved_nusd -= n
                    left.reserved_tokens -= t

    def write(self) -> None:
        sql, x, now_us = self.sql, self.x, self.now_us
        used = {c.key for h in self.new_holds.values() for c in h.enforced}
        unused = [k for k, s in self.state.items() if s.created and not s.dirty and k not in used]
        if unused:
            sql.drop_counters(x, unused)
        if self.new_holds:
            sql.insert_holds(
                x,
                [
                    (h.hold_id, c.key, h.nusd, h.tokens, h.expires_us, h.session_id)
                    for h in self.new_holds.values()
                    for c in h.enforced
                ],
            )
        if self.deleted:
            sql.delete_holds(x, self.deleted)
        dirty = [
            (s.posted_nusd, s.posted_tokens, s.blocked, s.alerted, now_us, k) for k, s in self.state.items() if s.dirty
        ]
        if dirty:
            sql.update_counters(x, dirty)
        for key, st in self.state.items():
            if st.added_nusd or st.added_tokens:
                sql.add_window(x, key, now_us, st.added_nusd, st.added_tokens, st.window_us)
        if self.renewed:
            sql.renew(x, self.renewed, now_us + self.timeout_us, now_us)
        if self.sweep:
            sql.sweep(x, now_us)
        self.fired = [row for row, inserted in self.alerts if inserted()]


def _key(c: Counter) -> str:
    return c.key


__all__ = ["Batch"]
