"""Render Meta-Router experiment results: JSON rows, a markdown table, curve plots (Agg)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from caproute.causal.experiment import MetaResults
from caproute.causal.gain import method_order

STYLE = {  # colour, line style (close to the paper's figure)
    "meta-r": ("#E74C3C", "-"), "meta-dr": ("#3498DB", "-"), "gold-only": ("#9B59B6", "--"),
    "pooled": ("#2ECC71", "--"), "all-gold": ("#F39C12", "-."), "pref-only": ("#808080", ":"),
    "mean-shift": ("#16A085", ":"),
}


def markdown_table(rows: list[dict]) -> str:
    """One line per (judge, gold_n, method): peak efficiency gain, its std across runs, its se
    (``efficiency_gain_se``: Nadeau-Bengio corrected for overlapping resplits), usage."""
    lines = ["| judge | gold_n | method | efficiency gain (peak) | std | se | peak usage | per test query | runs |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: (r["judge"], r["gold_n"], method_order(r["method"]))):
        lines.append(f"| {r['judge']} | {r['gold_n']} | {r['method']} | {r['efficiency_gain']:.2f} | "
                     f"{r['efficiency_gain_std']:.2f} | {r['efficiency_gain_se']:.2f} | {r['peak_usage']:.2f} | "
                     f"{r['efficiency_gain_per_query']:.4f} | {r['runs']} |")
    return "\n".join(lines) + "\n"


def plot_curves(results: MetaResults, judge: str, gold_n: int, out: str | os.PathLike) -> Path:
    """Mean efficiency-gain curve of each method with a 95% band (mean +- 1.96 se, the se
    Nadeau-Bengio corrected for overlapping resplits)."""
    from caproute.causal.metrics import summarize_curves
    from caproute.core.figures import pyplot, save_figure

    fig, ax = pyplot().subplots(figsize=(7, 5.5))
    grid = results.grid
    methods = sorted({m for (j, g, m) in results.curves if (j, g) == (judge, gold_n)}, key=method_order)
    for method in methods:
        key = (judge, gold_n, method)
        if key not in results.curves:
            continue
        s = summarize_curves(results.curves[key], grid, results.config.test_fraction)
        color, ls = STYLE.get(method, STYLE.get(method.partition(":")[0], ("black", "-")))
        if ":" in method:
            ls = {"forest": "-.", "ridge": (0, (5, 1)), "group": ":", "constant": (0, (1, 3)),
                  "auto": (0, (8, 2, 1, 2))}.get(
                method.partition(":")[2], "-.")
        ax.plot(grid, s["mean"], color=color, linestyle=ls, linewidth=2, label=f"{method} ({s['peak']:.1f})")
        ax.fill_between(grid, s["mean"] - 1.96 * s["se"], s["mean"] + 1.96 * s["se"], color=color, alpha=0.12)
    ax.axhline(0, color="gray", linestyle=":", linewidth=1)
    runs = next(iter(results.curves.values())).shape[0]
    ax.set_xlabel("primary-model usage ratio (PMUR)")
    ax.set_ylabel("efficiency gain over random (sum of gold gains)")
    ax.set_title(f"{results.dataset}: judge {judge}, gold_n = {gold_n}, {runs} runs")
    ax.set_xlim(grid[0], grid[-1])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="best", title="method (peak)", title_fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out, dpi=110)


def write_report(results: MetaResults, out_dir: str | os.PathLike) -> list[Path]:
    """Write curves_<judge>_gold<N>.png (judge name reduced to [A-Za-z0-9_.-]), table.md and
    diagnostics.json into ``out_dir``."""
    from caproute.core.atomic import atomic_file, write_json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = results.rows()
    files = []
    for judge, gold_n in sorted({(r["judge"], r["gold_n"]) for r in rows}):
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", judge).strip("_")
        files.append(plot_curves(results, judge, gold_n, out_dir / f"curves_{safe}_gold{gold_n}.png"))
    cfg = results.config
    header = (f"# Meta-Router efficiency gain: {results.dataset}\n\n"
              f"{next(iter(results.curves.values())).shape[0]} Monte Carlo runs (seeds {cfg.seed} + run), "
              f"test fraction {cfg.test_fraction} of queries, alignment `{cfg.align}`, gamma {cfg.gamma}, "
              f"PCA {cfg.pca_dim}, overlap `{cfg.overlap}`, effect model `{cfg.effect}`"
              f"{'' if cfg.effect == 'forest' else ' (PROPOSED, not the paper)'}, trees "
              f"{cfg.trees or 'the code default (100/200)'}. Efficiency gain = sum of gold gains routed to the "
              f"primary model minus random routing's, peak over usage 0.2-0.8 of the mean curve over runs; "
              f"se = Nadeau-Bengio corrected se of that mean (runs are overlapping resplits: "
              f"std * sqrt(1/runs + n_test/n_train)).\n\n")
    with atomic_file(out_dir / "table.md") as tmp:
        tmp.write_text(header + markdown_table(rows))
    files.append(out_dir / "table.md")
    diag = {"dataset": results.dataset, "config": {k: (list(v) if isinstance(v, tuple) else v)
                                                    for k, v in cfg.__dict__.items()},
            "label_counts": results.counts,
            "oracle_peak_mean": {str(g): float(np.mean(v)) for g, v in results.oracle_peak.items()},
            "per_judge_gold_n": {f"{j}/gold{g}": d for (j, g), d in results.diagnostics.items()}}
    write_json(diag, out_dir / "diagnostics.json")
    files.append(out_dir / "diagnostics.json")
    return files
