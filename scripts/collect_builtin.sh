#!/usr/bin/env bash
# The exact commands that produced src/caproute/assets/tinypool-numeric/ (see its DATASHEET.md;
# `--data builtin:tinypool-numeric`; the default builtin set is made by collect_builtin_v2.sh).
# Resumable: rerun after any interruption; stored observations and rewrites are reused.
set -euo pipefail
cd "${ROOT:-$(dirname "$0")/..}"
PY=${PY:-.venv/bin/python}
CAPROUTE=${CAPROUTE:-.venv/bin/caproute}
WORK=${WORK:-.caproute/builtin}
mkdir -p "$WORK"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

# 1. queries: 152 train + 102 test generated questions with numeric answers (seed 20260)
$PY scripts/collect_builtin.py queries "$WORK/queries.jsonl" --train 152 --test 102 --seed 20260

# 2. the local pool: SmolLM2-135M-Instruct Q4_1, Gemma 3 270M Q4_K_M, SmolLM2 Q2_K (derived)
$CAPROUTE pool up --workdir "$WORK/pool" --port-base 8190 --config-out "$WORK/pool.yaml"

# 3. collect: train 3 rewrites x 3 decodes, test 3 rewrites + 3 decodes of the original
$CAPROUTE collect --config "$WORK/pool.yaml" --queries "$WORK/queries.jsonl" --store "$WORK/builtin.duckdb" \
  --task numeric --dataset tinypool-numeric --rewrites 3 --decodes 3 --test-rewrites 3 --test-decodes 3 \
  --seed 0 --report-dir "$WORK/reports"

# 4. package: compressed Parquet into the package, then stop the pool
$PY scripts/collect_builtin.py package "$WORK/builtin.duckdb" src/caproute/assets/tinypool-numeric "$WORK/pool.yaml" "$WORK/reports"
$CAPROUTE pool down --workdir "$WORK/pool"
