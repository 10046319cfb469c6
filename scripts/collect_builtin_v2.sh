#!/usr/bin/env bash
# The exact commands that produced src/caproute/assets/builtin/ (tinypool-mix, see its DATASHEET.md).
# Resumable: rerun after any interruption; stored observations and rewrites are reused. The shipped
# capitals rewrites were made with max_attempts 3 / max_tokens 96 (see the datasheet), the rest with REWRITER.
set -euo pipefail
cd "${ROOT:-$(dirname "$0")/..}"
PY=${PY:-.venv/bin/python}
CAPROUTE=${CAPROUTE:-.venv/bin/caproute}
WORK=${WORK:-.caproute/builtin-mix}
FAMILIES=${FAMILIES:-capitals sentiment arithmetic number_words first_letter antonyms}
mkdir -p "$WORK"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

# 1. queries: one JSONL file per task family, items written for this project (seed 20261)
$PY scripts/collect_builtin_v2.py queries "$WORK/queries" --per-family "${PER_FAMILY:-16}" --test-fraction 0.4 \
  --families "${FAMILIES// /,}"

# 2. the local pool (one thread per server): SmolLM2-135M-Instruct Q4_1, Gemma 3 270M Q4_K_M,
#    SmolLM2 Q2_K (derived), and a dedicated SmolLM2 rewriter; then one task per family in the YAML
[ -f "$WORK/pool.base.yaml" ] && $CAPROUTE pool status --workdir "$WORK/pool" | grep -q ready || \
  $CAPROUTE pool up --workdir "$WORK/pool" --port-base 8390 --config-out "$WORK/pool.base.yaml"
$PY scripts/collect_builtin_v2.py config "$WORK/pool.base.yaml" "$WORK/pool.yaml"

# 3. collect, family by family into one dataset: train 3 rewrites x 3 decodes, test 3 rewrites + 3 decodes
for f in $FAMILIES; do
  $CAPROUTE collect --config "$WORK/pool.yaml" --queries "$WORK/queries/$f.jsonl" --store "$WORK/builtin.duckdb" \
    --task "$f" --dataset tinypool-mix --rewrites 3 --decodes 3 --test-rewrites 3 --test-decodes 3 \
    --seed 0 --report-dir "$WORK/reports/$f" --progress-every 60
done

# 4. package: compressed Parquet + DATASHEET.md into the package, then stop the pool
$PY scripts/collect_builtin_v2.py package "$WORK/builtin.duckdb" src/caproute/assets/builtin "$WORK/pool.yaml" "$WORK/reports"
[ -n "${KEEP_POOL:-}" ] || $CAPROUTE pool down --workdir "$WORK/pool"
