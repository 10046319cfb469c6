"""Write the small DARS-format fixture of tests/test_evaluate_algorithms_md_reference.py (run once; the JSONL files
are committed). One dataset ``toyset``: 3 models, 10 training queries with K = 2 rewrites x R = 2
decodes per pair, 6 test queries with 2 rewrites (prompt_variation) and 2 decodes of the original
query (decoding_variation, prompt_variant_id = -1). Scores are 0/1 draws from a seeded generator;
cost = base price of the model x (1 + 0.1 x decode_id), so the cost range (min, max) is the same in
both splits and the reference's min-max over train + test equals caproute's over train only.

    python tests/data/algorithms_md_reference/make_fixture.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MODELS = ("alpha-7b", "beta-13b", "gamma-70b")
PRICE = {"alpha-7b": 1e-4, "beta-13b": 5e-4, "gamma-70b": 1e-3}
TOPICS = {0: "algebra equation solve integer polynomial", 1: "history empire century battle king",
          2: "biology cell protein enzyme gene"}
SKILL = {"alpha-7b": (0.7, 0.2, 0.4), "beta-13b": (0.3, 0.8, 0.5), "gamma-70b": (0.6, 0.6, 0.9)}


def main() -> None:
    rng = np.random.default_rng(2026)
    out = HERE / "toyset"
    out.mkdir(exist_ok=True)
    for split, n, first in (("train", 10, 0), ("test", 6, 100)):
        lines = []
        for i in range(n):
            qid = f"q{first + i:03d}"
            topic = (first + i) % 3
            words = TOPICS[topic].split()
            question = f"question {first + i}: " + " ".join(rng.choice(words, 4)) + f" about item {i % 4}"
            if split == "train":
                grid = [(k, r, "prompt_variation") for k in range(2) for r in range(2)]
            else:
                grid = [(0, 0, "prompt_variation"), (1, 0, "prompt_variation"),
                        (-1, 0, "decoding_variation"), (-1, 1, "decoding_variation")]
            for m in MODELS:
                for k, r, otype in grid:
                    score = float(rng.random() < SKILL[m][topic])
                    lines.append({"dataset": "toyset", "split": split, "query_id": qid, "model": m,
                                  "prompt_variant_id": k, "decode_id": r, "observation_type": otype,
                                  "score": score, "cost": PRICE[m] * (1 + 0.1 * r),
                                  "original_question": question})
        (out / f"{split}_scored_generations.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


if __name__ == "__main__":
    main()
