#!/usr/bin/env bash
# The sweep that chose wespeaker-py finetune's defaults: the fine-tuning recipe's 8 kHz demo
# (examples/finetune) once per setting, one table of test and dev figures with the
# wall time of each fine-tune and the load average.
#
#   flock -x /tmp/wsp_cpu.lock nice -n 10 bash bench/run_finetune_sweep.sh \
#       [--output bench/results_finetune_sweep.md] [--settings "TAG:FLAGS;TAG:FLAGS"]
#
# TAG names the run (examples/finetune/exp/mini_8k_TAG); FLAGS are run.sh options.
set -eo pipefail
output=bench/results_finetune_sweep.md
settings="default:;freeze_none:--freeze none;lr3e-4:--lr 3e-4;lr3e-3:--lr 3e-3"
while [ $# -gt 0 ]; do
  case "$1" in
    --output) output=$2; shift 2 ;;
    --settings) settings=$2; shift 2 ;;
    *) echo "$0: unknown option $1" >&2; exit 1 ;;
  esac
done
root=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH=${root}${PYTHONPATH:+:${PYTHONPATH}}
output=$(realpath -m "${output}")
cd "${root}/examples/finetune"
bash run.sh --stop_stage 1 > /dev/null
{
  echo "# Fine-tuning defaults: the 8 kHz demo swept"
  echo
  echo "Command: \`bash bench/run_finetune_sweep.sh\` (examples/finetune/run.sh per setting;"
  echo "the other settings at their defaults). Commit $(git -C "${root}" rev-parse --short HEAD),"
  echo "$(nproc) CPU cores, $(date -u +%Y-%m-%d). Test: the mini corpus's 30 test speakers at 8 kHz"
  echo "(7,381 trials, 199 target); dev: held-out fine-tuning speakers (all pairs)."
  echo
  echo "| setting | test EER (%) | test minDCF | dev EER before -> after (%) | fine-tune wall (s) | load average (start) |"
  echo "|:--|--:|--:|--:|--:|--:|"
} > "${output}"
IFS=';' read -ra runs <<< "${settings}"
for run in "${runs[@]}"; do
  tag=${run%%:*}
  flags=${run#*:}
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  start=$(date +%s)
  # shellcheck disable=SC2086
  bash run.sh --stage 2 --stop_stage 2 --tag "${tag}" ${flags} > "/tmp/finetune_sweep_${tag}.log" 2>&1
  wall=$(( $(date +%s) - start ))
  # shellcheck disable=SC2086
  bash run.sh --stage 3 --stop_stage 5 --tag "${tag}" ${flags} >> "/tmp/finetune_sweep_${tag}.log" 2>&1
  python - "exp/mini_8k_${tag}" "${tag}" "${flags:-(defaults)}" "${wall}" "${load}" >> "${output}" <<'PY'
import json, sys
import numpy as np
from wespeaker_py.scoring.metrics import compute_eer, compute_min_dcf
from wespeaker_py.scoring.trials import read_labelled_scores
exp, tag, flags, wall, load = sys.argv[1:]
scores, labels = read_labelled_scores(f"{exp}/eval/finetuned_test/scores/trials.score")
labels = np.asarray(labels, dtype=bool)
dev = json.load(open(f"{exp}/model/finetune.json"))["dev"]
print(f"| {tag} (`{flags}`) | {100 * compute_eer(scores, labels):.2f} | "
      f"{compute_min_dcf(scores, labels):.3f} | {100 * dev['before']['eer']:.2f} -> "
      f"{100 * dev['after']['eer']:.2f} | {wall} | {load} |")
PY
  tail -n 1 "${output}"
  if [ "${tag}" == "default" ]; then  # the recipe's second check, with the default settings
    bash run.sh --stage 6 --stop_stage 6 --tag "${tag}" 2>&1 | tail -n 1 > "/tmp/finetune_sweep_fsdd.txt"
  fi
done
echo >> "${output}"
echo "Source model rows (the same for every setting):" >> "${output}"
echo >> "${output}"
head -n 4 "exp/mini_8k_${tag}/results.md" >> "${output}"
echo >> "${output}"
echo "fsdd check (stage 6, default settings): $(cat /tmp/finetune_sweep_fsdd.txt 2>/dev/null)" >> "${output}"
