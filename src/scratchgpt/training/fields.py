"""Config fields: declared with their help text, checked and coerced to their declared types.

The pieces every recipe config (``training.config``, ``tasks.classify.config``,
``tasks.instruct.config``) is built from; no torch, so the CLI can build its flags cheaply.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Mapping
from dataclasses import field
from pathlib import Path
from typing import Any

from scratchgpt.errors import ConfigError
from scratchgpt.fileio import PathLike, read_text


def setting(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    """A dataclass field with the help text (and allowed values) its CLI flag shows."""
    meta: dict[str, Any] = {"help": help}
    if choices:
        meta["choices"] = tuple(choices)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def field_types(klass: type) -> dict[str, tuple[Any, bool]]:
    """For each field: (base type, whether None is allowed)."""
    hints = typing.get_type_hints(klass)
    out = {}
    for f in dataclasses.fields(klass):
        hint = hints[f.name]
        args = typing.get_args(hint)
        optional = type(None) in args
        if optional:
            rest = [a for a in args if a is not type(None)]
            base = rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]  # noqa: UP007
        else:
            base = hint
        out[f.name] = (base, optional)
    return out


def is_list_type(base: Any) -> bool:
    """Whether a field's base type is ``list[...]`` (given on the command line as A,B,C)."""
    return typing.get_origin(base) is list


def coerce_value(value: Any, base: Any, optional: bool, where: str) -> Any:
    """Check (and gently convert) one field value; a ConfigError naming ``where`` if it is wrong."""
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null")):
        if optional:
            return None
        raise ConfigError(f"{where} must not be null")
    if is_list_type(base):
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, (list, tuple)):
            return [str(v) for v in value]
        raise ConfigError(f"{where} must be a list, got {value!r}")
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if base is int:
        return _coerce_int(value, where)
    if base is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        # YAML 1.1 reads "4e-4" (no dot) as a string; accept it as the number it means.
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if base is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where} must be a string, got {value!r}")
    if base is dict:
        return _coerce_object(value, where)
    return value


def _coerce_object(value: Any, where: str) -> dict[str, Any]:
    """An object setting: a mapping (from a file) or its JSON text (from the command line)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
    if isinstance(value, Mapping):
        return dict(value)
    raise ConfigError(f"{where} must be an object, e.g. '{{\"factor\": 8.0}}', got {value!r}")


def _coerce_int(value: Any, where: str) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{where} must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            as_float = float(value.replace("_", ""))
        except ValueError:
            as_float = None
        if as_float is not None and as_float.is_integer():
            return int(as_float)
    raise ConfigError(f"{where} must be an integer, got {value!r}")


def validate_fields(obj: Any, section: str) -> None:
    """Coerce every field of a config dataclass to its declared type, checking choices."""
    types = field_types(type(obj))
    for f in dataclasses.fields(obj):
        base, optional = types[f.name]
        where = f"{section}.{f.name}"
        value = coerce_value(getattr(obj, f.name), base, optional, where)
        choices = f.metadata.get("choices")
        if choices and value is not None and value not in choices:
            raise ConfigError(f"{where} must be one of {list(choices)}, got {value!r}")
        object.__setattr__(obj, f.name, value)


def config_from_dict(klass: type, d: Any, source: str) -> Any:
    """One config section (TrainConfig, DataConfig, ...) from a mapping; errors name ``source``."""
    if not isinstance(d, dict):
        raise ConfigError(f"{source}: expected a mapping of fields, got {type(d).__name__}")
    known = {f.name for f in dataclasses.fields(klass)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown field(s) {unknown}; known fields: {sorted(known)}")
    try:
        return klass(**d)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def parse_yaml(text: str, source: str) -> Any:
    """YAML text -> Python data; a ConfigError with the line and column of a syntax error."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{source}: invalid YAML{where}: {problem}") from None


def load_mapping(path: PathLike) -> Any:
    """A YAML or JSON file's data (JSON by the ``.json`` suffix, YAML otherwise)."""
    p = Path(path)
    text = read_text(p)
    if p.suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(
                f"{p}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}"
            ) from None
    # JSON is YAML too, so any other suffix is read as YAML.
    return parse_yaml(text, str(p))
