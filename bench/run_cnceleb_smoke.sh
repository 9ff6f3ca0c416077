#!/usr/bin/env bash
# Smoke run of the CN-Celeb v2 recipe (examples/cnceleb/v2/run.sh, stages 1-8) on real
# speech: a CN-Celeb-shaped release made of LibriSpeech speakers
# (bench/make_fake_cnceleb.py), then the recipe as written, on the CPU, with the mini
# recipe's small ECAPA-TDNN config. It checks that every stage runs on real audio and
# that a second, identical run skips the finished work; its EERs are no CN-Celeb result.
#
#   flock -x /tmp/wsp_cpu.lock bash bench/run_cnceleb_smoke.sh
#   bash bench/run_cnceleb_smoke.sh --work_dir /tmp/cnc_smoke -- --num_epochs 2
#
# ${work_dir} (default bench/out/cnceleb_smoke, git-ignored) is made anew: the archives
# in data/download_data, the recipe's data and exp/, the logs run1.log and run2.log
# (each line stamped with the seconds since the pass began) and commit.txt (the code
# the run started on). Extra run.sh options go after --.
# bench/summarise_cnceleb_smoke.py writes ${output}.

work_dir=bench/out/cnceleb_smoke
output=bench/results_cnceleb_smoke.md
config=examples/mini/conf/ecapa_tdnn.yaml
corpus_seed=0
top_n=10
num_avg=2

repo=$(cd "$(dirname "$0")/.." && pwd)
while [ $# -gt 0 ]; do
  case "$1" in
    --work_dir) work_dir=$2; shift 2 ;;
    --output) output=$2; shift 2 ;;
    --config) config=$2; shift 2 ;;
    --corpus_seed) corpus_seed=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "$0: unknown option $1 (--work_dir, --output, --config, --corpus_seed," \
            "-- run.sh options)" >&2
       exit 1 ;;
  esac
done
set -eo pipefail

# absolute: the recipe runs from its own folder
absolute() {
  case "$1" in /*) echo "$1" ;; *) echo "${repo}/$1" ;; esac
}
work_dir=$(absolute "${work_dir}")
output=$(absolute "${output}")
config=$(realpath --relative-to="${repo}/examples/cnceleb/v2" "$(absolute "${config}")")
marker=${work_dir}/.cnceleb_smoke
if [ -e "${work_dir}" ] && [ ! -e "${marker}" ]; then
  echo "$0: ${work_dir} exists and was not made by this script: give another --work_dir" >&2
  exit 1
fi
rm -rf "${work_dir}"
mkdir -p "${work_dir}"
touch "${marker}"
git -C "${repo}" describe --always --dirty > "${work_dir}/commit.txt"

data=${work_dir}/data
exp_dir=${work_dir}/exp/$(basename "${config}" .yaml)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
export PYTHONUNBUFFERED=1  # log lines stamped when they are written

echo "making the corpus in ${data}/download_data ..."
python "${repo}/bench/make_fake_cnceleb.py" --out "${data}/download_data" \
  --seed "${corpus_seed}" | tee "${work_dir}/corpus.txt"

recipe_args=(--stage 1 --stop_stage 8 --data "${data}" --exp_dir "${exp_dir}"
             --data_type raw --gpus "[]" --config "${config}" --num_avg "${num_avg}"
             --top_n "${top_n}" "$@")

# stamp: each input line prefixed with the seconds since the pass began and a tab
stamp() {
  local start=${EPOCHREALTIME/./} line tenths
  while IFS= read -r line; do
    tenths=$(( (${EPOCHREALTIME/./} - start) / 100000 ))
    printf '%d.%d\t%s\n' $((tenths / 10)) $((tenths % 10)) "${line}"
  done
}

# run_pass N: the recipe once, logged to run${N}.log; a line of passes.tsv
run_pass() {
  local log=${work_dir}/run$1.log load_before start
  load_before=$(cut -d ' ' -f 1-3 /proc/loadavg)
  start=$(date +%s)
  echo "pass $1: bash run.sh ${recipe_args[*]} (log: ${log})"
  (cd "${repo}/examples/cnceleb/v2" && bash run.sh "${recipe_args[@]}") 2>&1 | stamp > "${log}" ||
    { tail -n 30 "${log}" >&2; echo "$0: pass $1 failed" >&2; return 1; }
  printf '%s\t%s\t%s\t%s\n' "$1" "$(($(date +%s) - start))" "${load_before}" \
    "$(cut -d ' ' -f 1-3 /proc/loadavg)" >> "${work_dir}/passes.tsv"
}

run_pass 1
run_pass 2

cd "${repo}"
PYTHONPATH=${repo}${PYTHONPATH:+:${PYTHONPATH}} python bench/summarise_cnceleb_smoke.py --work_dir "${work_dir}" --exp_dir "${exp_dir}" \
  --command "bash bench/run_cnceleb_smoke.sh${*:+ -- $*}" \
  --output "${output}" -- "${recipe_args[@]}"
echo "wrote ${output}"
