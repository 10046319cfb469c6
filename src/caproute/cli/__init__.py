"""The ``caproute`` command line. Every command is a thin wrapper over a library function.

Command groups live in sibling modules and register themselves on :data:`app`.
"""

from __future__ import annotations

import sys

import typer

app = typer.Typer(
    name="caproute", no_args_is_help=True, add_completion=True, pretty_exceptions_enable=False,
    help="LLM routing that learns from capability distributions (DARS).",
)


def _show_version(value: bool) -> None:
    if value:
        from caproute import __version__

        typer.echo(f"caproute {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Show the version and exit.",
                                 callback=_show_version, is_eager=True),
) -> None:
    """LLM routing that learns from capability distributions (DARS)."""

# Each module adds its commands to `app` (import for the side effect only).
from caproute.cli import adaptive as _adaptive  # noqa: E402,F401
from caproute.cli import bench as _bench  # noqa: E402,F401
from caproute.cli import collect as _collect  # noqa: E402,F401
from caproute.cli import data as _data  # noqa: E402,F401
from caproute.cli import demo as _demo  # noqa: E402,F401
from caproute.cli import duel as _duel  # noqa: E402,F401
from caproute.cli import feedback as _feedback  # noqa: E402,F401
from caproute.cli import judge as _judge  # noqa: E402,F401
from caproute.cli import meta as _meta  # noqa: E402,F401
from caproute.cli import pool as _pool  # noqa: E402,F401
from caproute.cli import replay as _replay  # noqa: E402,F401
from caproute.cli import routers as _routers  # noqa: E402,F401
from caproute.cli import serve as _serve  # noqa: E402,F401
from caproute.cli import supervise as _supervise  # noqa: E402,F401


def _finite_float(ctx, param, value):
    from caproute.cli.params import check_float

    values = value if isinstance(value, list | tuple) else [value]
    for v in values:
        check_float(v, param.opts[0])
    return value


def _tidy_help(command) -> None:
    """Conventions of docs/cli.md applied to every command: flags show no ``<bool>`` type,
    arguments read ``SRC`` / ``QUERY...`` in usage lines (not ``{src}``), list options read
    ``A,B,...`` (not ``<list[str]>``), and a float option
    without its own check refuses nan/inf."""
    for p in command.params:
        if getattr(p, "param_type_name", "") == "argument":
            name = (p.metavar or p.name or "").upper()
            p.metavar = name
            usage = (name if p.required else f"[{name}]") + ("..." if p.nargs != 1 else "")
            p._usage_display_name = lambda usage=usage: usage
        elif getattr(p, "is_flag", False) and not getattr(p, "count", False):
            p.metavar = ""
        elif getattr(p, "multiple", False) and not p.metavar:
            p.metavar = "A,B,..."   # list options: comma lists or repeated flags (not <list[str]>)
        elif p.callback is None and getattr(getattr(p, "type_descriptor", None), "annotation", None) is float:
            p.callback = _finite_float   # every float option is finite (docs/cli.md); ranges per option
    make_help = command.get_help_option

    def get_help_option(ctx, make_help=make_help):
        opt = make_help(ctx)
        if opt is not None:
            opt.metavar = ""
        return opt

    command.get_help_option = get_help_option
    for sub in getattr(command, "commands", {}).values():
        _tidy_help(sub)


def main() -> None:
    from caproute.errors import CaprouteError, show_warnings_on_one_line

    show_warnings_on_one_line()
    try:
        command = typer.main.get_command(app)
        _tidy_help(command)
        command(prog_name="caproute")
    except CaprouteError as e:
        from rich.console import Console

        Console(stderr=True).print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except OSError as e:   # a path the user gave cannot be read or written (permissions, disk full)
        if e.filename is None:
            raise
        from rich.console import Console
        from rich.markup import escape

        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(e.filename))}: {escape(e.strerror or str(e))}",
                                   highlight=False, soft_wrap=True)
        sys.exit(2)
