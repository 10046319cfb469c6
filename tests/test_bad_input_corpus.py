"""Bad-input corpus (issue 11): one table of (command, input, expected named error).

Every case must exit with status 2, print no traceback, name the file / line / field (or the
option) and what is wrong, and leave the observation store exactly as it was (row count and a
checksum of its rows). Most cases run the CLI in-process (fast); ``SUBPROCESS`` cases run
``python -m caproute`` end to end, including a store locked by another process.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from caproute.data.store import ObservationStore

CLI = [sys.executable, "-m", "caproute"]


def row(**kw) -> dict:
    rec = dict(dataset="gpqa", split="train", query_id="q1", model="m/a", score=1.0, cost=0.001,
               prompt_variant_id=0, decode_id=0, original_question="What?", input_question="What, then?")
    rec.update(kw)
    return rec


def good_rows() -> list[dict]:
    return [row(query_id=q, model=m, decode_id=r, score=float((r + len(q)) % 2))
            for q in ("q1", "q22") for m in ("m/a", "m/b") for r in range(2)]


def jsonl(path: Path, lines: list[dict | str | bytes]) -> Path:
    """Write JSONL; a str is written as is, bytes raw (for bad encodings)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    out = b""
    for x in lines:
        if isinstance(x, dict):
            x = json.dumps(x)
        out += (x if isinstance(x, bytes) else x.encode("utf-8")) + b"\n"
    path.write_bytes(out)
    return path


def bad_jsonl(tmp: Path, line2: dict | str | bytes, name: str = "bad.jsonl") -> Path:
    """A JSONL file whose line 2 is bad (line 1 is good)."""
    return jsonl(tmp / name, [row(), line2, row(decode_id=5)])


def dars(tmp: Path, files: dict[str, list[dict]]) -> Path:
    root = tmp / "dars"
    for rel, lines in files.items():
        jsonl(root / rel, lines)
    return root


_POOL_OK = """models:
  - {name: a, base_url: "http://127.0.0.1:9/v1", model: a, api_key_env: "", price_input_per_1m: 1, price_output_per_1m: 1}
tasks:
  t: {prompt_template: "{question}", scorer: numeric}
"""
_POOL_INF = _POOL_OK.replace("price_input_per_1m: 1,", "price_input_per_1m: .inf,")


def csv_file(tmp: Path, body: bytes) -> Path:
    p = tmp / "bad.csv"
    p.write_bytes(b"dataset,split,query_id,model,score,cost\n" + body)
    return p


def store_state(path: Path) -> tuple[int, str]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        rows = con.execute("SELECT * FROM observations ORDER BY ALL").fetchall()
    finally:
        con.close()
    return len(rows), hashlib.sha256(repr(rows).encode()).hexdigest()


@pytest.fixture
def store(tmp_path) -> Path:
    path = tmp_path / "obs.duckdb"
    with ObservationStore(path) as s:
        s.upsert(pd.DataFrame(good_rows()), source="fixture")
    return path


# (id, build(tmp, store) -> argv, expected substrings of the error)
Case = tuple[str, Callable[[Path, Path], list], list[str]]
CASES: list[Case] = [
    # ---- readers: encodings
    ("jsonl-non-utf8", lambda t, s: ["import", jsonl(t / "a.jsonl", [row(), b'{"dataset": "gpqa", "split": "train", '
                                     b'"query_id": "q\xff", "model": "m", "score": 1, "cost": 0}']), "--store", s],
     ["a.jsonl", "line 2", "field 'query_id'", "not valid UTF-8"]),
    ("jsonl-lone-surrogate", lambda t, s: ["import", bad_jsonl(t, json.dumps(row(decode_id=1))
                                           .replace("What?", "Wh\\ud800at?")), "--store", s],
     ["bad.jsonl", "line 2", "field 'original_question'", "lone surrogate"]),
    ("csv-non-utf8", lambda t, s: ["import", csv_file(t, b"gpqa,train,q1,m,1,0\ngpqa,train,q2,m\xe9,1,0\n"),
                                   "--store", s],
     ["bad.csv", "line 3", "field 'model'", "not valid UTF-8"]),
    ("jsonl-invalid-json", lambda t, s: ["import", bad_jsonl(t, "{not json"), "--store", s],
     ["bad.jsonl", "line 2", "invalid JSON"]),
    ("jsonl-not-an-object", lambda t, s: ["import", bad_jsonl(t, "[1, 2]"), "--store", s],
     ["bad.jsonl", "line 2", "one JSON object"]),
    # ---- readers: types, ranges, finite numbers
    ("input-tokens-fraction", lambda t, s: ["import", bad_jsonl(t, row(decode_id=1, prompt_tokens=1.5)), "--store", s],
     ["line 2", "field 'prompt_tokens'", "not an integer"]),
    ("input-tokens-1e30", lambda t, s: ["import", bad_jsonl(t, row(decode_id=1, input_tokens=1e30)), "--store", s],
     ["line 2", "field 'input_tokens'", "out of range"]),
    ("input-tokens-infinity", lambda t, s: ["import", bad_jsonl(
        t, json.dumps(row(decode_id=1)).replace('"decode_id": 1', '"decode_id": 1, "input_tokens": Infinity')),
        "--store", s],
     ["line 2", "field 'input_tokens'", "not a finite number"]),
    ("cost-known-yes", lambda t, s: ["import", bad_jsonl(t, row(decode_id=1, cost_known="yes")), "--store", s],
     ["line 2", "field 'cost_known'", "true or false"]),
    ("prompt-variant-1e20", lambda t, s: ["import", bad_jsonl(t, row(decode_id=1, prompt_variant_id=1e20)),
                                          "--store", s],
     ["line 2", "field 'prompt_variant_id'", "out of range"]),
    ("score-10e400", lambda t, s: ["import", bad_jsonl(t, json.dumps(row(decode_id=1)).replace(
        '"score": 1.0', '"score": 1' + "0" * 400)), "--store", s],
     ["line 2", "field 'score'", "not a finite number"]),
    ("score-nan", lambda t, s: ["import", bad_jsonl(t, json.dumps(row(decode_id=1)).replace(
        '"score": 1.0', '"score": NaN')), "--store", s],
     ["line 2", "field 'score'", "not a finite number"]),
    ("score-out-of-range", lambda t, s: ["import", bad_jsonl(t, row(decode_id=1, score=1.5)), "--store", s],
     ["line 2", "field 'score'", "out of range"]),
    ("score-text", lambda t, s: ["import", bad_jsonl(t, row(decode_id=1, score="high")), "--store", s],
     ["line 2", "field 'score'", "not a number"]),
    ("score-boolean", lambda t, s: ["import", bad_jsonl(t, row(decode_id=1, score=True)), "--store", s],
     ["line 2", "field 'score'", "not a number"]),
    ("cost-negative", lambda t, s: ["import", bad_jsonl(t, row(decode_id=1, cost=-1)), "--store", s],
     ["line 2", "field 'cost'", "out of range"]),
    ("latency-infinite", lambda t, s: ["import", bad_jsonl(t, row(decode_id=1, latency_s=1e400)), "--store", s],
     ["line 2", "field 'latency_s'", "not a finite number"]),
    ("query-id-object", lambda t, s: ["import", bad_jsonl(t, row(decode_id=1, query_id={"a": 1})), "--store", s],
     ["line 2", "field 'query_id'", "must be a string"]),
    ("model-empty", lambda t, s: ["import", bad_jsonl(t, row(decode_id=1, model="")), "--store", s],
     ["line 2", "field 'model'", "empty value"]),
    ("missing-score-column", lambda t, s: ["import", jsonl(t / "m.jsonl", [{k: v for k, v in row().items()
                                                                            if k != "score"}]), "--store", s],
     ["m.jsonl", "field 'score'", "missing required column"]),
    # ---- readers: enumerations
    ("split-enum", lambda t, s: ["import", bad_jsonl(t, row(decode_id=1, split="dev")), "--store", s],
     ["line 2", "field 'split'", "split must be one of"]),
    ("test-observation-type", lambda t, s: ["import", bad_jsonl(
        t, row(decode_id=1, split="test", observation_type="sideways")), "--store", s],
     ["line 2", "field 'observation_type'", "unknown observation_type"]),
    ("import-format-enum", lambda t, s: ["import", bad_jsonl(t, row(decode_id=1)), "--store", s, "--format", "xml"],
     ["--format", "'xml' is not one of"]),
    # ---- readers: wrong kind of file
    ("csv-format-on-parquet", lambda t, s: ["import", _parquet(t), "--format", "csv", "--store", s],
     ["obs.parquet", "is a Parquet file, not CSV"]),
    ("routerdc-format-on-csv", lambda t, s: ["import", csv_file(t, b"gpqa,train,q1,m,1,0\n"), "--format", "routerdc",
                                             "--store", s],
     ["bad.csv", "not a Parquet file"]),
    ("routerbench-format-on-csv", lambda t, s: ["import", csv_file(t, b"gpqa,train,q1,m,1,0\n"), "--format",
                                                "routerbench", "--store", s],
     ["bad.csv", "not a Parquet file"]),
    ("parquet-format-on-jsonl", lambda t, s: ["import", bad_jsonl(t, row(decode_id=1)), "--format", "parquet",
                                              "--store", s],
     ["bad.jsonl", "not a Parquet file"]),
    ("directory-as-jsonl", lambda t, s: ["import", _dir(t), "--format", "jsonl", "--store", s],
     ["somedir", "is a directory"]),
    ("directory-as-csv", lambda t, s: ["import", _dir(t), "--format", "csv", "--store", s],
     ["somedir", "is a directory"]),
    ("missing-file", lambda t, s: ["import", t / "nope.jsonl", "--store", s],
     ["nope.jsonl", "no such file"]),
    # ---- DARS directories: duplicates across files
    ("dars-conflicting-score", lambda t, s: ["import", dars(t, {
        "gpqa/train_scored_generations.jsonl": [row(), row(decode_id=1)],
        "gpqa2/train_scored_generations.jsonl": [row(dataset="gpqa", score=0.0)]}), "--store", s],
     ["conflicting duplicate key", "gpqa/train_scored_generations.jsonl line 1",
      "gpqa2/train_scored_generations.jsonl line 1", "differ in 'score'"]),
    ("dars-conflicting-response", lambda t, s: ["import", dars(t, {
        "gpqa/train_scored_generations.jsonl": [row(output_text="A")],
        "gpqa/test_scored_generations.jsonl": [row(split="train", output_text="B")]}), "--store", s],
     ["conflicting duplicate key", "differ in 'response_text'", "'A' vs 'B'"]),
    ("dars-bad-row-in-test-file", lambda t, s: ["import", dars(t, {
        "gpqa/train_scored_generations.jsonl": [row()],
        "gpqa/test_scored_generations.jsonl": [row(split="test", decode_id=0), row(split="test", cost="free")]}),
        "--store", s],
     ["test_scored_generations.jsonl", "line 2", "field 'cost'", "not a number"]),
    # ---- the store
    ("corrupt-store", lambda t, s: ["import", bad_jsonl(t, row(decode_id=1)), "--store", _garbage(t)],
     ["garbage.duckdb", "not a DuckDB database"]),
    ("directory-store", lambda t, s: ["export", t / "o.parquet", "--store", _dir(t)],
     ["somedir", "is a directory, not a DuckDB store"]),
    ("foreign-duckdb-store", lambda t, s: ["export", t / "o.parquet", "--store", _foreign_duckdb(t)],
     ["foreign.duckdb", "no 'observations' table"]),
    ("missing-store", lambda t, s: ["diagnose", "--store", t / "none.duckdb"],
     ["none.duckdb", "store does not exist"]),
    # ---- export: never replace what it did not write
    ("export-over-store", lambda t, s: ["export", s, "--store", s, "--format", "parquet"],
     ["obs.duckdb", "is the store being exported"]),
    ("export-jsonl-over-store", lambda t, s: ["export", s, "--store", s, "--format", "jsonl"],
     ["obs.duckdb", "refusing to overwrite"]),
    ("export-dars-into-dot", lambda t, s: ["export", ".", "--store", s, "--format", "dars"],
     ["refusing to replace"]),
    ("export-dars-foreign-dir", lambda t, s: ["export", _foreign_dir(t), "--store", s, "--format", "dars"],
     ["mine", "caproute did not write"]),
    ("export-parquet-named-csv", lambda t, s: ["export", t / "s.csv", "--store", s, "--format", "parquet"],
     ["s.csv", "does not match --format parquet"]),
    ("export-unknown-suffix", lambda t, s: ["export", t / "out.txt", "--store", s],
     ["out.txt", "cannot tell the format", "--format"]),
    ("export-dars-named-parquet", lambda t, s: ["export", t / "out.parquet", "--store", s, "--format", "dars"],
     ["out.parquet", "writes a directory"]),
    ("export-unknown-dataset", lambda t, s: ["export", t / "o.jsonl", "--store", s, "--dataset", "nope"],
     ["obs.duckdb", "no dataset 'nope'"]),
    ("export-under-a-file", lambda t, s: ["export", bad_jsonl(t, row()) / "x.csv", "--store", s],
     ["bad.jsonl/x.csv", "cannot create its folder"]),
    ("export-to-directory-as-file", lambda t, s: ["export", _dir(t), "--store", s, "--format", "parquet"],
     ["somedir", "is a directory"]),
    # ---- supervise / diagnose
    ("supervise-lambda-nan", lambda t, s: ["supervise", "--store", s, "--out", t / "s.parquet", "--lambda", "nan"],
     ["--lambda", "finite"]),
    ("supervise-beta-negative", lambda t, s: ["supervise", "--store", s, "--out", t / "s.parquet", "--beta", "-1"],
     ["--beta", ">= 0"]),
    ("supervise-out-directory", lambda t, s: ["supervise", "--store", s, "--out", _dir(t)],
     ["somedir", "cannot tell the format"]),
    ("supervise-out-directory-parquet", lambda t, s: ["supervise", "--store", s, "--out", _dir(t, "d.parquet")],
     ["d.parquet", "is a directory"]),
    ("supervise-out-store", lambda t, s: ["supervise", "--store", s, "--out", _copy_store(t, s, "x.parquet")],
     ["x.parquet", "DuckDB database"]),
    ("supervise-out-unknown-suffix", lambda t, s: ["supervise", "--store", s, "--out", t / "s.txt"],
     ["s.txt", "cannot tell the format"]),
    ("supervise-bad-data", lambda t, s: ["supervise", "--data", bad_jsonl(t, row(decode_id=1, score=2)),
                                         "--out", t / "s.parquet"],
     ["bad.jsonl", "line 2", "field 'score'"]),
    ("supervise-streaming-bad-parquet", lambda t, s: ["supervise", "--streaming", "--data", _parquet(t, score=(2, 7.5)),
                                                     "--out", t / "s.parquet"],
     ["obs.parquet", "line 3", "field 'score'", "out of range"]),
    ("supervise-streaming-csv-out", lambda t, s: ["supervise", "--streaming", "--data", _parquet(t),
                                                  "--out", t / "s.csv"],
     ["s.csv", "writes Parquet"]),
    ("diagnose-split-validation", lambda t, s: ["diagnose", "--store", s, "--split", "validation"],
     ["--split", "'validation' is not one of"]),
    ("diagnose-split-empty", lambda t, s: ["diagnose", "--store", s, "--split", "test"],
     ["no observations in split 'test'"]),
    ("diagnose-json-directory", lambda t, s: ["diagnose", "--store", s, "--json", _dir(t)],
     ["--json", "somedir", "is a directory"]),
    ("diagnose-png-directory", lambda t, s: ["diagnose", "--store", s, "--png", _dir(t)],
     ["--png", "somedir", "is a directory"]),
    ("diagnose-lambda-inf", lambda t, s: ["diagnose", "--store", s, "--lambda", "inf"], ["--lambda", "finite"]),
    ("diagnose-unknown-dataset", lambda t, s: ["diagnose", "--store", s, "--dataset", "nope"],
     ["no dataset 'nope'"]),
    ("diagnose-bad-data", lambda t, s: ["diagnose", "--data", bad_jsonl(t, row(decode_id=1, split="dev"))],
     ["bad.jsonl", "line 2", "field 'split'"]),
    # ---- train / route / routers
    ("train-param-not-int", lambda t, s: ["train", "--router", "knn", "--store", s, "--out", t / "r",
                                          "--param", "k=abc"],
     ["--param k='abc'", "expected an integer"]),
    ("train-param-unknown", lambda t, s: ["train", "--router", "knn", "--store", s, "--out", t / "r",
                                          "--param", "depth=3"],
     ["--param depth", "no parameter 'depth'"]),
    ("train-param-no-equals", lambda t, s: ["train", "--router", "knn", "--store", s, "--out", t / "r",
                                            "--param", "k"],
     ["--param 'k'", "NAME=VALUE"]),
    ("train-unknown-router", lambda t, s: ["train", "--router", "nope", "--store", s, "--out", t / "r"],
     ["unknown router 'nope'"]),
    ("train-lambda-nan", lambda t, s: ["train", "--router", "knn", "--store", s, "--out", t / "r",
                                       "--lambda", "nan"], ["--lambda", "finite"]),
    ("train-out-is-store", lambda t, s: ["train", "--router", "knn", "--store", s, "--out", s],
     ["obs.duckdb", "not a caproute router directory"]),
    ("train-bad-data", lambda t, s: ["train", "--router", "knn", "--data", bad_jsonl(
        t, row(decode_id=1, input_tokens=-3)), "--out", t / "r"],
     ["bad.jsonl", "line 2", "field 'input_tokens'", "out of range"]),
    ("route-lambda-nan", lambda t, s: ["route", "--router", t / "r", "q", "--lambda", "nan"],
     ["--lambda", "finite"]),
    ("route-format-enum", lambda t, s: ["route", "--router", t / "r", "q", "--format", "yaml"],
     ["--format", "'yaml' is not one of"]),
    ("route-no-router", lambda t, s: ["route", "--router", t / "r", "q"],
     ["no such router directory"]),
    # ---- the other commands that read observations or take validated options
    ("bench-bad-data", lambda t, s: ["bench", "--data", bad_jsonl(t, row(decode_id=1, score=-0.5))],
     ["bad.jsonl", "line 2", "field 'score'"]),
    ("bench-test-fraction", lambda t, s: ["bench", "--store", s, "--test-fraction", "1.5"],
     ["--test-fraction", "must be in (0, 1)"]),
    ("bench-lambda-nan", lambda t, s: ["bench", "--store", s, "--lambda", "nan"], ["--lambda", "finite"]),
    ("duel-bad-data", lambda t, s: ["duel", "--data", bad_jsonl(t, row(decode_id=1, cost_known="maybe"))],
     ["bad.jsonl", "line 2", "field 'cost_known'"]),
    ("meta-gold-n", lambda t, s: ["meta", "--json", t / "m.json", "--report", t / "rep", "--gold-n", "15,abc"],
     ["--gold-n", "expected integers"]),
    ("meta-test-fraction", lambda t, s: ["meta", "--json", t / "m.json", "--report", t / "rep",
                                         "--test-fraction", "0"],
     ["--test-fraction", "must be in (0, 1)"]),
    ("calibrate-bad-data", lambda t, s: ["calibrate", "--router", t / "r", "--out", t / "p.json", "--target-cost",
                                         "1", "--data", bad_jsonl(t, row(decode_id=1, score="x"))],
     ["bad.jsonl", "line 2", "field 'score'"]),
    ("calibrate-share-range", lambda t, s: ["calibrate", "--router", t / "r", "--out", t / "p.json",
                                            "--target-share", "1.5", "--strong-model", "m/a", "--store", s],
     ["--target-share", "must be <= 1"]),
    ("calibrate-split-enum", lambda t, s: ["calibrate", "--router", t / "r", "--out", t / "p.json",
                                           "--target-cost", "1", "--store", s, "--split", "dev"],
     ["--split", "'dev' is not one of"]),
    ("collect-test-fraction", lambda t, s: ["collect", "--config", t / "c.yaml", "--queries", t / "q.jsonl",
                                            "--store", s, "--task", "x", "--test-fraction", "2"],
     ["--test-fraction", "must be in (0, 1)"]),
    ("collect-budget-nan", lambda t, s: ["collect", "--config", t / "c.yaml", "--queries", t / "q.jsonl",
                                         "--store", s, "--task", "x", "--budget-usd", "nan"],
     ["--budget-usd", "finite"]),
    ("serve-lambda-inf", lambda t, s: ["serve", "--lambda", "inf"], ["--lambda", "finite"]),
    # ---- issue 23 item 10: non-finite prices, duplicate columns and keys, secrets never echoed
    ("pool-price-inf", lambda t, s: ["collect", "--config", _text(t / "c.yaml", _POOL_INF), "--queries",
                                     _text(t / "q.jsonl", '{"query_id": "a", "question": "1+1?", "answer": "2"}\n'),
                                     "--store", s, "--task", "t"],
     ["c.yaml", "price_input_per_1m", "finite number"]),
    ("csv-duplicate-column", lambda t, s: ["import", _text(t / "dup.csv", "dataset,split,query_id,model,score,score,cost\n"
                                                          "gpqa,train,q1,m,1,0,0\n"), "--store", s],
     ["dup.csv", "line 1", "field 'score'", "the same column appears twice"]),
    ("jsonl-duplicate-key", lambda t, s: ["import", bad_jsonl(t, json.dumps(row(decode_id=1))[:-1] + ', "score": 0}'),
                                          "--store", s],
     ["bad.jsonl", "line 2", "field 'score'", "the same key appears twice"]),
    ("queries-csv-duplicate-column", lambda t, s: ["collect", "--config", _text(t / "c.yaml", _POOL_OK), "--queries",
                                                   _text(t / "q.csv", "query_id,question,question\na,1+1?,2+2?\n"),
                                                   "--store", s, "--task", "t"],
     ["q.csv", "line 1", "field 'question'", "the same column appears twice"]),

    # issue 23: the proxy's limits are checked like every other field (each bad one named)
    ("serve-limits", lambda t, s: ["serve", "--config", _text(t / "serve.yaml",
                                   "routers: {r: r}\npool: pool.yaml\nmax_response_bytes: 10\nfeedback_rate_per_s: 0\n"
                                   "header_timeout_s: -1\nmax_connections: many\n")],
     ["serve.yaml", "field 'max_response_bytes'", "field 'feedback_rate_per_s'", "field 'header_timeout_s'",
      "field 'max_connections'"]),
    ("duel-eta-nan", lambda t, s: ["duel", "--eta", "nan"], ["--eta", "finite"]),
    ("meta-gamma-inf", lambda t, s: ["meta", "--json", t / "m.json", "--report", t / "rep", "--gamma", "inf"],
     ["--gamma", "finite"]),
    ("calibrate-tolerance-nan", lambda t, s: ["calibrate", "--router", t / "r", "--out", t / "p.json",
                                              "--target-cost", "1", "--store", s, "--tolerance", "nan"],
     ["--tolerance", "finite"]),
]


def _text(p: Path, text: str) -> Path:
    p.write_text(text)
    return p


def _parquet(t: Path, score: tuple[int, float] | None = None) -> Path:
    """The good rows as Parquet; ``score=(i, v)`` puts a bad score on row i (0-based)."""
    p = t / "obs.parquet"
    df = pd.DataFrame(good_rows())
    if score is not None:
        df.loc[score[0], "score"] = score[1]
    df.to_parquet(p)
    return p


def _dir(t: Path, name: str = "somedir") -> Path:
    d = t / name
    d.mkdir(exist_ok=True)
    (d / "keep.txt").write_text("user file")
    return d


def _foreign_dir(t: Path) -> Path:
    d = t / "mine"
    d.mkdir()
    (d / "notes.txt").write_text("precious")
    return d


def _garbage(t: Path) -> Path:
    p = t / "garbage.duckdb"
    p.write_bytes(b"this is not a database" * 100)
    return p


def _foreign_duckdb(t: Path) -> Path:
    p = t / "foreign.duckdb"
    con = duckdb.connect(str(p))
    con.execute("CREATE TABLE other (x INTEGER)")
    con.close()
    return p


def _copy_store(t: Path, s: Path, name: str) -> Path:
    p = t / name
    p.write_bytes(s.read_bytes())
    return p


def _files_under(t: Path) -> dict[str, bytes]:
    return {str(p.relative_to(t)): p.read_bytes() for p in sorted(t.rglob("*")) if p.is_file()}


def run_in_process(argv: list, capsys, monkeypatch) -> tuple[int, str]:
    from caproute.cli import main

    monkeypatch.setattr(sys, "argv", ["caproute", *map(str, argv)])
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out, err = capsys.readouterr()
    return code, out + err


@pytest.mark.parametrize("case_id, build, expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_a_named_error(case_id, build, expected, store, tmp_path, capsys, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)   # '.' is a scratch directory holding the store's folder, never the repo
    argv = build(work, store)
    before = store_state(store)
    files_before = {k: v for k, v in _files_under(work).items()}
    code, text = run_in_process(argv, capsys, monkeypatch)
    flat = " ".join(text.split())   # rich wraps long lines
    assert code == 2, f"exit {code}, expected 2:\n{text}"
    assert "Traceback" not in text
    for s in expected:
        assert " ".join(s.split()) in flat, f"{s!r} not in:\n{text}"
    assert store_state(store) == before, "the store changed"
    # nothing that was there before was changed or removed (a failed command writes nothing)
    after = _files_under(work)
    for name, data in files_before.items():
        assert after.get(name) == data, f"{name} was changed or removed"
    assert not [n for n in after if n not in files_before and not n.startswith("garbage")], \
        f"a failed command left files: {[n for n in after if n not in files_before]}"


# ---- end to end: real process exit status, stderr, and a store locked by another process
SUBPROCESS = ["jsonl-non-utf8", "score-10e400", "export-dars-foreign-dir", "train-param-not-int",
              "diagnose-split-validation"]


@pytest.mark.parametrize("case_id", SUBPROCESS)
def test_bad_input_end_to_end(case_id, store, tmp_path):
    build, expected = next((b, e) for i, b, e in CASES if i == case_id)
    work = tmp_path / "work"
    work.mkdir()
    argv = build(work, store)
    before = store_state(store)
    res = subprocess.run([*CLI, *map(str, argv)], capture_output=True, text=True, timeout=300, cwd=work)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    flat = " ".join(res.stderr.split())
    for s in expected:
        assert " ".join(s.split()) in flat, f"{s!r} not in:\n{res.stderr}"
    assert store_state(store) == before


def test_locked_store_is_a_named_error(store, tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
                               "print('locked', flush=True); time.sleep(60)", str(store)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.monotonic()
        bad = bad_jsonl(tmp_path, row(decode_id=1))
        res = subprocess.run([*CLI, "import", str(bad), "--store", str(store)], capture_output=True, text=True,
                             timeout=120)
        assert res.returncode == 2 and "Traceback" not in res.stderr
        assert "obs.duckdb" in res.stderr and "locked by another process" in " ".join(res.stderr.split())
        assert time.monotonic() - t0 < 60
    finally:
        holder.kill()
        holder.wait()
    assert store_state(store)[0] == len(good_rows())
