#!/usr/bin/env bash
# Regenerate bench/results_mini.md: the full mini recipe (examples/mini/run.sh,
# all stages, its defaults) once per seed on the current code, then one table of
# every run and the mean and spread of each back-end's EER and minDCF.
#
#   bash bench/run_mini_seeds.sh                          # seeds 1 2 3
#   bash bench/run_mini_seeds.sh --seeds "1 2 3 4 5" --work_dir /tmp/mini_seeds
#
# A seed sets the training seed (--seed) and the back-end chunk positions
# (--chunk_seed). The data are prepared once in ${work_dir}/data; each run trains
# from scratch in ${work_dir}/exp_seed<S> (an existing one is removed first) and
# logs to ${work_dir}/run_seed<S>.log. The output file is replaced only at the
# end, atomically. On a shared machine run it under the exclusive CPU lock:
#   flock -x /tmp/wsp_cpu.lock bash bench/run_mini_seeds.sh
# Extra run.sh options go after --: bash bench/run_mini_seeds.sh -- --epochs 2

seeds="1 2 3"
work_dir=/tmp/mini_seeds
output=bench/results_mini.md

repo=$(cd "$(dirname "$0")/.." && pwd)
while [ $# -gt 0 ]; do
  case "$1" in
    --seeds) seeds=$2; shift 2 ;;
    --work_dir) work_dir=$2; shift 2 ;;
    --output) output=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "$0: unknown option $1 (--seeds, --work_dir, --output, -- run.sh options)" >&2
       exit 1 ;;
  esac
done
set -eo pipefail

mkdir -p "${work_dir}"
work_dir=$(cd "${work_dir}" && pwd)
case "${output}" in /*) ;; *) output=${repo}/${output} ;; esac
runs=${work_dir}/runs.tsv
: > "${runs}"

for seed in ${seeds}; do
  exp=${work_dir}/exp_seed${seed}
  log=${work_dir}/run_seed${seed}.log
  rm -rf "${exp}"
  load_before=$(cut -d ' ' -f 1 /proc/loadavg)
  start=$(date +%s)
  echo "seed ${seed}: bash run.sh --seed ${seed} --chunk_seed ${seed} $* (log: ${log})"
  (cd "${repo}/examples/mini" &&
   bash run.sh --seed "${seed}" --chunk_seed "${seed}" --data "${work_dir}/data" \
     --exp_dir "${exp}" "$@") > "${log}" 2>&1 ||
    { tail -n 20 "${log}" >&2; echo "$0: the run with seed ${seed} failed" >&2; exit 1; }
  end=$(date +%s)
  load_after=$(cut -d ' ' -f 1 /proc/loadavg)
  printf '%s\t%s\t%s\t%s\t%s\n' "${seed}" "${exp}" "$((end - start))" "${load_before}" \
    "${load_after}" >> "${runs}"
done

cd "${repo}"
PYTHONPATH=${repo}${PYTHONPATH:+:${PYTHONPATH}} python bench/summarise_mini_seeds.py \
  --runs "${runs}" --data "${work_dir}/data" --command "bash bench/run_mini_seeds.sh --seeds \"${seeds}\"${*:+ -- $*}" \
  --output "${output}"
echo "wrote ${output}"
