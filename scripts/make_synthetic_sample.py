"""Write a small SYNTHETIC observation set (placeholder until real collected data is bundled).

Known truth: model m answers query x correctly with probability sigmoid(a_m - d_x + e_{x,k}),
where e_{x,k} is a per-rewrite shift (input-side variance); decodes are Bernoulli draws
(output-side variance). Costs are per-model prices times a random token count.
"""

import sys

import numpy as np
import pandas as pd

rng = np.random.default_rng(7)
models = ["tiny-a", "small-b", "large-c"]
ability = np.array([-0.5, 0.3, 1.2])
price = np.array([0.1, 0.3, 1.5]) * 1e-6
rows = []
for split, nq, grid in (("train", 60, [(k, r) for k in range(3) for r in range(3)]),
                        ("test", 40, [(k, 0) for k in range(3)] + [(-1, r) for r in range(3)])):
    for qi in range(nq):
        qid = f"{split}-{qi:03d}"
        d = rng.normal(0, 1.2)
        topic = ["arithmetic", "dates", "units", "facts"][qi % 4]
        shift = {k: rng.normal(0, 0.6) for k in range(-1, 3)}
        for mi, m in enumerate(models):
            for k, r in grid:
                p = 1 / (1 + np.exp(-(ability[mi] - d + shift[k] + (0.8 if topic == "facts" and mi == 1 else 0))))
                toks = rng.integers(20, 120)
                rows.append(dict(dataset="synthetic", split=split, query_id=qid, model=m,
                                 prompt_variant_id=k, decode_id=r,
                                 observation_type="prompt_variation" if k >= 0 else "decoding_variation",
                                 score=float(rng.random() < p), cost=float(price[mi] * toks),
                                 question=f"[{topic}] synthetic question {qi} of difficulty {d:.2f}"))
pd.DataFrame(rows).to_parquet(sys.argv[1], index=False, compression="zstd")
print(len(rows), "rows")
