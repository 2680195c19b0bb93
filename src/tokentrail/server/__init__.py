"""`tokentrail serve`: the metering gateway, event and OTLP ingestion, the JSON API, the
dashboard and Prometheus metrics, in one ASGI app (see tokentrail.server.app)."""

try:
    from tokentrail.server.app import TokentrailApp, create_app
    from tokentrail.server.gateway import Timeouts
    from tokentrail.server.runner import ServerThread, serve
except ImportError as e:
    from tokentrail._extras import raise_missing_extra

    raise_missing_extra(e, "tokentrail.server", "server")

__all__ = ["ServerThread", "Timeouts", "TokentrailApp", "create_app", "serve"]
