"""Tests for core.live.signals: signal fusion, correlation, blending and the paper book.

Expected numbers are worked out by hand in the comments.
"""

import math

import numpy as np
import pytest

from core.config import SignalConfig
from core.live.signals import PaperBook, Signal, Vote, correlation, fuse, make_signal

WEIGHTS = {"1s": 0.1, "1m": 0.3, "1h": 0.35, "1d": 0.25}
ETH, BTC = "ETH/USDT", "BTC/USDT"


def signal(action: str, symbol: str = ETH, ts: int = 0) -> Signal:
    return Signal(symbol, ts, action, confidence=1.0, score=0.0, correlation=None, votes=1)


# -- fuse ------------------------------------------------------------------------------


def test_fuse_weighs_buy_and_sell_by_timeframe():
    votes = [Vote("cnn", "1m", "BUY", 0.8), Vote("dqn", "1h", "SELL", 0.5)]
    score, total = fuse(votes, WEIGHTS)
    # (0.3 * 0.8 - 0.35 * 0.5) / (0.3 + 0.35) = (0.24 - 0.175) / 0.65 = 0.065 / 0.65 = 0.1
    assert score == pytest.approx(0.1)
    assert total == pytest.approx(0.65)


def test_fuse_hold_counts_weight_but_no_sign():
    votes = [Vote("cnn", "1m", "BUY", 0.8), Vote("dqn", "1h", "HOLD", 0.9)]
    score, total = fuse(votes, WEIGHTS)
    # HOLD adds 0.35 to the weight, nothing to the vote: 0.3 * 0.8 / 0.65 = 0.24 / 0.65
    assert score == pytest.approx(0.24 / 0.65)  # 0.36923
    assert total == pytest.approx(0.65)


def test_fuse_ignores_unknown_and_zero_weight_timeframes():
    votes = [Vote("cnn", "1m", "SELL", 0.6), Vote("cnn", "5m", "BUY", 1.0),
             Vote("dqn", "1s", "BUY", 1.0)]
    score, total = fuse(votes, {**WEIGHTS, "1s": 0.0})
    # only the 1m vote counts: -0.3 * 0.6 / 0.3 = -0.6
    assert score == pytest.approx(-0.6)
    assert total == pytest.approx(0.3)


def test_fuse_two_votes_on_one_timeframe_average():
    votes = [Vote("cnn", "1d", "BUY", 0.9), Vote("dqn", "1d", "BUY", 0.3)]
    score, total = fuse(votes, WEIGHTS)
    # (0.25 * 0.9 + 0.25 * 0.3) / 0.5 = 0.3 / 0.5 = 0.6
    assert score == pytest.approx(0.6)
    assert total == pytest.approx(0.5)


def test_fuse_empty_is_zero():
    assert fuse([], WEIGHTS) == (0.0, 0.0)


# -- correlation -----------------------------------------------------------------------


def test_correlation_by_hand():
    a = np.array([1.0, 2.0, 3.0, 4.0])
    b = np.array([1.0, 3.0, 2.0, 4.0])
    # both means 2.5; deviations a: -1.5 -0.5 0.5 1.5, b: -1.5 0.5 -0.5 1.5
    # cov sum = 2.25 - 0.25 - 0.25 + 2.25 = 4; sum of squares 5 and 5 -> r = 4 / 5 = 0.8
    assert correlation(a, b) == pytest.approx(0.8)
    assert correlation(a, -b) == pytest.approx(-0.8)


def test_correlation_uses_the_common_tail():
    a = np.array([100.0, -50.0, 1.0, 2.0, 3.0, 4.0])
    b = np.array([1.0, 3.0, 2.0, 4.0])
    # the last 4 of a are [1, 2, 3, 4]: the 0.8 above, the two older values ignored
    assert correlation(a, b) == pytest.approx(0.8)


@pytest.mark.parametrize("a, b", [
    ([1.0, 2.0], [2.0, 1.0]),  # fewer than 3 common points
    ([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]),  # flat: std 0
    ([], []),
    ([1.0, math.nan, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0]),  # a NaN return
])
def test_correlation_undefined_is_none(a, b):
    assert correlation(np.array(a), np.array(b)) is None


# -- make_signal -----------------------------------------------------------------------


def test_make_signal_blends_the_reference_by_correlation():
    s = make_signal(ETH, 1000, score=0.5, ref_score=0.8, corr=0.5, threshold=0.6, votes=4)
    # (0.5 + 0.5 * 0.5 * 0.8) / (1 + 0.5 * 0.5) = (0.5 + 0.2) / 1.25 = 0.56
    assert s.score == pytest.approx(0.56)
    assert s.confidence == pytest.approx(0.56)
    assert s.action == "HOLD"  # 0.56 < 0.6
    assert (s.symbol, s.ts, s.correlation, s.votes) == (ETH, 1000, 0.5, 4)
    assert make_signal(ETH, 1000, 0.5, 0.8, 0.5, threshold=0.5, votes=4).action == "BUY"


def test_make_signal_negative_correlation_pulls_the_other_way():
    s = make_signal(ETH, 0, score=0.5, ref_score=0.8, corr=-0.5, threshold=0.2, votes=2)
    # (0.5 + 0.5 * -0.5 * 0.8) / (1 + 0.5 * 0.5) = (0.5 - 0.2) / 1.25 = 0.24
    assert s.score == pytest.approx(0.24)
    assert s.action == "BUY"


@pytest.mark.parametrize("ref_score, corr", [(None, 0.9), (0.8, None)])
def test_make_signal_without_reference_keeps_the_score(ref_score, corr):
    s = make_signal(ETH, 0, score=-0.7, ref_score=ref_score, corr=corr, threshold=0.6, votes=1)
    assert s.score == -0.7
    assert s.confidence == pytest.approx(0.7)
    assert s.action == "SELL"


def test_make_signal_threshold_is_inclusive_and_zero_holds():
    assert make_signal(ETH, 0, 0.6, None, None, threshold=0.6, votes=1).action == "BUY"
    assert make_signal(ETH, 0, 0.0, None, None, threshold=0.0, votes=0).action == "HOLD"


@pytest.mark.parametrize("score, ref_score, corr", [
    (math.nan, None, None), (0.5, math.nan, 0.5), (0.5, 0.8, math.inf),
])
def test_make_signal_refuses_non_finite_inputs(score, ref_score, corr):
    # before the check, a NaN score came out as SELL at confidence 1.0 (min(1, nan) is 1)
    with pytest.raises(ValueError, match="signal for ETH/USDT.*must be finite"):
        make_signal(ETH, 0, score, ref_score, corr, threshold=0.6, votes=1)


# -- PaperBook -------------------------------------------------------------------------


def test_long_round_trip_pnl_by_hand():
    book = PaperBook(SignalConfig(position_size_usd=1000.0, fee_rate=0.001))
    opened = book.act(signal("BUY", ts=1), price=100.0)
    # qty = 1000 / 100 = 10; open fee = 0.001 * 100 * 10 = 1.0
    assert (opened.side, opened.action, opened.quantity) == ("long", "open", pytest.approx(10.0))
    assert opened.pnl == pytest.approx(-1.0)
    assert book.realised_pnl == pytest.approx(-1.0)
    assert book.positions[ETH].entry_price == 100.0

    closed = book.act(signal("SELL", ts=2), price=110.0)
    # gross = (110 - 100) * 10 = 100; close fee = 0.001 * 110 * 10 = 1.1 -> 98.9
    assert (closed.side, closed.action, closed.price) == ("long", "close", 110.0)
    assert closed.pnl == pytest.approx(98.9)
    assert book.realised_pnl == pytest.approx(97.9)  # -1.0 + 98.9
    assert ETH not in book.positions
    assert len(book.trades) == 2


def test_short_round_trip_pnl_by_hand():
    book = PaperBook(SignalConfig(position_size_usd=1000.0, fee_rate=0.001))
    opened = book.act(signal("SELL", BTC), price=200.0)
    # qty = 1000 / 200 = 5; open fee = 0.001 * 200 * 5 = 1.0
    assert (opened.side, opened.quantity, opened.pnl) == ("short", pytest.approx(5.0),
                                                          pytest.approx(-1.0))
    closed = book.act(signal("BUY", BTC), price=180.0)
    # gross = -(180 - 200) * 5 = 100; close fee = 0.001 * 180 * 5 = 0.9 -> 99.1
    assert (closed.side, closed.action) == ("short", "close")
    assert closed.pnl == pytest.approx(99.1)
    assert book.realised_pnl == pytest.approx(98.1)  # -1.0 + 99.1
    assert book.positions == {}


def test_losing_long_pnl_by_hand():
    book = PaperBook(SignalConfig(position_size_usd=500.0, fee_rate=0.002))
    book.act(signal("BUY"), price=50.0)  # qty 10, fee 0.002 * 50 * 10 = 1.0
    closed = book.act(signal("SELL"), price=45.0)
    # gross = (45 - 50) * 10 = -50; fee 0.002 * 45 * 10 = 0.9 -> -50.9
    assert closed.pnl == pytest.approx(-50.9)
    assert book.realised_pnl == pytest.approx(-51.9)


def test_same_direction_and_hold_do_nothing():
    book = PaperBook(SignalConfig())
    book.act(signal("BUY"), price=100.0)
    assert book.act(signal("BUY"), price=120.0) is None  # already long
    assert book.act(signal("HOLD"), price=130.0) is None
    assert book.positions[ETH].entry_price == 100.0
    assert len(book.trades) == 1
    assert book.realised_pnl == pytest.approx(-1.0)


@pytest.mark.parametrize("price", [0.0, -5.0, math.nan, math.inf])
def test_bad_price_does_nothing(price):
    book = PaperBook(SignalConfig())
    assert book.act(signal("BUY"), price=price) is None
    assert book.positions == {} and book.trades == [] and book.realised_pnl == 0.0


def test_unrealised_pnl_by_hand():
    book = PaperBook(SignalConfig(position_size_usd=1000.0))
    book.act(signal("BUY", ETH), price=100.0)  # long 10
    book.act(signal("SELL", BTC), price=200.0)  # short 5
    # long: (105 - 100) * 10 = 50; short: -(190 - 200) * 5 = 50 -> 100 (fees are realised)
    assert book.unrealised({ETH: 105.0, BTC: 190.0}) == pytest.approx(100.0)
    # BTC has no price: only the long counts; short up 10 -> -50
    assert book.unrealised({ETH: 105.0}) == pytest.approx(50.0)
    assert book.unrealised({ETH: 100.0, BTC: 210.0}) == pytest.approx(-50.0)


def test_snapshot_fields():
    book = PaperBook(SignalConfig(position_size_usd=1000.0, fee_rate=0.001))
    book.act(signal("BUY", ETH, ts=5), price=100.0)
    snap = book.snapshot({ETH: 102.0})
    assert snap["positions"] == {ETH: {"side": "long", "entry_price": 100.0,
                                       "quantity": pytest.approx(10.0), "entry_ts": 5}}
    assert snap["realised_pnl"] == pytest.approx(-1.0)
    assert snap["unrealised_pnl"] == pytest.approx(20.0)  # (102 - 100) * 10
    [trade] = snap["recent_trades"]
    assert trade == {"symbol": ETH, "ts": 5, "side": "long", "action": "open", "price": 100.0,
                     "quantity": pytest.approx(10.0), "pnl": pytest.approx(-1.0)}


def test_trade_history_is_bounded():
    book = PaperBook(SignalConfig(position_size_usd=100.0, fee_rate=0.0))
    for i in range(110):  # 110 round trips = 220 trades
        book.act(signal("BUY", ts=2 * i), price=10.0)
        book.act(signal("SELL", ts=2 * i + 1), price=11.0)
    assert len(book.trades) == 200
    assert book.trades[-1].ts == 219
    snap = book.snapshot({})
    assert [t["ts"] for t in snap["recent_trades"]] == list(range(200, 220))
    # each round trip: qty 100 / 10 = 10, gross (11 - 10) * 10 = 10, no fee -> 110 * 10 = 1100
    assert snap["realised_pnl"] == pytest.approx(1100.0)
