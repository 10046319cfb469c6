"""report.html in a real headless browser (Chromium from Debian's packages) at a laptop's width:
no horizontal scrolling, no element past the right edge, no table that needs its own scroll bar,
no table cell wrapped onto several lines, every figure shown at (nearly) its full size (issue 16).

The page is loaded with a small script appended that measures the layout once everything has
loaded and writes the findings into the DOM, which ``chromium --dump-dom`` prints. A screenshot of
the first screen is written next to the page for people to look at. Skips with a reason when no
Chromium is installed (``apt-get install chromium``; .ci/run installs it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
LAPTOP = (1366, 768)

CHECK_JS = r"""
<script>
window.addEventListener('load', () => {
  const W = window.innerWidth, out = {innerWidth: W, scrollWidth: document.documentElement.scrollWidth,
    past_right: [], scrolling_tables: [], wrapped_cells: [], shrunk_images: []};
  const name = el => el.tagName.toLowerCase() + ':' + (el.textContent || el.alt || '').trim().slice(0, 40);
  for (const el of document.body.querySelectorAll('*')) {
    const r = el.getBoundingClientRect();
    if (r.width > 0 && r.right > W + 1) out.past_right.push(name(el) + ' right=' + Math.round(r.right));
  }
  for (const d of document.querySelectorAll('.tbl'))
    if (d.scrollWidth > d.clientWidth + 1) out.scrolling_tables.push(name(d.querySelector('th') || d));
  for (const td of document.querySelectorAll('td')) {
    const range = document.createRange(); range.selectNodeContents(td);
    const tops = new Set(Array.from(range.getClientRects()).map(r => Math.round(r.top)));
    if (tops.size > 1) out.wrapped_cells.push(name(td));
  }
  for (const img of document.querySelectorAll('img'))
    if (img.naturalWidth === 0 || img.clientWidth < 0.95 * img.naturalWidth)
      out.shrunk_images.push(img.alt + ' ' + img.naturalWidth + '->' + img.clientWidth);
  const pre = document.createElement('pre'); pre.id = 'layout-check';
  pre.textContent = JSON.stringify(out); document.body.appendChild(pre);
});
</script>
"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        p = shutil.which(name)
        if p:
            return p
    pytest.skip("no Chromium found (Debian: apt-get install chromium; .ci/run installs it)")


def _run_chromium(args: list[str], timeout: int = 120) -> subprocess.CompletedProcess:
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--hide-scrollbars", "--no-first-run", f"--window-size={LAPTOP[0]},{LAPTOP[1]}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "HOME": os.environ.get("HOME", "/tmp")})


def layout_problems(html_file: Path) -> dict:
    """Load ``html_file`` at 1366 px in headless Chromium and return the layout measurements."""
    page = html_file.with_name(html_file.stem + ".check.html")
    page.write_text(html_file.read_text().replace("</body>", CHECK_JS + "</body>"))
    r = _run_chromium(["--virtual-time-budget=15000", "--dump-dom", page.as_uri()])
    m = re.search(r"<pre id=\"layout-check\">(.*?)</pre>", r.stdout, re.S)
    assert m, f"the layout check did not run in Chromium (rc {r.returncode}):\n{r.stderr[-2000:]}"
    found = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<")
                       .replace("&gt;", ">"))
    shot = html_file.with_name(html_file.stem + ".png")
    _run_chromium([f"--screenshot={shot}", html_file.as_uri()])
    return found


def assert_fits(found: dict) -> None:
    problems = {k: v for k, v in found.items() if isinstance(v, list) and v}
    assert found["scrollWidth"] <= found["innerWidth"], f"horizontal scrolling: {found}"
    assert not problems, json.dumps(problems, indent=1)


def _wide_result():
    """The shipped RouterDC report's results (one router ran the studies), widened to every
    registered router name so the tables and figures carry as many series as `--routers all`
    gives: layout input, not results (each copy gets a small offset so the curves differ)."""
    from caproute.evaluate.report import read_result

    res = read_result(REPO / "docs" / "results" / "routerdc")
    names = ["knn", "mlp", "embedllm", "avengerspro", "graphrouter", "mirt", "rmsoftmax", "mf",
             "metarouter", "best_fixed_train", "random", "cheapest", "router-x13", "router-x14",
             "router-x15", "router-x16"]

    def widen(df: pd.DataFrame, col: str = "router") -> pd.DataFrame:
        if df.empty or col not in df.columns:
            return df
        base = df[df[col] == "knn"]
        keep = df[~df[col].isin(["knn", *names])]      # every named router is a copy of knn: no duplicates
        if base.empty:
            return df
        copies = []
        for i, n in enumerate(names):
            c = base.copy()
            c[col] = n
            for v in ("utility", "utility_mean", "quality", "quality_mean", "perf", "single_mean", "dars"):
                if v in c.columns:
                    c[v] = c[v] + 0.002 * i
            copies.append(c)
        return pd.concat([*copies, keep], ignore_index=True)

    for f in ("rows", "runs", "ablation", "kxr", "beta", "pareto", "pair", "pair_curves", "variance", "timing"):
        setattr(res, f, widen(getattr(res, f)))
    res.reference = res.rows[res.rows["router"].isin(["best_fixed", "oracle"])].reset_index(drop=True)
    res.config.routers = tuple(names)
    return res


@pytest.mark.slow
def test_report_fits_a_laptop_screen(tmp_path):
    from caproute.evaluate.report import write_report

    chromium()
    res = _wide_result()
    out = write_report(res, tmp_path / "report", title="layout check: 16 routers")
    found = layout_problems(out / "report.html")
    assert_fits(found)
    assert (out / "report.png").stat().st_size > 10_000   # the screenshot for people to look at


@pytest.mark.slow
def test_the_check_catches_overflow(tmp_path):
    """The measurement itself: a page with a wide table, a wrapped cell and a shrunk image fails."""
    chromium()
    png = (REPO / "docs" / "results" / "routerdc" / "fig4b_pareto.png").read_bytes()
    import base64

    cells = "".join(f"<td>{x:.3f} ± 0.009</td>" for x in np.linspace(0, 1, 40))
    page = tmp_path / "bad.html"
    page.write_text(
        "<!DOCTYPE html><html><body><div class='tbl' style='overflow-x:auto'><table><tr><th>a</th>"
        f"{cells}</tr></table></div><table style='width:50px'><tr><td>0.065 ± 0.009</td></tr></table>"
        f"<img alt='fig' style='width:100px' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
        "<div style='width:3000px'>wide</div></body></html>")
    found = layout_problems(page)
    assert found["scrollWidth"] > found["innerWidth"]
    assert found["past_right"] and found["scrolling_tables"] and found["wrapped_cells"]
    assert found["shrunk_images"]
