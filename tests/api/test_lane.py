"""The express lane answers exactly as FastAPI alone does.

Every request here goes twice over the same service: through the application (the lane serves
the routes it was given) and through FastAPI's own stack (``app.lane.app``, the lane's fallback).
Status, content type, authentication header and JSON body must be the same; for writes that
succeed, the fields that are new on every write (ids, versions, times) are masked first.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deconfliction.api.app import create_app
from deconfliction.api.lane import Hands
from deconfliction.config import Settings
from deconfliction.runtime import Runtime
from deconfliction.security import READ
from tests.api.conftest import circle_volume

FRESH = {"id", "version", "created_at", "updated_at", "time"}


def masked(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "*" if k in FRESH else masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v) for v in value]
    return value


class Twin:
    """One service, two ways in."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.app = create_app(runtime)
        self.fell_back: list[str] = []
        fastapi_alone = self.app.lane.app

        async def recording(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                self.fell_back.append(f"{scope['method']} {scope['path']}")
            await fastapi_alone(scope, receive, send)

        self.app.lane.app = recording
        self.lane = TestClient(self.app, raise_server_exceptions=False)
        self.plain = TestClient(fastapi_alone, raise_server_exceptions=False)
        self.tokens: dict[str, str] = {}
        for name in ("blue", "red"):
            party = runtime.strategic.add_party(name)
            self.tokens[name] = runtime.tokens.issue(party.id)
        blue = runtime.strategic.find_party("blue")
        self.tokens["blue-reader"] = runtime.tokens.issue(blue.id, (READ,))

    def auth(self, who: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}

    def both(
        self, method: str, path: str, who: str | None = "blue", *, mask: bool = False, **kw: Any
    ) -> Any:
        headers = {**self.auth(who), **kw.pop("headers", {})}
        via_lane = self.lane.request(method, path, headers=headers, **kw)
        via_plain = self.plain.request(method, path, headers=headers, **kw)
        assert _answer(via_lane, mask) == _answer(via_plain, mask), (method, path)
        return via_lane


def _answer(response: Any, mask: bool) -> tuple[Any, ...]:
    try:
        body: Any = response.json()
    except ValueError:
        body = response.content
    return (
        response.status_code,
        response.headers.get("content-type"),
        response.headers.get("www-authenticate"),
        masked(body) if mask and response.status_code < 300 else body,
    )


@pytest.fixture
def twin(tmp_path: Path) -> Iterator[Twin]:
    runtime = Runtime.open(Settings(db=str(tmp_path / "lane.db")))
    t = Twin(runtime)
    with t.lane, t.plain:
        yield t
    runtime.close()


def filing(**volume: Any) -> dict[str, Any]:
    return {"volumes": [circle_volume(**volume)], "priority": 0}


def test_a_filing_is_answered_alike_and_served_by_the_lane(twin: Twin) -> None:
    answer = twin.both("POST", "/v1/operations", json=filing(), mask=True)
    assert answer.status_code == 201
    assert twin.fell_back == []  # the lane served it


def test_reads_are_answered_alike(twin: Twin) -> None:
    mine = twin.lane.post("/v1/operations", json=filing(), headers=twin.auth("blue")).json()
    op = mine["operation"]
    for who in ("blue", "red", "blue-reader"):
        twin.both("GET", f"/v1/operations/{op['id']}", who)  # details for the owner only
    twin.both("GET", "/v1/operations/no-such-operation")
    area = {"volumes": [circle_volume(radius_m=20_000.0)]}
    twin.both("POST", "/v1/operations/query", "red", json=area)
    answer = twin.both("POST", "/v1/operations/conflicts", "red", json=area)
    assert [c["id"] for c in answer.json()["conflicts"]] == [op["id"]]


def test_refusals_are_answered_alike(twin: Twin) -> None:
    blue = twin.lane.post("/v1/operations", json=filing(), headers=twin.auth("blue")).json()
    op = blue["operation"]
    refused = twin.both("POST", "/v1/operations", "red", json=filing())  # unaware of blue's
    assert refused.status_code == 409 and refused.json()["code"] == "missing_key"
    stale = {**filing(), "version": "0" * len(op["version"]), "state": "Accepted"}
    assert twin.both("PUT", f"/v1/operations/{op['id']}", json=stale).status_code == 409
    assert twin.both("PUT", f"/v1/operations/{op['id']}", "red", json=stale).status_code == 403
    assert twin.both("PUT", "/v1/operations/nope", json=stale).status_code == 404
    backwards = filing(start=7_200.0, end=3_600.0)
    assert twin.both("POST", "/v1/operations", json=backwards).status_code == 400


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Basic Ymx1ZTpibHVl"}, 401),
        ({"Authorization": "Bearer"}, 401),
        ({"Authorization": "Bearer not-a-token"}, 401),
    ],
)
def test_authentication_is_answered_alike(twin: Twin, headers: dict[str, str], status: int) -> None:
    for method, path in (("POST", "/v1/operations"), ("GET", "/v1/operations/x")):
        body = filing() if method == "POST" else None
        answer = twin.both(method, path, None, headers=headers, json=body)
        assert answer.status_code == status


def test_a_read_only_token_may_look_but_not_file(twin: Twin) -> None:
    assert twin.both("POST", "/v1/operations", "blue-reader", json=filing()).status_code == 403
    area = {"volumes": [circle_volume()]}
    assert (
        twin.both("POST", "/v1/operations/conflicts", "blue-reader", json=area).status_code == 200
    )


@pytest.mark.parametrize(
    ("content", "content_type", "handed_over"),
    [
        (b"{not json", "application/json", True),
        (b"\xff\xfe", "application/json", True),
        (b"", "application/json", True),
        (b'{"volumes": []}', "text/plain", True),
        (b'{"volumes": []}', None, True),
        (b"[1, 2", "application/merge-patch+json", True),
        (b"[" * 10_000 + b"]" * 10_000, "application/json", True),  # deeper than json recurses
        (b"1" * 5_000, "application/json", True),  # more digits than Python makes an int of
        (b"NaN", "application/json", False),  # JSON to Python's parser, refused by the schema
    ],
)
def test_bodies_fastapi_must_judge_are_handed_to_it(
    twin: Twin, content: bytes, content_type: str | None, handed_over: bool
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    answer = twin.both("POST", "/v1/operations", content=content, headers=headers)
    assert answer.status_code in (400, 422)
    assert twin.fell_back == (["POST /v1/operations"] if handed_over else [])


def test_a_body_too_large_is_refused_alike_with_or_without_its_length(twin: Twin) -> None:
    limit = twin.runtime.strategic.policy.limits.max_request_bytes
    big = b'{"volumes": [' + b" " * limit + b"]}"
    headers = {"Content-Type": "application/json"}
    assert twin.both("POST", "/v1/operations", content=big, headers=headers).status_code == 413

    def chunks() -> Iterator[bytes]:
        yield big[: limit // 2]
        yield big[limit // 2 :]

    for client in (twin.lane, twin.plain):
        answer = client.post(
            "/v1/operations", content=chunks(), headers={**headers, **twin.auth("blue")}
        )
        assert answer.status_code == 413 and answer.json()["code"] == "too_large"


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
EDITS = [
    ("volumes",),
    ("priority",),
    ("state",),
    ("key",),
    ("details",),
    ("volumes", 0, "footprint"),
    ("volumes", 0, "footprint", "circle", "radius_m"),
    ("volumes", 0, "footprint", "circle", "center", "lat"),
    ("volumes", 0, "altitude_lower_m"),
    ("volumes", 0, "start"),
    ("volumes", 0, "end"),
    ("unknown",),
]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    edit=st.sampled_from(EDITS),
    value=st.one_of(st.just("<delete>"), JSON),
    path=st.sampled_from(["/v1/operations", "/v1/operations/conflicts"]),
)
def test_any_edit_of_a_filing_is_answered_alike(
    twin: Twin, edit: tuple[Any, ...], value: Any, path: str
) -> None:
    body: Any = filing()
    here = body
    for step in edit[:-1]:
        here = here[step]
    if value == "<delete>":
        here.pop(edit[-1], None)
    else:
        here[edit[-1]] = value
    answer = twin.both("POST", path, json=body, mask=True)
    assert answer.status_code < 500


def test_the_lanes_threads_answer_raise_and_never_grow_past_their_number() -> None:
    hands = Hands(3, "test")
    running = 0
    most = 0
    lock = threading.Lock()
    release = threading.Event()

    def blocking(i: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        release.wait(5)
        with lock:
            running -= 1
        return i * i

    def fails() -> None:
        raise ValueError("from the thread")

    async def main() -> list[int]:
        calls = [asyncio.ensure_future(hands.run(lambda i=i: blocking(i))) for i in range(10)]
        await asyncio.sleep(0.05)
        asyncio.get_running_loop().call_later(0.05, release.set)
        results = await asyncio.gather(*calls)
        with pytest.raises(ValueError, match="from the thread"):
            await hands.run(fails)
        abandoned = asyncio.ensure_future(hands.run(lambda: release.wait(5)))
        await asyncio.sleep(0)
        abandoned.cancel()  # its answer arrives to nobody, harmlessly
        assert await hands.run(lambda: 7) == 7
        return results

    try:
        assert asyncio.run(main()) == [i * i for i in range(10)]
        assert most == 3  # ten calls at once, three threads
    finally:
        hands.close()


def test_the_lanes_threads_start_again_after_a_close_even_one_that_came_mid_job() -> None:
    hands = Hands(1, "test")
    started, release = threading.Event(), threading.Event()

    def slow() -> str:
        started.set()
        release.wait(5)
        return "slow"

    async def main() -> list[str]:
        pending = asyncio.ensure_future(hands.run(slow))
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
        hands.close()  # the one thread is busy: it finishes its job, then leaves
        release.set()
        first = await pending
        return [first, await hands.run(lambda: "after"), await hands.run(lambda: "again")]

    try:
        assert asyncio.run(main()) == ["slow", "after", "again"]
    finally:
        hands.close()
