"""core/params: the one parameter contract and name registry of routers and dueling policies."""

from __future__ import annotations

import pytest

from caproute.core.params import HyperParams, add_named, get_named
from caproute.errors import ConfigError


class Toy(HyperParams):
    name = "toy"

    def __init__(self, a: int = 1, *args, b: float = 2.0, **kw):
        self.a, self.b = a, b


def test_params_are_the_keyword_arguments_of_init():
    t = Toy(a=3)
    assert t.get_params() == {"a": 3, "b": 2.0}          # *args and **kw are not parameters
    assert t.set_params(b=0.5) is t and t.b == 0.5
    with pytest.raises(ValueError, match="Toy has no parameter 'c'"):
        t.set_params(c=1)


def test_registry_by_name_with_the_available_names_in_the_error():
    reg: dict[str, type] = {}
    assert add_named(reg, Toy) is Toy and reg == {"toy": Toy}
    assert get_named(reg, "toy", "router") is Toy
    with pytest.raises(ConfigError, match=r"unknown router 'x' \(available: toy\)"):
        get_named(reg, "x", "router")

    class Nameless:
        name = ""

    with pytest.raises(TypeError, match="Nameless needs a class attribute 'name'"):
        add_named(reg, Nameless)
