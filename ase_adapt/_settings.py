"""Frozen-dataclass settings <-> plain dicts and YAML (files or presets shipped as package data).

Nested dataclasses and Enums are converted both ways; unknown keys raise, naming the key and
the settings class, so a typo in a YAML file never passes silently.
"""

from __future__ import annotations

import dataclasses
import enum
import numbers
import typing
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import yaml

PRESETS = Path(__file__).parent / "presets"
T = TypeVar("T")

__all__ = ["settings_from_dict", "settings_to_dict", "load_settings", "load_yaml_mapping", "preset_path",
           "check_types"]


def preset_path(name_or_path: str | Path) -> Path:
    """A YAML file path, or the packaged preset ``<name>.yaml``."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    preset = PRESETS / f"{name_or_path}.yaml"
    if preset.is_file():
        return preset
    names = sorted(p.stem for p in PRESETS.glob("*.yaml"))
    raise FileNotFoundError(f"no settings file {str(name_or_path)!r} and no preset of that name (presets: {names})")


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        for a in args:  # first alternative that accepts the value
            try:
                return _convert(a, value, where)
            except (TypeError, ValueError):
                continue
        raise ValueError(f"{where}: cannot interpret {value!r} as {tp}")
    if origin in (tuple, list):
        inner = typing.get_args(tp)
        item = inner[0] if inner else Any
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        return tuple(_convert(item, v, where) for v in value) if origin is tuple else [_convert(item, v, where) for v in value]
    if isinstance(tp, type):
        if dataclasses.is_dataclass(tp):
            if isinstance(value, tp):
                return value
            if not isinstance(value, dict):
                raise ValueError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
            return settings_from_dict(tp, value)
        if issubclass(tp, enum.Enum):
            try:
                return tp(value)
            except ValueError:
                raise ValueError(f"{where}: {value!r} is not one of {[m.value for m in tp]}") from None
        if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if tp in (int, str, bool) and not isinstance(value, tp):
            raise ValueError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def settings_from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build the frozen dataclass ``cls`` from ``data`` (nested dicts for nested settings)."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} settings {unknown}; valid: {sorted(names)}")
    kwargs = {k: _convert(hints[k], v, f"{cls.__name__}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def settings_to_dict(settings: Any) -> dict[str, Any]:
    """Plain (YAML/JSON-able) dict of a settings dataclass."""
    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, enum.Enum):
            return v.value
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v
    return plain(settings)


def load_yaml_mapping(source: str | Path) -> dict[str, Any]:
    """The mapping in a YAML file or packaged preset; anything else is a clear ValueError."""
    path = preset_path(source)
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ValueError(f"{path}: expected a mapping of settings, got {type(loaded).__name__}")
    return dict(loaded or {})


def load_settings(cls: type[T], source: str | Path | None = None, **overrides: Any) -> T:
    """Settings from a YAML file or packaged preset, with ``overrides`` (nested dicts merge)."""
    data: dict[str, Any] = load_yaml_mapping(source) if source is not None else {}
    for k, v in overrides.items():
        if isinstance(v, dict) and isinstance(data.get(k), dict):
            data[k] = {**data[k], **v}
        else:
            data[k] = v
    return settings_from_dict(cls, data)


def _accepts(tp: Any, value: Any) -> tuple[bool, Any]:
    """(does ``value`` fit annotation ``tp``, the value to store): ints become floats, strings enums."""
    origin = typing.get_origin(tp)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        if value is None:
            return type(None) in typing.get_args(tp), None
        for alt in typing.get_args(tp):
            ok, converted = _accepts(alt, value)
            if ok:
                return True, converted
        return False, value
    if tp is type(None):
        return value is None, value
    if not isinstance(tp, type) or origin is not None:
        return True, value  # containers, Any, callables: checked by the class itself
    if tp is float:  # numpy scalars are numbers.Real too; stored as Python floats
        ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
        return ok, float(value) if ok else value
    if tp is int:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
        return ok, int(value) if ok else value
    if tp is bool:
        ok = isinstance(value, (bool, np.bool_))
        return ok, bool(value) if ok else value
    if issubclass(tp, enum.Enum):
        try:
            return True, tp(value)
        except ValueError:
            return False, value
    return isinstance(value, tp), value


def check_types(settings: Any) -> None:
    """Refuse a field of a frozen settings dataclass whose value has the wrong type (TypeError).

    Call it first in ``__post_init__``: ``lr="0.01"`` or ``md_stride=2.5`` then fails at
    construction, naming the field, instead of deep inside a run. Integers are accepted for
    floats (and stored as floats), valid strings for enums (stored as the member).
    """
    cls = type(settings)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        value = getattr(settings, f.name)
        ok, converted = _accepts(hints[f.name], value)
        if not ok:
            enums = [a for a in (hints[f.name], *typing.get_args(hints[f.name]))
                     if isinstance(a, type) and issubclass(a, enum.Enum)]
            if enums and isinstance(value, str):
                raise ValueError(f"{cls.__name__}.{f.name} must be one of {[m.value for m in enums[0]]}, got {value!r}")
            want = getattr(hints[f.name], "__name__", None) or str(hints[f.name]).replace("typing.", "")
            raise TypeError(f"{cls.__name__}.{f.name} must be {want}, got {value!r} ({type(value).__name__})")
        if converted is not value:
            object.__setattr__(settings, f.name, converted)
