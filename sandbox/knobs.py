"""Reading the simulators' knobs from the environment and from `POST /_admin/config`, one way for all.

Two styles exist because the simulators describe their knobs in two ways: the Hacienda and MSeller
configurations convert each value to its dataclass field's type (`updated_by_type`), the MYSuite
and Prodigia ones name a parser per knob (`parse_knobs`). Both refuse an unknown knob and name the
knob whose value is bad, so a typo in a test or a demo fails loudly instead of being ignored.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off", "")


class ConfigError(ValueError):
    """A knob is unknown or its value is unusable; the admin endpoint answers 400 with the message."""


class Checked(Protocol):
    def check(self) -> None: ...


C = TypeVar("C", bound=Checked)


# -- knobs converted to their field's type (Hacienda, MSeller) ------------------------------------


def updated_by_type(config: C, changes: Mapping[str, Any]) -> C:
    """A copy with `changes` applied, each converted to its field's type; ValueError names the bad one."""
    hints = typing.get_type_hints(type(config))
    known = {f.name for f in dataclasses.fields(config)}  # type: ignore[arg-type]
    unknown = sorted(set(changes) - known)
    if unknown:
        raise ValueError(f"unknown setting(s): {', '.join(unknown)}")
    converted = {name: convert(name, hints[name], value) for name, value in changes.items()}
    result: C = dataclasses.replace(config, **converted)  # type: ignore[type-var]
    result.check()
    return result


def from_env_by_type(default: C, bench: C, prefix: str, environ: Mapping[str, str] | None) -> C:
    """`{prefix}PRESET` (default or bench) as the base, then every `{prefix}{FIELD}` variable set."""
    env = os.environ if environ is None else environ
    preset = env.get(f"{prefix}PRESET", "default").strip().lower()
    if preset not in ("default", "bench"):
        raise ValueError(f"{prefix}PRESET must be default or bench, not {preset!r}")
    base = bench if preset == "bench" else default
    names = (f.name for f in dataclasses.fields(base))  # type: ignore[arg-type]
    return updated_by_type(base, {name: env[prefix + name.upper()] for name in names if prefix + name.upper() in env})


def convert(name: str, hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    try:
        if origin in (types.UnionType, typing.Union):
            if value is None or value == "":
                return None
            return convert(name, next(a for a in args if a is not type(None)), value)
        if origin is dict:
            if isinstance(value, str):
                pairs = (item.split(":", 1) for item in value.split(",") if item.strip())
                return {user.strip(): password for user, password in pairs}
            if isinstance(value, dict):
                return {str(k): str(v) for k, v in value.items()}
            raise ValueError("expected name:password pairs")
        if origin is list:
            if isinstance(value, str):
                return [item.strip() for item in value.split(",") if item.strip()]
            if isinstance(value, list):
                return [str(item) for item in value]
            raise ValueError("expected a list")
        if hint is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in TRUE:
                return True
            if text in FALSE:
                return False
            raise ValueError("expected a boolean")
        if hint is int:
            if isinstance(value, bool):
                raise ValueError("expected an integer")
            return int(value)
        if hint is float:
            if isinstance(value, bool):
                raise ValueError("expected a number")
            return float(value)
        if hint is str:
            return str(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: {exc}") from None
    raise ValueError(f"{name}: unsupported setting type {hint!r}")


# -- knobs with a named parser (MYSuite, Prodigia) -------------------------------------------------


def parse_knobs(parsers: Mapping[str, Callable[[Any], Any]], changes: Mapping[str, Any]) -> dict[str, Any]:
    """The parsed values of `changes` but `preset`, which the caller applies first."""
    values: dict[str, Any] = {}
    for name, raw in changes.items():
        if name == "preset":
            continue
        if name not in parsers:
            raise ConfigError(f"unknown knob {name!r}")
        try:
            values[name] = parsers[name](raw)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"bad value for {name}: {exc}") from exc
    return values


def env_knobs(
    parsers: Mapping[str, Callable[[Any], Any]], prefix: str, environ: Mapping[str, str] | None
) -> dict[str, str]:
    """The knobs set in the environment as `{prefix}{KNOB}`; an empty variable counts as unset."""
    env = os.environ if environ is None else environ
    return {name: env[prefix + name.upper()] for name in parsers if env.get(prefix + name.upper(), "") != ""}


def parse_bool(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int | float):
        return bool(raw)
    text = str(raw).strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise ValueError(f"not a boolean: {raw!r}")


def parse_int(raw: object) -> int:
    if isinstance(raw, bool):
        raise ValueError("booleans are not numbers")
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    return int(str(raw).strip())


def parse_optional_int(raw: object) -> int | None:
    if raw is None or (isinstance(raw, str) and raw.strip().lower() in ("", "none", "null")):
        return None
    return parse_int(raw)


def parse_float(raw: object) -> float:
    if isinstance(raw, bool):
        raise ValueError("booleans are not numbers")
    if isinstance(raw, int | float):
        return float(raw)
    return float(str(raw).strip())


def parse_text(raw: object) -> str:
    """A string as given (credentials keep their spaces)."""
    if not isinstance(raw, str | int):
        raise ValueError("expected a string")
    return str(raw)


def parse_str(raw: object) -> str:
    return parse_text(raw).strip()


def parse_names(raw: object) -> tuple[str, ...]:
    items = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(items, list | tuple):
        raise ValueError("expected a list or a comma-separated string")
    return tuple(str(item).strip() for item in items if str(item).strip())
