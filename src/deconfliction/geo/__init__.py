"""Geometry: footprints, volumes and exact intersection on WGS84. Pure, no I/O.

Nothing here imports the rest of the package; everything above builds on it.
"""

from deconfliction.geo.errors import GeometryError
from deconfliction.geo.footprint import (
    MAX_CAP_DEG,
    MAX_EDGE_M,
    Box,
    Circle,
    Footprint,
    Polygon,
    footprint_from_bytes,
)
from deconfliction.geo.intersect import (
    OVERLAP_TOLERANCE_M,
    footprint_contains,
    footprints_overlap,
)
from deconfliction.geo.volume import IndexBox, Volume

__all__ = [
    "MAX_CAP_DEG",
    "MAX_EDGE_M",
    "OVERLAP_TOLERANCE_M",
    "Box",
    "Circle",
    "Footprint",
    "GeometryError",
    "IndexBox",
    "Polygon",
    "Volume",
    "footprint_contains",
    "footprint_from_bytes",
    "footprints_overlap",
]
