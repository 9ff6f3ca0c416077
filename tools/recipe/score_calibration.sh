#!/usr/bin/env bash
# QMF score calibration: a logistic regression on the AS-Norm score and quality
# measures (durations, embedding magnitudes, cohort means), trained on
# calibration trials drawn from the training set and applied to the evaluation
# trials; then EER/minDCF and DET curves.
#
#   tools/recipe/score_calibration.sh --stage 1 --stop-stage 5 --score_norm_method asnorm \
#     --calibration_trial vox2_cali.kaldi --cohort_set vox2_dev --top_n 300 \
#     --data data --exp_dir exp/X --trials "..."
#
# A ${data}/${eval_set}/trials/${calibration_trial} put there by hand is used as it is;
# otherwise the list is generated (duration-stratified, as WeSpeaker's vox2_cali), and
# generated again when the training set's lists or --each_trial_num change.
# The duration measures of QMF are those of the full utterances (utt2dur), also
# when the training-set embeddings come from random chunks, as in WeSpeaker; of a set
# with a segments file, the lengths of its segments.
# --drop_duration true leaves them out (WeSpeaker's CN-Celeb recipe: its enrollment
# "utterances" are speaker means, which have no duration).

score_norm_method="asnorm"  # asnorm/snorm
cohort_set=vox2_dev
calibration_trial="vox2_cali.kaldi"
top_n=100
exp_dir=
trials="vox1_O_cleaned.kaldi vox1_E_cleaned.kaldi vox1_H_cleaned.kaldi"
data=data
train_set=vox2_dev  # calibration trials, mean embedding
eval_set=vox1
max_missing_fraction=0  # trials naming an utterance extraction skipped: largest fraction to drop
each_trial_num=10000  # calibration trials per duration pairing, when the list is generated
drop_duration=false   # true: QMF without the duration measures

stage=-1
stop_stage=-1

. tools/parse_options.sh || exit 1
require_stages 1 5
. path.sh
. tools/recipe_helpers.sh
set -eo pipefail
refuse_eval_set_as_cohort "${cohort_set}" "${eval_set}"

case "${drop_duration}" in
  true|false) ;;
  *) echo "$0: --drop_duration must be true or false, got '${drop_duration}'" >&2; exit 1 ;;
esac

top_n=$(cohort_top_n "${top_n}" "${data}/${cohort_set}/spk2utt")
output_name=${cohort_set}_${score_norm_method}
[ "${score_norm_method}" == "asnorm" ] && output_name=${output_name}${top_n}
trials_dir=${data}/${eval_set}/trials
scores_dir=${exp_dir}/scores
cali_dir=${scores_dir}/calibration
train_scp=${exp_dir}/embeddings/${train_set}/xvector.scp
eval_scp=${exp_dir}/embeddings/${eval_set}/xvector.scp
cohort_scp=${exp_dir}/embeddings/${cohort_set}/spk_xvector.scp

if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ]; then
  echo "Score calibration set"
  # the training set's durations draw the calibration trials; the evaluation set's are
  # QMF measures, not needed without them
  dur_sets=${train_set}
  ${drop_duration} || dur_sets="${dur_sets} ${eval_set}"
  for dset in ${dur_sets}; do
    utt2dur=${data}/${dset}/utt2dur
    segments=${data}/${dset}/segments
    if up_to_date "${utt2dur}" "${data}/${dset}/wav.scp" "${segments}"; then
      continue
    fi
    # a set with segments: its wav.scp lists recordings, and each utterance lasts its
    # span (wav2dur reads a recording only for a segment ending in -1)
    segments_opts=()
    if [ -f "${segments}" ]; then
      segments_opts=(--segments "${segments}")
    fi
    # made again when the set was prepared again, except, without segments, from pipes,
    # which wav2dur would run and decode one by one: an utt2dur given with them (Kaldi's)
    # is kept
    if [ -s "${utt2dur}" ] && [ ! -f "${segments}" ] &&
       grep -q '|[[:space:]]*$' "${data}/${dset}/wav.scp"; then
      echo "$0: ${utt2dur} is older than its wav.scp, whose pipes wav2dur would have to" \
           "decode; using it as it is (remove it to measure them)" >&2
      continue
    fi
    python tools/wav2dur.py "${segments_opts[@]}" "${data}/${dset}/wav.scp" "${utt2dur}" \
      > "${data}/${dset}/dur.log"
  done
  cali_list=${trials_dir}/${calibration_trial}
  cali_settings="generated from ${train_set}, each_trial_num=${each_trial_num}"
  if [ -e "${cali_list}" ] && [ ! -e "${cali_list}.settings" ]; then
    echo "${calibration_trial}: using the list in ${trials_dir} as it is"
  elif made_with "${cali_list}" "${cali_settings}" "${data}/${train_set}/utt2dur" \
      "${data}/${train_set}/utt2spk"; then
    echo "${calibration_trial}: the generated list is up to date"
  else
    mkdir -p "${trials_dir}"
    python tools/generate_calibration_trial.py \
      --utt2dur "${data}/${train_set}/utt2dur" \
      --utt2spk "${data}/${train_set}/utt2spk" \
      --trial_path "${cali_list}" \
      --each_trial_num "${each_trial_num}"
    record_settings "${cali_list}" "${cali_settings}"
  fi
  require_inputs "run the extraction stage (stage 4) first" "${train_scp}" || exit 1
  cali_score=${scores_dir}/${calibration_trial}.score
  if made_with --wespeaker_path "${cali_score}" "train_set=${train_set}" "${train_scp}" \
      "${trials_dir}/${calibration_trial}"; then
    echo "${calibration_trial}: scores are up to date"
  else
    python -m wespeaker_py.bin.score \
      --exp_dir "${exp_dir}" \
      --eval_scp_path "${train_scp}" \
      --cal_mean True \
      --cal_mean_dir "${exp_dir}/embeddings/${train_set}" \
      --max_missing_fraction "${max_missing_fraction}" \
      "${trials_dir}/${calibration_trial}"
    record_settings "${cali_score}" "train_set=${train_set}"
  fi
  cali_norm=${scores_dir}/${output_name}_${calibration_trial}.score
  require_inputs "make the speaker means (score_norm.sh stage 1) first" "${cohort_scp}" ||
    exit 1
  if made_with --wespeaker_path "${cali_norm}" "train_set=${train_set}" "${cali_score}" \
      "${cohort_scp}"; then
    echo "${calibration_trial}: normalised scores are up to date"
  elif [ -s "${cohort_scp}" ] && ! up_to_date "${cohort_scp}" \
      "${exp_dir}/embeddings/${cohort_set}/xvector.scp" "${data}/${cohort_set}/spk2utt"; then
    echo "$0: ${cohort_scp} is older than the embeddings or spk2utt of" \
         "${cohort_set}: make the speaker means again (score_norm.sh stage 1) first" >&2
    exit 1
  else
    python -m wespeaker_py.bin.score_norm \
      --score_norm_method "${score_norm_method}" \
      --top_n "${top_n}" \
      --trial_score_file "${cali_score}" \
      --score_norm_file "${cali_norm}" \
      --cohort_emb_scp "${cohort_scp}" \
      --eval_emb_scp "${train_scp}" \
      --mean_vec_path "${exp_dir}/embeddings/${train_set}/mean_vec.npy" \
      --max_missing_fraction "${max_missing_fraction}" \
      --cohort_of_trial_speakers "$([ "${train_set}" == "${cohort_set}" ] && echo true || echo false)"
    record_settings "${cali_norm}" "train_set=${train_set}"
  fi
fi

if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 2 ]; then
  echo "Prepare calibration factors"
  mkdir -p "${cali_dir}"
  durations=()  # the durations of every trial's utterances, unless they are dropped
  if ! ${drop_duration}; then
    cat "${data}/${eval_set}/utt2dur" "${data}/${train_set}/utt2dur" > "${cali_dir}/utt2dur.tmp"
    if cmp -s "${cali_dir}/utt2dur.tmp" "${cali_dir}/utt2dur"; then
      rm "${cali_dir}/utt2dur.tmp"  # unchanged: keep its time stamp
    else
      mv "${cali_dir}/utt2dur.tmp" "${cali_dir}/utt2dur"
    fi
    durations=(--wav_dur_scp "${cali_dir}/utt2dur")
  fi
  for x in ${calibration_trial} ${trials}; do
    factors=${cali_dir}/${output_name}_${x}.calibration
    norm_score=${scores_dir}/${output_name}_${x}.score
    emb_scp=${eval_scp}
    [ "${x}" == "${calibration_trial}" ] && emb_scp=${train_scp}
    require_inputs "run the extraction stage (stage 4) first" "${emb_scp}" || exit 1
    require_inputs "make the speaker means (score_norm.sh stage 1) first" "${cohort_scp}" ||
      exit 1
    if made_with --wespeaker_path "${factors}" "drop_duration=${drop_duration}" \
        "${norm_score}" "${emb_scp}" "${cohort_scp}" "${durations[@]:1}"; then
      echo "${x}: calibration factors are up to date"
      continue
    fi
    # normalised scores made from older embeddings are refused, not calibrated
    if [ -s "${norm_score}" ] && ! up_to_date "${norm_score}" "${emb_scp}" "${cohort_scp}"; then
      echo "$0: ${norm_score} is older than the embeddings it was normalised" \
           "with (${emb_scp}, ${cohort_scp}): normalise the scores again (score_norm.sh," \
           "or stage 1 here for ${calibration_trial}) first" >&2
      exit 1
    fi
    python -m wespeaker_py.bin.score_calibration gather_calibration_factors \
      "${durations[@]}" \
      --max_dur 20 \
      --score_norm_file "${norm_score}" \
      --calibration_factor_file "${factors}" \
      --drop_duration "${drop_duration}"
    record_settings "${factors}" "drop_duration=${drop_duration}"
  done
fi

# one model per score normalisation and calibration trial list, as its factors
cali_model=${cali_dir}/${output_name}_${calibration_trial}.model.pt
if [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ]; then
  echo "Train calibration model"
  cali_factors=${cali_dir}/${output_name}_${calibration_trial}.calibration
  if up_to_date "${cali_model}" "${cali_factors}"; then
    echo "the calibration model is up to date"
  else
    python -m wespeaker_py.bin.score_calibration train_calibration_model \
      --calibration_factor_file "${cali_factors}" \
      --save_model_path "${cali_model}"
  fi
fi

cali_output_name=cali_${output_name}
if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 4 ]; then
  echo "Infer calibration model"
  for x in ${trials}; do
    out=${scores_dir}/${cali_output_name}_${x}.score
    factors=${cali_dir}/${output_name}_${x}.calibration
    if up_to_date "${out}" "${factors}" "${cali_model}"; then
      echo "${x}: calibrated scores are up to date"
      continue
    fi
    python -m wespeaker_py.bin.score_calibration infer_calibration \
      --calibration_factor_file "${factors}" \
      --save_model_path "${cali_model}" \
      --calibration_score_file "${out}"
  done
fi

if [ ${stage} -le 5 ] && [ ${stop_stage} -ge 5 ]; then
  echo "compute metrics"
  score_files=()
  for x in ${trials}; do score_files+=("${scores_dir}/${cali_output_name}_${x}.score"); done
  report_metrics "${scores_dir}/${eval_set}_cali_${score_norm_method}${top_n}_result" \
    "${score_files[@]}"
fi
