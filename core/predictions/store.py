"""``PredictionStore``: the store's interface, its locks and its flush (see core.predictions)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from core.predictions import postgres, queries, schema
from core.predictions.database import Database
from core.predictions.index import Index, Key
from core.predictions.reader import StoreReader
from core.predictions.retention import Retention, prune_chunk
from core.predictions.rows import (
    NewPrediction,
    integer,
    resolution_row,
)
from core.rewards import Resolution

T = TypeVar("T")
log = logging.getLogger(__name__)


class PredictionStore(StoreReader):
    """Predictions in one SQLite file, or a PostgreSQL database when ``path`` is a
    ``postgresql://`` URL (postgres.py); safe to share between threads (see core.predictions).

    ``symbols``: the symbols this store writes (None: all). Its counts, accuracy, retention
    and scores are those of its symbols; ``recent`` lists every symbol's rows (other processes
    write the others to a shared PostgreSQL database)."""

    def __init__(self, path: str | Path, retention: Retention | None = None,
                 symbols: tuple[str, ...] | list[str] | None = None):
        self.symbols = None if symbols is None else tuple(symbols)
        if self.symbols is not None and not all(isinstance(x, str) and x
                                                for x in self.symbols):
            raise ValueError(f"symbols must be non-empty strings, got {symbols!r}")
        self.retention = retention or Retention()
        self._pruned_at: float | None = None  # monotonic time of the last retention pass
        self._answers = queries.Answers()  # recent()'s, for the content as it is now
        self._lock = threading.Lock()  # the index: pending, tallies, queue, next id
        self._closed = False
        self._db = Database(path, self.symbols)  # the connection, its lock and health
        self.path, self.shared, self.health = self._db.path, self._db.shared, self._db.health
        self._conn = self._db.conn
        self._index = Index.load(self._conn, self.symbols, own_ids=not self.shared)
        if self.shared:
            self._index.ids.add(*self._db.reserve_ids())

    def flush(self) -> int:
        """Write everything queued since the last flush in one transaction; returns how many
        rows it wrote. If the write fails, the rows stay queued, the store is DOWN
        (``health``) and the error is raised; until the backoff has passed a flush writes
        nothing (returns 0). Then, every ``retention.every_s``, a retention pass (a few
        chunks at most)."""
        if not self.health.may_try():
            return 0
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
            with self._db.lock:
                with self._lock:
                    self._check_open()
                    at = self._index.totals.models(), self._index.newest_ts, self._index.stored
                n, through = self._db.writing(
                    lambda conn, at=at: prune_chunk(conn, self.retention, *at, self.symbols))
                with self._lock:
                    self._index.pruned(n, through)
            deleted, chunks = deleted + n, chunks + 1
        self._pruned_at = time.monotonic()
        return deleted

    def _write_queued(self) -> int:
        with self._db.lock:  # one flush at a time, in order; no read of the file meanwhile
            with self._lock:
                queued = self._index.swap()
            try:
                if queued:
                    self._db.writing(queued.write)
                elif self.health.down:  # DOWN by a read: only the database can say it is back
                    self._db.writing(lambda conn: conn.execute("SELECT 1").fetchall())
                # A shared store keeps a block of ids in hand beyond the one in use.
                if self.shared and self._index.ids.left() < postgres.ID_BLOCK:
                    block = self._db.reserve_ids()
                    with self._lock:
                        self._index.ids.add(*block)
            except BaseException:
                with self._lock:
                    self._index.restore(queued)
                raise
            self._db.wrote(len(queued))
            if self.shared:  # other writers' rows may have arrived: reads look again
                with self._lock:
                    self._index.version += 1
            return len(queued)

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
        with self._db.lock:  # no flush moves rows from the queue to the file meanwhile
            with self._lock:
                unsure = self._index.unsure(preds)
            in_file = self._db.reading(lambda: frozenset(
                key for key in unsure if self._conn.execute(schema.PREDICTED, key).fetchone()))
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

    # -- lifetime ------------------------------------------------------------------------

    def close(self) -> None:
        """Write what is queued and the states of the predictions still pending, then close
        the connection (idempotent); the file keeps everything committed."""
        with self._db.lock:
            if self._closed:
                return
            try:
                self._write_queued()  # not flush(): a DOWN store still tries once
                with self._lock:
                    keep = self._index.states_to_keep()
                    self._closed = True  # nothing more is queued
                if keep:
                    with schema.transaction(self._conn) as conn:
                        conn.executemany(schema.KEEP_STATE, keep)
            except self._db.lost as exc:  # the database is gone: say what could not be written
                self._closed = True
                log.error("prediction store %s: closed without writing %d queued rows (%s)",
                          self.path, len(self._index.queue), exc)
            finally:
                self._closed = True
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
