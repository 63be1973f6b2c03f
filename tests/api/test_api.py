"""The native HTTP API: every status a client can provoke, and the strategic flow end to end."""

from __future__ import annotations

import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi.testclient import TestClient

from deconfliction.api.app import create_app
from deconfliction.config import Settings
from deconfliction.runtime import Runtime
from deconfliction.security import TokenAuthority

from .conftest import Api, circle_volume, iso


def test_health_needs_no_token_and_openapi_and_docs_are_served(api: Api) -> None:
    assert api.client.get("/v1/health").json()["status"] == "ok"
    spec = api.client.get("/openapi.json").json()
    assert "/v1/operations" in spec["paths"]
    assert api.client.get("/docs").status_code == 200


def test_file_then_read_back_with_details_for_the_owner_only(api: Api) -> None:
    body = {
        "volumes": [circle_volume()],
        "priority": 2,
        "details": {"purpose": "training", "aircraft": ["B1"]},
    }
    filed = api.post("/v1/operations", "blue", body)
    assert filed.status_code == 201, filed.text
    op = filed.json()["operation"]
    assert (
        op["state"] == "Accepted" and op["priority"] == 2 and op["details"]["purpose"] == "training"
    )
    mine = api.client.get(f"/v1/operations/{op['id']}", headers=api.as_("blue")).json()
    theirs = api.client.get(f"/v1/operations/{op['id']}", headers=api.as_("red")).json()
    assert mine["details"]["aircraft"] == ["B1"]
    assert theirs["details"] is None
    assert theirs["version"] == op["version"] and theirs["volumes"] == op["volumes"]


def test_geojson_features_are_accepted(api: Api) -> None:
    feature = {
        "type": "Feature",
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[36.6, 35.2], [36.8, 35.2], [36.8, 35.4], [36.6, 35.4], [36.6, 35.2]]],
        },
        "properties": {
            "altitude_lower_ft": 10_000,
            "altitude_upper_ft": 12_000,
            "start": iso(600),
            "end": iso(4_000),
        },
    }
    filed = api.post(
        "/v1/operations", "blue", {"volumes": {"type": "FeatureCollection", "features": [feature]}}
    )
    assert filed.status_code == 201, filed.text
    volume = filed.json()["operation"]["volumes"][0]
    assert abs(volume["altitude_lower_m"] - 3048.0) < 1e-9
    assert len(volume["footprint"]["polygon"]["vertices"]) == 4


def test_missing_key_is_409_listing_exactly_the_missing_operations_then_retry_succeeds(
    api: Api,
) -> None:
    blue = api.post("/v1/operations", "blue", {"volumes": [circle_volume()]}).json()["operation"]
    refused = api.post("/v1/operations", "red", {"volumes": [circle_volume(lon=36.75)]})
    assert refused.status_code == 409
    body = refused.json()
    assert body["code"] == "missing_key"
    (missing,) = body["details"]["missing"]
    assert (missing["id"], missing["owner"], missing["version"]) == (
        blue["id"],
        api.ids["blue"],
        blue["version"],
    )
    assert missing["conflicting_volumes"] == blue["volumes"]
    retried = api.post(
        "/v1/operations", "red", {"volumes": [circle_volume(lon=36.75)], "key": [blue["version"]]}
    )
    assert retried.status_code == 201
    assert [c["id"] for c in retried.json()["conflicts"]] == [blue["id"]]
    events = api.client.get("/v1/events", headers=api.as_("blue")).json()["events"]
    assert [e["kind"] for e in events] == ["conflict"]


def test_higher_priority_conflict_is_refused_even_with_the_key(api: Api) -> None:
    blue = api.post("/v1/operations", "blue", {"volumes": [circle_volume()], "priority": 5}).json()[
        "operation"
    ]
    refused = api.post(
        "/v1/operations",
        "red",
        {"volumes": [circle_volume()], "priority": 1, "key": [blue["version"]]},
    )
    assert refused.status_code == 409 and refused.json()["code"] == "priority_conflict"


def test_update_with_a_stale_version_is_409_and_end_keeps_the_record(api: Api) -> None:
    op = api.post("/v1/operations", "blue", {"volumes": [circle_volume()]}).json()["operation"]
    update = {
        "version": op["version"],
        "volumes": [circle_volume(radius_m=6_000)],
        "state": "Activated",
    }
    first = api.client.put(f"/v1/operations/{op['id']}", json=update, headers=api.as_("blue"))
    assert first.status_code == 200 and first.json()["operation"]["state"] == "Activated"
    stale = api.client.put(f"/v1/operations/{op['id']}", json=update, headers=api.as_("blue"))
    assert stale.status_code == 409 and stale.json()["code"] == "version_mismatch"
    current = first.json()["operation"]["version"]
    ended = api.client.delete(
        f"/v1/operations/{op['id']}", params={"version": current}, headers=api.as_("blue")
    )
    assert ended.status_code == 200 and ended.json()["state"] == "Ended"
    assert (
        api.client.get(f"/v1/operations/{op['id']}", headers=api.as_("blue")).json()["state"]
        == "Ended"
    )
    query = api.post("/v1/operations/query", "blue", {"volumes": [circle_volume()]})
    assert query.json()["operations"] == []


def test_changing_another_partys_operation_is_403(api: Api) -> None:
    op = api.post("/v1/operations", "blue", {"volumes": [circle_volume()]}).json()["operation"]
    resp = api.client.delete(
        f"/v1/operations/{op['id']}", params={"version": op["version"]}, headers=api.as_("red")
    )
    assert resp.status_code == 403 and resp.json()["code"] == "forbidden"


def test_unknown_operation_is_404(api: Api) -> None:
    resp = api.client.get("/v1/operations/nope", headers=api.as_("blue"))
    assert resp.status_code == 404 and resp.json()["code"] == "not_found"


def test_bad_geometry_and_units_are_400_with_a_code(api: Api) -> None:
    cases = {
        "self_intersecting_polygon": {
            "footprint": {
                "polygon": {
                    "vertices": [
                        {"lat": 0, "lon": 0},
                        {"lat": 1, "lon": 1},
                        {"lat": 0, "lon": 1},
                        {"lat": 1, "lon": 0},
                    ]
                }
            }
        },
        "invalid_coordinates": {
            "footprint": {"circle": {"center": {"lat": 91, "lon": 0}, "radius_m": 10}}
        },
        "invalid_radius": {
            "footprint": {"circle": {"center": {"lat": 1, "lon": 0}, "radius_m": -5}}
        },
        "invalid_altitude": {"altitude_lower_m": 500, "altitude_upper_m": 100},
        "invalid_time": {"start": iso(7_200), "end": iso(3_600)},
        "degenerate_polygon": {
            "footprint": {
                "polygon": {
                    "vertices": [{"lat": 0, "lon": 0}, {"lat": 0, "lon": 0}, {"lat": 0, "lon": 0}]
                }
            }
        },
        "ends_in_past": {"start": iso(-7_200), "end": iso(-3_600)},
        "altitude_out_of_range": {"altitude_upper_m": 90_000},
    }
    for code, change in cases.items():
        resp = api.post("/v1/operations", "blue", {"volumes": [{**circle_volume(), **change}]})
        assert resp.status_code == 400, (code, resp.text)
        assert resp.json()["code"] == code
        assert resp.json()["message"]


def test_naive_times_are_refused(api: Api) -> None:
    volume = {**circle_volume(), "start": "2030-01-01T10:00:00", "end": "2030-01-01T11:00:00"}
    resp = api.post("/v1/operations", "blue", {"volumes": [volume]})
    assert resp.status_code == 400 and resp.json()["code"] == "invalid_time"


def test_schema_violations_are_422(api: Api) -> None:
    for body in (
        {},
        {"volumes": "x"},
        {"volumes": [circle_volume()], "priority": "high"},
        {"volumes": [circle_volume()], "state": "Ended"},
        {"volumes": [{"footprint": {"circle": {"center": {"lat": "a", "lon": 1}}}}]},
    ):
        resp = api.post("/v1/operations", "blue", body)
        assert resp.status_code == 422, body
        assert resp.json()["code"] == "invalid_request"
    resp = api.client.post(
        "/v1/operations",
        content=b"{not json",
        headers={**api.as_("blue"), "Content-Type": "application/json"},
    )
    assert resp.status_code == 422


def test_request_values_must_be_the_json_types_the_schema_names(api: Api) -> None:
    """Pydantic's lax mode would read ``true`` as 1, ``"1.5"`` as 1.5 and a number as a Unix
    time; the OpenAPI schema promises numbers and date-time strings, so anything else is a 422
    (found by schemathesis)."""
    volume = circle_volume()
    center = volume["footprint"]["circle"]["center"]
    for body in (
        {"volumes": [{**volume, "altitude_upper_m": True}]},
        {"volumes": [{**volume, "altitude_lower_m": "0"}]},
        {
            "volumes": [
                {
                    **volume,
                    "footprint": {"circle": {"center": {**center, "lat": False}, "radius_m": 500}},
                }
            ]
        },
        {"volumes": [{**volume, "start": 1_900_000_000}]},
        {"volumes": [volume], "priority": True},
        {"volumes": [volume], "priority": 2.5},
        {"volumes": [volume], "priority": "3"},
    ):
        for path in ("/v1/operations", "/v1/operations/conflicts"):
            if path != "/v1/operations" and "priority" in body:
                continue
            resp = api.post(path, "blue", body)
            assert resp.status_code == 422, (path, body)
            assert resp.json()["code"] == "invalid_request"
    # Integers are numbers, and 3.0 is an integer (as JSON Schema counts): all fine.
    fine = api.post(
        "/v1/operations", "blue", {"volumes": [{**volume, "altitude_lower_m": 0}], "priority": 3.0}
    )
    assert fine.status_code == 201, fine.json()


def test_too_many_volumes_is_400_and_a_huge_body_is_413(api: Api) -> None:
    many = api.post("/v1/operations", "blue", {"volumes": [circle_volume()] * 101})
    assert many.status_code == 400 and many.json()["code"] == "limit_exceeded"
    huge = api.client.post(
        "/v1/operations",
        content=b" " * 2_000_000,
        headers={**api.as_("blue"), "Content-Type": "application/json"},
    )
    assert huge.status_code == 413 and huge.json()["code"] == "too_large"

    def chunks():
        for _ in range(40):
            yield b" " * 50_000

    streamed = api.client.post(
        "/v1/operations",
        content=chunks(),
        headers={**api.as_("blue"), "Content-Type": "application/json"},
    )
    assert streamed.status_code == 413


def test_tokens_missing_expired_wrong_audience_or_wrong_key_are_401(api: Api) -> None:
    url = "/v1/operations"
    assert api.client.get(url).json()["code"] == "missing_token"
    assert api.client.get(url).status_code == 401
    assert api.client.get(url).headers["WWW-Authenticate"] == "Bearer"
    expired = api.runtime.tokens.issue(
        api.ids["blue"], now=time.time() - 10 * 86_400, lifetime_s=86_400
    )
    other_key = ec.generate_private_key(ec.SECP256R1())
    stranger = TokenAuthority(other_key, [], audience="deconfliction", issuer="x")
    wrong_aud = TokenAuthority(None, [], audience="other", issuer="x")
    wrong_aud._signing_key = api.runtime.tokens._signing_key  # same key, other audience
    cases = {
        "token_expired": expired,
        "invalid_token": stranger.issue(api.ids["blue"]),
        "wrong_audience": wrong_aud.issue(api.ids["blue"]),
    }
    for code, token in cases.items():
        resp = api.client.get(url, headers={"Authorization": f"Bearer {token}"})
        assert resp.status_code == 401 and resp.json()["code"] == code, code
    garbage = api.client.get(url, headers={"Authorization": "Bearer not.a.jwt"})
    assert garbage.status_code == 401


def test_missing_scope_is_403(api: Api) -> None:
    read_only = api.runtime.tokens.issue(api.ids["blue"], scopes=("strategic.read",))
    resp = api.client.post(
        "/v1/operations",
        json={"volumes": [circle_volume()]},
        headers={"Authorization": f"Bearer {read_only}"},
    )
    assert resp.status_code == 403 and resp.json()["code"] == "missing_scope"
    admin_only = api.post("/v1/parties", "blue", {"name": "green"})
    assert admin_only.status_code == 403


def test_a_partys_own_rs256_issuer_speaks_for_that_party_only(tmp_path) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "issuer.pub.pem"
    pem.write_bytes(
        rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    first = Runtime.open(Settings(db=str(tmp_path / "x.db")))
    green, red = first.strategic.add_party("green"), first.strategic.add_party("red")
    first.close()
    runtime = Runtime.open(Settings(db=str(tmp_path / "x.db"), trusted_keys=[f"{green.id}={pem}"]))

    def token(sub: str, scope: str) -> str:
        claims = {"sub": sub, "aud": "deconfliction", "exp": time.time() + 60, "scope": scope}
        return jwt.encode(claims, rsa_key, algorithm="RS256")

    with TestClient(create_app(runtime)) as client:

        def get(path: str, tok: str):
            return client.get(path, headers={"Authorization": f"Bearer {tok}"})

        resp = get("/v1/me", token(green.id, "strategic.read"))
        assert resp.status_code == 200 and resp.json()["name"] == "green"
        # The same issuer cannot speak for red, nor hand itself the service's administration.
        impostor = get("/v1/me", token(red.id, "strategic.read admin"))
        assert impostor.status_code == 401 and impostor.json()["code"] == "invalid_token"
        admin = client.post(
            "/v1/parties",
            json={"name": "mallory"},
            headers={"Authorization": f"Bearer {token(green.id, 'admin')}"},
        )
        assert admin.status_code == 403
    runtime.close()


def test_a_trusted_key_must_name_its_party(tmp_path) -> None:
    with pytest.raises(ValueError, match="PARTY_ID="):
        Runtime.open(Settings(db=str(tmp_path / "y.db"), trusted_keys=["/some/key.pem"]))


def test_subscription_notifies_and_pages_events(api: Api) -> None:
    sub = api.post("/v1/subscriptions", "red", {"volumes": [circle_volume(radius_m=50_000)]})
    assert sub.status_code == 201
    for _ in range(3):
        assert api.post("/v1/operations", "blue", {"volumes": [circle_volume()]}).status_code == 201
    page = api.client.get("/v1/events", params={"limit": 2}, headers=api.as_("red")).json()
    assert [e["payload"]["notification_index"] for e in page["events"]] == [1, 2]
    rest = api.client.get(
        "/v1/events", params={"after": page["next_after"]}, headers=api.as_("red")
    ).json()
    assert [e["payload"]["notification_index"] for e in rest["events"]] == [3]
    assert "details" not in rest["events"][0]["payload"]["operation"]
    sub_id, version = sub.json()["id"], sub.json()["version"]
    assert api.client.get(f"/v1/subscriptions/{sub_id}", headers=api.as_("blue")).status_code == 404
    gone = api.client.delete(
        f"/v1/subscriptions/{sub_id}", params={"version": version}, headers=api.as_("red")
    )
    assert gone.status_code == 200


def test_admin_registers_a_party_and_gets_its_token(api: Api) -> None:
    admin = api.runtime.tokens.issue(api.ids["blue"], scopes=("admin",))
    resp = api.client.post(
        "/v1/parties", json={"name": "green"}, headers={"Authorization": f"Bearer {admin}"}
    )
    assert resp.status_code == 201
    token = resp.json()["token"]
    me = api.client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.json()["name"] == "green"
    again = api.client.post(
        "/v1/parties", json={"name": "Green"}, headers={"Authorization": f"Bearer {admin}"}
    )
    assert again.status_code == 400 and again.json()["code"] == "party_exists"


def test_dry_run_conflicts_endpoint(api: Api) -> None:
    blue = api.post("/v1/operations", "blue", {"volumes": [circle_volume()]}).json()["operation"]
    found = api.post("/v1/operations/conflicts", "red", {"volumes": [circle_volume()]}).json()
    assert [c["version"] for c in found["conflicts"]] == [blue["version"]]
    assert (
        api.post("/v1/operations/conflicts", "blue", {"volumes": [circle_volume()]}).json()[
            "conflicts"
        ]
        == []
    )
