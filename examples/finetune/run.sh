#!/usr/bin/env bash
# Fine-tune a trained speaker model on your own speakers (wespeaker-py finetune),
# score it before and after, and check its calibration.
#
#   # demo: the mini recipe's 16 kHz model adapted to 8 kHz (trained first when missing)
#   bash run.sh
#   # your data: a Kaldi folder (wav.scp, utt2spk, optional segments) at any rate,
#   # and optionally a test folder with trials (speakers the fine-tuning never sees)
#   bash run.sh --model MODEL --data_dir /path/to/calls --test_dir /path/to/test --name calls
#
# The demo: the mini corpus's training speakers resampled to 8 kHz are the
# fine-tuning data, its test speakers at 8 kHz (and 16 kHz, for reference) the test.
# A second check fine-tunes on the real 8 kHz corpus ../shared/data/fsdd (6
# speakers; the dev speakers are its test) when that folder exists.
#
# Stages:
#   1  prepare: 8 kHz copies of the demo corpus (data/<name>/{finetune,test,test_ref})
#   2  fine-tune: wespeaker-py finetune -> exp/<name>/model (resumes a killed run)
#   3  extract: test embeddings of the source and the fine-tuned model
#   4  score before and after (cosine) -> exp/<name>/eval/*/scores
#   5  calibrate: the dev-fitted calibration.json measured on the test scores;
#      the before/after table -> exp/<name>/results.md
#   6  fsdd: fine-tune on ../shared/data/fsdd, print its dev figures (skipped
#      when the folder is absent)

. ./path.sh || exit 1

stage=1
stop_stage=6

model=../mini/exp/ecapa_tdnn-librispeech_tc100  # the source model (any wespeaker-py model with weights)
corpus_dir=../mini/data/librispeech_tc100      # demo corpus (train_spk, test_spk, trials)
data_dir=        # your fine-tuning data; empty: the demo's 8 kHz training speakers
test_dir=        # your test folder with trials; empty: the demo's 8 kHz test speakers
ref_dir=         # optional: the same test at the source model's rate (a reference row)
rate=8000        # the demo's rate
name=mini_8k
tag=             # exp/<name>_<tag> instead of exp/<name> (e.g. a sweep's settings)
fsdd_dir=${wespeaker_root}/../shared/data/fsdd
# fine-tuning options; empty: wespeaker-py finetune's measured defaults
epochs=
lr=
margin=
freeze=
freeze_epochs=
dev_speakers=
device=          # cpu, cuda, cuda:N; empty: the first GPU if any
num_threads=     # CPU threads; empty: $OMP_NUM_THREADS, else half the cores (at most 4)
batch_size=16

. tools/parse_options.sh || exit 1
require_stages 1 6
. tools/recipe_helpers.sh
set -eo pipefail

data=data/${name}
exp=exp/${name}${tag:+_${tag}}
finetune_flags=()
for option in epochs lr margin freeze freeze_epochs dev_speakers device num_threads; do
  [ -n "${!option}" ] && finetune_flags+=("--${option}" "${!option}")
done
if [ -z "${data_dir}" ]; then
  data_dir=${data}/finetune
  test_dir=${data}/test
  ref_dir=${data}/test_ref
fi

# first_rate WAV_SCP [BASE]: the sample rate of the first entry of WAV_SCP (a pipe, an
# absolute path, or a path relative to BASE; default: here, as `wespeaker-py embed` reads it)
first_rate() {
  python - "$1" "${2:-.}" <<'PY'
import os, sys
from wespeaker_py.audio import is_pipe, open_audio
scp, base = sys.argv[1:3]
with open(scp, encoding="utf-8") as lines:
    wav = lines.readline().split(maxsplit=1)[1].strip()
if not is_pipe(wav) and not os.path.isabs(wav):
    wav = os.path.join(base, wav)
with open_audio(wav) as audio:
    print(audio.samplerate)
PY
}

if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ] && [ "${data_dir}" == "${data}/finetune" ]; then
  echo "Stage 1: ${rate} Hz copies of ${corpus_dir} in ${data}"
  python local/resample_data.py --rate "${rate}" --speakers "${corpus_dir}/train_spk" \
    "${corpus_dir}" "${data}/finetune"
  python local/resample_data.py --rate "${rate}" --speakers "${corpus_dir}/test_spk" \
    --trials "${corpus_dir}/trials" "${corpus_dir}" "${data}/test"
  source_rate=$(first_rate "${corpus_dir}/wav.scp" "${corpus_dir}")
  python local/resample_data.py --rate "${source_rate}" --speakers "${corpus_dir}/test_spk" \
    --trials "${corpus_dir}/trials" "${corpus_dir}" "${data}/test_ref"
fi

if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 2 ]; then
  if [ ! -d "${model}" ] && [ ! -f "${model}" ] && [ "${model}" == "../mini/exp/ecapa_tdnn-librispeech_tc100" ]; then
    echo "Stage 2: no ${model}: training the mini recipe's model first"
    (cd ../mini && bash run.sh --stage 1 --stop_stage 4)
  fi
  echo "Stage 2: fine-tune ${model} on ${data_dir} -> ${exp}/model"
  python -m wespeaker_py.cli.main finetune --model "${model}" --data "${data_dir}" \
    --out "${exp}/model" "${finetune_flags[@]}"
fi

# rows: "name model test_dir" of the table
rows="source_test source ${test_dir}
finetuned_test finetuned ${test_dir}"
[ -n "${ref_dir}" ] && rows="source_ref source ${ref_dir}
${rows}"
model_of() { if [ "$1" == "source" ]; then echo "${model}"; else echo "${exp}/model"; fi; }
# the source model's rows are shared by every tag of a name (extracted once per source
# model and test folder: source_settings)
eval_dir() {
  if [ "$1" == "source" ]; then echo "exp/${name}_source_$(basename "$(realpath "${model}")")/$2"
  else echo "${exp}/eval/$2"; fi
}

# source_settings TEST_DIR: what the source model's embeddings of TEST_DIR are made of
source_settings() {
  echo "model=$(realpath "${model}") wav_scp=$(realpath "$1/wav.scp")"
}

if [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ]; then
  echo "Stage 3: extract test embeddings"
  while read -r row which set; do
    dir=$(eval_dir "${which}" "${row}")
    scp=${dir}/embeddings/xvector.scp
    if [ "${which}" == "source" ] && made_with "${scp}" "$(source_settings "${set}")" \
        "${set}/wav.scp" "${model}" "${model}/avg_model.pt"; then
      echo "${dir}/embeddings: up to date"; continue
    fi
    mkdir -p "${dir}/embeddings"
    python -m wespeaker_py.cli.main embed --model "$(model_of "${which}")" \
      ${device:+--device "${device}"} --batch_size "${batch_size}" \
      --wav_scp "${set}/wav.scp" --output "${dir}/embeddings/xvector.ark"
    if [ "${which}" == "source" ]; then record_settings "${scp}" "$(source_settings "${set}")"; fi
  done <<< "${rows}"
fi

if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 4 ]; then
  echo "Stage 4: cosine scoring before and after"
  while read -r row which set; do
    dir=$(eval_dir "${which}" "${row}")
    python -m wespeaker_py.bin.score --exp_dir "${dir}" \
      --eval_scp_path "${dir}/embeddings/xvector.scp" "${set}/trials"
  done <<< "${rows}"
fi

if [ ${stage} -le 5 ] && [ ${stop_stage} -ge 5 ]; then
  echo "Stage 5: the dev-fitted calibration on the test scores; before/after table"
  source_rate=$(python -m wespeaker_py.cli.main info --model "${model}" --json |
    python -c 'import json, sys; print(json.load(sys.stdin)["sample_rate"])')
  tuned_rate=$(python -m wespeaker_py.cli.main info --model "${exp}/model" --json |
    python -c 'import json, sys; print(json.load(sys.stdin)["sample_rate"])')
  specs=()
  while read -r row which set; do
    test_rate=$(first_rate "${set}/wav.scp")
    if [ "${which}" == "source" ]; then label="source (${source_rate} Hz)"; calibration=""
    else label="fine-tuned (${tuned_rate} Hz)"; calibration="@${exp}/model/calibration.json"; fi
    specs+=("${label}, ${test_rate} Hz test=$(eval_dir "${which}" "${row}")/scores/trials.score${calibration}")
  done <<< "${rows}"
  python local/table.py --output "${exp}/results.md" "${specs[@]}"
  python - "${exp}/model/finetune.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
dev, data = report["dev"], report["data"]
print(f"dev ({data['dev_speakers']} held-out speakers, {dev['after']['trials']} trials): "
      f"EER {100 * dev['before']['eer']:.2f}% -> {100 * dev['after']['eer']:.2f}%; "
      f"training {report['train_seconds']:.0f} s")
PY
fi

if [ ${stage} -le 6 ] && [ ${stop_stage} -ge 6 ]; then
  if [ ! -s "${fsdd_dir}/wav.scp" ]; then
    echo "Stage 6: ${fsdd_dir} is absent: fsdd check skipped"
  else
    echo "Stage 6: fine-tune on the real 8 kHz corpus ${fsdd_dir}"
    python -m wespeaker_py.cli.main finetune --model "${model}" --data "${fsdd_dir}" \
      --out "exp/fsdd${tag:+_${tag}}/model" "${finetune_flags[@]}"
    python - "exp/fsdd${tag:+_${tag}}/model/finetune.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
dev, data = report["dev"], report["data"]
print(f"fsdd dev ({data['dev_speakers']} held-out speakers, {dev['after']['trials']} trials): "
      f"EER {100 * dev['before']['eer']:.2f}% -> {100 * dev['after']['eer']:.2f}%, "
      f"minDCF {dev['before']['min_dcf']:.3f} -> {dev['after']['min_dcf']:.3f}; "
      f"training {report['train_seconds']:.0f} s")
PY
  fi
fi
