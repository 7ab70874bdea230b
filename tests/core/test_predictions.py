"""Tests for core.predictions: the life of a prediction in the store, filters, expiry,
accuracy, writes from several threads, and nothing lost across a restart; on both backends
(a SQLite file, and a PostgreSQL database on the server tests/core/conftest.py starts), the
SQLite file's own properties (WAL mode, query plans, locking, migration) on SQLite alone."""

import math
import socket
import sqlite3
import threading
import time

import numpy as np
import pytest

from core.predictions import (
    MAX_LIMIT,
    SCHEMA_VERSION,
    NewPrediction,
    PendingPrediction,
    PredictionStore,
)
from core.rewards import Resolution, resolve_prediction

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC, ms
MIN = 60_000


def new(**overrides) -> NewPrediction:
    """A CNN BUY on ETH/USDT's 1m candle opening at T0 + 1 min, predicted 10 s before."""
    fields = {
        "model": "cnn",
        "model_step": 7,
        "symbol": "ETH/USDT",
        "timeframe": "1m",
        "created_ts": T0 + 50_000,
        "target_ts": T0 + MIN,
        "reference_price": 100.0,
        "action": "BUY",
        "confidence": 0.5,
    }
    fields.update(overrides)
    return NewPrediction(**fields)


def resolution(correct: bool = True, reward: float = 0.2) -> Resolution:
    return Resolution(100.0, 103.0, 99.5, 102.0, 40.0, 0.02, 0.01, 0.25, correct, reward)


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request, tmp_path):
    """Where a store lives: a SQLite file, or a fresh PostgreSQL database's URL."""
    if request.param == "postgresql":
        return request.getfixturevalue("pg_url")
    return tmp_path / "p.db"


@pytest.fixture
def store(location):
    s = PredictionStore(location)
    yield s
    s.close()


@pytest.fixture
def sqlite_store(tmp_path):
    s = PredictionStore(tmp_path / "predictions.db")
    yield s
    s.close()


# ----------------------------------------------------------------------- the file


def test_wal_mode_normal_sync_and_schema_version(sqlite_store, tmp_path):
    # journal_mode=WAL is a property of the file: another connection sees it too.
    other = sqlite3.connect(tmp_path / "predictions.db")
    try:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert other.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    finally:
        other.close()
    assert sqlite_store._conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


def test_creates_the_parent_folder(tmp_path):
    with PredictionStore(tmp_path / "data" / "deep" / "p.db") as s:
        assert s.add(new()) == 1
    assert (tmp_path / "data" / "deep" / "p.db").exists()


def test_a_file_of_another_schema_version_is_refused(tmp_path):
    path = tmp_path / "p.db"
    PredictionStore(path).close()
    raw = sqlite3.connect(path)
    with raw:
        raw.execute("UPDATE schema_version SET version = 99")
    raw.close()
    with pytest.raises(RuntimeError, match="schema version"):
        PredictionStore(path)


def test_a_postgresql_database_is_created_versioned_and_another_version_refused(pg_url):
    import psycopg

    with PredictionStore(pg_url) as s:
        s.add(new())
    with psycopg.connect(pg_url, autocommit=True) as raw:
        assert raw.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        assert raw.execute("SELECT model, status FROM predictions").fetchall() == [
            ("cnn", "pending")]
        raw.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(RuntimeError, match="schema version"):
        PredictionStore(pg_url)


def test_two_stores_opening_one_new_postgresql_database_at_once_create_it_once(pg_url):
    opened, errors = [], []

    def open_one(i: int) -> None:
        try:  # four writers of one database, each of its own symbol
            opened.append(PredictionStore(pg_url, symbols=[f"S{i}/USDT"]))
        except Exception as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=open_one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in opened:
        s.close()
    assert errors == [] and len(opened) == 4


def test_an_unreachable_postgresql_url_is_one_line_naming_the_key_and_address():
    from core.services import StartupError, open_store

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql://tickwise:hunter2@127.0.0.1:{port}/db"
    with pytest.raises(StartupError) as caught:
        open_store(url)
    text = str(caught.value)
    assert text.startswith(f"store.url postgresql://tickwise:***@127.0.0.1:{port}/db: cannot "
                           "connect (")
    assert "hunter2" not in text and "\n" not in text


def test_store_url_chooses_the_store(tmp_path):
    from pathlib import Path

    from core.services import StartupError, store_location

    assert store_location("", tmp_path) == tmp_path / "predictions.sqlite"
    assert store_location("sqlite:///data/x.sqlite", tmp_path) == Path("data/x.sqlite")
    assert store_location("sqlite:////tmp/x.sqlite", tmp_path) == Path("/tmp/x.sqlite")
    assert store_location("postgresql://u@h:5432/d", tmp_path) == "postgresql://u@h:5432/d"
    with pytest.raises(StartupError, match=r"^store.url 'mysql://u:\*\*\*@h/d': expected"):
        store_location("mysql://u:secret@h/d", tmp_path)


def test_queries_use_the_indexes(sqlite_store):
    def plan(sql, params=()):
        return " ".join(row[3] for row in sqlite_store._conn.execute("EXPLAIN QUERY PLAN " + sql, params))

    pending = plan("SELECT id FROM predictions WHERE status = 'pending' ORDER BY id")
    assert "ix_predictions_status" in pending
    listing = plan(
        "SELECT id FROM predictions WHERE +model = ? ORDER BY created_ts DESC, id DESC LIMIT 5",
        ("cnn",),
    )
    assert "ix_predictions_created" in listing and "TEMP B-TREE" not in listing
    card = plan("SELECT id FROM predictions WHERE status = ? AND model = ? AND +symbol = ? "
                "ORDER BY created_ts DESC, id DESC LIMIT 5", ("resolved", "cnn", "a"))
    assert "ix_predictions_status" in card and "TEMP B-TREE" not in card
    seen = plan("SELECT 1 FROM predictions WHERE model = ? AND symbol = ? AND timeframe = ? "
                "AND target_ts = ?", ("cnn", "a", "1m", 1))
    assert "COVERING INDEX ux_predictions_target" in seen
    kept = plan("SELECT created_ts, id FROM predictions WHERE status = 'resolved' AND model = ? "
                "ORDER BY created_ts DESC, id DESC LIMIT 1 OFFSET 999", ("cnn",))
    assert "ix_predictions_status" in kept and "TEMP B-TREE" not in kept
    aged = plan("SELECT id FROM predictions WHERE created_ts < ? AND +status != 'pending' "
                "ORDER BY created_ts LIMIT 10", (5,))
    assert "ix_predictions_created" in aged and "TEMP B-TREE" not in aged


# ----------------------------------------------------------------------- a prediction's life


def test_add_pending_resolve_recent(store):
    state = np.arange(12, dtype=np.float32).reshape(3, 4)
    pred_id = store.add(new(predicted_ohlcv=(100.0, 102.0, 99.0, 101.0, 50.0), state=state))
    store.add(new(model="dqn", action="HOLD", confidence=0.25, executed=True))

    waiting = store.pending("ETH/USDT", "1m", T0 + MIN)
    assert [p.model for p in waiting] == ["cnn", "dqn"]
    cnn = waiting[0]
    assert cnn == PendingPrediction(
        id=pred_id,
        model="cnn",
        model_step=7,
        symbol="ETH/USDT",
        timeframe="1m",
        created_ts=T0 + 50_000,
        target_ts=T0 + MIN,
        reference_price=100.0,
        action="BUY",
        confidence=0.5,
        predicted_ohlcv=(100.0, 102.0, 99.0, 101.0, 50.0),
        executed=False,
    )
    assert waiting[1].predicted_ohlcv is None and waiting[1].executed is True
    for loaded in (cnn.state, store.load_state(pred_id)):
        assert loaded.dtype == np.float32 and loaded.shape == (3, 4)
        np.testing.assert_array_equal(loaded, state)
    assert waiting[1].state is None and store.load_state(waiting[1].id) is None

    outcome = resolve_prediction(cnn, (100.0, 103.0, 99.5, 102.0, 40.0))
    assert store.resolve(pred_id, outcome, resolved_ts=T0 + 2 * MIN) is True

    assert [p.model for p in store.pending("ETH/USDT", "1m", T0 + MIN)] == ["dqn"]
    # The state lives on in the experience the service made; the store lets it go.
    assert store.load_state(pred_id) is None
    row = store.recent(status="resolved")[0]
    assert "state" not in row
    assert row["id"] == pred_id and row["status"] == "resolved"
    assert row["resolved_ts"] == T0 + 2 * MIN
    assert (row["actual_open"], row["actual_high"], row["actual_low"]) == (100.0, 103.0, 99.5)
    assert (row["actual_close"], row["actual_volume"]) == (102.0, 40.0)
    assert (row["pred_close"], row["pred_volume"]) == (101.0, 50.0)
    assert row["price_error"] == pytest.approx(1 / 102)
    assert row["volume_error"] == pytest.approx(0.25)
    assert row["action_correct"] is True
    assert row["reward"] == pytest.approx(0.2)  # 10 * 0.02 * (0.5 + 0.5)
    assert row["model_step"] == 7 and row["executed"] is False


def test_pending_matches_only_its_candle(store):
    store.add_many(
        [
            new(),
            new(symbol="BTC/USDT"),
            new(timeframe="1h", target_ts=T0 + 60 * MIN),
            new(target_ts=T0 + 2 * MIN),
        ]
    )
    assert [p.id for p in store.pending("ETH/USDT", "1m", T0 + MIN)] == [1]
    assert [p.id for p in store.pending("ETH/USDT", "1m", T0 + 2 * MIN)] == [4]
    assert store.pending("ETH/USDT", "1m", T0) == []


def test_a_second_resolve_is_a_no_op(store):
    first, second = store.add_many([new(), new(model="dqn")])
    assert store.resolve(first, resolution(reward=0.2), T0 + 2 * MIN) is True
    # The second resolve (a late duplicate with other numbers) changes nothing.
    assert store.resolve(first, resolution(correct=False, reward=-9.0), T0 + 3 * MIN) is False
    assert store.get(first)["reward"] == pytest.approx(0.2)
    assert store.get(first)["resolved_ts"] == T0 + 2 * MIN
    # resolve_many counts only the ones that were still pending.
    assert store.resolve_many([(first, resolution()), (second, resolution())], T0 + 3 * MIN) == 1
    assert store.resolve_many([(first, resolution()), (second, resolution())], T0 + 4 * MIN) == 0
    assert store.resolve(12345, resolution(), T0) is False  # unknown id


def test_resolve_many_is_all_or_nothing(store):
    ok = store.add(new())
    with pytest.raises(ValueError, match="Resolution"):
        store.resolve_many([(ok, resolution()), (ok, "not a resolution")], T0)
    assert store.get(ok)["status"] == "pending"
    # Everything is checked before anything changes: the table's CHECK would refuse an
    # action_correct of 2 (it must be 0 or 1), so the store refuses it first.
    bad = Resolution(1.0, 1.0, 1.0, 1.0, 1.0, 0.0, None, None, 2, 0.0)  # type: ignore[arg-type]
    other = store.add(new(model="dqn"))
    with pytest.raises(ValueError, match=f"action_correct must be True or False, got 2 .id {other}"):
        store.resolve_many([(ok, resolution()), (other, bad)], T0)
    assert store.get(ok)["status"] == "pending"
    assert store.resolve(ok, resolution(), T0) is True  # and the store is still usable


def test_add_many_returns_ids_in_order(store):
    ids = store.add_many([new(model=f"m{i}") for i in range(5)])
    assert ids == [1, 2, 3, 4, 5]
    assert store.add_many([]) == []
    assert [store.get(i)["model"] for i in ids] == ["m0", "m1", "m2", "m3", "m4"]


# ----------------------------------------------------------------------- expiry


def test_a_day_candle_expires_from_its_close_not_its_open(store):
    day = store.add(new(timeframe="1d", target_ts=T0))
    # Eleven hours after the day opened (600 s of expiry long past the open): still pending.
    assert store.expire_closed_before(T0 + 11 * 60 * MIN, T0 + 11 * 60 * MIN + 600_000) == 0
    assert store.get(day)["status"] == "pending"
    # A minute past its close (T0 + 1 day), the cutoff passes it: expired.
    assert store.expire_closed_before(T0 + 24 * 60 * MIN + MIN, T0 + 25 * 60 * MIN) == 1
    assert store.get(day)["status"] == "expired"


def test_expire_closed_before(store):
    old = store.add(new(target_ts=T0))
    older_resolved = store.add(new(model="dqn", target_ts=T0))
    at_cutoff = store.add(new(target_ts=T0 + MIN))
    fresh = store.add(new(target_ts=T0 + 2 * MIN))
    store.resolve(older_resolved, resolution(), T0 + MIN)

    assert [p.id for p in store.pending_before(T0 + MIN)] == [old]
    assert store.pending_before(T0 + MIN)[0].target_ts == T0
    assert [p.id for p in store.pending_before(T0 + 3 * MIN)] == [old, at_cutoff, fresh]
    # Closed (a 1m candle after target_ts) strictly before the cutoff: only `old`; the
    # resolved one keeps its outcome.
    assert store.expire_closed_before(T0 + 2 * MIN, now_ts=T0 + 10 * MIN) == 1
    assert store.get(old)["status"] == "expired"
    assert store.get(old)["resolved_ts"] == T0 + 10 * MIN
    assert store.get(older_resolved)["status"] == "resolved"
    assert store.get(at_cutoff)["status"] == "pending"
    assert store.expire_closed_before(T0 + 2 * MIN, now_ts=T0 + 11 * MIN) == 0
    # An expired prediction can no longer be resolved.
    assert store.resolve(old, resolution(), T0 + 12 * MIN) is False
    assert [p.id for p in store.pending_before(T0 + 3 * MIN)] == [at_cutoff, fresh]


# ----------------------------------------------------------------------- listing


def test_recent_newest_first_with_filters_and_limit(store):
    a = store.add(new(created_ts=T0 + 1000))
    b = store.add(new(created_ts=T0 + 3000, model="dqn", action="SELL"))
    c = store.add(new(created_ts=T0 + 2000, symbol="BTC/USDT"))
    d = store.add(new(created_ts=T0 + 3000, timeframe="1h", target_ts=T0 + 60 * MIN))
    e = store.add(new(created_ts=T0 + 500, model="cob", action="UP"))
    store.resolve(c, resolution(), T0 + MIN)

    ids = [row["id"] for row in store.recent()]
    assert ids == [d, b, c, a, e]  # created_ts desc; the tie at +3000 by id desc
    assert [row["id"] for row in store.recent(limit=2)] == [d, b]
    assert [row["id"] for row in store.recent(model="cnn")] == [d, c, a]
    assert [row["id"] for row in store.recent(model="cnn", symbol="ETH/USDT")] == [d, a]
    assert [row["id"] for row in store.recent(timeframe="1h")] == [d]
    assert [row["id"] for row in store.recent(status="resolved")] == [c]
    assert [row["id"] for row in store.recent(status="pending", model="cnn")] == [d, a]
    assert store.recent(model="nobody") == []
    assert store.recent(limit=MAX_LIMIT) == store.recent()


@pytest.mark.parametrize("limit", [0, -1, MAX_LIMIT + 1, 2.5, "10", True, None])
def test_recent_rejects_a_limit_out_of_range(store, limit):
    with pytest.raises(ValueError, match="limit must be an integer from 1 to 1000"):
        store.recent(limit=limit)


def test_recent_rejects_unknown_status_and_bad_filters(store):
    with pytest.raises(ValueError, match="status must be one of pending, resolved, expired"):
        store.recent(status="done")
    with pytest.raises(ValueError, match="timeframe"):
        store.recent(timeframe="5x")
    with pytest.raises(ValueError, match="model must be a non-empty string"):
        store.recent(model="")


# ----------------------------------------------------------------------- counts and accuracy


def test_counts_and_accuracy_by_hand(store):
    # cnn 1m: 3 resolved, 2 correct -> 2/3; cnn 1h: 1 resolved, 0 correct -> 0;
    # dqn 1m: one expired, one pending -> no accuracy (never judged).
    ids = store.add_many([new(target_ts=T0 + k * MIN) for k in range(1, 5)])
    hour = store.add(new(timeframe="1h", target_ts=T0 + 60 * MIN))
    dqn_old = store.add(new(model="dqn", target_ts=T0))
    store.add(new(model="dqn", target_ts=T0 + 5 * MIN))
    store.resolve_many(
        [
            (ids[0], resolution(correct=True)),
            (ids[1], resolution(correct=True)),
            (ids[2], resolution(correct=False)),
            (hour, resolution(correct=False)),
        ],
        T0 + 2 * MIN,
    )
    assert store.expire_closed_before(T0 + 2 * MIN, T0 + 5 * MIN) == 1

    assert store.counts() == {
        "cnn": {"pending": 1, "resolved": 4, "expired": 0},
        "dqn": {"pending": 1, "resolved": 0, "expired": 1},
    }
    acc = store.accuracy()
    assert set(acc) == {("cnn", "1m"), ("cnn", "1h")}
    assert acc[("cnn", "1m")] == {"resolved": 3, "correct": 2, "accuracy": pytest.approx(2 / 3)}
    assert acc[("cnn", "1h")] == {"resolved": 1, "correct": 0, "accuracy": 0.0}
    assert store.get(dqn_old)["status"] == "expired"


def test_empty_store(store):
    assert store.counts() == {}
    assert store.accuracy() == {}
    assert store.recent() == []
    assert store.pending_before(T0) == []
    assert store.load_state(1) is None
    assert store.get(1) is None


# ----------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("confidence", math.nan, r"confidence must be within \[0, 1\]"),
        ("confidence", 1.5, r"confidence must be within \[0, 1\]"),
        ("action", "buy", "action must be one of BUY, SELL, HOLD, UP, DOWN"),
        ("timeframe", "1x", "not a timeframe"),
        ("reference_price", 0.0, "reference_price must be a finite number > 0"),
        ("reference_price", math.inf, "reference_price"),
        ("model", "", "model must be a non-empty string"),
        ("model_step", -1, "model_step must be >= 0"),
        ("model_step", True, "model_step must be an integer"),
        ("created_ts", 1.5, "created_ts must be an integer"),
        (
            "predicted_ohlcv",
            (1.0, 2.0, math.nan, 1.0, 1.0),
            "predicted_ohlcv must be 5 finite numbers",
        ),
        ("predicted_ohlcv", (1.0, 2.0), "predicted_ohlcv must be 5 finite numbers"),
        ("state", [1.0, 2.0], "state must be a numpy array"),
        ("executed", 1, "executed must be True or False"),
    ],
)
def test_bad_prediction_values_are_refused(field, value, message):
    with pytest.raises(ValueError, match=message):
        new(**{field: value})


def test_numpy_scalars_are_stored_as_python_numbers(store):
    pred_id = store.add(
        new(
            model_step=np.int64(3),
            created_ts=np.int64(T0),
            confidence=np.float32(0.75),
            reference_price=np.float64(99.5),
            predicted_ohlcv=np.array([1.0, 2.0, 0.5, 1.5, 10.0], dtype=np.float32),
            executed=np.bool_(True),
        )
    )
    row = store.get(pred_id)
    assert (row["model_step"], row["created_ts"]) == (3, T0)
    assert (row["confidence"], row["reference_price"]) == (0.75, 99.5)
    assert (row["pred_low"], row["pred_volume"], row["executed"]) == (0.5, 10.0, True)


# ----------------------------------------------------------------------- threads


def test_concurrent_writes_from_two_threads_all_land(store):
    errors = []

    def writer(model: str) -> None:
        try:
            for i in range(200):
                store.add(new(model=model, created_ts=T0 + i, target_ts=T0 + (i + 1) * MIN))
                if i % 50 == 0:
                    store.recent(limit=10)  # reads interleaved with the other thread's writes
        except Exception as exc:  # surfaced below; a thread's exception is otherwise lost
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(m,)) for m in ("cnn", "dqn")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.counts() == {
        "cnn": {"pending": 200, "resolved": 0, "expired": 0},
        "dqn": {"pending": 200, "resolved": 0, "expired": 0},
    }
    ids = [row["id"] for row in store.recent(limit=1000)]
    assert sorted(ids) == list(range(1, 401))


def test_a_second_writing_process_is_refused_clearly_and_loses_nothing(tmp_path):
    # Ids are given in memory (write-behind), so one process writes a file; a second store on
    # the same file (as a second process would be) gets a clear error when it flushes.
    path = tmp_path / "p.db"
    first, second = PredictionStore(path), PredictionStore(path)
    mine = first.add(new(model="a"))
    first.flush()
    theirs = second.add(new(model="b"))
    assert theirs == mine  # both started from the same file
    with pytest.raises(RuntimeError, match="another process has written predictions"):
        second.flush()
    assert [p.id for p in second.pending("ETH/USDT", "1m", T0 + MIN)] == [theirs]  # still there
    with pytest.raises(RuntimeError, match="another process"):
        second.close()  # its rows can never be written: close says so too
    first.close()
    with PredictionStore(path) as s:
        assert {m: c["pending"] for m, c in s.counts().items()} == {"a": 1}


# ----------------------------------------------------------------------- restart safety


def test_pending_survive_a_restart_and_resolve_in_the_new_instance(location):
    path = location
    first = PredictionStore(path)
    state = np.linspace(0.0, 1.0, 5)
    kept = first.add(new(state=state))
    done = first.add(new(model="dqn"))
    first.resolve(done, resolution(reward=0.1), T0 + MIN)
    first.close()
    first.close()  # idempotent

    second = PredictionStore(path)
    waiting = second.pending("ETH/USDT", "1m", T0 + MIN)
    assert [p.id for p in waiting] == [kept]
    np.testing.assert_array_equal(second.load_state(kept), state)
    np.testing.assert_array_equal(waiting[0].state, state)
    assert second.get(done)["reward"] == pytest.approx(0.1)
    assert second.resolve(
        kept, resolve_prediction(waiting[0], (100.0, 101.0, 99.0, 101.0, 5.0)), T0 + MIN
    )
    second.close()

    with PredictionStore(path) as third:
        rows = {row["id"]: row for row in third.recent()}
        assert rows[kept]["status"] == "resolved"
        assert rows[kept]["actual_close"] == 101.0
        assert rows[kept]["reward"] == pytest.approx(0.1)  # BUY +1 %, conf 0.5: 10*0.01*1.0
        assert rows[done]["status"] == "resolved" and rows[done]["reward"] == pytest.approx(0.1)
        assert third.pending_before(T0 + 10 * MIN) == []
        assert third.counts() == {
            "cnn": {"pending": 0, "resolved": 1, "expired": 0},
            "dqn": {"pending": 0, "resolved": 1, "expired": 0},
        }


@pytest.mark.parametrize("state", [
    np.arange(12, dtype=np.float32).reshape(3, 4),
    np.linspace(0.0, 1.0, 5),  # float64
    np.zeros((5, 300), dtype=np.float32),
    np.array(2.5, dtype=np.float32),  # 0-d
    np.arange(6, dtype=np.int64)[::2],  # not contiguous
])
def test_state_bytes_round_trip(state):
    from core.predictions import decode_state, encode_state

    back = decode_state(encode_state(state))
    assert back.dtype == state.dtype and back.shape == state.shape
    np.testing.assert_array_equal(back, state)
    # the header is 4 + len("<f4") + 1 + 1 + 8 * ndim bytes; the rest is the raw data
    assert len(encode_state(state)) == 4 + len(state.dtype.str) + 2 + 8 * state.ndim + state.nbytes


def test_states_stored_by_older_versions_as_npy_still_decode():
    import io

    from core.predictions import decode_state

    buffer = io.BytesIO()
    np.save(buffer, np.arange(4, dtype=np.float32))
    np.testing.assert_array_equal(decode_state(buffer.getvalue()), [0, 1, 2, 3])
    with pytest.raises(ValueError, match="not a stored state"):
        decode_state(b"garbage!")


def test_writes_reach_the_file_at_the_flush_and_reads_see_them_before(sqlite_store, tmp_path):
    first = sqlite_store.add(new())
    second = sqlite_store.add(new(model="dqn"))
    sqlite_store.resolve(first, resolution(), T0 + 2 * MIN)
    assert sqlite_store.expire_closed_before(T0 + 3 * MIN, T0 + 12 * MIN) == 1  # the second
    other = sqlite3.connect(tmp_path / "predictions.db")  # as a backup or a report would
    assert other.execute("SELECT COUNT(*) FROM predictions").fetchone() == (0,)  # queued
    assert sqlite_store.flush() == 4  # two inserts, a resolution and an expiry: one transaction
    assert other.execute("SELECT id, status FROM predictions ORDER BY id").fetchall() == [
        (first, "resolved"), (second, "expired")]
    assert sqlite_store.flush() == 0  # nothing left
    third = sqlite_store.add(new(model="cob", action="UP"))
    assert sqlite_store.get(third)["status"] == "pending"  # a read sees it before the flush ...
    assert other.execute("SELECT COUNT(*) FROM predictions").fetchone() == (2,)  # ... and waits
    assert sqlite_store.flush() == 1
    assert other.execute("SELECT COUNT(*) FROM predictions").fetchone() == (3,)
    other.close()


def test_reads_see_recorded_rows_and_write_nothing(sqlite_store, tmp_path):
    # Flushed: cnn resolved (right), dqn pending. Then, queued only: dqn resolved (wrong), a
    # new cob and a new cnn (executed), an expired cnn. Every read must see the queued rows
    # exactly as it will after the flush, while the file stays as the first flush left it.
    done, waiting, old = sqlite_store.add_many([new(), new(model="dqn"), new(target_ts=T0)])
    sqlite_store.resolve(done, resolution(correct=True), T0 + 2 * MIN)
    sqlite_store.flush()
    other = sqlite3.connect(tmp_path / "predictions.db")  # what the file holds, read aside

    def file_rows():
        return other.execute("SELECT * FROM predictions ORDER BY id").fetchall()

    before = file_rows()
    sqlite_store.resolve(waiting, resolution(correct=False, reward=-0.1), T0 + 3 * MIN)
    cob = sqlite_store.add(new(model="cob", action="UP", created_ts=T0 + 55_000))
    late = sqlite_store.add(new(created_ts=T0 + 56_000, target_ts=T0 + 2 * MIN,
                         predicted_ohlcv=(1.0, 2.0, 0.5, 1.5, 9.0)))
    sqlite_store.mark_executed([late])
    assert sqlite_store.expire_closed_before(T0 + MIN + 1, T0 + 4 * MIN) == 1  # old closed at T0 + MIN

    seen = {
        "recent": sqlite_store.recent(),
        "resolved": sqlite_store.recent(status="resolved"),
        "cnn": sqlite_store.recent(model="cnn", limit=2),
        "get": [sqlite_store.get(i) for i in (done, waiting, old, cob, late, 99)],
        "frame": sqlite_store.resolved_frame().to_dict("records"),
        "counts": sqlite_store.counts(),
        "accuracy": sqlite_store.accuracy(),
        "state": sqlite_store.load_state(waiting),
    }
    assert file_rows() == before  # no read wrote anything
    assert [r["id"] for r in seen["recent"]] == [late, cob, old, waiting, done]
    assert [(r["id"], r["status"]) for r in seen["resolved"]] == [(waiting, "resolved"),
                                                                   (done, "resolved")]
    assert [r["id"] for r in seen["cnn"]] == [late, old]
    got = dict(zip((done, waiting, old, cob, late, 99), seen["get"]))
    assert got[99] is None and got[cob]["status"] == "pending"
    assert got[waiting]["reward"] == pytest.approx(-0.1) and got[waiting]["action_correct"] is False
    assert got[waiting]["resolved_ts"] == T0 + 3 * MIN
    assert (got[old]["status"], got[old]["resolved_ts"]) == ("expired", T0 + 4 * MIN)
    assert got[late]["executed"] is True and got[late]["pred_volume"] == 9.0
    assert [r["id"] for r in seen["frame"]] == [done, waiting]
    assert seen["counts"] == {"cnn": {"pending": 1, "resolved": 1, "expired": 1},
                              "cob": {"pending": 1, "resolved": 0, "expired": 0},
                              "dqn": {"pending": 0, "resolved": 1, "expired": 0}}
    assert seen["accuracy"] == {("cnn", "1m"): {"resolved": 1, "correct": 1, "accuracy": 1.0},
                                ("dqn", "1m"): {"resolved": 1, "correct": 0, "accuracy": 0.0}}
    assert seen["state"] is None

    assert sqlite_store.flush() == 5  # resolve, 2 inserts, executed, expiry
    assert file_rows() != before
    # After the flush, from the file alone, every read says the same.
    assert sqlite_store.recent() == seen["recent"]
    assert sqlite_store.recent(status="resolved") == seen["resolved"]
    assert sqlite_store.recent(model="cnn", limit=2) == seen["cnn"]
    assert [sqlite_store.get(i) for i in (done, waiting, old, cob, late, 99)] == seen["get"]
    assert sqlite_store.resolved_frame().to_dict("records") == seen["frame"]
    assert (sqlite_store.counts(), sqlite_store.accuracy()) == (seen["counts"], seen["accuracy"])
    other.close()
    sqlite_store.close()
    with PredictionStore(tmp_path / "predictions.db") as again:  # tallies rebuilt from the file
        assert (again.counts(), again.accuracy()) == (seen["counts"], seen["accuracy"])


def test_states_stay_in_memory_until_close_and_a_crash_loses_only_them(tmp_path):
    path = tmp_path / "p.db"
    store = PredictionStore(path)
    state = np.arange(3, dtype=np.float32)
    kept = store.add(new(state=state))
    store.flush()  # as the flush job does every half second
    raw = sqlite3.connect(path)
    assert raw.execute("SELECT state FROM predictions WHERE id = ?", (kept,)).fetchone() == (None,)
    np.testing.assert_array_equal(store.pending("ETH/USDT", "1m", T0 + MIN)[0].state, state)
    # A crash: a second instance opens the file while the first never closed.
    crashed = PredictionStore(path)
    survivor = crashed.pending("ETH/USDT", "1m", T0 + MIN)
    assert [p.id for p in survivor] == [kept] and survivor[0].state is None  # still resolves
    crashed._conn.close()
    store.close()  # a clean stop writes the states of what is still pending
    assert raw.execute("SELECT length(state) > 0 FROM predictions WHERE id = ?",
                       (kept,)).fetchone() == (1,)
    raw.close()
    with PredictionStore(path) as again:
        np.testing.assert_array_equal(again.pending("ETH/USDT", "1m", T0 + MIN)[0].state, state)


def test_a_failed_flush_keeps_its_rows_for_the_next(sqlite_store, tmp_path):
    kept = sqlite_store.add(new())
    blocker = sqlite3.connect(tmp_path / "predictions.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another connection holds the write lock
    sqlite_store._conn.execute("PRAGMA busy_timeout = 0")  # fail at once instead of waiting 5 s
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        sqlite_store.flush()
    sqlite_store.resolve(kept, resolution(), T0 + 2 * MIN)  # recorded meanwhile, after the insert
    assert sqlite_store.pending("ETH/USDT", "1m", T0 + MIN) == []  # the index is the truth
    blocker.execute("ROLLBACK")
    assert sqlite_store.health_status()["state"] == "DOWN"
    assert sqlite_store.flush() == 0  # backing off: not tried yet
    while not sqlite_store.health.may_try():
        time.sleep(0.05)
    assert sqlite_store.flush() == 2  # the insert, then its resolution
    assert sqlite_store.health_status()["state"] == "OK"
    assert sqlite_store.get(kept)["status"] == "resolved"
    blocker.close()


def test_record_resolves_and_adds_in_one_transaction(store):
    old = store.add_many([new(target_ts=T0 + MIN), new(model="dqn", target_ts=T0 + MIN)])
    first = store.add(new(target_ts=T0 + 2 * MIN))
    store.resolve(first, resolution(), T0 + 2 * MIN + 1)  # resolved already: left as it is
    done, ids = store.record(
        [(old[0], resolution(), T0 + 2 * MIN), (old[0], resolution(), T0 + 9 * MIN),  # twice: once
         (old[1], resolution(), T0 + 2 * MIN + 2), (first, resolution(), T0 + 9 * MIN)],
        [new(target_ts=T0 + 3 * MIN), new(model="cob", action="UP", target_ts=T0 + 3 * MIN)])
    assert done == 2
    assert ids == [first + 1, first + 2]  # the ids SQLite would have given, in order
    assert store.get(old[0])["resolved_ts"] == T0 + 2 * MIN  # the first resolution of it won
    assert store.get(old[1])["resolved_ts"] == T0 + 2 * MIN + 2
    assert store.get(first)["resolved_ts"] == T0 + 2 * MIN + 1
    assert [p.id for p in store.pending("ETH/USDT", "1m", T0 + 3 * MIN)] == ids
    assert not store.pending("ETH/USDT", "1m", T0 + MIN)
    assert store.add(new(target_ts=T0 + 4 * MIN)) == first + 3  # SQLite carries on after them


def test_a_failing_record_changes_nothing(store):
    pending = store.add(new(target_ts=T0 + MIN))
    with pytest.raises(ValueError, match="expected a NewPrediction"):
        store.record([(pending, resolution(), T0 + 2 * MIN)], [new(), "not a prediction"])
    assert [p.id for p in store.pending("ETH/USDT", "1m", T0 + MIN)] == [pending]
    assert store.counts()["cnn"] == {"pending": 1, "resolved": 0, "expired": 0}


def test_recording_flushing_and_reading_at_once_lose_nothing(store):
    # The cycle records (new rows and resolutions) while the flush job writes and the status
    # reads, as in the app: at the end the file says exactly what the index said.
    stop = threading.Event()
    errors: list[Exception] = []
    resolved: set[int] = set()

    def cycle() -> None:
        previous: list[int] = []
        for k in range(300):
            done, ids = store.record(
                [(i, resolution(), T0 + (k + 1) * MIN) for i in previous],
                [new(model=m, target_ts=T0 + (k + 1) * MIN) for m in ("cnn", "dqn", "cob")])
            assert done == len(previous)
            resolved.update(previous)
            previous = ids

    def keep(job) -> None:
        try:
            while not stop.is_set():
                job()
        except Exception as exc:  # surfaced by the assert below
            errors.append(exc)

    others = [threading.Thread(target=keep, args=(job,)) for job in (
        store.flush, store.counts, lambda: store.recent(limit=20))]
    for t in others:
        t.start()
    try:
        cycle()
    finally:
        stop.set()
        for t in others:
            t.join()
    assert errors == []
    store.flush()
    rows = dict(store._read("SELECT id, status FROM predictions"))
    assert len(rows) == 900 and sorted(rows) == list(range(1, 901))
    assert {i for i, s in rows.items() if s == "resolved"} == resolved  # 897
    assert {i for i, s in rows.items() if s == "pending"} == set(store._index.pending)  # last 3


# ----------------------------------------------------------------------- one prediction per candle


def test_a_model_predicts_a_candle_once_even_across_a_restart(tmp_path):
    path = tmp_path / "p.db"
    with PredictionStore(path) as first:
        kept = first.add(new())
        first.add(new(model="dqn"))  # another model may predict the same candle
        with pytest.raises(ValueError, match="cnn has already predicted the ETH/USDT 1m candle"):
            first.add(new(confidence=0.9))  # unflushed: the index knows
        with pytest.raises(ValueError, match="already predicted"):
            first.add_many([new(target_ts=T0 + 5 * MIN), new(target_ts=T0 + 5 * MIN)])
        with pytest.raises(ValueError, match="already predicted"):
            first.record([(kept, resolution(), T0 + 2 * MIN)], [new(model="dqn")])
        assert first.counts()["cnn"] == {"pending": 1, "resolved": 0, "expired": 0}  # nothing
        assert first.pending("ETH/USDT", "1m", T0 + MIN)[0].id == kept  # changed by a refusal
        first.flush()
        first.resolve(kept, resolution(), T0 + 2 * MIN)
        with pytest.raises(ValueError, match="already predicted"):
            first.add(new())  # resolved, flushed or not
    with PredictionStore(path) as second:  # a restart: the market rewinds to before T0
        earlier = new(target_ts=T0, created_ts=T0 - 10_000)  # never predicted: allowed
        again = [new(), new(model="dqn"), new(model="cob", action="UP"), earlier]
        assert second.unpredicted(again) == [again[2], earlier]
        with pytest.raises(ValueError, match="already predicted"):
            second.record([], again)
        assert second.add_many([again[2], earlier]) == [3, 4]
        assert second.unpredicted(again) == []
        assert second.counts() == {"cnn": {"pending": 1, "resolved": 1, "expired": 0},
                                   "cob": {"pending": 1, "resolved": 0, "expired": 0},
                                   "dqn": {"pending": 1, "resolved": 0, "expired": 0}}
    raw = sqlite3.connect(path)
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):  # the file refuses one too
        raw.execute("INSERT INTO predictions (model, model_step, symbol, timeframe, created_ts, "
                    "target_ts, reference_price, action, confidence) "
                    "VALUES ('cnn', 0, 'ETH/USDT', '1m', 0, ?, 1.0, 'BUY', 0.5)", (T0 + MIN,))
    raw.close()


def test_a_version_1_file_is_migrated_keeping_each_candle_once(tmp_path):
    from core.predictions import schema

    path = tmp_path / "old.db"
    raw = sqlite3.connect(path, isolation_level=None)
    raw.executescript(schema._SCHEMA)  # the table as version 1 had it, and its indexes
    raw.execute("CREATE INDEX ix_predictions_accuracy ON predictions "
                "(status, model, timeframe, action_correct)")
    raw.execute("INSERT INTO schema_version VALUES (1)")
    for i, pred in enumerate([new(), new(model="dqn"), new(), new(target_ts=T0 + 2 * MIN),
                              new(confidence=0.9)], start=1):  # ids 3 and 5 repeat id 1
        raw.execute(schema.INSERT, (i, *pred.row()))
    raw.execute("UPDATE predictions SET status = 'resolved', action_correct = id % 2, "
                "actual_close = 1.0 WHERE id IN (1, 2, 3)")
    raw.close()
    with PredictionStore(path) as store:
        assert sorted(r["id"] for r in store.recent()) == [1, 2, 4]  # the first of each kept
        assert store.counts() == {"cnn": {"pending": 1, "resolved": 1, "expired": 0},
                                  "dqn": {"pending": 0, "resolved": 1, "expired": 0}}
        assert store.accuracy()[("cnn", "1m")] == {"resolved": 1, "correct": 1, "accuracy": 1.0}
        with pytest.raises(ValueError, match="already predicted"):
            store.add(new())
        assert store.add(new(target_ts=T0 + 3 * MIN)) == 5
    raw = sqlite3.connect(path)
    assert raw.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    raw.close()


# ----------------------------------------------------------------------- retention


def _scored_day(store, days: int, per_day: int = 30) -> None:
    """``days`` of predictions by cnn and dqn, a minute apart from midnight; the first of each
    day expires, the very last stays pending, the others resolve; a flush after each day."""
    for d in range(days):
        for k in range(per_day):
            ts = T0 + d * 1440 * MIN + k * MIN
            ids = store.add_many([new(model=m, created_ts=ts, target_ts=ts + MIN)
                                  for m in ("cnn", "dqn")])
            if k != 0 and not (d == days - 1 and k == per_day - 1):
                store.resolve_many([(i, resolution(correct=(k % 3 == 0))) for i in ids],
                                   ts + 2 * MIN)
        store.expire_closed_before(T0 + d * 1440 * MIN + 3 * MIN, T0 + (d + 1) * 1440 * MIN)
        store.flush()


def _shown(store, keep: int) -> dict:
    """Every store-derived number the page and /status show, the cards' scores included."""
    import pandas as pd

    from core.live.quality import model_quality

    cards = {}
    for m in ("cnn", "dqn"):
        rows = pd.DataFrame(store.recent(limit=keep, model=m, status="resolved"))
        cards[m] = model_quality(m, rows, ("accuracy",), 0.001, 7, 10)
    return {"counts": store.counts(), "accuracy": store.accuracy(), "cards": cards}


def test_pruning_by_age_and_rows_changes_no_number_shown(location):
    from core.predictions import Retention

    path = location
    keep = Retention(keep_days=2, max_rows=100, keep_resolved=40, every_s=1e9, chunk=7)
    with PredictionStore(path, Retention(keep_days=1e4, max_rows=10**6)) as store:
        _scored_day(store, days=5)
        assert store.stored() == 300
        store.add(new(model="dqn", created_ts=T0 - 1, target_ts=T0))  # pending, the oldest
    with PredictionStore(path, keep) as store:
        before = _shown(store, keep=40)
        assert store.prune() == 301 - 100
        after = _shown(store, keep=40)
        assert after == before  # counts, accuracy and the cards' scores, unchanged
        assert store.stored() == 100
        rows = store.recent(limit=1000)
        assert len(rows) == 100
        assert rows[-1]["status"] == "pending"  # a pending prediction is never deleted
        assert min(r["created_ts"] for r in rows[:-1]) >= T0 + 3 * 1440 * MIN  # 2 days kept
        assert store.prune() == 0
    with PredictionStore(path, keep) as store:  # and after a restart
        assert _shown(store, keep=40) == before
        # A deleted candle still counts as predicted: a rewound market does not predict it.
        assert store.unpredicted([new(created_ts=T0, target_ts=T0 + MIN)]) == []


def test_pruning_keeps_each_models_newest_resolved_and_runs_from_the_flush(location):
    from core.predictions import Retention

    keep = Retention(keep_days=0.5, max_rows=10, keep_resolved=25, every_s=0.0, chunk=1000)
    with PredictionStore(location, keep) as store:
        _scored_day(store, days=2)
        # The flush pruned: a day ago is past the age, 120 rows over max_rows, yet each model
        # keeps its newest 25 resolved rows and the pending ones.
        rows = store.recent(limit=1000)
        assert store.stored() == len(rows) == 2 * 25 + 2
        for m in ("cnn", "dqn"):
            assert len(store.recent(limit=1000, model=m, status="resolved")) == 25
        assert store.counts()["cnn"] == {"pending": 1, "resolved": 57, "expired": 2}


def test_retention_settings_are_checked():
    from core.predictions import Retention

    with pytest.raises(ValueError, match="retention max_rows must be a number >= 1"):
        Retention(max_rows=0)


def test_a_listing_shared_by_pollers_follows_every_change(store):
    from core.predictions import Retention

    first = store.add(new())
    assert [r["status"] for r in store.recent()] == ["pending"]
    assert store.recent() == store.recent()  # the same answer while nothing changes
    store.mark_executed([first])
    assert store.recent()[0]["executed"] is True
    store.resolve(first, resolution(correct=False), T0 + 2 * MIN)
    assert store.recent()[0]["action_correct"] is False
    second = store.add(new(target_ts=T0 + 2 * MIN))
    assert [r["id"] for r in store.recent()] == [second, first]
    assert store.expire_closed_before(T0 + 4 * MIN, T0 + 5 * MIN) == 1
    assert [r["status"] for r in store.recent()] == ["expired", "resolved"]
    store.retention = Retention(max_rows=1, keep_resolved=0)
    store.flush()  # writes, then retention deletes the oldest row (the file's only)
    assert [r["id"] for r in store.recent()] == [second] and store.stored() == 1
