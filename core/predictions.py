"""The prediction store: every prediction from ``pending`` to ``resolved`` or ``expired``.

SQLite in WAL mode. Threads share **one connection** opened with ``check_same_thread=False``
and guarded by a lock: the store is written from the scheduler's prediction and resolution jobs
and read by the status snapshot, all in one process, and a single connection keeps every
statement serialised without per-thread connections to track and close. Writes run in
``BEGIN IMMEDIATE`` transactions, so a second process on the same file (a backup, a report)
waits on the busy timeout instead of failing mid-transaction. One process writes a file.

**Write-behind.** The pending predictions are indexed in memory, and that index is the truth
about what is pending: ``record`` (the signal cycle's one write per market second), ``expire``
and ``mark_executed`` change it at once and queue their rows; ``flush`` writes everything
queued in one transaction (a scheduler job, every ``scheduler.store_flush_s`` wall seconds).
Every read flushes first, so a reader always sees what was recorded before it. The signal
cycle therefore never waits on SQLite (it spent ~0.35 ms a market second there: a statement
per row and a commit); a crash loses at most the rows of one flush interval. A flush that fails (disk full)
keeps its rows queued for the next one and raises to its caller.

Status moves one way only: ``pending -> resolved`` or ``pending -> expired``; every update
is guarded by ``status = 'pending'``, so a resolver and the expiry job can race harmlessly and
a second resolve of the same prediction is a no-op.

The pending index is small (one prediction per model, symbol and timeframe, plus any a restart
brought back), and resolving a closed candle reads no rows.
The model state a prediction was made from (``state``, 0.3-11 KB) lives only in that index
while the process runs, and is written to the file for the predictions still pending at
``close()``, so a restart can still turn them into experiences. Writing every state and
clearing it at resolution cost more SQLite time than the rest of the signal cycle's store
work together; a crash (no ``close()``) loses the states of the predictions then pending,
which still resolve, only without an experience to train on.

Behind this class's small interface the store can move to PostgreSQL/TimescaleDB without its
callers changing (see DESIGN.md, "Past one machine").
"""

from __future__ import annotations

import io
import math
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from core.rewards import ACTIONS, Resolution
from core.timeframes import parse_timeframe

_timeframe_ms = lru_cache(maxsize=32)(parse_timeframe)

SCHEMA_VERSION = 1
STATUSES = ("pending", "resolved", "expired")
MAX_LIMIT = 1000
BUSY_TIMEOUT_S = 5.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS predictions (
    id              INTEGER PRIMARY KEY,
    model           TEXT    NOT NULL,
    model_step      INTEGER NOT NULL,          -- the model's train_steps when it predicted
    symbol          TEXT    NOT NULL,
    timeframe       TEXT    NOT NULL,
    created_ts      INTEGER NOT NULL,          -- market time of the prediction, UTC ms
    target_ts       INTEGER NOT NULL,          -- open time of the predicted candle, UTC ms
    reference_price REAL    NOT NULL,          -- last close when predicted
    action          TEXT    NOT NULL,
    confidence      REAL    NOT NULL CHECK (confidence BETWEEN 0 AND 1),
    pred_open       REAL,
    pred_high       REAL,
    pred_low        REAL,
    pred_close      REAL,
    pred_volume     REAL,
    state           BLOB,                      -- the encoded model state, numpy .npy bytes
    executed        INTEGER NOT NULL DEFAULT 0 CHECK (executed IN (0, 1)),
    actual_open     REAL,
    actual_high     REAL,
    actual_low      REAL,
    actual_close    REAL,
    actual_volume   REAL,
    price_error     REAL,
    volume_error    REAL,
    action_correct  INTEGER CHECK (action_correct IN (0, 1)),
    reward          REAL,
    status          TEXT    NOT NULL DEFAULT 'pending'
                            CHECK (status IN ('pending', 'resolved', 'expired')),
    resolved_ts     INTEGER                    -- market time resolved or expired, UTC ms
);
-- The resolver's lookup: pending predictions of one candle.
CREATE INDEX IF NOT EXISTS ix_predictions_pending
    ON predictions (status, symbol, timeframe, target_ts);
-- Newest-first listings walk this backwards (created_ts DESC, then id DESC, no sort) and
-- check the filters on the way, stopping after `limit` matches.
CREATE INDEX IF NOT EXISTS ix_predictions_created ON predictions (created_ts);
-- Accuracy per (model, timeframe) and counts per (model, status). status leads so that
-- "resolved only" is one range, already grouped; action_correct makes it covering.
CREATE INDEX IF NOT EXISTS ix_predictions_accuracy
    ON predictions (status, model, timeframe, action_correct);
"""

_PRED_COLUMNS = ("pred_open", "pred_high", "pred_low", "pred_close", "pred_volume")
_ACTUAL_COLUMNS = ("actual_open", "actual_high", "actual_low", "actual_close", "actual_volume")
# Everything but the state blob, in table order: what recent() returns.
_LISTED_COLUMNS = (
    "id", "model", "model_step", "symbol", "timeframe", "created_ts", "target_ts",
    "reference_price", "action", "confidence", *_PRED_COLUMNS, "executed", *_ACTUAL_COLUMNS,
    "price_error", "volume_error", "action_correct", "reward", "status", "resolved_ts",
)  # fmt: skip
_PENDING_COLUMNS = (
    "id", "model", "model_step", "symbol", "timeframe", "created_ts", "target_ts",
    "reference_price", "action", "confidence", *_PRED_COLUMNS, "executed", "state",
)  # fmt: skip


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    return value


def _integer(name: str, value: Any, minimum: int | None = None) -> int:
    if type(value) is not int:  # a plain int is the usual case (bool is a subclass: refused)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return value


def _timeframe(value: Any) -> str:
    return _parsed_timeframe(_text("timeframe", value))


@lru_cache(maxsize=64)  # a handful of names, checked on every row
def _parsed_timeframe(name: str) -> str:
    parse_timeframe(name)  # raises ValueError saying what is allowed (not cached)
    return name


_STATE_MAGIC = b"TWS1"  # then: dtype str (numpy's, e.g. "<f4") + NUL, ndim, shape (int64 LE), data
_NPY_MAGIC = b"\x93NUMPY"  # blobs written before TWS1


def encode_state(state: np.ndarray | None) -> bytes | None:
    """A state array as bytes: dtype and shape kept, no pickle. A fixed little header and the
    raw data, so decoding is one ``np.frombuffer`` (``np.load``'s header parsing cost ~80 us a
    state, three times per closed candle)."""
    if state is None:
        return None
    arr = np.asarray(state)
    if arr.dtype.hasobject:
        raise ValueError("a state must be a numeric array")
    return b"".join((_STATE_MAGIC, arr.dtype.str.encode() + b"\0", bytes([arr.ndim]),
                     np.asarray(arr.shape, dtype="<i8").tobytes(), arr.tobytes()))


def decode_state(blob: bytes | None) -> np.ndarray | None:
    if blob is None:
        return None
    if blob.startswith(_NPY_MAGIC):  # a store written by an older Tickwise
        return np.load(io.BytesIO(blob), allow_pickle=False)
    if not blob.startswith(_STATE_MAGIC):
        raise ValueError(f"not a stored state (starts {bytes(blob[:8])!r})")
    end = blob.index(b"\0", len(_STATE_MAGIC))
    dtype = np.dtype(blob[len(_STATE_MAGIC):end].decode())
    ndim = blob[end + 1]
    shape = tuple(np.frombuffer(blob, dtype="<i8", count=ndim, offset=end + 2).tolist())
    return np.frombuffer(blob, dtype=dtype, offset=end + 2 + 8 * ndim).reshape(shape)


@dataclass(frozen=True)
class NewPrediction:
    """A prediction as a model makes it; validated on construction (bad value -> ValueError)."""

    model: str
    model_step: int  # the model's train_steps when it predicted
    symbol: str
    timeframe: str
    created_ts: int  # market time, UTC ms
    target_ts: int  # open time of the predicted candle, UTC ms
    reference_price: float  # last close when predicted
    action: str  # BUY/SELL/HOLD, or UP/DOWN for the order-book model
    confidence: float  # 0..1
    # Predicted candle in price units (core.rewards.absolute_ohlcv of the model's output).
    predicted_ohlcv: tuple[float, float, float, float, float] | None = None
    state: np.ndarray | None = None  # what the model predicted from, to train on later
    executed: bool = False  # a paper trade was executed from it

    def __post_init__(self) -> None:
        if self._canonical():
            return  # already as the store keeps it (the cycle's rows): nothing to convert
        _text("model", self.model)
        _text("symbol", self.symbol)
        _timeframe(self.timeframe)
        for name, minimum in (("model_step", 0), ("created_ts", None), ("target_ts", None)):
            object.__setattr__(self, name, _integer(name, getattr(self, name), minimum))
        price = float(self.reference_price)
        if not (math.isfinite(price) and price > 0):
            raise ValueError(
                f"reference_price must be a finite number > 0, got {self.reference_price!r}"
            )
        if self.action not in ACTIONS:
            raise ValueError(f"action must be one of {', '.join(ACTIONS)}, got {self.action!r}")
        confidence = float(self.confidence)
        if not 0.0 <= confidence <= 1.0:  # also rejects NaN
            raise ValueError(f"confidence must be within [0, 1], got {self.confidence!r}")
        object.__setattr__(self, "reference_price", price)
        object.__setattr__(self, "confidence", confidence)
        if self.predicted_ohlcv is not None:
            values = tuple(np.asarray(self.predicted_ohlcv, dtype=np.float64).reshape(-1).tolist())
            if len(values) != 5 or not all(math.isfinite(x) for x in values):
                raise ValueError(
                    f"predicted_ohlcv must be 5 finite numbers (o, h, l, c, v) or None, got {self.predicted_ohlcv!r}"
                )
            object.__setattr__(self, "predicted_ohlcv", values)
        if self.state is not None and not isinstance(self.state, np.ndarray):
            raise ValueError(
                f"state must be a numpy array or None, got {type(self.state).__name__}"
            )
        if not isinstance(self.executed, bool | np.bool_):
            raise ValueError(f"executed must be True or False, got {self.executed!r}")

    def _canonical(self) -> bool:
        """Whether every field already has the type and range the checks below would give it
        (one expression; any doubt goes through the checks, which say what is wrong)."""
        ohlcv = self.predicted_ohlcv
        return (type(self.model) is str and self.model != "" and type(self.symbol) is str
                and self.symbol != "" and type(self.timeframe) is str
                and _parsed_timeframe(self.timeframe) is not None
                and type(self.model_step) is int and self.model_step >= 0
                and type(self.created_ts) is int and type(self.target_ts) is int
                and type(self.reference_price) is float and 0.0 < self.reference_price < math.inf
                and self.action in ACTIONS
                and type(self.confidence) is float and 0.0 <= self.confidence <= 1.0
                and (ohlcv is None or (type(ohlcv) is tuple and len(ohlcv) == 5
                                       and all(type(x) is float and math.isfinite(x)
                                               for x in ohlcv)))
                and (self.state is None or type(self.state) is np.ndarray)
                and type(self.executed) is bool)

    def row(self) -> tuple:
        pred = self.predicted_ohlcv or (None,) * 5
        return (
            self.model, self.model_step, self.symbol, self.timeframe, self.created_ts,
            self.target_ts, self.reference_price, self.action, self.confidence, *pred,
            None, int(bool(self.executed)),  # the state stays in memory (see the module doc)
        )  # fmt: skip


_INSERT = (
    "INSERT INTO predictions (id, model, model_step, symbol, timeframe, created_ts, target_ts, "
    "reference_price, action, confidence, pred_open, pred_high, pred_low, pred_close, "
    "pred_volume, state, executed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_RESOLVE = (
    "UPDATE predictions SET actual_open = ?, actual_high = ?, actual_low = ?, actual_close = ?, "
    "actual_volume = ?, price_error = ?, volume_error = ?, action_correct = ?, reward = ?, "
    "status = 'resolved', resolved_ts = ?, state = NULL WHERE id = ? AND status = 'pending'"
)

_EXPIRE = ("UPDATE predictions SET status = 'expired', resolved_ts = ?, state = NULL "
           "WHERE id = ? AND status = 'pending'")
_EXECUTED = "UPDATE predictions SET executed = 1 WHERE id = ?"


@dataclass
class _Queue:
    """Rows waiting for the next flush, by statement."""

    inserts: list[tuple] = field(default_factory=list)
    resolves: list[tuple] = field(default_factory=list)
    expires: list[tuple] = field(default_factory=list)
    executed: list[tuple] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.inserts) + len(self.resolves) + len(self.expires) + len(self.executed)

    def then(self, later: _Queue) -> _Queue:
        """These rows, then ``later``'s (a failed flush's rows before the ones queued since)."""
        return _Queue(self.inserts + later.inserts, self.resolves + later.resolves,
                      self.expires + later.expires, self.executed + later.executed)


@dataclass(frozen=True)
class PendingPrediction:
    """A stored prediction still waiting for its candle, with the state it was made from (to
    train on once resolved; None if the model stored none). ``state`` is left out of ==."""

    id: int
    model: str
    model_step: int
    symbol: str
    timeframe: str
    created_ts: int
    target_ts: int
    reference_price: float
    action: str
    confidence: float
    predicted_ohlcv: tuple[float, float, float, float, float] | None
    executed: bool
    state: np.ndarray | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_row(cls, row: Sequence) -> PendingPrediction:
        pred = tuple(row[10:15])
        return cls(
            *row[:10],
            predicted_ohlcv=None if pred[3] is None else pred,  # type: ignore[arg-type]
            executed=bool(row[15]),
            state=decode_state(row[16]),
        )


def _resolution_row(resolution: Resolution, resolved_ts: int, pred_id: int) -> tuple:
    r = resolution
    if r.action_correct not in (0, 1):  # True and False are 0 and 1
        raise ValueError(f"action_correct must be True or False, got {r.action_correct!r} "
                         f"(id {pred_id})")
    return (
        r.actual_open, r.actual_high, r.actual_low, r.actual_close, r.actual_volume,
        r.price_error, r.volume_error, int(r.action_correct), r.reward, resolved_ts, pred_id,
    )  # fmt: skip


class PredictionStore:
    """Predictions in one SQLite file; safe to share between threads (see the module doc)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # the pending index, the queue and the next id
        self._db = threading.RLock()  # the connection; taken before _lock, never after it
        # isolation_level=None: no implicit transactions; _write() opens them explicitly.
        self._conn = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: durable across a process crash, may lose the last commits on
        # power loss; enough for predictions, which the next candle regenerates anyway.
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._closed = False
        self._pending: dict[int, PendingPrediction] = {}  # id -> pending prediction
        self._by_candle: dict[tuple[str, str, int], list[int]] = {}  # (symbol, tf, target) -> ids
        self._queue = _Queue()  # written by the next flush
        self._create_schema()
        self._load_pending()
        self._next_id = self._conn.execute(
            "SELECT coalesce(max(id), 0) + 1 FROM predictions").fetchone()[0]

    def _load_pending(self) -> None:
        """Build the in-memory index of pending predictions from the file."""
        rows = self._conn.execute(
            f"SELECT {', '.join(_PENDING_COLUMNS)} FROM predictions WHERE status = 'pending' "
            "ORDER BY id").fetchall()
        for row in rows:
            self._index(PendingPrediction.from_row(row))

    def _index(self, p: PendingPrediction) -> None:
        self._pending[p.id] = p
        self._by_candle.setdefault((p.symbol, p.timeframe, p.target_ts), []).append(p.id)

    def _unindex(self, pred_id: int) -> None:
        p = self._pending.pop(pred_id, None)
        if p is not None:
            key = (p.symbol, p.timeframe, p.target_ts)
            ids = self._by_candle[key]
            ids.remove(pred_id)
            if not ids:
                del self._by_candle[key]

    def _create_schema(self) -> None:
        with self._db:  # executescript commits on its own, so it opens its transaction
            self._conn.executescript(f"BEGIN IMMEDIATE;{_SCHEMA}COMMIT;")
        with self._write() as conn:
            found = conn.execute("SELECT version FROM schema_version").fetchall()
            if not found:
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            elif found != [(SCHEMA_VERSION,)]:
                raise RuntimeError(
                    f"{self.path} holds prediction store schema version {found}, this code "
                    f"reads version {SCHEMA_VERSION}; move the file aside or migrate it"
                )

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction on the connection; rolled back if anything inside raises."""
        with self._db:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def flush(self) -> int:
        """Write everything queued since the last flush in one transaction; returns how many
        rows it wrote. If the write fails, the rows stay queued and the error is raised."""
        with self._db:  # one flush at a time, in order
            with self._lock:
                queued, self._queue = self._queue, _Queue()
            if not queued:
                return 0
            try:
                with self._write() as conn:
                    # Inserts first: every other change is to a row already inserted.
                    for sql, rows in ((_INSERT, queued.inserts), (_RESOLVE, queued.resolves),
                                      (_EXPIRE, queued.expires), (_EXECUTED, queued.executed)):
                        if rows:
                            conn.executemany(sql, rows)
            except BaseException as exc:
                with self._lock:
                    self._queue = queued.then(self._queue)
                if "UNIQUE constraint failed: predictions.id" in str(exc):
                    raise RuntimeError(
                        f"{self.path}: another process has written predictions to this file; "
                        "the ids this store gave are taken. One process writes a prediction "
                        "store (give each its own runtime_dir)") from exc
                raise
            return len(queued)

    def _read(self, sql: str, params: Sequence = ()) -> list[tuple]:
        with self._db:
            self.flush()
            return self._conn.execute(sql, params).fetchall()

    # -- writing -------------------------------------------------------------------------

    def add(self, pred: NewPrediction) -> int:
        """Store a prediction as pending; returns its id."""
        return self.add_many([pred])[0]

    def add_many(self, preds: Iterable[NewPrediction]) -> list[int]:
        """Store predictions as pending (see ``record``); returns their ids in order."""
        return self.record([], preds)[1]

    def resolve(self, pred_id: int, resolution: Resolution, resolved_ts: int) -> bool:
        """Fill a pending prediction's outcome; False if it was not pending (already done)."""
        return self.resolve_many([(pred_id, resolution)], resolved_ts) == 1

    def resolve_many(self, items: Iterable[tuple[int, Resolution]], resolved_ts: int) -> int:
        """Resolve pending predictions (see ``record``); returns how many were pending."""
        return self.record([(pred_id, r, resolved_ts) for pred_id, r in items], [])[0]

    def record(self, resolved: Iterable[tuple[int, Resolution, int]],
               new: Iterable[NewPrediction]) -> tuple[int, list[int]]:
        """Fill the outcome of ``resolved`` (id, resolution, resolved market time) and store
        ``new`` as pending, in the index at once and in the file at the next flush (one
        transaction for all of it). Returns how many of ``resolved`` were still pending (the
        others were expired or resolved already: left as they are) and the new predictions'
        ids, in order. Everything is validated before anything changes.

        A signal cycle records everything it resolved and predicted with one call."""
        res_rows = []
        for pred_id, resolution, resolved_ts in resolved:
            if not isinstance(resolution, Resolution):
                raise ValueError(
                    f"expected a Resolution for id {pred_id}, got {type(resolution).__name__}"
                )
            res_rows.append(_resolution_row(resolution, _integer("resolved_ts", resolved_ts),
                                            _integer("id", pred_id)))
        preds = list(new)
        for pred in preds:
            if not isinstance(pred, NewPrediction):
                raise ValueError(f"expected a NewPrediction, got {type(pred).__name__}")
        with self._lock:
            self._check_open()
            pending = []
            for row in res_rows:
                if row[-1] in self._pending:  # once: the first resolution of an id wins
                    self._unindex(row[-1])
                    pending.append(row)
            ids = list(range(self._next_id, self._next_id + len(preds)))
            self._next_id += len(preds)
            for pred_id, pred in zip(ids, preds):
                self._index(PendingPrediction(
                    pred_id, pred.model, pred.model_step, pred.symbol, pred.timeframe,
                    pred.created_ts, pred.target_ts, pred.reference_price, pred.action,
                    pred.confidence, pred.predicted_ohlcv, bool(pred.executed), pred.state))
            self._queue.inserts += [(i, *p.row()) for i, p in zip(ids, preds)]
            self._queue.resolves += pending
        return len(pending), ids

    def mark_executed(self, ids: Iterable[int]) -> int:
        """Flag pending predictions that executed a paper trade (their experiences weigh more);
        returns how many were pending."""
        ids = [_integer("id", i) for i in ids]
        with self._lock:
            self._check_open()
            found = [i for i in ids if i in self._pending]
            for i in found:
                self._pending[i] = replace(self._pending[i], executed=True)
            self._queue.executed += [(i,) for i in found]
        return len(found)

    def expire_closed_before(self, cutoff_ts: int, now_ts: int) -> int:
        """Mark pending predictions whose candle should have closed (opened at target_ts, a
        timeframe long) before cutoff_ts expired; how many. By the close, not the open: a
        1d candle opens a day before it can resolve anything."""
        cutoff_ts = _integer("cutoff_ts", cutoff_ts)
        now_ts = _integer("now_ts", now_ts)
        with self._lock:
            self._check_open()
            old = [i for i, p in self._pending.items()
                   if p.target_ts + _timeframe_ms(p.timeframe) < cutoff_ts]
            for pred_id in old:
                self._unindex(pred_id)
            self._queue.expires += [(now_ts, i) for i in old]
        return len(old)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"the prediction store {self.path} is closed")

    # -- reading -------------------------------------------------------------------------

    def pending(self, symbol: str, timeframe: str, target_ts: int) -> list[PendingPrediction]:
        """Pending predictions (with their states) of the candle of ``symbol``/``timeframe``
        that opens at target_ts, oldest first: what the resolver needs when that candle
        closes. From the in-memory index: no SQLite read."""
        key = (symbol, timeframe, _integer("target_ts", target_ts))
        with self._lock:
            return [self._pending[i] for i in self._by_candle.get(key, ())]

    def pending_before(self, ts: int) -> list[PendingPrediction]:
        """Pending predictions (with states) whose candle opened before ts, oldest first."""
        ts = _integer("ts", ts)
        with self._lock:
            found = [p for p in self._pending.values() if p.target_ts < ts]
        return sorted(found, key=lambda p: (p.target_ts, p.id))

    def recent(
        self,
        limit: int = 50,
        model: str | None = None,
        symbol: str | None = None,
        timeframe: str | None = None,
        status: str | None = None,
    ) -> list[dict]:
        """The newest predictions (by market time, then id) matching every filter given.

        Each is a dict of the table's columns without the state blob; ``executed`` and
        ``action_correct`` are bools (the latter None until resolved).
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be an integer from 1 to {MAX_LIMIT}, got {limit!r}")
        if status is not None and status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
        filters = {"model": model, "symbol": symbol, "timeframe": timeframe, "status": status}
        where, params = [], []
        for column, value in filters.items():
            if value is not None:
                # "+column" keeps the planner on ix_predictions_created: a newest-first walk
                # that stops at `limit`, instead of sorting every row of a model or status.
                where.append(f"+{column} = ?")
                params.append(_timeframe(value) if column == "timeframe" else _text(column, value))
        sql = f"SELECT {', '.join(_LISTED_COLUMNS)} FROM predictions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_ts DESC, id DESC LIMIT ?"
        rows = self._read(sql, (*params, limit))
        return [_listed(row) for row in rows]

    def resolved_frame(self, after_created_ts: int | None = None):
        """Every resolved prediction (no state blobs) as a pandas DataFrame, oldest first:
        the evaluation's input. ``after_created_ts`` keeps only newer ones."""
        import pandas as pd

        sql = f"SELECT {', '.join(_LISTED_COLUMNS)} FROM predictions WHERE status = 'resolved'"
        params: tuple = ()
        if after_created_ts is not None:
            sql += " AND created_ts > ?"
            params = (_integer("after_created_ts", after_created_ts),)
        rows = [_listed(row) for row in self._read(sql + " ORDER BY created_ts, id", params)]
        return pd.DataFrame(rows, columns=list(_LISTED_COLUMNS))

    def get(self, pred_id: int) -> dict | None:
        """One prediction as ``recent`` lists it, or None."""
        rows = self._read(
            f"SELECT {', '.join(_LISTED_COLUMNS)} FROM predictions WHERE id = ?",
            (_integer("id", pred_id),),
        )
        return _listed(rows[0]) if rows else None

    def counts(self) -> dict[str, dict[str, int]]:
        """{model: {"pending": n, "resolved": n, "expired": n}}."""
        out: dict[str, dict[str, int]] = {}
        for model, status, n in self._read(
            "SELECT model, status, COUNT(*) FROM predictions GROUP BY status, model"
        ):
            out.setdefault(model, dict.fromkeys(STATUSES, 0))[status] = n
        return out

    def accuracy(self) -> dict[tuple[str, str], dict[str, float]]:
        """{(model, timeframe): {"resolved": n, "correct": k, "accuracy": k / n}}.

        Over resolved predictions only; expired ones were never judged.
        """
        rows = self._read(
            "SELECT model, timeframe, COUNT(*), SUM(action_correct) FROM predictions "
            "WHERE status = 'resolved' GROUP BY model, timeframe"
        )
        return {
            (model, tf): {"resolved": n, "correct": int(k), "accuracy": k / n}
            for model, tf, n, k in rows
        }

    def load_state(self, pred_id: int) -> np.ndarray | None:
        """The state a prediction was made from; None if it had none or the id is unknown."""
        pred_id = _integer("id", pred_id)
        with self._lock:
            if pred_id in self._pending:
                return self._pending[pred_id].state
        rows = self._read("SELECT state FROM predictions WHERE id = ?", (pred_id,))
        return decode_state(rows[0][0]) if rows else None

    # -- lifetime ------------------------------------------------------------------------

    def close(self) -> None:
        """Write what is queued and the states of the predictions still pending, then close
        the connection (idempotent); the file keeps everything committed."""
        with self._db:
            if self._closed:
                return
            self.flush()
            with self._lock:
                keep = [(encode_state(p.state), i) for i, p in self._pending.items()
                        if p.state is not None]
                self._closed = True  # nothing more is queued
            if keep:
                with self._write() as conn:
                    conn.executemany("UPDATE predictions SET state = ? WHERE id = ? "
                                     "AND status = 'pending'", keep)
            self._conn.close()

    def __enter__(self) -> PredictionStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _listed(row: Sequence) -> dict:
    item = dict(zip(_LISTED_COLUMNS, row))
    item["executed"] = bool(item["executed"])
    if item["action_correct"] is not None:
        item["action_correct"] = bool(item["action_correct"])
    return item
