#!/usr/bin/env bash
# VoxCeleb v2 recipe with a W2V-BERT 2.0 front-end under W2VBert_Adapter_MFA
# (adapters over every hidden state, ASP pooling), trained in three steps:
#   LoRA on a frozen encoder (conf/w2vbert_s1_lora.yaml, stages 3-4)
#   -> merge the LoRA weights into the encoder (stage 5)
#   -> joint fine-tuning of the whole model (conf/w2vbert_s2_ft.yaml, stages 6-7)
#   -> large-margin fine-tuning (conf/w2vbert_s3_lmft.yaml, stages 8-9)
# The stage numbers and flags are those of WeSpeaker's run_w2v.sh.
#
#   bash run_w2v.sh --stage 3 --stop_stage 9 --w2vbert_path /data/models/w2v-bert-2.0
#
# --w2vbert_path: a local Hugging Face directory holding facebook/w2v-bert-2.0
# (config.json + model.safetensors); nothing is downloaded at run time. Without it
# the configs' dataset_args.w2vbert_args.model_name is used (a directory, or a hub
# name already in the local Hugging Face cache). Needs the ssl extra
# (transformers, peft).
# Stages 1-2 are run.sh's (data and lists); each evaluation stage is run.sh's
# stages 4-7 (averaging + extraction, cosine, AS-Norm, QMF) for that step, which leave
# its results table in its exp dir (results.md, with a DET plot per trial list); training
# is the stage all recipes share (tools/recipe/train_stage.sh). Each stage skips the
# work an earlier run finished. An evaluation averages the step's last ${num_avg}
# checkpoints up to the last epoch of its config, and stops when that checkpoint is
# missing (an unfinished step); docs/w2vbert.md says how to average such a step anyway.

. ./path.sh || exit 1

stage=-1
stop_stage=-1

HOST_NODE_ADDR="localhost:29402"
num_nodes=1
job_id=2025

data=data
data_type="shard"  # shard/raw

config_s1=conf/w2vbert_s1_lora.yaml
exp_dir_s1=exp/W2VBert_AdapterMFA_LoRA_frozen
config_s2=conf/w2vbert_s2_ft.yaml
exp_dir_s2=exp/W2VBert_AdapterMFA_joint_ft
config_s3=conf/w2vbert_s3_lmft.yaml
exp_dir_s3=exp/W2VBert_AdapterMFA_joint_lmft

gpus="[0,1,2,3,4,5,6,7]"
num_avg=1  # checkpoints averaged in every step, as WeSpeaker's configs say
checkpoint=  # resume step 1 from this checkpoint
w2vbert_path=

trials="vox1_O_cleaned.kaldi vox1_E_cleaned.kaldi vox1_H_cleaned.kaldi"
score_norm_method="asnorm"  # asnorm/snorm
top_n=300
train_args=  # more trainer options for every step, e.g. "--dataloader_args.batch_size 32"
backend_chunks=true  # vox2_dev embedded from random num_frms chunks; false: whole utterances
chunk_seed=42

. tools/parse_options.sh || exit 1
require_stages 1 9
. tools/recipe_helpers.sh
. tools/recipe/train_stage.sh
set -eo pipefail
num_epochs_flag=  # train_stage's errors: each step's epochs are its config's alone

model_flag=()
if [ -n "${w2vbert_path}" ]; then
  model_flag=(--dataset_args.w2vbert_args.model_name "${w2vbert_path}")
fi

# evaluate CONFIG EXP_DIR: run.sh's stages 4-7 for one step.
evaluate() {
  bash run.sh --stage 4 --stop_stage 7 --data "${data}" --data_type "${data_type}" \
    --config "$1" --exp_dir "$2" --gpus "${gpus}" --num_avg "${num_avg}" \
    --trials "${trials}" --score_norm_method "${score_norm_method}" --top_n "${top_n}" \
    --backend_chunks "${backend_chunks}" --chunk_seed "${chunk_seed}"
}

# train_step CONFIG CONFIG_FLAG EXP_DIR [START_MODEL]: train one step (CONFIG_FLAG: the
# option that gave CONFIG), from START_MODEL (copied to EXP_DIR/models/model_0.pt) when
# given, else from the pretrained encoder or ${checkpoint}.
train_step() {
  local config=$1 config_flag=$2 exp_dir=$3 checkpoint=${checkpoint}
  if [ -n "${4:-}" ]; then
    start_from "$4" "${exp_dir}"
    checkpoint=${exp_dir}/models/model_0.pt
  fi
  # shellcheck disable=SC2086  # train_args: words of trainer options
  train_stage "${data}/vox2_dev" "${model_flag[@]}" ${train_args}
}

if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 1 ]; then
  bash run.sh --stage $((stage < 1 ? 1 : stage)) --stop_stage $((stop_stage > 2 ? 2 : stop_stage)) \
    --data "${data}" --data_type "${data_type}"
fi

if [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ]; then
  echo "Step 1: LoRA training on the frozen encoder (${config_s1}) ..."
  train_step "${config_s1}" --config_s1 "${exp_dir_s1}"
fi

if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 4 ]; then
  echo "Evaluate step 1 ..."
  evaluate "${config_s1}" "${exp_dir_s1}"
fi

merged_s1=${exp_dir_s1}/models/merged_avg_model.pt
if [ ${stage} -le 5 ] && [ ${stop_stage} -ge 5 ]; then
  echo "Merge the LoRA weights of step 1 ..."
  if up_to_date "${merged_s1}" "${exp_dir_s1}/models/avg_model.pt"; then
    echo "${merged_s1} is up to date"
  else
    python -m wespeaker_py.bin.merge_lora \
      --config "${exp_dir_s1}/config.yaml" \
      --checkpoint_in "${exp_dir_s1}/models/avg_model.pt" \
      --checkpoint_out "${merged_s1}"
  fi
fi

if [ ${stage} -le 6 ] && [ ${stop_stage} -ge 6 ]; then
  echo "Step 2: joint fine-tuning (${config_s2}) ..."
  train_step "${config_s2}" --config_s2 "${exp_dir_s2}" "${merged_s1}"
fi

if [ ${stage} -le 7 ] && [ ${stop_stage} -ge 7 ]; then
  echo "Evaluate step 2 ..."
  evaluate "${config_s2}" "${exp_dir_s2}"
fi

if [ ${stage} -le 8 ] && [ ${stop_stage} -ge 8 ]; then
  echo "Step 3: large-margin fine-tuning (${config_s3}) ..."
  train_step "${config_s3}" --config_s3 "${exp_dir_s3}" "${exp_dir_s2}/models/avg_model.pt"
fi

if [ ${stage} -le 9 ] && [ ${stop_stage} -ge 9 ]; then
  echo "Evaluate step 3 ..."
  evaluate "${config_s3}" "${exp_dir_s3}"
fi
