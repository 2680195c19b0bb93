"""`tokentrail serve`: the metering gateway, event and OTLP ingestion, the JSON API, the
dashboard and Prometheus metrics, in one ASGI app (see tokentrail.server.app)."""

from tokentrail.server.app import TokentrailApp, create_app
from tokentrail.server.gateway import Timeouts
from tokentrail.server.runner import ServerThread, serve

__all__ = ["ServerThread", "Timeouts", "TokentrailApp", "create_app", "serve"]
