"""Rendering of duel results: regret curves (PNG, mean ± std over seeds), a Markdown table at T,
JSON rows and the run's metadata. Rendering only; the numbers come from :class:`DuelResult`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from caproute.bandits.experiment import DuelResult
from caproute.core.atomic import atomic_file, write_json

PLOT_ORDER = ("fgts-cdb", "maxinp", "eps-greedy", "dars-knn", "best-fixed", "uniform")


def _sorted_keys(curves: dict) -> list:
    return sorted(curves, key=lambda k: (PLOT_ORDER.index(k[0]) if k[0] in PLOT_ORDER else 99, k[1]))


HEADLINE = "ccft-excel-perf-cost"
REFERENCES = ("best-fixed", "dars-knn", "uniform")
POLICY_COLORS = {"fgts-cdb": "tab:blue", "maxinp": "tab:orange", "eps-greedy": "tab:green",
                 "dars-knn": "tab:purple", "best-fixed": "tab:gray", "uniform": "tab:red"}


def headline_embeddings(embeddings) -> str:
    """The embeddings the policy comparison is drawn for: ccft-excel-perf-cost when run (the
    paper's most effective variant and the CLI default), else the first one given."""
    return HEADLINE if HEADLINE in embeddings else embeddings[0]


def _band(ax, cum, label, color, style="-"):
    t = np.arange(1, cum.shape[1] + 1)
    mean, sd = cum.mean(axis=0), cum.std(axis=0)
    ax.plot(t, mean, style, color=color, label=label, lw=1.5)
    ax.fill_between(t, mean - sd, mean + sd, color=color, alpha=0.18, lw=0)


def plot_regret(result: DuelResult, out: str | Path, kind: str = "average") -> Path:
    """Cumulative regret, mean line and ± 1 std band over seeds. Left: every policy on the headline
    embeddings (and the references); right (when several embeddings ran): FGTS.CDB per embeddings."""
    from caproute.core.figures import pyplot, save_figure

    plt = pyplot()

    curves = result.curves(kind)
    embeddings = list(result.spec.embeddings)
    head = headline_embeddings(embeddings)
    head_enc = head.split("-")[0]
    fgts = [k for k in curves if k[0] == "fgts-cdb"]
    two = len(fgts) > 1
    fig, axes = plt.subplots(1, 2 if two else 1, figsize=(13 if two else 8, 5), dpi=120, squeeze=False)
    ax = axes[0, 0]
    for key in _sorted_keys(curves):
        p, e = key
        if e not in (head, "none", head_enc):
            continue
        label = p if e == "none" else f"{p} [{e}]"
        _band(ax, curves[key], label, POLICY_COLORS.get(p, "black"), "--" if p in REFERENCES else "-")
    ax.set_title(f"policies ({head})")
    if two:
        ax2 = axes[0, 1]
        cmap = plt.get_cmap("tab10")
        for n, key in enumerate(sorted(fgts, key=lambda k: embeddings.index(k[1]))):
            _band(ax2, curves[key], f"fgts-cdb [{key[1]}]", cmap(n % 10))
        for ref in ("best-fixed", "uniform"):
            if (ref, "none") in curves:
                _band(ax2, curves[(ref, "none")], ref, POLICY_COLORS[ref], "--")
        ax2.set_title(f"{result.spec.method()} by embeddings", fontsize=9)
    seeds = next(iter(curves.values())).shape[0]
    for a in axes[0]:
        a.set_xlabel("round t")
        a.set_ylabel(f"cumulative {'average' if kind == 'average' else 'weak'} regret")
        a.grid(alpha=0.3)
        a.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"{result.dataset}: {kind} regret, mean ± std over {seeds} seeds; fgts-cdb = {result.spec.method()}",
                 fontsize=10)
    fig.tight_layout()
    return save_figure(fig, out)


def markdown_table(rows: list[dict]) -> str:
    """Cumulative regret at T, weak regret, per-round regret over the last 20 % of rounds, and for
    learners their point estimate as a single-model router (late rounds / end of run, per round).
    The policy column names what ran (``method``: "FGTS.CDB (SGLD, η 0.25, μ 1/√T)", ...)."""
    lines = ["| policy | embeddings | T | regret (mean ± std) | weak regret (mean ± std) | per round, last 20 % "
             "| greedy router, last 20 % | final router | s / seed |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]

    def opt(r, key):
        return f"{r[key + '_mean']:.3f} ± {r[key + '_std']:.3f}" if key + "_mean" in r else "–"

    for r in rows:
        lines.append(f"| {r.get('method', r['policy'])} | {r['embeddings']} | {r['rounds']} | "
                     f"{r['regret_mean']:.1f} ± {r['regret_std']:.1f} | "
                     f"{r['weak_regret_mean']:.1f} ± {r['weak_regret_std']:.1f} | {opt(r, 'late_per_round')} | "
                     f"{opt(r, 'greedy_late')} | {opt(r, 'final_router')} | {r['seconds_per_seed']:.1f} |")
    return "\n".join(lines) + "\n"


def write_report(result: DuelResult, out_dir: str | Path) -> dict[str, Path]:
    """regret.png, weak_regret.png, table.md, rows.json, meta.json and curves.npz (means and stds)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = result.rows()
    paths = {"regret": plot_regret(result, out_dir / "regret.png", "average"),
             "weak_regret": plot_regret(result, out_dir / "weak_regret.png", "weak")}
    with atomic_file(out_dir / "table.md") as tmp:
        tmp.write_text(f"{result.dataset}: cumulative regret at T = {rows[0]['rounds']} "
                       f"over {rows[0]['seeds']} seeds\n\nSettings: {result.spec.settings_line()}\n\n"
                       + markdown_table(rows))
    paths["table"] = out_dir / "table.md"
    write_json(rows, out_dir / "rows.json")
    write_json(result.to_meta(), out_dir / "meta.json")
    arrays = {}
    for kind in ("average", "weak"):
        for (p, e), cum in result.curves(kind).items():
            arrays[f"{kind}|{p}|{e}|mean"] = cum.mean(axis=0)
            arrays[f"{kind}|{p}|{e}|std"] = cum.std(axis=0)
    with atomic_file(out_dir / "curves.npz") as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    paths.update(rows=out_dir / "rows.json", meta=out_dir / "meta.json", curves=out_dir / "curves.npz")
    return paths
