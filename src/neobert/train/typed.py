"""Build typed dataclasses from plain dicts (YAML, command-line overrides), checking every key and type.

Values arriving from the command line are strings and values from YAML 1.1 are sometimes strings where a
number was meant (`6e-4` has no dot, so PyYAML keeps it as text); both are converted according to the
field's annotation, and anything that does not fit raises a `ValueError` naming the dotted key.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

_NONE_WORDS = ("null", "none", "~", "")
_TRUE_WORDS = ("true", "yes", "on", "1")
_FALSE_WORDS = ("false", "no", "off", "0")


def field_types(cls: type) -> dict[str, Any]:
    """The evaluated annotations a class declares itself (not those of its bases)."""
    module = vars(sys.modules[cls.__module__])
    hints: dict[str, Any] = {}
    for name, annotation in cls.__dict__.get("__annotations__", {}).items():
        hint = eval(annotation, module) if isinstance(annotation, str) else annotation
        if get_origin(hint) is typing.ClassVar:
            continue
        hints[name] = hint
    return hints


def coerce(value: Any, hint: Any, key: str) -> Any:
    """`value` converted to the annotated type `hint`, or a ValueError naming `key`."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        is_none = value is None or (isinstance(value, str) and value.strip().lower() in _NONE_WORDS)
        if is_none and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return coerce(value, option, key)
            except ValueError as error:
                errors.append(str(error))
        raise ValueError(errors[0] if len(errors) == 1 else f"{key}: {value!r} fits none of {hint}")
    if origin is Literal:
        if value not in args:
            raise ValueError(f"{key} must be one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(hint):
        if isinstance(value, (list, tuple)):  # positional form, e.g. a length bucket written [1024, 0.4]
            names = [f.name for f in dataclasses.fields(hint)]
            if len(value) > len(names):
                raise ValueError(f"{key} takes at most {len(names)} items ({', '.join(names)}), got {value!r}")
            value = dict(zip(names, value, strict=False))
        return build_dataclass(hint, value, key)
    if hint is bool:
        return _to_bool(value, key)
    if hint is int:
        return _to_int(value, key)
    if hint is float:
        return _to_float(value, key)
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"{key} must be a string, got {type(value).__name__} {value!r}")
        return value
    if origin in (list, tuple):
        return _to_sequence(value, origin, args, key)
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{key} must be a mapping, got {type(value).__name__} {value!r}")
        value_hint = args[1] if args else Any
        return {str(k): coerce(v, value_hint, f"{key}.{k}") for k, v in value.items()}
    raise TypeError(f"{key}: annotation {hint!r} is not supported by the config loader")


def _to_bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE_WORDS + _FALSE_WORDS:
        return value.strip().lower() in _TRUE_WORDS
    raise ValueError(f"{key} must be true or false, got {value!r}")


def _to_float(value: Any, key: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{key} must be a number, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.replace("_", ""))
        except ValueError:
            pass
    raise ValueError(f"{key} must be a number, got {value!r}")


def _to_int(value: Any, key: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{key} must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    try:
        number = _to_float(value, key) if isinstance(value, (float, str)) else None
    except ValueError:
        number = None
    if number is None or not number.is_integer():
        raise ValueError(f"{key} must be an integer, got {value!r}")
    return int(number)


def _to_sequence(value: Any, origin: type, args: tuple, key: str) -> Any:
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{key} must be a list, got {type(value).__name__} {value!r}")
    if origin is list:
        item_hint = args[0] if args else Any
        return [coerce(item, item_hint, f"{key}[{i}]") for i, item in enumerate(value)]
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(coerce(item, args[0], f"{key}[{i}]") for i, item in enumerate(value))
    if args and len(value) != len(args):
        raise ValueError(f"{key} must have {len(args)} items, got {len(value)}: {value!r}")
    return tuple(coerce(item, hint, f"{key}[{i}]") for i, (item, hint) in enumerate(zip(value, args, strict=True)))


def build_dataclass(cls: type, values: Any, key: str = "") -> Any:
    """An instance of dataclass `cls` from a mapping; unknown keys and wrong types raise ValueError."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ValueError(f"{key or cls.__name__} must be a mapping, got {type(values).__name__} {values!r}")
    hints = field_types(cls)
    unknown = sorted(set(values) - set(hints))
    if unknown:
        where = f"{key}." if key else ""
        raise ValueError(
            f"unknown config key {where}{unknown[0]}"
            + (f" (and {unknown[1:]})" if len(unknown) > 1 else "")
            + f"; {key or cls.__name__} accepts: {', '.join(sorted(hints))}"
        )
    converted = {name: coerce(value, hints[name], f"{key}.{name}" if key else name) for name, value in values.items()}
    return cls(**converted)


def to_plain(value: Any) -> Any:
    """Dataclasses, tuples and dicts turned into YAML-safe plain Python (tuples become lists)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value
