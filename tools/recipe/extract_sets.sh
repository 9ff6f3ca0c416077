#!/usr/bin/env bash
# Stage 4's extraction, shared by the recipes: the embeddings of the back-end set
# (--train_set: mean vector, AS-Norm cohort, QMF calibration trials, PLDA
# training) and of the evaluation set (--eval_set: the trials) into
# ${exp_dir}/embeddings/<set>/.
#
#   tools/recipe/extract_sets.sh --exp_dir exp/X --model_path exp/X/models/avg_model.pt \
#     --nj 4 --gpus "[0,1]" --data_type shard --data data --train_set vox2_dev --eval_set vox1
#
# As in WeSpeaker's VoxCeleb recipe, the back-end set is embedded from one random
# chunk of the config's num_frms frames per utterance (repeated when the
# utterance is shorter; positions drawn from --chunk_seed) and the evaluation set
# from whole utterances. --backend_chunks false embeds the back-end set whole.
# QMF's duration feature is always the full utterance's (utt2dur), as WeSpeaker's.

exp_dir=
model_path=
nj=4
gpus="[0,1]"
data_type=shard  # shard/raw
data=data
train_set=vox2_dev
eval_set=vox1
backend_chunks=true  # true: one random num_frms chunk per back-end utterance; false: whole
chunk_seed=42
batch_size=16    # utterances of equal length per forward pass
num_workers=4

. tools/parse_options.sh || exit 1
. path.sh

case "${backend_chunks}" in
  true|false) ;;
  *) echo "$0: --backend_chunks must be true or false, got '${backend_chunks}'" >&2; exit 1 ;;
esac

# utterance_count SET: the utterances of SET's list: its wav.scp's, or with a segments
# file (a wav.scp of recordings; stage 2 lists one utterance an utt2spk line) its utt2spk's
utterance_count() {
  if [ -f "${data}/$1/segments" ]; then
    wc -l < "${data}/$1/utt2spk"
  else
    wc -l < "${data}/$1/wav.scp"
  fi
}

# extract_set SET RANDOM_CHUNK
extract_set() {
  tools/extract_embedding.sh --exp_dir "${exp_dir}" \
    --model_path "${model_path}" \
    --data_type "${data_type}" \
    --data_list "${data}/$1/${data_type}.list" \
    --wavs_num "$(utterance_count "$1")" \
    --store_dir "$1" \
    --batch_size "${batch_size}" \
    --num_workers "${num_workers}" \
    --random_chunk "$2" \
    --seed "${chunk_seed}" \
    --nj "${nj}" \
    --gpus "${gpus}"
}

# Without CUDA both sets run on the CPU; "[]" tells extract_embedding.sh so, which spares
# it a torch start of its own per set
if [ -n "${gpus}" ] && [ "${gpus}" != "[]" ] &&
   ! python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  gpus="[]"
fi
failed=0
if [ -z "${gpus}" ] || [ "${gpus}" == "[]" ]; then
  # On the CPU the two sets would only compete for the same cores.
  extract_set "${train_set}" "${backend_chunks}" || failed=1
  extract_set "${eval_set}" false || failed=1
else
  extract_set "${train_set}" "${backend_chunks}" &
  train_pid=$!
  extract_set "${eval_set}" false &
  eval_pid=$!
  wait "${train_pid}" || failed=1
  wait "${eval_pid}" || failed=1
fi
if [ ${failed} -ne 0 ]; then
  echo "$0: embedding extraction failed" >&2
  exit 1
fi
echo "Embedding dir is (${exp_dir}/embeddings)."
