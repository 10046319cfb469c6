"""Shared CLI options (validated by :mod:`caproute.cli.params`) and output helpers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from caproute.cli.params import SEED_DEFAULT, choice, finite

StoreOpt = Annotated[Path | None, typer.Option("--store", help="DuckDB observation store")]
DataOpt = Annotated[str | None, typer.Option(
    "--data", help="DARS directory, Parquet/JSONL/CSV file, RouterDC folder, 'builtin' or 'builtin:NAME'")]
DatasetOpt = Annotated[str | None, typer.Option(
    "--dataset", help="dataset name (may be omitted when the data holds one dataset)")]
LambdaOpt = Annotated[float, typer.Option("--lambda", help="cost weight lambda (finite, >= 0)",
                                          callback=finite("--lambda", lo=0.0))]
BetaOpt = Annotated[float, typer.Option("--beta", help="risk weight beta (finite, >= 0)",
                                        callback=finite("--beta", lo=0.0))]
SeedOpt = Annotated[int, typer.Option("--seed", help="random seed")]
DeviceOpt = Annotated[str | None, typer.Option(
    "--device", help="torch device for router training, MiniLM encoding and CCFT fine-tuning: "
                     "auto | cpu | cuda (default: $CAPROUTE_DEVICE, else cpu; auto = cuda when torch sees one)")]
SEED = SEED_DEFAULT
SPLITS = ("train", "test", "all")
SplitOpt = Annotated[str, typer.Option("--split", help="train | test | all",
                                       callback=choice("--split", SPLITS))]
