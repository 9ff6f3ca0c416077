#!/usr/bin/env bash
# VoxCeleb v2 recipe: train on VoxCeleb2 dev, evaluate on the cleaned
# VoxCeleb1-O/E/H trial lists.
#
#   bash run.sh --stage 1 --stop_stage 9 [--config conf/ecapa_tdnn_c512.yaml --exp_dir exp/X]
#
# Stages:
#   1  prepare data (local/prepare_data.sh: download MUSAN and RIRS_NOISES, unpack,
#      m4a -> wav, lists, trials). VoxCeleb needs a registration: put its archives in
#      ${data}/download_data, or pass --vox_url with the base URL you were sent.
#   2  raw or shard data lists of vox2_dev and vox1
#   3  train (torchrun; resumes from the newest checkpoint of ${exp_dir} if there is one)
#   4  average the last ${num_avg} checkpoints, extract vox2_dev and vox1 embeddings
#   5  cosine scoring (minus the vox2_dev mean), EER/minDCF
#   6  AS-Norm (or S-Norm) against the vox2_dev speaker cohort
#   7  QMF score calibration
#   8  export the averaged model (TorchScript; ONNX when onnx is installed)
#   9  large-margin fine-tuning: stages 3-8 again with ${lm_config} in ${exp_dir}-LM
# Each stage skips the work an earlier run finished. After the scoring stages (whichever
# of 5-7 ran) and after stage 9 the recipe writes ${exp_dir}/results.md (tools/recipe/results_table.sh): EER and minDCF on each list
# of ${trials} for every score file in ${exp_dir}/scores and ${exp_dir}-LM/scores,
# with a DET plot per list.
#
# The stage numbers are WeSpeaker's, and scripts call them by number: stage 9 runs
# this script's stages 3-8 again, run_wavlm.sh and run_w2v.sh run its stages 1-2 and
# 4-7. So a new scoring back-end goes at the end, as stage 10: update require_stages
# and the list above, give stage 9 a second call for stage 10 (a range 3-10 would
# run stage 9 again), and add it to run_wavlm.sh/run_w2v.sh if their models need it.
# Its score files, scores/<trials>.<name>score, are listed by tools/results_table.py
# (see docs/extending.md); end it with write_results_table, as stage 9 ends.
#
# Several GPUs of one machine: --gpus "[0,1,2,3]". Several machines: run the
# same command on each with --num_nodes N --HOST_NODE_ADDR "host:port" (the
# rendezvous endpoint, reachable from every node), e.g.
#   bash run.sh --stage 3 --stop_stage 3 --num_nodes 2 --HOST_NODE_ADDR "10.0.0.1:29400" --gpus "[0,1,2,3,4,5,6,7]"
# PLDA scoring: tools/recipe/score_plda.sh --stage 1 --stop-stage 3 --exp_dir ${exp_dir};
# stage 5 run again (its scores are up to date) adds it to results.md.
#
# Stage 4 embeds vox2_dev (the mean vector, AS-Norm cohort, QMF calibration trials
# and PLDA training data) from one random num_frms chunk per utterance, as
# WeSpeaker does, and vox1 from whole utterances; --backend_chunks false embeds
# vox2_dev whole. Training, extraction and scoring are the shared scripts of
# tools/recipe/, which the mini recipe runs too.

. ./path.sh || exit 1

stage=-1
stop_stage=-1

HOST_NODE_ADDR="localhost:29400"
num_nodes=1
job_id=2024

data=data
data_type="shard"  # shard/raw
vox_url=  # base URL of the VoxCeleb archives; empty: they must be in ${data}/download_data

config=conf/resnet34.yaml
exp_dir=exp/ResNet34-TSTP-emb256-fbank80-num_frms200-aug0.6-spTrue-saFalse-ArcMargin-SGD-epoch150
gpus="[0,1]"
num_avg=10
checkpoint=

trials="vox1_O_cleaned.kaldi vox1_E_cleaned.kaldi vox1_H_cleaned.kaldi"
score_norm_method="asnorm"  # asnorm/snorm
top_n=300
train_args=  # more trainer options, e.g. "--dataloader_args.batch_size 64"
num_epochs=  # training epochs (passed to the trainer) and the last epoch stage 4 averages up to; empty: the config's num_epochs (averaging: that of the run's ${exp_dir}/config.yaml)
backend_chunks=true  # vox2_dev embedded from random num_frms chunks; false: whole utterances
chunk_seed=42
nj=4  # extraction jobs (on the GPUs of --gpus in turn, or on the CPU)

# large-margin fine-tuning; empty: ${config} with _lm before .yaml
lm_config=

. tools/parse_options.sh || exit 1
require_stages 1 9
. tools/recipe_helpers.sh
. tools/recipe/train_stage.sh
. tools/recipe/results_table.sh
set -eo pipefail

lm_config=${lm_config:-${config%.yaml}_lm.yaml}
lm_exp_dir=${exp_dir}-LM

if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ]; then
  echo "Prepare datasets ..."
  local/prepare_data.sh --stage 1 --stop_stage 4 --data "${data}" \
    ${vox_url:+--vox_url "${vox_url}"}
fi

if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 2 ]; then
  echo "Convert train and test data to ${data_type} ..."
  tools/recipe/make_lists.sh --data "${data}" --data_type "${data_type}" --sets "vox2_dev vox1"
  # MUSAN and RIRS_NOISES are read through their wav.scp (${data}/musan, ${data}/rirs).
fi

if [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ]; then
  echo "Start training ..."
  train_stage "${data}/vox2_dev" ${train_args}  # train_args: words of trainer options
fi

# RepVGG needs no conversion step here: extraction and export fuse it into its
# deploy form themselves.
avg_model=${exp_dir}/models/avg_model.pt

if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 4 ]; then
  echo "Do model average ..."
  # the last ${num_avg} of epochs 1..${num_epochs} (empty: the num_epochs of the run's
  # config.yaml, else --config's; an unfinished run is an error), averaged again when
  # either changes
  last_epoch=${num_epochs:-$(trained_epochs "${exp_dir}" "${config}")}
  average_stage "${avg_model}" "${num_avg}" "${last_epoch}"

  echo "Extract embeddings ..."
  tools/recipe/extract_sets.sh \
    --exp_dir "${exp_dir}" --model_path "${avg_model}" \
    --nj "${nj}" --gpus "${gpus}" --data_type "${data_type}" --data "${data}" \
    --train_set vox2_dev --eval_set vox1 \
    --backend_chunks "${backend_chunks}" --chunk_seed "${chunk_seed}"
fi

if [ ${stage} -le 5 ] && [ ${stop_stage} -ge 5 ]; then
  echo "Score ..."
  tools/recipe/score.sh \
    --stage 1 --stop-stage 2 \
    --data "${data}" \
    --exp_dir "${exp_dir}" \
    --trials "${trials}"
fi

if [ ${stage} -le 6 ] && [ ${stop_stage} -ge 6 ]; then
  echo "Score norm ..."
  tools/recipe/score_norm.sh \
    --stage 1 --stop-stage 3 \
    --score_norm_method "${score_norm_method}" \
    --cohort_set vox2_dev \
    --top_n "${top_n}" \
    --data "${data}" \
    --exp_dir "${exp_dir}" \
    --trials "${trials}"
fi

if [ ${stage} -le 7 ] && [ ${stop_stage} -ge 7 ]; then
  echo "Score calibration ..."
  tools/recipe/score_calibration.sh \
    --stage 1 --stop-stage 5 \
    --score_norm_method "${score_norm_method}" \
    --calibration_trial "vox2_cali.kaldi" \
    --cohort_set vox2_dev \
    --top_n "${top_n}" \
    --data "${data}" \
    --exp_dir "${exp_dir}" \
    --trials "${trials}"
fi

# after whichever scoring stages ran: the table of every score file there is
if [ ${stage} -le 7 ] && [ ${stop_stage} -ge 5 ]; then
  write_results_table "${trials}" "${exp_dir}" "${lm_exp_dir}"
fi

if [ ${stage} -le 8 ] && [ ${stop_stage} -ge 8 ]; then
  echo "Export the best model ..."
  tools/recipe/export_model.sh --exp_dir "${exp_dir}" --checkpoint "${avg_model}"
fi

if [ ${stage} -le 9 ] && [ ${stop_stage} -ge 9 ]; then
  echo "Large margin fine-tuning ..."
  if [ ! -f "${lm_config}" ]; then
    echo "$0: no large-margin config ${lm_config} (set --lm_config)" >&2
    exit 1
  fi
  # The averaged model of the first run initialises LM training (as epoch 0).
  start_from "${avg_model}" "${lm_exp_dir}"
  # stages 3-8 by number (see the header): a later stage needs a call of its own
  bash "$0" --stage 3 --stop_stage 8 \
    --data "${data}" \
    --data_type "${data_type}" \
    --config "${lm_config}" \
    --exp_dir "${lm_exp_dir}" \
    --gpus "${gpus}" \
    --num_avg 1 \
    --checkpoint "${lm_exp_dir}/models/model_0.pt" \
    --trials "${trials}" \
    --score_norm_method "${score_norm_method}" \
    --top_n "${top_n}" \
    --train_args "${train_args}" \
    --backend_chunks "${backend_chunks}" \
    --chunk_seed "${chunk_seed}" \
    --nj "${nj}" \
    --HOST_NODE_ADDR "${HOST_NODE_ADDR}" \
    --num_nodes "${num_nodes}" \
    --job_id "${job_id}"
  write_results_table "${trials}" "${exp_dir}" "${lm_exp_dir}"
fi
