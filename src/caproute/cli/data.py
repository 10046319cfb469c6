"""``caproute import`` and ``caproute export``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from caproute.cli import app
from caproute.cli.params import choice
from caproute.data.formats import FORMATS

console = Console()
EXPORT_FORMATS = ("dars", "parquet", "jsonl", "csv")


@app.command("import")
def import_cmd(
    src: Annotated[str, typer.Argument(help="file or directory to import ('builtin' for the shipped set)")],
    store: Annotated[Path, typer.Option("--store", help="DuckDB observation store (created if absent)")],
    fmt: Annotated[str | None, typer.Option(
        "--format", help=f"one of {', '.join(FORMATS)}; detected when omitted",
        callback=choice("--format", FORMATS))] = None,
) -> None:
    """Validate SRC and upsert its observations into STORE (all or nothing)."""
    from caproute.data.source import read_source
    from caproute.data.store import ObservationStore

    df = read_source(src, fmt)
    with ObservationStore(store) as s:
        new, present = s.merge(df, source=str(src), validate=False)
        total = s.count()
    console.print(f"imported {new} new observations from {src}, {present} already present (values updated) "
                  f"({df['dataset'].nunique()} datasets, {df['model'].nunique()} models); store holds {total}")


def export_format(out: Path, fmt: str | None) -> str:
    """``--format`` if given (checked against OUT's suffix), else from the suffix of OUT."""
    from caproute.core.atomic import TABLE_SUFFIXES, table_format
    from caproute.errors import ConfigError

    if fmt == "dars":
        if out.suffix.lower() in TABLE_SUFFIXES:
            raise ConfigError(f"OUT {out}: --format dars writes a directory, not a {out.suffix} file")
        return fmt
    if fmt is None and out.suffix.lower() not in TABLE_SUFFIXES:
        if out.suffix:
            raise ConfigError(f"OUT {out}: cannot tell the format from the suffix '{out.suffix}'; pass --format "
                              f"({', '.join(EXPORT_FORMATS)}) or use a {', '.join(TABLE_SUFFIXES)} suffix")
        from caproute.cli.params import deprecated

        # the old default, kept for one release (docs/cli.md)
        deprecated(f"export {out} without --format or a suffix (Parquet)", "a .parquet suffix or --format")
        return "parquet"
    return table_format(out, fmt, option="OUT")


@app.command("export")
def export_cmd(
    out: Annotated[Path, typer.Argument(help="output file (.parquet, .jsonl, .csv) or DARS directory")],
    store: Annotated[Path, typer.Option("--store", help="DuckDB observation store")],
    fmt: Annotated[str | None, typer.Option(
        "--format", help="dars | parquet | jsonl | csv (default: from the suffix of OUT)",
        callback=choice("--format", EXPORT_FORMATS))] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", help="one dataset (default: all)")] = None,
) -> None:
    """Write the store's observations to OUT (atomically; never over the store or a foreign folder)."""
    from caproute.data.formats import check_export_target, write_observations
    from caproute.data.store import ObservationStore, resolve_dataset

    fmt = export_format(out, fmt)
    check_export_target(out, fmt, store=store)
    with ObservationStore(store, read_only=True) as s:
        if dataset is not None:
            resolve_dataset(s.datasets(), dataset, source=str(store))
        df = s.read(dataset=dataset)
    if df.empty:
        from caproute.errors import DataError

        raise DataError("holds no observations; nothing to export", source=str(store))
    write_observations(df, out, fmt)
    console.print(f"wrote {len(df)} observations to {out} ({fmt})")
