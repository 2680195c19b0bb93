"""The chargeback routes: `GET /api/v1/export` (FOCUS / CSV / Parquet, streamed) and
`GET /api/v1/reprice` (a what-if, never a write).

Scoped like every read: the key's attribution is AND-ed into the query, so a team key exports
only its team's rows. With `allocated=1` the server's allocation rules (TOKENTRAIL_ALLOCATION,
never a path a caller names) spread shared spend first over everything, and the caller's
filters and scope then keep their own rows: a team sees what was allocated to it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from tokentrail.analytics.export import ATTRIBUTION, Line, lines
from tokentrail.analytics.export_write import FORMATS, csv_chunks, require_pyarrow, write
from tokentrail.server.api import BadRequest, _times, _where
from tokentrail.server.auth import AuthError
from tokentrail.server.heavy import HeldStream, busy
from tokentrail.server.heavy import run as run_heavy
from tokentrail.server.state import auth_error, caller, error, state_of

_MEDIA = {
    "focus": "text/csv; charset=utf-8",
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
    "focus-parquet": "application/vnd.apache.parquet",
}
_POST_FILTER = (*ATTRIBUTION, "provider", "model")
_CHUNK = 1 << 16


def _flag(request: Request, name: str) -> bool:
    v = request.query_params.get(name, "").strip().lower()
    if v not in ("", "0", "1", "true", "false"):
        raise BadRequest(f"{name} must be 1 or 0")
    return v in ("1", "true")


def _plan(request: Request) -> Any:
    if not _flag(request, "allocated"):
        return None
    path = os.environ.get("TOKENTRAIL_ALLOCATION")
    if not path:
        raise BadRequest("allocated=1: this server has no allocation rules (TOKENTRAIL_ALLOCATION)")
    from tokentrail.analytics.allocation import load_rules

    return load_rules(path)


def _kept(source: Iterator[Line], filters: dict[str, list[str]]) -> Iterator[Line]:
    """Lines whose attribution / model pass every filter (after allocation)."""
    for ln in source:
        if all(
            ((ln.attribution.get(d) if d in ATTRIBUTION else getattr(ln, d)) or "") in values
            for d, values in filters.items()
        ):
            yield ln


def _source(request: Request, key: Any) -> tuple[str, Iterator[Line], bool]:
    """(format, the lines, include_unpriced): every input checked before a byte is sent."""
    q = request.query_params
    fmt = q.get("format", "focus")
    if fmt not in FORMATS:
        raise BadRequest(f"format must be one of {', '.join(FORMATS)}")
    granularity = q.get("granularity", "day")
    if granularity not in ("hour", "day"):
        raise BadRequest("granularity must be hour or day")
    since, until, tz = _times(request)
    where = _where(request, key)
    include_unpriced = _flag(request, "include_unpriced")
    plan = _plan(request)
    store = state_of(request).store
    if plan is None:
        src = lines(store, since=since, until=until, granularity=granularity, tz=tz, where=where, scope=key.attribution)
    else:
        from tokentrail.analytics.allocation_trees import allocated_lines

        wanted = {**where, **{d: [v] for d, v in key.attribution.items()}}
        if any(d not in _POST_FILTER for d in wanted):
            raise BadRequest(f"with allocated=1, filters are on {', '.join(_POST_FILTER)} only")
        src = _kept(allocated_lines(store, plan, since=since, until=until, granularity=granularity, tz=tz), wanted)
    return fmt, src, include_unpriced


async def export(request: Request) -> Response:
    """Usage and cost as FOCUS 1.2 / CSV / Parquet for [since, until), streamed."""
    try:
        key = caller(request, "read")
        fmt, src, include_unpriced = _source(request, key)
        if fmt.endswith("parquet"):
            require_pyarrow()
    except AuthError as e:
        return auth_error(e)
    except ValueError as e:  # BadRequest, a bad dimension, range or rules file
        return error(400, str(e))
    runs = state_of(request).heavy
    slot = await runs.take()
    if slot is None:
        return busy("export", runs)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    ext = "parquet" if fmt.endswith("parquet") else "csv"
    headers = {"Content-Disposition": f'attachment; filename="tokentrail-{fmt}-{stamp}.{ext}"'}
    if fmt.endswith("parquet"):  # Parquet ends with its footer: written to a temporary file first
        spool = await run_heavy(slot, _parquet_file, src, fmt, include_unpriced)  # the slot: while writing
        return StreamingResponse(_file_chunks(spool), media_type=_MEDIA[fmt], headers=headers)
    body = csv_chunks(_focus_kept(src, fmt, include_unpriced), fmt)
    # sync: read in a thread pool; the slot is held until the stream ends or the client hangs up
    return HeldStream(body, slot, media_type=_MEDIA[fmt], headers=headers)


def _focus_kept(src: Iterator[Line], fmt: str, include_unpriced: bool) -> Iterator[Line]:
    from tokentrail.analytics.export_write import Written, _kept

    return _kept(src, fmt, include_unpriced, Written())


def _parquet_file(src: Iterator[Line], fmt: str, include_unpriced: bool) -> Any:
    f = tempfile.TemporaryFile()  # noqa: SIM115 (closed by _file_chunks, or here on failure)
    try:
        write(src, fmt, f, include_unpriced=include_unpriced)
    except BaseException:
        f.close()
        raise
    f.seek(0)
    return f


def _file_chunks(f: Any) -> Iterator[bytes]:
    with f:
        while chunk := f.read(_CHUNK):
            yield chunk


async def reprice(request: Request) -> Response:
    """What [since, until) would have cost with the server's price book and `model_map=FROM=TO`
    (repeatable), grouped by `by`: a what-if; nothing is written."""
    try:
        key = caller(request, "read")
        since, until, _ = _times(request)
        where = _where(request, key)
        by = [p.strip() for p in request.query_params.get("by", "model").split(",") if p.strip()]
        from tokentrail.analytics.reprice import parse_model_map, what_if
        from tokentrail.pricing import default_price_book

        mapping = parse_model_map(request.query_params.getlist("model_map"))
        store = state_of(request).store
        runs = state_of(request).heavy
        slot = await runs.take()
        if slot is None:
            return busy("reprice", runs)
        diff = await run_heavy(
            slot,
            what_if,
            store,
            default_price_book(),
            since=since,
            until=until,
            by=by,
            where=where,
            scope=key.attribution,
            model_map=mapping,
        )
    except AuthError as e:
        return auth_error(e)
    except ValueError as e:
        return error(400, str(e))
    return JSONResponse(diff.to_dict())


__all__ = ["export", "reprice"]
