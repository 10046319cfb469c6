"""``caproute demo``: the main pipeline on the observation set shipped in the package."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from caproute.cli import app

console = Console()


@app.command("demo")
def demo_cmd(
    out: Annotated[Path, typer.Option("--out", help="output folder")] = Path("demo-output"),
) -> None:
    """Import the builtin observations, supervise, diagnose, and benchmark single-shot vs DARS (offline)."""
    from caproute.demo import run_demo

    run_demo(out, console=console)
