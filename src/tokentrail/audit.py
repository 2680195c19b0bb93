"""The audit chain: verify it row by row, and sign its head into checkpoints kept outside the ledger.

Every event row carries `seq`, `prev_hash` and `hash = events.chain_hash(seq, prev_hash, row)`.
`verify()` walks the rows in seq order, recomputing each link, and stops at the first bad one,
saying why (see `_classify` for the rules): `modified`, `missing`, `inserted` or `reordered`.
It reads through `store.chain()` one page at a time, so memory stays constant however long the
chain is.

A chain proves nothing against someone who rewrites a row and then rehashes every row after it:
the result is a valid-looking chain. A checkpoint stops that: `(seq, hash, time)` signed with
HMAC-SHA256 under TOKENTRAIL_AUDIT_KEY and stored away from the database. A rebuilt chain no longer
has the signed hash at the signed seq.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

from tokentrail.events import GENESIS_HASH, chain_hash
from tokentrail.exceptions import ConfigError, TokentrailError
from tokentrail.store.chain import chain_head, first_ts_from, hashes_at, lowest_seq
from tokentrail.store.rollup_check import RollupMismatch, check_rollups
from tokentrail.store.rollup_window import Window, window
from tokentrail.types import Store

KEY_ENV = "TOKENTRAIL_AUDIT_KEY"
REASONS = ("modified", "missing", "inserted", "reordered")
# How far back a row's prev_hash is looked up, and how far around its seq its true place is
# searched, when classifying a break; also the lookahead. Constant memory, a few hundred hashes.
WINDOW = 64
_SIG_TAG = b"tokentrail/checkpoint/v1\n"

Link = tuple[int, bytes, bytes, tuple[Any, ...]]  # (seq, prev_hash, hash, row), as store.chain() yields


class CheckpointError(TokentrailError):
    """A checkpoint file cannot be trusted: unreadable, malformed, or its signature does not match."""


@dataclass(frozen=True, slots=True)
class Problem:
    """The first bad place in the chain: its seq, why (one of REASONS), and what was found there."""

    seq: int
    reason: str
    detail: str
    event_id: str | None = None

    def __str__(self) -> str:
        event = f" (event {self.event_id})" if self.event_id else ""
        return f"seq {self.seq}: {self.reason}{event}: {self.detail}"


@dataclass(frozen=True, slots=True)
class Verification:
    """What `verify()` found: `count` rows checked and good, the last good link (`head_seq`,
    `head_hash`), the first problem if any, and how many checkpoints matched."""

    count: int
    head_seq: int
    head_hash: bytes
    problem: Problem | None = None
    checkpoints: int = 0
    # rollup rows that disagree with the events (tokentrail.store.rollup_check): reports read them
    rollups: tuple[RollupMismatch, ...] = ()
    # the days of the rollups checked (tokentrail.store.rollup_window); None: every row from the
    # day of the first event walked (all of them from genesis)
    window: Window | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None and not self.rollups


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed chain head: the chain had `hash` at `seq` at `time`."""

    seq: int
    hash: bytes
    time: datetime = field(default_factory=lambda: datetime.now(UTC))

    def _payload(self) -> bytes:
        body = {"v": 1, "seq": self.seq, "hash": self.hash.hex(), "time": self.time.isoformat()}
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    def signature(self, key: bytes) -> str:
        return hmac.new(key, _SIG_TAG + self._payload(), hashlib.sha256).hexdigest()

    def to_line(self, key: bytes) -> str:
        """One JSON line: the payload plus its HMAC-SHA256 `sig`."""
        body = json.loads(self._payload())
        body["sig"] = self.signature(key)
        return json.dumps(body, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_line(cls, line: str, key: bytes) -> Checkpoint:
        """Parse and authenticate one line; CheckpointError if it is malformed or forged."""
        try:
            body = json.loads(line)
            sig = body.pop("sig")
            if body.get("v") != 1 or set(body) != {"v", "seq", "hash", "time"}:
                raise ValueError("unknown format")
            cp = cls(int(body["seq"]), bytes.fromhex(body["hash"]), datetime.fromisoformat(body["time"]))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise CheckpointError(f"not a tokentrail checkpoint ({e})") from None
        if cp._payload() != json.dumps(body, sort_keys=True, separators=(",", ":")).encode():
            raise CheckpointError("not in canonical form")
        if not isinstance(sig, str) or not hmac.compare_digest(sig, cp.signature(key)):
            raise CheckpointError(f"bad signature (a different {KEY_ENV}, or the file was altered)")
        return cp


def audit_key() -> bytes:
    """The checkpoint signing key from TOKENTRAIL_AUDIT_KEY; ConfigError when it is not set."""
    key = os.environ.get(KEY_ENV, "")
    if not key:
        raise ConfigError(
            f"{KEY_ENV} is not set: checkpoints are signed (HMAC-SHA256) with it; set it to a secret "
            "kept outside the database, the same one for `audit checkpoint` and `audit verify --checkpoint`"
        )
    return key.encode()


def load_checkpoints(path: str | os.PathLike[str], key: bytes) -> list[Checkpoint]:
    """Every checkpoint in a file (one signed JSON line each), authenticated, in file order."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ConfigError(f"cannot read the checkpoint file {path}: {e.strerror or e}") from None
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(Checkpoint.from_line(line, key))
        except CheckpointError as e:
            raise CheckpointError(f"{path}, line {n}: {e}") from None
    if not out:
        raise ConfigError(f"the checkpoint file {path} holds no checkpoint")
    return out


def append_checkpoint(path: str | os.PathLike[str], checkpoint: Checkpoint, key: bytes) -> None:
    """Append one signed line to a checkpoint file and fsync it (a history of heads, oldest first)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (checkpoint.to_line(key) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def checkpoint(store: Store, *, previous: Sequence[Checkpoint] = ()) -> tuple[Checkpoint, Verification]:
    """Verify the chain and return a checkpoint of its head (sign it with `to_line`). With earlier
    checkpoints, only what follows the latest is walked, anchored on its signed hash, so a chain
    rebuilt since then is refused rather than signed. ValueError when the chain is broken."""
    start = max(previous, key=lambda c: c.seq, default=None)
    result = verify(store, from_seq=start.seq + 1 if start else 1, checkpoints=previous)
    if result.problem is not None:
        raise ValueError(f"the audit chain is broken, not signing it: {result.problem}")
    if result.rollups:
        raise ValueError(f"the rollups disagree with the events, not signing: {result.rollups[0]}")
    return Checkpoint(result.head_seq, result.head_hash), result


# -- verification ----------------------------------------------------------------------------------


def verify(
    store: Store,
    *,
    from_seq: int = 1,
    checkpoints: Iterable[Checkpoint] = (),
    full: bool = True,
    rotation: int | None = None,
) -> Verification:
    """Recompute the chain from `from_seq` (1: from genesis) to its end and return what was found.

    Starting later trusts the stored hash of row `from_seq - 1` (a checkpoint at that seq makes it
    trusted). Each checkpoint must match the chain at its seq; one before the start is checked by
    a point lookup. The chain must also end where `chain_head` says (no row cut off the end, none
    appended around the writer). The rollups must hold what the events add up to
    (tokentrail.store.rollup_check): with `full`, all of them from genesis; without, the window of
    days tokentrail.store.rollup_window chooses, anchored after the latest checkpoint or
    `from_seq - 1` (`rotation`: which weeks of the rest, by default today's). From a later seq,
    either way, nothing before the day of the first event walked (archived months keep rollups)."""
    if type(from_seq) is not int or from_seq < 1:
        raise ValueError(f"--from-seq must be a whole number >= 1, not {from_seq!r}")
    marks: dict[int, list[Checkpoint]] = {}
    for cp in checkpoints:
        marks.setdefault(cp.seq, []).append(cp)
    w = _Walk(store, marks)
    problem = w.start(from_seq)
    if problem is None:
        problem = w.run(from_seq)
    if full:
        return Verification(w.count, w.seq, w.prev, problem, w.matched, _rollups(store, from_seq))
    since = first_ts_from(store, from_seq) if from_seq > 1 else None
    anchors = [s for s in (from_seq - 1, max(marks, default=0)) if s > 0]
    days = window(store, anchor_seq=min(anchors, default=None), rotation=rotation, from_us=since)
    if from_seq > 1 and since is None:
        return Verification(w.count, w.seq, w.prev, problem, w.matched, (), days)  # nothing walked
    found = tuple(check_rollups(store, ranges=days.ranges))
    return Verification(w.count, w.seq, w.prev, problem, w.matched, found, days)


def _rollups(store: Store, from_seq: int) -> tuple[RollupMismatch, ...]:
    since = None
    if from_seq > 1:
        since = first_ts_from(store, from_seq)
        if since is None:
            return ()  # nothing walked: nothing of the rollups to check against it
    return tuple(check_rollups(store, since_us=since))


class _Walk:
    """The state of one verification: the last good link and a window of recent ones."""

    def __init__(self, store: Store, marks: dict[int, list[Checkpoint]]) -> None:
        self.store = store
        self.marks = marks
        self.seq = 0  # the last good seq ...
        self.prev = GENESIS_HASH  # ... and its hash
        self.prev_id: str | None = None
        self.count = 0
        self.matched = 0
        self.recent: dict[bytes, int] = {}
        self._order: deque[bytes] = deque()

    def _remember(self, h: bytes, seq: int) -> None:
        self.recent[h] = seq
        self._order.append(h)
        if len(self._order) > WINDOW:
            self.recent.pop(self._order.popleft(), None)

    def _checkpoint_problem(self, seq: int, h: bytes) -> Problem | None:
        for cp in self.marks.get(seq, ()):
            if cp.hash != h:
                earlier = [s for s in self.marks if s < seq]
                since = f"seqs {max(earlier) + 1}..{seq}" if earlier else f"seqs 1..{seq}"
                return Problem(
                    seq,
                    "modified",
                    f"the chain no longer has the hash signed in the checkpoint of {cp.time.isoformat()} "
                    f"({cp.hash.hex()[:16]}…): rows in {since} were rewritten and the chain rebuilt after it",
                )
            self.matched += 1
        return None

    def start(self, from_seq: int) -> Problem | None:
        """Check the checkpoints before the start, and set the anchor."""
        for seq in sorted(s for s in self.marks if s < from_seq - 1 and s > 0):
            found = hashes_at(self.store, seq)
            if not found:
                return Problem(seq, "missing", f"a checkpoint records seq {seq}, which is not in the ledger")
            for h in found:
                if (problem := self._checkpoint_problem(seq, h)) is not None:
                    return problem
        if from_seq == 1:
            low = lowest_seq(self.store)
            if low is not None and low < 1:
                return Problem(low, "inserted", "the chain starts at seq 1: this row was put before it")
            self._remember(GENESIS_HASH, 0)
            return None
        self.seq = from_seq - 1
        first = _first_link(self.store, self.seq)
        if first is None or first[0] != self.seq:
            return Problem(self.seq, "missing", f"there is no row at seq {self.seq} to start after")
        self.prev, self.prev_id = first[2], first[3][0]
        self._remember(self.prev, self.seq)
        return self._checkpoint_problem(self.seq, self.prev)

    def run(self, from_seq: int) -> Problem | None:
        """Walk from `from_seq` to the end, then check the end against chain_head (re-reading the
        rows appended meanwhile, so concurrent writers are not mistaken for tampering)."""
        problem = self._walk(from_seq)
        while problem is None:
            head = chain_head(self.store)
            head_seq, head_hash = head if head is not None else (0, GENESIS_HASH)
            if head_seq > self.seq:
                before = self.seq
                problem = self._walk(self.seq + 1)
                if problem is None and self.seq == before:
                    return Problem(
                        before + 1,
                        "missing",
                        f"the chain ends at seq {before} but its head records seq {head_seq}: "
                        "rows were cut off the end",
                    )
                continue
            if head_seq < self.seq:
                return Problem(
                    head_seq + 1,
                    "inserted",
                    f"rows after the chain head (seq {head_seq}) were appended around the writer",
                )
            if head_hash != self.prev and self.seq > 0:
                return Problem(
                    self.seq,
                    "modified",
                    "the chain head records another hash for this row: it (or the head) was rewritten",
                    self.prev_id,
                )
            later = [s for s in self.marks if s > self.seq]
            if later:
                return Problem(
                    self.seq + 1,
                    "missing",
                    f"a checkpoint records seq {max(later)}, but the chain ends at seq {self.seq}",
                )
            return None
        return problem

    def _walk(self, from_seq: int) -> Problem | None:
        it = _links(self.store, from_seq)
        try:
            for link in it:
                seq, prev, h, row = link
                if seq == self.seq + 1 and prev == self.prev and chain_hash(seq, prev, row) == h:
                    if (problem := self._checkpoint_problem(seq, h)) is not None:
                        return Problem(problem.seq, problem.reason, problem.detail, row[0])
                    self.seq, self.prev, self.prev_id = seq, h, row[0]
                    self.count += 1
                    self._remember(h, seq)
                    continue
                return self._classify(link, list(islice(it, WINDOW)))
            return None
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    def _classify(self, link: Link, ahead: list[Link]) -> Problem:
        """Why the first bad row is bad. `e` is the seq it should have, `g` the hash it should
        link to. The rules, in order (a row's "home" is the seq its own hash was made for):

        1. its seq was already seen (two rows claim it)        -> inserted at that seq
        2. its seq skips ahead of e                            -> missing at e
        3. it hashes right but links to the wrong hash:
           the hash of an older row, seq b (rows since slipped in) -> inserted at b + 1
           else (the row before it was rewritten and rehashed)     -> modified at e - 1
        4. its home is an earlier seq h (rows pushed it down)  -> inserted at h
        5. its home is a later seq: the row made for e turns up
           further on                                          -> reordered at e
           (else: it was deleted and the rest renumbered)      -> missing at e
        6. no home at all: it holds the next row's content and
           that row holds its content                          -> reordered at e
           the next row was made for e (this one is forged)    -> inserted at e
           else (content or hash edited in place)              -> modified at e
        """
        seq, prev, h, row = link
        e, g, eid = self.seq + 1, self.prev, row[0]
        if seq < e:
            nxt = next((x for x in ahead if x[0] == e), None)
            intruder = self.prev_id if nxt is not None and nxt[1] == h else eid
            return Problem(seq, "inserted", f"two rows claim seq {seq}; this one is not part of the chain", intruder)
        if seq > e:
            gap = f"seq {e}" if seq == e + 1 else f"seqs {e}..{seq - 1}"
            return Problem(e, "missing", f"{gap} absent: the next row is seq {seq}")
        if chain_hash(seq, prev, row) == h:
            back = self.recent.get(prev)
            if back is not None and back < e - 1:
                return Problem(
                    back + 1,
                    "inserted",
                    f"the row at seq {e} links to seq {back}: the rows between were slipped in",
                    self.prev_id if back + 1 == e - 1 else None,
                )
            if e > 1:
                return Problem(
                    e - 1,
                    "modified",
                    f"rewritten and rehashed: the row after it still links to its old hash {prev.hex()[:16]}…",
                    self.prev_id,
                )
            return Problem(e, "modified", "the first row does not link to the genesis hash", eid)
        home = _home(prev, h, row, e)
        if home is not None and home < e:
            return Problem(
                home,
                "inserted",
                f"the row now at seq {e} was made for seq {home}: {e - home} row(s) were slipped in before it",
                self.prev_id if home == e - 1 else None,
            )
        if home is not None:
            for x in ahead[: min(home - e, WINDOW)]:
                if chain_hash(e, x[1], x[3]) == x[2]:
                    return Problem(
                        e,
                        "reordered",
                        f"seq {e} holds the row made for seq {home}; the row made for it is at seq {x[0]}",
                        eid,
                    )
            return Problem(e, "missing", f"the row made for seq {e} is gone and the rows after it were renumbered")
        nxt = ahead[0] if ahead and ahead[0][0] == e + 1 else None
        if nxt is not None:
            if chain_hash(e, prev, nxt[3]) == h and chain_hash(e + 1, nxt[1], row) == nxt[2]:
                return Problem(e, "reordered", f"the contents of seqs {e} and {e + 1} were swapped", eid)
            if nxt[1] == g and chain_hash(e, nxt[1], nxt[3]) == nxt[2]:
                return Problem(e, "inserted", f"a forged row: the row made for seq {e} follows it", eid)
        return Problem(e, "modified", "the row no longer matches its hash", eid)


def _home(prev: bytes, h: bytes, row: tuple[Any, ...], e: int) -> int | None:
    """The seq near e (not e) whose link this row's hash was made for, if any."""
    for s in range(max(1, e - WINDOW), e + WINDOW + 1):
        if s != e and chain_hash(s, prev, row) == h:
            return s
    return None


def _links(store: Store, from_seq: int) -> Iterator[Link]:
    return store.chain(from_seq)


def _first_link(store: Store, seq: int) -> Link | None:
    it = store.chain(seq)
    try:
        return next(it, None)
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()


def head_seq(store: Store) -> int:
    """The seq the chain head says is last (0: an empty ledger)."""
    head = chain_head(store)
    return head[0] if head else 0


__all__ = [
    "KEY_ENV",
    "REASONS",
    "Checkpoint",
    "CheckpointError",
    "Problem",
    "Verification",
    "Window",
    "append_checkpoint",
    "audit_key",
    "checkpoint",
    "load_checkpoints",
    "verify",
]
