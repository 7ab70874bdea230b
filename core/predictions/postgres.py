"""The prediction store on PostgreSQL (``store.url: postgresql://user@host:port/db``, psycopg 3):
the same tables, statements and transactions as the SQLite file (schema.py), in PostgreSQL's
dialect. ``PredictionStore`` keeps its in-memory index either way; only the connection differs.

``PgConnection`` gives psycopg's connection the calls the store makes on a sqlite3 one
(``execute``, ``executemany``, ``close``), in autocommit mode: ``transaction`` (schema.py) opens
each write transaction explicitly. The store's statements use SQLite's ``?`` placeholders and
its ``+column`` planner hints; ``pg_sql`` turns them into ``%s`` and plain columns, and gives
PostgreSQL's own text for the few statements SQLite spells its own way (upserts, ``max`` of
two values).

Schema versions as in schema.py; a database starts at version 3 (there never was a version 1
or 2 on PostgreSQL). Created in one transaction under an advisory lock, so two processes
starting at once on one database create it once.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

from core.predictions import retention, schema
from core.predictions.status import Status

_STATUS_NAMES = ", ".join(f"'{s}'" for s in Status)
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS predictions (
    id              BIGINT  PRIMARY KEY,
    model           TEXT    NOT NULL,
    model_step      BIGINT  NOT NULL,
    symbol          TEXT    NOT NULL,
    timeframe       TEXT    NOT NULL,
    created_ts      BIGINT  NOT NULL,
    target_ts       BIGINT  NOT NULL,
    reference_price DOUBLE PRECISION NOT NULL,
    action          TEXT    NOT NULL,
    confidence      DOUBLE PRECISION NOT NULL CHECK (confidence BETWEEN 0 AND 1),
    pred_open       DOUBLE PRECISION,
    pred_high       DOUBLE PRECISION,
    pred_low        DOUBLE PRECISION,
    pred_close      DOUBLE PRECISION,
    pred_volume     DOUBLE PRECISION,
    state           BYTEA,
    executed        INTEGER NOT NULL DEFAULT 0 CHECK (executed IN (0, 1)),
    actual_open     DOUBLE PRECISION,
    actual_high     DOUBLE PRECISION,
    actual_low      DOUBLE PRECISION,
    actual_close    DOUBLE PRECISION,
    actual_volume   DOUBLE PRECISION,
    price_error     DOUBLE PRECISION,
    volume_error    DOUBLE PRECISION,
    action_correct  INTEGER CHECK (action_correct IN (0, 1)),
    reward          DOUBLE PRECISION,
    status          TEXT    NOT NULL DEFAULT '{Status.PENDING}'
                            CHECK (status IN ({_STATUS_NAMES})),
    resolved_ts     BIGINT,
    stale           INTEGER NOT NULL DEFAULT 0 CHECK (stale IN (0, 1))
);
CREATE INDEX IF NOT EXISTS ix_predictions_created ON predictions (created_ts);
CREATE UNIQUE INDEX IF NOT EXISTS ux_predictions_target
    ON predictions (model, symbol, timeframe, target_ts);
CREATE INDEX IF NOT EXISTS ix_predictions_status ON predictions (status, model, created_ts);
CREATE TABLE IF NOT EXISTS totals (
    model TEXT NOT NULL, status TEXT NOT NULL, n BIGINT NOT NULL, PRIMARY KEY (model, status));
CREATE TABLE IF NOT EXISTS hits (
    model TEXT NOT NULL, timeframe TEXT NOT NULL, resolved BIGINT NOT NULL,
    correct BIGINT NOT NULL, PRIMARY KEY (model, timeframe));
CREATE TABLE IF NOT EXISTS series (
    model TEXT NOT NULL, symbol TEXT NOT NULL, timeframe TEXT NOT NULL,
    latest_ts BIGINT NOT NULL, pruned_through BIGINT, PRIMARY KEY (model, symbol, timeframe))
"""
_LOCK = 7_134_522_015  # the advisory lock taken while the schema is created or migrated

# PostgreSQL's text of the statements SQLite spells its own way.
_OWN = {
    "BEGIN IMMEDIATE": "BEGIN",
    schema.SET_TOTAL: "INSERT INTO totals (model, status, n) VALUES (%s, %s, %s) "
                      "ON CONFLICT (model, status) DO UPDATE SET n = EXCLUDED.n",
    schema.SET_HITS: "INSERT INTO hits (model, timeframe, resolved, correct) "
                     "VALUES (%s, %s, %s, %s) ON CONFLICT (model, timeframe) DO UPDATE "
                     "SET resolved = EXCLUDED.resolved, correct = EXCLUDED.correct",
    schema.SET_SERIES: "INSERT INTO series (model, symbol, timeframe, latest_ts, pruned_through) "
                       "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (model, symbol, timeframe) DO "
                       "UPDATE SET latest_ts = EXCLUDED.latest_ts, "
                       "pruned_through = EXCLUDED.pruned_through",
    # greatest() ignores a NULL: the first deletion sets it
    retention.PRUNED: "UPDATE series SET pruned_through = greatest(pruned_through, %s) "
                      "WHERE model = %s AND symbol = %s AND timeframe = %s",
}
_HINT = re.compile(r"(?<=[\s(])\+(?=[a-z_])")  # SQLite's "+column": use no index for it


def pg_sql(sql: str) -> str:
    """``sql`` (the store's SQLite text) as PostgreSQL runs it."""
    own = _OWN.get(sql)
    return own if own is not None else _HINT.sub("", sql).replace("?", "%s")


def masked(url: str) -> str:
    """``url`` with its password (if any) replaced by ***: safe to show."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class PgConnection:
    """A psycopg connection answering the sqlite3 calls the store makes."""

    def __init__(self, url: str):
        import psycopg  # only a PostgreSQL store needs it

        self.url = masked(url)
        self._conn = psycopg.connect(url, autocommit=True, connect_timeout=5)

    def execute(self, sql: str, params: tuple = ()):
        return self._conn.execute(pg_sql(sql), tuple(params) or None)

    def executemany(self, sql: str, rows) -> None:
        with self._conn.cursor() as cur:
            cur.executemany(pg_sql(sql), list(rows))

    def executescript(self, script: str) -> None:
        for statement in script.split(";"):
            if statement.strip():
                self._conn.execute(statement)

    def close(self) -> None:
        self._conn.close()


def create_schema(conn: PgConnection) -> None:
    """Create the tables and indexes if missing; refuse a database of another schema version."""
    with schema.transaction(conn):
        conn.execute("SELECT pg_advisory_xact_lock(?)", (_LOCK,))
        conn.executescript(_SCHEMA)
        found = conn.execute("SELECT version FROM schema_version").fetchall()
        if not found:
            conn.execute("INSERT INTO schema_version (version) VALUES (?)",
                         (schema.SCHEMA_VERSION,))
        elif found != [(schema.SCHEMA_VERSION,)]:
            raise RuntimeError(
                f"{conn.url} holds prediction store schema version {found}, this code reads "
                f"version {schema.SCHEMA_VERSION}; migrate it or use another database")


def is_url(location: object) -> bool:
    """Whether a store location is a PostgreSQL URL (else a SQLite file)."""
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))
