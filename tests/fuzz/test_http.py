"""Fuzz the HTTP faces that take free-form bodies: whatever bytes or JSON a client sends to
``POST /v1/operations``, ``/v1/operations/query``, ``/v1/tracks`` or ``/v1/tracks/stream``,
the answer is never a 5xx, and every refusal is JSON ``{code, message, details}``."""

from __future__ import annotations

import json
import time
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.conftest import Api, circle_volume

from . import strategies as fz

HTTP = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

RAW = (
    b"",
    b"null",
    b"{",
    b"[]",
    b"\xff\xfe",
    b'"\\ud800"',
    b"1" * 5_000,  # more digits than Python will convert to an int: json.loads raises ValueError
    b'{"reports": [{"lat": ' + b"9" * 5_000 + b"}]}",
    b'{"volumes": [{"altitude_lower_m": ' + b"9" * 5_000 + b"}]}",
    b"NaN",
    b'{"volumes": -Infinity}',
    b'{"reports": [' + b"[" * 10_000 + b"]" * 10_000 + b"]}",  # deeper than the parser recurses
)


def body_bytes(data: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    """JSON text (with NaN, Infinity and long integers, as Python writes them), raw bytes, or
    byte strings known to trip parsers."""
    return st.one_of(
        data.map(lambda x: json.dumps(x).encode()),
        st.binary(max_size=64),
        st.sampled_from(RAW),
    )


operation_bodies = st.one_of(
    st.fixed_dictionaries(
        {"volumes": fz.volumes},
        optional={
            "state": fz.scalars,
            "priority": fz.scalars,
            "key": fz.json_like,
            "details": fz.json_like,
        },
    ),
    st.fixed_dictionaries(
        {"volumes": st.lists(fz.schema_volume, min_size=1, max_size=2)},
        optional={"priority": st.integers(0, 1_000), "state": st.just("Activated")},
    ),
    st.fixed_dictionaries({"volumes": st.lists(st.just(circle_volume()), max_size=1)}),
    fz.json_like,
)


def refused_properly(response: Any) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body["code"], str) and body["code"], body
        assert isinstance(body["message"], str) and body["message"], body
        assert "details" in body


def post(api: Api, path: str, content: bytes, **params: str) -> Any:
    headers = {**api.as_("blue"), "Content-Type": "application/json"}
    return api.client.post(path, content=content, headers=headers, params=params)


@HTTP
@given(body=body_bytes(operation_bodies))
def test_any_operation_body_is_answered_without_a_5xx(api: Api, body: bytes) -> None:
    refused_properly(post(api, "/v1/operations", body))


@HTTP
@given(body=body_bytes(st.fixed_dictionaries({"volumes": fz.volumes})))
def test_any_area_query_is_answered_without_a_5xx(api: Api, body: bytes) -> None:
    refused_properly(post(api, "/v1/operations/query", body))


@HTTP
@given(body=body_bytes(fz.batches(time.time)))
def test_any_track_batch_is_answered_without_a_5xx(api: Api, body: bytes) -> None:
    refused_properly(post(api, "/v1/tracks", body))


@HTTP
@given(
    lines=st.lists(body_bytes(fz.batches(time.time)), max_size=4),
    on_error=st.sampled_from(["stop", "skip"]),
)
def test_any_track_stream_is_answered_without_a_5xx(
    api: Api, lines: list[bytes], on_error: str
) -> None:
    body = b"\n".join(lines)
    refused_properly(post(api, "/v1/tracks/stream", body, on_error=on_error))
