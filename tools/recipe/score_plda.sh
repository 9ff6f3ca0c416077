#!/usr/bin/env bash
# PLDA back-end: a two-covariance PLDA trained on the training-set embeddings,
# log-likelihood-ratio scoring of the trial lists, then EER/minDCF and DET curves.
#
#   tools/recipe/score_plda.sh --stage 1 --stop-stage 3 --exp_dir exp/X [--lda_dim 100]
#
# --lda_dim N (train_plda's option) projects the embeddings by LDA to N dimensions
# before PLDA: with no more training speakers than dimensions, which train_plda warns
# about, the scores are calibrated log-likelihood ratios only with N below the number
# of speakers.
#
# Output: ${exp_dir}/plda and ${exp_dir}/scores/<trials>.pldascore. A ${exp_dir}/plda
# that is not ours (WeSpeaker's HDF5 model) is replaced by the one stage 1 trains.

exp_dir=
trials="vox1_O_cleaned.kaldi vox1_E_cleaned.kaldi vox1_H_cleaned.kaldi"
data=data
train_set=vox2_dev
eval_set=vox1
indim=      # embedding size, checked against the embeddings (empty: not checked)
iter=5      # EM iterations
lda_dim=    # LDA projection to this dimension before PLDA (empty: none)
max_missing_fraction=0  # utterances extraction skipped (training lists, trials): largest fraction to drop

stage=-1
stop_stage=-1

. tools/parse_options.sh || exit 1
require_stages 1 3
. path.sh
. tools/recipe_helpers.sh
set -eo pipefail

if [ -z "${exp_dir}" ]; then
  echo "$0: give --exp_dir (the experiment whose embeddings/ and scores/ it uses)" >&2
  exit 1
fi

train_scp=${exp_dir}/embeddings/${train_set}/xvector.scp
eval_scp=${exp_dir}/embeddings/${eval_set}/xvector.scp
trials_dir=${data}/${eval_set}/trials
scores_dir=${exp_dir}/scores

if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ]; then
  echo "train the plda model ..."
  require_inputs "run the extraction stage (stage 4) first" "${train_scp}" || exit 1
  plda_settings="train_set=${train_set} iter=${iter} indim=${indim}${lda_dim:+ lda_dim=${lda_dim}}"
  # a file there that is not our model (WeSpeaker's HDF5 one), which stage 2 cannot
  # read, is trained again whatever its note says
  if [ -e "${exp_dir}/plda" ] && ! foreign=$(python -c 'import sys
from wespeaker_py.scoring.plda import TwoCovPLDA
from wespeaker_py.utils.tables import DataFormatError
try:
    TwoCovPLDA.load(sys.argv[1])
except DataFormatError as error:
    sys.exit(str(error))' "${exp_dir}/plda" 2>&1); then
    echo "${foreign}"
    echo "${exp_dir}/plda is replaced: a PLDA model of wespeaker_py is trained in its place"
    : > "${exp_dir}/plda.settings"
  fi
  if made_with "${exp_dir}/plda" "${plda_settings}" "${train_scp}" \
      "${data}/${train_set}/utt2spk"; then
    echo "the PLDA model is up to date"
  else
    python -m wespeaker_py.bin.train_plda \
      --exp_dir "${exp_dir}" \
      --scp_path "${train_scp}" \
      --utt2spk "${data}/${train_set}/utt2spk" \
      ${indim:+--indim ${indim}} \
      ${lda_dim:+--lda_dim "${lda_dim}"} \
      --iter "${iter}" \
      --max_missing_fraction "${max_missing_fraction}"
    record_settings "${exp_dir}/plda" "${plda_settings}"
    echo "plda training finished"
  fi
fi

if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 2 ]; then
  echo "apply plda scoring ..."
  require_inputs "run the extraction stage (stage 4) first" "${eval_scp}" || exit 1
  mkdir -p "${scores_dir}"
  for x in ${trials}; do
    out=${scores_dir}/${x}.pldascore
    if made_with --wespeaker_path "${out}" "eval_set=${eval_set}" "${exp_dir}/plda" \
        "${eval_scp}" "${trials_dir}/${x}"; then
      echo "${x}: PLDA scores are up to date"
      continue
    fi
    echo "scoring on ${x}"
    # Every evaluation utterance is its own enrolment model.
    python -m wespeaker_py.bin.eval_plda \
      --enroll_scp_path "${eval_scp}" \
      --test_scp_path "${eval_scp}" \
      --utt2spk <(awk '{print $1, $1}' "${data}/${eval_set}/utt2spk") \
      --trial "${trials_dir}/${x}" \
      --score_path "${out}" \
      --model_path "${exp_dir}/plda" \
      --max_missing_fraction "${max_missing_fraction}"
    record_settings "${out}" "eval_set=${eval_set}"
  done
fi

if [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ]; then
  echo "compute metrics (EER/minDCF) ..."
  score_files=()
  for x in ${trials}; do score_files+=("${scores_dir}/${x}.pldascore"); done
  report_metrics "${scores_dir}/${eval_set}_plda_result" "${score_files[@]}"
fi
