"""The dashboard: index.html (served at /) and its scripts (served at /dashboard/<name>), files
of this package. Only the named scripts are served, never any other path."""

from __future__ import annotations

from importlib import resources

from starlette.requests import Request
from starlette.responses import Response

from tokentrail.server.state import error

SCRIPTS = (
    "common.js",
    "chart.js",
    "panels.js",
    "reconcile.js",
    "economics.js",
    "export.js",
    "forecast.js",
    "anomalies.js",
    "advise.js",
)


async def script(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in SCRIPTS:
        return error(404, f"no route {request.url.path}")
    body = resources.files(__name__).joinpath(name).read_bytes()
    return Response(body, media_type="text/javascript; charset=utf-8", headers={"Cache-Control": "no-cache"})
