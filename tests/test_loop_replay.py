"""The closing loop of issue 22 on the real local pool, from the README's commands verbatim: pool up
with a judge -> collect a chat log -> train -> serve with the request log, exploration and a shadow
judge -> feedback on routed answers only, through the openai client -> feedback export (observations
by source and a replay log) -> retrain -> replay comparing the served router and the retrained one.

The bash block under README's "The loop on routed traffic, from the CLI alone" is run as it stands
(a private pool folder; the pool is stopped afterwards). Small on purpose: two models, four
conversations, one decode each, ten routed requests, about a fifth of them judged in the shadow; most of
the time is the judge calls (each reads a prompt of about 700 tokens), so they are few."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.pool, pytest.mark.slow]
pytest.importorskip("llama_cpp")

ROOT = Path(__file__).resolve().parents[1]
HEADING = "#### The loop on routed traffic, from the CLI alone"


def readme_block() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index(HEADING):]
    m = re.search(r"```bash\n(.*?)```", section, re.S)
    assert m, "the README's loop block is missing"
    return m.group(1)


def test_readme_loop_on_routed_traffic(tmp_path):
    env = {**os.environ, "CAPROUTE_POOL_DIR": str(tmp_path / "pool"), "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "COLUMNS": "160",
           "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    script = tmp_path / "loop.sh"
    script.write_text("set -euo pipefail\n" + readme_block())
    try:
        r = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    finally:
        subprocess.run([sys.executable, "-m", "caproute", "pool", "down"], env=env, capture_output=True, timeout=120)
    serve_log = (tmp_path / "serve.log").read_text() if (tmp_path / "serve.log").exists() else ""
    assert r.returncode == 0, f"{r.stdout[-4000:]}\n{r.stderr[-4000:]}\nserve.log:\n{serve_log[-3000:]}"
    out = " ".join(r.stdout.split())

    # the served traffic: ten routed answers, each with its propensity; exploration at 0.5 over 2 models
    served = [line for line in r.stdout.splitlines() if " p=" in line]
    assert len(served) == 10
    assert {float(re.search(r"p=([\d.]+)", x).group(1)) for x in served} <= {0.25, 0.75}

    # feedback export: user ratings and the shadow judge's grades, marked by source; a replay log
    assert "replay log: 10 routed requests with an outcome" in out, out
    assert re.search(r"\[(\d+ judge, )?10 user\]", out), out
    rows = [json.loads(x) for x in (tmp_path / "replay.jsonl").read_text().splitlines()]
    assert len(rows) == 10 and all(x["reward_source"] == "user" for x in rows)
    assert all(0 < x["propensity"] < 1 and sum(x["propensities"].values()) == pytest.approx(1) for x in rows)
    from caproute.data.store import ObservationStore

    with ObservationStore(tmp_path / "chat.duckdb", read_only=True) as s:
        fb = s.read(dataset="feedback")
    assert (fb["score_source"] == "user").sum() == 10 and fb["score_source"].isin(["user", "judge"]).all()

    # replay: both the served and the retrained router evaluated on the logged requests
    res = json.loads((tmp_path / "replay.json").read_text())
    rows_out = res["rows"] if isinstance(res, dict) and "rows" in res else res
    cands = {x["candidate"] for x in rows_out}
    assert cands == {"router", "router-v2"}, res
    assert {x["estimator"] for x in rows_out} >= {"ips", "snips", "dr"}
    assert all(x["n"] == 10 for x in rows_out)
