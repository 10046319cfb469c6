"""The CLI convention of docs/cli.md (issue 16), checked over every command so a new option
cannot drift: list options, --json PATH vs --format json, --seed 42, --test-fraction, --flag/--no-flag,
usage lines, --version, shell completion, --param values."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from caproute.cli import _tidy_help, app
from caproute.cli.params import SEED_DEFAULT, parse_params, parse_value
from caproute.errors import ConfigError

CLI = [sys.executable, "-m", "caproute"]
# Options that are repeated-only on purpose: their values may contain commas (documented in docs/cli.md).
REPEAT_ONLY = {"--param"}
BUILTIN_FLAGS = {"--help", "--version", "--install-completion", "--show-completion"}


def _root():
    import typer

    cmd = typer.main.get_command(app)
    _tidy_help(cmd)
    return cmd


def _commands(cmd=None, path=()):
    cmd = cmd or _root()
    subs = getattr(cmd, "commands", {})
    if path:
        yield path, cmd
    for name, sub in subs.items():
        yield from _commands(sub, (*path, name))


def _options(cmd):
    return [p for p in cmd.params if getattr(p, "param_type_name", "") == "option"]


def test_every_seed_defaults_to_42():
    seen = 0
    for path, cmd in _commands():
        for p in _options(cmd):
            if "--seed" in p.opts:
                seen += 1
                assert p.default == SEED_DEFAULT, f"caproute {' '.join(path)} --seed defaults to {p.default}"
    assert seen >= 5


def test_boolean_flags_have_a_negative_form():
    for path, cmd in _commands():
        for p in _options(cmd):
            if p.is_flag and not p.hidden and not set(p.opts) & BUILTIN_FLAGS and not p.count:
                assert p.secondary_opts, f"caproute {' '.join(path)} {p.opts[0]}: use --flag/--no-flag"


def test_every_float_option_is_checked():
    """nan/inf are refused by every float option (its own range check or the shared finite one)."""
    for path, cmd in _commands():
        for p in _options(cmd):
            if getattr(p.type_descriptor, "annotation", None) is float:
                assert p.callback is not None, f"caproute {' '.join(path)} {p.opts[0]} accepts nan"


def test_json_options_take_a_path_and_fractions_are_named_test_fraction():
    for path, cmd in _commands():
        for p in _options(cmd):
            if "--json" in p.opts and not p.hidden:
                assert not p.is_flag, f"caproute {' '.join(path)} --json must take a PATH (use --format json)"
            visible = [o for o in p.opts if not p.hidden]
            assert "--split-test" not in visible


def test_list_options_split_commas():
    for path, cmd in _commands():
        for p in _options(cmd):
            if p.multiple and not set(p.opts) & REPEAT_ONLY:
                assert p.callback is not None, f"caproute {' '.join(path)} {p.opts[0]}: comma lists too"


def _parse(argv: list[str]) -> dict:
    sub = _root().commands[argv[0]]
    return sub.make_context(argv[0], list(argv[1:])).params


@pytest.mark.parametrize("a, b", [
    (["meta", "--json", "m.json", "--report", "r", "--judge", "gpt35,pandalm7b", "--gold-n", "15,50"],
     ["meta", "--json", "m.json", "--report", "r", "--judge", "gpt35", "--judge", "pandalm7b",
      "--gold-n", "15", "--gold-n", "50"]),
    (["bench", "--routers", "knn,mlp,mf", "--betas", "0,0.1"],
     ["bench", "--routers", "knn", "--routers", "mlp,mf", "--betas", "0", "--betas", "0.1"]),
    (["collect", "--config", "c", "--queries", "q", "--store", "s", "--task", "t", "--models", "a,b"],
     ["collect", "--config", "c", "--queries", "q", "--store", "s", "--task", "t", "--models", "a", "--models", "b"]),
    (["duel", "--policy", "uniform,maxinp"], ["duel", "--policy", "uniform", "--policy", "maxinp"]),
    (["serve", "--cors-origin", "http://a,http://b"], ["serve", "--cors-origin", "http://a", "--cors-origin", "http://b"]),
])
def test_comma_list_equals_repeated_flags(a, b):
    pa, pb = _parse(a), _parse(b)
    assert pa == pb
    if a[0] == "meta":
        assert pa["judge"] == ["gpt35", "pandalm7b"] and pa["gold_n"] == [15, 50]


def test_split_test_is_a_deprecated_alias(capsys):
    base = ["collect", "--config", "c", "--queries", "q", "--store", "s", "--task", "t"]
    p = _parse([*base, "--split-test", "0.25"])
    assert p["split_test_old"] == 0.25
    assert "--split-test is deprecated" in capsys.readouterr().err
    assert _parse([*base, "--test-fraction", "0.25"])["split_test"] == 0.25
    assert "deprecated" not in capsys.readouterr().err


def test_param_values_json_then_python_literals():
    assert parse_value("5") == 5 and parse_value("[64, 32]") == [64, 32] and parse_value("(64, 32)") == (64, 32)
    assert parse_value("'cosine'") == "cosine" and parse_value("cosine") == "cosine" and parse_value("None") is None
    defaults = {"hidden": (256, 128), "k": 16, "lr": 1e-3, "metric": "cosine", "norm": True}
    got = parse_params(["hidden=(64, 32)", "k=8", "lr=1e-2", "metric=l2", "norm=false"], defaults)
    assert got == {"hidden": (64, 32), "k": 8, "lr": 0.01, "metric": "l2", "norm": False}
    assert parse_params(["hidden=[64, 32]"], defaults) == {"hidden": (64, 32)}   # JSON list -> the tuple type
    for bad, msg in [("k=abc", "expected an integer"), ("k=1.5", "expected an integer"),
                     ("lr=nan", "expected a number"), ("norm=1", "true or false"), ("x=1", "no parameter 'x'"),
                     ("k", "NAME=VALUE")]:
        with pytest.raises(ConfigError, match=msg):
            parse_params([bad], defaults)


def test_routers_listing_round_trips_through_param():
    """Every default `caproute routers` prints (NAME=repr) parses back to the same value."""
    from caproute.routers.base import REGISTRY, get_router_class

    get_router_class("knn")
    for name, cls in REGISTRY.items():
        defaults = cls().get_params()
        items = [f"{k}={v!r}" for k, v in defaults.items()]
        assert parse_params(items, defaults) == defaults, name


def test_help_has_no_braces_or_bool_types():
    import typer

    for path, cmd in _commands():
        with typer.Context(cmd, info_name=" ".join(("caproute", *path))) as ctx:
            usage = cmd.get_usage(ctx)
            flags = [p for p in [*_options(cmd), cmd.get_help_option(ctx)] if p is not None and p.is_flag]
        assert "{" not in usage, f"caproute {' '.join(path)}: {usage}"
        for p in flags:
            assert p.metavar == "", f"caproute {' '.join(path)} {p.opts[0]} shows a <bool> type"
    res = subprocess.run([*CLI, "import", "--help"], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "COLUMNS": "200"})
    assert res.returncode == 0 and "Usage: caproute import [OPTIONS] SRC" in res.stdout, res.stdout
    assert "<bool>" not in res.stdout


def test_version_and_completion():
    res = subprocess.run([*CLI, "--version"], capture_output=True, text=True, timeout=120)
    from caproute import __version__

    assert res.returncode == 0 and res.stdout.strip() == f"caproute {__version__}"
    names = {o for p in _root().params for o in getattr(p, "opts", [])}
    assert {"--install-completion", "--show-completion"} <= names


def test_route_format_json_and_deprecated_json(tmp_path):
    from caproute.data.source import read_source
    from caproute.routers.pipeline import train_pipeline

    pipe = train_pipeline(read_source("builtin"), router="knn", seed=1)
    pipe.save(tmp_path / "r")
    res = subprocess.run([*CLI, "route", "--router", tmp_path / "r", "--format", "json", "what is 2+2?"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert isinstance(rows, list) and rows[0]["query"] == "what is 2+2?" and rows[0]["model"] in rows[0]["mu_q"]
    old = subprocess.run([*CLI, "route", "--router", tmp_path / "r", "--json", "what is 2+2?"],
                         capture_output=True, text=True, timeout=300)
    assert old.returncode == 0 and json.loads(old.stdout)["model"] == rows[0]["model"]
    assert "deprecated" in old.stderr and "--format json" in old.stderr
