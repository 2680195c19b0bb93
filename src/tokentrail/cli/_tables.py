"""Tables that fit the terminal without losing a label, and the one rule for money in them.

Fitting, in this order, until the table fits the console's width:
1. drop the optional measures, least important first (each column says when it may go);
2. headers on two lines (`cache` over `read`) and one space between columns instead of three;
3. abbreviate the labels (the text that says what a row is), the widest first, with a visible
   `…`, never below a floor (8 characters, or what an id needs to stay unique);
4. token counts of 10,000 and more in three digits (`420k`, `1.23M`), then labels down to 5;
5. if it still does not fit, print it wider than the terminal rather than squeeze a label.
Every cell stays on one line: a label is never folded mid-word onto a second line.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

LABEL_FLOOR = 8  # characters a label keeps at least (with its `…`)
LAST_FLOOR = 5  # ... when even compact numbers do not make room
MAX_PLACES = 9  # the stored precision: nano-dollars
_GAP = 3  # between two columns: padding, the rule, padding
_TIGHT_GAP = 1  # the rule alone


def money_places(values: Iterable[Decimal | None]) -> int:
    """Decimals for a set of amounts shown together: 2 (cents), or more so that the smallest
    non-zero amount keeps two significant digits, at most 9 (the stored nano-dollar)."""
    places = 2
    for v in values:
        if v:  # None (unpriced) and zero need no digits
            places = max(places, min(1 - v.copy_abs().adjusted(), MAX_PLACES))
    return places


def money(value: Decimal | None, places: int) -> str:
    """`$1,234.56` with exactly `places` decimals, rounded half up; None is "unpriced"."""
    if value is None:
        return "unpriced"
    q = value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    return f"{'-' if q < 0 else ''}${abs(q):,.{places}f}"


def count(n: int) -> str:
    """A token count in at most five characters: `8,006`, `60.0k`, `420k`, `1.23M`."""
    if abs(n) < 10_000:
        return f"{n:,}"
    for unit, size in (("k", 1_000), ("M", 1_000_000), ("G", 1_000_000_000)):
        if abs(n / size) < 999.5 or unit == "G":
            return f"{n / size:.3g}{unit}"
    raise AssertionError("unreachable")


def printable(text: str) -> str:
    """`text` safe for a terminal: control and format characters (an escape sequence, a bidi
    override: a name from the ledger is anyone's text) shown as escapes, never sent raw."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


def label(value: object) -> Text:
    """A label cell: one line whatever the value holds, nothing a terminal would act on."""
    return Text(printable(" ".join(str(value).split())) if value is not None else "")


@dataclass
class Column:
    """A table column. `label`: says what a row is (abbreviated when short of room, never
    dropped). `drop`: 0 always shown; n > 0 may be dropped when short of room, lowest first."""

    header: str
    cells: list[Text] = field(default_factory=list)
    compact: list[Text] | None = None  # shorter cells (rounded counts) for when room is short
    label: bool = False
    drop: int = 0
    floor: int | None = None  # a label's own narrowest width (an id's unique start); None: the default
    justify: Literal["left", "right"] = "right"


def _header_width(header: str, tight: bool) -> int:
    return max(cell_len(w) for w in header.split()) if tight else cell_len(header)


@dataclass
class Fitted:
    """What `fit` chose: the columns kept, their widths, and the tight style (two-line headers,
    one-character gaps) when the wide one did not fit."""

    columns: list[Column]
    widths: list[int]
    tight: bool
    compact: bool = False

    @property
    def width(self) -> int:
        return sum(self.widths) + (_TIGHT_GAP if self.tight else _GAP) * (len(self.widths) - 1)


def fit(columns: Sequence[Column], width: int) -> Fitted:
    """The columns kept and their widths, fitted into `width` as the module says."""

    def natural(c: Column, tight: bool, compact: bool = False) -> int:
        cells = c.compact if compact and c.compact is not None else c.cells
        return max([_header_width(c.header, tight and not c.label), *(t.cell_len for t in cells)])

    def shrink_labels(floor: int) -> None:
        while f.width > width:
            shrinkable = [i for i, c in enumerate(f.columns) if c.label and f.widths[i] > (c.floor or floor)]
            if not shrinkable:
                return
            f.widths[max(shrinkable, key=lambda i: f.widths[i])] -= 1

    f = Fitted(list(columns), [natural(c, False) for c in columns], tight=False)
    for c in sorted((c for c in columns if c.drop), key=lambda c: c.drop):
        if f.width <= width:
            break
        i = f.columns.index(c)
        del f.columns[i], f.widths[i]
    if f.width > width:
        f = Fitted(f.columns, [natural(c, True) for c in f.columns], tight=True)
    shrink_labels(LABEL_FLOOR)
    if f.width > width:
        f.compact = True
        f.widths = [w if c.label else natural(c, True, True) for c, w in zip(f.columns, f.widths, strict=True)]
        shrink_labels(LAST_FLOOR)
    return f


def print_table(
    out: Console, title: Text, columns: Sequence[Column], rows: int, *, section_before: int | None = None
) -> None:
    """Fit and print `rows` rows of `columns` (a section rule before row `section_before`)."""
    f = fit(columns, out.width)
    table = Table(
        title=title,
        title_justify="left",
        show_edge=False,
        pad_edge=False,
        padding=(0, 0) if f.tight else (0, 1),
    )
    for c, w in zip(f.columns, f.widths, strict=True):
        header = "\n".join(c.header.split()) if f.tight and not c.label else c.header
        table.add_column(header, justify=c.justify, no_wrap=True, overflow="ellipsis", width=w, min_width=w)
    for i in range(rows):
        if i == section_before:
            table.add_section()
        table.add_row(*((c.compact if f.compact and c.compact is not None else c.cells)[i] for c in f.columns))
    if f.width <= out.width:
        out.print(table)
        return
    wide = Console(file=out.file, width=f.width, highlight=False, force_terminal=out.is_terminal)
    wide.print(table)  # even the floors do not fit: wider than the terminal, never a lost label


def unique_prefix(ids: Sequence[str], at_least: int = LABEL_FLOOR) -> int:
    """The length (plus one for the `…`) at which every id of `ids` shows a distinct start."""
    n = at_least - 1
    longest = max((len(i) for i in ids), default=0)
    while n < longest and len({i[:n] for i in ids}) < len(set(ids)):
        n += 1
    return min(n + 1, longest)
