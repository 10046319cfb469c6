#!/usr/bin/env bash
# GPU check (issue 15.6): on a machine with a CUDA GPU and a torch that sees it, train every torch
# router family and encode 10,000 queries with MiniLM on cpu and on cuda, check that the decisions
# agree, and print the speed-ups. Without CUDA it says so and exits 0. Under 5 minutes.
#
#   bash benchmarks/gpu_check.sh            # uses .venv/bin/python if present, else python3
#   PYTHON=/path/to/python bash benchmarks/gpu_check.sh
#
# Exit codes: 0 = checked and agreeing, or no CUDA (skipped); 1 = decisions or embeddings disagree;
# 2 = caproute is not importable.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
"$PY" -c "import caproute" 2>/dev/null || { echo "gpu_check: caproute is not importable with $PY"; exit 2; }
exec "$PY" - "$@" <<'PYEOF'
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, "benchmarks")
import torch  # noqa: E402

if not torch.cuda.is_available():
    print(f"gpu_check: SKIPPED - torch {torch.__version__} sees no CUDA device "
          f"(CUDA build: {torch.version.cuda or 'none'}); nothing to compare.")
    sys.exit(0)

from bench_routing import synthetic  # noqa: E402

from caproute.features import get_encoder  # noqa: E402
from caproute.routers.base import get_router_class  # noqa: E402
from caproute.supervise.ablations import build_supervision  # noqa: E402

FAMILIES = ("mlp", "embedllm", "graphrouter", "mirt", "rmsoftmax", "mf")
MIN_DECISION_AGREEMENT = 0.95   # our threshold: float rounding on a GPU may flip near-ties
MIN_COSINE = 0.999
print(f"gpu_check: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"{os.cpu_count()} CPU cores", flush=True)
t0 = time.perf_counter()
obs, test_texts, train_texts = synthetic(n_test=10_000)
queries = [" ".join(t.split()[:20]) for t in test_texts]          # 10k queries of 20 words
ok = True

# -- MiniLM: encode 10k queries on cpu and on cuda ---------------------------------------------------
emb, secs = {}, {}
for dev in ("cpu", "cuda"):
    enc = get_encoder("minilm", device=dev, batch_size=128)
    enc.transform(queries[:256])                                  # load + warm up
    if dev == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    emb[dev] = enc.transform(queries)
    if dev == "cuda":
        torch.cuda.synchronize()
    secs[dev] = time.perf_counter() - t
cos = (emb["cpu"] * emb["cuda"]).sum(axis=1)
ok &= bool(cos.min() > MIN_COSINE)
print(f"minilm encode 10k: cpu {secs['cpu']:.2f} s, cuda {secs['cuda']:.2f} s, speed-up "
      f"{secs['cpu'] / secs['cuda']:.1f}x; cosine min {cos.min():.6f} (need > {MIN_COSINE})", flush=True)

# -- every torch router family: fit on cpu and on cuda, decide on CPU --------------------------------
sup = build_supervision(obs, variant="dars", beta=0.2)
X_train = get_encoder("minilm").transform(train_texts)
X_test = emb["cpu"][:2000]
lam, beta = 0.05, 0.2
for fam in FAMILIES:
    cls = get_router_class(fam)
    times, choice = {}, {}
    for dev in ("cpu", "cuda"):
        runs = []
        for _ in range(2):
            r = cls()
            r.device = dev
            t = time.perf_counter()
            r.fit(X_train, sup)
            runs.append(time.perf_counter() - t)
        times[dev] = statistics.median(runs[1:] or runs)           # the first cuda fit pays warm-up
        choice[dev] = np.asarray(r.route(X_test, lam, beta))
    agree = float(np.mean(choice["cpu"] == choice["cuda"]))
    ok &= agree >= MIN_DECISION_AGREEMENT
    print(f"{fam:12s} fit: cpu {times['cpu']:.2f} s, cuda {times['cuda']:.2f} s, speed-up "
          f"{times['cpu'] / times['cuda']:.2f}x; decisions agree on {agree:.1%} of {len(X_test)} queries "
          f"(need >= {MIN_DECISION_AGREEMENT:.0%})", flush=True)
print(f"gpu_check: {'OK' if ok else 'FAILED'} in {time.perf_counter() - t0:.0f} s")
sys.exit(0 if ok else 1)
PYEOF
