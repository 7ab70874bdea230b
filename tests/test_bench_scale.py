"""bench/scale.py runs end to end (--quick) and prints every figure docs/SCALING.md reports:
the symbols-at-1s row and verdict, and the store's rows for SQLite and both PostgreSQL servers.
The values depend on the machine; only that they are there, and numbers, is checked."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NUMBER = r"[\d,]+(?:\.\d+)?"


def test_scale_quick_prints_the_figures():
    p = subprocess.run([sys.executable, "-m", "bench.scale", "--quick"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    out = p.stdout
    # The sweep's row for 2 symbols: warm-up, then mean/p50/p99/max and the parts, in ms.
    row = re.search(rf"^\s+2\s+>?\d+\s+{NUMBER}\s+10(\s+{NUMBER}){{13}}\s+(yes|NO)\b", out, re.M)
    assert row, out
    assert re.search(r"largest number of symbols that keeps up at 1s \(thread backend\): \d+",
                     out), out
    assert "torch threads 1" in out and "cores" in out, out
    for label in ("SQLite", r"PostgreSQL \(fsync off\)", r"PostgreSQL \(fsync on\)"):
        assert re.search(rf"^{label}.*?(\s+{NUMBER}){{6}}\s*$", out, re.M), (label, out)
    result = next(line for line in out.splitlines() if line.startswith("RESULT "))
    keys = dict(tok.partition("=")[::2] for tok in result.split()[1:])
    for key in ("thread_keeps_up", "sqlite_insert_rows_s", "pg_insert_rows_s",
                "pg_resolve_ms_each", "sqlite_cycle_ms"):
        assert float(keys[key]) > 0, (key, result)


def test_scale_ray_backend_is_named_until_it_exists():
    """--backend ray measures with training.backend: ray once that key exists, and until
    then says plainly that it cannot."""
    from bench.scale import backend_overrides

    overrides = backend_overrides("ray")
    if overrides is not None:
        assert overrides == {"training.backend": "ray"}
        return
    p = subprocess.run([sys.executable, "-m", "bench.scale", "--backend", "ray",
                        "--symbols-only", "--quick"], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "ray backend: not available yet" in p.stdout, p.stdout


def test_scale_recording_gives_each_symbol_its_own_real_path(tmp_path):
    """Past the 2 real symbols, each is a copy taken whole days earlier, on the same 1s
    clock: same timestamps, different prices, every candle a valid OHLC."""
    import numpy as np

    from bench.scale import scale_recording
    from core.config import load_config
    from core.market.recording import load_recording

    base = load_config("config.yaml", environ={})
    path, names = scale_recording(base, 5, 120, tmp_path / "rec")
    assert [n for n, _, _ in names] == ["ETH/USDT", "BTC/USDT", "ETHX1/USDT", "BTCX1/USDT",
                                        "ETHX2/USDT"]
    rec = load_recording(path)
    series = {name: rec.candles(name) for name, _, _ in names}
    assert {tf for tf, _ in series.values()} == {"1s"}
    bars = [b for _, b in series.values()]
    for b in bars:
        assert np.array_equal(b[:, 0], bars[0][:, 0])  # one clock
        assert np.all(np.diff(b[:, 0]) == 1000)
        assert np.all(b[:, 2] >= np.maximum(b[:, 1], b[:, 4]))  # high >= open, close
        assert np.all(b[:, 3] <= np.minimum(b[:, 1], b[:, 4]))  # low <= open, close
    closes = [tuple(b[:, 4]) for b in bars]
    assert len(set(closes)) == len(closes)  # no symbol duplicates another
    assert len(bars[0]) == base.models.cnn.window + 120
