"""Reading what users write: YAML config files and ``NAME=VALUE`` pairs, with one error format.

Errors are :class:`~caproute.errors.ConfigError` naming the file and line (YAML) or the option
and the item (pairs): ``pool.yaml: line 3: not valid YAML: ...``, ``--param 'k': expected
NAME=VALUE``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from caproute.errors import ConfigError


def load_yaml(path: str | os.PathLike, what: str = "config") -> Any:
    """The document in the YAML file ``path`` (None for an empty file). ``what`` names the file
    in the not-found error (e.g. ``pool config``)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: {what} not found")
    try:
        return yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f": line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}{where}: not valid YAML: {getattr(e, 'problem', e)}") from None


def split_pair(item: str, *, option: str, expected: str = "NAME=VALUE",
               empty_value: bool = True) -> tuple[str, str]:
    """``"name=value"`` -> ``("name", "value")`` (name stripped; the value keeps everything after the
    first ``=``). No ``=``, an empty name (or, with ``empty_value=False``, an empty value) is a
    named error."""
    name, eq, value = item.partition("=")
    name = name.strip()
    if not eq or not name or (not empty_value and not value):
        raise ConfigError(f"{option} '{item}': expected {expected}")
    return name, value


def parse_pairs(items: Iterable[str], *, option: str, expected: str = "NAME=VALUE",
                empty_value: bool = True) -> list[tuple[str, str]]:
    """:func:`split_pair` over ``items`` (blank items skipped), in order."""
    return [split_pair(it, option=option, expected=expected, empty_value=empty_value)
            for it in items if it.strip()]
