"""``caproute import`` and ``caproute export``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from caproute.cli import app
from caproute.data.formats import FORMATS

console = Console()


@app.command("import")
def import_cmd(
    src: Annotated[str, typer.Argument(help="file or directory to import ('builtin' for the shipped set)")],
    store: Annotated[Path, typer.Option("--store", help="DuckDB observation store (created if absent)")],
    fmt: Annotated[str | None, typer.Option("--format", help=f"one of {', '.join(FORMATS)}; detected when omitted")] = None,
) -> None:
    """Validate SRC and upsert its observations into STORE (all or nothing)."""
    from caproute.data.source import read_source
    from caproute.data.store import ObservationStore

    df = read_source(src, fmt)
    with ObservationStore(store) as s:
        n = s.upsert(df, source=str(src), validate=False)
        total = s.count()
    console.print(f"imported {n} observations from {src} "
                  f"({df['dataset'].nunique()} datasets, {df['model'].nunique()} models); store holds {total}")


@app.command("export")
def export_cmd(
    out: Annotated[Path, typer.Argument(help="output file or directory")],
    store: Annotated[Path, typer.Option("--store", help="DuckDB observation store")],
    fmt: Annotated[str, typer.Option("--format", help="dars | parquet | jsonl | csv")] = "parquet",
    dataset: Annotated[str | None, typer.Option("--dataset")] = None,
) -> None:
    """Write the store's observations to OUT (atomically)."""
    from caproute.data.formats import write_observations
    from caproute.data.store import ObservationStore

    with ObservationStore(store, read_only=True) as s:
        df = s.read(dataset=dataset)
    write_observations(df, out, fmt)
    console.print(f"wrote {len(df)} observations to {out} ({fmt})")
