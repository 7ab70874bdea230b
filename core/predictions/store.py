"""``PredictionStore``: the store's interface, its locks and its flush (see core.predictions)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from core.predictions import postgres, queries, schema
from core.predictions.index import Index, Key
from core.predictions.retention import Retention, prune_chunk
from core.predictions.rows import (
    NewPrediction,
    PendingPrediction,
    integer,
    resolution_row,
)
from core.predictions.states import decode_state
from core.rewards import Resolution

T = TypeVar("T")


def _taken_ids(path: Path | str, exc: BaseException) -> RuntimeError | None:
    """The error to raise when another process took the ids this store gives (None: not)."""
    if not any(words in str(exc) for words in ("UNIQUE constraint failed: predictions.id",
                                               '"predictions_pkey"')):
        return None
    error = RuntimeError(f"{path}: another process has written predictions to this store; the "
                         "ids this store gave are taken. One process writes a prediction store "
                         "(give each its own runtime_dir or database)")
    error.__cause__ = exc
    return error


def _connect(location: str | Path) -> tuple[Path | str, Any]:
    """The store's name (a password masked) and its connection, the schema created or migrated:
    PostgreSQL for a ``postgresql://`` URL (postgres.py), else a SQLite file (schema.py)."""
    if postgres.is_url(location):
        pg = postgres.PgConnection(str(location))
        postgres.create_schema(pg)
        return pg.url, pg
    path = Path(location)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = schema.connect(path)
    schema.create_schema(conn, path)
    return path, conn


class PredictionStore:
    """Predictions in one SQLite file, or a PostgreSQL database when ``path`` is a
    ``postgresql://`` URL (postgres.py); safe to share between threads (see core.predictions)."""

    def __init__(self, path: str | Path, retention: Retention | None = None):
        self.retention = retention or Retention()
        self._pruned_at: float | None = None  # monotonic time of the last retention pass
        self._answers = queries.Answers()  # recent()'s, for the content as it is now
        self._lock = threading.Lock()  # the index: pending, tallies, queue, next id
        self._db = threading.RLock()  # the connection; taken before _lock, never after it
        self._closed = False
        self.path, self._conn = _connect(path)  # path: the store's name in errors
        self._index = Index.load(self._conn)

    def flush(self) -> int:
        """Write everything queued since the last flush in one transaction; returns how many
        rows it wrote. If the write fails, the rows stay queued and the error is raised. Then,
        every ``retention.every_s``, a retention pass (a few chunks at most)."""
        written = self._write_queued()
        if not self._closed and time.monotonic() - (self._pruned_at or -1e9) \
                >= self.retention.every_s:
            self.prune(max_chunks=4)
        return written

    def prune(self, max_chunks: int | None = None) -> int:
        """Delete the rows retention no longer keeps (core/predictions/retention.py), a chunk
        per transaction, at most ``max_chunks`` (None: until none is left); how many."""
        deleted, chunks, n = 0, 0, -1
        while n != 0 and (max_chunks is None or chunks < max_chunks):
            with self._db:
                with self._lock:
                    self._check_open()
                    at = list(self._index.counts), self._index.newest_ts, self._index.stored
                with schema.transaction(self._conn) as conn:
                    n, through = prune_chunk(conn, self.retention, *at)
                with self._lock:
                    self._index.pruned(n, through)
            deleted, chunks = deleted + n, chunks + 1
        self._pruned_at = time.monotonic()
        return deleted

    def _write_queued(self) -> int:
        with self._db:  # one flush at a time, in order; no read of the file meanwhile
            with self._lock:
                queued = self._index.swap()
            if not queued:
                return 0
            try:
                with schema.transaction(self._conn) as conn:
                    queued.write(conn)
            except BaseException as exc:
                with self._lock:
                    self._index.restore(queued)
                raise _taken_ids(self.path, exc) or exc  # noqa: B904 (cause set there)
            return len(queued)

    def _read(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._db:  # rows the file holds (what the flushes wrote; nothing queued)
            return self._conn.execute(sql, params).fetchall()

    def _with_unflushed(self, query: Callable[..., T], *args: object) -> T:
        """``query(connection, unflushed rows, *args)``: the file's rows with the queued
        changes laid over them. Writes nothing; holds the connection, so no flush runs
        between taking the queue's rows and reading the file."""
        with self._db:
            with self._lock:
                changes = self._index.changes()
            unflushed = {p.id: p.listed(*rest) for p, *rest in changes}
            return query(self._conn, unflushed, *args)

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
            res_rows.append(resolution_row(resolution, integer("resolved_ts", resolved_ts),
                                           integer("id", pred_id)))
        preds = _checked(new)
        return self._knowing(preds, lambda in_file: self._index.record(res_rows, preds, in_file))

    def unpredicted(self, preds: Iterable[NewPrediction]) -> list[NewPrediction]:
        """``preds`` without those whose model has already predicted their candle (same
        model, symbol, timeframe and target_ts; after a restart, say): what ``record`` would
        refuse. From memory, unless a candle is at or before the newest its model predicted
        (only after the market rewound): then one indexed read of the file per such row."""
        preds = _checked(preds)
        return self._knowing(preds, lambda in_file: self._index.new_only(preds, in_file))

    def _knowing(self, preds: list[NewPrediction], then: Callable[[frozenset[Key]], T]) -> T:
        """``then(the candles of preds the file holds a prediction of)``, under the lock; the
        file is read only for candles the index cannot answer for (see ``Index.seen``)."""
        with self._lock:
            self._check_open()
            if not self._index.unsure(preds):  # the live case: no SQLite read
                return then(frozenset())
        with self._db:  # no flush moves rows from the queue to the file meanwhile
            with self._lock:
                unsure = self._index.unsure(preds)
            in_file = frozenset(key for key in unsure
                                if self._conn.execute(schema.PREDICTED, key).fetchone())
            with self._lock:
                self._check_open()
                return then(in_file)

    def mark_executed(self, ids: Iterable[int]) -> int:
        """Flag pending predictions that executed a paper trade (their experiences weigh more);
        returns how many were pending."""
        ids = [integer("id", i) for i in ids]
        with self._lock:
            self._check_open()
            return self._index.mark_executed(ids)

    def expire_closed_before(self, cutoff_ts: int, now_ts: int) -> int:
        """Mark pending predictions whose candle should have closed (opened at target_ts, a
        timeframe long) before cutoff_ts expired; how many. By the close, not the open: a
        1d candle opens a day before it can resolve anything."""
        cutoff_ts, now_ts = integer("cutoff_ts", cutoff_ts), integer("now_ts", now_ts)
        with self._lock:
            self._check_open()
            return self._index.expire_closed_before(cutoff_ts, now_ts)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"the prediction store {self.path} is closed")

    # -- reading (never writes: see core.predictions) -----------------------------------------

    def pending(self, symbol: str, timeframe: str, target_ts: int) -> list[PendingPrediction]:
        """Pending predictions (with their states) of the candle of ``symbol``/``timeframe``
        that opens at target_ts, oldest first: what the resolver needs when that candle
        closes. From the in-memory index: no SQLite read."""
        key = (symbol, timeframe, integer("target_ts", target_ts))
        with self._lock:
            return [self._index.pending[i] for i in self._index.by_candle.get(key, ())]

    def pending_before(self, ts: int) -> list[PendingPrediction]:
        """Pending predictions (with states) whose candle opened before ts, oldest first."""
        ts = integer("ts", ts)
        with self._lock:
            found = [p for p in self._index.pending.values() if p.target_ts < ts]
        return sorted(found, key=lambda p: (p.target_ts, p.id))

    @property
    def version(self) -> int:
        """Changes whenever what :meth:`recent` would list does."""
        with self._lock:
            return self._index.version

    def recent(self, limit: int = 50, model: str | None = None, symbol: str | None = None,
               timeframe: str | None = None, status: str | None = None) -> list[dict]:
        """The newest predictions (by market time, then id) matching every filter given: dicts
        of the table's columns but the state (read-only: shared by the callers of the same
        query until the store changes); ``executed`` and ``action_correct`` are bools (the
        latter None until resolved)."""
        query = (limit, model, symbol, timeframe, status)
        with self._lock:
            version, rows = self._index.version, self._answers.get(self._index.version, query)
        if rows is None:
            filters = {"model": model, "symbol": symbol, "timeframe": timeframe, "status": status}
            rows = self._with_unflushed(queries.recent, limit, filters)
            with self._lock:
                self._answers.put(version, query, rows)
        return list(rows)

    def resolved_frame(self, after_created_ts: int | None = None):
        """Every resolved prediction (no state blobs) as a pandas DataFrame, oldest first:
        the scoring's input. ``after_created_ts`` keeps only newer ones."""
        import pandas as pd

        rows = self._with_unflushed(queries.resolved, after_created_ts)
        return pd.DataFrame(rows, columns=list(schema.LISTED_COLUMNS))

    def get(self, pred_id: int) -> dict | None:
        """One prediction as ``recent`` lists it, or None."""
        return self._with_unflushed(queries.get, integer("id", pred_id))

    def counts(self) -> dict[str, dict[str, int]]:
        """{model: {"pending": n, "resolved": n, "expired": n}}. From the index."""
        with self._lock:
            return self._index.tallies()

    def accuracy(self) -> dict[tuple[str, str], dict[str, float]]:
        """{(model, timeframe): {"resolved": n, "correct": k, "accuracy": k / n}}: over
        resolved predictions only (expired ones were never judged). From the index."""
        with self._lock:
            return self._index.accuracy()

    def load_state(self, pred_id: int) -> np.ndarray | None:
        """The state a prediction was made from; None if it had none or the id is unknown."""
        pred_id = integer("id", pred_id)
        with self._db:
            with self._lock:
                known, state = self._index.state_of(pred_id)
            return state if known else decode_state(queries.stored_state(self._conn, pred_id))

    # -- lifetime ------------------------------------------------------------------------

    def close(self) -> None:
        """Write what is queued and the states of the predictions still pending, then close
        the connection (idempotent); the file keeps everything committed."""
        with self._db:
            if self._closed:
                return
            self.flush()
            with self._lock:
                keep = self._index.states_to_keep()
                self._closed = True  # nothing more is queued
            if keep:
                with schema.transaction(self._conn) as conn:
                    conn.executemany(schema.KEEP_STATE, keep)
            self._conn.close()

    def stored(self) -> int:  # rows the file holds once the queue is written
        return self._index.stored  # one int: read without the lock

    def __enter__(self) -> PredictionStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _checked(preds: Iterable[NewPrediction]) -> list[NewPrediction]:
    preds = list(preds)
    for pred in preds:
        if not isinstance(pred, NewPrediction):
            raise ValueError(f"expected a NewPrediction, got {type(pred).__name__}")
    return preds
