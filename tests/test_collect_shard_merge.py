"""Merging a shard file of ``collect --engine ray`` into the main store carries the scorer details
(judge prompts and verdicts, code-exec outcomes) with the observations, and the judge cache,
idempotently; no Ray needed."""

from __future__ import annotations

import pandas as pd

from caproute.collect.distributed import recover_shard_files
from caproute.collect.judge import CACHE_TABLE, ensure_cache_table
from caproute.data.collect_tables import DETAILS_TABLE, ensure_side_tables
from caproute.data.source import load_observations
from caproute.data.store import ObservationStore


def _details(obs: pd.DataFrame) -> pd.DataFrame:
    keys = ["dataset", "split", "query_id", "model", "prompt_variant_id", "decode_id", "observation_type"]
    d = obs[keys].copy()
    d["scorer"] = "judge"
    d["status"] = "ok"
    d["parsed"] = True
    d["score"] = obs["score"].to_numpy()
    d["scoring_cost"] = 1e-6
    d["detail"] = [f'{{"verdict": "Rating: {i}"}}' for i in range(len(d))]
    return d


def test_shard_details_reach_the_main_store_once(tmp_path):
    obs, _ = load_observations(data="builtin")
    obs = obs[obs["prompt_variant_id"] == -1].head(6).reset_index(drop=True)
    dataset = str(obs["dataset"].iloc[0])
    work = tmp_path / "obs.duckdb.shards" / dataset
    work.mkdir(parents=True)
    shard = work / "shard-0-of-2.duckdb"
    with ObservationStore(shard) as s:
        ensure_side_tables(s.connection)
        s.upsert(obs, source="shard")
        det = _details(obs)
        # a detail whose observation is not in the shard (never merged): must not reach the store
        stray = det.iloc[[0]].copy()
        stray["query_id"] = "not-collected"
        s.connection.register("_d", pd.concat([det, stray], ignore_index=True))
        s.connection.execute(f"INSERT INTO {DETAILS_TABLE} SELECT * FROM _d")
        s.connection.unregister("_d")
        ensure_cache_table(s.connection)
        s.connection.execute(f"INSERT INTO {CACHE_TABLE} VALUES ('k1', 'smollm2-135m', 'abc', 'pointwise', "
                             "'the prompt', 'Score: 7', 'ok', '7', 1e-6, 10, 3, 0.0)")
    main = tmp_path / "obs.duckdb"
    with ObservationStore(main) as store:
        ensure_side_tables(store.connection)
        assert recover_shard_files(store, dataset, work) == 6
        got = store.connection.execute(f"SELECT * FROM {DETAILS_TABLE} ORDER BY decode_id").df()
        assert len(got) == 6 and set(got["query_id"]) == set(obs["query_id"])
        assert got["detail"].str.contains("Rating").all()
        cache = store.connection.execute(f"SELECT key, raw FROM {CACHE_TABLE}").fetchall()
        assert cache == [("k1", "Score: 7")]          # a re-scoring on the main store reuses the call
    assert not shard.exists()
    # the same shard merged again (a retried merge): nothing duplicated
    with ObservationStore(shard) as s:
        ensure_side_tables(s.connection)
        s.upsert(obs, source="shard")
        s.connection.register("_d", _details(obs))
        s.connection.execute(f"INSERT INTO {DETAILS_TABLE} SELECT * FROM _d")
        s.connection.unregister("_d")
    with ObservationStore(main) as store:
        assert recover_shard_files(store, dataset, work) == 0
        assert store.connection.execute(f"SELECT COUNT(*) FROM {DETAILS_TABLE}").fetchone()[0] == 6
        assert len(store.read(dataset=dataset)) == 6
