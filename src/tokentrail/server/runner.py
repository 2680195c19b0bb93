"""Run the server with uvicorn: in the foreground (`tokentrail serve`) or in a background thread
on an ephemeral port (tests, benchmarks, `tokentrail demo --via-gateway`)."""

from __future__ import annotations

import importlib.util
import socket
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn


def _fastest(module: str, fallback: str) -> str:
    return module if importlib.util.find_spec(module) is not None else fallback


def config(app: Any, host: str, port: int, *, log_level: str = "warning") -> uvicorn.Config:
    """uvloop and httptools when installed (the `server` extra brings them), no access log: it
    would cost time on every call and could write a Gemini `?key=` query string to the log."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop" if _fastest("uvloop", "") else "asyncio",
        http="httptools" if _fastest("httptools", "") else "h11",
        lifespan="on",
        access_log=False,
        log_level=log_level,
        timeout_keep_alive=75,
        server_header=False,
    )


def serve(app: Any, host: str = "127.0.0.1", port: int = 8787, *, log_level: str = "info") -> None:
    """Serve in the foreground until interrupted."""
    uvicorn.Server(config(app, host, port, log_level=log_level)).run()


class ServerThread:
    """`with ServerThread(app) as s: ... s.url`: the app served on 127.0.0.1 in a daemon thread."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, *, log_level: str = "warning") -> None:
        self.app = app
        self.host = host
        self.port = port
        self.log_level = log_level
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ServerThread:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        server = self._server = uvicorn.Server(config(self.app, self.host, self.port, log_level=self.log_level))
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=f"tokentrail-serve:{self.port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the tokentrail server on port {self.port} did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=30)
        self._server = self._thread = None

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()
