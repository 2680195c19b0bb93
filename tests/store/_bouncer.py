"""A throwaway PgBouncer in transaction mode in front of the test PostgreSQL, for one test: a fresh
database of its own (PgBouncer passes no `options` startup parameter, so the schema-per-test
URLs of tests/pg.py cannot go through it), listening on a loopback port."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import psycopg
from psycopg import sql

POOL_SIZE = 4  # server connections PgBouncer keeps per database and user


@dataclass(frozen=True)
class Bouncer:
    url: str  # the ledger's URL, through PgBouncer
    database: str  # its database on the real server (to count its connections)


def binary() -> str | None:
    return shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.access(p, os.X_OK)), None
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def pgbouncer(base_url: str) -> Iterator[Bouncer]:
    exe = binary()
    assert exe is not None
    parts = urlsplit(base_url)
    host, port = unquote(parts.hostname or ""), parts.port or 5432
    if "%2F" in base_url.split("@", 1)[1].split(":", 1)[0]:  # a socket folder, percent-encoded
        host = unquote(base_url.split("@", 1)[1].rsplit(":", 1)[0])
    database = "tt_bouncer_" + secrets.token_hex(4)
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    folder = tempfile.mkdtemp(prefix="tokentrail-pgbouncer.")
    listen = _free_port()
    try:
        os.chmod(folder, 0o755)
        with open(os.path.join(folder, "userlist.txt"), "w") as f:
            f.write('"postgres" ""\n')
        with open(os.path.join(folder, "pgbouncer.ini"), "w") as f:
            f.write(
                "[databases]\n"
                f"{database} = host={host} port={port} dbname={database}\n"
                "[pgbouncer]\n"
                "listen_addr = 127.0.0.1\n"
                f"listen_port = {listen}\n"
                "unix_socket_dir =\n"
                "auth_type = trust\n"
                f"auth_file = {folder}/userlist.txt\n"
                "pool_mode = transaction\n"
                f"default_pool_size = {POOL_SIZE}\n"
                "max_client_conn = 200\n"
                f"logfile = {folder}/pgbouncer.log\n"
                f"pidfile = {folder}/pgbouncer.pid\n"
            )
        cmd = [exe, os.path.join(folder, "pgbouncer.ini")]
        if os.geteuid() == 0:  # PgBouncer refuses to run as root
            shutil.chown(folder, "postgres")
            for name in ("userlist.txt", "pgbouncer.ini"):
                shutil.chown(os.path.join(folder, name), "postgres")
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", listen), timeout=1):
                        break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        err = proc.stderr.read() if proc.stderr else ""
                        raise AssertionError(f"pgbouncer did not start: {err}") from None
                    time.sleep(0.05)
            yield Bouncer(f"postgresql://postgres@127.0.0.1:{listen}/{database}", database)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            if proc.stderr is not None:
                proc.stderr.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        with psycopg.connect(base_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
