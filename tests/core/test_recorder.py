"""The recorder writes what the feed accepts; the replay plays it back with its real books."""

from __future__ import annotations

import numpy as np

from core.market.books import OrderBooks
from core.market.candles import CandleStore
from core.market.feed import MarketFeed
from core.market.recorder import Recorder
from core.market.recording import load_recording
from core.market.replay import ReplaySource

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
SYM = "ETH/USDT"
TFS = ("1s", "1m")


def make_feed():
    store = CandleStore((SYM,), TFS, {tf: 500 for tf in TFS})
    return MarketFeed(store, OrderBooks())


def live_session(feed: MarketFeed, seconds: int = 120) -> list:
    """A hand-made 'live' session: one 1s candle, one trade and one book per second."""
    rng = np.random.default_rng(1)
    price, candles = 2000.0, []
    for i in range(seconds):
        ts = T0 + i * 1000
        close = round(price * (1 + rng.normal(0, 1e-4)), 2)
        row = [ts, price, max(price, close) + 0.01, min(price, close) - 0.01, close,
               round(float(rng.uniform(0.1, 2.0)), 4)]
        feed.candle(SYM, row)
        candles.append(row)
        feed.trade(SYM, ts + 500, close, 0.5, "buy" if i % 2 else "sell")
        bids = [[close - 0.01 * (k + 1), 1.0 + k] for k in range(5)]
        asks = [[close + 0.01 * (k + 1), 2.0 + k] for k in range(5)]
        feed.book(SYM, ts + 999, bids, asks)
        price = close
    return candles


def test_recording_replays_to_the_same_candles_trades_and_books(tmp_path):
    live = make_feed()
    recorder = Recorder(tmp_path / "rec", "test-session", "hand-made session",
                        {"source": "test"}, "CC0", book_levels=5, flush_rows=100)
    recorder.attach(live)
    candles = live_session(live)
    recorder.close()

    rec = load_recording(tmp_path / "rec")
    kinds = {(s.symbol, s.kind, s.timeframe): s.rows for s in rec.streams}
    assert kinds == {(SYM, "candles", "1s"): 120, (SYM, "trades", None): 120,
                     (SYM, "book", None): 120 * 10}

    replay_feed = make_feed()
    trades, books = [], []
    replay_feed.trade_listeners.append(trades.append)
    replay_feed.book_listeners.append(books.append)
    source = ReplaySource(rec, replay_feed, symbols=(SYM,), start_ms=T0)
    assert source.describe()["books"] == "recorded"
    assert source.describe()["interpolated_timeframes"] == []  # real 1s candles
    source.emit_until(T0 + 120 * 1000)
    replayed = replay_feed.store.closed(SYM, "1s")
    np.testing.assert_array_equal(replayed, np.array(candles, dtype=np.float64))
    # The same 1m candles as the live session built.
    np.testing.assert_array_equal(replay_feed.store.closed(SYM, "1m"), live.store.closed(SYM, "1m"))
    assert [t.ts for t in trades] == [T0 + i * 1000 + 500 for i in range(120)]
    assert [t.side for t in trades[:2]] == ["sell", "buy"]
    assert len(books) == 120 and not books[0].synthetic
    np.testing.assert_array_equal(books[-1].bids, live.books.get(SYM).bids)


def test_recorder_keeps_at_most_one_book_per_interval(tmp_path):
    feed = make_feed()
    recorder = Recorder(tmp_path / "rec", "r", "", {}, "", book_levels=2, book_interval_ms=1000)
    recorder.attach(feed)
    for i in range(10):  # a book every 250 ms for 2.5 s -> kept at 0, 1000, 2000
        feed.book(SYM, T0 + 250 * i, [[99.0, 1.0]], [[101.0, 1.0]])
    recorder.close()
    rec = load_recording(tmp_path / "rec")
    book = rec.table(rec.stream(SYM, "book"))
    assert sorted(set(book["ts"])) == [T0, T0 + 1000, T0 + 2000]
