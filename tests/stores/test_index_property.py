"""The spatial index never misses a conflict: store + exact check == brute force over everything.

Scenes are drawn around one centre (often on the antimeridian or near a pole) so that operations
and queries meet often, in shapes that stress index boxes: circles and star-shaped polygons that
wrap the dateline, reach high latitudes or hold a pole, with fractional altitudes and times that
float32 cannot hold.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyproj import Geod

from deconfliction.core import rules
from deconfliction.core.model import Operation, OperationState
from deconfliction.geo import Circle, GeometryError, Polygon, Volume

T = 1_800_000_000.0
OWNERS = ("alpha", "bravo", "charlie")
WGS84 = Geod(ellps="WGS84")

centres = st.one_of(
    st.tuples(st.floats(-60.0, 60.0), st.floats(-180.0, 180.0)),
    st.tuples(st.floats(-60.0, 60.0), st.sampled_from([179.9, -179.9, 180.0, -180.0])),
    st.tuples(st.floats(75.0, 90.0), st.floats(-180.0, 180.0)),
    st.tuples(st.floats(-90.0, -75.0), st.floats(-180.0, 180.0)),
)


@st.composite
def footprints(draw: st.DrawFn, centre: tuple[float, float]) -> Circle | Polygon:
    """A circle or a star-shaped polygon within a few hundred km of the scene centre."""
    lat0, lon0 = centre
    bearing = draw(st.floats(0.0, 360.0))
    offset = draw(st.floats(0.0, 300_000.0))
    lon, lat, _ = WGS84.fwd(lon0, lat0, bearing, offset)
    lat = max(-90.0, min(90.0, lat))
    size = draw(st.floats(1_000.0, 250_000.0))
    if draw(st.booleans()):
        return Circle.create(lat, lon, size)
    n = draw(st.integers(3, 8))
    gaps = draw(st.lists(st.floats(0.2, 1.0), min_size=n, max_size=n))
    scale = draw(st.lists(st.floats(0.3, 1.0), min_size=n, max_size=n))
    turn = draw(st.floats(0.0, 360.0))
    angles = [turn + 360.0 * sum(gaps[:i]) / sum(gaps) for i in range(n)]
    lons, lats, _ = WGS84.fwd([lon] * n, [lat] * n, angles, [size * s for s in scale])
    try:
        return Polygon.create(list(zip(lats, lons, strict=True)))
    except GeometryError:  # a legitimately refused shape (e.g. degenerate at a pole): use a circle
        return Circle.create(lat, lon, size)


@st.composite
def volumes(draw: st.DrawFn, centre: tuple[float, float]) -> Volume:
    lower = draw(st.floats(-100.0, 3_000.0))
    upper = lower + draw(st.floats(0.5, 2_000.0))
    start = T + draw(st.floats(-3_600.0, 36_000.0))
    end = start + draw(st.floats(0.25, 18_000.0))
    return Volume.create(draw(footprints(centre)), lower, upper, start, end)


@st.composite
def scenes(draw: st.DrawFn) -> tuple[list[Operation], list[Volume]]:
    centre = draw(centres)
    ops = []
    for i in range(draw(st.integers(1, 12))):
        vols = draw(st.lists(volumes(centre), min_size=1, max_size=3))
        ended = draw(st.integers(0, 5)) == 0
        ops.append(
            Operation(
                id=f"op-{i}",
                owner=draw(st.sampled_from(OWNERS)),
                state=OperationState.ENDED if ended else OperationState.ACCEPTED,
                priority=0,
                volumes=tuple(vols),
                version=f"v{i}",
                revision=1,
                created_at=T,
                updated_at=T,
            )
        )
    query = draw(st.lists(volumes(centre), min_size=1, max_size=2))
    return ops, query


def conflict_map(found: list[rules.Found]) -> dict[str, tuple[int, ...]]:
    return {f.operation.id: f.volumes for f in found}


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scene=scenes(), exclude=st.sampled_from([None, "alpha"]))
def test_the_index_finds_every_conflict_brute_force_finds(
    store_factory, scene: tuple[list[Operation], list[Volume]], exclude: str | None
) -> None:
    ops, query = scene
    store = store_factory()  # a fresh, empty store for every example
    store.transact(lambda tx: [tx.put_operation(op) for op in ops])

    def both(tx) -> tuple[list[Operation], list[Operation], frozenset[tuple[str, str]]]:
        stored = [op for owner in OWNERS for op in tx.list_operations(owner)]
        return (
            stored,
            tx.operation_candidates(query, exclude_owner=exclude),
            tx.candidate_versions(query, exclude_owner=exclude),
        )

    stored, candidates, versions = store.transact(both, write=False)
    everything = [op for op in stored if op.live and op.owner != exclude]

    expected = conflict_map(rules.find_conflicts(query, everything))
    assert conflict_map(rules.find_conflicts(query, candidates)) == expected
    assert all(op.live and op.owner != exclude for op in candidates)
    assert len({op.id for op in candidates}) == len(candidates), "no operation twice"
    # A write's look is brought up to date from the versions alone: the same candidates.
    assert versions == {(op.id, op.version) for op in candidates}


def test_the_scenes_do_produce_conflicts() -> None:
    """Guard against a vacuous property: a good share of drawn scenes must have conflicts."""
    hits = 0

    @settings(max_examples=40, deadline=None, database=None)
    @given(scene=scenes())
    def count(scene: tuple[list[Operation], list[Volume]]) -> None:
        nonlocal hits
        ops, query = scene
        hits += bool(rules.find_conflicts(query, [op for op in ops if op.live]))

    count()
    assert hits >= 4, f"only {hits} of 40 scenes had a conflict"
