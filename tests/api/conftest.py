from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from deconfliction.api.app import create_app
from deconfliction.config import Settings
from deconfliction.runtime import Runtime


@dataclass
class Api:
    client: TestClient
    runtime: Runtime
    tokens: dict[str, str]
    ids: dict[str, str]

    def as_(self, party: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[party]}"}

    def post(self, path: str, party: str, body: Any) -> Any:
        return self.client.post(path, json=body, headers=self.as_(party))


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    runtime = Runtime.open(Settings(db=str(tmp_path / "api.db")))
    tokens, ids = {}, {}
    for name in ("blue", "red"):
        party = runtime.strategic.add_party(name)
        ids[name] = party.id
        tokens[name] = runtime.tokens.issue(party.id)
    with TestClient(create_app(runtime), raise_server_exceptions=False) as client:
        yield Api(client, runtime, tokens, ids)
    runtime.close()


def iso(offset_s: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + offset_s))


def circle_volume(
    lat: float = 35.3,
    lon: float = 36.7,
    radius_m: float = 5_000.0,
    lower: float = 1_000.0,
    upper: float = 2_000.0,
    start: float = 3_600.0,
    end: float = 7_200.0,
) -> dict[str, Any]:
    return {
        "footprint": {"circle": {"center": {"lat": lat, "lon": lon}, "radius_m": radius_m}},
        "altitude_lower_m": lower,
        "altitude_upper_m": upper,
        "start": iso(start),
        "end": iso(end),
    }
