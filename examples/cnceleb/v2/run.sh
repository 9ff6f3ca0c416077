#!/usr/bin/env bash
# CN-Celeb v2 recipe: train on CN-Celeb1 dev and CN-Celeb2 (short utterances of a
# speaker and genre combined to at least 5 s), evaluate on the CN-Celeb1 eval
# trials, enrolled two ways: CNC-Eval-Concat.lst (the enrollment file, all of a
# speaker's enrollment speech in one) and CNC-Eval-Avg.lst (the mean embedding of the
# speaker's enrollment utterances; WeSpeaker's results table reports this one).
# The stage numbers, flags and defaults are those of WeSpeaker's
# examples/cnceleb/v2/run.sh; stage 1 also downloads the archives that are missing
# (WeSpeaker's leaves that to you), and results are named eval_*_result.
#
#   bash run.sh --stage 1 --stop_stage 9 [--config conf/ecapa_tdnn.yaml --exp_dir exp/X]
#
# Stages:
#   1  prepare data (local/prepare_data.sh: download, unpack, combine short
#      utterances, lists, enrollment map and the two trial lists)
#   2  raw or shard data lists of cnceleb_train and eval
#   3  train (torchrun; resumes from the newest checkpoint of ${exp_dir} if there is one)
#   4  average the last ${num_avg} checkpoints, extract cnceleb_train and eval
#      embeddings and the enrollment speakers' means (local/extract_cnc.sh)
#   5  cosine scoring (minus the cnceleb_train mean), EER/minDCF
#   6  AS-Norm (or S-Norm) against the cnceleb_train speaker cohort
#   7  QMF score calibration without the duration measures, as WeSpeaker's
#      (optional: on CN-Celeb it improves the EER and can worsen minDCF)
#   8  export the averaged model (TorchScript; ONNX when onnx is installed)
#   9  large-margin fine-tuning: stages 3-8 again with ${lm_config} in ${exp_dir}-LM
# Each stage skips the work an earlier run finished. After the scoring stages (whichever
# of 5-7 ran) and after stage 9 the recipe writes ${exp_dir}/results.md (tools/recipe/results_table.sh): EER and minDCF on both trial
# lists for every score file in ${exp_dir}/scores and ${exp_dir}-LM/scores, with a DET
# plot per list. Several GPUs and machines: --gpus, --num_nodes and --HOST_NODE_ADDR,
# as in examples/voxceleb/v2/run.sh.
#
# The configs are the repository's conf/ (WeSpeaker's CN-Celeb configs hold the same
# values as its VoxCeleb ones: resnet, resnet_lm, ecapa_tdnn, ecapa_tdnn_lm, repvgg).

. ./path.sh || exit 1

stage=-1
stop_stage=-1

HOST_NODE_ADDR="localhost:29400"
num_nodes=1
job_id=2024

data=data
data_type="shard"  # shard/raw

config=conf/resnet.yaml
exp_dir=exp/ResNet34-TSTP-emb256-fbank80-num_frms200-aug0.6-spTrue-saFalse-ArcMargin-SGD-epoch150
gpus="[0,1]"
num_avg=10
checkpoint=

trials="CNC-Eval-Concat.lst CNC-Eval-Avg.lst"
score_norm_method="asnorm"  # asnorm/snorm
top_n=300
train_args=  # more trainer options, e.g. "--dataloader_args.batch_size 64"
num_epochs=  # training epochs (passed to the trainer) and the last epoch stage 4 averages up to; empty: the config's num_epochs (averaging: that of the run's ${exp_dir}/config.yaml)
backend_chunks=true  # cnceleb_train embedded from random num_frms chunks; false: whole utterances
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
sets="--train_set cnceleb_train --eval_set eval"

if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ]; then
  echo "Prepare datasets ..."
  local/prepare_data.sh --stage 1 --stop_stage 4 --data "${data}"
fi

if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 2 ]; then
  echo "Convert train and test data to ${data_type} ..."
  tools/recipe/make_lists.sh --data "${data}" --data_type "${data_type}" --sets "cnceleb_train eval"
  # MUSAN and RIRS_NOISES are read through their wav.scp (${data}/musan, ${data}/rirs).
fi

if [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ]; then
  echo "Start training ..."
  train_stage "${data}/cnceleb_train" ${train_args}  # train_args: words of trainer options
fi

avg_model=${exp_dir}/models/avg_model.pt

if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 4 ]; then
  echo "Do model average ..."
  # the last ${num_avg} of epochs 1..${num_epochs} (empty: the num_epochs of the run's
  # config.yaml, else --config's; an unfinished run is an error), averaged again when
  # either changes
  last_epoch=${num_epochs:-$(trained_epochs "${exp_dir}" "${config}")}
  average_stage "${avg_model}" "${num_avg}" "${last_epoch}"

  echo "Extract embeddings ..."
  local/extract_cnc.sh \
    --exp_dir "${exp_dir}" --model_path "${avg_model}" \
    --nj "${nj}" --gpus "${gpus}" --data_type "${data_type}" --data "${data}" \
    --backend_chunks "${backend_chunks}" --chunk_seed "${chunk_seed}"
fi

if [ ${stage} -le 5 ] && [ ${stop_stage} -ge 5 ]; then
  echo "Score ..."
  tools/recipe/score.sh \
    --stage 1 --stop-stage 2 \
    --data "${data}" \
    --exp_dir "${exp_dir}" \
    --trials "${trials}" \
    ${sets}
fi

if [ ${stage} -le 6 ] && [ ${stop_stage} -ge 6 ]; then
  echo "Score norm ..."
  tools/recipe/score_norm.sh \
    --stage 1 --stop-stage 3 \
    --score_norm_method "${score_norm_method}" \
    --cohort_set cnceleb_train \
    --top_n "${top_n}" \
    --data "${data}" \
    --exp_dir "${exp_dir}" \
    --trials "${trials}" \
    ${sets}
fi

if [ ${stage} -le 7 ] && [ ${stop_stage} -ge 7 ]; then
  echo "Score calibration ..."
  tools/recipe/score_calibration.sh \
    --stage 1 --stop-stage 5 \
    --score_norm_method "${score_norm_method}" \
    --calibration_trial "cn_dev_cali.kaldi" \
    --each_trial_num 20000 \
    --drop_duration true \
    --cohort_set cnceleb_train \
    --top_n "${top_n}" \
    --data "${data}" \
    --exp_dir "${exp_dir}" \
    --trials "${trials}" \
    ${sets}
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
