"""`tokentrail adjust`: correct what an event cost by appending an adjustment (nothing is edited)."""

from __future__ import annotations

from typing import Annotated

import typer

from tokentrail.cli._common import DbOption, console, fail, reader, usd, user_errors
from tokentrail.corrections import adjust, effective_cost, find_event
from tokentrail.events import from_row
from tokentrail.exceptions import FlushTimeout
from tokentrail.ledger import Ledger
from tokentrail.pricing import PriceBook
from tokentrail.store import lookup


def adjust_command(
    event: Annotated[str, typer.Option("--event", help="The id of the event to correct.", show_default=False)],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept with the adjustment).", show_default=False)],
    cost_usd: Annotated[
        str | None,
        typer.Option(
            "--cost-usd",
            help="The amount to add to the event's cost, signed: 0.25, or -1.50 for a refund.",
            show_default=False,
        ),
    ] = None,
    new_cost_usd: Annotated[
        str | None,
        typer.Option(
            "--new-cost-usd", help="What the event should cost in all (the delta is computed).", show_default=False
        ),
    ] = None,
    allow_negative: Annotated[
        bool, typer.Option("--allow-negative", help="Allow a correction that leaves the cost below zero.")
    ] = False,
    db: DbOption = None,
) -> None:
    """Append an adjustment of an event's cost: reports and `session ID` include it; the event is unchanged."""
    if (cost_usd is None) == (new_cost_usd is None):
        fail("give --cost-usd DELTA or --new-cost-usd TOTAL (one of them)")
    with reader(db) as store, user_errors():  # a missing ledger or event fails before a Ledger is opened
        event = lookup.event_id(store, event)  # a unique prefix names its event
        found = find_event(store, event)
        if found is None:
            fail(f"no event {event!r} in the ledger")
        before = effective_cost(store, from_row(found[3]))
        url = store.url
    with user_errors():
        ledger = Ledger(url, prices=PriceBook(overrides=""))
        try:
            made = adjust(
                ledger,
                event,
                reason=reason,
                cost_usd=cost_usd,
                new_cost_usd=new_cost_usd,
                allow_negative=allow_negative,
            )
        except FlushTimeout as e:
            fail(f"the adjustment was recorded but is not durable yet: {e}", code=1)
        finally:
            ledger.close()
    delta = made.cost_usd or 0
    console().print(
        f"adjustment {made.event_id} of event {made.adjusts_event_id}: {usd(before)} -> {usd(before + delta)} "
        f"({'+' if delta > 0 else ''}{usd(made.cost_usd)}), reason: {made.note}",
        soft_wrap=True,
    )


def register(app: typer.Typer) -> None:
    app.command("adjust")(adjust_command)
