"""Figures of the bench report (matplotlib, Agg backend): Figure 2(c) router variance,
Figure 4(a) K x R sample efficiency, 4(b) cost-quality frontier over lambda, 4(c) beta
sensitivity, and the two-model strong-call curves behind APGR / CPT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _axes(plt, n: int, width: float = 5.2, height: float = 4.0):
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False)
    return fig, list(axes[0])


BASELINE_NAMES = ("best_fixed_train", "random", "cheapest")


def _learned_first(names) -> list[str]:
    """Routers to draw in busy plots: the learned ones if any, else all."""
    names = list(dict.fromkeys(names))
    learned = [n for n in names if n not in BASELINE_NAMES]
    return learned or names


def _colors(names) -> dict[str, tuple]:
    """One colour per router (shared by its single-shot and DARS lines)."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {n: cmap(i % cmap.N) for i, n in enumerate(names)}


def _legend_outside(ax) -> None:
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)


def plot_router_variance(runs: pd.DataFrame, reference: pd.DataFrame, views: list[str], path: Path,
                         title: str) -> None:
    """Figure 2(c): test utility of each single-shot training (box + points) against DARS (red)."""
    plt = _plt()
    main = runs[runs["study"] == "main"]
    routers = list(dict.fromkeys(main["router"]))
    fig, axes = _axes(plt, len(views), width=max(4.5, 1.1 * len(routers) + 1.5))
    rng = np.random.default_rng(0)   # jitter only
    for ax, view in zip(axes, views, strict=True):
        data = [main[(main["router"] == r) & (main["supervision"] == "single") & (main["view"] == view)]
                ["utility"].to_numpy() for r in routers]
        ax.boxplot(data, showfliers=False, widths=0.5)
        for i, d in enumerate(data, start=1):
            ax.scatter(i + rng.uniform(-0.12, 0.12, d.size), d, s=6, alpha=0.4, color="#4C72B0")
            dars = main[(main["router"] == routers[i - 1]) & (main["supervision"] == "dars") &
                        (main["view"] == view)]["utility"]
            if len(dars):
                ax.scatter([i], [float(dars.iloc[0])], marker="D", s=40, color="#C44E52",
                           label="DARS" if i == 1 else None, zorder=3)
        bf = reference[(reference["router"] == "best_fixed") & (reference["view"] == view)]
        if len(bf):
            ax.axhline(float(bf["utility_mean"].iloc[0]), ls="--", color="grey", lw=1, label="best fixed")
        ax.set_xticks(range(1, len(routers) + 1), routers, rotation=30, ha="right")
        ax.set_ylabel(f"U_{view[:3]} (test)")
        ax.set_title(f"{view} view: single-shot spread vs DARS")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    _save(fig, path)


def plot_kxr(kxr: pd.DataFrame, single: pd.DataFrame, views: list[str], path: Path, title: str) -> None:
    """Figure 4(a): DARS test utility when the training grid is subsampled to K rewrites x R
    decodes (mean +- std over subsamples); dotted: the router's single-shot mean."""
    plt = _plt()
    fig, axes = _axes(plt, len(views))
    protocols = kxr[["k", "r"]].drop_duplicates().sort_values(["k", "r"], key=None)
    protocols = sorted(map(tuple, protocols.to_numpy().tolist()), key=lambda p: (p[0] * p[1], p[0]))
    labels = [f"{k}x{r}" for k, r in protocols]
    for ax, view in zip(axes, views, strict=True):
        colors = _colors(list(dict.fromkeys(kxr["router"])))
        for router in dict.fromkeys(kxr["router"]):
            d = kxr[(kxr["router"] == router) & (kxr["view"] == view)].set_index(["k", "r"])
            d = d.reindex(protocols)
            line = ax.errorbar(range(len(protocols)), d["utility_mean"], yerr=d["utility_std"], marker="o",
                               capsize=3, label=router, color=colors[router])
            s = single[(single["router"] == router) & (single["view"] == view)]
            if len(s):
                ax.axhline(float(s["utility_mean"].iloc[0]), ls=":", color=line[0].get_color(), lw=1)
        ax.set_xticks(range(len(protocols)), labels)
        ax.set_xlabel("training protocol K rewrites x R decodes")
        ax.set_ylabel(f"U_{view[:3]} (test)")
        ax.set_title(f"{view} view (dotted: single-shot mean)")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    _save(fig, path)


def plot_pareto(pareto: pd.DataFrame, views: list[str], path: Path, title: str) -> None:
    """Figure 4(b): mean normalised cost vs mean quality of the chosen models over the lambda grid;
    fixed models (squares; the best fixed model at lambda is filled) and the oracle as references."""
    plt = _plt()
    fig, axes = _axes(plt, len(views), width=7.5, height=4.5)
    for ax, view in zip(axes, views, strict=True):
        d = pareto[pareto["view"] == view]
        routers = _learned_first(r for r in d["router"] if not r.startswith("fixed:") and r != "oracle")
        colors = _colors(routers)
        for router in routers:
            for sup, ls in (("dars", "-"), ("single", "--")):
                s = d[(d["router"] == router) & (d["supervision"] == sup)].sort_values("lam")
                if len(s):
                    ax.plot(s["cost"], s["quality"], ls, marker="o", ms=3, color=colors[router],
                            label=f"{router} ({'DARS' if sup == 'dars' else 'single'})")
        fixed = d[d["router"].str.startswith("fixed:")].drop_duplicates("router")
        for _, row in fixed.iterrows():
            best = bool(d[(d["router"] == row["router"])]["best_fixed"].any())
            ax.scatter([row["cost"]], [row["quality"]], marker="s", s=45, color="black",
                       facecolors="black" if best else "none", zorder=3)
            ax.annotate(row["router"][6:], (row["cost"], row["quality"]), fontsize=7, xytext=(4, -10),
                        textcoords="offset points")
        o = d[d["router"] == "oracle"].sort_values("lam")
        if len(o):
            ax.plot(o["cost"], o["quality"], color="grey", lw=1, marker="x", label="oracle")
        ax.set_xlabel("mean normalised cost of the chosen model")
        ax.set_ylabel("mean quality of the chosen model")
        note = " (no costs in data)" if float(d["cost"].abs().max()) == 0 else ""
        ax.set_title(f"{view} view, lambda sweep{note}")
        _legend_outside(ax)
    fig.suptitle(title)
    _save(fig, path)


def plot_beta(beta: pd.DataFrame, views: list[str], path: Path, title: str) -> None:
    """Figure 4(c): DARS test utility against the risk weight beta (trained and routed with beta)."""
    plt = _plt()
    fig, axes = _axes(plt, len(views))
    for ax, view in zip(axes, views, strict=True):
        for router in dict.fromkeys(beta["router"]):
            d = beta[(beta["router"] == router) & (beta["view"] == view)].sort_values("beta")
            ax.plot(d["beta"], d["utility"], marker="o", label=router)
        ax.set_xlabel("beta")
        ax.set_ylabel(f"U_{view[:3]} (test)")
        ax.set_title(f"{view} view")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    _save(fig, path)


def plot_pair_curves(curves: pd.DataFrame, pair: pd.DataFrame, views: list[str], path: Path,
                     title: str) -> None:
    """Performance against strong-model calls (RouteLLM's curve behind APGR / CPT): DARS (solid)
    and the first single-shot training (dashed) per router."""
    plt = _plt()
    fig, axes = _axes(plt, len(views), width=7.5, height=4.5)
    for ax, view in zip(axes, views, strict=True):
        d = curves[curves["view"] == view]
        routers = _learned_first(d["router"])
        colors = _colors(routers)
        for router in routers:
            for sup, ls in (("dars", "-"), ("single", "--")):
                s = d[(d["router"] == router) & (d["supervision"] == sup)]
                if len(s):
                    ax.plot(100 * s["calls"], s["perf"], ls, marker=".", color=colors[router],
                            label=f"{router} ({'DARS' if sup == 'dars' else 'single'})")
        p = pair[pair["view"] == view]
        if len(p):
            ax.axhline(float(p["strong"].iloc[0]), color="red", ls=":", lw=1,
                       label=f"strong: {p['strong_model'].iloc[0]}")
            ax.axhline(float(p["weak"].iloc[0]), color="grey", ls=":", lw=1,
                       label=f"weak: {p['weak_model'].iloc[0]}")
        ax.set_xlabel("strong model calls (%)")
        ax.set_ylabel("mean quality")
        ax.set_title(f"{view} view (dashed: first single-shot training)")
        _legend_outside(ax)
    fig.suptitle(title)
    _save(fig, path)
