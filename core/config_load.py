"""Turning YAML, environment variables and overrides into config dataclasses, generically.

Every section is a frozen dataclass whose fields are declared with ``nn.contract.setting``:
the annotation says how a value is coerced (``Literal`` gives the choices), the field's metadata
gives its range (``ge``/``gt``/``le``/``lt``; for a mapping, the range of each value). Nothing
here names a key; the checks that are not simple ranges live in core/config_check.py.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml

ENV_PREFIX = "TICKWISE_"
# Credentials (dashboard/security.py): read from the environment only, never config keys.
SECRET_ENV = frozenset({"TICKWISE_USER", "TICKWISE_PASSWORD", "TICKWISE_TOKEN"})
_NULLS = ("", "null", "none")  # what an environment variable says for None


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range."""

    def __init__(self, key: str, message: str):
        super().__init__(f"config key '{key}': {message}")
        self.key = key


# -- scalars --------------------------------------------------------------------------------


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


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.lower() in _NULLS)


def _optional(tp: Any) -> Any | None:
    """``X | None`` -> X; anything else -> None."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(tp) if a is not type(None))
    return None


def _coerce_scalar(key: str, tp: Any, value: Any) -> Any:
    """Convert one YAML/env value to the annotated type, or raise ConfigError."""
    if typing.get_origin(tp) is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(key,
                              f"{value!r} is not allowed; allowed values: {', '.join(allowed)}")
        return value
    inner = _optional(tp)
    if inner is not None:
        return None if _is_null(value) else _coerce_scalar(key, inner, value)
    if tp in _SCALARS:
        return _SCALARS[tp](key, value)
    raise ConfigError(key, f"unsupported type {tp!r}")  # a bug in a config class, not the YAML


# -- ranges ---------------------------------------------------------------------------------


_OPS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
_TESTS = {"ge": lambda v, b: v >= b, "gt": lambda v, b: v > b,
          "le": lambda v, b: v <= b, "lt": lambda v, b: v < b}


def _num(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else repr(float(bound))


def range_text(tp: Any, meta: Mapping[str, Any]) -> str | None:
    """What a field's range allows, in words: "an integer from 0 to 65535", "a number > 0",
    "a number > 0 and <= 100000"; a fraction's (upper bound <= 1) as an interval, "a number in
    [0, 1)". None: no range."""
    low = ("ge", meta.get("ge")) if meta.get("ge") is not None else ("gt", meta.get("gt"))
    high = ("le", meta.get("le")) if meta.get("le") is not None else ("lt", meta.get("lt"))
    what = "an integer" if tp is int else "a number"
    if low[1] is None and high[1] is None:
        return None
    if high[1] is None or low[1] is None:
        op, bound = low if high[1] is None else high
        return f"{what} {_OPS[op]} {_num(bound)}"
    if high[1] <= 1:
        left, right = "[" if low[0] == "ge" else "(", "]" if high[0] == "le" else ")"
        return f"{what} in {left}{_num(low[1])}, {_num(high[1])}{right}"
    if (low[0], high[0]) == ("ge", "le"):
        return f"{what} from {_num(low[1])} to {_num(high[1])}"
    return f"{what} {_OPS[low[0]]} {_num(low[1])} and {_OPS[high[0]]} {_num(high[1])}"


def _check_range(key: str, tp: Any, meta: Mapping[str, Any], value: Any) -> None:
    for op, test in _TESTS.items():
        bound = meta.get(op)
        if bound is not None and value is not None and not test(value, bound):
            raise ConfigError(key, f"{value!r} is out of range; allowed: {range_text(tp, meta)}")


# -- sections -------------------------------------------------------------------------------


def _coerce_list(key: str, tp: Any, value: Any) -> tuple:
    if isinstance(value, str):  # from the environment: comma-separated
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(key, f"{value!r} is not a non-empty list")
    item_tp = typing.get_args(tp)[0]
    return tuple(_coerce_scalar(f"{key}[{i}]", item_tp, v) for i, v in enumerate(value))


def _coerce(key: str, tp: Any, meta: Mapping[str, Any], value: Any) -> Any:
    """One field's value, coerced to its annotation and checked against its range."""
    inner = _optional(tp)
    if inner is not None and typing.get_origin(inner) is tuple:  # an optional list
        return None if _is_null(value) else _coerce_list(key, inner, value)
    origin = typing.get_origin(tp)
    if origin is tuple:
        return _coerce_list(key, tp, value)
    if origin is Mapping:
        if not isinstance(value, Mapping):
            raise ConfigError(key, f"{value!r} is not a mapping")
        val_tp = typing.get_args(tp)[1]
        out = {str(k): _coerce_scalar(f"{key}.{k}", val_tp, v) for k, v in value.items()}
        for k, v in out.items():
            _check_range(f"{key}.{k}", val_tp, meta, v)
        return out
    out = _coerce_scalar(key, tp, value)
    _check_range(key, inner or tp, meta, out)
    return out


def section_class(f: dataclasses.Field, hint: Any) -> type | None:
    """The dataclass a section field is built as, or None for a plain key. That is the class of
    its default, which may be a subclass of the annotation: ``models`` gets one field per
    registered model when its default is made (core/config.py)."""
    if not dataclasses.is_dataclass(hint):
        return None
    if f.default_factory is not dataclasses.MISSING:
        return type(f.default_factory())
    return hint


def build(cls: type, data: Any, prefix: str = "") -> Any:
    """An instance of the config dataclass ``cls`` from a mapping of (some of) its keys; the
    others keep their defaults. Unknown keys, bad types and values out of range raise."""
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
        section = section_class(fields[name], hints[name])
        if section is not None:
            kwargs[name] = build(section, value, key)
        else:
            kwargs[name] = _coerce(key, hints[name], fields[name].metadata, value)
    return cls(**kwargs)


# -- sources --------------------------------------------------------------------------------


def read_yaml(path: str | Path) -> dict:
    """The file's mapping of sections; ConfigError naming ``--config`` if it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("--config", f"file not found: {path}")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: an unquoted date like 2019-13-01
        raise ConfigError("--config", f"{path} is not valid YAML: {exc}") from None
    if not isinstance(tree, dict):
        raise ConfigError("<root>", f"{path} must hold a mapping of sections")
    return tree


def env_overrides(environ: Mapping[str, str]) -> dict[str, str]:
    """TICKWISE_REPLAY__SPEED=30 -> {"replay.speed": "30"}."""
    out = {}
    for name, value in environ.items():
        if name.startswith(ENV_PREFIX) and len(name) > len(ENV_PREFIX) and name not in SECRET_ENV:
            out[name[len(ENV_PREFIX) :].lower().replace("__", ".")] = value
    return out


def set_path(tree: dict, dotted: str, value: Any) -> None:
    """tree["a"]["b"] = value for "a.b", making (or replacing a scalar with) mappings on the
    way."""
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value
