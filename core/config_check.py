"""The config checks that are not a range on one key: symbols, timeframes, the per-timeframe
mappings against ``market.timeframes``, ``replay.start`` and the model memory limits. Run on
the built config (core/config.py ``load_config``), after every key passed its own range."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from core.config_load import ConfigError
from core.timeframes import parse_timeframe

if TYPE_CHECKING:
    from core.config import Config, MarketConfig


def parse_time(text: str) -> int:
    """ISO date or datetime (UTC unless it names an offset) -> UTC milliseconds."""
    moment = datetime.fromisoformat(str(text))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _check_symbols(m: MarketConfig) -> None:
    for i, symbol in enumerate(m.symbols):
        base, _, quote = symbol.partition("/")
        if not base or not quote or not base.isalnum() or not quote.isalnum():
            raise ConfigError(f"market.symbols[{i}]", f"{symbol!r} is not a pair like 'ETH/USDT'")
    if len(set(m.symbols)) != len(m.symbols):
        raise ConfigError("market.symbols", "lists a symbol twice")


def _check_timeframes(m: MarketConfig) -> None:
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


def _check_model_timeframes(m: MarketConfig) -> None:
    if m.model_timeframes is not None:
        if not m.model_timeframes:
            raise ConfigError("market.model_timeframes", "is empty; use null for every real one")
        for tf in m.model_timeframes:
            if tf not in m.timeframes:
                raise ConfigError("market.model_timeframes",
                                  f"'{tf}' is not one of market.timeframes {list(m.timeframes)}")


def _check_per_timeframe(key: str, values: Mapping[str, float], timeframes: tuple[str, ...],
                         what: str) -> None:
    """Every timeframe has a value and every value a timeframe (each value's range was checked
    when it was read)."""
    for tf in timeframes:
        if tf not in values:
            raise ConfigError(f"{key}.{tf}", f"missing: every timeframe needs {what}")
    extra = sorted(set(values) - set(timeframes))
    if extra:
        raise ConfigError(f"{key}.{extra[0]}", "is not one of market.timeframes")


def check(cfg: Config) -> None:
    """Raise ConfigError for the first thing in ``cfg`` that its keys' ranges cannot catch."""
    _check_symbols(cfg.market)
    _check_timeframes(cfg.market)
    tfs = cfg.market.timeframes
    _check_per_timeframe("market.buffer", cfg.market.buffer, tfs, "a buffer size")
    _check_model_timeframes(cfg.market)
    _check_per_timeframe("training.batch_size", cfg.training.batch_size, tfs, "a value")
    _check_per_timeframe("signal.timeframe_weights", cfg.signal.timeframe_weights, tfs, "a value")
    if cfg.replay.start is not None:
        try:
            parse_time(cfg.replay.start)
        except ValueError:
            raise ConfigError(
                "replay.start", f"{cfg.replay.start!r} is not an ISO date/datetime or null"
            ) from None
    if cfg.server.event_streams >= cfg.server.threads:
        raise ConfigError("server.event_streams", f"{cfg.server.event_streams} must be below "
                          f"server.threads ({cfg.server.threads}): streams would take every thread")
    if cfg.models.max_model_mb > cfg.models.max_total_mb:
        raise ConfigError("models.max_model_mb", "must not exceed models.max_total_mb")
