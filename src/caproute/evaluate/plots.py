"""Figures of the bench report (matplotlib, Agg backend): Figure 2(c) router variance,
Figure 4(a) K x R sample efficiency, 4(b) cost-quality frontier over lambda, 4(c) beta
sensitivity, and the two-model strong-call curves behind APGR / CPT.

Layout rules, so the figures read on a laptop screen (issue 16):
- every figure is at most ``MAX_WIDTH_IN`` inches wide (about 1150 px at ``DPI``), so the HTML
  report shows it at full size on a 1366 px screen;
- a router has the same colour in every figure (:func:`router_color`);
- legends sit outside the axes (above or beside the panels), never over data;
- figures with one line per router and supervision (Pareto frontier, two-model curves) are small
  multiples: one panel per router, panels of a view share their axes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

DPI = 110
MAX_WIDTH_IN = 10.5

# Fixed colours for the registered routers (tab10 order), baselines in greys; any other name gets a
# colour from tab20's light half chosen by a stable hash of the name.
ROUTER_COLORS = {
    "knn": "#1f77b4", "mlp": "#ff7f0e", "embedllm": "#2ca02c", "avengerspro": "#d62728",
    "graphrouter": "#9467bd", "mirt": "#8c564b", "rmsoftmax": "#e377c2", "mf": "#17becf",
    "metarouter": "#bcbd22", "best_fixed_train": "#7f7f7f", "best_fixed": "#7f7f7f",
    "random": "#b0b0b0", "cheapest": "#4d4d4d",
}
_EXTRA = ("#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d",
          "#9edae5", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173")
FIXED_MARKERS = ("s", "^", "D", "v", "P", "X", "h", "<", ">", "p")


def router_color(name: str) -> str:
    """The colour of a router in every figure (fixed for known routers, hashed for others)."""
    if name in ROUTER_COLORS:
        return ROUTER_COLORS[name]
    h = int(hashlib.sha256(name.encode()).hexdigest(), 16)
    return _EXTRA[h % len(_EXTRA)]


def _plt():
    from caproute.core.figures import pyplot

    return pyplot()


BASELINE_NAMES = ("best_fixed_train", "random", "cheapest")


def _learned_first(names) -> list[str]:
    """Routers to draw in busy plots: the learned ones if any, else all."""
    names = list(dict.fromkeys(names))
    learned = [n for n in names if n not in BASELINE_NAMES]
    return learned or names


def _save(fig, path: Path, top: float | None = None) -> None:
    """Lay out (leaving ``top`` of the height for a figure legend) and write the PNG."""
    if top is None:
        fig.tight_layout()
    else:
        fig.tight_layout(rect=(0, 0, 1, top))
    from caproute.core.figures import save_figure

    save_figure(fig, path, dpi=DPI)


def _top_legend(fig, handles, labels, height_in: float, ncol: int | None = None) -> float:
    """A legend between the title and the panels, as many columns as its longest label allows;
    returns the top of the panel area (figure fraction)."""
    width_in = fig.get_figwidth()
    col_in = 0.075 * max((len(x) for x in labels), default=1) + 0.55   # fontsize 8: ~0.075 in a character
    fit = max(1, int(width_in // col_in))
    ncol = max(1, min(ncol or 6, fit, len(labels)))
    rows = -(-len(labels) // ncol)
    title_in, row_in = 0.34, 0.2
    fig.legend(handles, labels, loc="upper center", ncol=ncol, fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 1.0 - title_in / height_in))
    return max(0.3, 1.0 - (title_in + row_in * rows + 0.12) / height_in)


def _dedupe(axes) -> tuple[list, list[str]]:
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels and not lab.startswith("_"):
                handles.append(h)
                labels.append(lab)
    return handles, labels


def plot_router_variance(runs: pd.DataFrame, reference: pd.DataFrame, views: list[str], path: Path,
                         title: str) -> None:
    """Figure 2(c): test utility of each single-shot training (box + points, the router's colour)
    against DARS (black diamond); one row of panels per view."""
    plt = _plt()
    main = runs[runs["study"] == "main"]
    routers = list(dict.fromkeys(main["router"]))
    width = min(MAX_WIDTH_IN, max(5.0, 0.6 * len(routers) + 2.0))
    height = 2.9 * len(views) + 0.9
    fig, axes = plt.subplots(len(views), 1, figsize=(width, height), squeeze=False)
    axes = list(axes[:, 0])
    rng = np.random.default_rng(0)   # jitter only
    for ax, view in zip(axes, views, strict=True):
        data = [main[(main["router"] == r) & (main["supervision"] == "single") & (main["view"] == view)]
                ["utility"].to_numpy() for r in routers]
        bp = ax.boxplot(data, showfliers=False, widths=0.55, patch_artist=True,
                        medianprops={"color": "black", "lw": 1})
        for patch, r in zip(bp["boxes"], routers, strict=True):
            patch.set(facecolor=router_color(r), alpha=0.25, edgecolor=router_color(r))
        for i, d in enumerate(data, start=1):
            ax.scatter(i + rng.uniform(-0.13, 0.13, d.size), d, s=7, alpha=0.55,
                       color=router_color(routers[i - 1]), label="single-shot training" if i == 1 else None)
            dars = main[(main["router"] == routers[i - 1]) & (main["supervision"] == "dars") &
                        (main["view"] == view)]["utility"]
            if len(dars):
                ax.scatter([i], [float(dars.iloc[0])], marker="D", s=36, color="black", label="DARS",
                           zorder=3)
        bf = reference[(reference["router"] == "best_fixed") & (reference["view"] == view)]
        if len(bf):
            ax.axhline(float(bf["utility_mean"].iloc[0]), ls="--", color="grey", lw=1,
                       label="best fixed model")
        ax.set_xticks(range(1, len(routers) + 1), routers, rotation=30 if len(routers) > 6 else 0,
                      ha="right" if len(routers) > 6 else "center", fontsize=8)
        ax.set_ylabel(f"U_{view[:3]} (test)")
        ax.set_title(f"{view} view", fontsize=10)
    fig.suptitle(title, y=0.995, fontsize=10)
    h, lab = _dedupe(axes)
    import matplotlib.lines as mlines

    h = [mlines.Line2D([], [], ls="", marker="o", ms=4, color="grey") if x == "single-shot training" else hh
         for hh, x in zip(h, lab, strict=True)]
    lab = ["single-shot training (router's colour)" if x == "single-shot training" else x for x in lab]
    top = _top_legend(fig, h, lab, height, ncol=3)
    _save(fig, path, top=top)


def plot_kxr(kxr: pd.DataFrame, single: pd.DataFrame, views: list[str], path: Path, title: str) -> None:
    """Figure 4(a): DARS test utility when the training grid is subsampled to K rewrites x R
    decodes (mean +- std over subsamples); dotted: the router's single-shot mean."""
    plt = _plt()
    width = min(MAX_WIDTH_IN, 4.8 * len(views))
    routers = list(dict.fromkeys(kxr["router"]))
    height = 3.9 + 0.2 * -(-len(routers) // 3)   # panels + a legend of up to 3 names a row
    fig, axes = plt.subplots(1, len(views), figsize=(width, height), squeeze=False)
    axes = list(axes[0])
    protocols = kxr[["k", "r"]].drop_duplicates()
    protocols = sorted(map(tuple, protocols.to_numpy().tolist()), key=lambda p: (p[0] * p[1], p[0]))
    labels = [f"{k}x{r}" for k, r in protocols]
    for ax, view in zip(axes, views, strict=True):
        for router in routers:
            d = kxr[(kxr["router"] == router) & (kxr["view"] == view)].set_index(["k", "r"])
            d = d.reindex(protocols)
            ax.errorbar(range(len(protocols)), d["utility_mean"], yerr=d["utility_std"], marker="o", ms=4,
                        capsize=3, label=router, color=router_color(router))
            s = single[(single["router"] == router) & (single["view"] == view)]
            if len(s):
                ax.axhline(float(s["utility_mean"].iloc[0]), ls=":", color=router_color(router), lw=1)
        ax.set_xticks(range(len(protocols)), labels)
        ax.set_xlabel("training protocol: K rewrites x R decodes")
        ax.set_ylabel(f"U_{view[:3]} (test)")
        ax.set_title(f"{view} view (dotted: single-shot mean)", fontsize=10)
    _save_view_panels(fig, axes, height, path, title)


def _save_view_panels(fig, axes, height: float, path: Path, title: str) -> None:
    """One panel per view, one line per router: the title, one legend of the routers above, the file."""
    fig.suptitle(title, y=0.995, fontsize=10)
    h, lab = _dedupe(axes)
    top = _top_legend(fig, h, lab, height, ncol=6)
    _save(fig, path, top=top)


def _panel_grid(plt, n_routers: int, n_views: int, panel_w: float = 2.6, panel_h: float = 2.3,
                legend_h: float = 1.4):
    """Small multiples: rows of up to 4 router panels, one block of rows per view."""
    ncols = max(1, min(4, n_routers))
    rows_per_view = -(-n_routers // ncols)
    width = min(MAX_WIDTH_IN, ncols * panel_w + 0.6)
    height = rows_per_view * n_views * panel_h + legend_h
    fig, axes = plt.subplots(rows_per_view * n_views, ncols, figsize=(width, height), squeeze=False)
    return fig, axes, ncols, rows_per_view, height


def _view_panels(axes, v: int, ncols: int, rows_per_view: int, n: int) -> list:
    """The first ``n`` panels of view block ``v`` (unused ones are hidden), axes shared in the block."""
    block = [axes[v * rows_per_view + i // ncols, i % ncols] for i in range(rows_per_view * ncols)]
    for ax in block[n:]:
        ax.set_visible(False)
    used = block[:n]
    for ax in used[1:]:
        ax.sharex(used[0])
        ax.sharey(used[0])
    return used


def plot_pareto(pareto: pd.DataFrame, views: list[str], path: Path, title: str) -> None:
    """Figure 4(b) as small multiples: per router, mean normalised cost vs mean quality of the
    chosen models over the lambda grid (DARS solid, single-shot dashed, the router's colour), with
    the fixed models (black markers; the best fixed model at lambda filled) and the oracle (grey)."""
    plt = _plt()
    per_view = {v: _learned_first(r for r in pareto[pareto["view"] == v]["router"]
                                  if not r.startswith("fixed:") and r != "oracle") for v in views}
    n = max((len(r) for r in per_view.values()), default=1) or 1
    fig, axes, ncols, rpv, height = _panel_grid(plt, n, len(views))
    all_fixed = list(dict.fromkeys(r for r in pareto["router"] if r.startswith("fixed:")))
    marker = {f: FIXED_MARKERS[i % len(FIXED_MARKERS)] for i, f in enumerate(all_fixed)}
    for v, view in enumerate(views):
        d = pareto[pareto["view"] == view]
        routers = per_view[view]
        panels = _view_panels(axes, v, ncols, rpv, len(routers))
        fixed = d[d["router"].str.startswith("fixed:")].drop_duplicates("router")
        o = d[d["router"] == "oracle"].sort_values("lam")
        for ax, router in zip(panels, routers, strict=True):
            if len(o):
                ax.plot(o["cost"], o["quality"], color="grey", lw=1, marker="x", ms=3, label="oracle")
            for _, row in fixed.iterrows():
                best = bool(d[d["router"] == row["router"]]["best_fixed"].any())
                ax.scatter([row["cost"]], [row["quality"]], marker=marker[row["router"]], s=30, color="black",
                           facecolors="black" if best else "none", zorder=3,
                           label=f"fixed: {row['router'][6:]}")
            for sup, ls in (("dars", "-"), ("single", "--")):
                s = d[(d["router"] == router) & (d["supervision"] == sup)].sort_values("lam")
                if len(s):
                    ax.plot(s["cost"], s["quality"], ls, marker="o", ms=2.5, lw=1.3, color=router_color(router),
                            label="DARS" if sup == "dars" else "single-shot (first training)")
            ax.set_title(f"{router} ({view})", fontsize=9, color=router_color(router))
            ax.tick_params(labelsize=7)
        _label_panels(panels, ncols, "mean normalised cost")
        if len(d) and float(d["cost"].abs().max()) == 0:
            panels[0].annotate("no costs in data", (0.02, 0.02), xycoords="axes fraction", fontsize=7)
    fig.suptitle(f"{title}: cost-quality over the lambda sweep", y=0.995, fontsize=10)
    _save_supervision_panels(fig, axes, height, path, marker="o")


def plot_beta(beta: pd.DataFrame, views: list[str], path: Path, title: str) -> None:
    """Figure 4(c): DARS test utility against the risk weight beta (trained and routed with beta)."""
    plt = _plt()
    routers = list(dict.fromkeys(beta["router"]))
    width = min(MAX_WIDTH_IN, 4.8 * len(views))
    height = 3.9 + 0.2 * -(-len(routers) // 3)   # panels + a legend of up to 3 names a row
    fig, axes = plt.subplots(1, len(views), figsize=(width, height), squeeze=False)
    axes = list(axes[0])
    for ax, view in zip(axes, views, strict=True):
        for router in routers:
            d = beta[(beta["router"] == router) & (beta["view"] == view)].sort_values("beta")
            ax.plot(d["beta"], d["utility"], marker="o", ms=4, label=router, color=router_color(router))
        ax.set_xlabel("beta")
        ax.set_ylabel(f"U_{view[:3]} (test)")
        ax.set_title(f"{view} view", fontsize=10)
    _save_view_panels(fig, axes, height, path, title)


def plot_pair_curves(curves: pd.DataFrame, pair: pd.DataFrame, views: list[str], path: Path,
                     title: str) -> None:
    """Performance against strong-model calls (RouteLLM's curve behind APGR / CPT) as small
    multiples: per router, DARS (solid) and the first single-shot training (dashed), with the
    strong and weak models' quality as references."""
    plt = _plt()
    per_view = {v: _learned_first(curves[curves["view"] == v]["router"]) for v in views}
    n = max((len(r) for r in per_view.values()), default=1) or 1
    fig, axes, ncols, rpv, height = _panel_grid(plt, n, len(views))
    for v, view in enumerate(views):
        d = curves[curves["view"] == view]
        routers = per_view[view]
        panels = _view_panels(axes, v, ncols, rpv, len(routers))
        p = pair[pair["view"] == view]
        for ax, router in zip(panels, routers, strict=True):
            if len(p):
                ax.axhline(float(p["strong"].iloc[0]), color="red", ls=":", lw=1,
                           label=f"strong: {p['strong_model'].iloc[0]}")
                ax.axhline(float(p["weak"].iloc[0]), color="grey", ls=":", lw=1,
                           label=f"weak: {p['weak_model'].iloc[0]}")
            for sup, ls in (("dars", "-"), ("single", "--")):
                s = d[(d["router"] == router) & (d["supervision"] == sup)]
                if len(s):
                    ax.plot(100 * s["calls"], s["perf"], ls, lw=1.3, color=router_color(router),
                            label="DARS" if sup == "dars" else "single-shot (first training)")
            ax.set_title(f"{router} ({view})", fontsize=9, color=router_color(router))
            ax.tick_params(labelsize=7)
        _label_panels(panels, ncols, "strong model calls (%)")
    fig.suptitle(f"{title}: two-model pool", y=0.995, fontsize=10)
    _save_supervision_panels(fig, axes, height, path, marker=None)


def _label_panels(panels, ncols: int, xlabel: str) -> None:
    """Small multiples: "mean quality" on the left column, ``xlabel`` on the bottom row."""
    for i, ax in enumerate(panels):
        if i % ncols == 0:
            ax.set_ylabel("mean quality", fontsize=8)
        if i >= len(panels) - ncols:
            ax.set_xlabel(xlabel, fontsize=8)


def _save_supervision_panels(fig, axes, height: float, path: Path, marker: str | None) -> None:
    """One legend above the small multiples of DARS (solid) against single-shot (dashed) lines,
    then the file. The line style, not the router colour, tells DARS from single-shot: their legend
    entries are drawn in black (with ``marker`` when the lines have one)."""
    import matplotlib.lines as mlines

    h, lab = _dedupe([a for a in axes.ravel() if a.get_visible()])
    style = {"marker": marker, "ms": 3} if marker else {}
    h = [mlines.Line2D([], [], color="black", ls="-" if lab_ == "DARS" else "--", **style)
         if lab_ in ("DARS", "single-shot (first training)") else hh for hh, lab_ in zip(h, lab, strict=True)]
    top = _top_legend(fig, h, lab, height, ncol=4)
    _save(fig, path, top=top)
