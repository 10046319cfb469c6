"""Render a :class:`~caproute.evaluate.bench.BenchResult`: markdown tables shaped like the
paper's Table 1 (routers x views, single-shot vs DARS) and Table 2 (ablations), CSVs, PNG figures
and one self-contained HTML page (figures inlined). The folder is written next to the target and
renamed into place, so a failure never leaves half a report."""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from caproute.evaluate import plots
from caproute.evaluate.bench import ABLATION_LABELS, ABLATION_ORDER, BenchConfig, BenchResult

VIEW_SYMBOL = {"rewrite": "U_rew", "decode": "U_dec"}
_DEFAULT_RUNS = BenchConfig.__dataclass_fields__["single_shot_runs"].default  # 100
FIGURES = {
    "fig2c_router_variance.png": "Figure 2(c): router variance under single-shot resampling",
    "fig4a_kxr.png": "Figure 4(a): sample efficiency over K x R training protocols",
    "fig4b_pareto.png": "Figure 4(b): cost-quality frontier over lambda",
    "fig4c_beta.png": "Figure 4(c): beta sensitivity",
    "fig_two_model_curves.png": "Two-model pool: quality vs strong-model calls (APGR / CPT)",
}


def _f(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "-"
    return f"{x:.{digits}f}"


def _pm(mean, std, n, digits: int = 3) -> str:
    return _f(mean, digits) if n <= 1 else f"{_f(mean, digits)} ± {_f(std, digits)}"


def table1(res: BenchResult, value: str = "utility") -> pd.DataFrame:
    """Routers x (supervision, view): single-shot mean ± std and DARS, plus Δ = DARS - single mean;
    then the best-fixed and oracle rows. ``value``: utility or quality."""
    rows = res.rows
    out = []
    routers = [r for r in dict.fromkeys(rows["router"]) if r not in ("best_fixed", "oracle")]
    sym = {v: (VIEW_SYMBOL.get(v, v) if value == "utility" else f"Q_{v[:3]}") for v in res.views}
    for router in routers:
        line = {"Router": router}
        got = {}
        for sup, label in (("single", "Single-shot"), ("dars", "DARS")):
            for view in res.views:
                r = rows[(rows["router"] == router) & (rows["supervision"] == sup) & (rows["view"] == view)]
                if len(r):
                    r = r.iloc[0]
                    got[(sup, view)] = r[f"{value}_mean"]
                    line[f"{label} {sym[view]}"] = _pm(r[f"{value}_mean"], r[f"{value}_std"], r["n_runs"])
        for view in res.views:
            if ("single", view) in got and ("dars", view) in got:
                line[f"Δ {sym[view]}"] = f"{got[('dars', view)] - got[('single', view)]:+.3f}"
        n = rows[(rows["router"] == router) & (rows["supervision"] == "single")]["n_runs"]
        line["single-shot runs"] = int(n.iloc[0]) if len(n) else ""
        out.append(line)
    for ref, label in (("best_fixed", "best fixed"), ("oracle", "oracle")):
        line = {"Router": label}
        for view in res.views:
            r = rows[(rows["router"] == ref) & (rows["view"] == view)].iloc[0]
            cell = _f(r[f"{value}_mean"])
            if ref == "best_fixed":
                cell += f" ({r['model']})"
            line[f"Single-shot {sym[view]}"] = cell
            line[f"DARS {sym[view]}"] = cell
        line["single-shot runs"] = ""
        out.append(line)
    return pd.DataFrame(out).astype(object).fillna("")


def console_table1(res: BenchResult) -> pd.DataFrame:
    """Table 1 in the paper's compact style for terminals ('.530 ±.043')."""
    rows = res.rows
    out = []

    def short(x: float) -> str:
        t = f"{x:.3f}"
        return t[1:] if t.startswith("0.") else t.replace("-0.", "-.")

    for router in [r for r in dict.fromkeys(rows["router"])]:
        line = {"Router": "best fixed" if router == "best_fixed" else router}
        vals = {}
        for sup, label in (("single", "single"), ("dars", "DARS")):
            for view in res.views:
                sel = rows[(rows["router"] == router) & (rows["view"] == view) &
                           ((rows["supervision"] == sup) if router not in ("best_fixed", "oracle") else True)]
                if not len(sel):
                    continue
                r = sel.iloc[0]
                vals[(sup, view)] = r["utility_mean"]
                cell = short(r["utility_mean"])
                if r["n_runs"] > 1:
                    cell += f" ±{short(r['utility_std'])}"
                line[f"{label} {VIEW_SYMBOL.get(view, view)}"] = cell
        for view in res.views:
            if router not in ("best_fixed", "oracle") and ("single", view) in vals and ("dars", view) in vals:
                d = vals[("dars", view)] - vals[("single", view)]
                line[f"Δ {VIEW_SYMBOL.get(view, view)}"] = ("+" if d >= 0 else "-") + short(abs(d))
        out.append(line)
    return pd.DataFrame(out).astype(object).fillna("")


def table2(res: BenchResult) -> pd.DataFrame:
    """Ablation variants x routers, each cell 'U_rew / U_dec' (views present), and the average."""
    a = res.ablation
    if a.empty:
        return pd.DataFrame()
    out = []
    routers = list(dict.fromkeys(a["router"]))
    for variant in ABLATION_ORDER:
        line = {"Variant": ABLATION_LABELS[variant]}
        vals = []
        for router in routers:
            parts = []
            for view in res.views:
                r = a[(a["router"] == router) & (a["variant"] == variant) & (a["view"] == view)]
                if len(r):
                    parts.append(_f(r["utility_mean"].iloc[0]))
                    vals.append(float(r["utility_mean"].iloc[0]))
            line[router] = " / ".join(parts)
        line["Avg"] = _f(float(np.mean(vals))) if vals else "-"
        out.append(line)
    return pd.DataFrame(out)


def kxr_table(res: BenchResult) -> pd.DataFrame:
    """One row per (router, view), one column per K x R protocol (ordered by observations per
    pair): the table stays as wide as the protocol list however many routers ran the study."""
    k = res.kxr
    if k.empty:
        return pd.DataFrame()
    protocols = sorted({(int(a), int(b)) for a, b in zip(k["k"], k["r"], strict=True)},
                       key=lambda p: (p[0] * p[1], p[0]))
    out = []
    for line, g in _router_view_rows(k, res.views):
        for kk, rr in protocols:
            row = g[(g["k"] == kk) & (g["r"] == rr)]
            line[f"{kk} x {rr}"] = (_pm(row["utility_mean"].iloc[0], row["utility_std"].iloc[0],
                                        row["n_subsamples"].iloc[0]) if len(row) else "-")
        out.append(line)
    return pd.DataFrame(out)


def _router_view_rows(df: pd.DataFrame, views: list[str]):
    """The rows of a per-(router, view) table: routers in order of first appearance, then views;
    yields a new line ``{"Router", "View"}`` and the (router, view) rows of ``df`` (none: skipped)."""
    for router in dict.fromkeys(df["router"]):
        for view in views:
            g = df[(df["router"] == router) & (df["view"] == view)]
            if not g.empty:
                yield {"Router": router, "View": VIEW_SYMBOL.get(view, view)}, g


def beta_table(res: BenchResult) -> pd.DataFrame:
    """One row per (router, view), one column per beta."""
    b = res.beta
    if b.empty:
        return pd.DataFrame()
    betas = sorted(set(b["beta"].astype(float)))
    out = []
    for line, g in _router_view_rows(b, res.views):
        for beta in betas:
            row = g[g["beta"].astype(float) == beta]
            line[f"beta = {beta:g}"] = _f(float(row["utility"].mean())) if len(row) else "-"
        out.append(line)
    return pd.DataFrame(out)


def pair_table(res: BenchResult) -> pd.DataFrame:
    p = res.pair
    if p.empty:
        return pd.DataFrame()
    out = []
    for _, r in p.iterrows():
        out.append({"Router": r["router"], "Supervision": "DARS" if r["supervision"] == "dars" else "single-shot",
                    "View": r["view"], "APGR": _pm(r["apgr_mean"], r["apgr_std"], r["n_runs"]),
                    "CPT(20%)": _f(r["cpt20_mean"], 1) + "%", "CPT(50%)": _f(r["cpt50_mean"], 1) + "%",
                    "CPT(80%)": _f(r["cpt80_mean"], 1) + "%", "AUC": _f(r["auc_mean"])})
    return pd.DataFrame(out)


def variance_table(res: BenchResult) -> pd.DataFrame:
    v = res.variance
    if v.empty:
        return pd.DataFrame()
    return pd.DataFrame({
        "Router": v["router"], "View": v["view"], "single-shot mean": v["single_mean"].map(_f),
        "std": v["single_std"].map(_f), "min": v["single_min"].map(_f), "max": v["single_max"].map(_f),
        "DARS": [_pm(m, d, n) for m, d, n in zip(v["dars"], v.get("dars_std", 0.0 * v["dars"]),
                                                  v.get("n_dars", 1 + 0 * v["n_runs"]), strict=True)],
        "share of single-shot runs below DARS": v["share_single_below_dars"].map(
            lambda x: f"{100 * x:.0f}%"), "runs": v["n_runs"]})


def _g(x: float) -> str:
    return f"{x:.3g}" if np.isfinite(x) else "-"


def significance_table(res: BenchResult) -> pd.DataFrame:
    s = getattr(res, "significance", pd.DataFrame())
    if s is None or s.empty:
        return pd.DataFrame()
    rows = res.rows.set_index(["router", "supervision", "view"])

    def instab(router, sup, view):
        key = (router, sup, view)
        if "chosen_decoding_instability_mean" not in rows.columns or key not in rows.index:
            return "-"
        return _f(rows.loc[key, "chosen_decoding_instability_mean"])

    return pd.DataFrame({
        "Router": s["router"], "View": s["view"],
        "single-shot": [_pm(m, d, n) + f" (n={n})" for m, d, n in zip(s["single_mean"], s["single_std"], s["n_single"], strict=True)],
        "DARS": [_pm(m, d, n) + f" (n={n})" for m, d, n in zip(s["dars_mean"], s["dars_std"], s["n_dars"], strict=True)],
        "Δ": s["diff"].map(lambda x: f"{x:+.3f}"), "test": s["test"],
        "p (Holm p)": [f"{_g(p)} ({_g(h)})" for p, h in zip(
            s["p_value"], s["p_holm"] if "p_holm" in s else s["p_value"] * np.nan, strict=True)],
        "95% CI of Δ": [f"[{lo:+.3f}, {hi:+.3f}]" if np.isfinite(lo) and np.isfinite(hi) else "-"
                        for lo, hi in zip(s.get("ci_low", s["diff"] * np.nan), s.get("ci_high", s["diff"] * np.nan),
                                          strict=True)],
        # the verdict's words only: its p, Holm p and CI are the columns before it
        "verdict": s["verdict"].astype(str).str.split(" (", n=1, regex=False).str[0].replace(
            "no significant difference", "not significant"),
        "instability single / DARS": [f"{instab(r, 'single', v)} / {instab(r, 'dars', v)}"
                                      for r, v in zip(s["router"], s["view"], strict=True)]})


def timing_table(res: BenchResult) -> pd.DataFrame:
    t = res.timing
    if t.empty:
        return t
    sup = t["supervision_s"] if "supervision_s" in t.columns else pd.Series(np.nan, index=t.index)
    return pd.DataFrame({"Router": t["router"], "Study": t["study"],
                         "cells": t["cells"] if "cells" in t.columns else t["trainings"], "trainings": t["trainings"],
                         "supervision s (sum)": sup.map(lambda x: f"{x:.1f}" if np.isfinite(x) else "-"),
                         "router fit s (sum)": t["fit_s"].map(lambda x: f"{x:.1f}"),
                         "cell s (sum)": t["cell_s"].map(lambda x: f"{x:.1f}"),
                         "median cell s": t["median_cell_s"].map(lambda x: f"{x:.3f}")})


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub markdown table (pipes in cells escaped)."""
    if df.empty:
        return "_(not run)_\n"
    cols = [str(c) for c in df.columns]

    def cell(x) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in cols) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(cols))) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(cell(x) for x in row) + " |")
    return "\n".join(lines) + "\n"


def sections(res: BenchResult) -> list[tuple[str, str, str, pd.DataFrame]]:
    """(slug, title, explanation, table) of every report section, in order."""
    c = res.config
    n = c.single_shot_runs
    views = ", ".join(f"{v} ({VIEW_SYMBOL.get(v, v)})" for v in res.views)
    out = [
        ("table1_utility", "Table 1: test utility, single-shot vs DARS",
         f"Mean over test queries of the chosen model's mean u = q - {c.lam} c_norm over the view's "
         f"observations; views: {views}. Single-shot: mean ± sample std over the single-shot training sets "
         f"(run r drawn with seed {c.seed} + r; {n} sets in this run, the command's default is "
         f"{_DEFAULT_RUNS}; per-router counts in the last column), routed with beta = 0; "
         + (f"DARS: mean ± sample std over {c.dars_runs} trainings (router seeds {c.seed} + r; one training "
            "for a router without a seed)" if getattr(c, "dars_runs", 1) > 1 else "DARS: one training")
         + f", beta = {c.beta}. "
         "Best fixed: per view, the model with the best mean test utility; oracle: per query the best "
         "model of the view.", table1(res, "utility")),
        ("table_significance", "Single-shot vs DARS: significance",
         "Per router and view, the DARS runs against the single-shot runs: two-sided Welch t-test (unequal "
         "variances) when both sides have at least two runs, a one-sample t-test against the other side's "
         "value when one side has a single run (a router without a seed trains deterministically), each at its "
         "own degrees of freedom; the 95% interval of Δ next to it; the verdict at alpha = 0.05 after Holm's "
         "correction over all (router, view) cells tested together. Instability: mean over test queries of the "
         "sample std of the chosen model's decode-view scores (the reference's "
         "chosen_decoding_instability_mean), averaged over the runs.",
         significance_table(res)),
        ("table1b_quality", "Table 1b: mean quality of the chosen model",
         "The same routings scored by quality alone (the reference code's rewrite/decoding score).",
         table1(res, "quality")),
        ("table2_ablation", "Table 2: supervision ablation (spec §A.8)",
         "Test utility per variant and router, 'U_rew / U_dec' (views present); single-shot is the mean "
         "over the single-shot runs. Input-only: first decode of each rewrite; Output-only: decodes of the "
         "original query (else of the first rewrite); w/o Risk: beta = 0; w/ Rew./Dec. Risk: sigma = std "
         "over rewrites of the per-rewrite mean / mean over rewrites of the within-rewrite std.",
         table2(res)),
        ("table_kxr", "Sample efficiency over K x R protocols (Figure 4(a))",
         f"DARS trained on K rewrites x R decodes per pair subsampled from the training grid (mean ± std "
         f"over {c.kxr_subsamples} subsamples; columns ordered by observations per pair K·R; protocols "
         f"clamped to the data's grid {tuple(res.meta.get('grid_shape', ()))}).", kxr_table(res)),
        ("table_beta", "Beta sensitivity (Figure 4(c))", "DARS trained and routed with risk weight beta.", beta_table(res)),
        ("table_two_model", "Two-model pool: APGR / CPT / AUC (RouteLLM definitions)",
         f"Pool ({res.meta.get('pair', ['?', '?'])[0]} strong, {res.meta.get('pair', ['?', '?'])[1]} weak); "
         "the router's preference for the strong model is its predicted utility gap; performance is the "
         f"view's mean quality; {c.n_thresholds} quantile thresholds. CPT(x%): % of strong calls to "
         "recover x% of the weak-to-strong gap.", pair_table(res)),
        ("table_router_variance", "Router variance under single-shot resampling (Figure 2(c))",
         "Spread of the test utility over the single-shot trainings of each router, against DARS.",
         variance_table(res)),
        ("table_timing", "Timing", "Wall-clock seconds inside the grid cells, summed over the trainings (each cell "
         f"runs single-threaded; {c.jobs} cells at a time); on a shared machine these include waiting for a core.",
         timing_table(res)),
    ]
    return out


def _coverage_text(cov: dict | None) -> str:
    """', coverage 80.0% of the (query, model) pairs (queries per model: a 5, b 4)' for a partial grid."""
    if not cov or cov.get("observed_pairs") == cov.get("total_pairs"):
        return ""
    per_model = ", ".join(f"{k} {v}" for k, v in cov["per_model"].items())
    by_query = ", ".join(f"{k}: {v}" for k, v in cov["queries_by_models_observed"].items() if v)
    return (f", coverage {cov['observed_pairs']}/{cov['total_pairs']} (query, model) pairs "
            f"({cov['fraction']:.1%}; queries per model: {per_model}; queries by models observed: {by_query}; "
            "unobserved pairs are masked out of training)")


def header_lines(res: BenchResult) -> list[str]:
    m, c = res.meta, res.config
    views = m.get("views", {})
    vtxt = "; ".join(f"{k}: {v['n_queries']} queries, {v['obs_per_pair']:.1f} obs/pair"
                     + (f", {v['dropped']} dropped (missing models)" if v.get("dropped") else "")
                     for k, v in views.items())
    lines = [
        f"- dataset **{res.dataset}** ({m.get('source', '?')}); models: {', '.join(res.models)}",
        f"- training: {m.get('n_train_queries')} queries, {m.get('n_train_observations')} observations "
        f"(grid K x R = {tuple(m.get('grid_shape', ()))})"
        + (f", {m['train_queries_dropped']} training queries dropped (missing models)"
           if m.get("train_queries_dropped") else "")
        + _coverage_text(m.get("train_coverage"))
        + f"; test: {m.get('n_test_queries')} queries ({vtxt})",
        f"- features: {c.features} ({m.get('encoder', '?')}) of the original query text; lambda = {c.lam}, "
        f"beta = {c.beta}, seed = {c.seed}, single-shot runs = {c.single_shot_runs}"
        + (f" ({', '.join(f'{k}: {v}' for k, v in c.runs_by_router.items())})" if c.runs_by_router else ""),
    ]
    if "resplit" in m:
        r = m["resplit"]
        lines.append(f"- re-split: {r['test_fraction']:.0%} of each dataset's queries to test (seed {r['seed']}); "
                     f"per (query, model) pair a uniformly random {r['test_decodes']} observations are the test "
                     "part and the rest the training part (for k correct of n: an exact hypergeometric draw)")
    if "pooled" in m:
        lines.append(f"- pooled datasets: {', '.join(m['pooled'])} (costs normalised per dataset on its "
                     "training rows)")
    if m.get("grid_shape") and m["grid_shape"][0] == 1:
        lines.append("- the training data has one prompt per query (no rewrites): the rewrite-based ablations "
                     "(Input-only, w/ Rew. Risk) and the K axis of K x R are degenerate")
    secs = m.get("seconds", {})
    if secs:
        lines.append(f"- {m.get('n_cells')} trainings; wall time {secs.get('total', 0):.0f} s "
                     f"(features {secs.get('features', 0):.1f} s, grid {secs.get('grid', 0):.0f} s, "
                     f"jobs = {c.jobs}, engine = {c.engine})")
    return lines


def render_markdown(res: BenchResult, image_prefix: str = "", title: str | None = None,
                    level: int = 1) -> str:
    h = "#" * level
    out = [f"{h} {title or f'caproute bench: {res.dataset}'}", "", *header_lines(res), ""]
    for _, name, text, df in sections(res):
        out += [f"{h}# {name}", "", text, "", to_markdown(df)]
    out += [f"{h}# Figures", ""]
    for f, cap in FIGURES.items():
        out += [f"![{cap}]({image_prefix}{f})", "", f"*{cap}*", ""]
    return "\n".join(out)


HTML_MAX_COLUMNS = 10


def _html_table(df: pd.DataFrame) -> str:
    """An HTML table; one with more than ``HTML_MAX_COLUMNS`` columns (e.g. Table 2 with one column
    per router) is shown transposed, so it fits the page (the CSV and markdown keep its shape)."""
    note = ""
    if df.shape[1] > HTML_MAX_COLUMNS and df.shape[0] < df.shape[1]:
        first = str(df.columns[0])
        df = df.set_index(first).T.reset_index().rename(columns={"index": ""})
        df.columns.name = None
        note = f"<p class='note'>(transposed to fit the page: one row per column of the CSV, one column per {html.escape(first)})</p>"
    df = df.copy()
    df.columns = [str(c) for c in df.columns]
    return note + "<div class='tbl'>" + df.to_html(index=False, escape=True, border=0) + "</div>"


def render_html(res: BenchResult, figures: dict[str, bytes], title: str | None = None) -> str:
    title = title or f"caproute bench: {res.dataset}"
    # Laid out for a 1366 px laptop screen without horizontal scrolling (tests/test_report_browser.py):
    # the page is at most 1200 px wide, cells never wrap (a "0.065 ± 0.009" stays on one line),
    # headers may wrap, tables wider than HTML_MAX_COLUMNS columns are shown transposed, figures
    # (at most 1155 px wide) shrink with the page.
    css = ("*{box-sizing:border-box}"
           "body{font-family:system-ui,sans-serif;max-width:1200px;margin:1.5em auto;padding:0 1em;color:#222;"
           "line-height:1.4}"
           "h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em}"
           ".tbl{max-width:100%;overflow-x:auto}"
           "table{border-collapse:collapse;margin:.4em 0 1.2em;font-size:12.5px}"
           "th,td{border:1px solid #ccc;padding:2px 7px;text-align:right}"
           "td{white-space:nowrap;font-variant-numeric:tabular-nums}"
           "th{background:#f3f3f3;font-weight:600;max-width:11em}"
           "td:first-child,th:first-child{text-align:left}"
           "figure{margin:1em 0}img{max-width:100%;height:auto;display:block}"
           "figcaption{color:#555;font-size:.9em}p.note{color:#555;max-width:100%}")
    out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'>"
           f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{html.escape(title)}</title>"
           f"<style>{css}</style></head><body><h1>{html.escape(title)}</h1><ul>"]
    for line in header_lines(res):
        out.append(f"<li>{html.escape(line[2:]).replace('**', '')}</li>")
    out.append("</ul>")
    for _, name, text, df in sections(res):
        out.append(f"<h2>{html.escape(name)}</h2><p class='note'>{html.escape(text)}</p>")
        out.append(_html_table(df) if not df.empty else "<p><i>(not run)</i></p>")
    out.append("<h2>Figures</h2>")
    for f, cap in FIGURES.items():
        if f in figures:
            b64 = base64.b64encode(figures[f]).decode("ascii")
            out.append(f"<figure><img alt='{html.escape(cap)}' src='data:image/png;base64,{b64}'>"
                       f"<figcaption>{html.escape(cap)}</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out)


def write_figures(res: BenchResult, out: Path) -> list[str]:
    title = f"{res.dataset}, lambda = {res.config.lam}"
    written = []
    plots.plot_router_variance(res.runs, res.reference, res.views, out / "fig2c_router_variance.png", title)
    written.append("fig2c_router_variance.png")
    if not res.kxr.empty:
        single = res.rows[res.rows["supervision"] == "single"]
        plots.plot_kxr(res.kxr, single, res.views, out / "fig4a_kxr.png", title)
        written.append("fig4a_kxr.png")
    if not res.pareto.empty:
        plots.plot_pareto(res.pareto, res.views, out / "fig4b_pareto.png", res.dataset)
        written.append("fig4b_pareto.png")
    if not res.beta.empty:
        plots.plot_beta(res.beta, res.views, out / "fig4c_beta.png", title)
        written.append("fig4c_beta.png")
    if not res.pair_curves.empty:
        plots.plot_pair_curves(res.pair_curves, res.pair, res.views, out / "fig_two_model_curves.png", title)
        written.append("fig_two_model_curves.png")
    return written


CSV_TABLES = ("rows", "runs", "ablation", "kxr", "beta", "pareto", "pair", "pair_curves", "variance", "timing",
              "significance", "predictions")


def write_report(res: BenchResult, out: str | os.PathLike, title: str | None = None) -> Path:
    """Write ``report.md``, ``report.html``, ``bench.json``, CSVs and PNGs into ``out``.

    Built in a temporary sibling and renamed into place; an existing folder is replaced only if it
    is empty or an earlier report (it holds ``report.md``).
    """
    from caproute.errors import ConfigError

    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "report.md").exists())):
        raise ConfigError(f"{out}: exists and is not a caproute report folder; choose another --report")
    from caproute.core.atomic import staged_dir

    with staged_dir(out) as tmp:
        for name in CSV_TABLES:
            getattr(res, name).to_csv(tmp / f"{name}.csv", index=False)
        for slug, _, _, df in sections(res):
            if not df.empty:
                df.to_csv(tmp / f"{slug}.csv", index=False)
        figs = write_figures(res, tmp)
        (tmp / "report.md").write_text(render_markdown(res, title=title))
        (tmp / "report.html").write_text(render_html(res, {f: (tmp / f).read_bytes() for f in figs}, title))
        (tmp / "bench.json").write_text(json.dumps(
            {"dataset": res.dataset, "models": list(res.models), "views": res.views,
             "config": res.config.to_dict(), "meta": res.meta, "rows": res.json_rows()},
            indent=2, default=_json) + "\n")
    return out


def read_result(folder: str | os.PathLike) -> BenchResult:
    """Rebuild a :class:`BenchResult` from a report folder (its CSVs and ``bench.json``), e.g. to
    re-render the report or compose a results page without running the grid again."""
    from caproute.evaluate.bench import BenchConfig

    folder = Path(folder)
    meta = json.loads((folder / "bench.json").read_text())
    cfg = dict(meta["config"])
    for key in ("routers", "studies", "betas", "lambdas"):
        cfg[key] = tuple(cfg[key])
    cfg["study_routers"] = tuple(cfg["study_routers"]) if cfg.get("study_routers") else None
    cfg["pair"] = tuple(cfg["pair"]) if cfg.get("pair") else None
    cfg["kxr_protocols"] = tuple(tuple(p) for p in cfg["kxr_protocols"])
    cfg.setdefault("dars_runs", 1)      # reports written before --dars-runs trained DARS once
    config = BenchConfig(**cfg)

    def csv(name: str) -> pd.DataFrame:
        f = folder / f"{name}.csv"
        try:
            df = pd.read_csv(f)
        except (FileNotFoundError, pd.errors.EmptyDataError):
            return pd.DataFrame()
        return df.astype({"supervision": object}) if "supervision" in df.columns else df

    rows = csv("rows")
    rows["supervision"] = rows["supervision"].where(rows["supervision"].notna(), None)
    return BenchResult(dataset=meta["dataset"], models=tuple(meta["models"]), views=list(meta["views"]),
                       config=config, rows=rows, runs=csv("runs"),
                       reference=rows[rows["router"].isin(["best_fixed", "oracle"])].reset_index(drop=True),
                       ablation=csv("ablation"), kxr=csv("kxr"), beta=csv("beta"), pareto=csv("pareto"),
                       pair=csv("pair"), pair_curves=csv("pair_curves"), variance=csv("variance"),
                       timing=csv("timing"), meta=meta["meta"], significance=csv("significance"),
                       predictions=csv("predictions"))


def _json(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return None if not np.isfinite(o) else float(o)
    if isinstance(o, (tuple, np.ndarray)):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
