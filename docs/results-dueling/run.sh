#!/usr/bin/env bash
# The runs behind docs/results-dueling.md. Needs ../shared/data (not shipped with caproute).
# Usage: bash docs/results-dueling/run.sh OUT_DIR   (from the repository root)
set -euo pipefail
OUT=${1:-duel-results}
DATA=${CAPROUTE_SHARED_DATA:-../shared/data}
EMB=ccft-perf,ccft-perf-cost,ccft-excel-perf-cost,ccft-excel-mask,minilm
ALL=fgts-cdb,uniform,best-fixed,eps-greedy,maxinp,dars-knn
COMMON="--rounds 5000 --seeds 5 --sampler laplace --feel-good tilt --cache ${CAPROUTE_CACHE:-$HOME/.cache/caproute}/duel"
export OPENBLAS_NUM_THREADS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

caproute duel --data "$DATA/routerdc_7llm_repeated/routerbench0shot_subset_long.parquet" \
  --policy $ALL --embeddings $EMB $COMMON --json "$OUT/routerbench.json" --report "$OUT/routerbench"
caproute duel --data "$DATA/routerdc_7llm_repeated" \
  --policy $ALL --embeddings $EMB $COMMON --json "$OUT/routerdc.json" --report "$OUT/routerdc"
caproute duel --data "$DATA/pandalm_pairwise_human_vs_llmjudge/pairs.parquet" --label human \
  --policy $ALL --embeddings $EMB $COMMON --json "$OUT/pandalm-human.json" --report "$OUT/pandalm-human"
caproute duel --data "$DATA/pandalm_pairwise_human_vs_llmjudge/pairs.parquet" --label gpt35 \
  --policy fgts-cdb,uniform,best-fixed,maxinp --embeddings ccft-excel-perf-cost,minilm $COMMON \
  --json "$OUT/pandalm-gpt35.json" --report "$OUT/pandalm-gpt35"
# the paper's sampler (SGLD) on the RouterBench subset, fewer rounds and seeds (CPU time)
caproute duel --data "$DATA/routerdc_7llm_repeated/routerbench0shot_subset_long.parquet" \
  --policy fgts-cdb,best-fixed --embeddings ccft-excel-perf-cost,minilm --rounds 2000 --seeds 3 --sampler sgld \
  --cache "${CAPROUTE_CACHE:-$HOME/.cache/caproute}/duel" --json "$OUT/routerbench-sgld.json" --report "$OUT/routerbench-sgld"
# eta = 1 ablation of FGTS.CDB (the spec says "try {0.25, 1}")
caproute duel --data "$DATA/routerdc_7llm_repeated/routerbench0shot_subset_long.parquet" \
  --policy fgts-cdb,best-fixed --embeddings $EMB --eta 1 $COMMON --json "$OUT/routerbench-eta1.json" --report "$OUT/routerbench-eta1"
caproute duel --data "$DATA/routerdc_7llm_repeated" \
  --policy fgts-cdb,best-fixed --embeddings $EMB --eta 1 $COMMON --json "$OUT/routerdc-eta1.json" --report "$OUT/routerdc-eta1"
caproute duel --data "$DATA/pandalm_pairwise_human_vs_llmjudge/pairs.parquet" --label human \
  --policy fgts-cdb,best-fixed --embeddings $EMB --eta 1 $COMMON --json "$OUT/pandalm-human-eta1.json" --report "$OUT/pandalm-human-eta1"
