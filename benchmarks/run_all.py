"""Run every benchmarks/bench_*.py and rewrite the results table in benchmarks/README.md.

Usage: python benchmarks/run_all.py [--quick] [--only NAME,...]
With --only, the named benchmarks' rows replace theirs in the last results and table.
Each bench module exposes run(quick) -> list of rows {benchmark, figure, value, unit, goal,
baseline?, ratio?, notes?}. The table records the date, the machine and the command.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import platform
import sys
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{os.cpu_count()} cores ({cpu}){mem}, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(HERE))
    spec.loader.exec_module(mod)
    return mod


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    only = None
    if "--only" in argv:
        only = set(argv[argv.index("--only") + 1].split(","))
    rows, failures = [], []
    for path in sorted(HERE.glob("bench_*.py")):
        name = path.stem.removeprefix("bench_")
        if only and name not in only:
            continue
        print(f"== {path.name}", flush=True)
        try:
            got = load(path).run(quick=quick)
        except Exception:  # a failing benchmark is reported, the others still run
            failures.append(name)
            traceback.print_exc()
            continue
        for r in got:
            print(json.dumps(r))
        rows.extend(got)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    previous = HERE / "results.json"
    if only and previous.exists():
        # refresh only the named benchmarks' rows; keep the others from the last full run
        old = json.loads(previous.read_text())
        kept = [r for r in old.get("rows", []) if r.get("benchmark") not in only]
        rows = kept + rows
        stamp = f"{old.get('date', '?')} (rows of {', '.join(sorted(only))} refreshed {stamp})"
    cmd = "make bench" + (" (quick)" if quick else "")
    lines = [BEGIN, "", f"Last run: {stamp} on {machine()}; command: `{cmd}`.", "",
             "| benchmark | figure | value | goal | baseline | ratio | notes |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append("| {benchmark} | {figure} | {value} {unit} | {goal} | {baseline} | {ratio} | {notes} |".format(
            benchmark=r.get("benchmark", ""), figure=r.get("figure", ""), value=r.get("value", ""),
            unit=r.get("unit", ""), goal=r.get("goal", ""), baseline=r.get("baseline", ""),
            ratio=r.get("ratio", ""), notes=r.get("notes", "")))
    if failures:
        lines += ["", f"Failed: {', '.join(failures)} (see the run's output)."]
    lines += ["", END]
    readme = HERE / "README.md"
    text = readme.read_text() if readme.exists() else "# Benchmarks\n\n" + BEGIN + "\n" + END + "\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + "\n".join(lines) + rest.split(END, 1)[1]
        readme.write_text(text)
    (HERE / "results.json").write_text(json.dumps({"date": stamp, "machine": machine(), "rows": rows}, indent=2))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
