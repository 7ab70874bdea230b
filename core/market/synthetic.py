"""Made-up market detail for the replay: seconds inside a real bar, and order books.

The recording's real bars (30m or 1m) are coarser than the 1s candles the system streams, so
each bar is filled in by a seeded, documented process that honours the bar exactly:

1. The bar's high and low are placed at two instants inside it (pinned to the ends when the
   open or close is the extreme; otherwise a random order and random times).
2. Brownian bridges join open -> first extreme -> second extreme -> close, clipped to
   [low, high] (excursions reflected) and rounded to the recording's price tick, so the path
   starts at the open, ends at the close and touches the high and low exactly.
3. Second i of the bar is the candle (p[i], max + wick, min - wick, p[i+1]), wicks clipped to
   [low, high]; the bar's volume is split over its seconds with random (gamma) weights that
   sum to it.

Aggregating the seconds of a bar therefore gives back the real bar's OHLCV. Books are built
around the last replayed close with random depth, so nothing in them depends on a price not
yet replayed. Every function here is pure: the caller seeds the generator.
"""

from __future__ import annotations

import math

import numpy as np


def price_decimals(prices: np.ndarray, max_decimals: int = 8) -> int:
    """Fewest decimals on which all prices lie (2 for 303.44, 304.0, ...): the price tick."""
    sample = prices[: min(len(prices), 5000)].ravel()
    for decimals in range(max_decimals + 1):
        scaled = sample * 10**decimals
        if np.abs(scaled - np.round(scaled)).max(initial=0.0) <= 1e-6:  # allclose, atol 1e-6
            return decimals
    return max_decimals


def _extreme_time(price: float, o: float, c: float, n: int) -> int | None:
    """An extreme equal to the open sits at t=0, one equal to the close at t=n; else free."""
    if price == o:
        return 0
    if price == c:
        return n
    return None


def subbar_path(o: float, h: float, lo: float, c: float, n: int, rng: np.random.Generator,
                decimals: int | None = None) -> np.ndarray:
    """Prices p[0..n] inside one bar: p[0]=o, p[n]=c, max(p)=h, min(p)=lo. Shape [n + 1].

    With n < 3 there may be no room for both extremes inside; the path is then a straight line
    and ``interpolate_bar`` puts the extremes in the wicks.
    """
    if n < 1:
        raise ValueError(f"a bar needs at least one sub-step, got n={n}")
    if h == lo or n < 3:
        path = np.linspace(o, c, n + 1)
        if decimals is not None:
            # A bar priced finer than the tick keeps its own open and close, inside [low, high].
            path = np.clip(np.round(path, decimals), lo, h)
            path[0], path[-1] = o, c
        return path
    t_hi = _extreme_time(h, o, c, n)
    t_lo = _extreme_time(lo, o, c, n)
    if t_hi is None and t_lo is None:
        a, b = (int(x) for x in np.sort(rng.choice(np.arange(1, n), size=2, replace=False)))
        t_hi, t_lo = (a, b) if rng.random() < 0.5 else (b, a)
    elif t_hi is None:
        t_hi = int(rng.integers(1, n))
    elif t_lo is None:
        t_lo = int(rng.integers(1, n))
    anchors = sorted({(0, o), (t_hi, h), (t_lo, lo), (n, c)})
    path = np.empty(n + 1)
    sigma = (h - lo) / math.sqrt(n) * 0.6
    for (ta, pa), (tb, pb) in zip(anchors, anchors[1:]):
        m = tb - ta
        if m == 0:
            continue
        steps = np.arange(1, m + 1) / m
        walk = np.cumsum(rng.normal(0.0, sigma, m))
        bridge = walk - steps * walk[-1]  # pinned to 0 at both ends
        path[ta + 1 : tb + 1] = pa + (pb - pa) * steps + bridge
    # Reflect excursions back inside [low, high] (clipping would leave flat plateaus).
    path = np.where(path > h, 2 * h - path, path)
    path = np.where(path < lo, 2 * lo - path, path)
    path = np.clip(path, lo, h)
    if decimals is not None:
        # Clip again: when the bar's high or low is finer than the tick, rounding can cross it.
        path = np.clip(np.round(path, decimals), lo, h)
    for t, p in anchors:
        path[t] = p
    return path


def interpolate_bar(bar: np.ndarray, bar_ms: int, base_ms: int, rng: np.random.Generator,
                    decimals: int | None = None) -> np.ndarray:
    """One real bar [ts, o, h, l, c, v] -> its base-timeframe candles [bar_ms/base_ms, 6]."""
    ts, o, h, lo, c, v = (float(x) for x in bar)
    n = bar_ms // base_ms
    if n == 1:  # the recording is already at the finest timeframe: play it exactly
        return np.asarray(bar, dtype=np.float64).reshape(1, 6).copy()
    path = subbar_path(o, h, lo, c, n, rng, decimals)
    opens, closes = path[:-1], path[1:]
    sigma = (h - lo) / math.sqrt(max(n, 1)) * 0.3
    wick_up = np.abs(rng.normal(0.0, sigma, n))
    wick_dn = np.abs(rng.normal(0.0, sigma, n))
    highs = np.minimum(np.maximum(opens, closes) + wick_up, h)
    lows = np.maximum(np.minimum(opens, closes) - wick_dn, lo)
    if decimals is not None:
        highs, lows = np.round(highs, decimals), np.round(lows, decimals)
    # Rounding must leave each wick outside the body and inside the bar (prices finer than the
    # tick would otherwise give candles the feed rejects, or a high above the real bar's).
    highs = np.clip(highs, np.maximum(opens, closes), h)
    lows = np.clip(lows, lo, np.minimum(opens, closes))
    # The path touches both extremes when n >= 3; this makes them exact for any n.
    highs[np.argmax(highs)] = h
    lows[np.argmin(lows)] = lo
    weights = rng.gamma(0.6, 1.0, n) * (1.0 + np.abs(closes - opens) / (sigma + 1e-12))
    volumes = v * weights / weights.sum()
    out = np.empty((n, 6))
    out[:, 0] = ts + np.arange(n) * base_ms
    out[:, 1], out[:, 2], out[:, 3], out[:, 4], out[:, 5] = opens, highs, lows, closes, volumes
    return out


def synthetic_book(price: float, levels: int, decimals: int, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray]:
    """A plausible book around ``price`` (the last replayed close) and nothing else.

    Spread 0.5-3 bps, levels about 1 bp apart, sizes gamma-distributed and growing with depth.
    Returns (bids, asks), each [levels, 2] of (price, size).
    """
    tick = 10.0**-decimals
    half_spread = max(tick, price * rng.uniform(0.5, 3.0) * 1e-4 / 2)
    step = max(tick, price * 1e-4)
    depth = np.arange(levels)
    best_bid = math.floor((price - half_spread) / tick) * tick
    best_ask = math.ceil((price + half_spread) / tick) * tick
    if best_ask <= best_bid:
        best_ask = best_bid + tick
    bid_px = np.round(best_bid - depth * step, decimals)
    ask_px = np.round(best_ask + depth * step, decimals)
    scale = 1.0 / price * 2_000  # about $2k a level at the top
    bid_sz = rng.gamma(2.0, scale, levels) * (1 + 0.15 * depth)
    ask_sz = rng.gamma(2.0, scale, levels) * (1 + 0.15 * depth)
    return np.column_stack((bid_px, bid_sz)), np.column_stack((ask_px, ask_sz))
