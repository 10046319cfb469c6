"""Hyper-parameters and name registries of estimator-like classes (routers, dueling policies).

- :class:`HyperParams`: the scikit-learn parameter contract. The parameters are the keyword
  arguments of ``__init__``; ``get_params`` reads them back from attributes of the same name and
  ``set_params`` sets them, refusing a name ``__init__`` does not take.
- :func:`add_named` / :func:`get_named`: a registry ``{name: class}`` filled by a class decorator
  and read with an error that lists what is available.
"""

from __future__ import annotations

import inspect
from typing import Any, TypeVar

from caproute.errors import ConfigError

T = TypeVar("T", bound=type)


class HyperParams:
    """get_params / set_params from the signature of ``__init__`` (sklearn contract)."""

    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [name for name, p in sig.parameters.items()
                if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

    def get_params(self, deep: bool = False) -> dict[str, Any]:
        return {p: getattr(self, p) for p in self._param_names()}

    def set_params(self, **params):
        valid = set(self._param_names())
        for k, v in params.items():
            if k not in valid:
                raise ValueError(f"{type(self).__name__} has no parameter '{k}'")
            setattr(self, k, v)
        return self


def add_named(registry: dict[str, T], cls: T) -> T:
    """Put ``cls`` into ``registry`` under its class attribute ``name`` (a TypeError without one)."""
    if not getattr(cls, "name", None):
        raise TypeError(f"{cls.__name__} needs a class attribute 'name'")
    registry[cls.name] = cls
    return cls


def get_named(registry: dict[str, T], name: str, what: str) -> T:
    """``registry[name]``, else a :class:`ConfigError` "unknown <what> '<name>' (available: ...)"."""
    if name not in registry:
        raise ConfigError(f"unknown {what} '{name}' (available: {', '.join(sorted(registry))})")
    return registry[name]
