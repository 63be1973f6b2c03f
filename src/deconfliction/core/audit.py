"""The audit log's rules: a hash chain of entries, sealed by signatures, verifiable by anyone.

Each entry commits to the one before it (``digest = SHA-256(previous digest || canonical entry)``),
so editing, deleting, inserting or reordering any entry breaks every digest after it. Seals sign
``(seq, digest)`` with the service's key: a party holding the public key can check an exported
range on its own, anchored on a sealed digest, without trusting the service's database.

Pure: no I/O, no clock. Stores keep entries; services decide what to append and when to seal.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

GENESIS = "0" * 64
"""The digest before the first entry."""


def canonical(value: Any, *, finite: bool = False) -> bytes:
    """Deterministic JSON: sorted keys, no spaces, UTF-8; floats as Python's shortest repr.

    This is the json module's output (``sort_keys``, compact, ``ensure_ascii=False``), which
    every chain has been hashed with. orjson makes the same bytes in a tenth of the time, except
    that it writes numbers below 1e-4 otherwise (``0.00001`` and ``1e-7``, where json writes
    ``1e-05`` and ``1e-07``), NaN and infinities as ``null`` (json: ``NaN``, ``Infinity``), and
    refuses some of what json writes (keys that are not strings, integers past 64 bits): in
    each of those cases the json module writes it. ``finite``: the caller vouches that
    ``value`` holds no NaN or infinity, so that a ``null`` in orjson's output is a None.
    """
    try:
        text = orjson.dumps(value, option=_ORJSON)
    except TypeError:
        return _json_canonical(value)
    if _small_number(text) or (not finite and b"null" in text):
        return _json_canonical(value)
    return text


def _json_canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


_ORJSON = (
    orjson.OPT_SORT_KEYS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
)
"""Sorted keys; what the json module cannot write either (dates, dataclasses) is refused."""
_SHORT_EXPONENT = re.compile(rb"e-(?<=\de-)\d(?!\d)")  # starts with a literal: a fast scan


def _small_number(text: bytes) -> bool:
    """Whether orjson's ``text`` may hold a number below 1e-4, which it writes unlike the json
    module: ``0.0000...`` or an exponent of one digit. Text in a string that looks like one
    only costs the slower path."""
    return b"0.0000" in text or _SHORT_EXPONENT.search(text) is not None


class AuditTip(NamedTuple):
    """What the next entry chains onto: the last entry's sequence number, time and digest."""

    seq: int
    time: float
    digest: str


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One link of the chain. The chain commits to the payload's digest, not the payload, so an
    export can withhold a payload a reader may not see (need to know) and still prove the chain.
    """

    seq: int
    time: float
    actor: str
    action: str
    subject: str
    payload: dict[str, Any] | None
    """None when withheld from this reader; ``payload_digest`` then stands for it."""
    prev: str
    digest: str
    payload_digest: str = ""
    payload_json: bytes | None = field(default=None, repr=False, compare=False)
    """The payload's canonical JSON as :func:`next_entry` chained it, for the store to keep as
    is (no second serialisation). Nothing checks an entry against it: verification always makes
    the canonical JSON again from ``payload``."""

    @property
    def content_digest(self) -> str:
        if self.payload is None:
            return self.payload_digest
        return hashlib.sha256(canonical(self.payload)).hexdigest()

    def body(self) -> dict[str, Any]:
        return _body(
            self.seq, self.time, self.actor, self.action, self.subject, self.content_digest
        )

    def to_json(self) -> dict[str, Any]:
        return {**self.body(), "payload": self.payload, "prev": self.prev, "digest": self.digest}

    def redacted(self) -> AuditEntry:
        """The same link without its payload."""
        return replace(self, payload=None, payload_digest=self.content_digest)

    def visible_to(self, party: str | None) -> bool:
        """Need to know: a payload is for its actor and the readers it names (none: everyone).

        ``party`` None is the service itself (an administrator's export).
        """
        if party is None or self.payload is None or self.actor == party:
            return True
        readers = self.payload.get(READERS)
        return readers is None or party in readers

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AuditEntry:
        payload = data.get("payload")
        return cls(
            int(data["seq"]),
            float(data["time"]),
            str(data["actor"]),
            str(data["action"]),
            str(data["subject"]),
            dict(payload) if payload is not None else None,
            str(data["prev"]),
            str(data["digest"]),
            str(data.get("payload_digest", "")),
        )


OPERATION_WRITES = ("operation.file", "operation.update", "operation.end")
"""Audit actions that record a write of an operation (and so the key its writer presented)."""

READERS = "readers"
"""Payload key naming the parties (besides the actor) who may read an entry's payload."""


def chain_digest(prev: str, body: dict[str, Any]) -> str:
    return hashlib.sha256(prev.encode() + b"\n" + canonical(body)).hexdigest()


def next_entry(
    prev: AuditEntry | AuditTip | None,
    time: float,
    actor: str,
    action: str,
    subject: str,
    payload: dict[str, Any],
    *,
    finite: bool = False,
) -> AuditEntry:
    """The entry that follows ``prev`` (None for the first). ``finite``: see :func:`canonical`."""
    seq = prev.seq + 1 if prev else 1
    prev_digest = prev.digest if prev else GENESIS
    text = canonical(payload, finite=finite)
    body = _body(seq, time, actor, action, subject, hashlib.sha256(text).hexdigest())
    digest = chain_digest(prev_digest, body)
    return AuditEntry(seq, time, actor, action, subject, payload, prev_digest, digest, "", text)


def _body(
    seq: int, time: float, actor: str, action: str, subject: str, payload_digest: str
) -> dict[str, Any]:
    """What an entry's digest covers (with the previous digest)."""
    return {
        "seq": seq,
        "time": time,
        "actor": actor,
        "action": action,
        "subject": subject,
        "payload_digest": payload_digest,
    }


@dataclass(frozen=True, slots=True)
class Break:
    """Where verification failed: the first entry that does not hold, and why."""

    seq: int
    reason: str


def verify_chain(
    entries: Iterable[AuditEntry], *, anchor: AuditEntry | None = None, first_seq: int | None = None
) -> Break | None:
    """Check that ``entries`` form an unbroken chain; None when intact.

    ``anchor`` is the entry just before the range (None: the range starts at the genesis).
    """
    prev_digest = anchor.digest if anchor else GENESIS
    expected = anchor.seq + 1 if anchor else (first_seq or 1)
    for entry in entries:
        if entry.seq != expected:
            what = "missing" if entry.seq > expected else "out of order or repeated"
            return Break(expected, f"entry {expected} is {what} (found {entry.seq} next)")
        if entry.prev != prev_digest:
            return Break(
                entry.seq, "does not link to the entry before it (deleted, inserted or reordered)"
            )
        if (
            entry.payload is not None
            and entry.payload_digest
            and entry.content_digest != entry.payload_digest
        ) or chain_digest(entry.prev, entry.body()) != entry.digest:
            return Break(entry.seq, "its content does not match its digest (altered)")
        prev_digest = entry.digest
        expected += 1
    return None


@dataclass(frozen=True, slots=True)
class Seal:
    """The service's signature over the chain up to ``seq``."""

    seq: int
    digest: str
    time: float
    signature: str

    def message(self) -> bytes:
        return canonical({"seq": self.seq, "digest": self.digest, "time": self.time})

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "digest": self.digest,
            "time": self.time,
            "signature": self.signature,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Seal:
        return cls(
            int(data["seq"]), str(data["digest"]), float(data["time"]), str(data["signature"])
        )


def _sign(key: Any, message: bytes) -> bytes:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(message, ec.ECDSA(hashes.SHA256()))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    raise TypeError("Seals need an EC or RSA private key.")


def seal(entry: AuditEntry, time: float, key: Any) -> Seal:
    unsigned = Seal(entry.seq, entry.digest, time, "")
    signature = base64.b64encode(_sign(key, unsigned.message())).decode()
    return Seal(entry.seq, entry.digest, time, signature)


def seal_is_valid(s: Seal, public_key: Any) -> bool:
    try:
        raw = base64.b64decode(s.signature, validate=True)
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(raw, s.message(), ec.ECDSA(hashes.SHA256()))
        elif isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(raw, s.message(), padding.PKCS1v15(), hashes.SHA256())
        else:
            return False
    except (InvalidSignature, ValueError):
        return False
    return True


def public_pem(key: Any) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def make_bundle(
    anchor: AuditEntry | None,
    entries: Sequence[AuditEntry],
    seals: Sequence[Seal],
    public_key_pem: str,
) -> dict[str, Any]:
    """An evidence bundle: a range of entries, the entry before it, the seals that cover it."""
    return {
        "format": "deconfliction-audit-bundle/1",
        "public_key": public_key_pem,
        "anchor": anchor.to_json() if anchor else None,
        "entries": [e.to_json() for e in entries],
        "seals": [s.to_json() for s in seals],
    }


def verify_bundle(bundle: dict[str, Any], public_key_pem: str | None = None) -> list[str]:
    """Problems found in a bundle (empty when it proves its entries). Needs only the public key.

    The entries must chain from the anchor; at least one valid seal must cover the range's end
    (a seal at or after the last entry whose digest matches, or that sits inside the range); the
    anchor, when given, must itself be covered by a valid seal or be the genesis.
    """
    problems: list[str] = []
    key = serialization.load_pem_public_key((public_key_pem or bundle["public_key"]).encode())
    anchor = AuditEntry.from_json(bundle["anchor"]) if bundle.get("anchor") else None
    entries = [AuditEntry.from_json(e) for e in bundle["entries"]]
    seals = [Seal.from_json(s) for s in bundle["seals"]]
    broken = verify_chain(entries, anchor=anchor)
    if broken:
        problems.append(f"entry {broken.seq}: {broken.reason}")
    valid = [s for s in seals if seal_is_valid(s, key)]
    if len(valid) < len(seals):
        problems.append(f"{len(seals) - len(valid)} seal(s) carry an invalid signature")
    digests = {e.seq: e.digest for e in entries}
    if anchor:
        digests[anchor.seq] = anchor.digest
    for s in valid:
        if s.seq in digests and digests[s.seq] != s.digest:
            problems.append(f"seal at entry {s.seq} does not match that entry's digest")
    if entries and not any(
        s.seq in digests and digests[s.seq] == s.digest and s.seq >= entries[-1].seq for s in valid
    ):
        problems.append(f"no valid seal covers the last entry ({entries[-1].seq})")
    if anchor and not any(s.seq == anchor.seq and s.digest == anchor.digest for s in valid):
        problems.append(f"no valid seal vouches for the anchor entry ({anchor.seq})")
    return problems
