"""Schemathesis against the service's own OpenAPI document, in process (ASGI, no network).

Every operation is called, authenticated with an admin token (which holds every scope), with
requests generated from the schema — valid ones (positive) and ones that break it (negative) —
and every answer must be never a 5xx, of a documented status and content type, and with a body
that matches the schema documented for that status; a request that breaks the schema must be
refused. Our hot routes serialise their views straight to JSON (``fast_json``): the response
models only document them, so this is what keeps the two in step.

Schemathesis's own pytest plugin (``from_fixture(...).parametrize()``) does not run under
pytest 9, so each operation gets a plain Hypothesis test over ``operation.as_strategy``. Bounded:
derandomized, a few examples per operation and mode.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from deconfliction.api.app import create_app
from deconfliction.config import Settings
from deconfliction.core.hotline import MessageKind
from deconfliction.formats import parse_volumes
from deconfliction.runtime import Runtime
from deconfliction.security import ADMIN, READ, WRITE
from deconfliction.services.strategic import Filing

from .conftest import circle_volume, iso

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
NEGATIVE_CHECKS = [*CHECKS, negative_data_rejection]
"""A request that breaks the schema is refused (4xx). Not ``positive_data_acceptance``: a
request of the right shape may still be refused with 400 for its content (a start after the
end, a self-intersecting polygon), which is the design (schemas.py)."""

EXAMPLES = 25
"""Per operation and mode: 2 x 28 x 25 requests, about 30 s on two cores."""

EXCLUDED = {
    # An endless Server-Sent Events stream: a call never returns, so nothing can judge its
    # answer. Its authorization is in test_authorization.py, its content in test_stream.py.
    ("GET", "/v1/events/stream"),
}


def _operations() -> list[tuple[str, str]]:
    """Every (method, path) of the OpenAPI document, read from a throwaway service."""
    with tempfile.TemporaryDirectory() as directory:
        runtime = Runtime.open(Settings(db=str(Path(directory) / "spec.db")))
        try:
            paths = create_app(runtime).openapi()["paths"]
        finally:
            runtime.close()
    return sorted((method.upper(), path) for path, item in paths.items() for method in item)


OPERATIONS = _operations()


@dataclass
class Service:
    runtime: Runtime
    tokens: dict[str, str]
    """Blue's token holds every scope (admin included); red's the default ones."""
    ids: dict[str, str]

    def auth(self, party: str = "blue") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[party]}"}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    runtime = Runtime.open(Settings(db=str(tmp_path_factory.mktemp("st") / "api.db")))
    blue = runtime.strategic.add_party("blue")
    red = runtime.strategic.add_party("red")
    tokens = {
        "blue": runtime.tokens.issue(blue.id, (READ, WRITE, ADMIN)),
        "red": runtime.tokens.issue(red.id),
    }
    yield Service(runtime, tokens, {"blue": blue.id, "red": red.id})
    runtime.close()


@pytest.fixture(scope="module")
def api_schema(service: Service) -> schemathesis.BaseSchema:
    # Unknown query parameters are ignored, as HTTP services do; everything else that breaks
    # the schema must be refused.
    config = schemathesis.Config.from_dict(
        {"seed": 20260501, "generation": {"allow-extra-parameters": False}}
    )
    return schemathesis.openapi.from_asgi(
        "/openapi.json", create_app(service.runtime), config=config
    )


@pytest.fixture(scope="module")
def known(service: Service) -> dict[str, str]:
    """Real ids of blue's (the caller's) resources, so that generated requests reach past 404."""
    runtime, red = service.runtime, service.ids["red"]
    volumes = parse_volumes([circle_volume(lat=10.0, lon=10.0)])
    filed = runtime.strategic.file_operation(service.ids["blue"], Filing(volumes))
    subscription = runtime.strategic.subscribe(service.ids["blue"], volumes)
    message = runtime.hotline.send(service.ids["blue"], [red], MessageKind.TEXT, "hello")
    return {
        "operation_id": filed.operation.id,
        "subscription_id": subscription.id,
        "message_id": message.id,
    }


def test_the_document_is_the_one_tested(api_schema: schemathesis.BaseSchema) -> None:
    served = {
        (result.ok().method.upper(), result.ok().path) for result in api_schema.get_all_operations()
    }
    assert served == set(OPERATIONS)


@pytest.mark.parametrize(
    "mode", [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE], ids=str
)
@pytest.mark.parametrize("operation", [op for op in OPERATIONS if op not in EXCLUDED], ids=" ".join)
def test_every_operation_answers_as_documented(
    api_schema: schemathesis.BaseSchema,
    service: Service,
    known: dict[str, str],
    operation: tuple[str, str],
    mode: schemathesis.GenerationMode,
) -> None:
    method, path = operation
    headers = service.auth()
    checks = CHECKS if mode == schemathesis.GenerationMode.POSITIVE else NEGATIVE_CHECKS
    api_operation = api_schema[path][method]
    cases = api_operation.as_strategy(mode)
    wanted = {name: value for name, value in known.items() if "{" + name + "}" in path}
    if wanted:  # half the time, an id that exists
        cases = st.one_of(cases, api_operation.as_strategy(mode, path_parameters=wanted))

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases)
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=headers, checks=checks)

    try:
        check()
    except Unsatisfiable:
        pytest.skip("nothing in this operation can be made invalid (no parameter, no body)")


def test_a_whole_session_answers_as_documented(
    api_schema: schemathesis.BaseSchema, service: Service
) -> None:
    """Generated requests rarely get past validation; this walks every operation with real data
    (filed and conflicting operations, notices, subscriptions, messages, receipts, tracks,
    events of every kind) and checks each answer against the document the same way."""
    called: set[tuple[str, str]] = set()

    def call(method: str, path: str, expect: int, party: str = "blue", **parts: Any) -> Any:
        case = api_schema[path][method].Case(**parts)
        response = case.call(headers=service.auth(party))
        case.validate_response(response, checks=CHECKS)
        assert response.status_code == expect, (method, path, response.text)
        called.add((method, path))
        return response.json() if response.content else None

    blue, red = service.ids["blue"], service.ids["red"]
    mine = call(
        "POST",
        "/v1/operations",
        201,
        body={"volumes": [circle_volume()], "details": {"purpose": "survey", "aircraft": ["B1"]}},
    )["operation"]
    found = call(
        "POST", "/v1/operations/conflicts", 200, "red", body={"volumes": [circle_volume(start=300)]}
    )
    assert [c["id"] for c in found["conflicts"]] == [mine["id"]]
    refused = call(
        "POST", "/v1/operations", 409, "red", body={"volumes": [circle_volume(start=300)]}
    )
    assert refused["code"] == "missing_key"
    theirs = call(
        "POST",
        "/v1/operations",
        201,
        "red",
        body={"volumes": [circle_volume(start=300)], "key": [mine["version"]], "priority": 0},
    )
    assert theirs["conflicts"] and theirs["late_notice_to"] == [blue]
    op = theirs["operation"]["id"]
    assert (
        call("GET", "/v1/operations/{operation_id}", 200, path_parameters={"operation_id": op})[
            "details"
        ]
        is None
    )
    call("GET", "/v1/operations", 200, query={"include_ended": True, "limit": 10})
    call("POST", "/v1/operations/query", 200, body={"volumes": [circle_volume()]})
    sub = call("POST", "/v1/subscriptions", 201, body={"volumes": [circle_volume(radius_m=50_000)]})
    call("GET", "/v1/subscriptions", 200)
    call(
        "GET",
        "/v1/subscriptions/{subscription_id}",
        200,
        path_parameters={"subscription_id": sub["id"]},
    )
    updated = call(
        "PUT",
        "/v1/operations/{operation_id}",
        200,
        path_parameters={"operation_id": mine["id"]},
        body={
            "version": mine["version"],
            "volumes": [circle_volume(radius_m=6_000)],
            "state": "Activated",
            "key": [theirs["operation"]["version"]],
        },
    )["operation"]
    stale = call(
        "DELETE",
        "/v1/operations/{operation_id}",
        409,
        path_parameters={"operation_id": mine["id"]},
        query={"version": mine["version"]},
    )
    assert stale["code"] == "version_mismatch"

    message = call(
        "POST",
        "/v1/messages",
        201,
        body={
            "to": [red],
            "kind": "warning",
            "text": "climbing",
            "urgency": "immediate",
            "ack_by": iso(600),
            "operation_id": op,
        },
    )
    call(
        "GET",
        "/v1/messages/{message_id}",
        200,
        "red",
        path_parameters={"message_id": message["id"]},
    )
    call(
        "POST",
        "/v1/messages/{message_id}/ack",
        200,
        "red",
        path_parameters={"message_id": message["id"]},
    )
    receipts = call(
        "GET", "/v1/messages/{message_id}", 200, path_parameters={"message_id": message["id"]}
    )["receipts"]
    assert receipts[0]["acked_at"] is not None
    call("POST", "/v1/heartbeat", 200)
    call("GET", "/v1/liveness", 200)
    call(
        "PUT",
        "/v1/settings",
        200,
        body={
            "webhook_url": "https://blue.example/hook",
            "escalation_parties": [red],
            "rotate_secret": True,
        },
    )
    call("GET", "/v1/settings", 200)
    call(
        "PUT",
        "/v1/agreements/lead-time",
        204,
        body={"party_a": blue, "party_b": red, "minutes": 30},
    )
    call("GET", "/v1/audit/export", 200, query={"from": iso(-3_600), "to": iso(3_600)})
    call("GET", "/v1/audit/verify", 200)
    report = {
        "aircraft_id": "B1",
        "time": time.time(),
        "lat": 35.3,
        "lon": 36.7,
        "altitude_m": 1500.0,
        "ground_speed_mps": 100.0,
        "track_deg": 90.0,
        "vertical_rate_mps": 0.0,
        "operation_id": mine["id"],
    }
    call("POST", "/v1/tracks", 202, body={"reports": [report]})
    call("POST", "/v1/tracks/stream", 200, query={"on_error": "skip"})
    call("POST", "/v1/parties", 201, body={"name": "green"})
    call("GET", "/v1/parties", 200)
    call("GET", "/v1/me", 200)
    for party in ("blue", "red"):
        kinds = {
            e["kind"] for e in call("GET", "/v1/events", 200, party, query={"limit": 100})["events"]
        }
        assert kinds, party
    call(
        "DELETE",
        "/v1/subscriptions/{subscription_id}",
        200,
        path_parameters={"subscription_id": sub["id"]},
        query={"version": sub["version"]},
    )
    call(
        "DELETE",
        "/v1/operations/{operation_id}",
        200,
        path_parameters={"operation_id": mine["id"]},
        query={"version": updated["version"]},
    )
    call("GET", "/v1/health", 200)
    assert called == set(OPERATIONS) - EXCLUDED
