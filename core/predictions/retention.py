"""Retention: the prediction store's file bounded by age and rows (``store.keep_days``,
``store.max_rows``).

A resolved or expired row is deleted once it is more than ``keep_days`` of market time older
than the newest prediction, or, oldest first, while the file holds more than ``max_rows``. A
pending row is never deleted (it still waits for its candle), and neither are each model's
newest ``keep_resolved`` resolved rows (the rows its card scores: core/live/quality.py), so
retention changes no number on the page: the counts and accuracy are running totals in their
own tables (schema.py), and the cards' scores read rows retention keeps.

Deletes go in chunks of ``chunk`` rows, one transaction each, so reads wait for at most one.
Each chunk also raises, per model, symbol and timeframe, the newest candle deleted
(``series.pruned_through``): a candle at or before it counts as predicted, so a restart that
rewinds the market never predicts (and counts) a candle twice, even once its row is gone.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from core.predictions.status import PENDING, RESOLVED

DAY_MS = 86_400_000
_ROW = "SELECT id, model, symbol, timeframe, target_ts FROM predictions"
PRUNED = ("UPDATE series SET pruned_through = max(coalesce(pruned_through, ?1), ?1) "
          "WHERE model = ?2 AND symbol = ?3 AND timeframe = ?4")


@dataclass(frozen=True)
class Retention:
    keep_days: float = 30.0  # market days behind the newest prediction
    max_rows: int = 1_000_000
    keep_resolved: int = 1000  # each model's newest resolved rows, never deleted
    every_s: float = 10.0  # wall seconds between the flush job's retention passes
    chunk: int = 5000  # rows deleted per transaction

    def __post_init__(self) -> None:
        for name, low in (("keep_days", 0), ("max_rows", 1), ("keep_resolved", 0),
                          ("every_s", 0), ("chunk", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < low:
                raise ValueError(f"retention {name} must be a number >= {low}, got {value!r}")


def prune_chunk(conn: sqlite3.Connection, retention: Retention, models: list[str],
                newest_ts: int | None, stored: int,
                symbols: tuple[str, ...] | None = None) -> tuple[int, dict]:
    """Delete up to ``retention.chunk`` rows retention no longer keeps, inside the caller's
    transaction: first rows past the age, else the oldest over ``max_rows`` (``stored``: the
    rows the file holds). Returns how many rows, and per (model, symbol, timeframe) the
    newest candle deleted. Only rows of ``symbols`` (None: all): a store that writes some
    symbols of a shared database deletes only its own."""
    guard, params = _kept(conn, models, retention.keep_resolved, symbols)
    if symbols is not None:
        guard += f" AND symbol IN ({', '.join('?' * len(symbols))})"
        params += tuple(symbols)
    rows: list[tuple] = []
    if newest_ts is not None:
        cutoff = newest_ts - int(retention.keep_days * DAY_MS)
        rows = conn.execute(
            f"{_ROW} WHERE created_ts < ? AND +status != '{PENDING}'{guard} "
            "ORDER BY created_ts LIMIT ?", (cutoff, *params, retention.chunk)).fetchall()
    excess = stored - retention.max_rows
    if not rows and excess > 0:
        rows = conn.execute(f"{_ROW} WHERE +status != '{PENDING}'{guard} ORDER BY id LIMIT ?",
                            (*params, min(excess, retention.chunk))).fetchall()
    if not rows:
        return 0, {}
    conn.executemany("DELETE FROM predictions WHERE id = ?", [(row[0],) for row in rows])
    through: dict[tuple[str, str, str], int] = {}
    for _, model, symbol, tf, target_ts in rows:
        key = (model, symbol, tf)
        through[key] = max(through.get(key, target_ts), target_ts)
    conn.executemany(PRUNED, [(ts, *key) for key, ts in through.items()])
    return len(rows), through


def _kept(conn: sqlite3.Connection, models: list[str], keep: int,
          symbols: tuple[str, ...] | None) -> tuple[str, tuple]:
    """The condition (`` AND NOT ...`` per model) that spares each model's newest ``keep``
    resolved rows (newest by created_ts, then id, as the cards read them: of ``symbols``),
    and its params."""
    guard, params = "", ()
    if keep == 0:
        return guard, params
    scope = "" if symbols is None else f" AND symbol IN ({', '.join('?' * len(symbols))})"
    for model in models:
        oldest_kept = conn.execute(
            f"SELECT created_ts, id FROM predictions WHERE status = '{RESOLVED}' AND model = ?"
            f"{scope} ORDER BY created_ts DESC, id DESC LIMIT 1 OFFSET ?",
            (model, *(symbols or ()), keep - 1)).fetchone()
        if oldest_kept is None:  # fewer than `keep`: all of them
            guard += f" AND NOT (status = '{RESOLVED}' AND model = ?)"
            params += (model,)
        else:
            guard += (f" AND NOT (status = '{RESOLVED}' AND model = ? "
                      "AND (created_ts, id) >= (?, ?))")
            params += (model, *oldest_kept)
    return guard, params
