"""Closing a ledger whose OpenTelemetry collector accepts connections and never answers: close()
and process exit are bounded by the export's shutdown timeout, never by the SDK's own waits (each
export's timeout, the batch processor's join, the metric reader's last export), which add up."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from tests.integrations._otel import exporting, work
from tokentrail.pricing import PriceBook


@pytest.fixture
def hanging_collector(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[socket.socket]]:
    """An endpoint that accepts every connection and never sends a byte (until the test ends)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "300")  # each export waits that long for an answer
    try:
        yield held
    finally:
        server.shutdown(socket.SHUT_RDWR)  # wakes the accept
        server.close()
        thread.join(5)
        for c in held:
            c.close()


def test_shutdown_returns_while_the_collector_still_hangs(
    hanging_collector: list[socket.socket], db_url: str, prices: PriceBook
) -> None:
    led = exporting(db_url, prices)
    try:
        work(led)
        led.flush()
        closing = threading.Thread(target=led.otel_export.shutdown, args=(0.5,), daemon=True)
        closing.start()
        closing.join(60)  # a safety cap, far above the 0.5 s asked for: the SDK alone would wait 300 s+
        assert not closing.is_alive()
        assert hanging_collector  # the collector was reached, and never answered
        assert led.otel_export.status()["closed"] is True
        assert led.otel_export.status()["spans_exported"] == 0
    finally:
        led.close()
