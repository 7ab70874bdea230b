"""The store's in-memory index: the truth about a prediction store while it runs.

It holds the pending predictions (by id and by candle, with their states), the tallies per
model and status and per (model, timeframe) of resolved and correct calls, and the queue of
changes the next flush writes, with the pending predictions those changes took out of the
index. From these alone it answers what the file will say after the next flush about every
row the queue touches (``changes``), so a read never has to flush. Not thread-safe: the store
holds its lock around every call.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np

from core.predictions import schema
from core.predictions.rows import NO_OUTCOME, NewPrediction, PendingPrediction
from core.predictions.states import encode_state
from core.predictions.status import EXPIRED, PENDING, RESOLVED, STATUSES
from core.timeframes import parse_timeframe

_timeframe_ms = lru_cache(maxsize=32)(parse_timeframe)

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

    def __len__(self) -> int:
        return len(self.inserts) + len(self.resolves) + len(self.expires) + len(self.executed)

    def then(self, later: Queue) -> Queue:
        """These rows, then ``later``'s (a failed flush's rows before the ones queued since)."""
        return Queue(self.inserts + later.inserts, self.resolves + later.resolves,
                     self.expires + later.expires, self.executed + later.executed,
                     {**self.left, **later.left})

    def write(self, conn: sqlite3.Connection) -> None:
        """Every queued row, inside the caller's transaction. Inserts first: every other
        change is to a row already inserted."""
        for sql, rows in ((schema.INSERT, self.inserts), (schema.RESOLVE, self.resolves),
                          (schema.EXPIRE, self.expires), (schema.EXECUTED, self.executed)):
            if rows:
                conn.executemany(sql, rows)


class Index:
    """Pending predictions, tallies and the flush queue (see the module doc)."""

    def __init__(self, next_id: int) -> None:
        self.next_id = next_id  # the id the next new prediction gets
        self.pending: dict[int, PendingPrediction] = {}  # id -> pending prediction
        self.by_candle: dict[tuple[str, str, int], list[int]] = {}  # (symbol, tf, target) -> ids
        self.counts: dict[str, dict[str, int]] = {}  # model -> status -> rows
        self.hits: dict[tuple[str, str], list[int]] = {}  # (model, tf) -> [resolved, correct]
        self.queue = Queue()  # written by the next flush

    @classmethod
    def load(cls, conn: sqlite3.Connection) -> Index:
        """The index of what the file holds (at open: nothing is queued)."""
        index = cls(conn.execute("SELECT coalesce(max(id), 0) + 1 FROM predictions").fetchone()[0])
        rows = conn.execute(f"SELECT {', '.join(schema.PENDING_COLUMNS)} FROM predictions "
                            f"WHERE status = '{PENDING}' ORDER BY id").fetchall()
        for row in rows:
            index._add(PendingPrediction.from_row(row))
        for model, status, n in conn.execute(
                "SELECT model, status, COUNT(*) FROM predictions GROUP BY status, model"):
            index._tally(model)[status] = n
        for model, tf, n, k in conn.execute(
                "SELECT model, timeframe, COUNT(*), SUM(action_correct) FROM predictions "
                f"WHERE status = '{RESOLVED}' GROUP BY model, timeframe"):
            index.hits[(model, tf)] = [n, int(k)]
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
        counts = self.counts[p.model]
        counts[PENDING] -= 1
        counts[status] += 1
        return p

    def _tally(self, model: str) -> dict[str, int]:
        counts = self.counts.get(model)
        if counts is None:
            counts = self.counts[model] = dict.fromkeys(STATUSES, 0)
        return counts

    def record(self, res_rows: list[tuple],
               preds: list[NewPrediction]) -> tuple[int, list[int]]:
        """Resolve (``rows.resolution_row``s) and add (validated) predictions; how many of
        the resolutions were pending, and the new ids (see ``PredictionStore.record``)."""
        done = []
        for row in res_rows:
            p = self._take(row[-1], RESOLVED)  # once: the first resolution of an id wins
            if p is not None:
                done.append(row)
                hits = self.hits.get((p.model, p.timeframe))
                if hits is None:
                    hits = self.hits[(p.model, p.timeframe)] = [0, 0]
                hits[0] += 1
                hits[1] += row[7]  # action_correct, 0 or 1
        ids = list(range(self.next_id, self.next_id + len(preds)))
        self.next_id += len(preds)
        for pred_id, pred in zip(ids, preds):
            self._add(PendingPrediction(
                pred_id, pred.model, pred.model_step, pred.symbol, pred.timeframe,
                pred.created_ts, pred.target_ts, pred.reference_price, pred.action,
                pred.confidence, pred.predicted_ohlcv, bool(pred.executed), pred.state))
            (self.counts.get(pred.model) or self._tally(pred.model))[PENDING] += 1
        self.queue.inserts += [(i, *p.row()) for i, p in zip(ids, preds)]
        self.queue.resolves += done
        return len(done), ids

    def mark_executed(self, ids: list[int]) -> int:
        found = [i for i in ids if i in self.pending]
        for i in found:
            self.pending[i] = replace(self.pending[i], executed=True)
        self.queue.executed += [(i,) for i in found]
        return len(found)

    def expire_closed_before(self, cutoff_ts: int, now_ts: int) -> int:
        old = [i for i, p in self.pending.items()
               if p.target_ts + _timeframe_ms(p.timeframe) < cutoff_ts]
        for pred_id in old:
            self._take(pred_id, EXPIRED)
        self.queue.expires += [(now_ts, i) for i in old]
        return len(old)

    # -- the flush ------------------------------------------------------------------------

    def swap(self) -> Queue:
        """The queue, for a flush to write; an empty one takes its place."""
        queued, self.queue = self.queue, Queue()
        return queued

    def restore(self, queued: Queue) -> None:
        """Put back a queue its flush failed to write, before what was queued since."""
        self.queue = queued.then(self.queue)

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

    def tallies(self) -> dict[str, dict[str, int]]:
        """{model: {"pending": n, "resolved": n, "expired": n}}, by model."""
        return {model: dict(c) for model, c in sorted(self.counts.items())}

    def accuracy(self) -> dict[tuple[str, str], dict[str, float]]:
        """{(model, timeframe): {"resolved": n, "correct": k, "accuracy": k / n}}."""
        return {key: {"resolved": n, "correct": k, "accuracy": k / n}
                for key, (n, k) in sorted(self.hits.items()) if n}
