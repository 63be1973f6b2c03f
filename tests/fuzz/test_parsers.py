"""Fuzz the parsers a client's data meets first: volumes and times (``formats``) and track reports
(``services.tactical.parse_reports`` for the API, ``tactical.tracks`` for the pure table).

The rule: whatever the data, a parser answers with a value or its own refusal — ``InvalidInput``
(HTTP 400) for ``formats`` and the service, ``TacticalError`` for the pure tactical layer — never
a ``KeyError``, ``TypeError``, ``OverflowError`` or anything else that a face would turn into a
500. What it accepts must be usable: finite numbers, a start before the end, times that format.
"""

from __future__ import annotations

import contextlib
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deconfliction.core.errors import InvalidInput
from deconfliction.formats import (
    format_time,
    parse_footprint,
    parse_time,
    parse_volume,
    parse_volumes,
    volume_to_json,
)
from deconfliction.geo import Volume
from deconfliction.services.tactical import TacticalSettings, parse_reports
from deconfliction.tactical.errors import TacticalError
from deconfliction.tactical.tracks import NUMBERS, ReportBatch, TrackTable

from . import strategies as fz

NOW = 1_800_000_000.0
FUZZ = settings(
    max_examples=250,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def usable(v: Volume) -> None:
    assert isinstance(v, Volume)
    assert math.isfinite(v.altitude_lower_m) and math.isfinite(v.altitude_upper_m)
    assert v.altitude_lower_m < v.altitude_upper_m and v.start < v.end
    volume_to_json(v)  # every view of an accepted volume formats its times


@FUZZ
@given(fz.volumes)
def test_parse_volumes_answers_volumes_or_invalid_input(data: Any) -> None:
    try:
        found = parse_volumes(data)
    except InvalidInput as exc:
        assert exc.code and exc.message
        return
    for v in found:
        usable(v)


@FUZZ
@given(fz.volume, st.one_of(st.none(), fz.properties))
def test_parse_volume_answers_a_volume_or_invalid_input(data: Any, defaults: Any) -> None:
    try:
        found = parse_volume(data, defaults=defaults)
    except InvalidInput:
        return
    usable(found)


@FUZZ
@given(fz.footprint)
def test_parse_footprint_answers_a_footprint_or_invalid_input(data: Any) -> None:
    with contextlib.suppress(InvalidInput):
        parse_footprint(data)


@FUZZ
@given(fz.json_like)
def test_any_json_value_is_a_volume_list_or_invalid_input(data: Any) -> None:
    for parse in (parse_volumes, parse_volume, parse_footprint):
        with contextlib.suppress(InvalidInput):
            parse(data)


offsets = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda m: timezone(timedelta(minutes=m))
)


@FUZZ
@given(
    st.one_of(
        fz.times,
        fz.json_like,
        st.datetimes(timezones=st.one_of(st.none(), st.just(UTC), offsets)),
        st.datetimes(timezones=st.one_of(st.just(UTC), offsets)).map(datetime.isoformat),
    )
)
def test_parse_time_answers_seconds_that_format_or_invalid_input(value: Any) -> None:
    try:
        seconds = parse_time(value)
    except InvalidInput as exc:
        assert exc.code == "invalid_time"
        return
    assert isinstance(seconds, float) and math.isfinite(seconds)
    format_time(seconds)


@FUZZ
@given(st.lists(fz.reports(lambda: NOW), max_size=6))
def test_parse_reports_answers_reports_or_invalid_report(records: list[Any]) -> None:
    try:
        reports, too_old = parse_reports("blue", records, NOW, TacticalSettings())
    except InvalidInput as exc:
        assert exc.code == "invalid_report"
        assert exc.details["problems"]
        for problem in exc.details["problems"]:
            assert set(problem) == {"report", "field", "problem"}
            assert 0 <= problem["report"] < len(records)
        return
    assert len(reports) + too_old == len(records)
    for r in reports:
        assert all(math.isfinite(x) for x in (r.time, r.lat, r.lon, r.alt, r.gs, r.trk, r.vs))


row_values = st.one_of(
    st.floats(min_value=-100, max_value=100),
    fz.numbers,
    fz.scalars,
    st.sampled_from(["12.5", " 7 ", "1e3", "nan", "-inf", "0x10"]),
)
rows = st.lists(
    st.fixed_dictionaries(
        {name: row_values for name in NUMBERS},
        optional={"id": fz.scalars, "party": fz.scalars, "operation": fz.scalars},
    ),
    max_size=6,
)


@FUZZ
@given(rows, st.one_of(st.none(), st.floats(min_value=-200, max_value=200)))
def test_track_table_takes_a_batch_or_refuses_it_whole(
    records: list[dict[str, Any]], now: float | None
) -> None:
    table = TrackTable()
    try:
        batch = ReportBatch.from_records(records)
        before = len(table)
        stats = table.ingest(batch, now=now)
    except TacticalError as exc:
        assert exc.code == "invalid_report" and exc.problems
        assert len(table) == 0
        return
    assert stats.accepted + stats.stale + stats.duplicate == len(batch)
    assert len(table) >= before
    snap = table.snapshot(now if now is not None else 0.0)
    assert np.all(np.isfinite(snap.lat)) and np.all((snap.trk >= 0) & (snap.trk < 360))
