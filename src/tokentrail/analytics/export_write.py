"""Writing export lines: plain CSV / Parquet, FOCUS CSV / Parquet. Streamed, constant memory.

CSV rows are written as they come; Parquet in row groups of BATCH lines (pyarrow, the `export`
extra, imported only here). Cost columns are exact decimals (decimal128(38, 9) in Parquet).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import IO, Any

from tokentrail._extras import missing_extra_message
from tokentrail.analytics import focus
from tokentrail.analytics.export import Line, Skipped
from tokentrail.events import nano_to_usd
from tokentrail.exceptions import ConfigError

FORMATS = ("focus", "csv", "parquet", "focus-parquet")
BATCH = 10_000
PLAIN = (
    ("period_start", "DateTime"),
    ("period_end", "DateTime"),
    ("provider", "String"),
    ("model", "String"),
    ("kind", "String"),
    ("token_class", "String"),
    ("org", "String"),
    ("team", "String"),
    ("project", "String"),
    ("agent", "String"),
    ("user", "String"),
    ("customer", "String"),
    ("workflow", "String"),
    ("task_type", "String"),
    ("tags", "JSON"),
    ("calls", "Integer"),
    ("tokens", "Integer"),
    ("cost_usd", "Decimal"),
    ("unpriced", "Boolean"),
    ("estimated_calls", "Integer"),
    ("price_version", "String"),
    ("unit_price_mtok", "Decimal"),
    ("allocated_from", "String"),
)


@dataclass
class Written:
    """What an export wrote: rows, their cost (nano-dollars) and the unpriced usage left out."""

    rows: int = 0
    cost_nusd: int = 0
    unpriced_rows: int = 0
    skipped: Skipped = field(default_factory=Skipped)


def plain_row(line: Line) -> dict[str, Any]:
    return {
        "period_start": line.start,
        "period_end": line.end,
        "provider": line.provider,
        "model": line.model,
        "kind": line.kind,
        "token_class": line.token_class,
        **{
            d: line.attribution.get(d)
            for d in ("org", "team", "project", "agent", "user", "customer", "workflow", "task_type")
        },
        "tags": json.dumps(dict(line.tags), sort_keys=True, ensure_ascii=False) if line.tags else None,
        "calls": line.calls,
        "tokens": line.tokens,
        "cost_usd": nano_to_usd(line.cost_nusd),
        "unpriced": line.cost_nusd is None,
        "estimated_calls": line.estimated_calls,
        "price_version": line.price_version,
        "unit_price_mtok": line.unit_price_mtok,
        "allocated_from": line.allocated_from,
    }


def _kept(lines: Iterable[Line], fmt: str, include_unpriced: bool, written: Written) -> Iterator[Line]:
    """The lines a format carries, counting what they cost and what was left out."""
    for line in lines:
        if line.cost_nusd is None:
            if fmt.startswith("focus") and line.kind not in ("llm", "embedding"):
                continue  # a tool run with no cost is no charge (and not an unpriced call)
            if fmt.startswith("focus") and not include_unpriced:
                key = (line.provider, line.model)
                written.skipped.calls[key] = written.skipped.calls.get(key, 0) + line.calls
                continue
            written.unpriced_rows += line.kind in ("llm", "embedding")
        else:
            written.cost_nusd += line.cost_nusd
        written.rows += 1
        yield line


def columns(fmt: str) -> tuple[tuple[str, str], ...]:
    if fmt.startswith("focus"):
        return tuple((n, k) for n, k, _ in focus.COLUMNS)
    return PLAIN


def write(
    lines: Iterable[Line],
    fmt: str,
    out: IO[bytes],
    *,
    include_unpriced: bool = False,
    progress: Callable[[int], None] | None = None,
) -> Written:
    """Write the lines to a binary stream in `fmt`; return what was written."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}: use {', '.join(FORMATS)}")
    written = Written()
    kept = _kept(lines, fmt, include_unpriced, written)
    if fmt.endswith("parquet"):
        _parquet(kept, fmt, out, progress)
    else:
        for chunk in csv_chunks(kept, fmt, progress):
            out.write(chunk)
    return written


def to_dict(line: Line, fmt: str) -> dict[str, Any]:
    return focus.focus_row(line, iso_times=not fmt.endswith("parquet")) if fmt.startswith("focus") else plain_row(line)


def csv_chunks(
    lines: Iterable[Line], fmt: str, progress: Callable[[int], None] | None = None, every: int = 2000
) -> Iterator[bytes]:
    """CSV text in chunks of `every` rows (UTF-8 bytes), the header first."""
    names = [n for n, _ in columns(fmt)]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(names)
    n = 0
    for line in lines:
        row = to_dict(line, fmt)
        w.writerow([_cell(row[c]) for c in names])
        n += 1
        if n % every == 0:
            yield buf.getvalue().encode()
            buf.seek(0)
            buf.truncate()
            if progress:
                progress(every)
    yield buf.getvalue().encode()
    if progress and n % every:
        progress(n % every)


def _cell(v: Any) -> Any:
    if v is None:
        return ""
    if type(v) is str or type(v) is int:  # most cells: no conversion
        return v
    if isinstance(v, Decimal):
        return format(v, "f")
    if isinstance(v, bool):
        return "true" if v else "false"
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return v


def require_pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        hint = missing_extra_message("Parquet exports", "export", ["pyarrow"])
        raise ConfigError(f"{hint} (or use --format csv / focus)") from None
    return pyarrow


def _parquet(lines: Iterable[Line], fmt: str, out: IO[bytes], progress: Callable[[int], None] | None) -> None:
    pa = require_pyarrow()
    import pyarrow.parquet as pq

    types = {
        "Decimal": pa.decimal128(38, 9),
        "DateTime": pa.timestamp("us", tz="UTC"),
        "String": pa.string(),
        "JSON": pa.string(),
        "Integer": pa.int64(),
        "Boolean": pa.bool_(),
    }
    cols = columns(fmt)
    nullable = {n: nl for n, _, nl in focus.COLUMNS} if fmt.startswith("focus") else {}
    schema = pa.schema([pa.field(n, types[k], nullable=nullable.get(n, True)) for n, k in cols])
    names = [n for n, _ in cols]
    with pq.ParquetWriter(out, schema, compression="zstd") as writer:
        batch: dict[str, list[Any]] = {n: [] for n in names}
        size = 0
        for line in lines:
            row = to_dict(line, fmt)
            for n in names:
                v = row[n]
                batch[n].append(v.quantize(Decimal("1e-9")) if isinstance(v, Decimal) else v)
            size += 1
            if size == BATCH:
                writer.write_table(pa.table(batch, schema=schema))
                batch = {n: [] for n in names}
                if progress:
                    progress(size)
                size = 0
        if size:
            writer.write_table(pa.table(batch, schema=schema))
            if progress:
                progress(size)


__all__ = ["BATCH", "FORMATS", "PLAIN", "Written", "columns", "csv_chunks", "plain_row", "require_pyarrow", "write"]
