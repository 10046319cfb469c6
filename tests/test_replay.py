"""caproute replay: the request-log reader (named errors), replay of saved routers through the
CLI, and the simulation (builtin set; RouterDC when ../shared/data is there)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from caproute.errors import DataError
from caproute.evaluate.replay_log import read_request_log

CLI = [sys.executable, "-m", "caproute"]


def run_cli(*args, check=True):
    res = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=300)
    if check and res.returncode != 0:
        raise AssertionError(f"caproute {' '.join(map(str, args))} failed:\n{res.stdout}\n{res.stderr}")
    return res


def _row(i, **kw):
    r = {"request_id": f"r{i}", "query": f"question {i}", "candidates": ["a", "b"], "chosen": "a",
         "propensity": 0.9, "reward": 1.0}
    r.update(kw)
    return r


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_reader_support_and_parquet(tmp_path):
    rows = [_row(0), _row(1, chosen="b", propensity=1.0),
            _row(2, candidates=["a", "b", "c"], propensities={"a": 0.5, "b": 0.5, "c": 0.0}, propensity=0.5),
            _row(3, policy_version="v2")]
    log = read_request_log(_write(tmp_path / "log.jsonl", rows))
    assert log.models == ("a", "b", "c") and log.n == 4 and log.texts[0] == "question 0"
    assert log.support.tolist() == [[True, True, False], [False, True, False], [True, True, False],
                                    [True, True, False]]
    assert log.policy_versions == [None, None, None, "v2"]
    pd.DataFrame(rows).to_parquet(tmp_path / "log.parquet")
    again = read_request_log(tmp_path / "log.parquet")
    assert again.models == log.models and again.support.tolist() == log.support.tolist()
    np.testing.assert_array_equal(again.chosen, log.chosen)


@pytest.mark.parametrize("bad, line, field, msg", [
    ({"chosen": "z"}, 2, "chosen", "not one of the candidates"),
    ({"propensity": 0}, 2, "propensity", r"\(0, 1\]"),
    ({"reward": float("nan")}, 2, "reward", "finite"),
    ({"request_id": "r0"}, 2, "request_id", "repeated"),
    ({"candidates": ["a", "a"]}, 2, "candidates", "distinct"),
    ({"query": None}, 2, "query", "query text or its features"),
    ({"propensities": {"a": 0.5, "b": 0.4}}, 2, "propensities", "sum to 1"),
    ({"propensities": {"a": 0.5, "b": 0.5}}, 2, "propensities", "chosen model"),
    ({"propensity": None}, 2, "propensity", "missing"),
])
def test_reader_names_file_line_and_field(tmp_path, bad, line, field, msg):
    path = _write(tmp_path / "log.jsonl", [_row(0), _row(1, **bad)])
    with pytest.raises(DataError, match=msg) as e:
        read_request_log(path)
    assert e.value.source == str(path) and e.value.row == line and e.value.field == field


def test_reader_bad_json_and_empty(tmp_path):
    p = tmp_path / "log.jsonl"
    p.write_text(json.dumps(_row(0)) + "\n{not json\n")
    with pytest.raises(DataError, match="line 2.*not valid JSON"):
        read_request_log(p)
    p.write_text("\n")
    with pytest.raises(DataError, match="no requests"):
        read_request_log(p)


def test_reader_lambda_beta(tmp_path):
    rows = [_row(0, **{"lambda": 0.5, "beta": 0.1, "lambda_t": 2}), _row(1), _row(2, **{"lambda": 0})]
    log = read_request_log(_write(tmp_path / "log.jsonl", rows))
    assert log.lams == [0.5, None, 0.0] and log.betas == [0.1, None, None] and log.lam_ts == [2.0, None, None]
    plain = read_request_log(_write(tmp_path / "plain.jsonl", [_row(0)]))
    assert plain.lams is None and plain.lam_ts is None
    for bad, msg in (({"lambda": -1}, ">= 0"), ({"beta": "high"}, "finite number"), ({"lambda_t": -0.5}, ">= 0"),
                     ({"lambda_t": True}, "finite number"), ({"lambda_t": float("inf")}, "finite number")):
        with pytest.raises(DataError, match=msg) as e:
            read_request_log(_write(tmp_path / "bad.jsonl", [_row(0), _row(1, **bad)]))
        assert e.value.row == 2 and e.value.field == next(iter(bad))


@pytest.fixture(scope="module")
def builtin_routers(tmp_path_factory):
    """Two routers trained on the builtin set and a log of its test queries from an epsilon-greedy
    logger (the builtin set is small: this stays a few seconds)."""
    from caproute.data.source import load_observations
    from caproute.evaluate import offpolicy as ope
    from caproute.evaluate.replay_sim import build_environment
    from caproute.routers.pipeline import train_pipeline

    d = tmp_path_factory.mktemp("replay")
    obs, name = load_observations(data="builtin")
    env = build_environment(obs, [name])
    for fam in ("knn", "best_fixed"):
        train_pipeline(env.train_obs, router=fam).save(d / fam)
    rng = np.random.default_rng(0)
    m = len(env.models)
    logger = np.full(env.n_queries, 0)
    pi0 = ope.epsilon_greedy(logger, m, 0.3)
    q = rng.integers(env.n_queries, size=400)
    chosen = np.array([rng.choice(m, p=pi0[i]) for i in q])
    reward = env.sample(q, chosen, rng)
    rows = [{"request_id": f"r{i}", "query": env.texts[qi], "candidates": list(env.models),
             "chosen": env.models[a], "propensity": float(pi0[qi, a]), "reward": float(r)}
            for i, (qi, a, r) in enumerate(zip(q, chosen, reward, strict=True))]
    log = _write(d / "log.jsonl", rows)
    greedy = [dict(r, propensity=1.0, chosen=env.models[0]) for r in rows]
    return d, log, _write(d / "greedy.jsonl", greedy)


def test_replay_cli_rows_and_plot(builtin_routers):
    d, log, _ = builtin_routers
    res = run_cli("replay", "--log", log, "--candidate", f"{d / 'knn'},{d / 'best_fixed'}", "--bootstrap", 200,
                  "--json", d / "rows.json", "--png", d / "replay.png")
    rows = json.loads((d / "rows.json").read_text())
    assert {(r["candidate"], r["estimator"]) for r in rows} == {
        (c, e) for c in ("knn", "best_fixed") for e in ("ips", "snips", "dr")}
    for r in rows:
        assert set(r) == {"candidate", "estimator", "value", "ci_low", "ci_high", "ess", "n"}
        assert r["n"] == 400 and r["ci_low"] <= r["value"] <= r["ci_high"]
    assert (d / "replay.png").read_bytes()[:4] == b"\x89PNG"
    assert "logging policy observed mean" in res.stdout


def test_replay_refuses_candidates_without_support(builtin_routers):
    d, _, greedy = builtin_routers
    res = run_cli("replay", "--log", greedy, "--candidate", d / "knn", check=False)
    assert res.returncode == 2
    assert "candidate 'knn' cannot be evaluated" in (res.stdout + res.stderr)
    res = run_cli("replay", "--log", d / "missing.jsonl", "--candidate", d / "knn", check=False)
    assert res.returncode == 2 and "missing.jsonl" in res.stderr


def test_simulate_builtin_small(tmp_path):
    out = tmp_path / "sim.json"
    run_cli("replay", "simulate", "--data", "builtin", "--explore", "0.3", "--requests", 300, "--seeds", 2,
            "--candidates", "knn,best_fixed", "--logger", "best_fixed", "--outcome", "ridge",
            "--bootstrap", 100, "--json", out)
    res = json.loads(out.read_text())
    est = {(r["candidate"], r["estimator"]) for r in res["summary"]}
    assert ("knn", "dr") in est and ("best_fixed", "ips") in est
    assert {r["family"] for r in res["retrained_summary"]} == {"knn", "knn-imputed", "knn-partial", "ridge"}
    assert len(res["rows"]) == 2 * (1 + 2 * 3)
    # best_fixed is the logger: its IPS weights are 1 / (1 - eps + eps/m) on agreeing requests
    assert all(abs(r["truth"] - res["meta"]["true_values"][r["candidate"]]) < 1e-12
               for r in res["rows"] if r["candidate"] in ("knn", "best_fixed"))


@pytest.mark.shared
@pytest.mark.slow
def test_simulate_routerdc_small(routerdc_dir):
    """A small version of the study (docs/replay.md): DR intervals hold the truth and DR is closer
    than IPS on average."""
    from caproute.evaluate.replay_sim import SimulationConfig, load_environment, run_simulation

    env = load_environment(data=routerdc_dir, dataset="gsm8k", lam=0.05)
    res = run_simulation(env, SimulationConfig(candidates=("knn", "best_fixed"), logger="best_fixed", seeds=3,
                                               requests=1500, outcome=("ridge",), retrain=("ridge",), n_boot=200))
    s = res.summary.set_index(["candidate", "estimator"])
    assert s.loc[("knn", "dr"), "coverage"] >= 2 / 3
    assert s.loc[("knn", "dr"), "mae"] <= s.loc[("knn", "ips"), "mae"] + 0.02


def test_replay_decides_at_the_logs_lambda_beta(builtin_routers):
    """A candidate is scored at the lambda / beta the log was routed and rewarded at (issue 22), not
    at its own saved values; rows without them fall back to the saved ones."""
    from caproute.evaluate.replay import candidate_policy, decision_groups
    from caproute.routers.pipeline import RoutingPipeline

    d, log_path, _ = builtin_routers
    pipe = RoutingPipeline.load(d / "knn")
    rows = [json.loads(x) for x in log_path.read_text().splitlines()]
    half = len(rows) // 2
    logged = [dict(r, **{"lambda": 50.0, "beta": 0.0}) if i < half else r for i, r in enumerate(rows)]
    log = read_request_log(_write(d / "lam.jsonl", logged))
    groups = decision_groups(log, pipe.lam, pipe.beta)
    assert {k: v.size for k, v in groups.items()} == {(50.0, 0.0, 0.0): half,
                                                      (pipe.lam, pipe.beta, 0.0): len(rows) - half}
    pi, _, _ = candidate_policy(pipe, log)
    texts = [r["query"] for r in rows]
    at50 = [x.model for x in pipe.decide(texts[:half], lam=50.0, beta=0.0)]
    saved = [x.model for x in pipe.decide(texts, lam=pipe.lam, beta=pipe.beta)]
    chose = [log.models[j] for j in pi[:, :-1].argmax(axis=1)]
    assert chose[:half] == at50 and chose[half:] == saved[half:]
    assert at50 != saved[:half]      # lambda 50 changes the decisions on this log: the test can fail
