"""Per-deployment choices: what the parties agreed, and the limits that keep the service healthy."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    max_volumes_per_operation: int = 100
    max_vertices_per_polygon: int = 1_000
    max_footprint_area_m2: float = 2.5e12
    """About the size of a large country (2.5 million km²)."""
    max_plan_horizon_s: float = 56 * 86_400.0
    """How far ahead a volume may end (F3548 plans at most 56 days ahead)."""
    max_volume_duration_s: float = 30 * 86_400.0
    min_altitude_m: float = -500.0
    max_altitude_m: float = 30_000.0
    max_request_bytes: int = 1_048_576
    max_page_size: int = 1_000


@dataclass(frozen=True, slots=True)
class Policy:
    """The rules the parties of one deployment agreed to."""

    allow_equal_priority_conflicts: bool = True
    """At equal priority a conflict is allowed once the filer is aware of it (F3548 default)."""
    limits: Limits = Limits()
