"""The prediction store's database: its connection (a SQLite file, or PostgreSQL: postgres.py),
the lock that serialises its use, its health (health.py) and its write transactions."""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from core.predictions import postgres, schema
from core.predictions.health import StoreHealth

T = TypeVar("T")
log = logging.getLogger(__name__)


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


def _connect(location: str | Path, symbols: tuple[str, ...] | None) -> tuple[Path | str, Any]:
    """The store's name (a password masked) and its connection, the schema created or migrated:
    PostgreSQL for a ``postgresql://`` URL (postgres.py; ``symbols`` claimed for this
    writer), else a SQLite file (schema.py)."""
    if postgres.is_url(location):
        pg = postgres.PgConnection(str(location), symbols)
        try:
            postgres.create_schema(pg)
        except BaseException:
            pg.close()
            raise
        return pg.url, pg
    path = Path(location)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = schema.connect(path)
    schema.create_schema(conn, path)
    return path, conn


class Database:
    """One connection, used under ``lock`` (an RLock the store takes before its index lock,
    never after it); ``health`` says whether it answers."""

    def __init__(self, location: str | Path, symbols: tuple[str, ...] | None):
        self.path, self.conn = _connect(location, symbols)  # path: its name in errors
        self.shared = postgres.is_url(location)  # other processes may write it
        self.health = StoreHealth("postgresql" if self.shared else "sqlite", str(self.path))
        self.lost = getattr(self.conn, "lost_errors", (sqlite3.OperationalError,))
        self.lock = threading.RLock()

    def reading(self, read: Callable[[], T]) -> T:
        """``read()`` of the database; StoreUnavailable (at once while it is DOWN and waiting
        for its next try) if the database cannot answer."""
        if self.health.down and not self.health.may_try():
            raise self.health.unavailable()
        try:
            return read()
        except self.lost as exc:
            self.health.failed(exc)
            raise self.health.unavailable() from exc

    def writing(self, write: Callable[[Any], T]) -> T:
        """``write(connection)`` in one transaction. If it fails the database is DOWN
        (health) and the error raised (a clear one when another process took the ids)."""
        try:
            with schema.transaction(self.conn) as conn:
                result = write(conn)
        except BaseException as exc:
            self.health.failed(exc)
            raise _taken_ids(self.path, exc) or exc  # noqa: B904 (cause set there)
        return result

    def wrote(self, rows: int) -> None:
        """A flush succeeded (``rows`` written): the database is OK again if it was DOWN."""
        if self.health.down:
            log.warning("prediction store %s reachable again: %d rows written", self.path, rows)
        self.health.succeeded()

    def reserve_ids(self) -> tuple[int, int]:
        try:
            return self.conn.reserve_ids()
        except BaseException as exc:
            self.health.failed(exc)
            raise
