"""Tracks over HTTP: the batch endpoint, the NDJSON stream, refusals, and alerts in the feed."""

from __future__ import annotations

import json
import math
import time
from typing import Any

from deconfliction.services.tactical import TacticalMonitor

from .conftest import Api, circle_volume

R = 6_371_000.0


def report(aircraft: str, lat: float, *, trk: float = 0.0, **extra: Any) -> dict[str, Any]:
    return {
        "aircraft_id": aircraft,
        "time": time.time(),
        "lat": lat,
        "lon": 2.0,
        "altitude_m": 3000.0,
        "ground_speed_mps": 200.0,
        "track_deg": trk,
        "vertical_rate_mps": 0.0,
        **extra,
    }


def lines(*items: Any) -> bytes:
    return b"".join(json.dumps(item).encode() + b"\n" for item in items)


def test_a_batch_is_stored_for_the_cycle(api: Api) -> None:
    answer = api.post("/v1/tracks", "blue", {"reports": [report("A", 48.0), report("B", 48.1)]})
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"received": 2, "stored": 2, "too_old": 0}
    # A bare list is a batch too.
    assert api.post("/v1/tracks", "blue", [report("A", 48.0)]).status_code == 202
    assert "/v1/tracks" in api.client.get("/openapi.json").json()["paths"]


def test_bad_reports_are_refused_with_a_code_and_the_report_never_a_500(api: Api) -> None:
    bad = {"reports": [report("A", 48.0), report("B", 91.0)]}
    answer = api.post("/v1/tracks", "blue", bad)
    assert answer.status_code == 400
    body = answer.json()
    assert body["code"] == "invalid_report"
    assert body["details"]["problems"] == [
        {"report": 1, "field": "lat", "problem": "lat=91 outside [-90, 90]"}
    ]
    for nonsense in (
        {"reports": [{"aircraft_id": 7}]},
        {"reports": "many"},
        {"reports": [None]},
        {"reports": [{**report("A", 48.0), "ground_speed_mps": -5}]},
        {"reports": [{**report("A", 48.0), "time": "yesterday"}]},
        {"reports": [{**report("A", 48.0), "track_deg": True}]},
    ):
        answer = api.post("/v1/tracks", "blue", nonsense)
        assert answer.status_code == 400, (nonsense, answer.text)
        assert answer.json()["code"] == "invalid_report"
    garbled = api.client.post("/v1/tracks", content=b"{nope", headers=api.as_("blue"))
    assert (garbled.status_code, garbled.json()["code"]) == (400, "invalid_json")
    nan = api.client.post(
        "/v1/tracks",
        content=json.dumps({"reports": [report("A", float("nan"))]}).encode(),
        headers=api.as_("blue"),
    )
    assert (nan.status_code, nan.json()["code"]) == (400, "invalid_report")
    assert api.client.post("/v1/tracks", json={"reports": []}).status_code == 401


def test_reports_must_fly_under_the_callers_own_operations(api: Api) -> None:
    filed = api.post("/v1/operations", "red", {"volumes": [circle_volume(start=0)]})
    theirs = filed.json()["operation"]["id"]
    answer = api.post("/v1/tracks", "blue", [report("A", 48.0, operation_id=theirs)])
    assert (answer.status_code, answer.json()["code"]) == (403, "not_your_operation")
    answer = api.post("/v1/tracks", "blue", [report("A", 48.0, operation_id="nope")])
    assert (answer.status_code, answer.json()["code"]) == (400, "unknown_operation")
    assert answer.json()["details"]["reports"] == [0]
    mine = api.post("/v1/tracks", "red", [report("R", 35.3, operation_id=theirs)])
    assert mine.status_code == 202


def test_the_stream_stores_every_line_and_sums_up_at_the_end(api: Api) -> None:
    body = lines(
        report("A", 48.0),
        {"reports": [report("A", 48.001), report("B", 48.1)]},
        [report("C", 48.2)],
    )
    # Chunks that cut lines in two are put back together.
    chunks = [body[:17], body[17:150], body[150:]]
    answer = api.client.post(
        "/v1/tracks/stream",
        content=iter(chunks),
        headers={**api.as_("blue"), "Content-Type": "application/x-ndjson"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "lines": 3,
        "received": 4,
        "stored": 4,
        "too_old": 0,
        "refused_lines": 0,
        "problems": [],
    }
    stored = api.runtime.store.transact(lambda tx: tx.track_reports_after(0, 10), write=False)
    assert [r.aircraft_id for r in stored] == ["A", "A", "B", "C"]


def test_a_bad_line_ends_the_stream_with_400_saying_where_or_is_skipped(api: Api) -> None:
    body = lines(report("A", 48.0), report("B", 99.0), report("C", 48.0))
    answer = api.client.post("/v1/tracks/stream", content=body, headers=api.as_("blue"))
    assert answer.status_code == 400
    error = answer.json()
    assert error["code"] == "invalid_report" and error["message"].startswith("line 2: ")
    assert error["details"]["line"] == 2
    assert error["details"]["stored_before"]["stored"] == 1

    answer = api.client.post(
        "/v1/tracks/stream?on_error=skip",
        content=body + b"not json\n",
        headers=api.as_("blue"),
    )
    assert answer.status_code == 200
    summary = answer.json()
    assert (summary["lines"], summary["stored"], summary["refused_lines"]) == (4, 2, 2)
    assert [(p["line"], p["code"]) for p in summary["problems"]] == [
        (2, "invalid_report"),
        (4, "invalid_json"),
    ]


def test_the_stream_is_not_bound_by_the_whole_body_limit(api: Api) -> None:
    limit = api.runtime.strategic.policy.limits.max_request_bytes
    line = lines(report("A", 48.0))
    count = 2 * limit // len(line)
    answer = api.client.post(
        "/v1/tracks/stream",
        content=iter([line] * count),
        headers=api.as_("blue"),
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["lines"] == count
    too_big = api.post("/v1/tracks", "blue", {"reports": [report("A", 48.0)] * count})
    assert too_big.status_code == 413


def test_converging_aircraft_reach_both_feeds_as_alert_conflict(api: Api) -> None:
    north = 48.0 + math.degrees(100_000.0 / R)
    assert api.post("/v1/tracks", "blue", [report("A", 48.0)]).status_code == 202
    assert api.post("/v1/tracks", "red", [report("B", north, trk=180.0)]).status_code == 202
    monitor = TacticalMonitor(api.runtime.store, api.runtime.tracks.settings)
    assert monitor.run_once() is not None
    for party, own, other in (("blue", "A", "B"), ("red", "B", "A")):
        events = api.client.get("/v1/events", headers=api.as_(party)).json()["events"]
        (event,) = [e for e in events if e["kind"] == "alert.conflict"]
        assert event["payload"]["change"] == "new"
        assert event["payload"]["aircraft"]["aircraft_id"] == own
        assert event["payload"]["other"]["aircraft_id"] == other
        assert (
            event["payload"]["other"]["party_id"] == api.ids["red" if party == "blue" else "blue"]
        )
