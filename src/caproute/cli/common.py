"""Shared CLI options and output helpers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

StoreOpt = Annotated[Path | None, typer.Option("--store", help="DuckDB observation store")]
DataOpt = Annotated[str | None, typer.Option(
    "--data", help="DARS directory, Parquet/JSONL/CSV file, RouterDC folder, or 'builtin'")]
DatasetOpt = Annotated[str | None, typer.Option(
    "--dataset", help="dataset name (may be omitted when the data holds one dataset)")]
LambdaOpt = Annotated[float, typer.Option("--lambda", help="cost weight lambda")]
BetaOpt = Annotated[float, typer.Option("--beta", help="risk weight beta")]

