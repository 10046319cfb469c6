"""Issue 8 benchmark: out-of-core supervision of 100M observation rows under a 4 GB memory cap.

The rows are a synthetic Parquet file written by DuckDB (2M queries x 8 models x ~6 observations).
`supervise_out_of_core` runs in a fresh subprocess (DuckDB memory_limit 2 GB, 16 query hash
partitions); we report wall time, rows/s and the subprocess's peak RSS (goal <= 4096 MB).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_supervise import make_parquet  # noqa: E402


def _run_child(src: str, out: str, partitions: int) -> dict:
    code = f"""
import json, resource, time
from caproute.supervise.outofcore import supervise_out_of_core
t = time.perf_counter()
info = supervise_out_of_core({src!r}, {out!r}, partitions={partitions}, memory_limit="2GB", progress=False)
info["seconds"] = time.perf_counter() - t
info["peak_mb"] = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")][0] / 1024
print(json.dumps(info))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    last = [line for line in res.stdout.splitlines() if line.startswith("{")][-1]
    return json.loads(last)


def run(quick: bool = False) -> list[dict]:
    n_rows, n_queries, partitions = (10_000_000, 200_000, 4) if quick else (100_000_000, 2_000_000, 16)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        src = make_parquet(Path(tmp) / "obs.parquet", n_rows, n_queries)
        gen = time.perf_counter() - t
        info = _run_child(str(src), str(Path(tmp) / "stats.parquet"), partitions)
    label = f"{n_rows / 1e6:g}M rows -> {info['pairs'] / 1e6:g}M pairs"
    return [
        {"benchmark": "outofcore", "figure": f"out-of-core supervision wall time ({label})",
         "value": round(info["seconds"], 1), "unit": "s", "goal": "completes under the memory cap",
         "notes": f"{n_rows / info['seconds'] / 1e6:.2f}M rows/s; {partitions} partitions; "
                  f"input written in {gen:.0f} s"},
        {"benchmark": "outofcore", "figure": f"out-of-core supervision peak RSS ({label})",
         "value": round(info["peak_mb"]), "unit": "MB", "goal": "<= 4096 MB",
         "notes": "fresh subprocess, DuckDB memory_limit 2GB"},
    ]


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
