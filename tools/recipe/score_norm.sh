#!/usr/bin/env bash
# Score normalisation (AS-Norm or S-Norm) of the cosine scores against a cohort
# of per-speaker mean embeddings, then EER/minDCF and DET curves.
#
#   tools/recipe/score_norm.sh --stage 1 --stop-stage 3 --score_norm_method asnorm \
#     --cohort_set vox2_dev --top_n 300 --data data --exp_dir exp/X --trials "..."
#
# Output: ${exp_dir}/scores/${cohort_set}_asnorm${top_n}_<trials>.score (snorm: no top_n).

score_norm_method="asnorm"  # asnorm/snorm
cohort_set=vox2_dev
top_n=100
exp_dir=
trials="vox1_O_cleaned.kaldi vox1_E_cleaned.kaldi vox1_H_cleaned.kaldi"
data=data
train_set=vox2_dev  # its mean embedding is subtracted
eval_set=vox1
max_missing_fraction=0  # trials naming an utterance extraction skipped: largest fraction to drop

stage=-1
stop_stage=-1

. tools/parse_options.sh || exit 1
require_stages 1 3
. path.sh
. tools/recipe_helpers.sh
set -eo pipefail

refuse_eval_set_as_cohort "${cohort_set}" "${eval_set}"
top_n=$(cohort_top_n "${top_n}" "${data}/${cohort_set}/spk2utt")
cohort_dir=${exp_dir}/embeddings/${cohort_set}
eval_scp=${exp_dir}/embeddings/${eval_set}/xvector.scp
mean_vec=${exp_dir}/embeddings/${train_set}/mean_vec.npy
scores_dir=${exp_dir}/scores
output_name=${cohort_set}_${score_norm_method}
[ "${score_norm_method}" == "asnorm" ] && output_name=${output_name}${top_n}

if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ]; then
  echo "compute mean xvector of each ${cohort_set} speaker"
  require_inputs "run the extraction stage (stage 4) first" "${cohort_dir}/xvector.scp" || exit 1
  if up_to_date "${cohort_dir}/spk_xvector.scp" "${cohort_dir}/xvector.scp" "${data}/${cohort_set}/spk2utt"; then
    echo "speaker means are up to date"
  else
    python tools/vector_mean.py \
      --spk2utt "${data}/${cohort_set}/spk2utt" \
      --xvector_scp "${cohort_dir}/xvector.scp" \
      --spk_xvector_ark "${cohort_dir}/spk_xvector.ark" \
      --max_missing_fraction "${max_missing_fraction}"
  fi
fi

if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 2 ]; then
  echo "compute norm score"
  require_inputs "make the speaker means (stage 1) first" "${cohort_dir}/spk_xvector.scp" ||
    exit 1
  require_inputs "run the extraction stage (stage 4) first" "${eval_scp}" || exit 1
  train_scp=${exp_dir}/embeddings/${train_set}/xvector.scp
  for x in ${trials}; do
    out=${scores_dir}/${output_name}_${x}.score
    cosine=${scores_dir}/${x}.score
    settings="train_set=${train_set} eval_set=${eval_set}"
    if made_with --wespeaker_path "${out}" "${settings}" "${cosine}" "${eval_scp}" "${mean_vec}" \
        "${cohort_dir}/spk_xvector.scp" "${train_scp}"; then
      echo "${x}: normalised scores are up to date"
      continue
    fi
    # inputs made from older embeddings are refused (bin.score_norm names a missing one).
    # The mean vector may be older than ${train_scp}, as score.sh rewrites it only when it
    # changes: the cosine scores, written after it, are compared instead.
    if [ -s "${cohort_dir}/spk_xvector.scp" ] && ! up_to_date "${cohort_dir}/spk_xvector.scp" \
        "${cohort_dir}/xvector.scp" "${data}/${cohort_set}/spk2utt"; then
      echo "$0: ${cohort_dir}/spk_xvector.scp is older than" \
           "${cohort_dir}/xvector.scp or ${data}/${cohort_set}/spk2utt: make the speaker" \
           "means again (stage 1) first" >&2
      exit 1
    fi
    if [ -s "${cosine}" ] && ! up_to_date "${cosine}" "${eval_scp}" "${train_scp}" \
        "${mean_vec}"; then
      echo "$0: ${cosine} is older than the embeddings or the mean vector it is" \
           "normalised with (${eval_scp}, ${train_scp}, ${mean_vec}): score the trials" \
           "again (score.sh) first" >&2
      exit 1
    fi
    python -m wespeaker_py.bin.score_norm \
      --score_norm_method "${score_norm_method}" \
      --top_n "${top_n}" \
      --trial_score_file "${cosine}" \
      --score_norm_file "${out}" \
      --cohort_emb_scp "${cohort_dir}/spk_xvector.scp" \
      --eval_emb_scp "${eval_scp}" \
      --mean_vec_path "${mean_vec}" \
      --max_missing_fraction "${max_missing_fraction}"
    record_settings "${out}" "${settings}"
  done
fi

if [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ]; then
  echo "compute metrics"
  score_files=()
  for x in ${trials}; do score_files+=("${scores_dir}/${output_name}_${x}.score"); done
  report_metrics "${scores_dir}/${eval_set}_${score_norm_method}${top_n}_result" "${score_files[@]}"
fi
