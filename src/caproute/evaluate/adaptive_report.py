"""Report of the adaptive-sampling study: a markdown table, a CSV and one figure.

The figure has two panels against the generation budget (fraction of the full K x R grid):
label agreement with the full-grid DARS label, and the decode-view test utility of each router
trained on the supervision each policy bought; dashed lines mark the single-shot and the
full-DARS levels.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

POLICY_STYLE = {"uniform": ("#7f7f7f", "s"), "pob": ("#1f77b4", "o"), "lucb": ("#ff7f0e", "^")}
POLICY_NAME = {"uniform": "uniform K x R", "pob": "adaptive: probability of best",
               "lucb": "adaptive: LUCB bounds"}


def rule_settings(adaptive: dict) -> str:
    """One line naming the settings the adaptive rules ran with (``config.adaptive`` of a study)."""
    keys = ("delta", "epsilon", "min_per_model", "prior", "predictive", "prior_fit", "beta_update", "n_draws")
    shown = [f"{k}={adaptive[k]}" for k in keys if k in adaptive]
    return "Rule settings (pob, lucb): " + (", ".join(shown) if shown else "not recorded") + "."


def summary_frame(payload: dict) -> pd.DataFrame:
    return pd.DataFrame(payload["summary"])


def markdown_table(payload: dict) -> str:
    df = summary_frame(payload)
    refs = pd.DataFrame(payload["references"])
    lines = ["| policy | router | budget | generations | label agreement | utility (rewrite) | utility (decode) |",
             "|---|---|---:|---:|---:|---:|---:|"]

    def fmt(r, key):
        v, s = r.get(key), r.get(f"{key}_std", 0.0)
        return "n/a" if v is None or pd.isna(v) else f"{v:.3f} ± {s:.3f}"

    for _, r in pd.concat([refs, df], ignore_index=True).iterrows():
        lines.append(f"| {POLICY_NAME.get(r['policy'], r['policy'])} | {r['router']} | "
                     f"{r['budget_fraction']:.2f} | {r['generations']:.0f} | {fmt(r, 'label_agreement')} | "
                     f"{fmt(r, 'utility_rewrite')} | {fmt(r, 'utility_decode')} |")
    return "\n".join(lines)


def plot_study(payload: dict, out: str | Path) -> Path:
    from caproute.core.figures import pyplot, save_figure

    plt = pyplot()

    df = summary_frame(payload)
    refs = pd.DataFrame(payload["references"])
    routers = sorted(df["router"].unique())
    view = "utility_decode" if df["utility_decode"].notna().any() else "utility_rewrite"
    fig, axes = plt.subplots(1, 1 + len(routers), figsize=(4.2 * (1 + len(routers)), 3.6), squeeze=False)
    axes = axes[0]
    agree = df[df["router"] == routers[0]]
    for policy, g in agree.groupby("policy"):
        color, marker = POLICY_STYLE.get(policy, ("k", "x"))
        axes[0].errorbar(g["budget_fraction"], g["label_agreement"], yerr=g["label_agreement_std"],
                         color=color, marker=marker, capsize=2, label=POLICY_NAME.get(policy, policy))
    single = refs[(refs["policy"] == "single_shot") & (refs["router"] == routers[0])]
    if len(single):
        axes[0].axhline(float(single["label_agreement"].iloc[0]), color="k", ls=":", lw=1,
                        label="one observation per pair")
    axes[0].set_xlabel("budget (fraction of full grid)")
    axes[0].set_ylabel("agreement with full-grid DARS label")
    axes[0].set_title("label agreement")
    for ax, router in zip(axes[1:], routers, strict=True):
        part = df[df["router"] == router]
        for policy, g in part.groupby("policy"):
            color, marker = POLICY_STYLE.get(policy, ("k", "x"))
            ax.errorbar(g["budget_fraction"], g[view], yerr=g[f"{view}_std"], color=color, marker=marker,
                        capsize=2, label=POLICY_NAME.get(policy, policy))
        for name, ls in (("full_dars", "--"), ("single_shot", ":")):
            r = refs[(refs["policy"] == name) & (refs["router"] == router)]
            if len(r) and pd.notna(r[view].iloc[0]):
                ax.axhline(float(r[view].iloc[0]), color="k", ls=ls, lw=1,
                           label="full DARS" if name == "full_dars" else "single-shot")
        ax.set_xlabel("budget (fraction of full grid)")
        ax.set_ylabel(f"test utility ({view.split('_')[1]} view)")
        ax.set_title(f"{router} router")
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), frameon=False, fontsize=8)
    cfg = payload["config"]
    fig.suptitle(f"Adaptive repeated sampling on {cfg['dataset']} ({cfg['seeds']} seeds, "
                 f"lambda={cfg['lambda']}, beta={cfg['beta']})", fontsize=10)
    fig.tight_layout(rect=(0, 0.12, 1, 0.95))
    return save_figure(fig, out, dpi=110)


def write_study_report(payload: dict, folder: str | Path) -> Path:
    """``adaptive.md``, ``adaptive.csv`` and ``adaptive.png`` in ``folder``."""
    from caproute.core.atomic import atomic_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = payload["config"]
    plot_study(payload, folder / "adaptive.png")
    with atomic_file(folder / "adaptive.csv") as tmp:
        pd.DataFrame(payload["rows"] + [dict(r, reference=True) for r in payload["references"]]).to_csv(
            tmp, index=False)
    text = [f"# Adaptive repeated sampling: {cfg['dataset']}", "",
            f"{cfg['n_train_queries']} training queries x {len(cfg['models'])} models, full grid "
            f"{cfg['full_grid_generations']} generations; budgets in {cfg['unit']}; "
            f"{cfg['seeds']} seeds (mean ± std); lambda={cfg['lambda']}, beta={cfg['beta']}.", "",
            rule_settings(cfg.get("adaptive") or {}), "",
            markdown_table(payload), "", "![adaptive](adaptive.png)", ""]
    with atomic_file(folder / "adaptive.md") as tmp:
        tmp.write_text("\n".join(text))
    return folder / "adaptive.md"
