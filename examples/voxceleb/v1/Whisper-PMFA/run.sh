#!/usr/bin/env bash
# VoxCeleb1 recipe with Whisper-PMFA: the blocks 17-24 of Whisper large-v2's
# encoder side by side (partial multi-scale feature aggregation), ASTP pooling and a
# 192-dimensional embedding, trained on VoxCeleb1 dev in two steps in one folder:
#   frozen encoder, 4 epochs (conf/whisper_PMFA_stage0.yaml, stage 3)
#   -> whole model, epochs 5-8 (conf/whisper_PMFA_stage1.yaml, stage 4)
# and evaluated on the cleaned VoxCeleb1-O trials. The stage numbers and flags are
# those of WeSpeaker's examples/voxceleb/v1/Whisper-PMFA/run.sh.
#
#   bash run.sh --stage 1 --stop_stage 7 --whisper_path /data/models/whisper/large-v2.pt
#
# Stages:
#   1  prepare data (local/prepare_data.sh: VoxCeleb1, MUSAN, RIRS_NOISES, trials);
#      MUSAN and RIRS_NOISES are downloaded, VoxCeleb1's archives must be in
#      ${data}/download_data unless --vox_url gives the base URL you were sent
#   2  raw or shard data lists of vox1_dev and vox1_test
#   3  train with the Whisper encoder frozen (4 epochs)
#   4  train every parameter, epochs 5-8, from models/model_4.pt; stage 3's config.yaml
#      and final_model.pt are kept as config_stage0.yaml and final_model_stage0.pt
#   5  average the last ${num_avg} checkpoints up to epoch --last_epoch (default:
#      config_s1's num_epochs; a run without that checkpoint, unfinished, is refused:
#      --last_epoch N averages up to epoch N), extract vox1_dev (one random 5 s chunk per
#      utterance, as WeSpeaker's) and vox1_test (whole utterances) embeddings
#   6  cosine scoring (minus the vox1_dev mean), EER/minDCF
#   7  AS-Norm (or S-Norm) against the vox1_dev speaker cohort
# Each stage skips the work an earlier run finished. After the scoring stages (whichever
# of 6-7 ran) the recipe writes ${exp_dir}/results.md (tools/recipe/results_table.sh): EER and minDCF on ${trials}
# for every score file in ${exp_dir}/scores, with a DET plot.
#
# --whisper_path: OpenAI's Whisper large-v2 checkpoint (large-v2.pt, 2.9 GB); training
# downloads nothing (local/download_whisper.sh fetches and checks it once). Without it
# the config's dataset_args.whisper_encoder_args.model_path (whisper_hub/large-v2.pt,
# where local/download_whisper.sh puts it) is used.
# Stage 4 takes the encoder's weights from stage 3's checkpoint, so it needs no
# Whisper checkpoint; neither do extraction and scoring.

. ./path.sh || exit 1

stage=-1
stop_stage=-1

HOST_NODE_ADDR="localhost:29400"
num_nodes=1
job_id=2024

data=data
data_type="raw"  # shard/raw
vox_url=  # base URL of the VoxCeleb archives; empty: they must be in ${data}/download_data
model=whisper_PMFA_large_v2

config_s0=conf/whisper_PMFA_stage0.yaml
config_s1=conf/whisper_PMFA_stage1.yaml
exp_dir=exp/Whisper_PMFA_large_v2_voxceleb1_mel_5s
gpus="[0,1]"
num_avg=1
checkpoint=  # resume stage 3 from this checkpoint
whisper_path=

trials="vox1_O_cleaned.kaldi"
score_norm_method="asnorm"  # asnorm/snorm
top_n=300
train_args=  # more trainer options for both steps, e.g. "--dataloader_args.batch_size 32"
backend_chunks=true  # vox1_dev from one random num_frms chunk per utterance, as WeSpeaker's; false: whole
chunk_seed=42
last_epoch=  # stage 5 averages up to this epoch; empty: config_s1's num_epochs (the run's last)

. tools/parse_options.sh || exit 1
require_stages 1 7
. tools/recipe_helpers.sh
. tools/recipe/train_stage.sh
. tools/recipe/results_table.sh
set -eo pipefail
num_epochs_flag=  # train_stage's errors: the epochs are the configs' alone

frozen_epochs=$(config_value "${config_s0}" num_epochs --config_s0)
models=${exp_dir}/models

if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ]; then
  echo "Prepare datasets ..."
  local/prepare_data.sh --stage 1 --stop_stage 4 --data "${data}" \
    ${vox_url:+--vox_url "${vox_url}"}
fi

if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 2 ]; then
  echo "Convert train and test data to ${data_type} ..."
  tools/recipe/make_lists.sh --data "${data}" --data_type "${data_type}" \
    --sets "vox1_dev vox1_test"
fi

if [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ]; then
  echo "Start training with the Whisper encoder frozen (${config_s0}) ..."
  if step_set_aside "${exp_dir}" stage0; then
    echo "${exp_dir}: the frozen step is finished (stage 4 went on from it)"
  else
    model_path_flag=()
    if [ -n "${whisper_path}" ]; then
      model_path_flag=(--dataset_args.whisper_encoder_args.model_path "${whisper_path}")
    fi
    config=${config_s0} config_flag=--config_s0
    # shellcheck disable=SC2086  # train_args: words of trainer options
    train_stage "${data}/vox1_dev" --model "${model}" "${model_path_flag[@]}" ${train_args}
  fi
fi

if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 4 ]; then
  echo "Start training with all parameters (${config_s1}) ..."
  # stage 3's results keep their own names, as WeSpeaker's recipe renames them
  set_aside_step "${exp_dir}" "${frozen_epochs}" stage0 "stage 3 (the frozen step)"
  config=${config_s1} config_flag=--config_s1
  checkpoint=${models}/model_${frozen_epochs}.pt
  # shellcheck disable=SC2086  # train_args: words of trainer options
  train_stage "${data}/vox1_dev" --model "${model}" ${train_args}
fi

avg_model=${models}/avg_model.pt

if [ ${stage} -le 5 ] && [ ${stop_stage} -ge 5 ]; then
  echo "Do model average ..."
  last_epoch=${last_epoch:-$(config_value "${config_s1}" num_epochs --config_s1)}
  average_stage "${avg_model}" "${num_avg}" "${last_epoch}" --last_epoch

  echo "Extract embeddings ..."
  tools/recipe/extract_sets.sh \
    --exp_dir "${exp_dir}" --model_path "${avg_model}" \
    --nj 2 --gpus "${gpus}" --data_type "${data_type}" --data "${data}" \
    --train_set vox1_dev --eval_set vox1_test \
    --backend_chunks "${backend_chunks}" --chunk_seed "${chunk_seed}"
fi

if [ ${stage} -le 6 ] && [ ${stop_stage} -ge 6 ]; then
  echo "Score ..."
  tools/recipe/score.sh \
    --stage 1 --stop-stage 2 \
    --data "${data}" \
    --exp_dir "${exp_dir}" \
    --train_set vox1_dev --eval_set vox1_test \
    --trials "${trials}"
fi

if [ ${stage} -le 7 ] && [ ${stop_stage} -ge 7 ]; then
  echo "Score norm ..."
  tools/recipe/score_norm.sh \
    --stage 1 --stop-stage 3 \
    --score_norm_method "${score_norm_method}" \
    --cohort_set vox1_dev \
    --top_n "${top_n}" \
    --data "${data}" \
    --exp_dir "${exp_dir}" \
    --train_set vox1_dev --eval_set vox1_test \
    --trials "${trials}"
fi

# after whichever scoring stages ran: the table of every score file there is
if [ ${stage} -le 7 ] && [ ${stop_stage} -ge 6 ]; then
  write_results_table "${trials}" "${exp_dir}"
fi
