"""Anomaly detector settings: the kinds, their thresholds (each configurable) and the policies."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

KINDS = (
    "retry_loop",
    "token_spike",
    "context_growth",
    "context_saturation",
    "output_ratio",
    "cache_miss",
    "no_max_tokens",
    "system_overhead",
)
POLICIES = ("suspend-session", "suspend-agent")


@dataclass(frozen=True)
class AnomalyConfig:
    """Thresholds of every detector (the defaults of issue 12). `kinds`: the detectors that run;
    `policies`: kind -> suspend-session | suspend-agent (off by default)."""

    kinds: tuple[str, ...] = KINDS
    retry_repeats: int = 3  # the same tool+arguments, or the same request, this many times in a session
    spike_factor: float = 10.0  # a session's tokens >= this x the median session of its agent/task type
    spike_z: float = 6.0  # or a robust z-score (median/MAD) at least this
    spike_min_baseline: int = 20  # sessions in the trailing window, else silent
    baseline_days: int = 14
    growth_calls: int = 5  # input tokens rising over this many consecutive model calls
    growth_factor: float = 3.0  # the last at least this x the first
    saturation: float = 0.9  # share of the model's context window one call fills
    ratio_factor: float = 2.0  # an agent's output/input ratio this hour >= this x its 14-day ratio
    ratio_min_calls: int = 20  # model calls in the hour (and in the baseline) for a ratio to count
    cache_factor: float = 0.5  # cache-read share this hour < this x the 14-day share
    cache_min_prompt: int = 1024  # input tokens of a prompt long enough to be cached
    cache_min_calls: int = 20
    no_limit_calls: int = 5  # calls without an output limit, per agent and day
    system_share: float = 0.8  # system/developer share of a session's input
    system_min_calls: int = 3
    max_sessions: int = 100_000  # active sessions kept in memory (LRU)
    idle_s: float = 6 * 3600.0  # a session idle this long is dropped from memory
    policies: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown:
            raise ValueError(f"anomalies: unknown kind {unknown[0]!r} (kinds: {', '.join(KINDS)})")
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                if isinstance(v, float) and not math.isfinite(v):
                    raise ValueError(f"anomalies: {f.name} must be a finite number, not {v}")
                if v < 0:
                    raise ValueError(f"anomalies: {f.name} must not be negative, not {v}")
        if self.retry_repeats < 2 or self.growth_calls < 2:
            raise ValueError("anomalies: retry_repeats and growth_calls must be at least 2")
        if not 0 < self.saturation <= 1 or not 0 < self.system_share <= 1:
            raise ValueError("anomalies: saturation and system_share are shares in (0, 1]")
        for kind, policy in self.policies.items():
            if kind not in KINDS:
                raise ValueError(f"anomalies: policy for unknown kind {kind!r} (kinds: {', '.join(KINDS)})")
            if policy not in POLICIES:
                raise ValueError(f"anomalies: policy {policy!r} for {kind} is not one of {', '.join(POLICIES)}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> AnomalyConfig:
        """Settings from a JSON-like mapping; a clear ValueError for any unknown name or bad value."""
        if not isinstance(data, Mapping):
            raise ValueError("anomalies: the settings must be an object")
        names = {f.name: f for f in fields(cls)}
        out: dict[str, Any] = {}
        for key, value in data.items():
            if key not in names:
                raise ValueError(f"anomalies: unknown setting {key!r}")
            default = getattr(cls(), key)
            if key == "kinds":
                if isinstance(value, str) or not isinstance(value, (list, tuple)):
                    raise ValueError("anomalies: kinds must be a list of kind names")
                value = tuple(str(v) for v in value)
            elif key == "policies":
                if not isinstance(value, Mapping):
                    raise ValueError("anomalies: policies must map a kind to suspend-session|suspend-agent")
                value = {str(k): str(v) for k, v in value.items()}
            elif isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"anomalies: {key} must be a number, not {value!r}")
            elif isinstance(default, int) and not isinstance(value, int):
                raise ValueError(f"anomalies: {key} must be a whole number, not {value!r}")
            out[key] = value
        return replace(cls(), **out)

    @classmethod
    def from_json(cls, text: str) -> AnomalyConfig:
        try:
            data = json.loads(text)
        except ValueError as e:
            raise ValueError(f"anomalies: the settings are not valid JSON: {e}") from None
        return cls.from_mapping(data)
