"""The one place where command-line values are parsed and validated (see docs/cli.md).

Every check raises :class:`typer.BadParameter` from an option callback (exit status 2, the option
named, no traceback) or :class:`~caproute.errors.ConfigError` from a command body (shown by
:func:`caproute.cli.main`, exit status 2):

- numbers: finite (``nan``/``inf`` refused) and inside the option's range;
- enumerations (splits, engines, formats): one of the listed values;
- lists: comma lists, and the flag may be repeated (``--judge a,b`` = ``--judge a --judge b``);
- ``--param NAME=VALUE``: VALUE read as JSON, else as a Python literal (``(64, 32)``, the form
  ``caproute routers`` prints), else as plain text; checked against the router's defaults.
"""

from __future__ import annotations

import ast
import json
import math
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import typer

from caproute.core.configfile import split_pair
from caproute.errors import ConfigError

SEED_DEFAULT = 42
"""Default ``--seed`` of every command."""


# --------------------------------------------------------------------------------------------
# numbers
def check_float(value: float | None, option: str, *, lo: float | None = None, hi: float | None = None,
                lo_open: bool = False) -> float | None:
    """``value`` if finite and within [lo, hi] (``lo_open``: lo excluded); None passes."""
    if value is None:
        return None
    if not math.isfinite(value):
        raise typer.BadParameter(f"must be a finite number, got {value}", param_hint=f"'{option}'")
    if lo is not None and (value < lo or (lo_open and value == lo)):
        raise typer.BadParameter(f"must be {'>' if lo_open else '>='} {lo:g}, got {value:g}",
                                 param_hint=f"'{option}'")
    if hi is not None and value > hi:
        raise typer.BadParameter(f"must be <= {hi:g}, got {value:g}", param_hint=f"'{option}'")
    return value


def finite(option: str, *, lo: float | None = None, hi: float | None = None,
           lo_open: bool = False) -> Callable[[float | None], float | None]:
    """Option callback: a finite float in [lo, hi]."""
    def callback(value: float | None) -> float | None:
        return check_float(value, option, lo=lo, hi=hi, lo_open=lo_open)
    return callback


def fraction(option: str) -> Callable[[float | None], float | None]:
    """Option callback: a share strictly between 0 and 1."""
    def callback(value: float | None) -> float | None:
        check_float(value, option)
        if value is not None and not 0.0 < value < 1.0:
            raise typer.BadParameter(f"must be in (0, 1), got {value:g}", param_hint=f"'{option}'")
        return value
    return callback


# --------------------------------------------------------------------------------------------
# enumerations and lists
def check_choice(value: str | None, option: str, choices: Iterable[str]) -> str | None:
    choices = tuple(choices)
    if value is not None and value not in choices:
        raise typer.BadParameter(f"'{value}' is not one of {', '.join(choices)}", param_hint=f"'{option}'")
    return value


def choice(option: str, choices: Iterable[str]) -> Callable[[str | None], str | None]:
    """Option callback: one of ``choices``."""
    choices = tuple(choices)

    def callback(value: str | None) -> str | None:
        return check_choice(value, option, choices)
    return callback


def split_list(values: str | Sequence[str] | None) -> list[str]:
    """``["a,b", "c"]`` or ``"a,b,c"`` -> ``["a", "b", "c"]`` (blanks dropped)."""
    if values is None:
        return []
    items = [values] if isinstance(values, str) else list(values)
    return [x.strip() for v in items for x in str(v).split(",") if x.strip()]


def comma_list(values: list[str] | None) -> list[str] | None:
    """Option callback of a list option: comma lists and repeated flags, flattened (None if unset)."""
    out = split_list(values)
    return out or None


def path_list(values: Sequence[object] | None) -> list[Path] | None:
    """Option callback of a list-of-paths option (comma lists and repeated flags)."""
    out = [Path(x) for x in split_list([str(v) for v in values] if values else None)]
    return out or None


def joined(values: str | Sequence[str] | None) -> str | None:
    """One comma-joined string of a list option (for code that parses one string)."""
    out = split_list(values)
    return ",".join(out) if out else None


def int_list(option: str) -> Callable[[list[str] | None], list[int] | None]:
    """Option callback: integers from comma lists / repeated flags (declare the option as list[str])."""
    def callback(values: list[str] | None) -> list[int] | None:
        out = []
        for item in split_list(values):
            try:
                out.append(int(item))
            except ValueError:
                raise typer.BadParameter(f"expected integers (comma list), got '{item}'",
                                         param_hint=f"'{option}'") from None
        return out or None
    return callback


def float_list(option: str, *, lo: float | None = None, hi: float | None = None,
               lo_open: bool = False) -> Callable[[list[str] | None], list[float] | None]:
    """Option callback: finite floats in [lo, hi] from comma lists / repeated flags (declare the
    option as list[str])."""
    def callback(values: list[str] | None) -> list[float] | None:
        out = []
        for item in split_list(values):
            try:
                x = float(item)
            except ValueError:
                raise typer.BadParameter(f"expected numbers (comma list), got '{item}'",
                                         param_hint=f"'{option}'") from None
            out.append(check_float(x, option, lo=lo, hi=hi, lo_open=lo_open))
        return out or None
    return callback


def deprecated(old: str, new: str) -> None:
    """One line on stderr for an old spelling kept for one release."""
    print(f"warning: {old} is deprecated and will be removed in the next release; use {new}",
          file=sys.stderr)


def deprecated_alias(old: str, new: str, check: Callable[[Any], Any] | None = None) -> Callable[[Any], Any]:
    """Option callback of an old spelling: warns once on stderr when used, then checks the value."""
    def callback(value: Any) -> Any:
        if value is not None:
            deprecated(old, new)
        return check(value) if check is not None else value
    return callback


# --------------------------------------------------------------------------------------------
# --param NAME=VALUE
def parse_value(text: str) -> Any:
    """JSON, else a Python literal (``(64, 32)``, ``'x'``, ``None``, ``True``), else the text itself."""
    text = text.strip()
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def _kind(default: Any) -> str:
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, int):
        return "an integer"
    if isinstance(default, float):
        return "a number"
    if isinstance(default, str):
        return "text"
    if isinstance(default, tuple | list):
        return "a list, e.g. (64, 32)"
    return type(default).__name__


def coerce_param(name: str, value: Any, default: Any, *, option: str = "--param") -> Any:
    """``value`` converted to the type of the router's default, or a ConfigError that says which.

    A default of None accepts any value (the router checks it)."""
    def bad() -> ConfigError:
        return ConfigError(f"{option} {name}={value!r}: expected {_kind(default)} "
                           f"(default {default!r})")

    if default is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad()
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad()
        if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
            raise bad()
        return int(value)
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise bad()
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise bad()
        return value
    if isinstance(default, tuple | list):
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = (value,)
        if not isinstance(value, tuple | list):
            raise bad()
        return type(default)(value)
    return value


def parse_params(items: Iterable[str] | None, defaults: Mapping[str, Any] | None = None,
                 *, option: str = "--param", owner: str = "router") -> dict[str, Any]:
    """``["k=5", "hidden=(64, 32)"]`` -> ``{"k": 5, "hidden": (64, 32)}``.

    With ``defaults`` (the router's ``get_params()``), unknown names and values of the wrong type
    are a :class:`ConfigError` naming the parameter.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        name, text = split_pair(item, option=option)
        value = parse_value(text)
        if defaults is not None:
            if name not in defaults:
                raise ConfigError(f"{option} {name}: {owner} has no parameter '{name}' "
                                  f"(has: {', '.join(sorted(defaults))})")
            value = coerce_param(name, value, defaults[name], option=option)
        elif isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{option} {name}: must be a finite number, got {value}")
        out[name] = value
    return out
