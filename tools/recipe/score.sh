#!/usr/bin/env bash
# Cosine scoring of the trial lists (embeddings minus the mean embedding of the
# training set), then EER/minDCF and DET curves.
#
#   tools/recipe/score.sh --stage 1 --stop-stage 2 --data data --exp_dir exp/X \
#     --trials "vox1_O_cleaned.kaldi vox1_E_cleaned.kaldi vox1_H_cleaned.kaldi"
#
# Stage 1 rescores only when the embeddings are newer than the score files.

exp_dir=
trials="vox1_O_cleaned.kaldi vox1_E_cleaned.kaldi vox1_H_cleaned.kaldi"
data=data
train_set=vox2_dev  # its mean embedding is subtracted
eval_set=vox1       # trials are read from ${data}/${eval_set}/trials
max_missing_fraction=0  # trials naming an utterance extraction skipped: largest fraction to drop

stage=-1
stop_stage=-1

. tools/parse_options.sh || exit 1
require_stages 1 2
. path.sh
. tools/recipe_helpers.sh
set -eo pipefail

trials_dir=${data}/${eval_set}/trials
scores_dir=${exp_dir}/scores
eval_scp=${exp_dir}/embeddings/${eval_set}/xvector.scp
train_scp=${exp_dir}/embeddings/${train_set}/xvector.scp
settings="train_set=${train_set} eval_set=${eval_set}"

if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ]; then
  echo "apply cosine scoring ..."
  require_inputs "run the extraction stage (stage 4) first" "${eval_scp}" "${train_scp}" ||
    exit 1
  mkdir -p "${scores_dir}"
  todo=()
  for x in ${trials}; do
    if made_with --wespeaker_path "${scores_dir}/${x}.score" "${settings}" "${eval_scp}" \
        "${train_scp}" "${trials_dir}/${x}"; then
      echo "${x}: scores are up to date"
    else
      todo+=("${trials_dir}/${x}")
    fi
  done
  if [ ${#todo[@]} -gt 0 ]; then
    python -m wespeaker_py.bin.score \
      --exp_dir "${exp_dir}" \
      --eval_scp_path "${eval_scp}" \
      --cal_mean True \
      --cal_mean_dir "${exp_dir}/embeddings/${train_set}" \
      --max_missing_fraction "${max_missing_fraction}" \
      "${todo[@]}"
    for x in "${todo[@]}"; do
      record_settings "${scores_dir}/$(basename "${x}").score" "${settings}"
    done
  fi
fi

if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 2 ]; then
  echo "compute metrics (EER/minDCF) ..."
  score_files=()
  for x in ${trials}; do score_files+=("${scores_dir}/${x}.score"); done
  report_metrics "${scores_dir}/${eval_set}_cos_result" "${score_files[@]}"
fi
