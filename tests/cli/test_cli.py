"""The command line: set-up commands, filing from GeoJSON, refusals without tracebacks, the demo."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from deconfliction.cli import app

runner = CliRunner()


def iso(offset_s: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + offset_s))


def feature_file(tmp_path: Path, name: str, lon: float) -> Path:
    path = tmp_path / name
    path.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "geometry": {"type": "Point", "coordinates": [lon, 35.3]},
                        "properties": {
                            "radius_m": 5000,
                            "altitude_lower_m": 1000,
                            "altitude_upper_m": 2000,
                            "start": iso(3600),
                            "end": iso(7200),
                        },
                    }
                ],
            }
        )
    )
    return path


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_party_add_prints_a_token_and_op_file_list_end_work(tmp_path: Path) -> None:
    db = str(tmp_path / "cli.db")
    added = invoke("party", "add", "Blue", "--db", db)
    assert added.exit_code == 0
    token = added.stdout.strip().splitlines()[-1]
    assert token.count(".") == 2  # a JWT
    invoke("party", "add", "Red", "--db", db)

    blue = invoke(
        "op",
        "file",
        str(feature_file(tmp_path, "a.json", 36.7)),
        "--as",
        "Blue",
        "--db",
        db,
        "--priority",
        "1",
    )
    assert blue.exit_code == 0 and "filed" in blue.stdout
    op_id = blue.stdout.split()[1]

    refused = invoke(
        "op", "file", str(feature_file(tmp_path, "b.json", 36.72)), "--as", "Red", "--db", db
    )
    assert refused.exit_code == 1
    assert "missing_key" in refused.stderr and "Traceback" not in refused.output
    lower = invoke(
        "op",
        "file",
        str(feature_file(tmp_path, "b.json", 36.72)),
        "--as",
        "Red",
        "--db",
        db,
        "--aware",
    )
    assert lower.exit_code == 1 and "priority_conflict" in lower.stderr
    aware = invoke(
        "op",
        "file",
        str(feature_file(tmp_path, "b.json", 36.72)),
        "--as",
        "Red",
        "--db",
        db,
        "--aware",
        "--priority",
        "1",
    )
    assert aware.exit_code == 0 and "Conflicting operations" in aware.stdout

    listed = json.loads(invoke("op", "list", "--as", "Blue", "--db", db, "--json").stdout)
    assert [op["id"] for op in listed] == [op_id]
    assert "Accepted" in invoke("op", "list", "--as", "Blue", "--db", db).stdout
    ended = invoke("op", "end", op_id, "--as", "Blue", "--db", db)
    assert ended.exit_code == 0
    shown = json.loads(invoke("op", "show", op_id, "--as", "Blue", "--db", db).stdout)
    assert shown["state"] == "Ended" and "details" in shown


def test_bad_files_and_unknown_parties_give_a_message_not_a_traceback(tmp_path: Path) -> None:
    db = str(tmp_path / "cli.db")
    invoke("party", "add", "Blue", "--db", db)
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    for args in (
        ("op", "file", str(bad), "--as", "Blue"),
        ("op", "file", str(tmp_path / "missing.json"), "--as", "Blue"),
        ("op", "list", "--as", "Nobody"),
        ("party", "add", "blue"),
    ):
        result = invoke(*args, "--db", db)
        assert result.exit_code == 1, args
        assert "Traceback" not in result.output and result.stderr.strip()


def test_demo_tells_the_story(tmp_path: Path) -> None:
    result = invoke("demo")
    assert result.exit_code == 0
    out = result.stdout
    assert "missing_key" in out and "priority_conflict" in out and "not yours to see" in out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_serve_prints_its_url_and_answers(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "DECONFLICTION_DB": str(tmp_path / "srv.db")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "deconfliction.cli", "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        first = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}" in first
        deadline = time.time() + 20
        while True:
            try:
                resp = httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=1)
                break
            except httpx.TransportError:
                assert time.time() < deadline, "server did not start"
                time.sleep(0.1)
        assert resp.json()["status"] == "ok"
        assert (tmp_path / "srv.db.key.pem").exists()
    finally:
        proc.terminate()
        proc.wait(10)


def test_audit_verify_export_and_a_bundle_checked_against_the_pinned_key(tmp_path: Path) -> None:
    db = str(tmp_path / "audit.db")
    invoke("party", "add", "Blue", "--db", db)
    invoke("op", "file", str(feature_file(tmp_path, "a.json", 36.7)), "--as", "Blue", "--db", db)
    verified = invoke("audit", "verify", "--db", db)
    assert verified.exit_code == 0 and "intact" in verified.stdout
    pem = tmp_path / "service.pub.pem"
    pem.write_text(invoke("audit", "key", "--db", db).stdout.split("fingerprint")[0])
    bundle = tmp_path / "bundle.json"
    assert (
        invoke(
            "audit",
            "export",
            "--from",
            iso(-3600),
            "--to",
            iso(3600),
            "--out",
            str(bundle),
            "--db",
            db,
        ).exit_code
        == 0
    )
    ok = invoke("audit", "verify", "--bundle", str(bundle), "--key", str(pem))
    assert ok.exit_code == 0 and "intact" in ok.stdout
    data = json.loads(bundle.read_text())
    data["entries"][-1]["action"] = "operation.end"  # tamper with the record
    bundle.write_text(json.dumps(data))
    broken = invoke("audit", "verify", "--bundle", str(bundle), "--key", str(pem))
    assert broken.exit_code == 1 and "broken" in broken.stderr
