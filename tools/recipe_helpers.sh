#!/usr/bin/env bash
# Small shell functions shared by the recipe scripts (source it after path.sh):
#   . tools/recipe_helpers.sh
# They decide what a re-run may skip, so each is strict about what "done" means.

# up_to_date OUT [IN ...]: true when OUT is a non-empty file that no existing IN
# is newer than (so a retrained model or new embeddings invalidate it).
up_to_date() {
  local out=$1 input
  shift
  [ -s "$out" ] || return 1
  for input in "$@"; do
    if [ -e "$input" ] && [ "$input" -nt "$out" ]; then
      return 1
    fi
  done
  return 0
}

# first_missing [IN ...]: the first IN that does not exist, on stdout (status 1 when
# every IN exists).
first_missing() {
  local input
  for input in "$@"; do
    if [ ! -e "${input}" ]; then
      echo "${input}"
      return 0
    fi
  done
  return 1
}

# require_inputs HINT IN...: status 1, naming the first missing IN and HINT (the step
# that makes it), when an IN is missing. It stops a stage, where made_with decides
# whether to make its output again: up_to_date passes over a missing IN, so a stage
# whose output is made from IN calls this first: while IN is being made again, or after
# making it failed, the output made from the earlier IN must not be taken as up to date.
require_inputs() {
  local hint=$1 missing
  shift
  missing=$(first_missing "$@") || return 0
  echo "$0: ${missing} is missing: ${hint}" >&2
  return 1
}

# made_with [--wespeaker_path] OUT SETTINGS [IN ...]: true when OUT (non-empty) was made
# with SETTINGS, as record_settings noted beside it (OUT.settings), and no existing IN is
# newer than that note. For outputs whose name does not carry every option that shapes
# them: without the note a newer output of other options would pass up_to_date.
# - The note's time, not OUT's, is when OUT was last made or found up to date: a remake
#   that gives the same bytes may keep OUT and its time (stage 4's average, so that what
#   was made from it is not made again), and its new note keeps it up to date.
# - An OUT with no note was made before notes were kept: when up to date (up_to_date)
#   it is taken as made with SETTINGS (noted now), as the version that made it would
#   have taken it.
# - With --wespeaker_path, OUT is at a path WeSpeaker's recipes write too (avg_model.pt,
#   the score files): one with no note may be WeSpeaker's (or a released file put
#   there), made with settings nobody noted, so it is never noted as made with
#   SETTINGS: when every IN (what OUT is made from) exists, it is made again (false);
#   with an IN missing it cannot be, and it is used as it is (true, said on stdout,
#   still without a note).
# - Otherwise, when false, an existing OUT's note is emptied (an empty note matches no
#   settings, and is not "no note"), so an OUT whose remake failed or was cut short
#   before its record_settings is never taken for the settings of either run.
made_with() {
  local wespeaker_path=false out settings missing
  if [ "$1" == "--wespeaker_path" ]; then
    wespeaker_path=true
    shift
  fi
  out=$1 settings=$2
  shift 2
  if [ -s "${out}" ] && [ ! -e "${out}.settings" ]; then
    if ! ${wespeaker_path} && up_to_date "${out}" "$@"; then
      record_settings "${out}" "${settings}"
      return 0
    fi
    if ${wespeaker_path} && missing=$(first_missing "$@"); then
      echo "${out} has no settings note (WeSpeaker made it, or it was put there) and" \
           "${missing}, which it would be made from, is missing: it is used as it is"
      return 0
    fi
  elif [ -s "${out}" ] && [ "$(settings_note "${out}")" == "${settings}" ] &&
       up_to_date "${out}.settings" "$@"; then
    return 0
  fi
  if [ -e "${out}" ]; then : > "${out}.settings"; else rm -f "${out}.settings"; fi
  return 1
}

# settings_note OUT: the settings record_settings noted for OUT (empty when none).
settings_note() {
  if [ -f "$1.settings" ]; then cat "$1.settings"; fi
}

# record_settings OUT SETTINGS: note that OUT was just made with SETTINGS (atomically,
# through a temporary file of this writer's own, as every node of a multi-node run may
# note the same OUT; created under the umask, as the outputs are, so that a shared
# experiment folder's notes are readable by the group).
record_settings() {
  local tmp
  tmp="$1.settings.$(hostname).$$"
  if printf '%s\n' "$2" > "${tmp}"; then
    mv -f "${tmp}" "$1.settings"
  else
    rm -f "${tmp}"
    return 1
  fi
}

# latest_epoch DIR [AFTER]: the largest N of DIR/model_N.pt (with AFTER: of those
# written after the file AFTER); empty when there is none.
latest_epoch() {
  local epoch
  [ -d "$1" ] || return 0
  for epoch in $(ls "$1" | sed -n 's/^model_\([0-9][0-9]*\)\.pt$/\1/p' | sort -rn); do
    if [ -z "$2" ] || [ "$1/model_${epoch}.pt" -nt "$2" ]; then
      echo "${epoch}"
      return 0
    fi
  done
}

# average_stage AVG_MODEL NUM_AVG MAX_EPOCH [EPOCH_FLAG]: stage 4's averaging. The last
# NUM_AVG checkpoints model_N.pt (1 <= N <= MAX_EPOCH; model_0.pt is an initialisation,
# not a trained epoch) of AVG_MODEL's folder (EXP_DIR/models in every recipe) are
# averaged into AVG_MODEL, unless it was made with the same NUM_AVG and epoch bounds
# after them. An AVG_MODEL without a note (WeSpeaker's average, a released model) is
# averaged again when those checkpoints are all there, else used as it is
# (made_with --wespeaker_path).
# An average equal, byte for byte, to the one there keeps the old file and its time,
# so what was made from it is not made again; its new note, which made_with goes by,
# keeps it up to date for the next run. MAX_EPOCH is the run's last epoch: with
# no model_MAX_EPOCH.pt the run has not finished (crashed, stopped early, still going),
# and averaging its latest checkpoints, saved at a high learning rate, is refused with
# a message naming the options of the script running it ($0) that average it on
# purpose: EPOCH_FLAG (the recipe's option that sets MAX_EPOCH, default --num_epochs)
# with this call's NUM_AVG and EXP_DIR, as --num_avg and --exp_dir (a script that runs
# $0 for its steps, such as run_w2v.sh, passes its own). An average made with these
# settings stays up to date when the checkpoints were deleted since, and a refusal
# leaves its note as it was.
average_stage() {
  local avg=$1 num=$2 max=$3 flag=${4:---num_epochs} dir exp settings latest why epoch
  local checkpoints=()
  dir=$(dirname "${avg}")
  exp=$(dirname "${dir}")
  settings="num_avg=${num} min_epoch=1 max_epoch=${max}"
  if [ -n "${max}" ]; then
    for ((epoch = max - num + 1 > 1 ? max - num + 1 : 1; epoch <= max; epoch++)); do
      checkpoints+=("${dir}/model_${epoch}.pt")
    done
  fi
  # an average without a note, its last checkpoint gone, is not refused: it is used as
  # it is (made_with --wespeaker_path)
  if [ -n "${max}" ] && [ ! -f "${dir}/model_${max}.pt" ] &&
     ! { [ -s "${avg}" ] && { [ ! -e "${avg}.settings" ] ||
                               [ "$(settings_note "${avg}")" == "${settings}" ]; }; }; then
    latest=$(latest_epoch "${dir}")
    if [ -z "${latest}" ]; then
      why="the training has not finished (no checkpoint yet)"
    elif [ "${latest}" -lt "${max}" ]; then
      why="the training has not finished (its latest checkpoint is model_${latest}.pt)"
    else
      why="the run saved no checkpoint of that epoch"
    fi
    echo "$0: the averaging stage averages up to epoch ${max} (${flag}, else the config's" \
         "num_epochs), but ${dir}/model_${max}.pt is missing: ${why}. Finish the training," \
         "or, to average the checkpoints up to epoch N anyway, run the averaging stage of" \
         "$0 again with ${flag} N --num_avg ${num}" "--exp_dir ${exp}" "(the values of this" \
         "call; when another script ran $0 for one of its steps, run $0 by hand with them)" >&2
    return 1
  fi
  if made_with --wespeaker_path "${avg}" "${settings}" "${checkpoints[@]}"; then
    echo "${avg} is up to date"
    return 0
  fi
  if ! python -m wespeaker_py.bin.average_model --dst_model "${avg}.new" --src_path "${dir}" \
    --num "${num}" --min_epoch 1 ${max:+--max_epoch "${max}"}; then
    echo "$0: the averaging stage could not average the last ${num} checkpoints of ${dir} (the" \
         "recipe's --num_avg; see the error above)" >&2
    return 1
  fi
  if [ -f "${avg}" ] && cmp -s "${avg}.new" "${avg}"; then
    rm -f "${avg}.new"
  else
    mv -f "${avg}.new" "${avg}"
  fi
  record_settings "${avg}" "${settings}"
}

# trained_epochs EXP_DIR CONFIG: the num_epochs the run in EXP_DIR trains for: its own
# config.yaml's (the trainer writes it, with every command-line override) once training
# has begun, else CONFIG's (status 1 when CONFIG is needed and is not a file).
trained_epochs() {
  local epochs=
  if [ -f "$1/config.yaml" ]; then
    epochs=$(config_value "$1/config.yaml" num_epochs)
  fi
  if [ -z "${epochs}" ]; then
    epochs=$(config_value "$2" num_epochs) || return 1
  fi
  echo "${epochs}"
}

# start_from MODEL STEP_DIR: STEP_DIR/models/model_0.pt, where a fine-tuning step
# (large-margin, WavLM's next step) starts, becomes a copy of MODEL (the averaged
# model of the step before). A copy of another MODEL is replaced, atomically, while
# the step has trained no epoch (no models/model_N.pt with N >= 1); once it has,
# the step is refused with a message naming the folder to remove, rather than
# fine-tuned further from an old model.
start_from() {
  local model=$1 step=$2 start=$2/models/model_0.pt epoch
  if [ ! -f "${model}" ]; then
    echo "$0: ${model} is missing: finish the step before ${step} first" >&2
    return 1
  fi
  if [ -f "${start}" ] && cmp -s "${model}" "${start}"; then
    return 0
  fi
  epoch=$(latest_epoch "${step}/models")
  if [ "${epoch:-0}" -ge 1 ]; then
    echo "$0: ${step} was trained (up to models/model_${epoch}.pt) from another model than" \
         "${model} now is: remove ${step} to train it again from the new ${model}," \
         "or put back the model it started from" >&2
    return 1
  fi
  mkdir -p "${step}/models"
  cp "${model}" "${start}.tmp"
  mv -f "${start}.tmp" "${start}"
  echo "${step} starts from ${model} (copied to ${start})"
}

# refuse_eval_set_as_cohort COHORT_SET EVAL_SET: stop (status 1) when the AS-Norm cohort
# (and the QMF calibration trials drawn from it) is the evaluation set itself: its
# speaker means hold the test utterances, whose own speaker then enters each top N.
refuse_eval_set_as_cohort() {
  if [ "$1" == "$2" ]; then
    echo "$0: --cohort_set $1 is the evaluation set (--eval_set $2): its speaker means are" \
         "made of the test utterances themselves, so each utterance's own speaker enters its" \
         "top N and biases the normalised scores; give a cohort of other speakers" \
         "(WeSpeaker's VoxCeleb recipe: --cohort_set vox2_dev, --eval_set vox1)" >&2
    exit 1
  fi
}

# config_value YAML KEY [FLAG]: a top-level value of a YAML config (empty if absent); a
# config that is not a file is named in one line (status 1) with FLAG, the recipe's
# option that gave it (default --config).
config_value() {
  if [ ! -f "$1" ]; then
    echo "$0: config $1 does not exist (${3:---config})" >&2
    return 1
  fi
  python -c 'import sys, yaml
value = (yaml.safe_load(open(sys.argv[1])) or {}).get(sys.argv[2])
print("" if value is None else value)' "$1" "$2"
}

# utt2spk_to_spk2utt UTT2SPK > SPK2UTT: speakers sorted, utterances in input order.
utt2spk_to_spk2utt() {
  awk '{ if (!($2 in utts)) order[n++] = $2; utts[$2] = utts[$2] " " $1 }
       END { for (i = 0; i < n; i++) print order[i] utts[order[i]] }' "$1" | LC_ALL=C sort
}

# write_list FILE COMMAND [ARG ...]: COMMAND's output becomes FILE when COMMAND succeeds.
# It is written under a temporary name first, so a run cut short leaves no half list
# that a later run would take for finished.
write_list() {
  local out=$1
  shift
  if "$@" > "${out}.tmp"; then
    mv "${out}.tmp" "${out}"
  else
    rm -f "${out}.tmp"
    return 1
  fi
}

# scp_of DIR: "<last three path components> <path>" for every wav under DIR, sorted (the
# keys of the MUSAN, RIRS_NOISES and VoxCeleb lists). A key would not be one field with
# a space in those components (VoxCeleb, MUSAN and RIRS_NOISES have none): such a path
# is an error naming it.
scp_of() {
  local -
  set -o pipefail
  find "$1" -name '*.wav' |
    awk -F/ -v me="$0" '{ key = $(NF-2) "/" $(NF-1) "/" $NF }
             key ~ /[[:space:]]/ {
               printf "%s: %s: a space in its last three path components would split its key " \
                      "(%s)\n", me, $0, key > "/dev/stderr"
               bad = 1; exit
             }
             { print key, $0 }
             END { exit bad }' | LC_ALL=C sort
}

# count_lines FILE: number of lines (0 when the file is missing).
count_lines() {
  if [ -f "$1" ]; then wc -l < "$1" | tr -d ' '; else echo 0; fi
}

# cohort_top_n TOP_N SPK2UTT: TOP_N, or the number of cohort speakers SPK2UTT lists when
# it lists fewer (AS-Norm cannot use more, and the score files are named by the top_n
# used), said on stderr. A missing SPK2UTT leaves TOP_N to the scoring's own check.
cohort_top_n() {
  local top_n=$1 speakers
  speakers=$(count_lines "$2")
  if [ -f "$2" ] && [ "${top_n}" -gt "${speakers}" ]; then
    echo "top_n lowered from ${top_n} to the ${speakers} cohort speakers of $2" >&2
    top_n=${speakers}
  fi
  echo "${top_n}"
}


# report_metrics RESULT_FILE SCORE_FILE...: EER/minDCF (p_target 0.01) of each score
# file, printed and saved to RESULT_FILE (whole or not at all: a failure on any score
# file leaves the last complete RESULT_FILE), then their DET curves.
report_metrics() {
  local result=$1; shift
  write_list "${result}" \
    python -m wespeaker_py.bin.compute_metrics --p_target 0.01 --c_fa 1 --c_miss 1 "$@" ||
    return 1
  cat "${result}"
  python -m wespeaker_py.bin.compute_det "$@"
}
