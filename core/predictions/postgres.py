"""The prediction store on PostgreSQL (``store.url: postgresql://user@host:port/db``, psycopg 3):
the same tables, statements and transactions as the SQLite file (schema.py), in PostgreSQL's
dialect. ``PredictionStore`` keeps its in-memory index either way; only the connection differs.

``PgConnection`` gives psycopg's connection the calls the store makes on a sqlite3 one
(``execute``, ``executemany``, ``close``), in autocommit mode: ``transaction`` (schema.py) opens
each write transaction explicitly. The store's statements use SQLite's ``?`` placeholders and
its ``+column`` planner hints; ``pg_sql`` turns them into ``%s`` and plain columns, and gives
PostgreSQL's own text for the few statements SQLite spells its own way (upserts, ``max`` of
two values).

Schema versions as in schema.py; a database starts at version 4 (one of version 3 is migrated;
there never was a version 1 or 2 on PostgreSQL). Created in one transaction under an advisory
lock, so two processes starting at once on one database create it once.

**Several writers.** Tickwise processes following different symbols may share one database:
each claims its symbols with session advisory locks (``claim``: a second writer of a symbol
is refused at start), keeps the totals of its own symbols (they are per symbol), and takes its
ids in blocks of ``ID_BLOCK`` from the ``prediction_ids`` sequence, so ids never collide and a
prediction gets its id without a round trip (nor while the database is down, until the block
and the one reserved after it run out). Every process reads every symbol's rows.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

from core.predictions import retention, schema
from core.predictions.status import Status

_STATUS_NAMES = ", ".join(f"'{s}'" for s in Status)
_SCHEMA = """
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
    status          TEXT    NOT NULL DEFAULT '{pending}'
                            CHECK (status IN ({statuses})),
    resolved_ts     BIGINT,
    stale           INTEGER NOT NULL DEFAULT 0 CHECK (stale IN (0, 1))
);
CREATE INDEX IF NOT EXISTS ix_predictions_created ON predictions (created_ts);
CREATE UNIQUE INDEX IF NOT EXISTS ux_predictions_target
    ON predictions (model, symbol, timeframe, target_ts);
CREATE INDEX IF NOT EXISTS ix_predictions_status ON predictions (status, model, created_ts);
CREATE TABLE IF NOT EXISTS series (
    model TEXT NOT NULL, symbol TEXT NOT NULL, timeframe TEXT NOT NULL,
    latest_ts BIGINT NOT NULL, pruned_through BIGINT, PRIMARY KEY (model, symbol, timeframe));
CREATE SEQUENCE IF NOT EXISTS prediction_ids INCREMENT BY {ID_BLOCK}
"""
ID_BLOCK = 100_000  # ids a store reserves from the sequence at a time (see Ids)
_SCHEMA = _SCHEMA.format(statuses=_STATUS_NAMES, pending=Status.PENDING,
                         ID_BLOCK=ID_BLOCK) + ";" + schema.TOTALS
_LOCK = 7_134_522_015  # the advisory lock taken while the schema is created or migrated

# PostgreSQL's text of the statements SQLite spells its own way.
_OWN = {
    "BEGIN IMMEDIATE": "BEGIN",
    # A flush whose COMMIT was sent before the connection dropped may have landed: its retry
    # inserts nothing twice (every other statement of a flush can run twice harmlessly).
    schema.INSERT: schema.INSERT.replace("?", "%s") + " ON CONFLICT (id) DO NOTHING",
    schema.SET_TOTAL: "INSERT INTO totals (model, symbol, status, n) VALUES (%s, %s, %s, %s) "
                      "ON CONFLICT (model, symbol, status) DO UPDATE SET n = EXCLUDED.n",
    schema.SET_HITS: "INSERT INTO hits (model, symbol, timeframe, resolved, correct) "
                     "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (model, symbol, timeframe) DO "
                     "UPDATE SET resolved = EXCLUDED.resolved, correct = EXCLUDED.correct",
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
    """A psycopg connection answering the sqlite3 calls the store makes; after the server was
    lost, the next call connects again (and takes the store's symbols again: ``claim``)."""

    def __init__(self, url: str, symbols: tuple[str, ...] | None = None):
        import psycopg  # only a PostgreSQL store needs it

        self.url = masked(url)
        self._url, self._psycopg = url, psycopg
        # What a lost server raises (the store's health: DOWN, retried with backoff).
        self.lost_errors = (psycopg.OperationalError, psycopg.InterfaceError)
        self.symbols = symbols  # None: every symbol (one writer for the whole database)
        self._conn = self._connect()

    def _connect(self):
        conn = self._psycopg.connect(self._url, autocommit=True, connect_timeout=5)
        try:
            claim(conn, self.symbols, self.url)
        except BaseException:
            conn.close()
            raise
        return conn

    def _live(self):
        if self._conn.closed or self._conn.broken:
            self._conn.close()
            self._conn = self._connect()
        return self._conn

    def execute(self, sql: str, params: tuple = ()):
        return self._live().execute(pg_sql(sql), tuple(params) or None)

    def executemany(self, sql: str, rows) -> None:
        with self._live().cursor() as cur:
            cur.executemany(pg_sql(sql), list(rows))

    def executescript(self, script: str) -> None:
        schema.run_script(self, script)

    def reserve_ids(self) -> tuple[int, int]:
        """A block of ids no other writer gets: [start, end)."""
        start = self.execute("SELECT nextval('prediction_ids')").fetchone()[0]
        return start, start + ID_BLOCK

    def close(self) -> None:
        self._conn.close()


def claim(conn, symbols: tuple[str, ...] | None, where: str) -> None:
    """Take the store's symbols for this connection (session advisory locks, released when it
    ends): a store of some symbols shares the whole-database lock and takes each symbol's
    alone; a store of every symbol (None) takes the whole database alone. Another live writer
    of one of them: RuntimeError naming it."""
    whole = "SELECT pg_try_advisory_lock%s(hashtext('tickwise-store:*'))"
    if not conn.execute(whole % ("" if symbols is None else "_shared")).fetchone()[0]:
        raise RuntimeError(f"{where}: another Tickwise process writes this prediction store "
                           f"{'(some of its symbols)' if symbols is None else '(all symbols)'}; "
                           "each process must write its own market.symbols")
    for symbol in symbols or ():
        if not conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))",
                            (f"tickwise-store:{symbol}",)).fetchone()[0]:
            raise RuntimeError(f"{where}: another Tickwise process writes {symbol}'s "
                               "predictions to this store; each process must write its own "
                               "market.symbols")


def create_schema(conn: PgConnection) -> None:
    """Create the tables and indexes if missing; migrate a version 3 database; refuse one of
    another schema version."""
    with schema.transaction(conn):
        conn.execute("SELECT pg_advisory_xact_lock(?)", (_LOCK,))
        conn.executescript(_SCHEMA)
        found = conn.execute("SELECT version FROM schema_version").fetchall()
        if not found:
            conn.execute("INSERT INTO schema_version (version) VALUES (?)",
                         (schema.SCHEMA_VERSION,))
        elif found == [(3,)]:  # one writer's ids (max + 1), totals per model
            conn.executescript(schema.SPLIT_TOTALS)
            conn.execute("SELECT setval('prediction_ids', coalesce(max(id), 0) + 1, false) "
                         "FROM predictions")
            conn.execute("UPDATE schema_version SET version = ?", (schema.SCHEMA_VERSION,))
        elif found != [(schema.SCHEMA_VERSION,)]:
            raise RuntimeError(
                f"{conn.url} holds prediction store schema version {found}, this code reads "
                f"version {schema.SCHEMA_VERSION}; migrate it or use another database")


def is_url(location: object) -> bool:
    """Whether a store location is a PostgreSQL URL (else a SQLite file)."""
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))
