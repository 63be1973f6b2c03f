"""Rows both stores share the code of: an audit entry is stored as the canonical JSON it was
chained with and reads back the same, so the chain still verifies; an event payload is stored
as JSON any client parses."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from deconfliction.core.audit import canonical, next_entry, verify_chain
from deconfliction.stores.shared import _audit, _audit_row, event_json

PAYLOADS = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(st.characters(exclude_categories=["Cs"])),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
).map(lambda value: {"value": value})


@given(PAYLOADS)
def test_a_chained_entry_reads_back_as_it_was_chained(payload: dict) -> None:
    entry = next_entry(None, 1_800_000_000.25, "party", "operation.file", "op-1", payload)
    row = _audit_row(entry)
    assert row[5] == canonical(payload).decode()  # stored as chained: not serialised twice
    read = _audit(row)
    assert read.payload == payload
    assert read.content_digest == entry.content_digest
    assert verify_chain([read]) is None


def test_an_event_payload_is_stored_as_json_any_client_parses() -> None:
    payload = {"a": [1, 2.5, "été"], "b": None, "big": 2**70, "odd": float("nan")}
    stored = json.loads(event_json(payload))  # (strict JSON: json.loads would take NaN too)
    assert stored == {"a": [1, 2.5, "été"], "b": None, "big": 2**70, "odd": None}
    assert "NaN" not in event_json({"x": float("nan"), "y": float("inf")})
    assert json.loads(event_json({"n": 1.5, "t": "x"})) == {"n": 1.5, "t": "x"}
