"""Volumes: a footprint, an altitude band and a time window: the 4D unit of every operation."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from deconfliction.geo.errors import GeometryError
from deconfliction.geo.footprint import Footprint
from deconfliction.geo.intersect import footprints_overlap

IndexBox = tuple[float, float, float, float, float, float, float, float]
"""(lon_min, lon_max, lat_min, lat_max, alt_min, alt_max, t_min, t_max): conservative bounds."""


def boxes_meet(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether two boxes laid out as :data:`IndexBox` meet (touching counts: they are bounds)."""
    return all(a[i] <= b[i + 1] and b[i] <= a[i + 1] for i in (0, 2, 4, 6))


@dataclass(frozen=True, slots=True, eq=False)
class Volume:
    """A 4D extent: ``footprint`` x ``[altitude_lower_m, altitude_upper_m)`` x ``[start, end)``.

    Altitudes are metres above the WGS84 ellipsoid; times are UTC seconds since the Unix epoch.
    """

    footprint: Footprint
    altitude_lower_m: float
    altitude_upper_m: float
    start: float
    end: float

    @classmethod
    def create(
        cls,
        footprint: Footprint,
        altitude_lower_m: float,
        altitude_upper_m: float,
        start: float,
        end: float,
    ) -> Volume:
        if not (math.isfinite(altitude_lower_m) and math.isfinite(altitude_upper_m)):
            raise GeometryError("invalid_altitude", "Altitudes must be finite numbers of metres.")
        if altitude_lower_m >= altitude_upper_m:
            raise GeometryError(
                "invalid_altitude",
                "The lower altitude must be below the upper altitude "
                f"({altitude_lower_m:g} m >= {altitude_upper_m:g} m).",
            )
        if not (math.isfinite(start) and math.isfinite(end)):
            raise GeometryError("invalid_time", "Start and end must be valid times.")
        if start >= end:
            raise GeometryError("invalid_time", "A volume's start must come before its end.")
        return cls(
            footprint, float(altitude_lower_m), float(altitude_upper_m), float(start), float(end)
        )

    def overlaps(self, other: Volume) -> bool:
        """True when the two volumes intersect in all four dimensions (touching is not enough)."""
        return (
            self.start < other.end
            and other.start < self.end
            and self.altitude_lower_m < other.altitude_upper_m
            and other.altitude_lower_m < self.altitude_upper_m
            and footprints_overlap(self.footprint, other.footprint)
        )

    def index_boxes(self) -> list[IndexBox]:
        """Boxes for a 4D index; together they contain the whole volume."""
        return [
            (*box, self.altitude_lower_m, self.altitude_upper_m, self.start, self.end)
            for box in self.footprint.boxes()
        ]
