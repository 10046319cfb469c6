"""The README loop from the CLI alone (issue 22.6, the parts outside the proxy): a judge-scored chat
task from `pool up --judge`, the "no task" hint, idempotent re-runs that say so, duels of two
different models, and an online policy folder that is self-contained and says where it resumed."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from caproute.errors import ConfigError


def _members(names):
    from caproute.collect.pool import PoolMember

    return [PoolMember(n, n, 9000 + i, 0, "/dev/null", "/dev/null") for i, n in enumerate(names)]


def test_pool_config_with_judge_writes_a_judge_scored_chat_task(tmp_path):
    from caproute.collect.config import dump_pool_config, load_pool_config
    from caproute.collect.pool import pool_config_for

    names = ["smollm2-135m", "smollm2-135m-q2k"]
    plain = pool_config_for(_members(names))
    assert "chat" not in plain.tasks
    cfg = pool_config_for(_members(names), judge="smollm2-135m")
    dump_pool_config(cfg, tmp_path / "pool.yaml")
    chat = load_pool_config(tmp_path / "pool.yaml").task("chat")
    assert chat.scorer == "judge" and chat.scorer_args["judge"] == "smollm2-135m" and chat.kind == "chat"
    assert chat.render("Write a haiku about rain.") == "Write a haiku about rain."
    with pytest.raises(ConfigError, match="--judge gpt-4: not a model of the pool"):
        pool_config_for(_members(names), judge="gpt-4")


def test_missing_chat_task_says_how_to_add_one():
    from caproute.collect.pool import pool_config_for

    cfg = pool_config_for(_members(["smollm2-135m"]))
    with pytest.raises(ConfigError) as e:
        cfg.task("chat")
    assert "caproute pool up --judge MODEL" in str(e.value) and "tasks:" in str(e.value)
    with pytest.raises(ConfigError, match="add one under 'tasks:'"):
        cfg.task("code")


def test_import_twice_says_nothing_new(tmp_path):
    from caproute.cli import app

    store = tmp_path / "s.duckdb"
    first = CliRunner().invoke(app, ["import", "builtin", "--store", str(store)])
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(app, ["import", "builtin", "--store", str(store)])
    out = " ".join(again.output.split())
    assert "imported 0 new observations" in out and "3150 already present" in out, out
    assert "imported 3150 new observations" in " ".join(first.output.split())


def test_store_merge_counts_new_and_present(tmp_path):
    from caproute.data.source import read_source
    from caproute.data.store import ObservationStore

    obs = read_source("builtin").head(10)
    with ObservationStore(tmp_path / "s.duckdb") as s:
        assert s.merge(obs.head(4)) == (4, 0)
        assert s.merge(obs) == (6, 4)
        assert s.merge(obs) == (0, 10)
        assert s.upsert(obs) == 10          # the older verb still returns rows written


def _fgts(allow_same: bool, **kw):
    from caproute.bandits.fgts import FGTSCDB

    arms = np.random.default_rng(0).normal(size=(3, 4))
    pol = FGTSCDB(arms, ["a", "b", "c"], sampler="laplace", seed=1, **kw)
    pol.allow_same_ = allow_same
    return pol


def test_duels_pair_two_different_models_unless_allowed(tmp_path):
    from caproute.bandits.policy import DuelingPolicy

    xs = np.random.default_rng(2).normal(size=(60, 4))
    same = [i == j for i, j in (_fgts(True).select(x) for x in xs)]
    assert any(same)                            # the paper's policy may draw one arm twice
    strict = _fgts(False)
    assert not any(i == j for i, j in (strict.select(x) for x in xs))
    assert any(i == j for i, j in (strict.select(x, distinct=False) for x in xs))
    strict.save(tmp_path / "p")
    assert DuelingPolicy.load(tmp_path / "p").allow_same_ is False


def test_online_policy_folder_is_self_contained_and_names_its_step(tmp_path):
    import json
    import shutil

    from caproute.bandits.lifecycle import resume_policy
    from caproute.bandits.policy import DuelingPolicy

    enc = tmp_path / "cache-encoder"
    enc.mkdir()
    (enc / "weights.bin").write_bytes(b"not a real encoder: it is loaded lazily")
    pol = _fgts(False, encoder=str(enc))
    pol.save(tmp_path / "policy", copy_encoder=True)                  # what `duel init` writes
    start = resume_policy(tmp_path / "policy", tmp_path / "policy-online")
    assert not start.resumed and "started from" in start.message and "t = 0" in start.message
    online = start.policy
    online.update(np.ones(4), 0, 1, 1)
    online.checkpoint_ = {"feedback_seq": 8}
    online.save(tmp_path / "policy-online")                            # the server's checkpoint
    online.save(tmp_path / "policy-online")                            # again: the copy is kept
    config = json.loads((tmp_path / "policy-online" / "config.json").read_text())
    assert config["params"]["encoder"] == "encoder"
    assert (tmp_path / "policy-online" / "encoder" / "weights.bin").exists()
    shutil.rmtree(tmp_path / "policy")                                 # the initial folder is gone
    again = resume_policy(tmp_path / "policy", tmp_path / "policy-online")
    assert again.resumed and again.step == 1
    assert again.message == f"duel policy: resumed from {tmp_path / 'policy-online'} at step t = 1, feedback seq 8"
    assert DuelingPolicy.load(tmp_path / "policy-online").encoder == str((tmp_path / "policy-online" / "encoder").resolve())
