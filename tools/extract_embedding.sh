#!/usr/bin/env bash
# Extract the embeddings of one data list into ${exp_dir}/embeddings/${store_dir}/xvector.{ark,scp},
# split over ${nj} jobs (on the GPUs of ${gpus} round-robin, or on the CPU when
# there is none), and report how many utterances were skipped. Run from a recipe directory:
#
#   tools/extract_embedding.sh --exp_dir exp/X --model_path exp/X/models/avg_model.pt \
#     --data_type shard --data_list data/vox1/shard.list --wavs_num 153516 \
#     --store_dir vox1 --batch_size 16 --num_workers 4 --nj 4 --gpus "[0,1]"
#
# --random_chunk true embeds one random chunk of --num_frms frames (empty: the
# config's num_frms) of each utterance, drawn from --seed, instead of the whole.
# A second run with the same model, list and mode (and no newer model, list or config)
# finds the result up to date and skips; another model or list, even an older one or a
# copy that kept its time, is extracted again (extract.result.settings notes the real
# paths, the model's md5 and the mode).

exp_dir=
model_path=
data_type=shard  # shard/raw
data_list=
wavs_num=        # utterances expected (e.g. lines of wav.scp); empty: not checked. Of a
                 # shard list, those no shard delivered count against bin.extract's
                 # --max_fail_fraction
store_dir=
batch_size=16
num_workers=4
nj=4
gpus="[0,1]"     # "[]" or "": CPU
random_chunk=false
num_frms=        # chunk frames with --random_chunk true; empty: the config's num_frms
seed=42          # of the chunk positions
reverb_data=     # WeSpeaker's flags, passed on to bin.extract, which accepts them but
noise_data=      # augments nothing at extraction: --aug_prob must be 0
aug_prob=0.0

. tools/parse_options.sh || exit 1
. path.sh
. tools/recipe_helpers.sh
set -eo pipefail

for name in exp_dir model_path data_list store_dir; do
  if [ -z "${!name}" ]; then
    echo "$0: --${name} is required" >&2
    exit 1
  fi
done

if [ ! -f "${model_path}" ]; then
  echo "$0: --model_path ${model_path}: no such file" >&2
  exit 1
fi

if [ "${random_chunk}" == "true" ]; then
  mode="random chunks of ${num_frms:-num_frms} frames, seed ${seed}"
  chunk_args="--random_chunk True ${num_frms:+--num_frms ${num_frms}} --seed ${seed}"
elif [ "${random_chunk}" == "false" ]; then
  mode="whole utterances"
  chunk_args=
else
  echo "$0: --random_chunk must be true or false, got '${random_chunk}'" >&2
  exit 1
fi

if ! python -c 'import sys; sys.exit(0 if float(sys.argv[1]) == 0 else 1)' "${aug_prob}" 2>/dev/null; then
  echo "$0: --aug_prob ${aug_prob}: augmenting utterances at extraction is not supported" \
       "(bin.extract accepts only 0; --reverb_data and --noise_data are accepted and unused)" >&2
  exit 1
fi

embed_dir=${exp_dir}/embeddings/${store_dir}
log_dir=${embed_dir}/log
result=${embed_dir}/extract.result
mkdir -p "${log_dir}"

# bin.extract also reads the band fills beside config.yaml (8 kHz utterances go
# through them): one added, replaced or removed makes the embeddings stale too
band_fills=()
for fill in "${exp_dir}"/band_fill_*hz.npz; do
  [ -f "${fill}" ] && band_fills+=("${fill}")
done
# The model's and band fills' contents are noted, not only their times: a model copied
# in with its old time kept (cp -p, rsync -t) is older than the result yet another model
settings="model=$(realpath -m "${model_path}")
model_md5=$(md5sum < "${model_path}" | cut -d' ' -f1)
list=$(realpath -m "${data_list}")
mode=${mode}"
if [ ${#band_fills[@]} -gt 0 ]; then
  settings+="
band_fills=$(cd "${exp_dir}" && md5sum $(basename -a "${band_fills[@]}") | tr -s ' \n' ' ')"
fi
if [ -f "${result}" ] && grep -q '^Successfully' "${result}" &&
   grep -qF "(${mode})" "${result}" &&
   made_with "${result}" "${settings}" "${model_path}" "${data_list}" "${exp_dir}/config.yaml" \
     "${band_fills[@]}"; then
  retry=
  if grep -q 'utterances were skipped' "${result}"; then
    # a skipped utterance is not tried again while the result is up to date
    retry="; after fixing the audio, remove ${result} and run the stage again to retry them"
  fi
  echo "embeddings of ${store_dir} are up to date ($(cat "${result}")), skipping${retry}"
  exit 0
fi
# The embeddings of other settings go first: should this run fail, a scoring stage run on
# its own must find none, not score the earlier model's (its resumable work is elsewhere)
rm -f "${result}" "${embed_dir}/xvector.ark" "${embed_dir}/xvector.scp"

# No GPU visible: run the jobs on the CPU.
if [ -z "${gpus}" ] || [ "${gpus}" == "[]" ] ||
   ! python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  gpus="[]"
fi

# a raw list names its utterances; of a shard list, bin.extract counts those no shard delivered
expected_args=()
if [ -n "${wavs_num}" ] && [ "${data_type}" == "shard" ]; then
  expected_args=(--expected_utterances "${wavs_num}")
fi

echo "extracting embeddings of ${store_dir}, ${mode} (${nj} jobs, log in ${log_dir}/extract.log) ..."
python -u -m wespeaker_py.bin.extract \
  --config "${exp_dir}/config.yaml" \
  --model_path "${model_path}" \
  --data_type "${data_type}" \
  --data_list "${data_list}" \
  --embed_ark "${embed_dir}/xvector.ark" \
  --batch_size "${batch_size}" \
  --num_workers "${num_workers}" \
  --nj "${nj}" \
  --gpus "${gpus}" \
  ${chunk_args} \
  ${reverb_data:+--reverb_data "${reverb_data}"} \
  ${noise_data:+--noise_data "${noise_data}"} \
  --aug_prob "${aug_prob}" \
  "${expected_args[@]}" \
  > "${log_dir}/extract.log" 2>&1 ||
  { tail -n 20 "${log_dir}/extract.log" >&2; echo "$0: extraction of ${store_dir} failed" >&2; exit 1; }

# Skipped utterances (unreadable, silent, too short) are listed in the log; the
# scoring scripts decide how many trials may be lost (--max_missing_fraction).
embed_num=$(count_lines "${embed_dir}/xvector.scp")
if [ -z "${wavs_num}" ] || [ "${embed_num}" -eq "${wavs_num}" ]; then
  echo "Successfully extracted ${embed_num} embeddings for ${store_dir} (${mode})" | tee "${result}"
else
  echo "Successfully extracted ${embed_num} embeddings for ${store_dir} (${mode});" \
       "$((wavs_num - embed_num)) of ${wavs_num} utterances were skipped, see" \
       "${log_dir}/extract.log" | tee "${result}" >&2
fi
record_settings "${result}" "${settings}"
