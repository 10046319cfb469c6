"""Round trips compare EVERY column (issue 11): write each export format, read it back, and the
canonical frame is unchanged — keys, numbers, texts, missing values and flags alike."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from caproute.data import schema
from caproute.data.formats import read_observations, write_observations
from caproute.data.source import read_source
from caproute.data.store import ObservationStore
from caproute.data.validate import canonicalize

FORMATS = {"dars": "dars_out", "parquet": "obs.parquet", "jsonl": "obs.jsonl", "csv": "obs.csv"}


def assert_same_observations(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Equal as sets of rows, column by column (missing == missing; floats exactly)."""
    key = list(schema.KEY_COLUMNS)
    assert len(a) == len(b)
    a = a.sort_values(key).reset_index(drop=True)
    b = b.sort_values(key).reset_index(drop=True)
    for c in schema.COLUMN_NAMES:
        x, y = a[c].astype(object).tolist(), b[c].astype(object).tolist()
        for i, (u, v) in enumerate(zip(x, y, strict=True)):
            u_na, v_na = pd.isna(u), pd.isna(v)
            assert u_na == v_na and (u_na or u == v), \
                f"column {c!r}, row {dict(a.loc[i, key])}: {u!r} != {v!r}"


def edge_case_frame() -> pd.DataFrame:
    """Rows that have broken round trips before: no rewrite on original-query rows, a rewrite
    without a question, text a CSV reader would turn into NaN, commas/quotes/newlines/unicode,
    free-form training observation types, optional values missing, big token counts."""
    rows = []
    for i, (qid, model) in enumerate([("q1", "m/a"), ("NA", "null"), ("007", "None"), ("q,4", 'm"x')]):
        for k, r, split, otype in [(-1, 0, "train", None), (0, 0, "train", "repeated"), (1, 1, "train", None),
                                   (0, 0, "test", "prompt_variation"), (-1, 1, "test", "decoding_variation")]:
            rows.append({
                "dataset": "set/one" if i % 2 else "gpqa", "split": split, "query_id": qid, "model": model,
                "prompt_variant_id": k, "decode_id": r, "observation_type": otype,
                "score": [0.1 + 0.2, 1.0, 0.0, 1 / 3][i], "cost": [0.0, 1e-9, 12345.678, 2.5e-5][i],
                "question": None if (i == 3 and k >= 0) else f"Q {qid}: what is 2+2?\nSay \"4\", ünïcode ✓",
                "context": "passage, with comma" if i == 1 else None,
                "rewrite_text": None if k < 0 else f"rewrite {k} of {qid}",
                "response_text": None if r else "Final Answer: 4\n",
                "input_tokens": [12, None, 2**40, 0][i], "output_tokens": [5, 7, None, 3][i],
                "latency_s": [0.25, None, 3.0, 1e-6][i], "cost_known": [True, False, None, True][i],
            })
    return canonicalize(pd.DataFrame(rows), source="edge cases")


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_edge_cases_round_trip_every_column(fmt, tmp_path):
    df = edge_case_frame()
    assert set(df["observation_type"]) >= {"repeated", "prompt_variation", "decoding_variation"}
    out = write_observations(df, tmp_path / FORMATS[fmt], fmt)
    back = read_observations(out)
    assert_same_observations(df, back)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_builtin_round_trips_every_column(fmt, tmp_path):
    df = read_source("builtin")
    out = write_observations(df, tmp_path / FORMATS[fmt], fmt)
    assert_same_observations(df, read_observations(out))


def test_dars_export_keeps_rewrite_text_of_every_row(tmp_path):
    """The former loss: original-query rows came back with the question as their rewrite text."""
    df = read_source("builtin")
    back = read_observations(write_observations(df, tmp_path / "d", "dars"))
    key = list(schema.KEY_COLUMNS)
    merged = df.merge(back, on=key, suffixes=("", "_back"))
    assert len(merged) == len(df)
    changed = ~((merged["rewrite_text"].isna() & merged["rewrite_text_back"].isna())
                | (merged["rewrite_text"] == merged["rewrite_text_back"]).fillna(False).astype(bool))
    assert int(changed.sum()) == 0


def test_dars_training_rows_keep_any_observation_type(tmp_path):
    """The DARS reference format: training rows may carry any observation_type or none."""
    root = tmp_path / "dars" / "gpqa"
    root.mkdir(parents=True)
    base = dict(dataset="gpqa", query_id="q1", model="m", score=1.0, cost=0.0, original_question="Q")
    lines = [dict(base, split="train", prompt_variant_id=0, decode_id=0, observation_type="repeated"),
             dict(base, split="train", prompt_variant_id=0, decode_id=1),
             dict(base, split="train", prompt_variant_id=-1, decode_id=0, observation_type="")]
    (root / "train_scored_generations.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    df = read_observations(tmp_path / "dars")
    assert sorted(df["observation_type"]) == ["decoding_variation", "prompt_variation", "repeated"]


def test_store_round_trip_via_cli_every_column(tmp_path):
    """import -> export (each format) -> import into a fresh store: the same rows, every column."""
    cli = [sys.executable, "-m", "caproute"]
    store = tmp_path / "a.duckdb"
    df = edge_case_frame()
    with ObservationStore(store) as s:
        s.upsert(df, source="edge cases")
        stored = s.read()
    assert_same_observations(df, stored)
    for fmt, name in FORMATS.items():
        out = tmp_path / name
        res = subprocess.run([*cli, "export", str(out), "--store", str(store), "--format", fmt],
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        other = tmp_path / f"{fmt}.duckdb"
        res = subprocess.run([*cli, "import", str(out), "--store", str(other)], capture_output=True, text=True,
                             timeout=300)
        assert res.returncode == 0, res.stderr
        with ObservationStore(other, read_only=True) as s:
            assert_same_observations(df, s.read())


def test_export_replaces_only_its_own_output(tmp_path):
    df = edge_case_frame()
    out = tmp_path / "d"
    write_observations(df, out, "dars")
    assert (out / ".caproute-export.json").exists()
    write_observations(df.iloc[:5], out, "dars")        # an earlier export is replaced
    assert len(read_observations(out)) == 5
    (out / "notes.txt").write_text("mine")
    with pytest.raises(Exception, match="did not write"):
        write_observations(df, out, "dars")
    assert (out / "notes.txt").read_text() == "mine" and len(read_observations(out)) == 5


def test_files_written_honour_umask(tmp_path):
    import os

    from caproute.core.atomic import atomic_file

    old = os.umask(0o022)
    try:
        write_observations(edge_case_frame(), tmp_path / "a.parquet", "parquet")
        write_observations(edge_case_frame(), tmp_path / "d", "dars")
        with atomic_file(tmp_path / "x.txt") as tmp:
            tmp.write_text("x")
        os.umask(0o077)
        write_observations(edge_case_frame(), tmp_path / "b.csv", "csv")
    finally:
        os.umask(old)
    assert (tmp_path / "a.parquet").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "x.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755
    assert all(p.stat().st_mode & 0o777 in (0o644, 0o755) for p in (tmp_path / "d").rglob("*"))
    assert (tmp_path / "b.csv").stat().st_mode & 0o777 == 0o600
