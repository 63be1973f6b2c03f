"""``deconfliction replay``: recorded traffic through the monitor, fast, with a summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deconfliction.cli import app
from deconfliction.services.replay import replay
from deconfliction.tactical.adsb import PartyRule

runner = CliRunner()
PARIS = Path(__file__).resolve().parents[3] / "shared" / "data" / "adsb" / "paris-2021-10-07.csv.gz"
needs_paris = pytest.mark.skipif(not PARIS.exists(), reason=f"{PARIS} is not here")

HEADER = "timestamp,icao24,callsign,latitude,longitude,altitude,groundspeed,track,vertical_rate\n"


def head_on_file(tmp_path: Path) -> Path:
    """Two airliners 40 km apart, head-on at FL100, one of each party, for 30 s."""
    rows = []
    for t in range(30):
        stamp = f"2021-10-07 12:00:{t:02d}+00:00"
        north = 48.0 + t * 0.0018
        south = 48.36 - t * 0.0018
        rows.append(f"{stamp},aaaaaa,AFR1,{north:.5f},2.0,10000,400,0,0\n")
        rows.append(f"{stamp},bbbbbb,EZY2,{south:.5f},2.0,10000,400,180,0\n")
    path = tmp_path / "head-on.csv"
    path.write_text(HEADER + "".join(rows))
    return path


@needs_paris
def test_replay_of_the_paris_sample_prints_a_summary(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["replay", str(PARIS), "--party", "AFR=blue", "--party", "EZY=red", "--limit", "2000"]
    )
    assert result.exit_code == 0, result.output
    assert "replayed 2,000 reports" in result.output
    assert "real time" in result.output and "alert changes" in result.output


@needs_paris
def test_replay_json_summary_counts_alerts_by_kind_and_pair(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["replay", str(PARIS), "--party", "AFR=blue", "--limit", "2000", "--json"],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["reports"] == 2000 and summary["steps"] > 0
    assert summary["speed"] > 0
    new = summary["changes"].get("new", 0)
    assert sum(p["new"] for p in summary["pairs"]) == new
    for encounter in summary["top"]:
        assert set(encounter["parties"]) <= {"blue", "other"}


def test_a_head_on_encounter_is_found_named_and_ranked(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "replay",
            str(head_on_file(tmp_path)),
            "--party",
            "AFR=blue",
            "--party",
            "EZY=red",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["changes"] == {"new": 1}
    assert summary["pairs"] == [{"parties": ["blue", "red"], "new": 1}]
    (top,) = summary["top"]
    assert sorted(top["callsigns"]) == ["AFR1", "EZY2"] and top["lost"] is False


def test_realtime_replay_paces_steps_on_the_injected_clock(tmp_path: Path) -> None:
    now = [0.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    summary = replay(
        head_on_file(tmp_path),
        PartyRule({"AFR": "blue", "EZY": "red"}),
        realtime=True,
        speed=2.0,
        clock=lambda: now[0],
        sleep=sleep,
    )
    assert summary.steps == 30
    assert sum(waits) == pytest.approx(29 / 2.0)
    assert summary.speed == pytest.approx(30 / 14.5)


def test_bad_arguments_are_refused_without_a_traceback(tmp_path: Path) -> None:
    missing = runner.invoke(app, ["replay", str(tmp_path / "nope.csv")])
    assert missing.exit_code == 1 and "no such file" in missing.output
    rule = runner.invoke(app, ["replay", str(head_on_file(tmp_path)), "--party", "AFR"])
    assert rule.exit_code == 1 and "PREFIX=PARTY" in rule.output
