"""Regenerate docs/results-meta.md: the Meta-Router on PandaLM (human gold vs LLM-judge preferences).

    OMP_NUM_THREADS=1 nice -n 5 python scripts/results_meta.py [--runs 20] [--trees 10] [--jobs 1]
                                                               [--reuse] [--rerun-small] [--rerun-overlap]

Three studies, each saved as JSON under docs/results-meta/ and rendered into results-meta.md:

1. crossover (always run unless --reuse): gold n = 15, 50, 100, 200, 400; judges GPT-3.5,
   PandaLM-7B and two semi-synthetic judges built from PandaLM-7B: ``pandalm7b-lenbias`` (bias on
   query length, a covariate the learner is not given) and ``pandalm7b-qbias`` (bias on PC1 of the
   learner's own embeddings: the method's best case); meta-r with the paper's effect forest (the
   default), with the effect model chosen by cross-fitted loss (``meta-r:auto``) and with each
   other fixed effect model, against pooling, gold-only and all-gold. ``--runs`` Monte Carlo
   splits, forests of ``--trees`` trees (fewer than the official code's 100/200, for CPU time;
   said on the page).
2. small (``--rerun-small``; otherwise read from pandalm.json): gold n = 15, 50, 20 runs, every
   method, the paper's forests and the paper's forest effect model.
3. overlap (``--rerun-overlap``; otherwise read from pandalm_overlap_paper.json): the released
   code's overlap rule on the same splits.

Every verdict is a Nadeau-Bengio corrected resampled t test (runs are overlapping resplits of the
same 170 instructions) with Holm's correction over the cells tested together and a 95 % CI.
``--reuse`` re-renders the page from the saved JSON files without fitting anything. PandaLM's
pairs are read from ../shared/data (Apache-2.0); only aggregate numbers are written.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "pandalm_pairwise_human_vs_llmjudge" / "pairs.parquet"
OUT = REPO / "docs" / "results-meta"
PAGE = REPO / "docs" / "results-meta.md"
GOLD_NS = (15, 50, 100, 200, 400)
JUDGES = ("gpt35", "pandalm7b", "pandalm7b-lenbias", "pandalm7b-qbias")
CROSS_METHODS = ("meta-r", "meta-r:auto", "meta-r:ridge", "meta-r:group", "meta-r:constant", "pooled",
                 "gold-only", "all-gold")
OTHER_EFFECTS = tuple(m for m in CROSS_METHODS if m.startswith("meta-r:"))
CONSTRUCTION = {
    "gpt35": "real judge, GPT-3.5-turbo",
    "pandalm7b": "real judge, PandaLM-7B",
    "pandalm7b-lenbias": "semi-synthetic: bias on query length, a covariate the learner is not given",
    "pandalm7b-qbias": "semi-synthetic best case: bias on PC1 of the learner's own embeddings",
}
ALPHA = 0.05            # family-wise level of the "beats"/"loses" verdicts, after Holm's correction
# runs are resampled splits of the same 170 instructions, not independent: the paired tests are
# Nadeau-Bengio corrected resampled t tests with n_test / n_train = test_fraction / (1 - test_fraction)
TEST_FRACTION = 0.3     # caproute.causal.experiment.MetaConfig's default, which every study here uses


def covariate_checks(ds, texts: list[str]) -> dict:
    """How well the learner's query features (MiniLM PCA-50) predict each semi-synthetic judge's
    bias covariate (5-fold CV accuracy; :func:`caproute.causal.pandalm.covariate_visibility`).
    ``ds.embeddings`` and ``texts`` hold one row per query code."""
    from caproute.causal.pandalm import covariate_visibility, length_side, pc1_side

    E = ds.embeddings
    codes = np.arange(len(texts))
    return {"length": covariate_visibility(E, length_side(codes, texts)),
            "pc1": covariate_visibility(E, pc1_side(codes, E))}


def run_crossover(runs: int, trees: int, jobs: int, cache: Path) -> dict:
    """The crossover study, one gold n at a time: each gold n's curves are cached in ``cache``
    (JSON), so an interrupted study resumes; cell seeds do not depend on the chunking."""
    from caproute.causal.api import load_pairwise
    from caproute.causal.experiment import MetaConfig, MetaResults, prepare_dataset, run_meta
    from caproute.causal.metrics import USAGE_GRID
    from caproute.causal.report import write_report
    from caproute.core.atomic import write_json

    cfg = MetaConfig(gold_ns=GOLD_NS, runs=runs, methods=CROSS_METHODS, trees=trees, effect="forest")
    gains = load_pairwise(DATA, judges=list(JUDGES))
    ds = prepare_dataset(gains, name="pandalm")
    items = next(iter(gains.values())).items
    covariates = covariate_checks(ds, items.groupby("query_id", sort=False)["text"].first().tolist())
    cache.mkdir(parents=True, exist_ok=True)
    curves, diags, n_test, oracle, wall = {}, {}, {}, {}, 0.0
    for g in GOLD_NS:
        f = cache / f"gold{g}-runs{runs}-trees{trees}.json"
        if not f.exists():
            t0 = time.time()
            res = run_meta(ds, dataclasses.replace(cfg, gold_ns=(g,)), jobs=jobs)
            write_json({"curves": {f"{j}|{m}": c.tolist() for (j, _, m), c in res.curves.items()},
                        "diag": {j: d for (j, _), d in res.diagnostics.items()},
                        "n_test": res.n_test[g].tolist(), "oracle": res.oracle_peak[g].tolist(),
                        "wall": time.time() - t0}, f)
            print(f"gold n = {g}: {time.time() - t0:.0f} s", flush=True)
        part = json.loads(f.read_text())
        for key, c in part["curves"].items():
            j, m = key.split("|")
            curves[(j, g, m)] = np.asarray(c)
        diags.update({(j, g): d for j, d in part["diag"].items()})
        n_test[g], oracle[g] = np.asarray(part["n_test"]), np.asarray(part["oracle"])
        wall += part["wall"]
    res = MetaResults(cfg, "pandalm", USAGE_GRID.copy(), curves, diags, n_test, oracle, ds.counts)
    write_report(res, OUT / "crossover")
    per_run = {f"{j}|{g}|{m}": c.mean(axis=1).tolist() for (j, g, m), c in res.curves.items()}
    rows = [{k: v for k, v in r.items() if k not in ("curve", "curve_se")} for r in res.rows()]
    diag = {f"{j}|{g}": d for (j, g), d in res.diagnostics.items()}
    return {"config": {"gold_ns": list(GOLD_NS), "judges": list(JUDGES), "methods": list(CROSS_METHODS),
                       "runs": runs, "trees": trees, "effect": "forest", "jobs": jobs,
                       "test_fraction": cfg.test_fraction},
            "wall_seconds": wall, "machine": f"{platform.node()} ({os.cpu_count()} cores, shared)",
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "oracle_peak": {str(g): float(np.mean(v)) for g, v in res.oracle_peak.items()},
            "covariates": covariates,
            "rows": rows, "per_run_mean_gain": per_run, "diagnostics": diag}


def cli_study(args: list[str]) -> None:
    cmd = [str(Path(sys.executable).with_name("caproute")), "meta", "--data", str(DATA), *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)


SMALL_ARGS = ["--gold-n", "15", "--gold-n", "50", "--runs", "20", "--effect", "forest",
              "--json", "docs/results-meta/pandalm.json", "--report", "docs/results-meta"]
OVERLAP_ARGS = ["--gold-n", "15", "--gold-n", "50", "--runs", "20", "--overlap", "paper", "--methods",
                "meta-r,meta-dr", "--json", "docs/results-meta/pandalm_overlap_paper.json", "--report",
                "docs/results-meta/overlap-paper"]


# ----------------------------------------------------------------------------------------------
# rendering
def paired(a: list[float], b: list[float]) -> dict:
    """Nadeau-Bengio corrected resampled t test of mean(a - b) = 0 over the paired runs
    (:func:`caproute.evaluate.inference.corrected_resampled_test`), df = runs - 1, with its 95 % CI.
    ``p_holm`` starts as p; :func:`holm_family` replaces it for cells tested together."""
    from caproute.evaluate.inference import corrected_resampled_test

    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    r = corrected_resampled_test(d, n_train=1.0 - TEST_FRACTION, n_test=TEST_FRACTION, alpha=ALPHA)
    return {"mean": r.mean, "se": r.se, "t": r.t, "df": r.df, "p": r.p, "p_holm": r.p, "lo": r.ci_low,
            "hi": r.ci_high, "ahead": int((d > 0).sum()), "n": int(d.size)}


def holm_family(tests: list[dict]) -> None:
    """Holm-adjust the p-values of tests made together (in place: ``p_holm``)."""
    from caproute.evaluate.inference import holm

    for t, q in zip(tests, holm([t["p"] for t in tests]), strict=True):
        t["p_holm"] = float(q)


def beats(p: dict) -> bool:
    return bool(p["p_holm"] < ALPHA and p["mean"] > 0)


def loses(p: dict) -> bool:
    return bool(p["p_holm"] < ALPHA and p["mean"] < 0)


def tie(p: dict) -> bool:
    return not (beats(p) or loses(p))


def verdict(p: dict) -> str:
    if beats(p):
        return "**beats**"
    if loses(p):
        return "loses"
    return "n.s."


def fmt_p(p: dict) -> str:
    """'verdict: mean ± se [95 % CI] (corrected t, p, Holm p, runs ahead)'."""
    holm = f", Holm p = {p['p_holm']:.2g}" if p["p_holm"] != p["p"] else ""
    return (f"{verdict(p)}: {p['mean']:+.2f} ± {p['se']:.2f}, 95 % CI [{p['lo']:+.1f}, {p['hi']:+.1f}] "
            f"(t = {p['t']:+.1f}, p = {p['p']:.2g}{holm}; {p['ahead']}/{p['n']})")


def corrected_se(runs: list[float]) -> float:
    """Nadeau-Bengio se of a mean over the resampled runs (:func:`caproute.causal.metrics.resampled_se`)."""
    from caproute.causal.metrics import resampled_se

    x = np.asarray(runs, dtype=float)
    return float(resampled_se(x.std(ddof=1), x.size, TEST_FRACTION)) if x.size > 1 else float("nan")


def crossover_facts(cx: dict) -> dict:
    """Paired tests per (judge, gold n) of the per-run mean gain over usage 0.2-0.8, Holm-adjusted
    per comparison over every cell of the study."""
    runs = cx["per_run_mean_gain"]
    cfg = cx["config"]
    facts: dict = {}
    for j in cfg["judges"]:
        facts[j] = {}
        for g in cfg["gold_ns"]:
            def pr(m, j=j, g=g):
                return runs[f"{j}|{g}|{m}"]
            others = {m: paired(pr(m), pr("pooled")) for m in OTHER_EFFECTS}
            d = cx["diagnostics"][f"{j}|{g}"]
            shares = {k.rsplit("chose_", 1)[1]: v for k, v in d.items() if k.startswith("meta-r:auto.effect.chose_")}
            facts[j][g] = {"forest": paired(pr("meta-r"), pr("pooled")), "others": others,
                           "best": max(others, key=lambda m: others[m]["mean"]),
                           "gold": paired(pr("meta-r"), pr("gold-only")), "shares": shares}
    cells = [f for by_g in facts.values() for f in by_g.values()]
    holm_family([f["forest"] for f in cells])
    holm_family([p for f in cells for p in f["others"].values()])
    holm_family([f["gold"] for f in cells])
    return facts


def render_crossover(cx: dict, facts: dict) -> tuple[str, str]:
    rows = {(r["judge"], r["gold_n"], r["method"]): r for r in cx["rows"]}
    cfg = cx["config"]
    head = ["meta-r (forest, default)", *OTHER_EFFECTS, "pooled", "gold-only", "all-gold"]
    out = ["| judge | gold n | " + " | ".join(head) + " |", "|---|---:|" + "---:|" * len(head)]
    for j in cfg["judges"]:
        for g in cfg["gold_ns"]:
            cells = []
            for m in cfg["methods"]:
                r = rows.get((j, g, m))
                cells.append("–" if r is None else f"{r['efficiency_gain']:.1f} ({r['efficiency_gain_se']:.1f})")
            out.append(f"| {j} | {g} | " + " | ".join(cells) + " |")
    lines = ["| judge | gold n | meta-r (forest) − pooled | best other effect model − pooled (after the fact) "
             "| meta-r (forest) − gold-only | meta-r:auto chose |", "|---|---:|---|---|---|---|"]
    for j, by_g in facts.items():
        for g, f in by_g.items():
            share_txt = ", ".join(f"{k} {v:.0%}" for k, v in sorted(f["shares"].items(), key=lambda kv: -kv[1])
                                  if v > 0)
            lines.append(f"| {j} | {g} | {fmt_p(f['forest'])} | {f['best']}: {fmt_p(f['others'][f['best']])} | "
                         f"{fmt_p(f['gold'])} | {share_txt} |")
    return "\n".join(out) + "\n", "\n".join(lines) + "\n"


def _cells(facts: dict, j: str, key: str, pred) -> list[int]:
    return [g for g, f in facts.get(j, {}).items() if pred(f[key])]


def _ns(gs: list[int]) -> str:
    return ", ".join(map(str, gs)) if gs else "none"


def precision_sentence(facts: dict, cx: dict) -> str:
    """How small a difference the study can order: the median half-width of the 95 % intervals of
    meta-r (forest) − pooled against the median peak gain of pooling."""
    half = [(f["forest"]["hi"] - f["forest"]["lo"]) / 2 for by_g in facts.values() for f in by_g.values()]
    pooled = [r["efficiency_gain"] for r in cx["rows"] if r["method"] == "pooled"]
    return (f"Precision: the 95 % intervals of meta-r (forest) − pooled have a median half-width of "
            f"{np.median(half):.1f} gain points, against a median peak gain of pooling of {np.median(pooled):.1f}; with "
            f"{cx['config']['runs']} resplits of the same 170 instructions this study cannot order the two methods "
            "by differences smaller than that, and more resplits would not narrow it much (see above).")


def answer_paragraph(facts: dict, cov: dict) -> str:
    """The page's answer, one line per judge with its construction, from the Holm-adjusted
    corrected tests of meta-r (forest) against pooling and against gold-only."""
    parts = []
    for j in facts:
        won, lost = _cells(facts, j, "forest", beats), _cells(facts, j, "forest", loses)
        ties = _cells(facts, j, "forest", tie)
        gwon = _cells(facts, j, "gold", beats)
        bound = max((max(abs(facts[j][g]["forest"]["lo"]), abs(facts[j][g]["forest"]["hi"])) for g in ties),
                    default=0.0)
        txt = (f"- **{j}** ({construction(j, cov)}): against pooling, beats at gold n = {_ns(won)}, loses at "
               f"{_ns(lost)}, not significantly different at {_ns(ties)}")
        if ties:
            txt += f" (there the 95 % intervals exclude differences beyond ±{bound:.1f})"
        txt += f"; against gold-only, beats at gold n = {_ns(gwon)}."
        parts.append(txt)
    return ("**Answer** (meta-r with the paper's effect forest, the default; Nadeau-Bengio corrected "
            f"resampled t tests, Holm over the {sum(len(v) for v in facts.values())} (judge, gold n) cells, "
            f"family-wise alpha {ALPHA}; the evidence is in the tables below). Each verdict holds for its "
            "judge's construction only:\n\n" + "\n".join(parts))


def construction(j: str, cov: dict | None) -> str:
    base = CONSTRUCTION.get(j, j)
    kind = {"pandalm7b-lenbias": "length", "pandalm7b-qbias": "pc1"}.get(j)
    if cov and kind in cov:
        c = cov[kind]
        base += (f"; the learner's PCA-50 features predict its side at {c['logistic_accuracy']:.2f} (logistic) / "
                 f"{c['forest_accuracy']:.2f} (forest) 5-fold accuracy, majority rate {c['majority_rate']:.2f}")
    return base


def other_effect_sentences(facts: dict) -> list[str]:
    out = []
    for j, by_g in facts.items():
        fixed_beats = sorted({g for g, f in by_g.items() for p in f["others"].values() if beats(p)})
        auto_beats = [g for g, f in by_g.items() if beats(f["others"]["meta-r:auto"])]
        auto_loses = [g for g, f in by_g.items() if loses(f["others"]["meta-r:auto"])]
        means = {m: np.mean([f["others"][m]["mean"] for f in by_g.values()]) for m in OTHER_EFFECTS}
        best = max(means, key=lambda m: means[m])
        out.append(f"- {j}: meta-r:auto (PROPOSED selection) beats pooling at gold n = {_ns(auto_beats)} and loses "
                   f"at {_ns(auto_loses)}; some PROPOSED effect model beats pooling at gold n = {_ns(fixed_beats)} "
                   f"(Holm over all {len(OTHER_EFFECTS)} × {sum(len(v) for v in facts.values())} tests); "
                   f"best mean difference over gold n: {best} ({means[best]:+.2f}; the forest: "
                   f"{np.mean([f['forest']['mean'] for f in by_g.values()]):+.2f}).")
    return out


def choice_sentences(facts: dict) -> list[str]:
    out = []
    for j, by_g in facts.items():
        parts = []
        for g, f in by_g.items():
            if f["shares"]:
                top = max(f["shares"], key=lambda k: f["shares"][k])
                parts.append(f"n = {g}: {top} ({f['shares'][top]:.0%})")
        if parts:
            out.append(f"- {j}: effect model meta-r:auto chose most often — " + "; ".join(parts) + ".")
    return out


def render_small(rows: list[dict]) -> str:
    from caproute.causal.gain import method_order

    by = {(r["judge"], r["gold_n"], r["method"]): r for r in rows}
    judges = sorted({r["judge"] for r in rows})
    golds = sorted({r["gold_n"] for r in rows})
    methods = sorted({r["method"] for r in rows}, key=method_order)
    out = ["| judge | gold n | " + " | ".join(methods) + " |", "|---|---:|" + "---:|" * len(methods)]
    for j in judges:
        for g in golds:
            out.append(f"| {j} | {g} | " + " | ".join(
                f"{by[(j, g, m)]['efficiency_gain']:.1f} ({corrected_se(by[(j, g, m)]['runs_at_peak']):.1f})"
                if (j, g, m) in by else "–" for m in methods) + " |")
    pairs = (("meta-r", "pooled"), ("meta-dr", "pooled"), ("meta-r", "gold-only"))
    tests = {(j, g, a, b): paired(by[(j, g, a)]["runs_at_peak"], by[(j, g, b)]["runs_at_peak"])
             for j in judges for g in golds for a, b in pairs}
    for a, b in pairs:      # Holm per comparison over the (judge, gold n) cells
        holm_family([t for k, t in tests.items() if k[2:] == (a, b)])
    lines = ["", "Paired differences at each method's peak usage (Nadeau-Bengio corrected, Holm per column over "
             f"the {len(judges) * len(golds)} cells; runs where the first is ahead):", "",
             "| judge | gold n | " + " | ".join(f"{a} − {b}" for a, b in pairs) + " |", "|---|---:|---|---|---|"]
    for j in judges:
        for g in golds:
            lines.append(f"| {j} | {g} | " + " | ".join(fmt_p(tests[(j, g, a, b)]) for a, b in pairs) + " |")
    return "\n".join(out + lines) + "\n"


def render_overlap(ours: list[dict], paper: list[dict]) -> str:
    a = {(r["judge"], r["gold_n"], r["method"]): r for r in ours}
    keyed = [(r, a[(r["judge"], r["gold_n"], r["method"])]) for r in
             sorted(paper, key=lambda r: (r["judge"], r["gold_n"], r["method"])) if (r["judge"], r["gold_n"], r["method"]) in a]
    tests = [paired(o["runs_at_peak"], r["runs_at_peak"]) for r, o in keyed]
    holm_family(tests)
    out = [f"Holm over the {len(tests)} rows.", "",
           "| judge | gold n | learner | ours (forest effect) | code's rule | paired diff (ours − code) |",
           "|---|---:|---|---:|---:|---|"]
    for (r, o), t in zip(keyed, tests, strict=True):
        out.append(f"| {r['judge']} | {r['gold_n']} | {r['method']} | {o['efficiency_gain']:.1f} | "
                   f"{r['efficiency_gain']:.1f} | {fmt_p(t)} |")
    return "\n".join(out) + "\n"


def render(cx: dict) -> str:
    facts = crossover_facts(cx)
    table, paired_table = render_crossover(cx, facts)
    cfg = cx["config"]
    cov = cx.get("covariates")
    small = json.loads((OUT / "pandalm.json").read_text()) if (OUT / "pandalm.json").exists() else None
    overlap = (json.loads((OUT / "pandalm_overlap_paper.json").read_text())
               if (OUT / "pandalm_overlap_paper.json").exists() else None)
    oracle = ", ".join(f"{g}: {v:.1f}" for g, v in cx["oracle_peak"].items())
    ratio = TEST_FRACTION / (1 - TEST_FRACTION)
    floor = np.sqrt(ratio)
    runs = cfg["runs"]
    judges_txt = "\n".join(f"- `{j}`: {construction(j, cov)}." for j in cfg["judges"])
    parts = [f"""# Meta-Router on PandaLM: when does it beat pooling?

Generated by `python scripts/results_meta.py` ({cx['date']}, {cx['machine']}; the crossover study took
{cx['wall_seconds'] / 60:.0f} min wall with `--jobs {cfg['jobs']}` under load from other jobs). Method and
choices: [meta-router.md](meta-router.md). Data: PandaLM's human-annotated pairwise test set (999
comparisons, 170 instructions, 5 models, 10 pairs; Apache-2.0, Wang et al., ICLR 2024), read from
`../shared/data`. Gold = human majority. Preference labels (judges):

{judges_txt}

Both semi-synthetic judges (PROPOSED, not in the paper) start from PandaLM-7B's verdicts and
replace a seeded random half of them by "model_1 better" on one side of a query covariate's
median and "model_2 better" on the other (`caproute.causal.pandalm.side_bias_verdicts`, the same
draw for both): `pandalm7b-qbias` splits on the first principal axis of the instruction
embeddings — the space whose PCA-50 the learner receives, so the bias is visible to the learner
(**the method's best case**); `pandalm7b-lenbias` splits on the instruction's word count
(instruction + input), which the learner is not given (`length_bias_verdicts`). The visibility
figures above are cross-validated accuracies of predicting the covariate's side from PCA-50 of
the 170 instruction embeddings (`covariate_visibility`).

Per run: 30 % of the instructions (about 300 items) are held out; gold n training items carry the
human label, the other training items (about 700 − n) the judge's verdict. Features: MiniLM +
PCA-50 fitted on the training instructions + the signed model-pair indicator. Efficiency gain = sum
of human gold gains of the test items routed to their primary model minus random routing's, peak
over usage 0.2–0.8 of the mean curve (routing by the true gold label averages {oracle}).

## Crossover study: gold n = {', '.join(str(g) for g in cfg['gold_ns'])}

{runs} Monte Carlo runs per gold n (paired: run r uses seed 42 + r for every method, judge and
gold n; the gold rows of a smaller n are a subset of a larger n's), forests of {cfg['trees']} trees
(the official code uses 100/200; fewer for CPU time on 2 shared cores). Why {runs} runs: the runs
are resplits of the same 170 instructions, so the corrected se of a mean over J runs is
s·√(1/J + n_test/n_train) with n_test/n_train = {TEST_FRACTION}/{1 - TEST_FRACTION:.1f}; it cannot fall below
{floor:.2f}·s however many runs are made, and {runs} runs give {np.sqrt(1 / runs + ratio):.3f}·s against
{np.sqrt(1 / 200 + ratio):.3f}·s for the 200 runs of the paper's code. `meta-r (forest, default)` is the
R-learner with the paper's effect forest (the code's settings — depth 30, min split 5, min leaf 2,
sqrt features — with {cfg['trees']} trees instead of 200, and leaves that must carry ≥ 5 % of the (T − e)²
weight, part of our PROPOSED overlap rule, see meta-router.md); `meta-r:auto` chooses the effect model per fit by cross-fitted loss on the gold
rows among the forest, `ridge` (RidgeCV), `group` (one shrunk constant per model pair × 4 query
clusters) and `constant`; `meta-r:NAME` fixes one. All but the forest are PROPOSED options.

Peak efficiency gain (se, Nadeau-Bengio corrected); curves per judge and gold n in
[results-meta/crossover/](results-meta/crossover/) (mean curve with a 95 % band from the corrected se), e.g.:

| ![](results-meta/crossover/curves_pandalm7b_gold15.png) | ![](results-meta/crossover/curves_pandalm7b-lenbias_gold200.png) |
|---|---|

{table}
Paired differences of the per-run mean efficiency gain over usage 0.2–0.8: mean ± corrected se,
95 % CI (t quantile at df = runs − 1 = {runs - 1}), corrected t and p, Holm-adjusted p over the
{sum(len(v) for v in facts.values())} cells of each column ({len(OTHER_EFFECTS)} × that many for "best other effect
model"), runs where the first method is ahead. "beats"/"loses": Holm p < {ALPHA}; "n.s." otherwise.
"best other effect model" is picked after the fact (largest mean difference), so it is an
optimistic reference, not a method.

{paired_table}
### When the Meta-Router beats pooling

""" + answer_paragraph(facts, cov) + "\n\n" + precision_sentence(facts, cx) + "\n\n" + "\n".join(other_effect_sentences(facts) + choice_sentences(facts)) + "\n"]
    if small is not None:
        parts.append("""
## Small-gold study with every method (the paper's forests and forest effect model)

`caproute meta --data PAIRS """ + " ".join(SMALL_ARGS) + """` (20 runs, real judges only; rerun
with `--rerun-small`). Peak efficiency gain (se, Nadeau-Bengio corrected from the stored runs):

""" + render_small(small))
    if small is not None and overlap is not None:
        parts.append("""
## Overlap: our rule vs the released code's

Same splits, `caproute meta --data PAIRS """ + " ".join(OVERLAP_ARGS) + """` (rerun with
`--rerun-overlap`): regressor propensity clipped to [0.1, 0.9] / [0.05, 0.95], rows with
|T − e| ≤ 0.05 / e(1 − e) ≤ 0.05 masked, the code's effect forest (min_samples_leaf = 2).
Paired differences at each method's peak usage, Nadeau-Bengio corrected.

""" + render_overlap(small, overlap))
    return "".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--trees", type=int, default=10)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--reuse", action="store_true", help="re-render from the saved JSON files")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "caproute-results-meta",
                    help="per-gold-n results of the crossover study (an interrupted study resumes from "
                         "them; keyed by runs and trees only, so delete it after changing the code)")
    ap.add_argument("--rerun-small", action="store_true")
    ap.add_argument("--rerun-overlap", action="store_true")
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    OUT.mkdir(parents=True, exist_ok=True)
    from caproute.data.atomic import atomic_file, write_json

    cx_file = OUT / "crossover.json"
    if not a.reuse:
        if not DATA.exists():
            sys.exit(f"{DATA} not found (../shared/data is needed)")
        if a.rerun_small:
            cli_study(SMALL_ARGS)
        if a.rerun_overlap:
            cli_study(OVERLAP_ARGS)
        write_json(run_crossover(a.runs, a.trees, a.jobs, a.cache), cx_file)
    cx = json.loads(cx_file.read_text())
    with atomic_file(PAGE) as tmp:
        tmp.write_text(render(cx))
    print(f"wrote {PAGE}")


if __name__ == "__main__":
    main()
