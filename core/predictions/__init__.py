"""The prediction store: every prediction from ``pending`` to ``resolved`` or ``expired``.

SQLite in WAL mode (:mod:`~core.predictions.schema`), or PostgreSQL when ``store.url`` names
one (:mod:`~core.predictions.postgres`). Threads share **one connection**
(:mod:`~core.predictions.database`) guarded by a lock: the store is written from the
scheduler's prediction and resolution jobs and read by the status snapshot, and a single
connection keeps every statement serialised without per-thread connections to track and
close. One process writes a SQLite file; several processes may write one PostgreSQL database,
each its own symbols (``PredictionStore(symbols=...)``: its counts, accuracy, retention and
scores are those of its symbols, totals are kept per symbol; ``recent`` lists every symbol's
rows).

**A lost database** (:mod:`~core.predictions.health`): a flush that fails keeps its rows
queued and marks the store DOWN; writes are retried with jittered backoff, reads that need
the database fail at once with ``StoreUnavailable``; recording, resolving and the index's
reads go on in memory, so nothing recorded is lost while the process runs, and the first
flush that succeeds writes it all (a flush whose commit may have landed before the connection
dropped is written again harmlessly: inserts skip ids already there, updates are guarded).

**Write-behind** (:mod:`~core.predictions.index`). The store keeps an in-memory index of the
file: the pending predictions, tallies per model and status and per (model, timeframe) of
correct calls, and the queue of changes not yet written. That index is the truth: ``record``
(the signal cycle's one write per market second), ``expire_closed_before`` and
``mark_executed`` change it at once and queue their rows; ``flush`` writes everything queued
in one transaction (a scheduler job, every ``scheduler.store_flush_s`` wall seconds), and is
the only thing that writes to the file while the store is open. The signal cycle therefore
never waits on SQLite (it spent ~0.35 ms a market second there: a statement per row and a
commit); a crash loses at most the rows of one flush interval. A flush that fails (disk full)
keeps its rows queued for the next one and raises to its caller.

**Reads never write** (:mod:`~core.predictions.queries`). ``counts``, ``accuracy``,
``pending`` and ``pending_before`` answer from the index alone; ``recent``, ``get``,
``resolved_frame`` and ``load_state`` read the committed rows and lay over them the rows the
queue will write, so a read sees everything recorded before it, flushed or not, and the
request thread never writes to SQLite nor waits for more than a running flush.

**One prediction per model and candle** (``model, symbol, timeframe, target_ts`` unique in
the file, and checked by the index before anything is recorded: ``record`` refuses a candle
already predicted, ``unpredicted`` leaves such candles out, which is what the signal cycle
does). A candle after the newest its model predicted (the live case) is known new from memory;
only after a restart rewound the market does one indexed read of the file decide.

**Bounded** (:mod:`~core.predictions.retention`): the flush job deletes resolved and expired
rows past ``store.keep_days`` or over ``store.max_rows``, never a pending one nor a model's
newest resolved rows that its card scores. The counts and accuracy are running totals kept in
their own tables by the same transactions as the rows, so retention, a restart or a crash
changes no number on the page. ``recent`` answers the same query from one read until the
store changes (twenty pages polling the same listing cost one read).

Status moves one way only: ``pending -> resolved`` or ``pending -> expired``
(:mod:`~core.predictions.status`); every update is guarded by ``status = 'pending'``, so a
resolver and the expiry job can race harmlessly and a second resolve of the same prediction
is a no-op.

The pending index is small (one prediction per model, symbol and timeframe, plus any a restart
brought back), and resolving a closed candle reads no rows. The model state a prediction was
made from (``state``, 0.3-11 KB, :mod:`~core.predictions.states`) lives only in that index
while the process runs, and is written to the file for the predictions still pending at
``close()``, so a restart can still turn them into experiences. Writing every state and
clearing it at resolution cost more SQLite time than the rest of the signal cycle's store
work together; a crash (no ``close()``) loses the states of the predictions then pending,
which still resolve, only without an experience to train on.

Behind ``PredictionStore``'s small interface the store moved to PostgreSQL without its callers
changing (see DESIGN.md, "Past one machine", and docs/SCALING.md).
"""

from core.predictions.health import StoreUnavailable
from core.predictions.queries import MAX_LIMIT
from core.predictions.retention import Retention
from core.predictions.rows import NewPrediction, PendingPrediction
from core.predictions.schema import BUSY_TIMEOUT_S, SCHEMA_VERSION
from core.predictions.states import decode_state, encode_state
from core.predictions.status import HIT, MISS, STATUSES, Status, outcome
from core.predictions.store import PredictionStore

__all__ = [
    "BUSY_TIMEOUT_S", "HIT", "MAX_LIMIT", "MISS", "SCHEMA_VERSION", "STATUSES",
    "NewPrediction", "PendingPrediction", "PredictionStore", "Retention", "Status", "StoreUnavailable",
    "decode_state",
    "encode_state", "outcome",
]  # fmt: skip
