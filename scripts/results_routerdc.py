"""Regenerate docs/results.md: the paper's experiment on RouterDC's repeated-sampling data.

    python scripts/results_routerdc.py [--jobs 2] [--data ../shared/data/routerdc_7llm_repeated]
                                       [--reuse [--spot-check]] [--reuse-main] [--skip-seeds]

Runs ``caproute bench`` (the main grid: every router single-shot vs DARS over 5 seeds, the kNN
studies, the HTML report in docs/results/routerdc/), then ``caproute bench`` for kNN on four more
split seeds, then the seed re-checks of issue 14 (MLP on RouterDC, MIRT on the builtin small set,
each single-shot vs DARS over several seeds with the w/o-Risk ablation and the beta sweep), and
writes docs/results.md from the report folders. ``--reuse`` re-renders results.md from the
existing outputs without training anything (every single-shot vs DARS verdict recomputed from the
stored per-run utilities with the current tests); ``--spot-check`` adds to it a retraining of the
main grid's kNN and AvengersPro cells, compared on the page with the stored runs; ``--reuse-main`` keeps the existing main grid and
split-seed files and runs only the seed re-checks (the reduced run).

The RouterDC data has no licence that allows redistribution: it is read from ../shared and only
aggregate numbers are written here.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "routerdc_7llm_repeated"
TASKS = "gsm8k,humaneval,javascript,mbpp"
SEED = 42
EXTRA_SEEDS = (43, 44, 45, 46)
SEED_RUNS = 20
# single-shot sets per router: 100 (the paper's count) where a training takes seconds, fewer for
# the routers whose training on 1,573 queries x 20k TF-IDF features takes minutes on 2 cores
ROUTER_RUNS = {"embedllm": 20, "avengerspro": 20, "mirt": 20, "mf": 20, "graphrouter": 10, "mlp": 10,
               "rmsoftmax": 5}
# the independent quick check quoted in issue 3 (kNN + TF-IDF, decode view, four pass-rate tasks)
QUICK = {"single": 0.671, "dars": 0.678, "best_fixed": 0.670, "oracle": 0.821}
TITLE = "RouterDC repeated sampling: single-shot vs DARS (4 pass-rate tasks pooled)"


def bench_args(data: Path, seed: int, jobs: int) -> list[str]:
    return ["--data", str(data), "--dataset", TASKS, "--test-fraction", "0.5", "--test-decodes", "3",
            "--seed", str(seed), "--jobs", str(jobs)]


ROUTERS = "all"
MAIN_RUNS = 100
DARS_RUNS = 5
SMOKE_ARGS: list[str] = []
# seed re-checks (issue 14): name -> (router, data, single-shot runs, DARS runs, studies, extra arguments)
CHECKS = {
    "routerdc_mlp_seeds": ("mlp", "routerdc", 5, 5, "main,ablation,beta", []),
    "builtin_mirt_seeds": ("mirt", "builtin", 20, 10, "main,ablation,beta", []),
    # the optional fix (not the default): MIRT trained for at least 300 Adam steps
    "builtin_mirt_min_steps": ("mirt", "builtin", 10, 5, "main", ["--param", "mirt.min_steps=300"]),
}


def check_command(name: str, data: Path, jobs: int, report: Path) -> list[str]:
    router, where, n_single, n_dars, studies, extra = CHECKS[name]
    src = bench_args(data, SEED, jobs) if where == "routerdc" else ["--data", "builtin", "--jobs", str(jobs)]
    return ["caproute", "bench", *src, "--routers", router, "--single-shot-runs", str(n_single),
            "--dars-runs", str(n_dars), "--studies", studies, *extra, "--no-predictions",
            "--report", str(report)]


def main_command(data: Path, jobs: int, report: Path, json_out: Path) -> list[str]:
    runs = ",".join(f"{k}={v}" for k, v in ROUTER_RUNS.items())
    return ["caproute", "bench", *bench_args(data, SEED, jobs), "--routers", ROUTERS, "--single-shot-runs",
            str(MAIN_RUNS), "--router-runs", runs, "--dars-runs", str(DARS_RUNS), "--study-routers", "knn",
            *SMOKE_ARGS, "--json", str(json_out), "--report", str(report), "--title", TITLE,
            "--no-predictions"]


def seed_command(data: Path, jobs: int, seed: int, json_out: Path) -> list[str]:
    return ["caproute", "bench", *bench_args(data, seed, jobs), "--routers", "knn", "--single-shot-runs",
            str(SEED_RUNS), "--studies", "main", "--json", str(json_out)]


#: routers retrained by ``--reuse --spot-check`` (the two fastest families of the main grid)
SPOT_ROUTERS = ("knn", "avengerspro")


def spot_command(data: Path, jobs: int, json_out: Path) -> list[str]:
    """The main grid's command restricted to SPOT_ROUTERS and the main study (same split, seeds, run counts)."""
    return ["caproute", "bench", *bench_args(data, SEED, jobs), "--routers", ",".join(SPOT_ROUTERS),
            "--single-shot-runs", str(MAIN_RUNS), "--router-runs",
            ",".join(f"{k}={v}" for k, v in ROUTER_RUNS.items() if k in SPOT_ROUTERS),
            "--dars-runs", str(DARS_RUNS), "--studies", "main", "--no-predictions", "--json", str(json_out)]


def spot_check(rows: pd.DataFrame, spot_file: Path) -> list[str]:
    """Stored main-grid rows against the same cells retrained now by the current code."""
    from caproute.evaluate.report import to_markdown

    if not spot_file.exists():
        return []
    new = pd.DataFrame(json.loads(spot_file.read_text()))
    new["supervision"] = new["supervision"].where(new["supervision"].notna(), None)
    table = []
    for router in SPOT_ROUTERS:
        for sup in ("single", "dars"):
            a, b = pick(rows, router, sup), pick(new, router, sup)
            table.append({"router": router, "supervision": sup, "runs": int(b["n_runs"]),
                          "stored U_dec": f"{a['utility_mean']:.6f} ± {a['utility_std']:.6f}",
                          "retrained now": f"{b['utility_mean']:.6f} ± {b['utility_std']:.6f}",
                          "difference": f"{b['utility_mean'] - a['utility_mean']:+.1e}"})
    return ["Spot check that the stored runs are what the current code produces: the main grid's cells of "
            f"{' and '.join(SPOT_ROUTERS)} retrained now (`--spot-check`, the command "
            f"`{shlex.join(spot_command(Path('../shared/data/routerdc_7llm_repeated'), 1, Path(_rel(spot_file))))}`):",
            "", to_markdown(pd.DataFrame(table)), ""]


def run(cmd: list[str]) -> None:
    exe = Path(sys.executable).parent / "caproute"
    print("$", shlex.join(cmd), flush=True)
    subprocess.run([str(exe), *cmd[1:]], check=True, cwd=REPO)


def _rel(p: Path) -> str:
    try:
        return str(p.relative_to(REPO))
    except ValueError:
        return str(p)


def pick(rows: pd.DataFrame, router: str, sup: str | None, view: str = "decode") -> pd.Series:
    sel = (rows["router"] == router) & (rows["view"] == view)
    sel &= rows["supervision"].isna() if sup is None else (rows["supervision"] == sup)
    return rows[sel].iloc[0]


def seed_checks(checks: dict[str, Path], mlp_head: str = "not in the headline grid") -> list[str]:
    """The issue-14 seed re-checks: single-shot vs DARS over several seeds, with the w/o-Risk
    ablation (beta = 0 at training and routing) and the beta sweep of the DARS fit."""
    from caproute.evaluate.report import to_markdown

    done = {k: v for k, v in checks.items() if (v / "bench.json").exists()}
    missing = [k for k in checks if k not in done]
    if not done:
        return []
    out = ["## Seed re-checks (issue 14)", "",
           "Single-shot and DARS each trained over several seeds (router seeds 42 + r); Welch t-test of the "
           "difference (two-sided, at its own degrees of freedom), Holm-adjusted over each check's views, family-wise "
           "alpha = 0.05; the verdict gives the 95% CI of DARS - single-shot. `w/o Risk` is DARS trained and routed with beta = 0; the beta "
           "column gives the DARS fit of seed 42 routed with each beta (MLP and MIRT do not use beta in training, "
           "so one fit serves every beta).", ""]
    table = []
    for name, folder in done.items():
        res = load(folder)
        router = res.config.routers[0]
        for view in res.views:
            sig = res.significance[(res.significance["router"] == router) & (res.significance["view"] == view)]
            if sig.empty:
                continue
            g = sig.iloc[0]
            abl = res.ablation
            nr = abl[(abl["router"] == router) & (abl["variant"] == "no_risk") & (abl["view"] == view)] \
                if not abl.empty else abl
            b = res.beta[(res.beta["router"] == router) & (res.beta["view"] == view)] if not res.beta.empty else res.beta
            table.append({
                "check": name, "data": res.dataset, "view": view,
                "single-shot": f"{g['single_mean']:.3f} ± {g['single_std']:.3f} (n={int(g['n_single'])})",
                "DARS": f"{g['dars_mean']:.3f} ± {g['dars_std']:.3f} (n={int(g['n_dars'])})",
                "Δ": f"{g['diff']:+.3f}", "Welch p": f"{g['p_value']:.3g}", "verdict": g["verdict"],
                "DARS w/o Risk (seed 42)": f"{nr['utility_mean'].iloc[0]:.3f}" if len(nr) else "-",
                "DARS by beta (seed 42)": ", ".join(f"{x.beta:g}: {x.utility:.3f}" for x in b.itertuples()) if len(b)
                else "-"})
    out += [to_markdown(pd.DataFrame(table)), ""]
    if missing:
        out += [f"Not run in the last regeneration (compute; their commands are listed at the top): "
                f"{', '.join(missing)}.", ""]
    out += check_notes(done, mlp_head) + [""]
    return out


def load(folder: Path):
    """``read_result`` with the single-shot vs DARS tests recomputed from the stored per-run test
    utilities by the current ``bench.significance_table`` (Welch t at its own degrees of freedom, Holm
    across the report's router x view cells, the CI of DARS - single-shot in every verdict), so a
    re-render of stored runs carries the corrected verdicts and not the ones stored with the runs."""
    from caproute.evaluate.bench import significance_table
    from caproute.evaluate.report import read_result

    res = read_result(folder)
    if not res.runs.empty:
        res.significance = significance_table(res.runs[res.runs["study"] == "main"])
    return res


def beats_best_fixed(res, router: str, bf: float, view: str = "decode") -> str:
    """DARS test utility minus the best fixed model's, with its 95% CI over the DARS trainings (t at
    n - 1 degrees of freedom; the best fixed model's utility is one fixed number)."""
    from caproute.evaluate.inference import mean_test

    r = res.runs
    u = r[(r["study"] == "main") & (r["router"] == router) & (r["supervision"] == "dars") & (r["view"] == view)]
    d = u["utility"].to_numpy(float) - bf
    if d.size < 2:
        return f"{router} ({d.mean():+.3f}, one training: no CI)"
    t = mean_test(d)
    return f"{router} ({t.mean:+.3f}, 95% CI [{t.ci_low:+.3f}, {t.ci_high:+.3f}], n = {d.size})"


def _sig(folder: Path, view: str = "decode"):
    res = load(folder)
    g = res.significance[res.significance["view"] == view].iloc[0]
    bf = res.rows[(res.rows["router"] == "best_fixed") & (res.rows["view"] == view)]["utility_mean"].iloc[0]
    return res, g, float(bf)


#: the option offered for the MLP (filled in from the diagnostic run; the default stays faithful)
MLP_OPTION = ("An option that keeps the default faithful: a smaller step, `--param mlp.lr=1e-4`. In the same "
              "diagnostic (seed 42) it lifts DARS from 0.475 to 0.533 and single-shot from 0.481 to 0.504, with "
              "18% instead of 3% of the predicted mu_q at the clip value 1; still far below the best fixed "
              "model, because the standardised TF-IDF input saturates the network either way (about 42% of "
              "its predictions end clipped at 0 or 1, and ties are broken by model order). Not benchmarked over "
              "seeds here.")


def check_notes(done: dict[str, Path], mlp_head: str) -> list[str]:
    """What drives what remains (the numbers come from the check folders)."""
    lines = ["What drives what remains:", ""]
    if "builtin_mirt_seeds" in done:
        res, g, bf = _sig(done["builtin_mirt_seeds"])
        b = res.beta[res.beta["view"] == "decode"]["utility"] if not res.beta.empty else pd.Series(dtype=float)
        flat = len(b) > 1 and float(b.max() - b.min()) == 0.0
        lines.append(
            f"- MIRT on the builtin small set ({res.meta['n_train_queries']} training queries, "
            f"{len(res.models)} models): DARS - single-shot = {g['diff']:+.3f} on U_dec (Welch p = "
            f"{g['p_value']:.2g}, {g['verdict']}), and both are far below the best fixed model ({bf:.3f}). "
            "At this size the reference's 30 epochs of batches of 256 are 30 Adam steps: the discrimination "
            "vectors stay near their N(0, 0.02^2) start, the predicted scores barely depend on the query, "
            "and each fit routes almost every query to one model that depends on the seed (the bimodal "
            "results of the issue)"
            + (" (the seed-42 DARS fit gives the same U_dec for every beta" + ", and the same for the ablation "
               "variants)" if flat else "")
            + ". The remaining single-shot vs DARS gap is this seed lottery, not the supervision.")
    if "builtin_mirt_min_steps" in done:
        _, g2, bf = _sig(done["builtin_mirt_min_steps"])
        lines.append(
            f"- The option (not the default, which stays faithful): `--param mirt.min_steps=300` trains at least "
            f"300 Adam steps. Then single-shot {g2['single_mean']:.3f} ± {g2['single_std']:.3f}, DARS "
            f"{g2['dars_mean']:.3f} ± {g2['dars_std']:.3f} (Δ = {g2['diff']:+.3f}, Welch p = {g2['p_value']:.2g}, "
            f"{g2['verdict']}); best fixed {bf:.3f}.")
    if "routerdc_mlp_seeds" in done:
        res, g, bf = _sig(done["routerdc_mlp_seeds"])
        r = res.runs[(res.runs["study"] == "main") & (res.runs["view"] == "decode")]
        paired = r.pivot_table(index="seed", columns="supervision", values="utility").dropna()
        d = paired["dars"] - paired["single"]
        corr = float(np.corrcoef(paired["single"], paired["dars"])[0, 1]) if len(paired) > 2 else float("nan")
        lines.append(
            f"- MLP on RouterDC: DARS - single-shot = {g['diff']:+.3f} (Welch p = {g['p_value']:.2g}, "
            f"{g['verdict']}) over {int(g['n_single'])} single-shot and {int(g['n_dars'])} DARS trainings "
            f"(the headline grid: {mlp_head}; before issue 14 this page had -0.076 from one DARS training). "
            f"The router seed is shared by single-shot "
            f"run r and DARS run r (both 42 + r): per seed, DARS - single-shot = {d.mean():+.3f} ± {d.std(ddof=1):.3f} "
            f"(n = {len(d)}; correlation of the two across seeds {corr:.2f}), both far below the best fixed model "
            f"({bf:.3f}). The MLP's result is set by its initialisation more than by its supervision. The "
            "reference's convergence rule (scikit-learn's: stop once the training loss has not improved by "
            "tol = 1e-4 for 10 epochs, which applies even without early stopping) ends the mu_q head after "
            "about 30 full-batch Adam epochs on both supervisions: in a diagnostic fit of seed 42 after 28 epochs "
            "(DARS) and 29 (single-shot), and after 28 again with tol = 1e-6, so the loss stops improving at all "
            "rather than plateauing slowly (full-batch Adam at lr 1e-3 on standardised 20k-dimensional TF-IDF, "
            "where rare terms become inputs of tens of standard units), with about 28% of the predicted mu_q "
            "clipped at 0. The routing then follows the random start. " + MLP_OPTION)
    else:
        lines.append(
            "- MLP on RouterDC (the -0.076 of the headline, one DARS training against 10 single-shot ones) "
            "was not re-checked with seeds in the last regeneration: the shared 2-core machine ran at load "
            "20-28, where one MLP training on the 1,573 x 20k TF-IDF set (20 CPU seconds) took several "
            "minutes of wall time (the check's command is listed at the top). In the router-variance table below, the 10 single-shot MLP "
            "trainings range over 0.476-0.617 and the one DARS training (0.475) sits at the bottom of that "
            "range: the -0.076 rests on one DARS draw against a wide spread, so whether it persists is open.")
    return lines


def compose(report_dir: Path, seed_files: dict[int, Path], commands: list[list[str]], minutes: float | None,
            data: Path, checks: dict[str, Path] | None = None, reanalysed: bool = False,
            spot_file: Path | None = None) -> str:
    from caproute.evaluate.report import sections

    res = load(report_dir)
    rows = res.rows
    m = res.meta
    n_dars_main = int(rows.loc[rows["supervision"] == "dars", "n_runs"].max())
    ours = {"single": pick(rows, "knn", "single")["utility_mean"], "dars": pick(rows, "knn", "dars")["utility_mean"],
            "best_fixed": pick(rows, "best_fixed", None)["utility_mean"],
            "oracle": pick(rows, "oracle", None)["utility_mean"]}
    seeds = {SEED: ours}
    for s, f in sorted(seed_files.items()):
        if f.exists():
            r = pd.DataFrame(json.loads(f.read_text()))
            r["supervision"] = r["supervision"].where(r["supervision"].notna(), None)
            seeds[s] = {"single": pick(r, "knn", "single")["utility_mean"], "dars": pick(r, "knn", "dars")["utility_mean"],
                        "best_fixed": pick(r, "best_fixed", None)["utility_mean"],
                        "oracle": pick(r, "oracle", None)["utility_mean"]}
    sd = pd.DataFrame(seeds).T
    spread = sd.std(ddof=1) if len(sd) > 1 else pd.Series(np.nan, index=sd.columns)

    out = [f"# Results on real data: {TITLE}", ""]
    mins = f"{minutes:.0f}" if minutes else "?"
    out += ["Regenerate (about " + mins + " minutes on 2 shared cores):", "",
            f"<!-- doc-test: skip regenerates this page and docs/results/ (about {mins} minutes on 2 cores) -->",
            "```bash", "python scripts/results_routerdc.py --jobs 2", "```", "",
            "which runs these `caproute bench` commands (from the repository root, with the shared data "
            "next to it) and then writes this page from the report folders:", "",
            f"<!-- doc-test: skip the commands behind scripts/results_routerdc.py (about {mins} minutes on 2 cores) -->",
            "```bash"]
    out += [shlex.join(c).replace(str(data), "../shared/data/routerdc_7llm_repeated") for c in commands]
    out += ["```", "",
            "The full report with every table and figure: [results/routerdc/report.html](results/routerdc/report.html) "
            "(self-contained) and [results/routerdc/report.md](results/routerdc/report.md); CSVs in "
            "[results/routerdc/](results/routerdc/).", ""]
    if reanalysed:
        out += ["**How this version was made (`python scripts/results_routerdc.py --reuse"
                + (" --spot-check" if spot_file is not None and spot_file.exists() else "") + "`)**: the numbers "
                "on this page come from no new training. The per-run test utilities are "
                "the ones stored in docs/results/ by the last full run of the commands above; every single-shot vs "
                "DARS verdict on this page was recomputed from them with the current tests (Welch or one-sample t "
                "at its own degrees of freedom, Holm's correction over the cells tested together, the 95% CI of "
                "the difference next to each verdict). The full run (measured at " + mins + " minutes with 2 jobs) "
                "did not fit the session's share of the 2-core machine used by about 8 engineers.", ""]
        out += spot_check(rows, spot_file) if spot_file is not None else []

    out += ["## Data and protocol", ""]
    out += [
        "- RouterDC (Chen et al., NeurIPS 2024) released, for 7 open 7-8B LLMs, the number of correct answers "
        "out of 10 sampled decodes (temperature 0.2) on GSM8K, HumanEval, HumanEval-JS and MBPP: 3,147 queries. "
        "The adapter expands each (query, model) pair into 10 0/1 decode observations "
        "(`caproute.data.adapters.read_routerdc`). The data is read from `../shared`; it may not be copied "
        "into the repository, and only aggregate numbers appear here.",
        "- The four pass-rate tasks are pooled into one evaluation set (`--dataset "
        f"{TASKS}`). The data has no costs: cost = 0 everywhere, so utility = quality and lambda has no "
        "effect (the Pareto figure collapses to cost 0).",
        f"- Split (`--test-fraction 0.5 --test-decodes 3 --seed {SEED}`): half of each task's queries, drawn with "
        "the seed, are test queries. In every (query, model) pair a uniformly random 3 of the 10 decodes are the "
        "test part and the other 7 the training part; test queries keep their 3 test decodes (the decode view), "
        "training queries their 7 training decodes. For k correct of 10 the held-out successes are therefore an "
        "exact hypergeometric draw (10, k, 3), and training keeps the rest.",
        f"- Training: {m['n_train_queries']} queries x 7 models x 7 decodes ({m['n_train_observations']} "
        f"observations); test: {m['n_test_queries']} queries x 7 models x 3 decodes. Only the decode view "
        "exists (RouterDC has no rewrites), so this page reports U_dec.",
        f"- Features: TF-IDF (20k features, 1-2 grams) of the original question, fitted on the training queries. "
        f"lambda = {res.config.lam}, beta = {res.config.beta}. Single-shot: set r draws one of the 7 training "
        f"decodes per pair with seed {SEED} + r; 100 sets for kNN and the baselines, "
        + ", ".join(f"{k} {v}" for k, v in ROUTER_RUNS.items())
        + " (training time; the count is in each row). DARS: all 7 decodes, trained `--dars-runs` times "
        f"(router seeds 42 + r; {n_dars_main} trainings per seeded router here, one for a router without a seed).",
        "",
    ]

    out += ["## Headline: decode-view utility, single-shot vs DARS", ""]
    t = []
    sig = res.significance.set_index(["router", "view"]) if not res.significance.empty else None
    for router in [r for r in dict.fromkeys(rows["router"]) if r not in ("best_fixed", "oracle")]:
        s, d = pick(rows, router, "single"), pick(rows, router, "dars")
        dtxt = f"{d['utility_mean']:.3f}" + (f" ± {d['utility_std']:.3f}" if d["n_runs"] > 1 else "")
        line = {"Router": router, "single-shot U_dec (mean ± std)": f"{s['utility_mean']:.3f} ± {s['utility_std']:.3f}",
                "DARS U_dec": dtxt, "Δ": f"{d['utility_mean'] - s['utility_mean']:+.3f}",
                "single-shot runs": int(s["n_runs"]), "DARS runs": int(d["n_runs"])}
        if sig is not None and (router, "decode") in sig.index:
            g = sig.loc[(router, "decode")]
            line["test (p, Holm p)"] = (f"{g['test']} ({g['p_value']:.3g}, {g['p_holm']:.3g})"
                                        if np.isfinite(g["p_value"]) else g["test"])
            line["verdict (alpha 0.05)"] = g["verdict"]
        t.append(line)
    bf, orc = pick(rows, "best_fixed", None), pick(rows, "oracle", None)
    t.append({"Router": f"best fixed ({bf['model']})", "single-shot U_dec (mean ± std)": f"{bf['utility_mean']:.3f}",
              "DARS U_dec": f"{bf['utility_mean']:.3f}", "Δ": "", "single-shot runs": "", "DARS runs": ""})
    t.append({"Router": "oracle", "single-shot U_dec (mean ± std)": f"{orc['utility_mean']:.3f}",
              "DARS U_dec": f"{orc['utility_mean']:.3f}", "Δ": "", "single-shot runs": "", "DARS runs": ""})
    from caproute.evaluate.report import to_markdown

    n_dars = int(rows.loc[rows["supervision"] == "dars", "n_runs"].max())
    if n_dars <= 1:
        out += ["**This main grid predates issue 14**: each DARS number below is ONE training (seed 42), "
                "and the per-seed spread of MLP, EmbedLLM, MIRT and AvengersPro is 0.02-0.1, so a Δ below "
                "about 0.02 is not a conclusion (see the seed re-checks further down, which train DARS over "
                "several seeds and test the difference). The full regeneration with `--dars-runs 5` (the "
                "command above) did not fit in the time of the last session on the shared 2-core machine.", ""]
    out += [to_markdown(pd.DataFrame(t).astype(object).fillna("")), ""]
    learned = [r for r in t[:-2] if r["Router"] not in ("best_fixed_train", "random", "cheapest")]
    gains = [r["Router"] for r in learned if float(r["Δ"]) > 0]
    losses = [r["Router"] for r in learned if float(r["Δ"]) < 0]
    beat = [r["Router"] for r in learned if float(r["DARS U_dec"].split(" ")[0]) > bf["utility_mean"]]
    below = [r["Router"] for r in learned
             if max(float(r["DARS U_dec"].split(" ")[0]), float(r["single-shot U_dec (mean ± std)"].split(" ")[0]))
             < bf["utility_mean"] - 0.02]
    def verdict_of(router):
        return str(sig.loc[(router, "decode")]["verdict"]) if sig is not None and (router, "decode") in sig.index else ""

    def verdict_line(router):
        return f"{router} ({verdict_of(router).split('(', 1)[-1].rstrip(')')})"

    sig_up = [r for r in gains if verdict_of(r).startswith("DARS higher")]
    sig_down = [r for r in losses if verdict_of(r).startswith("DARS lower")]
    out += [f"- DARS has the higher mean than single-shot for {len(gains)} of {len(learned)} learned routers"
            + (f" ({', '.join(gains)})" if gains else "") + (f"; the lower mean for {', '.join(losses)}" if losses else "")
            + f". Significant at family-wise alpha 0.05 (Welch t, Holm over the {len(res.significance)} router x view "
            f"cells): DARS higher for {', '.join(verdict_line(r) for r in sig_up) or 'none'}; lower for "
            f"{', '.join(verdict_line(r) for r in sig_down) or 'none'}; every other difference is within the seed "
            "noise (verdicts with their CIs in the table).",
            f"- Routers whose mean DARS utility is above the best fixed model ({bf['utility_mean']:.3f}), with DARS - best "
            "fixed and its 95% CI over the DARS trainings: "
            + ("; ".join(beats_best_fixed(res, r, float(bf["utility_mean"])) for r in beat) if beat else "none")
            + f". The oracle shows the headroom: {orc['utility_mean']:.3f}."]
    if below:
        out += [f"- {', '.join(below)}: more than 0.02 below the best fixed model with both supervisions, so these "
                "numbers say more about the router as configured here (the reference code's hyper-parameters, "
                "which that code ran on 200 training queries per dataset) than about the supervision."]
    out += [""]

    out += ["## Comparison with the independent kNN + TF-IDF check", ""]
    cmp_rows = []
    for key, label in (("single", "kNN single-shot"), ("dars", "kNN DARS"), ("best_fixed", "best fixed"),
                       ("oracle", "oracle")):
        cmp_rows.append({"": label, "quick check": f"{QUICK[key]:.3f}", f"caproute (seed {SEED})": f"{ours[key]:.3f}",
                         "difference": f"{ours[key] - QUICK[key]:+.3f}",
                         f"caproute over {len(sd)} split seeds (mean ± std)": f"{sd[key].mean():.3f} ± {spread[key]:.3f}"})
    cmp_rows.append({"": "DARS - single-shot", "quick check": f"{QUICK['dars'] - QUICK['single']:+.3f}",
                     f"caproute (seed {SEED})": f"{ours['dars'] - ours['single']:+.3f}", "difference": "",
                     f"caproute over {len(sd)} split seeds (mean ± std)":
                         f"{(sd['dars'] - sd['single']).mean():+.3f} ± {(sd['dars'] - sd['single']).std(ddof=1):.3f}"})
    out += [to_markdown(pd.DataFrame(cmp_rows)), ""]
    per_seed = sd.reset_index().rename(columns={"index": "split seed"})
    per_seed["DARS - single"] = per_seed["dars"] - per_seed["single"]
    out += [f"Per split seed (kNN single-shot over {SEED_RUNS} sets for seeds {', '.join(map(str, EXTRA_SEEDS))}; "
            f"100 for seed {SEED}):", "", to_markdown(per_seed.round(4)), ""]
    out += explain(ours, sd, spread)

    if "mlp" in set(rows["router"]):
        ms, md = pick(rows, "mlp", "single"), pick(rows, "mlp", "dars")
        mlp_head = (f"Δ = {md['utility_mean'] - ms['utility_mean']:+.3f} over {int(ms['n_runs'])} single-shot and "
                    f"{int(md['n_runs'])} DARS trainings")
        out += seed_checks(checks or {}, mlp_head)
    else:   # --smoke: no MLP in the grid
        out += seed_checks(checks or {})
    out += ["## Everything else (from the report)", ""]
    skip = {"table1b_quality"}   # utility = quality here (no costs)
    for slug, name, text, df in sections(res):
        if slug in skip:
            continue
        out += [f"### {name}", "", text, "", to_markdown(df), ""]
    out += ["Notes on this data: RouterDC has one prompt per query, so the rewrite-based ablations are "
            "degenerate (Input-only = the first decode only, Output-only = Full DARS, w/ Rew. Risk = w/o Risk, "
            "w/ Dec. Risk = Full DARS) and K x R reduces to R decodes (1 to 7). Costs are all zero, so the "
            "two-model pool's weak model is the better of the others by training quality (MetaMath-Mistral, strong "
            "on GSM8K, against dolphin-2.9-llama3, the best overall); the two are good at different queries, so "
            "routing between them beats always-strong and APGR exceeds 1. The Pareto sweep is flat.", ""]
    out += ["### Figures", ""]
    from caproute.evaluate.report import FIGURES

    for f, cap in FIGURES.items():
        if (report_dir / f).exists():
            out += [f"![{cap}](results/routerdc/{f})", "", f"*{cap}*", ""]
    return "\n".join(out)


def explain(ours: dict, sd: pd.DataFrame, spread: pd.Series) -> list[str]:
    lines = ["How to read the differences:", ""]
    ref_gap = max(abs(ours["best_fixed"] - QUICK["best_fixed"]), abs(ours["oracle"] - QUICK["oracle"]))
    lines.append(
        f"- Best fixed and oracle involve no training: they depend only on which queries are test queries and on "
        f"which 3 decodes are held out. Ours differ from the quick check by at most {ref_gap:.3f}, and they move "
        f"by {spread['best_fixed']:.3f} (best fixed) and {spread['oracle']:.3f} (oracle) (std) across our own split "
        "seeds, so the two evaluations test the same thing on comparable splits.")
    for key, label in (("single", "single-shot"), ("dars", "DARS")):
        diff = ours[key] - QUICK[key]
        within = abs(diff) <= 2 * spread[key] if np.isfinite(spread[key]) else False
        lines.append(
            f"- kNN {label}: {ours[key]:.3f} vs {QUICK[key]:.3f} ({diff:+.3f}); the std over split seeds is "
            f"{spread[key]:.3f}, so the difference is "
            + ("within two standard deviations of the split-to-split spread." if within else
               "larger than two standard deviations of the split-to-split spread (see below)."))
    gain_ours, gain_q = ours["dars"] - ours["single"], QUICK["dars"] - QUICK["single"]
    lines.append(f"- The quantity the experiment is about, the DARS gain, is {gain_ours:+.3f} here and "
                 f"{gain_q:+.3f} in the quick check; over our split seeds it is "
                 f"{(sd['dars'] - sd['single']).mean():+.3f} on average.")
    lines.append(
        "- Details of the quick check that we do not know and that move kNN by about a hundredth: its split "
        "seed and the exact test queries; how it drew the held-out decodes (we hold out a uniformly random 3 of "
        "each pair's 10, the adapter's decode order being itself a seeded permutation); its TF-IDF vocabulary "
        "(we fit 20k uni- and bigram features on the training questions only); and its tie rule (we break "
        "predicted-utility ties by lower predicted cost, then model order; with zero costs that is model "
        "order).")
    lines.append("")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--reuse", action="store_true", help="only re-render results.md from existing outputs")
    ap.add_argument("--skip-seeds", action="store_true", help="do not run the extra split seeds")
    ap.add_argument("--reuse-main", action="store_true",
                    help="keep the main grid and split-seed outputs; run only the seed re-checks (reduced run)")
    ap.add_argument("--checks", default=",".join(CHECKS), help="seed re-checks to run (default: all)")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "results.md")
    ap.add_argument("--smoke", action="store_true", help="a tiny run (3 routers, 2 sets) to test this script")
    ap.add_argument("--spot-check", action="store_true",
                    help="with --reuse: retrain the main grid's kNN and AvengersPro cells and compare with the stored runs")
    args = ap.parse_args(argv)
    if args.smoke:
        global ROUTERS, MAIN_RUNS, SEED_RUNS, EXTRA_SEEDS, ROUTER_RUNS, SMOKE_ARGS
        ROUTERS, MAIN_RUNS, SEED_RUNS, EXTRA_SEEDS = "knn,avengerspro,best_fixed", 2, 2, (43,)
        ROUTER_RUNS = {"avengerspro": 1}
        SMOKE_ARGS = ["--kxr-subsamples", "1", "--betas", "0,0.2"]
    if not (args.data / "scores_long.parquet").exists():
        print(f"RouterDC data not found at {args.data} (pass --data)", file=sys.stderr)
        return 2
    results = args.out.parent / "results"
    report = results / "routerdc"
    results.mkdir(parents=True, exist_ok=True)
    seed_files = {s: results / f"routerdc_knn_seed{s}.json" for s in EXTRA_SEEDS}
    commands = [main_command(args.data, args.jobs, Path(_rel(report)), Path(_rel(results / "routerdc.json")))]
    commands += [seed_command(args.data, args.jobs, s, Path(_rel(f))) for s, f in seed_files.items()]
    checks = {name: results / name for name in CHECKS}
    chosen = [c.strip() for c in args.checks.split(",") if c.strip()]
    unknown = sorted(set(chosen) - set(CHECKS))
    if unknown:
        print(f"unknown checks {unknown} (choose from {', '.join(CHECKS)})", file=sys.stderr)
        return 2
    check_cmds = [check_command(name, args.data, args.jobs, Path(_rel(f))) for name, f in checks.items()]
    to_run = [c for name, c in zip(checks, check_cmds, strict=True) if name in chosen]
    minutes = None
    timing = results / "routerdc_minutes.txt"
    spot_file = results / "routerdc_spot_check.json"
    if not args.reuse and not args.reuse_main:
        t0 = time.perf_counter()
        run(commands[0])
        if not args.skip_seeds:
            for c in commands[1:]:
                run(c)
        for c in to_run:
            run(c)
        minutes = (time.perf_counter() - t0) / 60
        timing.write_text(f"{minutes:.1f}\n")
    else:
        from caproute.evaluate.report import write_report

        if args.reuse_main:
            for c in to_run:
                run(c)
        if args.reuse and args.spot_check:
            run(spot_command(args.data, args.jobs, Path(_rel(spot_file))))
        write_report(load(report), report, title=TITLE)   # re-render tables and figures
        if timing.exists():
            minutes = float(timing.read_text())
    text = compose(report, seed_files, commands + check_cmds, minutes, args.data, checks,
                   reanalysed=args.reuse, spot_file=spot_file if args.reuse else None)
    from caproute.data.atomic import atomic_file

    with atomic_file(args.out) as tmp:
        tmp.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
