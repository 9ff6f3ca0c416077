#!/usr/bin/env bash
# Extract the embeddings of the training set (cohort, mean vector, PLDA and
# calibration data) and of the evaluation set into ${exp_dir}/embeddings/<set>/.
#
#   local/extract_vox.sh --exp_dir exp/X --model_path exp/X/models/avg_model.pt \
#     --nj 4 --gpus "[0,1]" --data_type shard --data data

exp_dir=
model_path=
nj=4
gpus="[0,1]"
data_type=shard  # shard/raw
data=data
train_set=vox2_dev
eval_set=vox1
batch_size=16    # utterances of equal length per forward pass
num_workers=4

. tools/parse_options.sh || exit 1
. path.sh

extract_set() {
  tools/extract_embedding.sh --exp_dir "${exp_dir}" \
    --model_path "${model_path}" \
    --data_type "${data_type}" \
    --data_list "${data}/$1/${data_type}.list" \
    --wavs_num "$(wc -l < "${data}/$1/wav.scp")" \
    --store_dir "$1" \
    --batch_size "${batch_size}" \
    --num_workers "${num_workers}" \
    --nj "${nj}" \
    --gpus "${gpus}"
}

failed=0
if [ -z "${gpus}" ] || [ "${gpus}" == "[]" ] ||
   ! python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  # On the CPU the two sets would only compete for the same cores.
  for set in ${train_set} ${eval_set}; do
    extract_set "${set}" || failed=1
  done
else
  pids=()
  for set in ${train_set} ${eval_set}; do
    extract_set "${set}" &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do
    wait "${pid}" || failed=1
  done
fi
if [ ${failed} -ne 0 ]; then
  echo "$0: embedding extraction failed" >&2
  exit 1
fi
echo "Embedding dir is (${exp_dir}/embeddings)."
