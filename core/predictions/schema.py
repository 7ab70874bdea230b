"""The prediction store's SQLite file: its schema, the statements the flush writes, the
connection's settings and the write transaction.

SQLite in WAL mode. Writes run in ``BEGIN IMMEDIATE`` transactions, so a second process on the
same file (a backup, a report) waits on the busy timeout instead of failing mid-transaction.
One process writes a file.

A model predicts a candle once: ``(model, symbol, timeframe, target_ts)`` is unique. The
figures the page shows (counts per model and status, resolved and correct calls per model and
timeframe) are running totals in their own tables, written by the same transaction as the rows
they count, so retention (core/predictions/retention.py) deletes old rows without changing
them. ``series`` keeps, per model, symbol and timeframe, the newest candle predicted and the
newest one retention deleted (a candle at or before it counts as predicted).

The totals are kept per symbol too (version 4): several processes may write one PostgreSQL
store, each its own symbols (postgres.py), and each keeps the totals of its own.

Versions: 1 (no uniqueness, totals counted from the rows), 2, 3 (``stale``: the model was
STALE when it predicted, core/live/control.py), 4 (totals per symbol). An older file is
migrated in one transaction when opened: from version 1, duplicate targets kept once (the
first prediction of each), the totals counted from what is left; to version 3, the ``stale``
column added (0 for every row); to version 4, the totals split by symbol: counted from the
rows still there, and what retention had deleted before (the old total less those) kept under
the symbol '' (an unscoped store counts it; ``PredictionStore(symbols=...)`` does not).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from core.predictions.status import Status

SCHEMA_VERSION = 4
BUSY_TIMEOUT_S = 5.0

_STATUS_NAMES = ", ".join(f"'{s}'" for s in Status)  # 'pending', 'resolved', 'expired'
_SCHEMA = f"""
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
    state           BLOB,                      -- the encoded model state (states.py)
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
    status          TEXT    NOT NULL DEFAULT '{Status.PENDING}'
                            CHECK (status IN ({_STATUS_NAMES})),
    resolved_ts     INTEGER,                   -- market time resolved or expired, UTC ms
    stale           INTEGER NOT NULL DEFAULT 0 CHECK (stale IN (0, 1))  -- version 3
);
-- Newest-first listings walk this backwards (created_ts DESC, then id DESC, no sort) and
-- check the filters on the way, stopping after `limit` matches.
CREATE INDEX IF NOT EXISTS ix_predictions_created ON predictions (created_ts);
"""
# Version 2: one prediction per model and candle; which candles each series predicted.
_SCHEMA_2 = """
CREATE UNIQUE INDEX IF NOT EXISTS ux_predictions_target
    ON predictions (model, symbol, timeframe, target_ts);
-- The pending rows at open, and a model's newest resolved rows (which retention keeps).
CREATE INDEX IF NOT EXISTS ix_predictions_status ON predictions (status, model, created_ts);
CREATE TABLE IF NOT EXISTS series (
    model TEXT NOT NULL, symbol TEXT NOT NULL, timeframe TEXT NOT NULL,
    latest_ts INTEGER NOT NULL,     -- the newest candle predicted (target_ts)
    pruned_through INTEGER,         -- the newest candle whose row retention deleted
    PRIMARY KEY (model, symbol, timeframe)) WITHOUT ROWID;
"""
# Version 4: the running totals that retention leaves alone, per symbol.
TOTALS = """
CREATE TABLE IF NOT EXISTS totals (
    model TEXT NOT NULL, symbol TEXT NOT NULL, status TEXT NOT NULL, n BIGINT NOT NULL,
    PRIMARY KEY (model, symbol, status));
CREATE TABLE IF NOT EXISTS hits (
    model TEXT NOT NULL, symbol TEXT NOT NULL, timeframe TEXT NOT NULL,
    resolved BIGINT NOT NULL, correct BIGINT NOT NULL, PRIMARY KEY (model, symbol, timeframe));
"""
# The totals of a version 1 file, counted from its rows (once, when it is migrated).
_COUNT_TOTALS = """
DROP INDEX IF EXISTS ix_predictions_accuracy;
DROP INDEX IF EXISTS ix_predictions_pending;
INSERT INTO totals SELECT model, symbol, status, COUNT(*) FROM predictions
    GROUP BY model, symbol, status;
INSERT INTO hits SELECT model, symbol, timeframe, COUNT(*), SUM(action_correct) FROM predictions
    WHERE status = 'resolved' GROUP BY model, symbol, timeframe;
INSERT INTO series SELECT model, symbol, timeframe, MAX(target_ts), NULL FROM predictions
    GROUP BY model, symbol, timeframe;
"""
# Version 2 or 3's totals (per model) split by symbol: counted from the rows; the rest (rows
# retention deleted) under symbol ''. SQL both SQLite and PostgreSQL run.
SPLIT_TOTALS = """
ALTER TABLE totals RENAME TO totals_v3;
ALTER TABLE hits RENAME TO hits_v3;
""" + TOTALS + """
INSERT INTO totals SELECT model, symbol, status, COUNT(*) FROM predictions
    GROUP BY model, symbol, status;
INSERT INTO totals SELECT o.model, '', o.status, o.n - coalesce((SELECT SUM(t.n) FROM totals t
    WHERE t.model = o.model AND t.status = o.status), 0) FROM totals_v3 o
    WHERE o.n > coalesce((SELECT SUM(t.n) FROM totals t
    WHERE t.model = o.model AND t.status = o.status), 0);
INSERT INTO hits SELECT model, symbol, timeframe, COUNT(*), SUM(action_correct) FROM predictions
    WHERE status = 'resolved' GROUP BY model, symbol, timeframe;
INSERT INTO hits SELECT o.model, '', o.timeframe,
    o.resolved - coalesce((SELECT SUM(h.resolved) FROM hits h
        WHERE h.model = o.model AND h.timeframe = o.timeframe), 0),
    o.correct - coalesce((SELECT SUM(h.correct) FROM hits h
        WHERE h.model = o.model AND h.timeframe = o.timeframe), 0)
    FROM hits_v3 o WHERE o.resolved > coalesce((SELECT SUM(h.resolved) FROM hits h
        WHERE h.model = o.model AND h.timeframe = o.timeframe), 0);
DROP TABLE totals_v3;
DROP TABLE hits_v3;
"""
# A version 1 file may predict a candle more than once (restarts): the first is kept.
_DROP_DUPLICATES = """
DELETE FROM predictions WHERE id NOT IN
    (SELECT MIN(id) FROM predictions GROUP BY model, symbol, timeframe, target_ts);
"""

PRED_COLUMNS = ("pred_open", "pred_high", "pred_low", "pred_close", "pred_volume")
ACTUAL_COLUMNS = ("actual_open", "actual_high", "actual_low", "actual_close", "actual_volume")
# Everything but the state blob, in table order: what a read lists.
LISTED_COLUMNS = (
    "id", "model", "model_step", "symbol", "timeframe", "created_ts", "target_ts",
    "reference_price", "action", "confidence", *PRED_COLUMNS, "executed", *ACTUAL_COLUMNS,
    "price_error", "volume_error", "action_correct", "reward", "status", "resolved_ts", "stale",
)  # fmt: skip
PENDING_COLUMNS = (
    "id", "model", "model_step", "symbol", "timeframe", "created_ts", "target_ts",
    "reference_price", "action", "confidence", *PRED_COLUMNS, "executed", "state", "stale",
)  # fmt: skip

# What the flush writes, in this order (every other change is to a row already inserted).
INSERT = (
    "INSERT INTO predictions (id, model, model_step, symbol, timeframe, created_ts, target_ts, "
    "reference_price, action, confidence, pred_open, pred_high, pred_low, pred_close, "
    "pred_volume, state, executed, stale) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# Every update is guarded by status = 'pending', so a second resolve (or expiry) of the same
# prediction is a no-op.
RESOLVE = (
    "UPDATE predictions SET actual_open = ?, actual_high = ?, actual_low = ?, actual_close = ?, "
    "actual_volume = ?, price_error = ?, volume_error = ?, action_correct = ?, reward = ?, "
    f"status = '{Status.RESOLVED}', resolved_ts = ?, state = NULL "
    f"WHERE id = ? AND status = '{Status.PENDING}'"
)
EXPIRE = (f"UPDATE predictions SET status = '{Status.EXPIRED}', resolved_ts = ?, state = NULL "
          f"WHERE id = ? AND status = '{Status.PENDING}'")
EXECUTED = "UPDATE predictions SET executed = 1 WHERE id = ?"
# The running totals as the index holds them after the rows of the same flush.
SET_TOTAL = "INSERT OR REPLACE INTO totals (model, symbol, status, n) VALUES (?, ?, ?, ?)"
SET_HITS = ("INSERT OR REPLACE INTO hits (model, symbol, timeframe, resolved, correct) "
            "VALUES (?, ?, ?, ?, ?)")
SET_SERIES = ("INSERT OR REPLACE INTO series (model, symbol, timeframe, latest_ts, pruned_through) "
              "VALUES (?, ?, ?, ?, ?)")
# Whether a candle was predicted by a model (the unique index answers).
PREDICTED = ("SELECT 1 FROM predictions WHERE model = ? AND symbol = ? AND timeframe = ? "
             "AND target_ts = ?")
KEEP_STATE = f"UPDATE predictions SET state = ? WHERE id = ? AND status = '{Status.PENDING}'"


def connect(path: Path) -> sqlite3.Connection:
    """A connection to the file, shareable between threads (the store serialises its use)."""
    # isolation_level=None: no implicit transactions; transaction() opens them explicitly.
    conn = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
    )
    conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode: durable across a process crash, may lose the last commits on
    # power loss; enough for predictions, which the next candle regenerates anyway.
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction; rolled back if anything inside raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException as exc:
        try:
            conn.execute("ROLLBACK")
        except Exception as lost:  # noqa: BLE001 - the connection died: nothing to roll back
            raise exc from lost
        raise
    conn.execute("COMMIT")


def create_schema(conn: sqlite3.Connection, path: Path) -> None:
    """Create the tables and indexes if missing; migrate a file of versions 1 to 3; refuse a
    file of another schema version."""
    conn.executescript(f"BEGIN IMMEDIATE;{_SCHEMA}COMMIT;")  # executescript commits itself
    with transaction(conn):
        found = conn.execute("SELECT version FROM schema_version").fetchall()
        if not found:
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            run_script(conn, _SCHEMA_2 + TOTALS)
        elif found in ([(1,)], [(2,)], [(3,)]):
            if found == [(1,)]:
                conn.execute(_DROP_DUPLICATES)
                run_script(conn, _SCHEMA_2 + TOTALS + _COUNT_TOTALS)
            else:
                run_script(conn, SPLIT_TOTALS)
            _create_3(conn)
            conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
        elif found != [(SCHEMA_VERSION,)]:
            raise RuntimeError(
                f"{path} holds prediction store schema version {found}, this code "
                f"reads version {SCHEMA_VERSION}; move the file aside or migrate it"
            )


def run_script(conn, script: str) -> None:
    """Each statement of ``script``, inside the caller's transaction."""
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def _create_3(conn: sqlite3.Connection) -> None:
    """Version 3: the ``stale`` column, 0 for the rows already there (a file older than it
    lacks the column; one whose table was created by this code has it)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(predictions)")}
    if "stale" not in columns:
        conn.execute("ALTER TABLE predictions ADD COLUMN stale INTEGER NOT NULL DEFAULT 0 "
                     "CHECK (stale IN (0, 1))")
