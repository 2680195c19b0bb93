"""What the hourly and daily rollups hold: their dimensions and measures, the time units, and the
measures as SQL over raw events (which the migrations, the rollup check and the reports share)."""

from __future__ import annotations

# Dimensions kept in the hourly rollup; reports grouped or filtered by only these never scan raw events.
ROLLUP_DIMENSIONS = ("org", "team", "project", "agent", "provider", "model", "task_type", "kind")
HOUR_US = 3_600_000_000
DAY_US = 86_400_000_000
# The rollup measures as the first rollup migrations made them (frozen: released migrations never change).
MEASURES_V1 = (
    "calls",
    "errors",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cost_nusd",
    "unpriced_calls",
    "invalid_calls",
)
# `calls` counts model calls (llm, embedding), `tool_runs` the tool runs (migration 0009),
# `estimated_calls` the calls whose usage tokentrail estimated (migration 0010).
ROLLUP_MEASURES = (*MEASURES_V1, "tool_runs", "estimated_calls")


# The rollup measures over raw events, as SQL (the same definitions as store/_rollup.aggregate and
# the raw report queries). The trigger of migration 0011 sums these: a migration that adds a
# rollup measure adds its SQL here and recreates that function (CREATE OR REPLACE).
ROLLUP_SQL_MEASURES = (
    "SUM(CASE WHEN kind IN ('llm', 'embedding') THEN 1 ELSE 0 END)",
    "SUM(CASE WHEN kind <> 'adjustment' AND status <> 'ok' THEN 1 ELSE 0 END)",
    "SUM(input_tokens)",
    "SUM(output_tokens)",
    "SUM(cache_read_tokens)",
    "SUM(cache_write_tokens)",
    "SUM(reasoning_tokens)",
    "COALESCE(SUM(cost_nusd), 0)",
    "SUM(CASE WHEN cost_nusd IS NULL AND kind IN ('llm', 'embedding') "
    "AND SUBSTR(status, 1, 13) <> 'invalid_usage' THEN 1 ELSE 0 END)",
    "SUM(CASE WHEN cost_nusd IS NULL AND kind IN ('llm', 'embedding') "
    "AND SUBSTR(status, 1, 13) = 'invalid_usage' THEN 1 ELSE 0 END)",
    "SUM(CASE WHEN kind = 'tool' THEN 1 ELSE 0 END)",
    "SUM(usage_estimated)",
)


def floor_to(column: str, unit: int) -> str:
    """SQL for `column` rounded down to a multiple of `unit` (also before 1970), with no `%`."""
    return (
        f"CASE WHEN {column} >= 0 THEN ({column} / {unit}) * {unit} ELSE -((-{column} - 1) / {unit} + 1) * {unit} END"
    )


ROLLUP_SQL_DIMENSIONS = tuple(f"COALESCE({c}, '')" for c in ROLLUP_DIMENSIONS)
