"""``StoreReader``: the prediction store's reads, which never write (see core.predictions):
from the in-memory index alone, or the database's committed rows with the queued changes laid
over them. ``PredictionStore`` (store.py) is a reader that also records and flushes."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import numpy as np

from core.predictions import queries, schema
from core.predictions.database import Database
from core.predictions.index import Index
from core.predictions.rows import PendingPrediction, integer
from core.predictions.states import decode_state

T = TypeVar("T")


class StoreReader:
    """Reads over ``_index`` (under ``_lock``) and ``_db`` (under its lock, taken first)."""

    symbols: tuple[str, ...] | None
    _index: Index
    _db: Database
    _lock: threading.Lock
    _answers: queries.Answers
    _listed: tuple[int, tuple[str, ...]] | None = None  # symbols_listed(): (version, them)

    def _read(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._db.lock:  # rows the file holds (what the flushes wrote; nothing queued)
            return self._db.reading(lambda: self._db.conn.execute(sql, params).fetchall())

    def _with_unflushed(self, query: Callable[..., T], *args: object) -> T:
        """``query(connection, unflushed rows, *args)``: the file's rows with the queued
        changes laid over them. Writes nothing; holds the connection, so no flush runs
        between taking the queue's rows and reading the file."""
        with self._db.lock:
            with self._lock:
                changes = self._index.changes()
            unflushed = {p.id: p.listed(*rest) for p, *rest in changes}
            return self._db.reading(lambda: query(self._db.conn, unflushed, *args))

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
               timeframe: str | None = None, status: str | None = None,
               own: bool = False) -> list[dict]:
        """The newest predictions (by market time, then id) matching every filter given: dicts
        of the table's columns but the state (read-only: shared by the callers of the same
        query until the store changes); ``executed`` and ``action_correct`` are bools (the
        latter None until resolved). Every symbol's, or with ``own`` only this store's
        symbols' (a model's card scores its own predictions, not another process's model of
        the same name)."""
        query = (limit, model, symbol, timeframe, status, own)
        with self._lock:
            version, rows = self._index.version, self._answers.get(self._index.version, query)
        if rows is None:
            filters = {"model": model, "symbol": symbol, "timeframe": timeframe, "status": status}
            rows = self._with_unflushed(queries.recent, limit, filters,
                                        self.symbols if own else None)
            with self._lock:
                self._answers.put(version, query, rows)
        return list(rows)

    def resolved_frame(self, after_created_ts: int | None = None):
        """Every resolved prediction of this store's symbols (no state blobs) as a pandas
        DataFrame, oldest first: the scoring's input. ``after_created_ts`` keeps only newer
        ones."""
        import pandas as pd

        rows = self._with_unflushed(queries.resolved, after_created_ts, self.symbols)
        return pd.DataFrame(rows, columns=list(schema.LISTED_COLUMNS))

    def get(self, pred_id: int) -> dict | None:
        """One prediction as ``recent`` lists it, or None."""
        return self._with_unflushed(queries.get, integer("id", pred_id))

    def counts(self) -> dict[str, dict[str, int]]:
        """{model: {"pending": n, "resolved": n, "expired": n}}. From the index."""
        with self._lock:
            return self._index.totals.tallies()

    def accuracy(self) -> dict[tuple[str, str], dict[str, float]]:
        """{(model, timeframe): {"resolved": n, "correct": k, "accuracy": k / n}}: over
        resolved predictions only (expired ones were never judged). From the index."""
        with self._lock:
            return self._index.totals.accuracy()

    def load_state(self, pred_id: int) -> np.ndarray | None:
        """The state a prediction was made from; None if it had none or the id is unknown."""
        pred_id = integer("id", pred_id)
        with self._db.lock:
            with self._lock:
                known, state = self._index.state_of(pred_id)
            if known:
                return state
            return decode_state(self._db.reading(
                lambda: queries.stored_state(self._db.conn, pred_id)))

    def symbols_listed(self) -> tuple[str, ...]:
        """Every symbol the database holds predictions of (other writers' too), from the
        series table; this store's own when the database cannot say now."""
        version = self.version
        cached = self._listed
        if cached is not None and cached[0] == version:
            return cached[1]
        try:
            with self._db.lock:
                found = self._db.reading(lambda: [row[0] for row in self._db.conn.execute(
                    "SELECT DISTINCT symbol FROM series ORDER BY symbol").fetchall()])
        except RuntimeError:  # StoreUnavailable: the database is DOWN
            return tuple(self.symbols or ())
        self._listed = (version, tuple(found))
        return self._listed[1]

    def health_status(self) -> dict:
        """Whether the database answers, as the page and ``/status`` show it (health.py)."""
        with self._lock:
            queued = len(self._index.queue)
        return {**self.health.describe(queued), "symbols": list(self.symbols or ["*"])}
