"""Run a function as an unprivileged user in a forked child (root ignores file permissions).

The interpreter lives under /root here, which other users cannot execute, so instead of a
new process the test forks and drops privileges in the child."""

from __future__ import annotations

import os
import pickle
import pwd
import traceback
from collections.abc import Callable
from typing import Any

import pytest


def run_as_nobody(fn: Callable[[], Any]) -> Any:
    """fn()'s return value, or the exception it raised (returned, not raised)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to an unprivileged user")
    nobody = pwd.getpwnam("nobody")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop privileges, run, send back the outcome
        os.close(read)
        try:
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            try:
                outcome: Any = fn()
            except BaseException as e:
                outcome = e if _picklable(e) else RuntimeError(f"{type(e).__name__}: {e}")
            data = pickle.dumps(outcome)
        except BaseException:
            data = pickle.dumps(RuntimeError(traceback.format_exc()))
        with os.fdopen(write, "wb") as f:
            f.write(data)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    return pickle.loads(data)


def _picklable(e: BaseException) -> bool:
    try:
        pickle.loads(pickle.dumps(e))
        return True
    except Exception:
        return False
