"""The prediction store's SQLite file: its schema, the statements the flush writes, the
connection's settings and the write transaction.

SQLite in WAL mode. Writes run in ``BEGIN IMMEDIATE`` transactions, so a second process on the
same file (a backup, a report) waits on the busy timeout instead of failing mid-transaction.
One process writes a file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from core.predictions.status import Status

SCHEMA_VERSION = 1
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

PRED_COLUMNS = ("pred_open", "pred_high", "pred_low", "pred_close", "pred_volume")
ACTUAL_COLUMNS = ("actual_open", "actual_high", "actual_low", "actual_close", "actual_volume")
# Everything but the state blob, in table order: what a read lists.
LISTED_COLUMNS = (
    "id", "model", "model_step", "symbol", "timeframe", "created_ts", "target_ts",
    "reference_price", "action", "confidence", *PRED_COLUMNS, "executed", *ACTUAL_COLUMNS,
    "price_error", "volume_error", "action_correct", "reward", "status", "resolved_ts",
)  # fmt: skip
PENDING_COLUMNS = (
    "id", "model", "model_step", "symbol", "timeframe", "created_ts", "target_ts",
    "reference_price", "action", "confidence", *PRED_COLUMNS, "executed", "state",
)  # fmt: skip

# What the flush writes, in this order (every other change is to a row already inserted).
INSERT = (
    "INSERT INTO predictions (id, model, model_step, symbol, timeframe, created_ts, target_ts, "
    "reference_price, action, confidence, pred_open, pred_high, pred_low, pred_close, "
    "pred_volume, state, executed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
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
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def create_schema(conn: sqlite3.Connection, path: Path) -> None:
    """Create the tables and indexes if missing; refuse a file of another schema version."""
    conn.executescript(f"BEGIN IMMEDIATE;{_SCHEMA}COMMIT;")  # executescript commits itself
    with transaction(conn):
        found = conn.execute("SELECT version FROM schema_version").fetchall()
        if not found:
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
        elif found != [(SCHEMA_VERSION,)]:
            raise RuntimeError(
                f"{path} holds prediction store schema version {found}, this code "
                f"reads version {SCHEMA_VERSION}; move the file aside or migrate it"
            )
