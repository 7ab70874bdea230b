"""The store's reads that need the file: committed rows from SQLite, with the rows the next
flush will write laid over them (``unflushed``: id -> the row as the file will hold it, from
``Index.changes``), so a read sees everything recorded before it without writing anything.
Each takes the store's connection while the store holds it (no flush runs meanwhile)."""

from __future__ import annotations

import sqlite3

from core.predictions.rows import integer, listed, text, timeframe_name
from core.predictions.schema import LISTED_COLUMNS
from core.predictions.status import RESOLVED, STATUSES

MAX_LIMIT = 1000
_SELECT = f"SELECT {', '.join(LISTED_COLUMNS)} FROM predictions"


class Answers:
    """The answers ``recent`` gave for one version of the store's content (``Index.version``),
    by query: twenty pages polling the same listing between two changes share one read. At
    most ``MAX_ANSWERS`` queries; a new version forgets them all. The store holds its lock."""

    MAX_ANSWERS = 64

    def __init__(self) -> None:
        self.version = -1
        self.rows: dict[tuple, list[dict]] = {}

    def get(self, version: int, query: tuple) -> list[dict] | None:
        return self.rows.get(query) if version == self.version else None

    def put(self, version: int, query: tuple, rows: list[dict]) -> None:
        if version < self.version:
            return  # read before a change another answer has seen
        if version > self.version:
            self.version, self.rows = version, {}
        if len(self.rows) < self.MAX_ANSWERS:
            self.rows[query] = rows


def _order(row: dict) -> tuple[int, int]:
    return row["created_ts"], row["id"]


def _scope(symbols: tuple[str, ...] | None) -> tuple[str, tuple]:
    if symbols is None:
        return "", ()
    return f"+symbol IN ({', '.join('?' * len(symbols))})", tuple(symbols)


def recent(conn: sqlite3.Connection, unflushed: dict[int, dict], limit: int,
           filters: dict[str, str | None], symbols: tuple[str, ...] | None = None) -> list[dict]:
    """The newest ``limit`` rows (by created_ts, then id) matching every filter given
    (model, symbol, timeframe, status; None: any) and, if given, of ``symbols``. See
    ``PredictionStore.recent``."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be an integer from 1 to {MAX_LIMIT}, got {limit!r}")
    status = filters.get("status")
    if status is not None and status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
    given = {column: timeframe_name(value) if column == "timeframe" else text(column, value)
             for column, value in filters.items() if value is not None}
    # "+column" keeps the planner on ix_predictions_created: a newest-first walk that stops
    # at the limit, instead of sorting every row of a model or status. With both a model and
    # a status, ix_predictions_status (status, model, created_ts) walks that one's rows alone,
    # already in order (a card's newest resolved rows, say).
    indexed = ("status", "model") if {"status", "model"} <= given.keys() else ()
    terms = [f"{'' if column in indexed else '+'}{column} = ?" for column in given]
    scope, scoped = _scope(symbols)
    where = " AND ".join(terms + [scope] if scope else terms)
    sql = f"{_SELECT}{' WHERE ' + where if where else ''} ORDER BY created_ts DESC, id DESC LIMIT ?"
    # Each unflushed row may replace one of the file's (it moved out of the filter), so the
    # file is asked for that many more: the newest `limit` of the rest are among them.
    rows = [listed(row) for row in conn.execute(
        sql, (*given.values(), *scoped, limit + len(unflushed)))]
    if not unflushed:
        return rows[:limit]
    kept = [row for row in rows if row["id"] not in unflushed]
    fresh = [row for row in unflushed.values()
             if all(row[column] == value for column, value in given.items())]  # own symbols
    return sorted(kept + fresh, key=_order, reverse=True)[:limit]


def resolved(conn: sqlite3.Connection, unflushed: dict[int, dict],
             after_created_ts: int | None, symbols: tuple[str, ...] | None = None) -> list[dict]:
    """Every resolved row (created after ``after_created_ts``, if given; of ``symbols``, if
    given), oldest first."""
    scope, params = _scope(symbols)
    sql = f"{_SELECT} WHERE status = '{RESOLVED}'" + (f" AND {scope}" if scope else "")
    if after_created_ts is not None:
        after_created_ts = integer("after_created_ts", after_created_ts)
        sql += " AND created_ts > ?"
        params += (after_created_ts,)
    rows = [listed(row) for row in conn.execute(sql + " ORDER BY created_ts, id", params)]
    if not unflushed:
        return rows
    fresh = [row for row in unflushed.values() if row["status"] == RESOLVED
             and (after_created_ts is None or row["created_ts"] > after_created_ts)]
    kept = [row for row in rows if row["id"] not in unflushed]
    return sorted(kept + fresh, key=_order)


def get(conn: sqlite3.Connection, unflushed: dict[int, dict], pred_id: int) -> dict | None:
    """One row as ``recent`` lists it, or None."""
    if pred_id in unflushed:
        return unflushed[pred_id]
    rows = conn.execute(f"{_SELECT} WHERE id = ?", (pred_id,)).fetchall()
    return listed(rows[0]) if rows else None


def stored_state(conn: sqlite3.Connection, pred_id: int) -> bytes | None:
    """The state blob the file holds for a prediction (None: none, or no such id)."""
    rows = conn.execute("SELECT state FROM predictions WHERE id = ?", (pred_id,)).fetchall()
    return rows[0][0] if rows else None
