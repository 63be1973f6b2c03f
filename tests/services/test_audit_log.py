"""The audit log on a real store: every write recorded, tampering found, bundles verifiable."""

from __future__ import annotations

import json
import sqlite3

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from deconfliction.core.audit import verify_bundle
from deconfliction.core.hotline import MessageKind
from deconfliction.geo import Circle, Volume
from deconfliction.services.audit import AuditLog
from deconfliction.services.hotline import Hotline
from deconfliction.services.strategic import Filing, Strategic
from deconfliction.stores.sqlite import SqliteStore

from ..conftest import Clock

KEY = ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def log(tmp_path, clock: Clock):
    store = SqliteStore(tmp_path / "audit.db", synchronous="OFF")
    strategic = Strategic(store, clock=clock)
    hotline = Hotline(store, clock=clock)
    blue, red = strategic.add_party("blue").id, strategic.add_party("red").id
    volume = Volume.create(
        Circle.create(35.3, 36.7, 5_000), 0, 1_000, clock() + 3_600, clock() + 7_200
    )
    op = strategic.file_operation(blue, Filing([volume])).operation
    clock.advance(10)
    strategic.file_operation(red, Filing([volume], key=[op.version]))
    clock.advance(10)
    message = hotline.send(blue, [red], MessageKind.NOTICE, "private words")
    hotline.acknowledge(red, message.id)
    clock.advance(10)
    strategic.end_operation(blue, op.id, op.version)
    yield AuditLog(store, KEY, clock), store
    store.close()


def raw(store: SqliteStore) -> sqlite3.Connection:
    return sqlite3.connect(store.path, isolation_level=None)


def test_every_write_and_message_is_on_the_record(log) -> None:
    audit, store = log
    entries = store.transact(lambda tx: tx.audit_entries(1, 100))
    assert [e.action for e in entries] == [
        "party.add",
        "party.add",
        "operation.file",
        "operation.file",
        "message.send",
        "message.ack",
        "operation.end",
    ]
    assert entries[3].payload["key"] == [entries[2].payload["operation"]["version"]]
    assert "private words" not in json.dumps([e.payload for e in entries])
    assert audit.verify().intact


@pytest.mark.parametrize(
    "tamper, seq",
    [
        ("UPDATE audit_log SET payload = '{}' WHERE seq = 4", 4),
        ("DELETE FROM audit_log WHERE seq = 3", 3),
        (
            "UPDATE audit_log SET seq = -5 WHERE seq = 5; UPDATE audit_log SET seq = 5 WHERE seq = 6;"
            " UPDATE audit_log SET seq = 6 WHERE seq = -5",
            5,
        ),
    ],
)
def test_edits_deletions_and_reordering_are_found_at_the_first_bad_entry(log, tamper, seq) -> None:
    audit, store = log
    raw(store).executescript(tamper)
    result = audit.verify()
    assert not result.intact
    assert result.broken is not None and result.broken.seq == seq


def test_a_truncated_tail_is_caught_by_the_seal(log) -> None:
    audit, store = log
    audit.seal_now()
    raw(store).execute("DELETE FROM audit_log WHERE seq = 7")
    result = audit.verify()
    assert not result.intact and result.broken is not None and result.broken.seq == 7


def test_an_exported_bundle_verifies_with_only_the_public_key(log, clock: Clock) -> None:
    audit, _ = log
    audit.seal_now()
    bundle = audit.export(clock() - 25, clock() + 1)
    assert verify_bundle(json.loads(json.dumps(bundle))) == []
    assert [e["action"] for e in bundle["entries"]][-1] == "operation.end"
    bundle["entries"][1]["payload"]["late_notice_to"] = ["someone"]
    assert verify_bundle(bundle)


def test_an_export_withholds_what_a_party_may_not_see_and_still_proves(log, clock: Clock) -> None:
    audit, store = log
    parties = store.transact(lambda tx: {p.name: p.id for p in tx.list_parties()})
    hotline = Hotline(store, clock=clock)
    green = Strategic(store, clock=clock).add_party("green").id
    hotline.configure(parties["red"], webhook_url="https://red.example/hook")
    bundle_for = {
        name: audit.export(clock() - 100, clock() + 1, reader=pid)
        for name, pid in [*parties.items(), ("green", green)]
    }
    for name, bundle in bundle_for.items():
        assert verify_bundle(json.loads(json.dumps(bundle))) == [], name

    def payloads(name: str) -> dict[str, object]:
        return {e["action"]: e["payload"] for e in bundle_for[name]["entries"]}

    # Blue's message to red: blue and red see it, green sees only that some message went.
    assert payloads("blue")["message.send"] is not None
    assert payloads("red")["message.send"] is not None
    assert payloads("green")["message.send"] is None
    # Red's webhook settings are red's alone; operations are everyone's reference.
    assert payloads("red")["party.settings"] is not None
    assert payloads("blue")["party.settings"] is None
    assert payloads("green")["operation.file"] is not None
    assert "red.example" not in json.dumps(bundle_for["green"])


def test_an_export_of_a_quiet_period_is_empty_and_verifies(log, clock: Clock) -> None:
    audit, _ = log
    bundle = audit.export(clock() + 10_000, clock() + 20_000)
    assert bundle["entries"] == [] and verify_bundle(bundle) == []
