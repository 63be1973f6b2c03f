"""What only the SQLite store promises: one file that reopens as it was, an hour-aligned epoch,
index boxes rounded outward to float32, and retries when the database is busy."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from deconfliction.core.errors import Unavailable
from deconfliction.core.model import Operation, OperationState
from deconfliction.geo import Circle, Polygon, Volume
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
            lo = np.array([box[0], box[2], box[4], box[6] - e])
            hi = np.array([box[1], box[3], box[5], box[7] - e])
            assert np.all(stored[0::2] <= lo) and np.all(stored[1::2] >= hi)
            assert np.all(hi - lo >= 0) and np.all(stored[1::2] - hi < 1e-3 * np.maximum(1, hi))
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


FLOATS = st.one_of(
    st.floats(-1e30, 1e30, allow_nan=False),
    st.floats(-1e-40, 1e-40, allow_nan=False),  # float32 subnormals and zero
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.1, -0.1, 179.99999999, 86_400.3]),
)


@given(FLOATS)
def test_index_bounds_round_outward_to_the_nearest_float32(x: float) -> None:
    down, up = sqlite_store._down(x), sqlite_store._up(x)
    f = np.float32(x)
    assert np.float32(down) == down and np.float32(up) == up, "both are float32 values"
    assert down <= x <= up
    # Nothing float32 lies strictly between: one step out from each is past x.
    assert float(np.nextafter(np.float32(down), np.float32(np.inf))) > x or down == x
    assert float(np.nextafter(np.float32(up), np.float32(-np.inf))) < x or up == x
    assert down == x == up or float(f) in (down, up)


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


def test_a_long_wal_is_restarted_without_holding_writers_back(
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
            "PRAGMA busy_timeout = 0",  # a RESTART that waited would stop every writer
            "PRAGMA wal_checkpoint(RESTART)",
            f"PRAGMA busy_timeout = {store.busy_timeout_ms}",
        ]
        found = store.transact(lambda tx: tx.operation_candidates([v]), write=False)
        assert sorted(op.id for op in found) == ["a", "b"]
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
