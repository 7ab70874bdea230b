"""The chart refresh: server time and payload of a Patch vs a whole figure, per chart.

    .venv/bin/python -m bench.chart_update [--n 300]

A real store is filled by the bundled replay (an hour of market time past the start), then the
chart callback's work is timed the way it runs each second: read the newest candles from the
store, decide, build the Patch (or figure) and serialise it to JSON as Dash does. "patch" is a
steady-state refresh with the candles that closed in one wall second at the default speed;
"figure" is a whole figure (first load, timeframe switch, or the periodic reset).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import plotly

from core.config import load_config
from core.market.books import OrderBooks
from core.market.candles import CandleStore
from core.market.feed import MarketFeed
from core.market.recording import find_recording, load_recording
from core.market.replay import ReplaySource
from dashboard.figures import ChartState, chart_update


def encode(obj) -> bytes:
    if hasattr(obj, "to_plotly_json"):
        obj = obj.to_plotly_json()
    return json.dumps(obj, cls=plotly.utils.PlotlyJSONEncoder).encode()


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=300, help="refreshes timed per case")
    args = p.parse_args()
    cfg = load_config("config.yaml", environ={})
    rec = load_recording(find_recording(cfg.replay.recording, cfg.recordings_dir))
    store = CandleStore(cfg.market.symbols, cfg.market.timeframes, dict(cfg.market.buffer))
    src = ReplaySource(rec, MarketFeed(store, OrderBooks()), symbols=cfg.market.symbols)
    src.backfill()
    src.emit_until(src.start_ms + 3_600_000)
    symbol, visible = cfg.market.symbols[0], cfg.server.chart_candles
    per_wall_s = cfg.replay.speed  # 1s candles that close per wall second at the default speed
    print(f"chart refresh, {symbol}, {visible} visible candles, speed x{cfg.replay.speed:g}")
    print(f"{'timeframe':<10}{'kind':<8}{'new':>5}{'p50 ms':>9}{'p99 ms':>9}{'bytes':>9}")
    for tf in store.timeframes:
        tf_ms = store.tf_ms[tf]
        new = max(0, round(per_wall_s * 1000 / tf_ms))
        for kind in ("patch", "figure"):
            times, size = [], 0
            for _ in range(args.n):
                t0 = time.perf_counter()
                recent = store.closed(symbol, tf, 2 * visible)
                state = None
                if kind == "patch":
                    last = int(recent[-1 - new, 0]) if len(recent) > new else -1
                    state = ChartState(tf, last, visible)
                out, _ = chart_update(symbol, tf, tf_ms, state, recent,
                                      store.forming(symbol, tf), visible)
                body = encode(out)
                times.append((time.perf_counter() - t0) * 1000)
                size = len(body)
            print(f"{tf:<10}{kind:<8}{new if kind == 'patch' else visible:>5}"
                  f"{statistics.median(times):>9.3f}{pct(times, 99):>9.3f}{size:>9,}")


if __name__ == "__main__":
    main()
