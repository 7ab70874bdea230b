"""The config checks that are not a range on one key: symbols, timeframes, the per-timeframe
mappings against ``market.timeframes``, ``replay.start`` and the model memory limits. Run on
the built config (core/config.py ``load_config``), after every key passed its own range."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

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


def _check_store_url(url: str) -> None:
    """'' (the runtime folder's SQLite file), sqlite:///<path>, or postgresql://user@host/db
    with no password in it (PGPASSWORD or ~/.pgpass hold that: secrets only from the
    environment)."""
    if not url or (url.startswith("sqlite:///") and len(url) > len("sqlite:///")):
        return
    if not url.startswith(("postgresql://", "postgres://")):
        raise ConfigError("store.url", f"{url.split('@')[-1]!r} is neither sqlite:///<path> nor "
                          "postgresql://user@host:port/database")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise ConfigError("store.url", f"is not a URL ({exc})") from None
    if parts.password is not None:
        raise ConfigError("store.url", "holds a password: give it in the PGPASSWORD environment "
                          "variable or ~/.pgpass instead (it is never read from the config)")
    if not parts.hostname or parts.path.strip("/") == "":
        raise ConfigError("store.url", f"postgresql://{parts.hostname or ''}{parts.path} needs "
                          "a host and a database: postgresql://user@host:port/database")


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
    _check_store_url(cfg.store.url)
    if cfg.models.max_model_mb > cfg.models.max_total_mb:
        raise ConfigError("models.max_model_mb", "must not exceed models.max_total_mb")
    _check_ray(cfg)


def ray_endpoint(address: str) -> tuple[str, int] | None:
    """``ray.address`` as (host, port); None for a local Ray ('') or ``auto``. Anything but
    host:port or ray://host:port raises ConfigError naming the key."""
    if address in ("", "auto"):
        return None
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or "/" in host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError("ray.address", f"{address!r} is not host:port, ray://host:port, "
                                         "auto or empty (a local Ray)")
    return host.strip("[]"), int(port)


def _check_ray(cfg: Config) -> None:
    ray_endpoint(cfg.ray.address)
    if cfg.ray.actor_retry_s > cfg.ray.actor_retry_max_s:
        raise ConfigError("ray.actor_retry_s", f"{cfg.ray.actor_retry_s} must not exceed "
                          f"ray.actor_retry_max_s ({cfg.ray.actor_retry_max_s})")
