#!/usr/bin/env bash
# One-shot GPU acceptance check; see bench/gpu_check.py and bench/README.md.
#   bash bench/gpu_check.sh [--output bench/results_gpu.md] [--budget 480] [--dry-run]
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="${PWD}${PYTHONPATH:+:${PYTHONPATH}}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-}"
[ -z "${OMP_NUM_THREADS}" ] && unset OMP_NUM_THREADS
exec timeout --signal=TERM --kill-after=30 600 python bench/gpu_check.py "$@"
