"""Wire formats shared by every face: volumes as native JSON or GeoJSON, times as ISO 8601.

Parsing turns plain JSON data (already schema-checked by a face, or read from a file) into
validated geometry; bad content raises :class:`~deconfliction.core.errors.InvalidInput` with the
geometry's own code. Units other than metres and seconds stop here.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from deconfliction.core.errors import InvalidInput
from deconfliction.geo import Circle, Footprint, GeometryError, Polygon, Volume

FEET = 0.3048


#: The instants a time may name: those a datetime can hold (years 1 to 9999, UTC), so every time
#: accepted here can be formatted again in a view, a message or an error.
EARLIEST = datetime(1, 1, 1, tzinfo=UTC).timestamp()
LATEST = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()


def is_number(value: Any) -> bool:
    """Whether ``value`` is a JSON number as Python reads it: an int or a float, never a bool
    (``True`` is an int to Python) nor a string of digits."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse_time(value: Any, field: str = "time") -> float:
    """UTC seconds from an ISO 8601 string (a zone is required) or a number of seconds."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInput(
                f"{field}: {value!r} is not an ISO 8601 time such as 2026-01-31T12:00:00Z.",
                code="invalid_time",
            ) from None
        return parse_time(parsed, field)
    try:
        if isinstance(value, datetime):
            if value.tzinfo is None:
                raise InvalidInput(
                    f"{field}: a time zone is required (use Z for UTC).", code="invalid_time"
                )
            seconds = value.timestamp()
        elif is_number(value):
            seconds = float(value)
        else:
            raise InvalidInput(f"{field}: a time is required.", code="invalid_time")
    except (OverflowError, ValueError):  # an integer beyond any float, an instant beyond datetime
        seconds = math.nan
    if not EARLIEST <= seconds <= LATEST:
        raise InvalidInput(f"{field}: not a valid time (years 1 to 9999 UTC).", code="invalid_time")
    return seconds


@functools.lru_cache(maxsize=16_384)  # the same instants recur in every view of a filing
def format_time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def _number(data: Mapping[str, Any], key: str, where: str) -> float:
    value = data.get(key) if isinstance(data, Mapping) else None
    if not is_number(value):
        raise InvalidInput(f"{where}: '{key}' must be a number.", code="invalid_input")
    try:
        return float(value)
    except OverflowError:  # an integer too large for a float: no coordinate or length is
        raise InvalidInput(
            f"{where}: '{key}' must be a finite number.", code="invalid_input"
        ) from None


def _coordinate(value: Any) -> float:
    """A GeoJSON position's number: ``float()`` would also take ``true`` and ``"45"``."""
    if not is_number(value):
        raise TypeError(value)
    return float(value)


def _altitude(data: Mapping[str, Any], which: str, where: str) -> float:
    if f"altitude_{which}_m" in data:
        return _number(data, f"altitude_{which}_m", where)
    if f"altitude_{which}_ft" in data:
        return _number(data, f"altitude_{which}_ft", where) * FEET
    raise InvalidInput(
        f"{where}: 'altitude_{which}_m' (or 'altitude_{which}_ft') is required.",
        code="invalid_altitude",
    )


def parse_footprint(data: Mapping[str, Any], where: str = "footprint") -> Footprint:
    """``{"circle": {"center": {"lat", "lon"}, "radius_m"}}`` or ``{"polygon": {"vertices"}}``."""
    try:
        if "circle" in data:
            circle = data["circle"]
            center = circle["center"]
            return Circle.create(
                _number(center, "lat", where),
                _number(center, "lon", where),
                _number(circle, "radius_m", where),
            )
        if "polygon" in data:
            vertices = data["polygon"]["vertices"]
            return Polygon.create(
                [(_number(v, "lat", where), _number(v, "lon", where)) for v in vertices]
            )
    except GeometryError as exc:
        raise InvalidInput(f"{where}: {exc.message}", code=exc.code) from None
    except (KeyError, TypeError):
        pass
    raise InvalidInput(
        f"{where}: expected {{'circle': {{'center': {{'lat', 'lon'}}, 'radius_m'}}}} "
        "or {'polygon': {'vertices': [{'lat', 'lon'}, ...]}}.",
        code="invalid_geometry",
    )


def _geojson_footprint(
    geometry: Mapping[str, Any], props: Mapping[str, Any], where: str
) -> Footprint:
    kind = geometry.get("type") if isinstance(geometry, Mapping) else None
    coords = geometry.get("coordinates") if isinstance(geometry, Mapping) else None
    try:
        if kind == "Polygon" and isinstance(coords, list) and coords:
            if len(coords) > 1:
                raise InvalidInput(
                    f"{where}: polygons with holes are not supported.", code="invalid_geometry"
                )
            ring = [(_coordinate(p[1]), _coordinate(p[0])) for p in coords[0]]
            if len(ring) > 1 and ring[0] == ring[-1]:
                ring.pop()  # GeoJSON closes its rings; native polygons don't: store them alike
            return Polygon.create(ring)
        if kind == "Point" and isinstance(coords, list) and len(coords) >= 2:
            if "radius_m" not in props:
                raise InvalidInput(
                    f"{where}: a Point needs a 'radius_m' property.", code="invalid_geometry"
                )
            return Circle.create(
                _coordinate(coords[1]), _coordinate(coords[0]), _number(props, "radius_m", where)
            )
    except GeometryError as exc:
        raise InvalidInput(f"{where}: {exc.message}", code=exc.code) from None
    except (TypeError, ValueError, IndexError, KeyError, OverflowError):
        raise InvalidInput(
            f"{where}: malformed GeoJSON coordinates.", code="invalid_geometry"
        ) from None
    raise InvalidInput(
        f"{where}: GeoJSON geometry must be a Polygon or a Point with radius_m.",
        code="invalid_geometry",
    )


def parse_volume(
    data: Mapping[str, Any], where: str = "volume", defaults: Mapping[str, Any] | None = None
) -> Volume:
    """A native volume or a GeoJSON Feature whose properties carry altitudes and times."""
    if not isinstance(data, Mapping):
        raise InvalidInput(f"{where}: a volume must be an object.", code="invalid_input")
    if data.get("type") == "Feature":
        properties = data.get("properties") or {}
        if not isinstance(properties, Mapping):
            raise InvalidInput(f"{where}: 'properties' must be an object.", code="invalid_input")
        props = {**(defaults or {}), **properties}
        footprint = _geojson_footprint(data.get("geometry") or {}, props, where)
        fields = props
    else:
        if "footprint" not in data or not isinstance(data["footprint"], Mapping):
            raise InvalidInput(f"{where}: 'footprint' is required.", code="invalid_geometry")
        footprint = parse_footprint(data["footprint"], f"{where}.footprint")
        fields = {**(defaults or {}), **data}
    try:
        return Volume.create(
            footprint,
            _altitude(fields, "lower", where),
            _altitude(fields, "upper", where),
            parse_time(fields.get("start"), f"{where}.start"),
            parse_time(fields.get("end"), f"{where}.end"),
        )
    except GeometryError as exc:
        raise InvalidInput(f"{where}: {exc.message}", code=exc.code) from None


def parse_volumes(data: Any, defaults: Mapping[str, Any] | None = None) -> list[Volume]:
    """A list of volumes/Features, or a GeoJSON FeatureCollection."""
    if isinstance(data, Mapping) and data.get("type") == "FeatureCollection":
        data = data.get("features")
    elif isinstance(data, Mapping) and data.get("type") == "Feature":
        data = [data]
    if not isinstance(data, Sequence) or isinstance(data, str):
        raise InvalidInput(
            "volumes: expected a list of volumes or a GeoJSON FeatureCollection.",
            code="invalid_input",
        )
    return [parse_volume(v, f"volumes[{i}]", defaults) for i, v in enumerate(data)]


def volume_to_json(v: Volume) -> dict[str, Any]:
    return {
        "footprint": v.footprint.to_json(),
        "altitude_lower_m": v.altitude_lower_m,
        "altitude_upper_m": v.altitude_upper_m,
        "start": format_time(v.start),
        "end": format_time(v.end),
    }
