"""The ``caproute`` command line. Every command is a thin wrapper over a library function.

Command groups live in sibling modules and register themselves on :data:`app`.
"""

from __future__ import annotations

import sys

import typer

app = typer.Typer(
    name="caproute", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    help="LLM routing that learns from capability distributions (DARS).",
)

# Each module adds its commands to `app` (import for the side effect only).
from caproute.cli import bench as _bench  # noqa: E402,F401
from caproute.cli import collect as _collect  # noqa: E402,F401
from caproute.cli import data as _data  # noqa: E402,F401
from caproute.cli import demo as _demo  # noqa: E402,F401
from caproute.cli import duel as _duel  # noqa: E402,F401
from caproute.cli import meta as _meta  # noqa: E402,F401
from caproute.cli import pool as _pool  # noqa: E402,F401
from caproute.cli import routers as _routers  # noqa: E402,F401
from caproute.cli import serve as _serve  # noqa: E402,F401
from caproute.cli import supervise as _supervise  # noqa: E402,F401


def main() -> None:
    from caproute.errors import CaprouteError

    try:
        app()
    except CaprouteError as e:
        from rich.console import Console

        Console(stderr=True).print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
