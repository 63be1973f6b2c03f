"""Wire formats: native JSON and GeoJSON volumes mean the same thing; bad input is refused with a code."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from deconfliction.core.errors import InvalidInput
from deconfliction.formats import (
    FEET,
    format_time,
    parse_footprint,
    parse_time,
    parse_volume,
    parse_volumes,
    volume_to_json,
)
from deconfliction.geo import Circle, Polygon, Volume

START, END = "2027-01-15T08:00:00Z", "2027-01-15T09:30:00Z"
T_START, T_END = 1_800_000_000.0, 1_800_005_400.0
RING = [(46.0, 7.0), (46.0, 7.1), (46.1, 7.1), (46.1, 7.0)]
"""(lat, lon) vertices, counter-clockwise, not closed."""

NATIVE_POLYGON: dict[str, Any] = {
    "footprint": {"polygon": {"vertices": [{"lat": a, "lon": b} for a, b in RING]}},
    "altitude_lower_m": 30.0,
    "altitude_upper_m": 120.0,
    "start": START,
    "end": END,
}
NATIVE_CIRCLE: dict[str, Any] = {
    "footprint": {"circle": {"center": {"lat": 46.05, "lon": 7.05}, "radius_m": 750.0}},
    "altitude_lower_m": 0.0,
    "altitude_upper_m": 60.0,
    "start": START,
    "end": END,
}
GEOJSON_POLYGON: dict[str, Any] = {
    "type": "Feature",
    "geometry": {"type": "Polygon", "coordinates": [[[b, a] for a, b in [*RING, RING[0]]]]},
    "properties": {"altitude_lower_m": 30.0, "altitude_upper_m": 120.0, "start": START, "end": END},
}
GEOJSON_CIRCLE: dict[str, Any] = {
    "type": "Feature",
    "geometry": {"type": "Point", "coordinates": [7.05, 46.05]},
    "properties": {
        "radius_m": 750.0,
        "altitude_lower_m": 0.0,
        "altitude_upper_m": 60.0,
        "start": START,
        "end": END,
    },
}


def described(v: Volume) -> dict[str, Any]:
    return volume_to_json(v)


def refused(data: Any, *, parse=parse_volume) -> InvalidInput:
    with pytest.raises(InvalidInput) as exc:
        parse(data)
    assert exc.value.code and exc.value.message
    return exc.value


def without(data: dict[str, Any], *path: str) -> dict[str, Any]:
    out = copy.deepcopy(data)
    node = out
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return out


def with_(data: dict[str, Any], value: Any, *path: str) -> dict[str, Any]:
    out = copy.deepcopy(data)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


# Same meaning, either format -------------------------------------------------------------------


def test_a_native_polygon_volume_parses_to_si_units_and_utc_seconds() -> None:
    v = parse_volume(NATIVE_POLYGON)
    assert isinstance(v.footprint, Polygon)
    assert v.footprint.vertices == tuple(RING)
    assert (v.altitude_lower_m, v.altitude_upper_m, v.start, v.end) == (30.0, 120.0, T_START, T_END)


def test_a_geojson_polygon_feature_parses_to_the_same_volume_as_native_json() -> None:
    assert described(parse_volume(GEOJSON_POLYGON)) == described(parse_volume(NATIVE_POLYGON))


def test_a_geojson_point_with_a_radius_parses_to_the_same_circle_as_native_json() -> None:
    v = parse_volume(GEOJSON_CIRCLE)
    assert isinstance(v.footprint, Circle)
    assert (v.footprint.lat, v.footprint.lon, v.footprint.radius_m) == (46.05, 7.05, 750.0)
    assert described(v) == described(parse_volume(NATIVE_CIRCLE))


def test_a_feature_collection_a_single_feature_and_a_list_parse_alike() -> None:
    collection = {"type": "FeatureCollection", "features": [GEOJSON_POLYGON, GEOJSON_CIRCLE]}
    expected = [described(parse_volume(NATIVE_POLYGON)), described(parse_volume(NATIVE_CIRCLE))]

    assert [described(v) for v in parse_volumes(collection)] == expected
    assert [described(v) for v in parse_volumes([NATIVE_POLYGON, GEOJSON_CIRCLE])] == expected
    assert [described(v) for v in parse_volumes(GEOJSON_POLYGON)] == expected[:1]


def test_an_unclosed_geojson_ring_is_accepted_too() -> None:
    open_ring = with_(GEOJSON_POLYGON, [[[b, a] for a, b in RING]], "geometry", "coordinates")
    assert described(parse_volume(open_ring)) == described(parse_volume(NATIVE_POLYGON))


def test_a_volume_written_out_reads_back_the_same() -> None:
    for data in (NATIVE_POLYGON, NATIVE_CIRCLE):
        v = parse_volume(data)
        assert described(parse_volume(volume_to_json(v))) == described(v)


def test_defaults_fill_what_each_volume_leaves_out() -> None:
    bare = {"footprint": NATIVE_CIRCLE["footprint"]}
    defaults = {"altitude_lower_m": 0.0, "altitude_upper_m": 60.0, "start": START, "end": END}
    (v,) = parse_volumes([bare], defaults)
    assert described(v) == described(parse_volume(NATIVE_CIRCLE))
    feature = {
        "type": "Feature",
        "geometry": GEOJSON_CIRCLE["geometry"],
        "properties": {"radius_m": 750.0},
    }
    assert described(parse_volumes([feature], defaults)[0]) == described(v)


# Units and times -------------------------------------------------------------------------------


def test_altitudes_in_feet_become_metres() -> None:
    native = {**without(NATIVE_CIRCLE, "altitude_lower_m"), "altitude_lower_ft": 100.0}
    native = {**without(native, "altitude_upper_m"), "altitude_upper_ft": 400.0}
    v = parse_volume(native)
    assert (v.altitude_lower_m, v.altitude_upper_m) == pytest.approx((30.48, 121.92))
    assert FEET == 0.3048

    props = {
        **{k: GEOJSON_CIRCLE["properties"][k] for k in ("radius_m", "start", "end")},
        "altitude_lower_ft": 0,
        "altitude_upper_ft": 400,
    }
    feature = with_(GEOJSON_CIRCLE, props, "properties")
    assert parse_volume(feature).altitude_upper_m == pytest.approx(121.92)


def test_metres_win_when_both_units_are_given() -> None:
    both = {**NATIVE_CIRCLE, "altitude_upper_ft": 1_000.0}
    assert parse_volume(both).altitude_upper_m == 60.0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2027-01-15T08:00:00Z", T_START),
        ("2027-01-15T08:00:00z", T_START),
        ("2027-01-15T08:00:00.250Z", T_START + 0.25),
        ("2027-01-15T09:00:00+01:00", T_START),
        ("2027-01-15T03:30:00-04:30", T_START),
        ("2027-01-15T08:00:00+00:00", T_START),
    ],
)
def test_iso_times_with_a_zone_become_utc_seconds(text: str, seconds: float) -> None:
    assert parse_time(text) == seconds


def test_times_may_also_be_seconds_or_aware_datetimes() -> None:
    assert parse_time(T_START) == T_START
    assert parse_time(1_800_000_000) == T_START
    plus_two = timezone(timedelta(hours=2))
    assert parse_time(datetime(2027, 1, 15, 10, 0, tzinfo=plus_two)) == T_START
    assert format_time(T_START) == "2027-01-15T08:00:00Z"
    assert parse_time(format_time(T_START + 0.5)) == T_START + 0.5
    assert (
        format_time(T_START).endswith("Z")
        and datetime.fromisoformat(format_time(T_START)).tzinfo == UTC
    )


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("2027-01-15T08:00:00", id="no zone"),
        pytest.param("2027-01-15", id="a date"),
        pytest.param("tomorrow", id="not a time"),
        pytest.param("2027-13-01T00:00:00Z", id="month 13"),
        pytest.param("", id="empty"),
        pytest.param(None, id="missing"),
        pytest.param(True, id="a boolean"),
        pytest.param(float("nan"), id="NaN"),
        pytest.param(float("inf"), id="infinity"),
        pytest.param(["2027-01-15T08:00:00Z"], id="a list"),
        pytest.param(datetime(2027, 1, 15, 8), id="a naive datetime"),
    ],
)
def test_bad_times_are_refused(value: Any) -> None:
    assert refused(value, parse=parse_time).code == "invalid_time"


def test_a_bad_time_names_the_field() -> None:
    error = refused(with_(NATIVE_CIRCLE, "2027-01-15T08:00:00", "end"))
    assert error.code == "invalid_time" and "volume.end" in error.message


def test_a_volume_must_start_before_it_ends() -> None:
    assert refused(with_(NATIVE_CIRCLE, END, "start")).code == "invalid_time"
    assert refused(with_(NATIVE_CIRCLE, START, "end")).code == "invalid_time"


# Refusals --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "code"),
    [
        pytest.param(without(NATIVE_CIRCLE, "footprint"), "invalid_geometry", id="no footprint"),
        pytest.param(
            with_(NATIVE_CIRCLE, "circle", "footprint"), "invalid_geometry", id="footprint a string"
        ),
        pytest.param(
            {**NATIVE_CIRCLE, "footprint": {"square": {}}}, "invalid_geometry", id="unknown shape"
        ),
        pytest.param(
            without(NATIVE_CIRCLE, "footprint", "circle", "radius_m"),
            "invalid_input",
            id="no radius",
        ),
        pytest.param(
            without(NATIVE_CIRCLE, "footprint", "circle", "center"),
            "invalid_geometry",
            id="no centre",
        ),
        pytest.param(
            with_(NATIVE_CIRCLE, [46.05, 7.05], "footprint", "circle", "center"),
            "invalid_input",
            id="centre as an array",
        ),
        pytest.param(
            with_(NATIVE_CIRCLE, "46.05", "footprint", "circle", "center", "lat"),
            "invalid_input",
            id="latitude as a string",
        ),
        pytest.param(
            with_(NATIVE_CIRCLE, 0.5, "footprint", "circle", "radius_m"),
            "invalid_radius",
            id="tiny radius",
        ),
        pytest.param(
            with_(NATIVE_CIRCLE, 91.0, "footprint", "circle", "center", "lat"),
            "invalid_coordinates",
            id="latitude beyond the pole",
        ),
        pytest.param(
            with_(
                NATIVE_POLYGON,
                [[46.0, 7.0], [46.0, 7.1], [46.1, 7.1]],
                "footprint",
                "polygon",
                "vertices",
            ),
            "invalid_input",
            id="vertices as arrays",
        ),
        pytest.param(
            with_(
                NATIVE_POLYGON,
                [{"lat": 46.0, "lon": 7.0}, {"lat": 46.0, "lon": 7.1}],
                "footprint",
                "polygon",
                "vertices",
            ),
            "degenerate_polygon",
            id="two vertices",
        ),
        pytest.param(
            with_(
                NATIVE_POLYGON,
                [
                    {"lat": a, "lon": b}
                    for a, b in [(46.0, 7.0), (46.1, 7.1), (46.0, 7.1), (46.1, 7.0)]
                ],
                "footprint",
                "polygon",
                "vertices",
            ),
            "self_intersecting_polygon",
            id="a bow tie",
        ),
        pytest.param(
            without(NATIVE_CIRCLE, "altitude_lower_m"), "invalid_altitude", id="no lower altitude"
        ),
        pytest.param(
            without(NATIVE_CIRCLE, "altitude_upper_m"), "invalid_altitude", id="no upper altitude"
        ),
        pytest.param(
            with_(NATIVE_CIRCLE, "60", "altitude_upper_m"),
            "invalid_input",
            id="altitude as a string",
        ),
        pytest.param(
            with_(NATIVE_CIRCLE, 0.0, "altitude_upper_m"), "invalid_altitude", id="upside down"
        ),
        pytest.param(without(NATIVE_CIRCLE, "start"), "invalid_time", id="no start"),
        pytest.param(without(NATIVE_CIRCLE, "end"), "invalid_time", id="no end"),
        pytest.param("a volume", "invalid_input", id="not an object"),
    ],
)
def test_bad_native_volumes_are_refused_with_a_code(data: Any, code: str) -> None:
    assert refused(data).code == code


def ring_with_hole() -> list:
    outer = [[b, a] for a, b in [*RING, RING[0]]]
    hole = [[7.04, 46.04], [7.06, 46.04], [7.06, 46.06], [7.04, 46.06], [7.04, 46.04]]
    return [outer, hole]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        pytest.param(
            with_(GEOJSON_POLYGON, ring_with_hole(), "geometry", "coordinates"),
            "invalid_geometry",
            id="a hole",
        ),
        pytest.param(
            without(GEOJSON_CIRCLE, "properties", "radius_m"),
            "invalid_geometry",
            id="Point without radius",
        ),
        pytest.param(
            with_(GEOJSON_CIRCLE, "750", "properties", "radius_m"),
            "invalid_input",
            id="radius as a string",
        ),
        pytest.param(without(GEOJSON_POLYGON, "geometry"), "invalid_geometry", id="no geometry"),
        pytest.param(
            with_(
                GEOJSON_POLYGON,
                {"type": "LineString", "coordinates": [[7, 46], [7.1, 46]]},
                "geometry",
            ),
            "invalid_geometry",
            id="a LineString",
        ),
        pytest.param(
            with_(
                GEOJSON_POLYGON,
                {"type": "MultiPolygon", "coordinates": [ring_with_hole()[:1]]},
                "geometry",
            ),
            "invalid_geometry",
            id="a MultiPolygon",
        ),
        pytest.param(
            with_(GEOJSON_POLYGON, [], "geometry", "coordinates"), "invalid_geometry", id="no rings"
        ),
        pytest.param(
            with_(GEOJSON_POLYGON, [[[7.0], [7.1], [7.1]]], "geometry", "coordinates"),
            "invalid_geometry",
            id="positions without latitude",
        ),
        pytest.param(
            with_(GEOJSON_POLYGON, [[{"lon": 7, "lat": 46}] * 4], "geometry", "coordinates"),
            "invalid_geometry",
            id="positions as objects",
        ),
        pytest.param(
            with_(
                GEOJSON_POLYGON, [[["x", "y"], [7.1, 46], [7.1, 46.1]]], "geometry", "coordinates"
            ),
            "invalid_geometry",
            id="positions as words",
        ),
        pytest.param(
            with_(
                GEOJSON_POLYGON,
                [[["7", "46"], [7.1, 46], [7.1, 46.1]]],
                "geometry",
                "coordinates",
            ),
            "invalid_geometry",
            id="positions as numeric strings",
        ),
        pytest.param(
            with_(
                GEOJSON_POLYGON, [[[True, 46], [7.1, 46], [7.1, 46.1]]], "geometry", "coordinates"
            ),
            "invalid_geometry",
            id="a position holding a boolean",
        ),
        pytest.param(
            {**GEOJSON_CIRCLE, "geometry": {"type": "Point", "coordinates": [7, False]}},
            "invalid_geometry",
            id="a point holding a boolean",
        ),
        pytest.param(
            with_(GEOJSON_POLYGON, [[[7, 46], [7.1, 46], [7, 46]]], "geometry", "coordinates"),
            "degenerate_polygon",
            id="two distinct positions",
        ),
        pytest.param(
            with_(GEOJSON_POLYGON, ["altitude"], "properties"),
            "invalid_input",
            id="properties a list",
        ),
        pytest.param(
            without(GEOJSON_POLYGON, "properties", "start"), "invalid_time", id="no start"
        ),
        pytest.param(
            without(GEOJSON_POLYGON, "properties", "altitude_lower_m"),
            "invalid_altitude",
            id="no lower altitude",
        ),
        pytest.param(
            with_(GEOJSON_POLYGON, "2027-01-15T08:00:00", "properties", "start"),
            "invalid_time",
            id="no zone",
        ),
    ],
)
def test_bad_geojson_features_are_refused_with_a_code(data: Any, code: str) -> None:
    assert refused(data).code == code


@pytest.mark.parametrize(
    "data",
    [
        pytest.param({"type": "FeatureCollection"}, id="no features"),
        pytest.param({"type": "FeatureCollection", "features": "none"}, id="features a string"),
        pytest.param("volumes", id="a string"),
        pytest.param({"volumes": []}, id="an object"),
        pytest.param(None, id="nothing"),
    ],
)
def test_a_volume_list_must_be_a_list_or_a_feature_collection(data: Any) -> None:
    assert refused(data, parse=parse_volumes).code == "invalid_input"


def test_a_bad_volume_in_a_list_is_named_by_its_position() -> None:
    error = refused([NATIVE_CIRCLE, without(NATIVE_CIRCLE, "end")], parse=parse_volumes)
    assert "volumes[1]" in error.message


def test_parse_footprint_refuses_what_is_neither_circle_nor_polygon() -> None:
    assert refused({"polygon": "square"}, parse=parse_footprint).code == "invalid_geometry"
    assert (
        refused({"polygon": {"vertices": None}}, parse=parse_footprint).code == "invalid_geometry"
    )
