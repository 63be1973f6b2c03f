"""Request and response bodies of the native API, as they appear in the OpenAPI document.

Schemas check shape and types (a violation is a 422); whether the content makes sense (a
self-intersecting polygon, a start after the end) is decided by the geometry and the core (400).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict

from deconfliction.core.hotline import MessageKind
from deconfliction.core.model import OperationState
from deconfliction.formats import is_number


def _json_number(value: Any) -> Any:
    if not is_number(value):
        raise ValueError("must be a JSON number")
    return value


def _json_string(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError("must be a string (RFC 3339 date-time)")
    return value


# In its lax mode pydantic would take ``true`` as the number 1, ``"1.5"`` as 1.5 and a number as
# a Unix time, none of which the OpenAPI document allows.
Number = Annotated[float, BeforeValidator(_json_number)]
"""A JSON number in a request: never a boolean or a numeric string."""
Integer = Annotated[int, BeforeValidator(_json_number)]
"""A JSON integer in a request (``3.0`` is one, as JSON Schema counts; ``3.5`` is not)."""
Flag = Annotated[bool, Strict()]
"""A JSON boolean in a request (not 0, 1 or "yes")."""
Instant = Annotated[datetime, BeforeValidator(_json_string)]
"""An RFC 3339 date-time string in a request (not a number of seconds)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LatLon(_Model):
    lat: Number = Field(description="Latitude, degrees WGS84.")
    lon: Number = Field(description="Longitude, degrees WGS84.")


class CircleIn(_Model):
    center: LatLon
    radius_m: Number = Field(description="Geodesic radius in metres.")


class PolygonIn(_Model):
    vertices: list[LatLon] = Field(
        description="Vertices in order; edges are WGS84 geodesics. The closing vertex is optional."
    )


class FootprintIn(_Model):
    """Exactly one of ``circle`` or ``polygon``."""

    circle: CircleIn | None = None
    polygon: PolygonIn | None = None


class VolumeIn(_Model):
    footprint: FootprintIn
    altitude_lower_m: Number = Field(description="Metres above the WGS84 ellipsoid.")
    altitude_upper_m: Number
    start: Instant = Field(description="UTC, inclusive. A time zone is required.")
    end: Instant = Field(description="UTC, exclusive.")


class GeoJSONGeometry(BaseModel):
    type: Literal["Polygon", "Point"]
    coordinates: list[Any]


class FeatureProperties(BaseModel):
    model_config = ConfigDict(extra="allow")
    altitude_lower_m: Number | None = None
    altitude_upper_m: Number | None = None
    altitude_lower_ft: Number | None = None
    altitude_upper_ft: Number | None = None
    start: Instant
    end: Instant
    radius_m: Number | None = Field(None, description="Required for a Point: the circle's radius.")


class Feature(BaseModel):
    """A GeoJSON Feature ([lon, lat] order) whose properties carry the altitude band and times."""

    type: Literal["Feature"]
    geometry: GeoJSONGeometry
    properties: FeatureProperties


class FeatureCollection(BaseModel):
    type: Literal["FeatureCollection"]
    features: list[Feature]


Volumes = list[VolumeIn | Feature] | FeatureCollection


class Details(_Model):
    """Private to the owner (need to know)."""

    purpose: str | None = Field(None, max_length=2_000)
    aircraft: list[str] = Field(default_factory=list, max_length=1_000)
    remarks: str | None = Field(None, max_length=10_000)


class OperationIn(_Model):
    volumes: Volumes
    state: Literal[OperationState.ACCEPTED, OperationState.ACTIVATED] = OperationState.ACCEPTED
    priority: Integer = Field(0, ge=0, le=1_000, description="Higher wins.")
    key: list[str] = Field(
        default_factory=list,
        max_length=10_000,
        description="Versions of the other parties' operations you know you conflict with.",
    )
    details: Details | None = None


class OperationUpdate(_Model):
    version: str = Field(description="The version you are replacing (must be current).")
    volumes: Volumes
    state: OperationState
    priority: Integer | None = Field(None, ge=0, le=1_000, description="Omitted: unchanged.")
    key: list[str] = Field(default_factory=list, max_length=10_000)
    details: Details | None = Field(None, description="Omitted: unchanged.")


class AreaIn(_Model):
    volumes: Volumes


class PartyIn(_Model):
    name: str = Field(min_length=1, max_length=100)


class VolumeOut(BaseModel):
    footprint: dict[str, Any]
    altitude_lower_m: float
    altitude_upper_m: float
    start: str
    end: str


class OperationOut(BaseModel):
    id: str
    owner: str
    state: OperationState
    priority: int
    version: str
    revision: int
    start: str
    end: str
    updated_at: str
    volumes: list[VolumeOut]
    details: dict[str, Any] | None = Field(None, description="Only for the owner.")
    created_at: str | None = None


class ConflictOut(BaseModel):
    id: str
    owner: str
    version: str
    state: OperationState
    priority: int
    conflicting_volumes: list[VolumeOut]


class FiledOut(BaseModel):
    operation: OperationOut
    conflicts: list[ConflictOut] = Field(
        description="Other parties' operations this one now conflicts with (all in your key)."
    )
    late_notice_to: list[str] = Field(
        default_factory=list,
        description="Parties told later than your lead-time agreement with them: flagged, "
        "pushed to them at flash urgency, and counted.",
    )
    unreachable: list[str] = Field(
        default_factory=list,
        description="Owners of conflicting operations who are Unresponsive or Down now.",
    )


class OperationsOut(BaseModel):
    operations: list[OperationOut]


class ConflictsOut(BaseModel):
    conflicts: list[ConflictOut]


class SubscriptionOut(BaseModel):
    id: str
    owner: str
    version: str
    notification_index: int
    volumes: list[VolumeOut]


class SubscriptionsOut(BaseModel):
    subscriptions: list[SubscriptionOut]


class EventOut(BaseModel):
    id: int
    kind: str
    time: str
    payload: dict[str, Any]


class EventsOut(BaseModel):
    events: list[EventOut]
    next_after: int = Field(description="Pass as `after` to get the following page.")


class PartyOut(BaseModel):
    id: str
    name: str


class PartiesOut(BaseModel):
    parties: list[PartyOut]


class NewPartyOut(BaseModel):
    party: PartyOut
    token: str


class ErrorOut(BaseModel):
    code: str = Field(description="Stable, machine-readable.")
    message: str = Field(description="A sentence for a person.")
    details: Any = None


class MessageIn(_Model):
    to: list[str] | Literal["all"] = Field(description='Party ids, or "all" other parties.')
    kind: MessageKind = MessageKind.TEXT
    text: str = Field(min_length=1, max_length=10_000)
    urgency: Literal["routine", "priority", "immediate", "flash"] = "routine"
    ack_by: Instant | None = Field(
        None, description="Every recipient must acknowledge by then (UTC); escalates after."
    )
    operation_id: str | None = None
    alert_id: str | None = None
    reply_to: str | None = None


class ReceiptOut(BaseModel):
    party_id: str
    acked_at: str | None
    escalation_level: int
    overdue: bool


class MessageOut(BaseModel):
    id: str
    sender: str
    recipients: list[str]
    kind: MessageKind
    urgency: str
    text: str
    sent_at: str
    ack_deadline: str | None
    operation_id: str | None
    alert_id: str | None
    reply_to: str | None
    receipts: list[ReceiptOut] = Field(default_factory=list)


class LivenessOut(BaseModel):
    party_id: str
    availability: str
    last_heartbeat: str | None
    changed_at: str


class LivenessListOut(BaseModel):
    parties: list[LivenessOut]


class SettingsIn(_Model):
    webhook_url: str | None = Field(
        None, max_length=2_000, description="Empty string removes the webhook."
    )
    escalation_parties: list[str] | None = Field(None, max_length=100)
    rotate_secret: Flag = False


class SettingsOut(BaseModel):
    webhook_url: str | None
    webhook_secret: str | None = Field(
        None, description="Sign-check key for your webhook (HMAC-SHA256); shown to you only."
    )
    escalation_parties: list[str]


class LeadTimeIn(_Model):
    party_a: str
    party_b: str
    minutes: Number = Field(ge=0, le=7 * 24 * 60)
