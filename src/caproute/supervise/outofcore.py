"""Supervision for observation sets larger than memory (Parquet datasets streamed through DuckDB).

Queries are split into hash partitions; each partition is aggregated by one DuckDB group-by
(:func:`caproute.supervise.stats.capability_stats_sql`) under a memory limit, combined in numpy,
and appended to the output Parquet file. Peak memory is bounded by one partition's pairs, not
by the number of rows. The output is written to a temporary file and renamed at the end.
"""

from __future__ import annotations

import os
from pathlib import Path

from caproute.core.atomic import atomic_file
from caproute.errors import DataError
from caproute.supervise.api import SUPERVISION_COLUMNS
from caproute.supervise.stats import capability_stats_sql
from caproute.supervise.utility import DEFAULT_BETA, DEFAULT_LAMBDA, utility


def parquet_relation(path: str | os.PathLike) -> str:
    """A DuckDB relation over a Parquet file, a directory of Parquet files, a glob, or ``builtin``."""
    from caproute.data.source import builtin_path, is_builtin

    p = str(builtin_path(path)) if is_builtin(path) else str(path)
    if os.path.isdir(p):
        p = os.path.join(p, "**", "*.parquet")
    elif "*" not in p and not os.path.exists(p):
        raise DataError("no such file or directory", source=p)
    return "read_parquet('" + p.replace("'", "''") + "', union_by_name = true)"


def train_cost_ranges(con, relation: str) -> dict[str, tuple[float, float]]:
    """Per-dataset min/max raw cost over training rows (all rows where a dataset has no train split)."""
    rows = con.execute(f"""
        SELECT dataset,
               coalesce(min(cost) FILTER (WHERE split = 'train'), min(cost)),
               coalesce(max(cost) FILTER (WHERE split = 'train'), max(cost))
        FROM {relation} GROUP BY dataset""").fetchall()
    return {str(d): (float(lo), float(hi)) for d, lo, hi in rows}


def supervise_out_of_core(source: str | os.PathLike, out: str | os.PathLike, *,
                          lam: float = DEFAULT_LAMBDA, beta: float = DEFAULT_BETA,
                          partitions: int = 8, memory_limit: str = "2GB", threads: int | None = None,
                          dataset: str | None = None, progress: bool = True) -> dict:
    """Write the supervision table (SUPERVISION_COLUMNS plus ``dataset``) of the train split of
    ``source`` to ``out`` (Parquet), streaming. Returns counts."""
    import duckdb
    import pyarrow as pa
    import pyarrow.parquet as pq

    relation = parquet_relation(source)
    con = duckdb.connect()
    con.execute(f"SET memory_limit = '{memory_limit}'").fetchall()
    con.execute("SET preserve_insertion_order = false").fetchall()
    con.execute("SET enable_progress_bar = false").fetchall()  # we draw our own (rich) bar
    if threads:
        con.execute(f"SET threads = {int(threads)}").fetchall()
    ranges = train_cost_ranges(con, relation)
    if not ranges:
        raise DataError("holds no observations", source=str(source))
    base = "split = 'train'"
    if dataset is not None:
        if dataset not in ranges:
            raise DataError(f"has no dataset '{dataset}' (available: {sorted(ranges)})", source=str(source))
        base += " AND dataset = '" + dataset.replace("'", "''") + "'"
    columns = ["dataset", *SUPERVISION_COLUMNS]
    n_pairs = 0
    from caproute.core.runtime import Progress

    with atomic_file(out) as tmp, Progress("supervise (out of core)" if progress else None,
                                           partitions) as advance:
        writer = None
        try:
            for p in range(partitions):
                where = f"{base} AND hash(query_id) % {partitions} = {p}"
                stats = capability_stats_sql(con, relation, ranges, where=where)
                if len(stats):
                    stats["utility"] = utility(stats["mu_q"].to_numpy(), stats["mu_c"].to_numpy(),
                                               stats["sigma_q"].to_numpy(), lam, beta)
                    table = pa.Table.from_pandas(stats[columns], preserve_index=False)
                    if writer is None:
                        writer = pq.ParquetWriter(str(tmp), table.schema, compression="zstd")
                    writer.write_table(table)
                    n_pairs += len(stats)
                del stats
                advance()
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            raise DataError("no training observations", source=str(source))
    con.close()
    return {"pairs": n_pairs, "datasets": sorted(ranges), "partitions": partitions,
            "output": str(Path(out)), "lam": lam, "beta": beta}
