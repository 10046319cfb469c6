"""Rendering of duel results: regret curves (PNG, mean ± std over seeds), a Markdown table at T,
JSON rows and the run's metadata. Rendering only; the numbers come from :class:`DuelResult`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from caproute.bandits.experiment import DuelResult
from caproute.data.atomic import atomic_file, write_json

PLOT_ORDER = ("fgts-cdb", "maxinp", "eps-greedy", "dars-knn", "best-fixed", "uniform")


def _sorted_keys(curves: dict) -> list:
    return sorted(curves, key=lambda k: (PLOT_ORDER.index(k[0]) if k[0] in PLOT_ORDER else 99, k[1]))


def plot_regret(result: DuelResult, out: str | Path, kind: str = "average") -> Path:
    """Cumulative regret per (policy, embeddings): mean line and a ± 1 std band over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = result.curves(kind)
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    cmap = plt.get_cmap("tab20")
    for n, key in enumerate(_sorted_keys(curves)):
        cum = curves[key]
        t = np.arange(1, cum.shape[1] + 1)
        mean, sd = cum.mean(axis=0), cum.std(axis=0)
        label = key[0] if key[1] == "none" else f"{key[0]} [{key[1]}]"
        style = "--" if key[0] in ("best-fixed", "dars-knn", "uniform") else "-"
        ax.plot(t, mean, style, color=cmap(n % 20), label=label, lw=1.5)
        ax.fill_between(t, mean - sd, mean + sd, color=cmap(n % 20), alpha=0.2, lw=0)
    ax.set_xlabel("round t")
    ax.set_ylabel(f"cumulative {'average' if kind == 'average' else 'weak'} regret")
    seeds = next(iter(curves.values())).shape[0]
    ax.set_title(f"{result.dataset}: {kind} regret, mean ± std over {seeds} seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    out = Path(out)
    with atomic_file(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return out


def markdown_table(rows: list[dict]) -> str:
    lines = ["| policy | embeddings | T | regret (mean ± std) | weak regret (mean ± std) | s / seed |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['policy']} | {r['embeddings']} | {r['rounds']} | "
                     f"{r['regret_mean']:.1f} ± {r['regret_std']:.1f} | "
                     f"{r['weak_regret_mean']:.1f} ± {r['weak_regret_std']:.1f} | {r['seconds_per_seed']:.1f} |")
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
                       f"over {rows[0]['seeds']} seeds\n\n" + markdown_table(rows))
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
