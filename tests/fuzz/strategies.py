"""Hypothesis strategies for JSON-like garbage and for GeoJSON and reports that are almost right.

Shared by the parser fuzz tests and the HTTP fuzz tests. Everything here is what a client could
put in a JSON body (``json.loads`` also accepts NaN, Infinity and integers of any size), plus the
values that break naive number handling: negative zero, subnormals, 1e308, 10**400.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from hypothesis import strategies as st

KEYS = (
    "type",
    "features",
    "geometry",
    "coordinates",
    "properties",
    "footprint",
    "circle",
    "polygon",
    "center",
    "vertices",
    "lat",
    "lon",
    "radius_m",
    "altitude_lower_m",
    "altitude_upper_m",
    "altitude_lower_ft",
    "altitude_upper_ft",
    "start",
    "end",
    "reports",
    "aircraft_id",
    "time",
    "altitude_m",
    "ground_speed_mps",
    "track_deg",
    "vertical_rate_mps",
    "operation_id",
)

TIMES = (
    "2030-05-01T10:00:00Z",
    "2030-05-01T10:00:00z",
    "2030-05-01T10:00:00",
    "2030-05-01T10:00:00+14:00",
    "0001-01-01T00:00:00+01:00",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59-01:00",
    "9999-12-31T23:59:59.999999Z",
    "2030-02-30T00:00:00Z",
    "2030-05-01T10:00:00+24:00",
    "yesterday",
    "",
    "Z",
    "nan",
    "1e400",
)

STRINGS = (*TIMES, "Feature", "FeatureCollection", "Polygon", "Point", "LineString", "-0", "inf")

SPECIAL_NUMBERS: tuple[Any, ...] = (
    0,
    -0.0,
    0.0,
    5e-324,
    -5e-324,
    1e308,
    -1e308,
    float("inf"),
    float("-inf"),
    float("nan"),
    10**400,
    -(10**400),
    2**63,
    2**64 + 1,
    90,
    -90,
    90.0000001,
    180,
    -180,
    180.0000001,
    1e10,
    253402300800,
    -62135596801,
)

numbers = st.one_of(
    st.sampled_from(SPECIAL_NUMBERS),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(min_value=-2.0, max_value=2.0),
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    numbers,
    st.sampled_from(STRINGS),
    st.text(max_size=12),
)

keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=8))

json_like = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(keys, children, max_size=6),
    ),
    max_leaves=25,
)
"""Anything ``json.loads`` can return (string keys only, as in JSON)."""

# Almost-right GeoJSON and native volumes: the right keys, with values that are often wrong.

near = st.one_of(st.floats(min_value=-1.5, max_value=1.5), numbers)
"""Coordinates mostly in a small box (so polygons get far enough to be built), sometimes not."""
position = st.one_of(
    st.lists(near, min_size=2, max_size=2),
    st.lists(st.one_of(near, scalars), max_size=4),
    scalars,
)
ring = st.lists(position, max_size=7)
times = st.one_of(st.sampled_from(TIMES), numbers, scalars)
altitudes = st.one_of(st.floats(min_value=-1_000, max_value=20_000), numbers, scalars)

properties = st.fixed_dictionaries(
    {},
    optional={
        "altitude_lower_m": altitudes,
        "altitude_upper_m": altitudes,
        "altitude_lower_ft": altitudes,
        "altitude_upper_ft": altitudes,
        "start": times,
        "end": times,
        "radius_m": st.one_of(st.floats(min_value=0, max_value=5e6), numbers, scalars),
    },
)

geometry = st.fixed_dictionaries(
    {
        "type": st.one_of(st.sampled_from(["Polygon", "Point", "LineString"]), scalars),
        "coordinates": st.one_of(st.lists(ring, max_size=3), position, json_like),
    }
)

feature = st.fixed_dictionaries(
    {
        "type": st.just("Feature"),
        "geometry": st.one_of(geometry, json_like),
        "properties": st.one_of(properties, json_like),
    }
)

vertex = st.one_of(
    st.fixed_dictionaries({"lat": near, "lon": near}),
    st.dictionaries(st.sampled_from(["lat", "lon", "x"]), st.one_of(near, scalars), max_size=3),
    json_like,
)

footprint = st.one_of(
    st.fixed_dictionaries(
        {
            "circle": st.one_of(
                st.fixed_dictionaries(
                    {
                        "center": st.one_of(vertex, json_like),
                        "radius_m": st.one_of(st.floats(min_value=0, max_value=5e6), numbers),
                    }
                ),
                json_like,
            )
        }
    ),
    st.fixed_dictionaries(
        {
            "polygon": st.one_of(
                st.fixed_dictionaries({"vertices": st.lists(vertex, max_size=7)}), json_like
            )
        }
    ),
    json_like,
)

native_volume = st.fixed_dictionaries(
    {"footprint": footprint},
    optional={
        "altitude_lower_m": altitudes,
        "altitude_upper_m": altitudes,
        "altitude_lower_ft": altitudes,
        "altitude_upper_ft": altitudes,
        "start": times,
        "end": times,
    },
)

volume = st.one_of(native_volume, feature)

volumes = st.one_of(
    st.lists(volume, max_size=3),
    st.fixed_dictionaries(
        {
            "type": st.just("FeatureCollection"),
            "features": st.one_of(st.lists(feature, max_size=3), json_like),
        }
    ),
    feature,
    json_like,
)

# Almost-right track reports.


def reports(now: Callable[[], float]) -> st.SearchStrategy[Any]:
    """One report, almost right; ``now`` is the clock its valid times are drawn around."""
    values: dict[str, st.SearchStrategy[Any]] = {
        "aircraft_id": st.one_of(st.text(min_size=1, max_size=8), st.text(max_size=120), scalars),
        "time": st.one_of(st.floats(min_value=-40, max_value=10).map(lambda dt: now() + dt), times),
        "lat": st.one_of(st.floats(min_value=-90, max_value=90), numbers, scalars),
        "lon": st.one_of(st.floats(min_value=-180, max_value=180), numbers, scalars),
        "altitude_m": st.one_of(st.floats(min_value=-500, max_value=30_000), numbers, scalars),
        "ground_speed_mps": st.one_of(st.floats(min_value=0, max_value=1_000), numbers, scalars),
        "track_deg": st.one_of(st.floats(min_value=-720, max_value=720), numbers, scalars),
        "vertical_rate_mps": st.one_of(st.floats(min_value=-200, max_value=200), numbers, scalars),
    }
    return st.one_of(
        st.fixed_dictionaries(
            values,
            optional={"operation_id": st.one_of(st.text(max_size=8), scalars), "extra": scalars},
        ),
        st.dictionaries(st.sampled_from([*values, "operation_id"]), scalars, max_size=9),
        json_like,
    )


def batches(now: Callable[[], float]) -> st.SearchStrategy[Any]:
    """What a client may send to ``POST /v1/tracks``: a batch, a bare list, one report, junk."""
    one = reports(now)
    return st.one_of(
        st.fixed_dictionaries({"reports": st.one_of(st.lists(one, max_size=5), json_like)}),
        st.lists(one, max_size=5),
        one,
    )


# Volumes shaped as the API schema wants them (so they get past the 422 to the parser and the
# core), with values that are often wrong.

schema_numbers = st.one_of(
    st.floats(min_value=-2.0, max_value=2.0),
    st.sampled_from([x for x in SPECIAL_NUMBERS if isinstance(x, float | int)]),
    st.floats(),
)
schema_times = st.one_of(
    st.sampled_from(TIMES[:10]),
    st.floats(min_value=-3_600, max_value=86_400).map(
        lambda dt: datetime.fromtimestamp(time.time() + dt, UTC).isoformat()
    ),
)
schema_latlon = st.fixed_dictionaries({"lat": schema_numbers, "lon": schema_numbers})
schema_volume = st.fixed_dictionaries(
    {
        "footprint": st.one_of(
            st.fixed_dictionaries(
                {
                    "circle": st.fixed_dictionaries(
                        {"center": schema_latlon, "radius_m": schema_numbers.map(abs)}
                    )
                }
            ),
            st.fixed_dictionaries(
                {
                    "polygon": st.fixed_dictionaries(
                        {"vertices": st.lists(schema_latlon, max_size=6)}
                    )
                }
            ),
        ),
        "altitude_lower_m": st.one_of(st.floats(min_value=0, max_value=1_000), schema_numbers),
        "altitude_upper_m": st.one_of(st.floats(min_value=1_000, max_value=5_000), schema_numbers),
        "start": schema_times,
        "end": schema_times,
    }
)
