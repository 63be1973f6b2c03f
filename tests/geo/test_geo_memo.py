"""Polygons built lately, and footprints read lately, are handed out again: the same object for
the same bits, never for other ones, never a failure, never an outline too large to keep."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deconfliction.geo import GeometryError, Polygon, footprint_from_bytes
from deconfliction.geo import footprint as fp

from .geo_shapes import REGIONS, SCALES, point, size, star_vertices

HEXAGON = [
    (48.0, 11.0),
    (48.02, 11.03),
    (48.04, 11.03),
    (48.06, 11.0),
    (48.04, 10.97),
    (48.02, 10.97),
]


@pytest.fixture(autouse=True)
def fresh_memo():
    fp._MADE.clear()
    yield
    fp._MADE.clear()


def test_the_same_vertices_give_the_same_polygon():
    first = Polygon.create(HEXAGON)
    assert Polygon.create(list(HEXAGON)) is first
    assert Polygon.create(tuple(HEXAGON)) is first  # a tuple names the same vertices


def test_other_bits_give_another_polygon():
    first = Polygon.create(HEXAGON)
    moved = [(HEXAGON[0][0] + 1e-12, HEXAGON[0][1]), *HEXAGON[1:]]
    assert Polygon.create(moved) is not first
    # -0.0 equals 0.0 but is another number: it is kept apart (what the owner sees back differs)
    on_the_equator = [(0.0, 10.0), (0.01, 10.02), (0.02, 10.0)]
    signed = [(-0.0, 10.0), (0.01, 10.02), (0.02, 10.0)]
    assert Polygon.create(on_the_equator) is not Polygon.create(signed)
    assert str(Polygon.create(signed).vertices[0][0]) == "-0.0"


def test_a_refused_polygon_is_refused_every_time():
    bow_tie = [(0.0, 0.0), (1.0, 1.0), (1.0, 0.0), (0.0, 1.0)]
    for _ in range(2):
        with pytest.raises(GeometryError) as refused:
            Polygon.create(bow_tie)
        assert refused.value.code == "self_intersecting_polygon"
    assert len(fp._MADE._made) == 0


def test_malformed_vertices_get_the_full_validation_answer():
    Polygon.create(HEXAGON)  # remembered: the same numbers, grouped otherwise, must not find it
    numbers = [c for vertex in HEXAGON for c in vertex]
    as_triples = [tuple(numbers[i : i + 3]) for i in range(0, len(numbers), 3)]
    with pytest.raises(GeometryError) as refused:
        Polygon.create(as_triples)
    assert refused.value.code == "invalid_polygon"
    ragged = [(numbers[0],), tuple(numbers[1:4]), *[tuple(numbers[i : i + 2]) for i in (4, 6, 8)]]
    with pytest.raises(ValueError):
        Polygon.create(ragged)
    assert fp._vertex_key([("48.0", "11.0")] * 3) is None  # text is for the validation to judge
    assert fp._vertex_key([{48.0, 11.0}] * 3) is None


def test_a_polygon_handed_out_again_cannot_be_changed_in_place():
    built = Polygon.create(HEXAGON)
    read = footprint_from_bytes(built.to_bytes())  # also kept and shared (the decode memo)
    for polygon in (built, read):
        for array in (polygon.lat, polygon.lon, polygon.xyz, polygon.center):
            with pytest.raises(ValueError):
                array[0] = 0.0


def test_large_polygons_are_not_kept():
    many = star_vertices(np.random.default_rng(1), 10.0, 10.0, 20_000.0, k=fp.MEMO_VERTICES + 1)
    assert Polygon.create(many) is not Polygon.create(many)
    # few vertices, but long edges: densified to more ring points than the memo keeps
    wide = [(0.0, 0.0), (0.0, 30.0), (20.0, 15.0)]
    built = Polygon.create(wide)
    assert len(built.lat) > fp.MEMO_RING_POINTS
    assert Polygon.create(wide) is not built


def test_the_oldest_polygon_is_forgotten_first():
    memo = fp._Recent(2)
    made = {k: Polygon.create([(k, 0.0), (k, 0.01), (k + 0.01, 0.0)]) for k in (1.0, 2.0, 3.0)}
    for k in (1.0, 2.0):
        memo.get_or_make(str(k).encode(), lambda k=k: made[k])
    memo.get_or_make(b"1.0", lambda: pytest.fail("1.0 is remembered"))  # 1.0 now the newest
    memo.get_or_make(b"3.0", lambda: made[3.0])  # forgets 2.0
    assert list(memo._made) == [b"1.0", b"3.0"]


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    scale=st.sampled_from(list(SCALES)),
    region=st.sampled_from(REGIONS),
)
def test_a_remembered_polygon_is_the_polygon_built_anew(seed, scale, region):
    rng = np.random.default_rng(seed)
    vertices = star_vertices(rng, *point(rng, region), size(rng, scale))
    try:
        anew = Polygon._build(vertices)
    except GeometryError as exc:
        with pytest.raises(GeometryError) as again:
            Polygon.create(vertices)
        assert again.value.code == exc.code
        return
    first, second = Polygon.create(vertices), Polygon.create(vertices)
    assert first.to_bytes() == second.to_bytes() == anew.to_bytes()
    assert first.boxes() == anew.boxes()
    assert (first is second) == (len(anew.lat) <= fp.MEMO_RING_POINTS)


def test_large_stored_footprints_are_decoded_at_each_read():
    small = Polygon.create(HEXAGON).to_bytes()
    assert footprint_from_bytes(small) is footprint_from_bytes(small)
    wide = Polygon.create([(0.0, 0.0), (0.0, 30.0), (20.0, 15.0)])
    blob = wide.to_bytes()
    assert len(blob) > fp.MEMO_BYTES
    again = footprint_from_bytes(blob)
    assert again is not footprint_from_bytes(blob)
    assert again.to_bytes() == blob
