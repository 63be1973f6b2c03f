"""How records look from outside: JSON-ready dicts, with need-to-know applied in one place."""

from __future__ import annotations

from typing import Any

from deconfliction.core.model import Event, Operation, Subscription
from deconfliction.core.rules import Found
from deconfliction.formats import format_time, volume_to_json


def operation_view(op: Operation, *, owner_view: bool) -> dict[str, Any]:
    """The reference every party may see; the owner also gets the private details."""
    view: dict[str, Any] = {
        "id": op.id,
        "owner": op.owner,
        "state": op.state.value,
        "priority": op.priority,
        "version": op.version,
        "revision": op.revision,
        "start": format_time(op.start),
        "end": format_time(op.end),
        "updated_at": format_time(op.updated_at),
        "volumes": [volume_to_json(v) for v in op.volumes],
    }
    if owner_view:
        view["details"] = op.details.to_json()
        view["created_at"] = format_time(op.created_at)
    return view


def view_for(op: Operation, party: str) -> dict[str, Any]:
    """An operation as ``party`` may see it: the need-to-know rule, in one place."""
    return operation_view(op, owner_view=op.owner == party)


def found_view(found: Found) -> dict[str, Any]:
    op = found.operation
    return {
        "id": op.id,
        "owner": op.owner,
        "version": op.version,
        "state": op.state.value,
        "priority": op.priority,
        "conflicting_volumes": [volume_to_json(op.volumes[i]) for i in found.volumes],
    }


def subscription_view(sub: Subscription) -> dict[str, Any]:
    return {
        "id": sub.id,
        "owner": sub.owner,
        "version": sub.version,
        "notification_index": sub.notification_index,
        "volumes": [volume_to_json(v) for v in sub.volumes],
    }


def event_view(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "kind": event.kind,
        "time": format_time(event.time),
        "payload": event.payload,
    }
