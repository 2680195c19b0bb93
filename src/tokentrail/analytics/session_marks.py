"""What `tokentrail session` and the sessions API add to a session: its cost driver, its stored
anomalies, and which calls are their evidence."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tokentrail.analytics.cost_driver import cost_driver

if TYPE_CHECKING:
    from rich.text import Text

    from tokentrail.analytics.sessions import SessionDetail
    from tokentrail.types import Store


@dataclass
class SessionMarks:
    cost_driver: str | None
    anomalies: list[dict[str, Any]] = field(default_factory=list)
    flagged: dict[str, str] = field(default_factory=dict)  # event id -> the kinds it is evidence of

    def to_dict(self) -> dict[str, Any]:
        from tokentrail.analytics.anomaly_rows import from_stored

        return {"cost_driver": self.cost_driver, "anomalies": [from_stored(r) for r in self.anomalies]}

    def describe(self, head: Text) -> None:
        if self.cost_driver:
            head.append(f"\ncost driver: {self.cost_driver}")
        for r in self.anomalies:
            head.append(f"\n⚠ {r['message']}", style="bold red")


def marks_of(store: Store, detail: SessionDetail, scope: dict[str, str] | None = None) -> SessionMarks:
    """`scope`: a key's attribution; only the anomalies inside it are shown."""
    from tokentrail.store import anomalies as sql

    try:
        rows = [
            r for r in sql.for_session(store, detail.session_id) if all(r.get(k) == v for k, v in (scope or {}).items())
        ]
    except Exception:  # a ledger not yet migrated to 0013 (read-only): no marks, the session still shows
        rows = []
    flagged: dict[str, str] = {}
    for r in rows:
        for event_id in r["event_ids"]:
            flagged[event_id] = ", ".join(filter(None, (flagged.get(event_id), r["kind"])))
    return SessionMarks(cost_driver(detail.events), rows, flagged)
