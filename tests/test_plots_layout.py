"""Readable reports and quiet, untruncated command output (issue 16), without a browser:
router colours, table shapes, figure sizes, the diagnose figure's "n/a", full model names in
`collect --dry-run`, the pool table's URL, and the collect ETA."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from caproute.evaluate import plots  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _png_size(path: Path) -> tuple[int, int]:
    return struct.unpack(">II", path.read_bytes()[16:24])


def test_router_colours_are_fixed_and_distinct():
    known = ["knn", "mlp", "embedllm", "avengerspro", "graphrouter", "mirt", "rmsoftmax", "mf", "metarouter"]
    colours = [plots.router_color(r) for r in known]
    assert len(set(colours)) == len(known)
    assert plots.router_color("some-new-router") == plots.router_color("some-new-router")
    assert plots.router_color("some-new-router") not in colours


@pytest.fixture(scope="module")
def wide_report(tmp_path_factory):
    sys.path.insert(0, str(REPO / "tests"))
    from caproute.evaluate.report import write_report
    from test_report_browser import _wide_result

    res = _wide_result()
    return res, write_report(res, tmp_path_factory.mktemp("rep") / "report", title="16 routers")


def test_tables_grow_down_not_across(wide_report):
    from caproute.evaluate.report import beta_table, kxr_table

    res, out = wide_report
    k, b = kxr_table(res), beta_table(res)
    assert list(k.columns[:2]) == ["Router", "View"] and len(k) == res.kxr["router"].nunique()
    assert k.shape[1] == 2 + res.kxr[["k", "r"]].drop_duplicates().shape[0]
    assert list(b.columns[:2]) == ["Router", "View"] and all(c.startswith("beta = ") for c in b.columns[2:])
    html = (out / "report.html").read_text()
    assert ">col<" not in html and "<th>col</th>" not in html          # the stray pivot header
    assert "default is 100" in html and "default 10 sets" not in html


def test_figures_fit_the_page_and_routers_keep_their_colour(wide_report):
    _, out = wide_report
    for f in ("fig2c_router_variance.png", "fig4a_kxr.png", "fig4b_pareto.png", "fig4c_beta.png",
              "fig_two_model_curves.png"):
        w, h = _png_size(out / f)
        assert w <= plots.MAX_WIDTH_IN * plots.DPI + 1, (f, w)     # shown at full size in a 1200 px page
        assert h < 2000, (f, h)


def test_diagnose_figure_says_na_without_rewrites():
    from caproute.data.source import load_observations
    from caproute.supervise.api import diagnostics
    from caproute.supervise.diagnostics import diagnostics_figure

    obs, _ = load_observations(data="builtin")
    decode_view = pd.concat([obs[obs["split"] == "train"],
                             obs[(obs["split"] == "test") & (obs["prompt_variant_id"] == -1)]])
    diag, stats = diagnostics(decode_view, split="test")
    texts = [t.get_text() for t in diagnostics_figure(stats, diag).axes[2].texts]
    assert any(t.startswith("n/a") for t in texts), texts
    diag, stats = diagnostics(obs, split="train")                   # with rewrites: a number
    texts = [t.get_text() for t in diagnostics_figure(stats, diag).axes[2].texts]
    assert not any(t.startswith("n/a") for t in texts) and len(texts) == 2


def test_dry_run_shows_full_model_names(tmp_path):
    from caproute.cli import app

    long_a, long_b = "provider/very-long-model-name-2026-preview-a", "provider/very-long-model-name-2026-preview-b"
    endpoint = ("    base_url: http://127.0.0.1:9/v1\n    api_key_env: ''\n    price_input_per_1m: 1\n"
                "    price_output_per_1m: 2\n")
    (tmp_path / "pool.yaml").write_text(
        f"models:\n  - name: {long_a}\n    model: a\n{endpoint}  - name: {long_b}\n    model: b\n{endpoint}"
        "tasks:\n  t:\n    prompt_template: 'Q: {question}'\n    scorer: numeric\n    max_tokens: 8\n")
    (tmp_path / "q.jsonl").write_text('{"query_id": "q1", "question": "What is 1 + 1?", "answer": "2"}\n')
    r = CliRunner().invoke(app, ["collect", "--config", str(tmp_path / "pool.yaml"), "--queries",
                                 str(tmp_path / "q.jsonl"), "--store", str(tmp_path / "s.duckdb"), "--task", "t",
                                 "--rewrites", "0", "--decodes", "2", "--dry-run"])
    assert r.exit_code == 0, r.output
    assert long_a in r.output and long_b in r.output and "upper-bound estimate" in r.output


def test_collect_eta_waits_for_a_recent_rate(monkeypatch):
    from caproute.collect import progress
    from caproute.collect.ledger import RunStats

    clock = [1000.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    stats = RunStats(total=1000)
    prog = progress.CollectProgress(stats, console=None, enabled=False)
    assert prog.eta_s() is None                                    # nothing measured yet
    for _ in range(30):                                            # a slow start: rewrites, warm-up
        clock[0] += 10.0
        stats.done += 1
        prog.eta_s()
    for _ in range(30):                                            # then 1 generation a second
        clock[0] += 10.0
        stats.done += 10
        eta = prog.eta_s()
    # since the start: 330 in 600 s -> 1218 s left; the last two minutes (1/s) -> 670 s
    assert eta == pytest.approx(670, rel=0.1)
    assert "eta" in prog._info()
