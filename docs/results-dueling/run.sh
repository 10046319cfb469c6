#!/usr/bin/env bash
# The runs behind docs/results-dueling.md; they also rewrite that page. Needs ../shared/data.
# Usage: bash docs/results-dueling/run.sh [--reuse] [--seeds N] [--tune-seeds N]   (from the repository root)
set -euo pipefail
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec "${PYTHON:-.venv/bin/python}" scripts/results_dueling.py "$@"
