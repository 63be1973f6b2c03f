"""What only the SQLite store promises: one file that reopens as it was, an hour-aligned epoch,
index boxes rounded outward to float32, and retries when the database is busy."""

from __future__ import annotations

import sqlite3
import struct
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deconfliction.core.audit import next_entry
from deconfliction.core.errors import Unavailable
from deconfliction.core.model import Operation, OperationState, Subscription
from deconfliction.geo import Circle, Polygon, Volume
from deconfliction.geo.volume import boxes_meet
from deconfliction.stores import sqlite as sqlite_store
from deconfliction.stores.sqlite import SqliteStore

T = 1_800_000_000.0


def operation(op_id: str, *volumes: Volume) -> Operation:
    return Operation(op_id, "alpha", OperationState.ACCEPTED, 0, volumes, "v1", 1, T, T)


def test_a_reopened_file_keeps_its_data_epoch_and_schema(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    first = SqliteStore(path, synchronous="OFF")
    v = Volume.create(Circle.create(10.0, 20.0, 500.0), 0.0, 100.0, T, T + 60.0)
    first.transact(lambda tx: tx.put_operation(operation("op", v)))
    epoch, schema = first.epoch, first.schema_version
    first.close()

    again = SqliteStore(path, synchronous="OFF")
    try:
        assert (again.epoch, again.schema_version) == (epoch, schema) and schema >= 1
        assert epoch % 3_600 == 0
        found = again.transact(lambda tx: tx.operation_candidates([v]), write=False)
        assert [op.id for op in found] == ["op"]
    finally:
        again.close()


def test_stored_index_boxes_contain_the_volume_after_float32_rounding(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.db", synchronous="OFF")
    try:
        e = store.epoch
        ring = [
            (10.000_001, 179.999_9),
            (10.000_001, -179.999_9),
            (10.1, -179.999_9),
            (10.1, 179.999_9),
        ]
        volumes = (
            Volume.create(Circle.create(0.1, 0.2, 333.3), 0.3, 100.1, e + 1_000.1, e + 2_000.3),
            Volume.create(Polygon.create(ring), -7.7, 9_999.9, e + 86_400.7, e + 90_000.9),
        )
        store.transact(lambda tx: tx.put_operation(operation("op", *volumes)))
        rows = store.transact(
            lambda tx: tx.db.execute(
                "SELECT lon0, lon1, lat0, lat1, alt0, alt1, t0, t1 FROM operation_index"
            ).fetchall(),
            write=False,
        )
        wanted = [box for v in volumes for box in v.index_boxes()]
        assert len(rows) == len(wanted) == 3  # the polygon wraps the antimeridian: two boxes
        for row, box in zip(sorted(rows), sorted(wanted), strict=True):
            stored = np.array(row)
            assert np.all(stored.astype(np.float32) == stored), "the index holds float32"
            scale = 1 / np.array(sqlite_store.INDEX_UNITS)
            lo = np.array([box[0], box[2], box[4], box[6] - e]) * scale
            hi = np.array([box[1], box[3], box[5], box[7] - e]) * scale
            assert np.all(stored[0::2] <= lo) and np.all(stored[1::2] >= hi)
            assert np.all(hi - lo >= 0) and np.all(
                stored[1::2] - hi < 1e-3 * np.maximum(1, np.abs(hi))
            )
    finally:
        store.close()


def test_a_busy_database_is_retried_then_reported_unavailable(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.db", synchronous="OFF", max_attempts=3)
    try:
        calls = []

        def busy_once(tx) -> str:
            calls.append(1)
            if len(calls) == 1:
                raise sqlite3.OperationalError("database is locked")
            return "done"

        assert store.transact(busy_once) == "done" and len(calls) == 2

        def always_busy(tx) -> None:
            raise sqlite3.OperationalError("database is locked")

        with pytest.raises(Unavailable) as exc:
            store.transact(always_busy)
        assert exc.value.code == "unavailable"

        def broken(tx) -> None:
            raise sqlite3.OperationalError("no such table: nowhere")

        with pytest.raises(sqlite3.OperationalError):
            store.transact(broken)
    finally:
        store.close()


def test_group_commit_answers_each_write_alone_and_rolls_back_only_the_refused(
    tmp_path: Path,
) -> None:
    """With group commit on, writes from many threads share transactions, yet each caller gets
    its own result or error, and a refused write leaves nothing behind while its neighbours stay."""
    import threading

    from deconfliction.core.model import Party

    store = SqliteStore(tmp_path / "group.db", synchronous="OFF", group_commit=True)
    outcomes: dict[str, bool] = {}
    lock = threading.Lock()

    def worker(t: int) -> None:
        for i in range(25):
            name = f"p-{t}-{i}"
            refuse = (t + i) % 3 == 0

            def write(tx, name=name, refuse=refuse):
                tx.add_party(Party(name, name, 0.0))
                if refuse:
                    raise ValueError("refused")
                return name

            try:
                assert store.transact(write) == name
                ok = True
            except ValueError:
                ok = False
            with lock:
                outcomes[name] = ok

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    stored = {p.id for p in store.transact(lambda tx: tx.list_parties(), write=False)}
    store.close()
    assert stored == {name for name, ok in outcomes.items() if ok}
    assert len(outcomes) == 200 and 0 < len(stored) < 200


COORDINATES = st.one_of(
    st.floats(-1e30, 1e30).filter(lambda v: v == 0.0 or abs(v) >= 1e-30),
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.1, -0.1, 23_039.999999, 86_400.3 / 64]),
)


@given(COORDINATES, COORDINATES)
def test_the_rtree_rounds_stored_boxes_outward_and_searches_in_double(a: float, b: float) -> None:
    """What _Spatial.boxes relies on: SQLite's R*Tree keeps float32, rounds a stored box's
    lower bound down and its upper bound up, and compares a search's bounds in double.
    (Not below float32's normal range, ~1e-38: a bound there may round to zero, a sliver of no
    physical size in the index's units.)"""
    lo, hi = min(a, b), max(a, b)
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE r USING rtree(id, a0, a1)")
    db.execute("INSERT INTO r VALUES (1, ?, ?)", (lo, hi))
    a0, a1 = db.execute("SELECT a0, a1 FROM r").fetchone()
    assert np.float32(a0) == a0 and np.float32(a1) == a1, "both are float32 values"
    assert a0 <= lo and a1 >= hi
    # A search touching the box at either end, to the last double, finds it.
    assert db.execute("SELECT count(*) FROM r WHERE a1 >= ? AND a0 <= ?", (lo, lo)).fetchone()[0]
    assert db.execute("SELECT count(*) FROM r WHERE a1 >= ? AND a0 <= ?", (hi, hi)).fetchone()[0]


def box(lon: float, t: float) -> tuple[float, ...]:
    """An index box 1 degree wide at ``lon``, one hour from ``t``, any altitude."""
    return (lon, lon + 1.0, 40.0, 41.0, 0.0, 1_000.0, t, t + 3_600.0)


def test_a_group_commit_takes_writes_into_areas_apart_and_defers_the_rest(tmp_path: Path) -> None:
    from deconfliction.stores.sqlite import _Job

    store = SqliteStore(tmp_path / "batch.db", synchronous="OFF")
    try:
        west, east = (
            _Job(lambda tx: None, 0, [box(0.0, 0.0)]),
            _Job(lambda tx: None, 0, [box(5, 0)]),
        )
        west_later = _Job(lambda tx: None, 0, [box(0.5, 7_200.0)])  # same place, other hours
        west_too = _Job(lambda tx: None, 0, [box(0.5, 1_800.0)])  # meets west
        message = _Job(lambda tx: None)  # touches no area: meets nothing
        batch, deferred = store._choose_batch([], [west, east, west_later, west_too, message])
        assert {id(j) for j in batch} >= {id(east), id(west_later), id(message)}
        assert len(deferred) == 1 and deferred[0] in (west, west_too)

        refused = _Job(lambda tx: None, 3, [box(0.2, 0.0)])  # refused three times lately
        batch, deferred = store._choose_batch(deferred, [refused])
        assert batch == [refused] and deferred[0] in (west, west_too)
    finally:
        store.close()


def test_a_batch_of_one_commits_or_rolls_back_alone_and_retries_a_busy_database(
    tmp_path: Path,
) -> None:
    """The writer thread runs a batch of one write without a savepoint: its result, or its
    error with nothing left behind; a database found busy is tried again."""
    from deconfliction.core.model import Party
    from deconfliction.stores.sqlite import _Job

    store = SqliteStore(tmp_path / "one.db", synchronous="OFF")
    try:
        kept = _Job(lambda tx: tx.add_party(Party("kept", "kept", 0.0)) or "done")
        store._run_batch([kept])
        assert (kept.result, kept.error) == ("done", None)

        def refused_after_writing(tx) -> None:
            tx.add_party(Party("refused", "refused", 0.0))
            raise ValueError("refused")

        refused = _Job(refused_after_writing)
        store._run_batch([refused])
        assert refused.result is None and isinstance(refused.error, ValueError)

        tries = []

        def busy_once(tx) -> str:
            tries.append(1)
            tx.add_party(Party(f"try-{len(tries)}", "retried", 0.0))
            if len(tries) == 1:
                raise sqlite3.OperationalError("database is locked")
            return "second try"

        retried = _Job(busy_once)
        store._run_batch([retried])
        assert (retried.result, retried.error, len(tries)) == ("second try", None, 2)

        names = {p.id for p in store.transact(lambda tx: tx.list_parties(), write=False)}
        assert names == {"kept", "try-2"}
    finally:
        store.close()


def test_a_write_that_finds_nobody_waiting_commits_in_its_own_thread(tmp_path: Path) -> None:
    import threading

    store = SqliteStore(tmp_path / "alone.db", synchronous="OFF")
    try:
        assert store.group_commit
        thread = store.transact(lambda tx: threading.current_thread())
        assert thread is threading.current_thread() and store._writer is None
    finally:
        store.close()


def _in_database_file(path: Path, op_id: str) -> bool:
    """Whether the operation is in the database file itself, leaving the WAL aside."""
    db = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    try:
        return db.execute("SELECT 1 FROM operations WHERE id = ?", (op_id,)).fetchone() is not None
    except sqlite3.DatabaseError:  # no schema there yet, or a page read while being copied
        return False
    finally:
        db.close()


def test_committed_pages_reach_the_database_file_without_any_writer_copying_them(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.db"
    store = SqliteStore(path, synchronous="NORMAL", checkpoint_every_s=0.01)
    try:
        autocheckpoint = store._connection().execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        assert autocheckpoint == 0  # no commit copies pages: the checkpointer does
        v = Volume.create(Circle.create(10.0, 20.0, 500.0), 0.0, 100.0, T, T + 60.0)
        store.transact(lambda tx: tx.put_operation(operation("op", v)))
        assert not _in_database_file(path, "op")  # committed, in the WAL only
        for _ in range(500):  # the checkpointer's thread runs every 10 ms after a write
            if _in_database_file(path, "op"):
                break
            threading.Event().wait(0.01)
        assert _in_database_file(path, "op")
    finally:
        store.close()


def test_without_the_checkpointer_sqlite_copies_pages_itself(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.db", checkpoint_every_s=0)
    try:
        autocheckpoint = store._connection().execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        assert autocheckpoint == 1000  # SQLite's default
        assert store._checkpointer is None
    finally:
        store.close()


def test_a_long_wal_is_restarted_in_the_writers_queue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqliteStore(tmp_path / "store.db", checkpoint_every_s=3_600)  # by hand only
    v = Volume.create(Circle.create(10.0, 20.0, 500.0), 0.0, 100.0, T, T + 60.0)
    statements: list[str] = []
    try:
        store.transact(lambda tx: tx.put_operation(operation("a", v)))
        db = store._connection()
        db.set_trace_callback(statements.append)
        frames, copied = store.checkpoint()
        assert frames == copied > 0 and not any("RESTART" in s for s in statements)
        monkeypatch.setattr(sqlite_store, "WAL_RESTART_FRAMES", 1)
        store.transact(lambda tx: tx.put_operation(operation("b", v)))
        statements.clear()
        store.checkpoint()
        assert statements == [
            "PRAGMA wal_checkpoint(PASSIVE)",
            f"PRAGMA busy_timeout = {sqlite_store.RESTART_WAIT_MS}",  # for readers only
            "PRAGMA wal_checkpoint(RESTART)",
            f"PRAGMA busy_timeout = {store.busy_timeout_ms}",
        ]
        found = store.transact(lambda tx: tx.operation_candidates([v]), write=False)
        assert sorted(op.id for op in found) == ["a", "b"]
    finally:
        store.close()


def test_the_wal_restarts_after_a_writer_that_held_the_lock_when_the_checkpointer_came(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under sustained writes the write lock is nearly always held. A RESTART that only tried
    then failed, round after round, and the WAL grew without end (it did in the HTTP hot spot:
    120 MB in 12 s); it now waits in the writers' queue and gets its turn."""
    monkeypatch.setattr(sqlite_store, "WAL_RESTART_FRAMES", 1)
    store = SqliteStore(tmp_path / "store.db", checkpoint_every_s=3_600)  # by hand only
    v = Volume.create(Circle.create(10.0, 20.0, 500.0), 0.0, 100.0, T, T + 60.0)
    writing, finish = threading.Event(), threading.Event()
    results: list[tuple[int, int]] = []

    def slow(tx: sqlite_store.SqliteTx) -> None:
        tx.put_operation(operation("slow", v))
        writing.set()
        finish.wait(10)

    try:
        for k in range(20):  # nothing copies them yet: the WAL grows
            store.transact(lambda tx, k=k: tx.put_operation(operation(f"op{k}", v)))
        writer = threading.Thread(target=store.transact, args=(slow,))
        writer.start()
        assert writing.wait(10)
        checkpointer = threading.Thread(target=lambda: results.append(store.checkpoint()))
        checkpointer.start()
        checkpointer.join(0.2)
        assert checkpointer.is_alive()  # waiting for the writer's turn to end, not failing
        finish.set()
        writer.join(10)
        checkpointer.join(10)
        grown, copied = results[0]
        assert grown == copied > 0  # all of it copied, the slow write's pages included
        store.transact(lambda tx: tx.put_operation(operation("next", v)))
        monkeypatch.setattr(sqlite_store, "WAL_RESTART_FRAMES", 1 << 30)
        frames, _ = store.checkpoint()
        assert 0 < frames < grown / 10  # the next writer began the WAL from the top
        found = store.transact(lambda tx: tx.operation_candidates([v]), write=False)
        assert len(found) == 22
    finally:
        finish.set()
        store.close()


def test_a_restarted_wal_is_cut_back_to_a_bounded_size(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.db")
    try:
        limit = store._connection().execute("PRAGMA journal_size_limit").fetchone()[0]
        assert limit == sqlite_store.WAL_KEEP_BYTES
    finally:
        store.close()


def test_a_bulk_load_reaches_the_database_file_too(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = SqliteStore(path, synchronous="OFF", checkpoint_every_s=0.01)
    v = Volume.create(Circle.create(10.0, 20.0, 500.0), 0.0, 100.0, T, T + 60.0)
    try:
        store.bulk_load([operation("loaded", v)])
        for _ in range(500):
            if _in_database_file(path, "loaded"):
                break
            threading.Event().wait(0.01)
        assert _in_database_file(path, "loaded")  # not left in the WAL until the close
    finally:
        store.close()


# Schema 4: volumes in their record's row, index entries found again by search ------------------

_AREAS = (
    Volume.create(Circle.create(10.0, 20.0, 500.0), 0.0, 100.0, T, T + 60.0),
    Volume.create(Circle.create(10.0, 20.01, 800.0), 50.0, 300.0, T + 30.0, T + 600.0),
    Volume.create(
        Polygon.create([(10.0, 179.99), (10.0, -179.99), (10.05, -179.99), (10.05, 179.99)]),
        0.0,
        150.0,
        T,
        T + 3_600.0,
    ),  # across the antimeridian: two index boxes
    Volume.create(Circle.create(-45.0, -70.0, 25_000.0), 0.0, 500.0, T + 7_200.0, T + 9_000.0),
)


def _entries_by_rowid(store: SqliteStore) -> dict[int, int]:
    rows = store.transact(
        lambda tx: tx.db.execute(
            "SELECT op_rowid, count(*) FROM operation_index GROUP BY op_rowid"
        ).fetchall(),
        write=False,
    )
    return dict(rows)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c"]),
            st.lists(st.sampled_from(range(len(_AREAS))), min_size=1, max_size=3),
            st.sampled_from(list(OperationState)),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_the_index_holds_exactly_the_boxes_of_each_live_operations_current_volumes(
    writes: list[tuple[str, list[int], OperationState]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "store.db", synchronous="OFF", checkpoint_every_s=0)
        try:
            current: dict[str, Operation] = {}
            for revision, (op_id, areas, state) in enumerate(writes, start=1):
                op = Operation(
                    op_id,
                    "alpha",
                    state,
                    0,
                    tuple(_AREAS[i] for i in areas),
                    f"v{revision}",
                    revision,
                    T,
                    T,
                )
                store.transact(lambda tx, op=op: tx.put_operation(op))
                current[op_id] = op
            rowids = dict(
                store.transact(
                    lambda tx: tx.db.execute("SELECT id, rowid FROM operations").fetchall(),
                    write=False,
                )
            )
            entries = _entries_by_rowid(store)
            for op_id, op in current.items():
                wanted = len(store._ops.boxes(op.volumes)) if op.live else 0
                assert entries.get(rowids[op_id], 0) == wanted, op_id
                back = store.transact(lambda tx, i=op_id: tx.get_operation(i), write=False)
                assert back is not None and _same(back.volumes, op.volumes)
            for area in _AREAS:
                found = store.transact(lambda tx, a=area: tx.operation_candidates([a]), write=False)
                assert {o.id for o in found} == {
                    i
                    for i, o in current.items()
                    if o.live and any(_boxes_overlap(store, area, v) for v in o.volumes)
                }
        finally:
            store.close()


def _same(a: tuple[Volume, ...], b: tuple[Volume, ...]) -> bool:
    """The same volumes, in order (footprints compare by identity, so by their bytes here)."""

    def key(v: Volume) -> tuple[object, ...]:
        return (v.footprint.to_bytes(), v.altitude_lower_m, v.altitude_upper_m, v.start, v.end)

    return [key(v) for v in a] == [key(v) for v in b]


def _boxes_overlap(store: SqliteStore, a: Volume, b: Volume) -> bool:
    return any(boxes_meet(x, y) for x in store._ops.boxes([a]) for y in store._ops.boxes([b]))


def _schema_3_file(path: Path, op: Operation, sub_volume: Volume) -> float:
    """A database as schema 3 left it (volumes and index ids in tables of their own), holding
    one operation and one subscription; returns its epoch."""
    db = sqlite3.connect(path, isolation_level=None)
    for script in sqlite_store._MIGRATIONS[:3]:
        for statement in script.split(";"):
            if statement.strip():
                db.execute(statement)
    epoch = 1_799_996_400.0
    db.execute("INSERT INTO meta VALUES ('epoch', ?)", (repr(epoch),))
    db.execute("PRAGMA user_version = 3")
    spatial = sqlite_store._Spatial("operations", epoch, units=(1.0, 1.0, 1.0, 1.0))
    db.execute(
        "INSERT INTO operations VALUES (7, ?, ?, ?, ?, ?, ?, ?, ?, '{}')",
        (op.id, op.owner, op.state.value, op.priority, op.version, op.revision, T, T),
    )
    for table, rowid, volumes in (("operation", 7, op.volumes), ("subscription", 3, [sub_volume])):
        for ord_, v in enumerate(volumes):
            db.execute(
                f"INSERT INTO {table}_volumes VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    rowid,
                    ord_,
                    v.footprint.to_bytes(),
                    v.altitude_lower_m,
                    v.altitude_upper_m,
                    v.start,
                    v.end,
                ),
            )
        for box in spatial.boxes(volumes):
            cur = db.execute(
                f"INSERT INTO {table}_index VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*box, rowid),
            )
            db.execute(f"INSERT INTO {table}_index_rows VALUES (?, ?)", (rowid, cur.lastrowid))
    db.execute("INSERT INTO subscriptions VALUES (3, 'sub', 'alpha', 'sv', 4, ?, ?)", (T, T))
    db.close()
    return epoch


def test_a_schema_3_file_is_migrated_with_its_volumes_and_index_intact(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    op = operation("op", _AREAS[2], _AREAS[0])  # volumes out of index order on purpose
    epoch = _schema_3_file(path, op, _AREAS[3])
    store = SqliteStore(path, synchronous="OFF")
    try:
        assert (store.schema_version, store.epoch) == (len(sqlite_store._MIGRATIONS), epoch)
        tables = {
            r[0] for r in store._connection().execute("SELECT name FROM sqlite_master").fetchall()
        }
        assert not tables & {"operation_volumes", "operation_index_rows", "audit_time"}
        back = store.transact(lambda tx: tx.get_operation("op"), write=False)
        assert back is not None and _same(back.volumes, op.volumes)
        # Schema 5 rescaled the entries into INDEX_UNITS: each is the box a write now stores.
        stored = store._connection().execute(
            "SELECT lon0, lon1, lat0, lat1, alt0, alt1, t0, t1 FROM operation_index"
        )
        for row, box in zip(sorted(stored), sorted(store._ops.boxes(op.volumes)), strict=True):
            lo, hi = np.array(box[0::2]), np.array(box[1::2])
            assert np.all(np.array(row[0::2]) <= lo) and np.all(np.array(row[1::2]) >= hi)
            assert np.allclose(row, box, rtol=1e-6)
        sub = store.transact(lambda tx: tx.get_subscription("sub"), write=False)
        assert sub is not None and _same(sub.volumes, (_AREAS[3],)) and sub.notification_index == 4
        assert [
            s.id for s in store.transact(lambda tx: tx.subscription_candidates([_AREAS[3]]))
        ] == ["sub"]
        # The entries indexed under schema 3 are found again and moved by the next write.
        moved = Operation("op", "alpha", OperationState.ACCEPTED, 0, (_AREAS[3],), "v2", 2, T, T)
        store.transact(lambda tx: tx.put_operation(moved))
        assert _entries_by_rowid(store) == {7: 1}
        assert store.transact(lambda tx: tx.operation_candidates([_AREAS[0]]), write=False) == []
        store.transact(lambda tx: tx.delete_subscription("sub"))
        assert store.transact(lambda tx: tx.subscription_candidates([_AREAS[3]])) == []
    finally:
        store.close()


def _schema_4_blob(volumes: tuple[Volume, ...]) -> bytes:
    """Volumes as migration 4 and the code of its day packed them (before stores.codec): each
    volume's altitude band, time window and footprint length, then the footprint, no list head."""
    return b"".join(
        struct.pack(
            "<4dI",
            v.altitude_lower_m,
            v.altitude_upper_m,
            v.start,
            v.end,
            len(fp := v.footprint.to_bytes()),
        )
        + fp
        for v in volumes
    )


def test_volumes_packed_before_the_codec_are_read_again_after_migration_6(tmp_path: Path) -> None:
    """Files of schema 4 and 5 written before the store kept volumes in stores.codec's form
    (commit 8035991) held blobs no later code could read, mixed with codec blobs written by the
    code that could not read them: migration 6 recodes the old ones and leaves the others be."""
    path = tmp_path / "schema4.db"
    old = operation("old", _AREAS[2], _AREAS[0])
    new = operation("new", _AREAS[1])
    store = SqliteStore(path, synchronous="OFF")
    store.transact(lambda tx: [tx.put_operation(op) for op in (old, new, operation("none"))])
    store.transact(
        lambda tx: tx.put_subscription(Subscription("sub", "alpha", (_AREAS[3],), "sv", 4, T, T))
    )
    store.close()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("UPDATE operations SET volumes = ? WHERE id = 'old'", (_schema_4_blob(old.volumes),))
    db.execute("UPDATE operations SET volumes = x'' WHERE id = 'none'")  # migration 4's default
    db.execute("UPDATE subscriptions SET volumes = ?", (_schema_4_blob((_AREAS[3],)),))
    kept = db.execute("SELECT volumes FROM operations WHERE id = 'new'").fetchone()[0]
    db.execute("PRAGMA user_version = 5")
    db.close()

    store = SqliteStore(path, synchronous="OFF")
    try:
        assert store.schema_version == len(sqlite_store._MIGRATIONS) == 6
        got = store.transact(lambda tx: {op.id: op for op in tx.list_operations("alpha")})
        assert _same(got["old"].volumes, old.volumes) and _same(got["new"].volumes, new.volumes)
        assert got["none"].volumes == ()
        sub = store.transact(lambda tx: tx.get_subscription("sub"), write=False)
        assert sub is not None and _same(sub.volumes, (_AREAS[3],))
        row = store._connection().execute("SELECT volumes FROM operations WHERE id = 'new'")
        assert row.fetchone()[0] == kept
    finally:
        store.close()


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(0, 3), min_size=0, max_size=40),
    st.sets(st.integers(1, 40), max_size=10),
    st.floats(-1.0, 12.0),
)
def test_the_audit_seq_at_a_time_is_found_by_binary_search_as_by_a_scan(
    steps: list[int], removed: set[int], at: float
) -> None:
    """Times never decrease along the log; entries may be missing (a tampered log)."""
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "store.db", synchronous="OFF", checkpoint_every_s=0)
        try:
            entries, time = [], 0.0
            for step in steps:
                time += step * 0.25
                entries.append(
                    next_entry(entries[-1] if entries else None, time, "a", "x", "s", {})
                )
            store.transact(lambda tx: [tx.audit_append(e) for e in entries])
            store.transact(
                lambda tx: tx.db.executemany(
                    "DELETE FROM audit_log WHERE seq = ?", [(s,) for s in removed]
                )
            )
            kept = [e for e in entries if e.seq not in removed]
            wanted = max((e.seq for e in kept if e.time < at), default=0)
            assert store.transact(lambda tx: tx.audit_seq_at(at), write=False) == wanted
        finally:
            store.close()
