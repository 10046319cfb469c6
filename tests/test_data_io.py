"""Store, readers/writers and the errors bad input gets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from caproute.data.formats import detect_format, read_observations, write_observations
from caproute.data.store import ObservationStore
from caproute.errors import DataError


def dars_line(**kw):
    rec = dict(dataset="gpqa", split="train", query_id="q1", model="m/a", score=1.0, cost=0.001,
               prompt_variant_id=0, decode_id=0, original_question="What?", input_question="What, then?")
    rec.update(kw)
    return json.dumps(rec)


def write_dars(root: Path, lines_by_file: dict[str, list[str]]) -> Path:
    for rel, lines in lines_by_file.items():
        f = root / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def dars_dir(tmp_path):
    train = [dars_line(prompt_variant_id=k, decode_id=r, score=float((k + r) % 2), model=m)
             for k in range(2) for r in range(2) for m in ("m/a", "m/b")]
    test = [dars_line(split="test", query_id="t1", prompt_variant_id=-1, decode_id=r,
                      observation_type="decoding_variation", model=m) for r in range(3) for m in ("m/a", "m/b")]
    return write_dars(tmp_path / "dars", {"gpqa/train_scored_generations.jsonl": train,
                                          "gpqa/test_scored_generations.jsonl": test})


def test_dars_round_trip(dars_dir, tmp_path):
    assert detect_format(dars_dir) == "dars"
    df = read_observations(dars_dir)
    assert len(df) == 14 and set(df["split"]) == {"train", "test"}
    assert df.loc[df["split"] == "train", "observation_type"].eq("prompt_variation").all()
    assert df["question"].eq("What?").all() and df.loc[0, "rewrite_text"] == "What, then?"
    out = write_observations(df, tmp_path / "again", "dars")
    back = read_observations(out)
    key = ["split", "query_id", "model", "prompt_variant_id", "decode_id"]
    pd.testing.assert_frame_equal(df.sort_values(key).reset_index(drop=True)[key + ["score", "cost"]],
                                  back.sort_values(key).reset_index(drop=True)[key + ["score", "cost"]])


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "csv"])
def test_table_round_trip(dars_dir, tmp_path, fmt):
    df = read_observations(dars_dir)
    out = write_observations(df, tmp_path / f"obs.{fmt}", fmt)
    back = read_observations(out)
    assert len(back) == len(df)
    np.testing.assert_allclose(np.sort(back["score"]), np.sort(df["score"]))


@pytest.mark.parametrize("bad, message, field", [
    (dict(score=1.5), "out of range", "score"),
    (dict(score=float("inf")), "not a finite number", "score"),
    (dict(score="abc"), "not a number", "score"),
    (dict(cost=-0.1), "out of range", "cost"),
    (dict(split="test", observation_type="sideways"), "unknown observation_type", "observation_type"),
    (dict(split="dev"), "split must be", "split"),
    (dict(decode_id=1.5), "not an integer", "decode_id"),
])
def test_bad_rows_name_file_line_field(tmp_path, bad, message, field):
    lines = [dars_line(decode_id=0), dars_line(decode_id=1), dars_line(**{"decode_id": 2, **bad})]
    root = write_dars(tmp_path / "d", {"gpqa/train_scored_generations.jsonl": lines})
    with pytest.raises(DataError, match=message) as e:
        read_observations(root)
    assert e.value.row == 3 and e.value.field == field
    assert "train_scored_generations.jsonl" in str(e.value)


def test_missing_column_empty_file_invalid_json(tmp_path):
    f = tmp_path / "a.jsonl"
    f.write_text(json.dumps({"dataset": "d", "split": "train", "query_id": "q", "model": "m", "cost": 0}) + "\n")
    with pytest.raises(DataError, match="missing required column") as e:
        read_observations(f)
    assert e.value.field == "score"
    empty = tmp_path / "b.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match="empty"):
        read_observations(empty)
    broken = tmp_path / "c.jsonl"
    broken.write_text(dars_line() + "\n{not json\n")
    with pytest.raises(DataError, match="invalid JSON") as e:
        read_observations(broken)
    assert e.value.row == 2
    csv = tmp_path / "e.csv"
    csv.write_text("")
    with pytest.raises(DataError, match="empty"):
        read_observations(csv)


def test_conflicting_duplicate_key(tmp_path):
    lines = [dars_line(), dars_line(), dars_line(score=0.0)]
    root = write_dars(tmp_path / "d", {"gpqa/train_scored_generations.jsonl": lines})
    with pytest.raises(DataError, match="conflicting duplicate key.*line 1; .*line 3 differ in 'score'"):
        read_observations(root)
    ok = write_dars(tmp_path / "e", {"gpqa/train_scored_generations.jsonl": [dars_line(), dars_line()]})
    assert len(read_observations(ok)) == 1   # identical duplicates collapse


def test_store_idempotent_upsert_and_atomic_failure(dars_dir, tmp_path):
    df = read_observations(dars_dir)
    path = tmp_path / "obs.duckdb"
    with ObservationStore(path) as s:
        assert s.upsert(df) == len(df)
        s.upsert(df)
        assert s.count() == len(df)
        changed = df.iloc[:1].assign(score=0.25)
        s.upsert(changed)
        assert s.count() == len(df)
        assert s.read(split="train").query("decode_id == 0 and prompt_variant_id == 0 and model == 'm/a'")[
            "score"].iloc[0] == 0.25
        assert s.upsert(df, on_conflict="ignore") == 0
        with pytest.raises(DataError, match="already in the store"):
            s.upsert(df, on_conflict="error")
        bad = df.copy()
        bad.loc[len(bad) - 1, "score"] = 7.0
        with pytest.raises(DataError):
            s.upsert(bad.assign(query_id="new"))
        assert s.count() == len(df)      # nothing of the failed batch landed
        assert s.datasets() == ["gpqa"] and s.models() == ["m/a", "m/b"]
    with ObservationStore(path, read_only=True) as s:
        assert s.count(split="test") == 6


def test_atomic_writer_leaves_nothing_on_failure(tmp_path):
    df = pd.DataFrame({"x": [1]})   # not canonical -> fails before anything is written
    with pytest.raises(KeyError):
        write_observations(df, tmp_path / "out.parquet", "parquet")
    assert list(tmp_path.iterdir()) == []


def test_unknown_format_and_missing_path(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        detect_format(tmp_path / "nope.parquet")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DataError, match="--format"):
        detect_format(tmp_path / "x.txt")


def test_optional_variant_and_decode_ids_default_per_row(tmp_path):
    """prompt_variant_id / decode_id are optional in the reference format, per row too."""
    f = tmp_path / "a.jsonl"
    rows = [dict(dataset="d", split="train", query_id="q", model="m", score=1, cost=0, prompt_variant_id=2,
                 decode_id=1),
            dict(dataset="d", split="train", query_id="q", model="m", score=0, cost=0, prompt_variant_id=None)]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    df = read_observations(f).sort_values("prompt_variant_id")
    assert df["prompt_variant_id"].tolist() == [-1, 2] and df["decode_id"].tolist() == [0, 1]
    assert df["observation_type"].tolist() == ["decoding_variation", "prompt_variation"]
