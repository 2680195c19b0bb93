"""The spool: where batches wait, fsynced, while the store cannot take them.

One folder per ledger (under TOKENTRAIL_SPOOL_DIR, default ~/.tokentrail/spool). Each
process appends to its own file, which it holds under an exclusive flock, so a file nobody
holds belongs to a process that died and may be replayed by anyone. A file is a sequence of
records, each `length (4 bytes) | crc32 (4 bytes) | JSON batch`; a torn last record (the
process died mid-write, before fsync returned, so nobody was told it was durable) fails its
CRC and is ignored. Replay writes the batches in order through the store, which skips event
ids it already has, so replaying twice never duplicates anything.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokentrail.events import upgraded_row
from tokentrail.types import Store

log = logging.getLogger("tokentrail")

_HEADER = struct.Struct(">II")
_SUFFIX = ".spool"
Row = tuple[Any, ...]


def default_dir() -> Path:
    return Path(os.environ.get("TOKENTRAIL_SPOOL_DIR") or "~/.tokentrail/spool").expanduser()


def folder_for(root: Path, ledger_url: str) -> Path:
    """The spool folder of one ledger (a hash of its URL: no password in a file name)."""
    return root / hashlib.sha256(ledger_url.encode()).hexdigest()[:16]


@dataclass
class Batch:
    events: list[Row]
    outcomes: list[Row]
    quarantine: list[Row]

    def to_bytes(self) -> bytes:
        return json.dumps(
            {"events": self.events, "outcomes": self.outcomes, "quarantine": self.quarantine},
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode("utf-8", "surrogatepass")  # a lone surrogate is kept, not a reason to fail

    @classmethod
    def from_bytes(cls, data: bytes) -> Batch:
        d = json.loads(data.decode("utf-8", "surrogatepass"))
        return cls(
            [upgraded_row(tuple(r)) for r in d.get("events", [])],  # an older version's rows too
            [tuple(r) for r in d.get("outcomes", [])],
            [tuple(r) for r in d.get("quarantine", [])],
        )

    def write_to(self, store: Store) -> None:
        """Write the batch (idempotent: stored event, outcome and quarantine ids are skipped)."""
        store.write_events(self.events)
        store.write_outcomes(self.outcomes)
        store.write_quarantine(self.quarantine)


Writer = Callable[[Batch], None]


def read_records(path: Path) -> Iterator[Batch]:
    """The intact records of a spool file, in order; stops at the first torn one."""
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos + _HEADER.size <= len(data):
        length, crc = _HEADER.unpack_from(data, pos)
        body = data[pos + _HEADER.size : pos + _HEADER.size + length]
        if len(body) != length or zlib.crc32(body) != crc:
            log.warning("tokentrail: %s ends with a torn record (never acknowledged); ignoring it", path)
            return
        yield Batch.from_bytes(body)
        pos += _HEADER.size + length


class Spool:
    """This process's spool for one ledger: append batches, replay every orphaned file."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._file: Any = None  # our own spool file, opened on first append
        self._path: Path | None = None
        # batches waiting: files left by a process that died (nobody holds them), later ours
        self.pending = any(_try_probe(p) for p in self._files())

    def _files(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(self.folder.glob(f"*{_SUFFIX}"))

    # -- appending ----------------------------------------------------------------------------

    def append(self, batch: Batch) -> None:
        """Append and fsync one batch. Raises OSError when the disk refuses (the caller keeps it)."""
        if self._file is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            name = f"{time.time_ns():020d}-{os.getpid()}{_SUFFIX}"
            self._path = self.folder / name
            f = open(self._path, "ab")  # noqa: SIM115 - held open (and locked) while we own it
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            _fsync_dir(self.folder)
            self._file = f
        body = batch.to_bytes()
        start = self._file.tell()
        try:
            self._file.write(_HEADER.pack(len(body), zlib.crc32(body)) + body)
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError:
            # leave no half record behind for the next append to follow
            self._file.truncate(start)
            self._file.seek(start)
            raise
        self.pending = True

    # -- replay -------------------------------------------------------------------------------

    def replay(self, store: Store, write: Writer | None = None) -> int:
        """Write every spooled batch we may take (ours, and files no live process holds) to the
        store, oldest first, removing each file once it is all written. `write` writes one batch
        (default: Batch.write_to; the ledger passes one that quarantines rows refused for good).
        Returns the batches written; raises the store's error while it is unavailable."""
        write = write or (lambda batch: batch.write_to(store))
        written = 0
        for path in self._files():
            own = path == self._path
            handle = None if own else _try_lock(path)
            if not own and handle is None:
                continue  # a live process owns it and will replay it itself
            try:
                for batch in read_records(path):
                    write(batch)
                    written += 1
                if own:
                    self._close_own()
                path.unlink(missing_ok=True)
            finally:
                if handle is not None:
                    handle.close()
        self.pending = False
        return written

    def status(self) -> list[tuple[Path, int, int, bool]]:
        """(file, batches, events, held by a live process) of every spool file."""
        out = []
        for path in self._files():
            batches = list(read_records(path))
            held = path != self._path and not _try_probe(path)
            out.append((path, len(batches), sum(len(b.events) for b in batches), held))
        return out

    def _close_own(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file = None
        self._path = None

    def close(self) -> None:
        """Release our file; a non-empty one stays for the next process (or `tokentrail spool replay`)."""
        path = self._path
        self._close_own()
        if path is not None and path.exists() and path.stat().st_size == 0:
            path.unlink()


def _try_lock(path: Path) -> Any:
    """Open and lock a spool file nobody holds; None when a live process holds it."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - returned to the caller, who closes it
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    return f


def _try_probe(path: Path) -> bool:
    """Whether nobody holds the file (it could be replayed now)."""
    f = _try_lock(path)
    if f is None:
        return False
    f.close()
    return True


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
