#!/usr/bin/env bash
# VoxCeleb v2 recipe with a WavLM Large front-end (multi-layer features) under
# ECAPA_TDNN_GLOB_c512, trained in three steps, each starting from the
# averaged model of the step before:
#   frozen (conf/ecapa_tdnn_WavLM_frozen.yaml, stages 3-7)
#   -> joint fine-tuning (conf/ecapa_tdnn_WavLM_joint_ft.yaml, stage 8 = stages 3-7 again)
#   -> joint large-margin fine-tuning (conf/ecapa_tdnn_WavLM_joint_lmft.yaml, stage 9)
#
#   bash run_wavlm.sh --stage 3 --stop_stage 9 --ssl_path /data/models/wavlm-large
#
# --ssl_path: the WavLM Large weights, a Hugging Face directory (config.json +
# model.safetensors) or the original WavLM-Large.pt; nothing is downloaded at run
# time. Without it the configs' dataset_args.s3prl_args (path_or_url, else
# <download_dir>/wavlm_large) say where the weights are.
# Stages 1-2 and 4-7 are those of run.sh (data, lists, averaging + extraction,
# cosine, AS-Norm, QMF), stage 3 the training stage all recipes share
# (tools/recipe/train_stage.sh); each stage skips the work an earlier run finished.
# Each step's scoring leaves its results table in that step's exp dir (results.md,
# with a DET plot per trial list), as run.sh's stages 5-7 do.

. ./path.sh || exit 1

stage=-1
stop_stage=-1

HOST_NODE_ADDR="localhost:29400"
num_nodes=1
job_id=2024

data=data
data_type="shard"  # shard/raw

config=conf/ecapa_tdnn_WavLM_frozen.yaml
exp_dir=exp/ECAPA_TDNN_GLOB_c512-ASTP-emb192-WavLM_Large_frozen-num_frms150-aug0.6-spTrue-saFalse-ArcMargin_intertopk_subcenter-SGD-epoch150
gpus="[0,1,2,3,4,5,6,7]"
num_avg=10
checkpoint=
ssl_path=

trials="vox1_O_cleaned.kaldi vox1_E_cleaned.kaldi vox1_H_cleaned.kaldi"
score_norm_method="asnorm"  # asnorm/snorm
top_n=300
train_args=  # more trainer options, e.g. "--dataloader_args.batch_size 64"
num_epochs=  # the frozen step's training epochs and the last epoch its averaging (stage 4) reaches; empty: as in run.sh
backend_chunks=true  # vox2_dev embedded from random num_frms chunks; false: whole utterances
chunk_seed=42

# joint fine-tuning and joint large-margin fine-tuning
joint_ft_config=conf/ecapa_tdnn_WavLM_joint_ft.yaml
joint_ft_exp_dir=exp/ECAPA_TDNN_GLOB_c512-ASTP-emb192-WavLM_Large_joint_ft-num_frms150-aug0.6-spTrue-saFalse-ArcMargin_intertopk_subcenter-SGD-epoch20
joint_lmft_config=conf/ecapa_tdnn_WavLM_joint_lmft.yaml
joint_lmft_exp_dir=exp/ECAPA_TDNN_GLOB_c512-ASTP-emb192-WavLM_Large_joint_lmft-num_frms300-aug0.6-spTrue-saFalse-ArcMargin_intertopk_subcenter-SGD-epoch10

. tools/parse_options.sh || exit 1
require_stages 1 9
. tools/recipe_helpers.sh
. tools/recipe/train_stage.sh
set -eo pipefail

# Stages 1, 2 and 4-7 are the same as in run.sh.
run_common_stages() {
  bash run.sh --stage "$1" --stop_stage "$2" --data "${data}" --data_type "${data_type}" \
    --config "${config}" --exp_dir "${exp_dir}" --gpus "${gpus}" --num_avg "${num_avg}" \
    --trials "${trials}" --score_norm_method "${score_norm_method}" --top_n "${top_n}" \
    --backend_chunks "${backend_chunks}" --chunk_seed "${chunk_seed}" \
    ${num_epochs:+--num_epochs "${num_epochs}"}
}

# The WavLM weights must be on disk before training starts.
check_ssl_weights() {
  local weights
  weights=${ssl_path:-$(python -c 'import sys
from wespeaker_py.frontend.ssl import resolve_weights_path
from wespeaker_py.config import load_config
args = load_config(sys.argv[1]).dataset_args.s3prl_args
print(resolve_weights_path(args.upstream_args, args.download_dir))' "${config}")}
  if [ ! -e "${weights}" ]; then
    echo "$0: WavLM weights not found at ${weights}." >&2
    echo "Place there a Hugging Face WavLM Large directory (config.json + model.safetensors)" \
         "or the original WavLM-Large.pt, or pass --ssl_path PATH." >&2
    exit 1
  fi
}

# next_step STAGE_NAME PREV_EXP CONFIG EXP NUM_AVG: stages 3-7 of the next step,
# initialised with the averaged model of the previous one.
next_step() {
  local prev_exp=$2 step_config=$3 step_exp=$4 step_avg=$5
  if [ ! -f "${prev_exp}/models/avg_model.pt" ]; then
    echo "$0: ${prev_exp}/models/avg_model.pt is missing: finish the previous step first" >&2
    exit 1
  fi
  echo "$1 ..."
  start_from "${prev_exp}/models/avg_model.pt" "${step_exp}"
  bash "$0" --stage 3 --stop_stage 7 \
    --data "${data}" \
    --data_type "${data_type}" \
    --config "${step_config}" \
    --exp_dir "${step_exp}" \
    --gpus "${gpus}" \
    --num_avg "${step_avg}" \
    --checkpoint "${step_exp}/models/model_0.pt" \
    --ssl_path "${ssl_path}" \
    --trials "${trials}" \
    --score_norm_method "${score_norm_method}" \
    --top_n "${top_n}" \
    --train_args "${train_args}" \
    --backend_chunks "${backend_chunks}" \
    --chunk_seed "${chunk_seed}" \
    --HOST_NODE_ADDR "${HOST_NODE_ADDR}" \
    --num_nodes "${num_nodes}" \
    --job_id "${job_id}"
}

if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 1 ]; then
  run_common_stages $((stage < 1 ? 1 : stage)) $((stop_stage > 2 ? 2 : stop_stage))
fi

if [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ]; then
  echo "Start training ${config} ..."
  check_ssl_weights
  train_stage "${data}/vox2_dev" \
    ${ssl_path:+--dataset_args.s3prl_args.upstream_args.path_or_url "${ssl_path}"} ${train_args}
fi

if [ ${stage} -le 7 ] && [ ${stop_stage} -ge 4 ]; then
  run_common_stages $((stage < 4 ? 4 : stage)) $((stop_stage > 7 ? 7 : stop_stage))
fi

if [ ${stage} -le 8 ] && [ ${stop_stage} -ge 8 ]; then
  next_step "Joint fine-tuning" "${exp_dir}" "${joint_ft_config}" "${joint_ft_exp_dir}" 3
fi

if [ ${stage} -le 9 ] && [ ${stop_stage} -ge 9 ]; then
  next_step "Joint LM fine-tuning" "${joint_ft_exp_dir}" "${joint_lmft_config}" "${joint_lmft_exp_dir}" 1
fi
