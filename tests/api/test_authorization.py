"""Who may call what: every route of the application × every way a token can be wrong.

The route table below classifies each route by the scope it needs; ``app.routes`` is compared
with it, so a new endpoint fails this file until it is classified — and from then on it is in
the whole matrix. Refusals: no token 401 ``missing_token``; expired 401 ``token_expired``;
another audience 401 ``wrong_audience``; an unknown key, a forged or malformed token 401
``invalid_token``; a registered party without the scope 403 ``missing_scope``; a valid token for
a party nobody registered 403 ``unregistered_party``. Every refusal is JSON ``{code, message,
details}``; a 401 carries ``WWW-Authenticate: Bearer``.

Another party's resources: its operations can be read (the reference, never the details) but not
changed (403 ``forbidden``); its subscriptions and messages do not exist for you (404).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from starlette.routing import Route

from deconfliction.api.app import create_app
from deconfliction.config import Settings
from deconfliction.runtime import Runtime
from deconfliction.security import ADMIN, READ, WRITE, TokenAuthority

from .conftest import Api, circle_volume

PUBLIC = "public"

ROUTES: dict[tuple[str, str], str] = {
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/docs"): PUBLIC,
    ("GET", "/docs/oauth2-redirect"): PUBLIC,
    ("GET", "/redoc"): PUBLIC,
    ("GET", "/v1/health"): PUBLIC,
    ("GET", "/v1/me"): READ,
    ("GET", "/v1/parties"): READ,
    ("POST", "/v1/parties"): ADMIN,
    ("POST", "/v1/operations"): WRITE,
    ("GET", "/v1/operations"): READ,
    ("GET", "/v1/operations/{operation_id}"): READ,
    ("PUT", "/v1/operations/{operation_id}"): WRITE,
    ("DELETE", "/v1/operations/{operation_id}"): WRITE,
    ("POST", "/v1/operations/query"): READ,
    ("POST", "/v1/operations/conflicts"): READ,
    ("POST", "/v1/subscriptions"): READ,
    ("GET", "/v1/subscriptions"): READ,
    ("GET", "/v1/subscriptions/{subscription_id}"): READ,
    ("DELETE", "/v1/subscriptions/{subscription_id}"): READ,
    ("GET", "/v1/events"): READ,
    ("GET", "/v1/events/stream"): READ,
    ("POST", "/v1/messages"): WRITE,
    ("GET", "/v1/messages/{message_id}"): READ,
    ("POST", "/v1/messages/{message_id}/ack"): WRITE,
    ("POST", "/v1/heartbeat"): READ,
    ("GET", "/v1/liveness"): READ,
    ("GET", "/v1/settings"): READ,
    ("PUT", "/v1/settings"): WRITE,
    ("PUT", "/v1/agreements/lead-time"): ADMIN,
    ("GET", "/v1/audit/export"): READ,
    ("GET", "/v1/audit/verify"): ADMIN,
    ("POST", "/v1/tracks"): WRITE,
    ("POST", "/v1/tracks/stream"): WRITE,
}
"""(method, path) -> the scope it needs (``admin`` holds every scope), or public."""

PROTECTED = sorted(route for route, scope in ROUTES.items() if scope != PUBLIC)

PROBE_HEADERS: dict[tuple[str, str], dict[str, str]] = {
    # With a good token the stream would never end: a bad Last-Event-ID makes it answer 400
    # right after authorization, which is all the allowed-scope check needs.
    ("GET", "/v1/events/stream"): {"Last-Event-ID": "not-an-id"},
}


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One service for the whole matrix: refusals change nothing, and the allowed calls only
    heartbeat or meet 404/422."""
    runtime = Runtime.open(Settings(db=str(tmp_path_factory.mktemp("authz") / "api.db")))
    tokens, ids = {}, {}
    for name in ("blue", "red"):
        party = runtime.strategic.add_party(name)
        ids[name], tokens[name] = party.id, runtime.tokens.issue(party.id)
    with TestClient(create_app(runtime), raise_server_exceptions=False) as client:
        yield Api(client, runtime, tokens, ids)
    runtime.close()


def call(api: Api, route: tuple[str, str], authorization: str | None) -> Any:
    """The route with placeholder path parameters and an empty JSON body: authorization is
    decided before the request itself is looked at."""
    method, path = route
    headers = dict(PROBE_HEADERS.get(route, {}))
    if authorization is not None:
        headers["Authorization"] = authorization
    url = path.format(operation_id="x", subscription_id="x", message_id="x")
    body = {} if method in ("POST", "PUT") else None
    return api.client.request(method, url, json=body, headers=headers)


def refused(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "message", "details"}, body
    assert body["code"] == code, body
    assert isinstance(body["message"], str) and body["message"]
    if status == 401:
        assert response.headers["WWW-Authenticate"] == "Bearer"


def bearer(token: str) -> str:
    return f"Bearer {token}"


def test_every_route_is_classified(shared: Api) -> None:
    found: set[tuple[str, str]] = set()
    for route in shared.client.app.routes:
        assert isinstance(route, Route), f"{route!r}: not an HTTP route; classify it here"
        methods = route.methods or set()
        found |= {(m, route.path) for m in methods - {"HEAD"}}
    unclassified = found - ROUTES.keys()
    assert not unclassified, f"classify these routes in ROUTES: {sorted(unclassified)}"
    assert not ROUTES.keys() - found, f"routes that no longer exist: {ROUTES.keys() - found}"


@pytest.mark.parametrize("route", sorted(r for r, s in ROUTES.items() if s == PUBLIC), ids=str)
def test_public_routes_need_no_token_and_ignore_a_bad_one(
    shared: Api, route: tuple[str, str]
) -> None:
    assert call(shared, route, None).status_code == 200
    assert call(shared, route, "Bearer not.a.jwt").status_code == 200


def expired(api: Api) -> str:
    return api.runtime.tokens.issue(api.ids["blue"], now=time.time() - 10 * 86_400, lifetime_s=60)


def wrong_audience(api: Api) -> str:
    other = TokenAuthority(None, [], audience="someone-else", issuer="x")
    other._signing_key = api.runtime.tokens._signing_key  # our key, another service's audience
    return other.issue(api.ids["blue"], (READ, WRITE, ADMIN))


def unknown_key(api: Api) -> str:
    stranger = TokenAuthority(
        ec.generate_private_key(ec.SECP256R1()), [], audience="deconfliction", issuer="x"
    )
    return stranger.issue(api.ids["blue"], (READ, WRITE, ADMIN))


def expired_unknown_key(api: Api) -> str:
    stranger = TokenAuthority(
        ec.generate_private_key(ec.SECP256R1()), [], audience="deconfliction", issuer="x"
    )
    return stranger.issue(api.ids["blue"], (ADMIN,), now=time.time() - 10 * 86_400, lifetime_s=60)


def claims(api: Api) -> dict[str, Any]:
    return {
        "sub": api.ids["blue"],
        "aud": "deconfliction",
        "exp": int(time.time()) + 600,
        "scope": f"{READ} {WRITE} {ADMIN}",
    }


def unsigned(api: Api) -> str:
    return jwt.encode(claims(api), key=None, algorithm="none")


def tampered(api: Api) -> str:
    """A real token of blue's with its scope claim rewritten to admin (the signature no longer
    matches)."""
    header, _, signature = api.runtime.tokens.issue(api.ids["blue"], (READ,)).split(".")
    payload = jwt.utils.base64url_encode(json.dumps(claims(api)).encode()).decode()
    return f"{header}.{payload}.{signature}"


def no_subject(api: Api) -> str:
    token_claims = {k: v for k, v in claims(api).items() if k != "sub"}
    return jwt.encode(token_claims, api.runtime.tokens._signing_key, algorithm="ES256")


BAD_TOKENS: dict[str, tuple[Callable[[Api], str | None], int, str]] = {
    "missing": (lambda api: None, 401, "missing_token"),
    "not bearer": (lambda api: f"Basic {api.tokens['blue']}", 401, "missing_token"),
    "empty bearer": (lambda api: "Bearer ", 401, "missing_token"),
    "expired": (lambda api: bearer(expired(api)), 401, "token_expired"),
    "wrong audience": (lambda api: bearer(wrong_audience(api)), 401, "wrong_audience"),
    "unknown key": (lambda api: bearer(unknown_key(api)), 401, "invalid_token"),
    "expired, unknown key": (lambda api: bearer(expired_unknown_key(api)), 401, "invalid_token"),
    "alg none": (lambda api: bearer(unsigned(api)), 401, "invalid_token"),
    "tampered claims": (lambda api: bearer(tampered(api)), 401, "invalid_token"),
    "no subject": (lambda api: bearer(no_subject(api)), 401, "invalid_token"),
    "garbage": (lambda api: "Bearer not.a.jwt", 401, "invalid_token"),
    "unregistered party": (
        lambda api: bearer(api.runtime.tokens.issue("ghost", (READ, WRITE, ADMIN))),
        403,
        "unregistered_party",
    ),
}


@pytest.mark.parametrize("case", list(BAD_TOKENS))
@pytest.mark.parametrize("route", PROTECTED, ids=str)
def test_a_bad_token_is_refused_on_every_protected_route(
    shared: Api, route: tuple[str, str], case: str
) -> None:
    make, status, code = BAD_TOKENS[case]
    refused(call(shared, route, make(shared)), status, code)


ALL_SCOPES = (READ, WRITE, ADMIN)


@pytest.mark.parametrize("route", PROTECTED, ids=str)
def test_a_token_without_the_scope_is_403_and_with_it_passes(
    shared: Api, route: tuple[str, str]
) -> None:
    needed = ROUTES[route]
    party = shared.ids["blue"]
    lacking = tuple(s for s in ALL_SCOPES if s not in (needed, ADMIN))
    for scopes in {lacking, ()}:
        token = shared.runtime.tokens.issue(party, scopes)
        refused(call(shared, route, bearer(token)), 403, "missing_scope")
    for scopes in {(needed,), (ADMIN,)}:
        answer = call(shared, route, bearer(shared.runtime.tokens.issue(party, scopes)))
        assert answer.status_code not in (401, 403), (scopes, answer.text)
        assert answer.status_code < 500, answer.text


# Another party's resources ------------------------------------------------------------------


def test_another_partys_operation_can_be_read_but_not_changed(api: Api) -> None:
    filed = api.post(
        "/v1/operations", "blue", {"volumes": [circle_volume()], "details": {"purpose": "secret"}}
    )
    op = filed.json()["operation"]
    url = f"/v1/operations/{op['id']}"
    update = {"version": op["version"], "volumes": [circle_volume()], "state": "Activated"}
    admin_of_red = bearer(api.runtime.tokens.issue(api.ids["red"], ALL_SCOPES))
    for authorization in (bearer(api.tokens["red"]), admin_of_red):
        headers = {"Authorization": authorization}
        seen = api.client.get(url, headers=headers)
        assert seen.status_code == 200 and seen.json()["details"] is None
        # Ownership is not a scope: red's admin token changes nothing of blue's either.
        refused(api.client.put(url, json=update, headers=headers), 403, "forbidden")
        refused(
            api.client.put(url, json={**update, "version": "stale"}, headers=headers),
            403,
            "forbidden",
        )
        gone = api.client.delete(url, params={"version": op["version"]}, headers=headers)
        refused(gone, 403, "forbidden")
    mine = api.client.get(url, headers=api.as_("blue")).json()
    assert mine["version"] == op["version"] and mine["state"] == "Accepted"
    assert mine["details"]["purpose"] == "secret"


def test_another_partys_subscription_does_not_exist_for_you(api: Api) -> None:
    sub = api.post("/v1/subscriptions", "blue", {"volumes": [circle_volume()]}).json()
    url = f"/v1/subscriptions/{sub['id']}"
    refused(api.client.get(url, headers=api.as_("red")), 404, "not_found")
    gone = api.client.delete(url, params={"version": sub["version"]}, headers=api.as_("red"))
    refused(gone, 404, "not_found")
    listed = api.client.get("/v1/subscriptions", headers=api.as_("red")).json()
    assert listed["subscriptions"] == []
    assert api.client.get(url, headers=api.as_("blue")).json()["version"] == sub["version"]


def test_a_message_exists_only_for_its_sender_and_recipients(api: Api) -> None:
    green = api.runtime.strategic.add_party("green")
    api.tokens["green"], api.ids["green"] = api.runtime.tokens.issue(green.id), green.id
    sent = api.post(
        "/v1/messages", "blue", {"to": [api.ids["red"]], "text": "climbing", "ack_by": None}
    )
    assert sent.status_code == 201, sent.text
    url = f"/v1/messages/{sent.json()['id']}"
    refused(api.client.get(url, headers=api.as_("green")), 404, "not_found")
    refused(api.client.post(f"{url}/ack", headers=api.as_("green")), 404, "not_found")
    # The sender reads every receipt but cannot acknowledge for the recipient.
    assert api.client.get(url, headers=api.as_("blue")).status_code == 200
    refused(api.client.post(f"{url}/ack", headers=api.as_("blue")), 404, "not_found")
    reply = {"to": [api.ids["blue"]], "text": "seen", "reply_to": sent.json()["id"]}
    refused(api.post("/v1/messages", "green", reply), 404, "not_found")
    assert api.client.post(f"{url}/ack", headers=api.as_("red")).status_code == 200


def test_reports_under_another_partys_operation_are_403(api: Api) -> None:
    op = api.post("/v1/operations", "blue", {"volumes": [circle_volume()]}).json()["operation"]
    report = {
        "aircraft_id": "R1",
        "time": time.time(),
        "lat": 35.3,
        "lon": 36.7,
        "altitude_m": 1500.0,
        "ground_speed_mps": 100.0,
        "track_deg": 0.0,
        "vertical_rate_mps": 0.0,
        "operation_id": op["id"],
    }
    refused(api.post("/v1/tracks", "red", {"reports": [report]}), 403, "not_your_operation")
    stream = api.client.post(
        "/v1/tracks/stream",
        content=json.dumps(report).encode() + b"\n",
        headers={**api.as_("red"), "Content-Type": "application/x-ndjson"},
    )
    refused(stream, 403, "not_your_operation")
    assert api.post("/v1/tracks", "blue", {"reports": [report]}).status_code == 202


def test_the_event_feed_and_settings_are_your_own(api: Api) -> None:
    api.post("/v1/subscriptions", "blue", {"volumes": [circle_volume(radius_m=50_000)]})
    api.client.put(
        "/v1/settings", json={"webhook_url": "https://blue.example/hook"}, headers=api.as_("blue")
    )
    assert api.post("/v1/operations", "red", {"volumes": [circle_volume()]}).status_code == 201
    assert [
        e["kind"] for e in api.client.get("/v1/events", headers=api.as_("blue")).json()["events"]
    ] == ["operation"]
    assert api.client.get("/v1/events", headers=api.as_("red")).json()["events"] == []
    theirs = api.client.get("/v1/settings", headers=api.as_("red")).json()
    assert theirs["webhook_url"] is None and theirs["webhook_secret"] is None
