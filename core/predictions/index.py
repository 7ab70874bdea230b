"""The store's in-memory index: the truth about a prediction store while it runs.

It holds the pending predictions (by id and by candle, with their states), the running
totals per model and status and per (model, timeframe) of resolved and correct calls (the
file's ``totals`` and ``hits`` tables: retention never lowers them), per model, symbol and
timeframe the newest candle predicted and the newest one retention deleted (``series``: which
candles a model has already predicted, see ``seen``), and the queue of changes the next flush
writes, with the pending predictions those changes took out of the index. From these alone
it answers what the file will say after the next flush about every row the queue touches
(``changes``), so a read never has to flush. Not thread-safe: the store holds its lock around
every call.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np

from core.predictions import schema
from core.predictions.rows import NO_OUTCOME, NewPrediction, PendingPrediction
from core.predictions.states import encode_state
from core.predictions.status import EXPIRED, PENDING, RESOLVED
from core.predictions.totals import Totals
from core.timeframes import parse_timeframe

_timeframe_ms = lru_cache(maxsize=32)(parse_timeframe)

# (model, symbol, timeframe, target_ts): one prediction per model and candle (schema.py).
Key = tuple[str, str, str, int]

# A row the queue changes, as the file will hold it after the flush: the prediction, its
# status, its outcome (actual_open .. reward) and resolved_ts. PendingPrediction.listed's args.
Change = tuple[PendingPrediction, str, tuple, "int | None"]


@dataclass
class Queue:
    """Rows waiting for the next flush, by statement; and the pending predictions that left
    the index since the last flush (resolved or expired), by id, so that a read can still
    list them before the flush has written them."""

    inserts: list[tuple] = field(default_factory=list)
    resolves: list[tuple] = field(default_factory=list)
    expires: list[tuple] = field(default_factory=list)
    executed: list[tuple] = field(default_factory=list)
    left: dict[int, PendingPrediction] = field(default_factory=dict)
    keys: set[Key] = field(default_factory=set)  # the candles ``inserts`` predict
    # The running totals as they are once these rows are written: (statement, rows) pairs.
    totals: list[tuple[str, list[tuple]]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.inserts) + len(self.resolves) + len(self.expires) + len(self.executed)

    def then(self, later: Queue) -> Queue:
        """These rows, then ``later``'s (a failed flush's rows before the ones queued since)."""
        return Queue(self.inserts + later.inserts, self.resolves + later.resolves,
                     self.expires + later.expires, self.executed + later.executed,
                     {**self.left, **later.left}, self.keys | later.keys, later.totals)

    def write(self, conn: sqlite3.Connection) -> None:
        """Every queued row, inside the caller's transaction. Inserts first: every other
        change is to a row already inserted. Then the running totals they make."""
        for sql, rows in ((schema.INSERT, self.inserts), (schema.RESOLVE, self.resolves),
                          (schema.EXPIRE, self.expires), (schema.EXECUTED, self.executed),
                          *self.totals):
            if rows:
                conn.executemany(sql, rows)


class Index:
    """Pending predictions, tallies and the flush queue (see the module doc)."""

    def __init__(self, next_id: int | None) -> None:
        self.pending: dict[int, PendingPrediction] = {}  # id -> pending prediction
        self.by_candle: dict[tuple[str, str, int], list[int]] = {}  # (symbol, tf, target) -> ids
        self.ids = Ids(next_id)  # the ids new predictions get
        self.totals = Totals()  # counts per model, symbol and status; calls per timeframe
        # (model, symbol, tf) -> [newest target_ts predicted, newest deleted by retention]
        self.series: dict[tuple[str, str, str], list] = {}
        self.stored = 0  # rows the file holds once the queue is written
        self.newest_ts: int | None = None  # the newest created_ts recorded
        self.queue = Queue()  # written by the next flush
        self.version = 0  # changes whenever what a read would list does

    @classmethod
    def load(cls, conn: sqlite3.Connection, symbols: tuple[str, ...] | None = None,
             own_ids: bool = True) -> Index:
        """The index of what the file holds (at open: nothing is queued) of ``symbols`` (None:
        all). ``own_ids``: ids go on from the file's largest (one writer); else the store
        gives the index blocks of ids (``Ids.add``)."""
        where, params = in_scope(symbols)
        first = "coalesce(max(id), 0) + 1" if own_ids else "NULL"
        next_id, stored, newest = conn.execute(
            f"SELECT {first}, COUNT(*), max(created_ts) FROM predictions{where}", params
        ).fetchone()
        index = cls(next_id)
        index.stored, index.newest_ts = stored, newest
        rows = conn.execute(f"SELECT {', '.join(schema.PENDING_COLUMNS)} FROM predictions "
                            f"WHERE status = '{PENDING}'{where.replace('WHERE', 'AND')} "
                            "ORDER BY id", params).fetchall()
        for row in rows:
            index._add(PendingPrediction.from_row(row))
        index.totals.load(conn, where, params)
        for model, symbol, tf, latest, pruned in conn.execute(
                f"SELECT model, symbol, timeframe, latest_ts, pruned_through FROM series{where}",
                params):
            index.series[(model, symbol, tf)] = [latest, pruned]
        return index

    # -- changes --------------------------------------------------------------------------

    def _add(self, p: PendingPrediction) -> None:
        self.pending[p.id] = p
        self.by_candle.setdefault((p.symbol, p.timeframe, p.target_ts), []).append(p.id)

    def _take(self, pred_id: int, status: str) -> PendingPrediction | None:
        """Take a pending prediction out of the index as it becomes ``status``; None if it
        was not pending."""
        p = self.pending.pop(pred_id, None)
        if p is None:
            return None
        key = (p.symbol, p.timeframe, p.target_ts)
        ids = self.by_candle[key]
        ids.remove(pred_id)
        if not ids:
            del self.by_candle[key]
        self.queue.left[pred_id] = p
        self.totals.moved(p.model, p.symbol, status)
        return p

    def record(self, res_rows: list[tuple], preds: list[NewPrediction],
               in_file: frozenset[Key] = frozenset()) -> tuple[int, list[int]]:
        """Resolve (``rows.resolution_row``s) and add (validated) predictions; how many of
        the resolutions were pending, and the new ids (see ``PredictionStore.record``).
        ``in_file``: of the candles ``unsure`` named, those the file holds a prediction of
        (the store asked it); a candle already predicted raises ValueError, changing nothing."""
        self._check_new(preds, in_file)  # before anything changes
        self.ids.check(len(preds))
        done = []
        for row in res_rows:
            p = self._take(row[-1], RESOLVED)  # once: the first resolution of an id wins
            if p is not None:
                done.append(row)
                self.totals.called(p.model, p.symbol, p.timeframe, row[7])  # action_correct
        ids = self.ids.take(len(preds))
        for pred_id, pred in zip(ids, preds):
            self._add(PendingPrediction(
                pred_id, pred.model, pred.model_step, pred.symbol, pred.timeframe,
                pred.created_ts, pred.target_ts, pred.reference_price, pred.action,
                pred.confidence, pred.predicted_ohlcv, bool(pred.executed), pred.state,
                bool(pred.stale)))
            self.totals.of(pred.model, pred.symbol)[PENDING] += 1
            self._note_series(pred)
        self.queue.inserts += [(i, *p.row()) for i, p in zip(ids, preds)]
        self.queue.resolves += done
        self.version += bool(done or preds)
        return len(done), ids

    def _note_series(self, pred: NewPrediction) -> None:
        series = self.series.get((pred.model, pred.symbol, pred.timeframe))
        if series is None:
            self.series[(pred.model, pred.symbol, pred.timeframe)] = [pred.target_ts, None]
        elif pred.target_ts > series[0]:
            series[0] = pred.target_ts
        self.queue.keys.add(_key(pred))
        self.stored += 1
        if self.newest_ts is None or pred.created_ts > self.newest_ts:
            self.newest_ts = pred.created_ts

    # -- one prediction per model and candle -----------------------------------------------

    def seen(self, key: Key) -> bool | None:
        """Whether a model has predicted this candle: True, False, or None when only the file
        can say (a candle at or before the newest it predicted: after a restart rewound the
        market). From memory: no SQLite read."""
        series = self.series.get(key[:3])
        if series is None or key[3] > series[0]:
            return False  # the live case: a candle after every one predicted so far
        if series[1] is not None and key[3] <= series[1]:
            return True  # retention deleted its row, or an older one: counted once already
        if key in self.queue.keys:
            return True
        for pred_id in self.by_candle.get((key[1], key[2], key[3]), ()):
            if self.pending[pred_id].model == key[0]:
                return True
        return None

    def unsure(self, preds: list[NewPrediction]) -> list[Key]:
        """The candles of ``preds`` that only the file can say whether a model predicted."""
        return [key for key in map(_key, preds) if self.seen(key) is None]

    def new_only(self, preds: list[NewPrediction],
                 in_file: frozenset[Key] = frozenset()) -> list[NewPrediction]:
        """``preds`` without the candles their models have already predicted (and without a
        second prediction of a candle in ``preds``)."""
        kept, keys = [], set()
        for pred in preds:
            key = _key(pred)
            if key not in keys and not (self.seen(key) or key in in_file):
                keys.add(key)
                kept.append(pred)
        return kept

    def _check_new(self, preds: list[NewPrediction], in_file: frozenset[Key]) -> None:
        keys = set()
        for pred in preds:
            key = _key(pred)
            if key in keys or self.seen(key) or key in in_file:
                raise ValueError(f"{pred.model} has already predicted the {pred.symbol} "
                                 f"{pred.timeframe} candle at {pred.target_ts} (one "
                                 "prediction per model and candle)")
            keys.add(key)

    def pruned(self, deleted: int, through: dict[tuple[str, str, str], int]) -> None:
        """Retention deleted ``deleted`` rows, of candles up to ``through`` per series."""
        self.stored -= deleted
        self.version += bool(deleted)
        for series_key, target_ts in through.items():
            series = self.series[series_key]
            series[1] = target_ts if series[1] is None else max(series[1], target_ts)

    def mark_executed(self, ids: list[int]) -> int:
        found = [i for i in ids if i in self.pending]
        for i in found:
            self.pending[i] = replace(self.pending[i], executed=True)
        self.queue.executed += [(i,) for i in found]
        self.version += bool(found)
        return len(found)

    def expire_closed_before(self, cutoff_ts: int, now_ts: int) -> int:
        old = [i for i, p in self.pending.items()
               if p.target_ts + _timeframe_ms(p.timeframe) < cutoff_ts]
        for pred_id in old:
            self._take(pred_id, EXPIRED)
        self.queue.expires += [(now_ts, i) for i in old]
        self.version += bool(old)
        return len(old)

    # -- the flush ------------------------------------------------------------------------

    def swap(self) -> Queue:
        """The queue, for a flush to write; an empty one takes its place."""
        queued, self.queue = self.queue, Queue()
        queued.totals = [
            *self.totals.rows(),
            (schema.SET_SERIES, [(*key, latest, pruned)
                                 for key, (latest, pruned) in self.series.items()]),
        ]
        return queued

    def restore(self, queued: Queue) -> None:
        """Put back a queue its flush failed to write, before what was queued since."""
        self.queue = queued.then(self.queue)
        self.queue.totals = []  # the next swap writes the totals as they are then

    def states_to_keep(self) -> list[tuple[bytes, int]]:
        """(encoded state, id) of every pending prediction with a state: written at close."""
        return [(encode_state(p.state), i) for i, p in self.pending.items()
                if p.state is not None]

    # -- reads ----------------------------------------------------------------------------

    def changes(self) -> list[Change]:
        """Every row the queue inserts or changes, as the file will hold it after the flush."""
        q = self.queue
        outcome = {row[-1]: row for row in q.resolves}
        expired = {pred_id: now_ts for now_ts, pred_id in q.expires}
        ids = dict.fromkeys([r[0] for r in q.inserts] + list(outcome) + list(expired)
                            + [r[0] for r in q.executed])  # each once, in order
        out: list[Change] = []
        for i in ids:
            p = self.pending.get(i) or q.left[i]
            if i in outcome:
                out.append((p, RESOLVED, outcome[i][:9], outcome[i][9]))
            elif i in expired:
                out.append((p, EXPIRED, NO_OUTCOME, expired[i]))
            else:
                out.append((p, PENDING, NO_OUTCOME, None))
        return out

    def state_of(self, pred_id: int) -> tuple[bool, np.ndarray | None]:
        """(known, state): a pending prediction's state; None for one resolved or expired
        since the last flush (its state is let go); (False, None) if the file must say."""
        if pred_id in self.pending:
            return True, self.pending[pred_id].state
        return pred_id in self.queue.left, None


def in_scope(symbols: tuple[str, ...] | None) -> tuple[str, tuple]:
    """`` WHERE symbol IN (...)`` and its params for a store of ``symbols`` (None: all)."""
    if symbols is None:
        return "", ()
    return f" WHERE symbol IN ({', '.join('?' * len(symbols))})", tuple(symbols)


class Ids:
    """The ids new predictions get: on from ``first`` without end (one writer: SQLite), or
    from blocks of ids the database reserved for this writer (``first`` None: PostgreSQL,
    postgres.py), the next block added while the database answers."""

    def __init__(self, first: int | None) -> None:
        self.blocks: list[list[int | None]] = [] if first is None else [[first, None]]

    def add(self, start: int, end: int) -> None:
        self.blocks.append([start, end])

    def left(self) -> float:
        return sum(float("inf") if end is None else end - start for start, end in self.blocks)

    def check(self, n: int) -> None:
        if n > self.left():
            raise RuntimeError(f"no prediction ids left for {n} new predictions: the database "
                               "could not be reached to reserve more (see the store's health)")

    def take(self, n: int) -> list[int]:
        out: list[int] = []
        while len(out) < n:
            block = self.blocks[0]
            start, end = block
            k = n - len(out) if end is None else min(n - len(out), end - start)
            out.extend(range(start, start + k))
            block[0] = start + k
            if end is not None and block[0] >= end:
                self.blocks.pop(0)
        return out


def _key(pred: NewPrediction) -> Key:
    return pred.model, pred.symbol, pred.timeframe, pred.target_ts
