"""A hand-made dataset for the evaluation tests: 2 models (a, b), 4 training queries with a 2 x 2
grid, 2 test queries with a rewrite and a decode view (3 observations each).

Costs: a = 1e-4 per generation, b = 3e-4 in training, so normalised a -> 0, b -> 1. Test costs
a = 1e-4 (0), b = 2e-4 (0.5) in the rewrite view and 3e-4 (1) in the decode view.

Per-view means (Q) and hand-computed utilities at lambda = 0.05:

    rewrite  s0: a 1/3, b 2/3 -> U a 0.333333, b 0.641667
             s1: a 0,   b 1   -> U a 0,        b 0.975
    decode   s0: a 1,   b 2/3 -> U a 1,        b 0.616667
             s1: a 1/3, b 2/3 -> U a 0.333333, b 0.616667

best fixed: rewrite b (0.808333, quality 0.833333); decode a (0.666667, quality 0.666667)
oracle:     rewrite 0.808333 (quality 0.833333); decode (1 + 0.616667) / 2 = 0.808333 (quality 0.833333)
"""

from __future__ import annotations

import pandas as pd

TRAIN_SCORES = {  # (query, model) -> scores of (rewrite 0: d0, d1), (rewrite 1: d0, d1)
    ("t0", "a"): [1, 1, 0, 1], ("t0", "b"): [0, 0, 1, 0],
    ("t1", "a"): [0, 0, 0, 1], ("t1", "b"): [1, 1, 1, 1],
    ("t2", "a"): [1, 0, 1, 0], ("t2", "b"): [1, 1, 0, 1],
    ("t3", "a"): [0, 1, 0, 0], ("t3", "b"): [1, 0, 1, 1],
}
TEST = {  # (query, model, view) -> scores
    ("s0", "a", "rewrite"): [1, 0, 0], ("s0", "b", "rewrite"): [1, 1, 0],
    ("s0", "a", "decode"): [1, 1, 1], ("s0", "b", "decode"): [0, 1, 1],
    ("s1", "a", "rewrite"): [0, 0, 0], ("s1", "b", "rewrite"): [1, 1, 1],
    ("s1", "a", "decode"): [1, 0, 0], ("s1", "b", "decode"): [1, 1, 0],
}
TRAIN_COST = {"a": 1e-4, "b": 3e-4}
TEST_COST = {("a", "rewrite"): 1e-4, ("b", "rewrite"): 2e-4, ("a", "decode"): 1e-4, ("b", "decode"): 3e-4}

EXPECTED = {
    "best_fixed": {"rewrite": (0.808333333, 0.833333333, "b"), "decode": (0.666666667, 0.666666667, "a")},
    "oracle": {"rewrite": (0.808333333, 0.833333333), "decode": (0.808333333, 0.833333333)},
    "always_b": {"rewrite": (0.808333333, 0.833333333), "decode": (0.616666667, 0.666666667)},
}


def toy_observations(dataset: str = "toy") -> pd.DataFrame:
    rows = []
    for (q, m), scores in TRAIN_SCORES.items():
        for i, s in enumerate(scores):
            rows.append({"dataset": dataset, "split": "train", "query_id": q, "model": m,
                         "prompt_variant_id": i // 2, "decode_id": i % 2, "observation_type": "prompt_variation",
                         "score": float(s), "cost": TRAIN_COST[m], "question": f"question {q} about topic {q[-1]}"})
    for (q, m, view), scores in TEST.items():
        for i, s in enumerate(scores):
            rows.append({"dataset": dataset, "split": "test", "query_id": q, "model": m,
                         "prompt_variant_id": i if view == "rewrite" else -1,
                         "decode_id": 0 if view == "rewrite" else i,
                         "observation_type": "prompt_variation" if view == "rewrite" else "decoding_variation",
                         "score": float(s), "cost": TEST_COST[(m, view)], "question": f"question {q} test"})
    return pd.DataFrame(rows)
