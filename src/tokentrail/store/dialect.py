"""The SQL spellings that differ between the backends: one `Dialect` each (a
tokentrail.types.SQLDialect), `SQLITE` and `POSTGRES`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Dialect:
    """The SQL spellings that differ between backends."""

    name: str  # "sqlite" | "postgresql"
    param: str  # placeholder
    bigint: str
    real: str
    text: str
    uuid: str
    blob: str
    json: str
    serial: str  # an auto-numbered integer primary key

    def json_text(self, column: str) -> str:
        """SQL for the text value of a key in a JSON column: the key is a parameter (json_key),
        never spliced into the SQL (a `%` would be a psycopg placeholder, a quote worse)."""
        if self.name == "sqlite":
            return f"json_extract({column}, ?)"
        # jsonb refuses \u0000: a NUL written before tags refused it must not break every report
        return f"(replace({column}, '\\u0000', '\\ufffd')::jsonb ->> %s)"

    def json_key(self, key: str) -> str:
        """The parameter of json_text for `key`."""
        return f'$."{key}"' if self.name == "sqlite" else key


SQLITE = Dialect(
    name="sqlite",
    param="?",
    bigint="INTEGER",
    real="REAL",
    text="TEXT",
    uuid="TEXT",
    blob="BLOB",
    json="TEXT",
    serial="INTEGER PRIMARY KEY",
)
POSTGRES = Dialect(
    name="postgresql",
    param="%s",
    bigint="BIGINT",
    real="DOUBLE PRECISION",
    text="TEXT",
    uuid="UUID",
    blob="BYTEA",
    json="JSONB",
    serial="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
)
