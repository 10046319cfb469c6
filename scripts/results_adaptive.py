"""Regenerate the measured part of docs/adaptive.md: the adaptive-sampling study on RouterDC
(../shared/data, two tasks) and on the builtin data.

    python scripts/results_adaptive.py [--seeds 3] [--only builtin,gsm8k,mbpp]

Each study is one ``caproute adaptive-study`` command (printed in the page); its JSON, CSV, markdown
and figure go to docs/results-adaptive/<name>/, and the results section of docs/adaptive.md (between
the ``results:start`` / ``results:end`` markers) is rewritten from the JSON files.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "routerdc_7llm_repeated"
OUT = REPO / "docs" / "results-adaptive"
PAGE = REPO / "docs" / "adaptive.md"
BUDGETS = "0.2,0.3,0.4,0.6,1.0"


def studies(seeds: int) -> dict[str, list[str]]:
    common = ["--budgets", BUDGETS, "--seeds", str(seeds)]
    rdc = ["--data", str(DATA), "--test-fraction", "0.5", "--test-decodes", "3"]
    return {
        "builtin": ["--data", "builtin", *common],
        "gsm8k": [*rdc, "--dataset", "gsm8k", *common],
        "mbpp": [*rdc, "--dataset", "mbpp", *common],
    }


def command(name: str, args: list[str]) -> list[str]:
    folder = OUT / name
    return ["caproute", "adaptive-study", *args, "--json", str(folder / "study.json"), "--report", str(folder)]


def shown(cmd: list[str]) -> str:
    return shlex.join(cmd).replace(str(DATA), "../shared/data/routerdc_7llm_repeated").replace(str(REPO) + "/", "")


def at(payload: dict, policy: str, budget: float, key: str) -> tuple[float, float]:
    for r in payload["summary"] + payload["references"]:
        if r["policy"] == policy and abs(r["budget_fraction"] - budget) < 1e-9:
            return r[key], r.get(f"{key}_std", 0.0)
    raise KeyError((policy, budget))


def ref(payload: dict, policy: str, key: str) -> float:
    return next(r[key] for r in payload["references"] if r["policy"] == policy)


def section(done: dict[str, dict], commands: dict[str, list[str]]) -> str:
    lines = ["The goal (issue 17): at 40% of the full grid's generations, the adaptive rule reaches >= 95%",
             "label agreement with full DARS and a kNN test utility within 0.005 of full DARS, and beats",
             "uniform allocation at the same budget on both.", "",
             "| data | policy | label agreement @ 40% | kNN utility @ 40% (decode view) | full DARS utility | "
             "goal: agreement >= 0.95 | goal: utility within 0.005 | beats uniform (agreement / utility) |",
             "|---|---|---:|---:|---:|---|---|---|"]
    for name, p in done.items():
        view = "utility_rewrite" if math.isnan(ref(p, "full_dars", "utility_decode")) else "utility_decode"
        full = ref(p, "full_dars", view)
        ua, _ = at(p, "uniform", 0.4, "label_agreement")
        uu, _ = at(p, "uniform", 0.4, view)
        for policy in ("pob", "lucb", "uniform"):
            a, sa = at(p, policy, 0.4, "label_agreement")
            u, su = at(p, policy, 0.4, view)
            goal_a = "met" if a >= 0.95 else f"missed by {0.95 - a:.3f}"
            goal_u = "met" if u >= full - 0.005 else f"missed by {full - 0.005 - u:.3f}"
            beats = "-" if policy == "uniform" else \
                f"{'yes' if a > ua else 'no'} ({a - ua:+.3f}) / {'yes' if u > uu else 'no'} ({u - uu:+.3f})"
            lines.append(f"| {name} | {policy} | {a:.3f} ± {sa:.3f} | {u:.3f} ± {su:.3f} | {full:.3f} | "
                         f"{goal_a} | {goal_u} | {beats} |")
    lines += ["", "Commands (each writes `study.json`, `adaptive.md`, `adaptive.csv`, `adaptive.png`):", "",
              "<!-- doc-test: skip regeneration takes 10-30 minutes; scripts/results_adaptive.py runs it -->",
              "```bash"]
    lines += [shown(commands[n]) for n in done]
    lines += ["```", ""]
    for name, p in done.items():
        cfg = p["config"]
        lines += [f"### {name}", "",
                  f"{cfg['dataset']}: {cfg['n_train_queries']} training queries x {len(cfg['models'])} models, "
                  f"full grid {cfg['full_grid_generations']} generations, {cfg['seeds']} seeds.", "",
                  f"![{name}](results-adaptive/{name}/adaptive.png)", "",
                  f"Full table: [results-adaptive/{name}/adaptive.md](results-adaptive/{name}/adaptive.md).", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--only", default=None, help="comma-separated subset of builtin,gsm8k,mbpp")
    ap.add_argument("--no-run", action="store_true", help="only rewrite the page from existing JSON files")
    args = ap.parse_args()
    cmds = {n: command(n, a) for n, a in studies(args.seeds).items()}
    wanted = list(cmds) if args.only is None else [s.strip() for s in args.only.split(",")]
    for name in wanted:
        if name != "builtin" and not DATA.exists():
            print(f"skip {name}: {DATA} is absent", file=sys.stderr)
            continue
        if not args.no_run:
            print("$", shown(cmds[name]), flush=True)
            subprocess.run([sys.executable, "-m", *cmds[name]], check=True, cwd=REPO)
    done = {n: json.loads((OUT / n / "study.json").read_text()) for n in cmds if (OUT / n / "study.json").exists()}
    text = PAGE.read_text()
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    PAGE.write_text(f"{head}{start}\n{section(done, cmds)}\n{end}{tail}")
    print(f"wrote {PAGE}")


if __name__ == "__main__":
    main()
