"""``caproute collect --engine ray``: queries sharded across Ray workers, merged idempotently.

Against a real OpenAI-compatible HTTP server whose answers depend on the request seed (the server of
tests/test_collect_runner.py: ``Final Answer: <seed mod 2>``, rewrites valid for even seeds only), so
equal stores mean the same requests were made with the same seeds. Ray runs locally on loopback
(``num_cpus=2``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from caproute.cli import app  # noqa: E402
from caproute.cli.params import SEED_DEFAULT  # noqa: E402  (the CLI's --seed default)
from caproute.collect.config import dump_pool_config  # noqa: E402
from caproute.collect.distributed import FAULT_ENV, shard_of, work_dir_for  # noqa: E402
from caproute.collect.plan import CollectSpec, generation_seed  # noqa: E402
from caproute.collect.queries import load_queries  # noqa: E402
from caproute.collect.runner import collect  # noqa: E402
from caproute.data import schema  # noqa: E402
from caproute.data.collect_tables import REWRITES_TABLE  # noqa: E402
from caproute.data.store import ObservationStore  # noqa: E402
from test_collect_runner import Server, pool_cfg  # noqa: E402

N_TRAIN, N_TEST = 8, 4
KEY = list(schema.KEY_COLUMNS)
COMPARE = KEY + ["score", "cost", "question", "rewrite_text", "response_text", "input_tokens", "output_tokens"]


def test_shards_are_a_stable_partition():
    ids = [f"q{i}" for i in range(200)]
    for n in (1, 3, 7):
        s = [shard_of(q, n) for q in ids]
        assert set(s) == set(range(n)) and s == [shard_of(q, n) for q in ids]
    # hand-checked: sha256("shard||q0") -> first 8 bytes big-endian mod 2**31, then mod 3
    import hashlib

    h = int.from_bytes(hashlib.sha256(b"shard||q0").digest()[:8], "big") % (1 << 31)
    assert shard_of("q0", 3) == h % 3


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture(scope="module")
def files(tmp_path_factory, server):
    d = tmp_path_factory.mktemp("ray")
    rows = [
        {"query_id": f"q{i}", "question": f"What is {i} + 1?", "answer": "1",
         "split": "train" if i < N_TRAIN else "test"}
        for i in range(N_TRAIN + N_TEST)
    ]
    (d / "q.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    dump_pool_config(pool_cfg(server.url), d / "pool.yaml")
    return d


def run_cli(files, store, *extra):
    args = ["collect", "--config", str(files / "pool.yaml"), "--queries", str(files / "q.jsonl"),
            "--store", str(store), "--task", "t", "--dataset", "d", "--rewrites", "2", "--decodes", "2",
            "--test-rewrites", "2", "--test-decodes", "2", "--no-similarity-check", *extra]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output + repr(res.exception)
    return res.output


def table(store, what="obs") -> pd.DataFrame:
    with ObservationStore(store, read_only=True) as s:
        if what == "obs":
            df = s.read(dataset="d")[COMPARE]
        else:
            df = s.connection.execute(f"SELECT query_id, variant_id, text, source FROM {REWRITES_TABLE}").df()
    return df.sort_values(list(df.columns[:6] if what == "obs" else df.columns[:2])).reset_index(drop=True)


@pytest.fixture(scope="module")
def local_store(files):
    store = files / "local.duckdb"
    run_cli(files, store)
    return store


EXPECTED = 2 * (N_TRAIN * 4 + N_TEST * 4)  # models x (train 2x2 | test 2 rewrites + 2 decodes)


@pytest.mark.slow
def test_ray_equals_local_and_rerun_is_a_noop(ray_local, files, local_store, server):
    store = files / "ray.duckdb"
    out = run_cli(files, store, "--engine", "ray", "--shards", "3")
    assert "shards: 3/3 merged, 0 failed" in out
    local, ray_obs = table(local_store), table(store)
    assert len(ray_obs) == EXPECTED and not ray_obs.duplicated(KEY).any()
    assert ray_obs["score"].nunique() == 2  # seeds decide the answers: equality below is not vacuous
    pd.testing.assert_frame_equal(local, ray_obs)
    pd.testing.assert_frame_equal(table(local_store, "rw"), table(store, "rw"))
    assert not work_dir_for(store, "d").exists()  # shard files merged and removed
    n = server.count()
    out = run_cli(files, store, "--engine", "ray")
    assert "to generate: 0" in out and server.count() == n


@pytest.mark.slow
def test_killed_shard_worker_is_retried_without_loss_or_duplicates(
    ray_local, files, local_store, server, monkeypatch, tmp_path
):
    store = tmp_path / "ray.duckdb"
    marker = tmp_path / "killed.json"
    monkeypatch.setenv(FAULT_ENV, f"shard=1,after=5,marker={marker}")
    start = len(server.requests)
    out = run_cli(files, store, "--engine", "ray", "--shards", "2")
    assert marker.exists(), "the fault hook never fired"
    assert "shards: 2/2 merged, 0 failed" in out
    got = table(store)
    assert len(got) == EXPECTED and not got.duplicated(KEY).any()
    pd.testing.assert_frame_equal(table(local_store), got)
    # the rows the killed worker had flushed were not requested again by its retry
    flushed = json.loads(marker.read_text())
    assert len(flushed) >= 5
    reqs = [r for r in server.requests[start:] if r["messages"][0]["role"] != "system"]
    sent = pd.Series([(r["model"], int(r["seed"])) for r in reqs]).value_counts()
    spec = CollectSpec(dataset="d", task="t", models=("a", "b"), seed=SEED_DEFAULT)
    for _, _, qid, model, k, r, _ in flushed:
        assert sent[(model, generation_seed(spec, qid, model, int(k)) + int(r))] == 1


@pytest.mark.slow
def test_shard_file_left_by_a_killed_driver_is_merged_first(ray_local, files, local_store, server, tmp_path):
    # what a killed driver leaves behind: a shard file holding part of the work (here: q0 and q9)
    store = tmp_path / "ray.duckdb"
    q = load_queries(files / "q.jsonl")
    part = q[q["query_id"].isin(["q0", "q9"])].reset_index(drop=True)
    wdir = work_dir_for(store, "d")
    left = wdir / "shard-0001-of-0005.duckdb"
    spec = CollectSpec(dataset="d", task="t", models=("a", "b"), rewrites=2, decodes=2, test_rewrites=2,
                       test_decodes=2, similarity_check=False, seed=SEED_DEFAULT)  # as the CLI run below
    collect(pool_cfg(server.url), part, left, spec, progress=False)
    start = len(server.requests)
    out = run_cli(files, store, "--engine", "ray", "--shards", "2")
    assert "recovered 16 observations from shard-0001-of-0005.duckdb" in out
    assert f"to generate: {EXPECTED - 16}" in out
    pd.testing.assert_frame_equal(table(local_store), table(store))
    asked = {r["messages"][-1]["content"] for r in server.requests[start:] if r["messages"][0]["role"] != "system"}
    assert not any("What is 0 + 1?" in a or "What is 9 + 1?" in a for a in asked)
    assert not wdir.exists()
