"""The recorder: writes what the market feed accepts in the replay's recording format.

Attached to a live feed it records, per symbol, the closed candles of the finest timeframe
(``candles-1s``), every public trade (``trades``) and order-book snapshots (``book``, the top
``book_levels`` per side, at most one per ``book_interval_ms``). Rows are buffered and appended
to the gzip'd CSV files every ``flush_rows`` rows and at ``close()``, which also writes the
manifest with checksums. The replay plays such a recording back with its real books and trades.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pandas as pd

from core.market.books import OrderBook
from core.market.candles import Candle
from core.market.feed import MarketFeed, Trade
from core.market.recording import KINDS, RecordingWriter

log = logging.getLogger(__name__)


class Recorder:
    def __init__(self, path: Path, name: str, description: str, provenance: dict,
                 licence: str, base_tf: str = "1s", book_levels: int = 20,
                 book_interval_ms: int = 1000, flush_rows: int = 5000):
        self.writer = RecordingWriter(path, name, description, provenance, licence)
        self.base_tf = base_tf
        self.book_levels = book_levels
        self.book_interval_ms = book_interval_ms
        self.flush_rows = flush_rows
        self._rows: dict[tuple[str, str], list[tuple]] = {}
        self._last_book_ts: dict[str, int] = {}
        self._lock = threading.Lock()
        self.closed = False
        self.counts: dict[str, int] = {"candles": 0, "trades": 0, "book": 0}

    def attach(self, feed: MarketFeed) -> None:
        feed.store.subscribe(self.on_candle)
        feed.trade_listeners.append(self.on_trade)
        feed.book_listeners.append(self.on_book)

    def _add(self, symbol: str, kind: str, rows: list[tuple]) -> None:
        with self._lock:
            if self.closed:
                return
            buffer = self._rows.setdefault((symbol, kind), [])
            buffer.extend(rows)
            self.counts[kind] += 1
            pending = sum(len(v) for v in self._rows.values())
        if pending >= self.flush_rows:
            self.flush()

    def on_candle(self, symbol: str, tf: str, candle: Candle) -> None:
        if tf == self.base_tf:
            self._add(symbol, "candles", [candle.as_row()])

    def on_trade(self, trade: Trade) -> None:
        self._add(trade.symbol, "trades", [(trade.ts, trade.price, trade.amount, trade.side)])

    def on_book(self, book: OrderBook) -> None:
        last = self._last_book_ts.get(book.symbol)
        if last is not None and book.ts - last < self.book_interval_ms:
            return
        self._last_book_ts[book.symbol] = book.ts
        rows = [(book.ts, "bid", float(p), float(s)) for p, s in book.bids[: self.book_levels]]
        rows += [(book.ts, "ask", float(p), float(s)) for p, s in book.asks[: self.book_levels]]
        self._add(book.symbol, "book", rows)

    def flush(self) -> None:
        with self._lock:
            batches, self._rows = self._rows, {}
            for (symbol, kind), rows in batches.items():
                if not rows:
                    continue
                frame = pd.DataFrame(rows, columns=list(KINDS[kind]))
                frame["ts"] = frame["ts"].astype("int64")
                self.writer.append(symbol, kind, frame, self.base_tf if kind == "candles" else None)

    def close(self) -> Path:
        """Flush and write the manifest; the recording is then ready to replay."""
        self.flush()
        with self._lock:
            self.closed = True
        manifest = self.writer.close()
        log.info("recording written to %s (%s)", manifest.parent, self.counts)
        return manifest
