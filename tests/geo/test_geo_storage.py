"""A footprint read back from storage is the same footprint."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deconfliction.geo import footprint_contains, footprint_from_bytes, footprints_overlap

from .geo_shapes import REGIONS, SCALES, point, random_footprint, size


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    kind=st.sampled_from(["circle", "polygon"]),
    scale=st.sampled_from(list(SCALES)),
    region=st.sampled_from(REGIONS),
)
def test_a_stored_footprint_answers_like_the_original(seed, kind, scale, region):
    rng = np.random.default_rng(seed)
    original, _ = random_footprint(rng, kind, *point(rng, region), size(rng, scale))
    blob = original.to_bytes()
    restored = footprint_from_bytes(blob)
    assert type(restored) is type(original)
    assert restored.to_bytes() is blob  # kept, not encoded again ...
    assert dataclasses.replace(restored, _bytes=None).to_bytes() == blob  # ... but it would be
    assert restored.boxes() == original.boxes()
    assert restored.cap_radius == original.cap_radius
    np.testing.assert_array_equal(restored.center, original.center)
    assert restored.to_json() == original.to_json()
    lat0 = float(np.degrees(np.arcsin(np.clip(original.center[2], -1, 1))))
    lon0 = float(np.degrees(np.arctan2(original.center[1], original.center[0])))
    for _ in range(6):
        other_kind = "circle" if rng.random() < 0.5 else "polygon"
        other, _ = random_footprint(
            rng,
            other_kind,
            float(np.clip(lat0 + rng.normal(0, 0.01), -90, 90)),
            lon0,
            size(rng, scale),
        )
        assert footprints_overlap(restored, other) == footprints_overlap(original, other)
        assert footprints_overlap(other, restored) == footprints_overlap(other, original)
    lat = rng.uniform(-90, 90, 200)
    lon = rng.uniform(-180, 180, 200)
    np.testing.assert_array_equal(
        footprint_contains(restored, lat, lon), footprint_contains(original, lat, lon)
    )


def test_bytes_that_are_not_a_footprint_are_refused():
    with pytest.raises(ValueError):
        footprint_from_bytes(b"X123")
