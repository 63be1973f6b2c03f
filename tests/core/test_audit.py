"""The audit chain: intact chains verify, and any edit, deletion, insertion or reordering is found."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from deconfliction.core.audit import (
    AuditEntry,
    canonical,
    make_bundle,
    next_entry,
    public_pem,
    seal,
    verify_bundle,
    verify_chain,
)

KEY = ec.generate_private_key(ec.SECP256R1())


def chain(n: int) -> list[AuditEntry]:
    entries: list[AuditEntry] = []
    for i in range(n):
        entries.append(
            next_entry(
                entries[-1] if entries else None,
                1_000.0 + i,
                f"party-{i % 3}",
                "operation.file",
                f"op-{i}",
                {"n": i, "volumes": [i, i + 1]},
            )
        )
    return entries


def test_an_intact_chain_verifies() -> None:
    assert verify_chain(chain(50)) is None


@settings(max_examples=60, deadline=None)
@given(n=st.integers(3, 30), data=st.data())
def test_any_single_tampering_is_found_at_the_first_altered_entry(n: int, data) -> None:
    entries = chain(n)
    i = data.draw(st.integers(0, n - 1))
    kind = data.draw(st.sampled_from(["edit", "delete", "swap", "insert"]))
    tampered = list(entries)
    if kind == "edit":
        tampered[i] = dataclasses.replace(entries[i], payload={"n": -1})
        expected = entries[i].seq
    elif kind == "delete":
        del tampered[i]
        expected = entries[i].seq
    elif kind == "swap":
        j = (i + 1) % n
        tampered[i], tampered[j] = tampered[j], tampered[i]
        expected = min(entries[i].seq, entries[j].seq)
    else:
        # A well-formed forgery slipped in before entry i: the original entry i no longer fits.
        tampered.insert(i, next_entry(entries[i - 1] if i else None, 5.0, "x", "y", "z", {}))
        expected = entries[i].seq + 1
    broken = verify_chain(tampered)
    if kind == "delete" and i == n - 1:
        assert broken is None  # truncation at the end is what seals are for
        return
    assert broken is not None
    assert broken.seq == expected


def test_a_rewritten_entry_with_a_recomputed_digest_breaks_the_next_link() -> None:
    entries = chain(5)
    forged = next_entry(entries[1], 0.0, "x", "operation.end", "op-2", {})
    broken = verify_chain([*entries[:2], forged, *entries[3:]])
    assert broken is not None and broken.seq == 4


def test_bundles_verify_with_the_public_key_only() -> None:
    entries = chain(20)
    seals = [seal(entries[4], 2_000.0, KEY), seal(entries[14], 2_001.0, KEY)]
    bundle = make_bundle(entries[4], entries[5:15], seals, public_pem(KEY))
    assert verify_bundle(bundle) == []
    bundle["entries"][3]["payload"]["n"] = 99
    assert any("altered" in p for p in verify_bundle(bundle))


def test_a_truncated_or_resealed_bundle_is_refused() -> None:
    entries = chain(10)
    seals = [seal(entries[9], 2_000.0, KEY)]
    truncated = make_bundle(None, entries[:8], seals, public_pem(KEY))
    assert any("no valid seal covers" in p for p in verify_bundle(truncated))
    stranger = ec.generate_private_key(ec.SECP256R1())
    forged = make_bundle(None, entries, [seal(entries[9], 2_000.0, stranger)], public_pem(KEY))
    problems = verify_bundle(forged)
    assert any("invalid signature" in p for p in problems)


@pytest.mark.parametrize("anchor_sealed", [True, False])
def test_the_anchor_must_be_vouched_for(anchor_sealed: bool) -> None:
    entries = chain(10)
    seals = [seal(entries[9], 2.0, KEY)] + ([seal(entries[2], 1.0, KEY)] if anchor_sealed else [])
    problems = verify_bundle(make_bundle(entries[2], entries[3:], seals, public_pem(KEY)))
    assert (problems == []) is anchor_sealed


# The canonical form: the json module's bytes, whichever library makes them ------------------

NUMBERS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(1e-12, 1e-3) | st.floats(-1e-3, -1e-12),  # where orjson writes otherwise
    st.integers(),  # past 64 bits too
    st.booleans(),
)
JSON_LIKE = st.recursive(
    st.none() | NUMBERS | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=5), inner, max_size=4)
        | st.dictionaries(st.integers(0, 9), inner, max_size=3)  # json writes them as strings
    ),
    max_leaves=20,
)


def json_module(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@settings(max_examples=2_000)
@given(JSON_LIKE)
def test_canonical_json_is_the_json_modules_bytes(value: object) -> None:
    """Every chain was hashed with the json module's output; the fast path must not change one
    byte of it, or entries written before would no longer verify."""
    assert canonical(value) == json_module(value)
    assert canonical(value, finite=True) == json_module(value)  # no NaN in these values


@given(JSON_LIKE, st.sampled_from([math.nan, math.inf, -math.inf]))
def test_canonical_json_writes_nan_and_infinities_as_the_json_module_does(
    value: object, odd: float
) -> None:
    for v in ([value, odd], {"x": odd, "y": value}):
        assert canonical(v) == json_module(v)
