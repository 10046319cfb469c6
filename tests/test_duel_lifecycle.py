"""Dueling-policy lifecycle: ``caproute duel init``, exact save/load round trips, atomic checkpoints,
and a server that is killed (SIGKILL) and restarted without losing acknowledged feedback.

Real MiniLM encoder, real HTTP (uvicorn backends, the openai client), a real `caproute serve` process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import httpx
import numpy as np
import openai
import pytest

from caproute.bandits.fgts import FGTSCDB
from caproute.bandits.policy import CONFIG_FILE, CONFIG_NEXT, STATE_FILE, STATE_NEXT, DuelingPolicy
from caproute.errors import ConfigError


def minilm():
    from caproute.features.minilm import minilm_path

    return str(minilm_path())


def random_arms(k=3, d=384, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(k, d))
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_load_save_load_keeps_the_encoder_path(tmp_path, monkeypatch):
    """The bug of issue 12: the saved encoder path was resolved twice (DIR/DIR/encoder)."""
    monkeypatch.chdir(tmp_path)
    FGTSCDB(random_arms(), ["a", "b", "c"], sampler="laplace", encoder=minilm()).save("pol", copy_encoder=True)
    p = DuelingPolicy.load("pol")
    p.save("pol")
    assert json.loads((tmp_path / "pol" / CONFIG_FILE).read_text())["params"]["encoder"] == "encoder"
    again = DuelingPolicy.load("pol")
    x = again.embed("hi")
    assert x.shape == (384,) and abs(np.linalg.norm(x) - 1) < 1e-6
    # saved elsewhere (the server's online folder): the encoder of another policy folder is copied
    # once, so the new folder is self-contained (issue 22.6: it pointed into the initial folder)
    again.save(tmp_path / "elsewhere")
    enc = json.loads((tmp_path / "elsewhere" / CONFIG_FILE).read_text())["params"]["encoder"]
    assert enc == "encoder" and (tmp_path / "elsewhere" / "encoder").is_dir()
    assert DuelingPolicy.load(tmp_path / "elsewhere").embed("hi") == pytest.approx(x)


@pytest.mark.parametrize("sampler", ["laplace", "sgld"])
def test_load_save_load_gives_the_same_selections(tmp_path, sampler):
    rng = np.random.default_rng(1)
    arms = random_arms(4, 16)
    p = FGTSCDB(arms, ["a", "b", "c", "d"], sampler=sampler, n_sgld=3, n_sgld_warm=3, seed=5)
    for _ in range(20):
        x = rng.normal(size=16)
        i, j = p.select(x)
        p.update(x, i, j, 1 if rng.random() < 0.5 else -1)
    p.checkpoint_ = {"feedback_store_id": "s", "feedback_seq": 20}
    p.save(tmp_path / "p")
    DuelingPolicy.load(tmp_path / "p").save(tmp_path / "p")  # load -> save -> load
    q = DuelingPolicy.load(tmp_path / "p")
    assert q.t_ == p.t_ == 20 and q.checkpoint_ == p.checkpoint_
    xs = np.random.default_rng(2).normal(size=(15, 16))
    for x in xs:
        a, b = p.select(x), q.select(x)
        assert a == b
        p.update(x, *a, 1)
        q.update(x, *b, 1)
    np.testing.assert_array_equal(p.predict_scores(xs[0]), q.predict_scores(xs[0]))


def test_an_interrupted_save_leaves_a_consistent_policy(tmp_path):
    """Simulate a kill at each step of the save protocol: load always gets a whole checkpoint."""
    d = tmp_path / "p"
    p = FGTSCDB(random_arms(3, 8), sampler="laplace", seed=0)
    p.save(d)
    old = DuelingPolicy.load(d)
    x = np.ones(8)
    p.update(x, 0, 1, 1)
    p.save(tmp_path / "new")  # the files the next save of d would write
    new_cfg, new_state = (tmp_path / "new" / CONFIG_FILE).read_bytes(), (tmp_path / "new" / STATE_FILE).read_bytes()
    # 1) killed after writing the state but before the config: the old pair
    (d / STATE_NEXT).write_bytes(new_state)
    assert DuelingPolicy.load(d).t_ == old.t_ == 0
    # 2) both pending files written, nothing renamed yet: roll forward to the new pair
    (d / CONFIG_NEXT).write_bytes(new_cfg)
    assert DuelingPolicy.load(d).t_ == 1
    # 3) state renamed, config not yet: still the new pair (never a mismatched state/config)
    os.replace(d / STATE_NEXT, d / STATE_FILE)
    assert DuelingPolicy.load(d).t_ == 1
    # 4) a pending config whose state is gone or corrupt is ignored ... and the committed pair checked
    (d / STATE_FILE).write_bytes(b"junk")
    with pytest.raises(ConfigError, match="checksum"):
        DuelingPolicy.load(d)


# -- caproute duel init -------------------------------------------------------------------------------
def caproute(*args, timeout=600, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "caproute", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, **kw)


def small_builtin(tmp_path):
    """24 queries of the builtin data (keeps the CCFT fine-tuning and the encoding short)."""
    from caproute.data.source import load_observations

    obs, _ = load_observations(data="builtin")
    keep = sorted(obs["query_id"].unique())[:24]
    small = tmp_path / "small.parquet"
    obs[obs["query_id"].isin(keep)].to_parquet(small)
    return small


@pytest.mark.slow
def test_duel_init_builds_a_servable_policy(tmp_path):
    small = small_builtin(tmp_path)
    out = tmp_path / "policy"
    res = caproute("duel", "init", "--data", small, "--embeddings", "ccft-excel-perf-cost",
                   "--models", "smollm2-135m,gemma3-270m", "--out", str(out), "--cache", str(tmp_path / "cache"))
    assert res.returncode == 0, res.stderr
    assert "2 arms" in res.stdout
    p = DuelingPolicy.load(out)
    # the one default set (issue 24.1): the paper's FGTS.CDB on the paper's CCFT arms
    assert p.models_ == ("smollm2-135m", "gemma3-270m") and p.sampler == "sgld" and p.t_ == 0
    assert (p.eta, p.mu, p.horizon) == (0.25, None, 5000)
    assert (out / "encoder" / "modules.json").exists() and p.feature_scale > 1  # self-contained, auto scale
    info = json.loads((out / "init.json").read_text())
    assert info["n_queries"] == 24 and info["embeddings"] == "ccft-excel-perf-cost"
    assert info["method"] == "FGTS.CDB (SGLD, η 0.25, μ 1/√T)" and "method: FGTS.CDB (SGLD" in res.stdout
    assert info["settings"]["arm_residual"] == 0.0 and info["settings"]["sampler"] == "sgld"
    # moved elsewhere it still loads and embeds (the encoder path is relative)
    moved = tmp_path / "moved"
    shutil.move(str(out), moved)
    assert DuelingPolicy.load(moved).embed("How many legs do 3 spiders have?").shape == (p.dim,)
    # the old experiment command is unchanged, errors are named
    bad = caproute("duel", "init", "--data", small, "--models", "nope", "--out", str(tmp_path / "x"))
    assert bad.returncode == 2 and "nope" in bad.stderr and "Traceback" not in bad.stderr
    again = caproute("duel", "init", "--data", small, "--embeddings", "minilm", "--out", str(moved))
    assert again.returncode == 2 and "exists" in again.stderr


# -- the server: checkpoints and kill -9 --------------------------------------------------------------
def _wait_healthy(url: str, proc, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited {proc.returncode}: {proc.stderr.read()}")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError("server did not come up")


@pytest.mark.slow
def test_server_kill9_restart_keeps_every_acknowledged_feedback(tmp_path):
    from caproute.serve.echo import echo_app
    from caproute.serve.testing import TEST_MODELS, UvicornThread, free_port, train_router, write_pool_yaml

    backends = {n: UvicornThread(echo_app(n)).start() for n in TEST_MODELS}
    try:
        pool = write_pool_yaml(tmp_path / "pool.yaml", [{"name": n, "base_url": b.base_url + "/v1", "model": n}
                                                         for n, b in backends.items()])
        router = train_router(tmp_path / "router")
        FGTSCDB(random_arms(), list(TEST_MODELS), sampler="laplace", feel_good="tilt", seed=0,
                encoder=minilm()).save(tmp_path / "policy")
        online = tmp_path / "online"
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        cmd = ["serve", "--router", f"r={router}", "--pool", str(pool), "--insecure-local", "--port", str(port),
               "--feedback-db", str(tmp_path / "fb.sqlite3"), "--duel-policy", str(tmp_path / "policy"),
               "--duel-state-out", str(online)]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}

        def start():
            proc = subprocess.Popen([sys.executable, "-m", "caproute", *cmd], env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
            _wait_healthy(url, proc)
            return proc

        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=120)

        def duel_and_vote(text: str) -> dict:
            d = client.chat.completions.create(model="caproute/duel", messages=[{"role": "user", "content": text}],
                                               max_tokens=4).model_extra["caproute"]["duel"]
            a, b = d["response_ids"]
            r = httpx.post(url + "/v1/feedback", json={"winner_id": a, "loser_id": b}, timeout=60)
            assert r.status_code == 200 and r.json()["policy_updated"] is True
            return d

        proc = start()
        for k in range(3):
            duel_and_vote(f"question number {k}")
        assert DuelingPolicy.load(online).t_ == 3
        shutil.copytree(online, tmp_path / "checkpoint-3")
        for k in range(3, 5):
            duel_and_vote(f"question number {k}")
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        after_kill = DuelingPolicy.load(online)
        assert after_kill.t_ == 5 and after_kill.checkpoint_["feedback_seq"] == 5

        # the crash window: feedback 4 and 5 acknowledged (fsync'd) but the process died before
        # their checkpoint was written -> the restarted server re-applies exactly those two
        shutil.rmtree(online)
        shutil.copytree(tmp_path / "checkpoint-3", online)
        assert DuelingPolicy.load(online).t_ == 3
        proc = start()
        try:
            restored = DuelingPolicy.load(online)
            assert restored.t_ == 5 and restored.checkpoint_["feedback_seq"] == 5
            np.testing.assert_allclose(restored.theta_map_, after_kill.theta_map_, atol=1e-6)
            duel_and_vote("question number 5")  # and it goes on from there, nothing applied twice
            assert DuelingPolicy.load(online).t_ == 6
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    finally:
        for b in backends.values():
            b.stop()


@pytest.mark.slow
def test_duel_init_with_the_offline_prior(tmp_path):
    small = small_builtin(tmp_path)
    out = tmp_path / "policy"
    res = caproute("duel", "init", "--data", small, "--embeddings", "minilm", "--offline-prior", "--eta", "4",
                   "--sampler", "laplace", "--arm-residual", "0.5", "--out", str(out), "--cache", str(tmp_path / "cache"))
    assert res.returncode == 0, res.stderr
    assert "offline prior from 24 scored queries" in res.stdout
    p = DuelingPolicy.load(out)
    assert p.prior_mean.shape == (p.dim,) and p.prior_cov.shape == (p.dim, p.dim)
    assert float(np.abs(p.prior_mean).max()) > 0 and np.array_equal(p.theta_map_, p.prior_mean)
    info = json.loads((out / "init.json").read_text())
    assert info["offline_prior"] is True and info["prior_weight"] == 1.0
    # every extension is an explicit option, and the output names it
    assert info["settings"]["arm_residual"] == 0.5 and info["settings"]["eta"] == 4.0
    assert info["method"] == "FGTS.CDB (Laplace+importance, η 4, μ 1/√T; arm component γ 0.5, offline prior)"
    bad = caproute("duel", "init", "--data", small, "--policy", "uniform", "--offline-prior",
                   "--out", str(tmp_path / "u"))
    assert bad.returncode == 2 and "fgts-cdb" in bad.stderr and "Traceback" not in bad.stderr
