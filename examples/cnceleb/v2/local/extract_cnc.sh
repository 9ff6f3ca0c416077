#!/usr/bin/env bash
# Stage 4's extraction for CN-Celeb: the embeddings of cnceleb_train (mean vector,
# AS-Norm cohort, calibration trials) and of eval (enroll and test audio, and the
# utterances each enrollment speaker is listed with in eval/enroll.map), then one
# mean embedding per enrollment speaker (id00800-enroll, ...), added to
# eval/xvector.scp: the enroll side of the CNC-Eval-Avg trials, as in WeSpeaker.
#
#   local/extract_cnc.sh --exp_dir exp/X --model_path exp/X/models/avg_model.pt \
#     --nj 4 --gpus "[0,1]" --data_type shard --data data

exp_dir=
model_path=
nj=4
gpus="[0,1]"
data_type=shard  # shard/raw
data=data
backend_chunks=true  # cnceleb_train from one random num_frms chunk per utterance; false: whole
chunk_seed=42

. tools/parse_options.sh || exit 1
. path.sh
. tools/recipe_helpers.sh
set -eo pipefail

tools/recipe/extract_sets.sh --exp_dir "${exp_dir}" --model_path "${model_path}" \
  --nj "${nj}" --gpus "${gpus}" --data_type "${data_type}" --data "${data}" \
  --train_set cnceleb_train --eval_set eval \
  --backend_chunks "${backend_chunks}" --chunk_seed "${chunk_seed}"

eval_dir=${exp_dir}/embeddings/eval
means=${eval_dir}/enroll_spk_xvector
added=${means}.added  # marks xvector.scp holding the means of ${means}.scp
if up_to_date "${added}" "${eval_dir}/extract.result" "${data}/eval/enroll.map" "${means}.scp"; then
  echo "enrollment means are up to date"
  exit 0
fi
echo "mean embedding of each enrollment speaker (${data}/eval/enroll.map)"
rm -f "${added}"
# eval/xvector.scp: the utterances of eval/wav.scp, less means an earlier run added
write_list "${eval_dir}/xvector.scp" \
  awk 'NR == FNR { utt[$1] = 1; next } $1 in utt' "${data}/eval/wav.scp" "${eval_dir}/xvector.scp"
python tools/vector_mean.py \
  --spk2utt "${data}/eval/enroll.map" \
  --xvector_scp "${eval_dir}/xvector.scp" \
  --spk_xvector_ark "${means}.ark"
write_list "${eval_dir}/xvector.scp" cat "${eval_dir}/xvector.scp" "${means}.scp"
echo "$(count_lines "${means}.scp") enrollment means" > "${added}"
echo "$(count_lines "${means}.scp") enrollment speakers added to ${eval_dir}/xvector.scp"
