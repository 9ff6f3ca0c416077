#!/usr/bin/env bash
# Speaker diarization ("who spoke when") with a trained speaker model: speech from
# Silero VAD, 1.5 s windows every 0.75 s embedded by the model, spectral
# clustering (number of speakers from the eigen-gap), RTTM out, DER/JER scored.
#
#   # demo: synthetic conversations from the mini corpus's test speakers, scored
#   # with the mini recipe's model (train it first: cd ../mini && bash run.sh)
#   bash run.sh --model ../mini/exp/ecapa_tdnn-librispeech_tc100
#
#   # your data: a directory with wav.scp and ref.rttm (Kaldi ids = RTTM file ids),
#   # optionally all.uem (scoring regions)
#   bash run.sh --model MODEL --data_dir /path/to/set
#   # VoxConverse: audio/*.wav of a split and the RTTMs of the voxconverse repository
#   bash run.sh --model MODEL --audio_dir voxconverse_test_wav/audio \
#       --rttm_dir voxconverse/test --name voxconverse_test
#   # AMI (Mix-Headset): the meetings' audio and AMI-diarization-setup's RTTMs and UEMs
#   bash run.sh --model MODEL --audio_dir amicorpus \
#       --rttm_dir AMI-diarization-setup/only_words/rttms/test \
#       --uem_dir AMI-diarization-setup/uems/test --name ami_test
#
# MODEL is anything wespeaker-py takes: an experiment directory, a WeSpeaker
# model folder (config.yaml + avg_model.pt), a checkpoint or an exported .onnx.
#
# Stages:
#   1  prepare data/<name>/{wav.scp,ref.rttm} (synthetic conversations when no
#      data is given)
#   2  diarize -> exp/<name>/sys.rttm
#   3  score: DER (missed, false alarm, confusion) and JER, no collar and a
#      0.25 s collar, overlap scored and excluded -> exp/<name>/der.md; each
#      recording's time line (reference and system speakers, and where the
#      errors are) -> exp/<name>/plots/<recording>.png
#   4  compare clustering methods (--compare_methods) on the same set, plus a
#      reference row given each recording's true number of speakers: DER, JER
#      and how often the number of speakers was right -> exp/<name>/methods.md

. ./path.sh || exit 1

stage=1
stop_stage=3     # 4: also compare clustering methods

model=           # required for stages 2-3
data_dir=        # a directory with wav.scp and ref.rttm
audio_dir=       # or: audio files named <recording id>[.suffix].wav, found below here ...
rttm_dir=        # ... for each <recording id>.rttm in this directory
uem_dir=         # optional: <recording id>.uem scoring regions (else first to last turn)
name=            # default: synthetic, or data_dir's name
data=            # where the prepared set goes; default data/<name>
exp=             # where outputs go; default exp/<name>
corpus_dir=../mini/data/librispeech_tc100  # speakers of the synthetic conversations
speakers=test_spk                          # (a list inside corpus_dir)
num_conversations=10
min_conv_speakers=2
max_conv_speakers=4
conversation_seconds=120
seed=0
read_once=false  # true: no stretch of an utterance heard twice in a conversation
vad=silero       # silero/energy
cluster_method=spectral-norm  # spectral-norm (the default)/spectral (WeSpeaker's)/nme-sc/umap-hdbscan/agglomerative
num_speakers=    # the same known number for every recording; empty: estimated
min_speakers=1
max_speakers=10
device=          # cpu, cuda, cuda:N; empty: the first GPU if any
collars="0 0.25"
compare_methods="spectral spectral-norm nme-sc agglomerative"  # stage 4 (umap-hdbscan: diar-umap extra)

. tools/parse_options.sh || exit 1
require_stages 1 4
set -eo pipefail

if [ -z "${name}" ]; then
  if [ -n "${data_dir}" ]; then name=$(basename "$(realpath "${data_dir}")"); else name=synthetic; fi
fi
data=${data:-data/${name}}
exp=${exp:-exp/${name}}

if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ]; then
  echo "Stage 1: prepare ${data}"
  if [ -n "${data_dir}" ] || [ -n "${audio_dir}" ]; then
    local/prepare_data.sh --data_dir "${data_dir}" --audio_dir "${audio_dir}" \
      --rttm_dir "${rttm_dir}" --uem_dir "${uem_dir}" --data "${data}"
  else
    # the settings a synthetic set was built with, kept beside it: a set built with
    # others is rebuilt, not reused (a set without the file is the user's, and kept)
    settings="corpus_dir=${corpus_dir} speakers=${speakers} count=${num_conversations}"
    settings="${settings} speakers_per_conversation=${min_conv_speakers}-${max_conv_speakers}"
    settings="${settings} seconds=${conversation_seconds} seed=${seed} read_once=${read_once}"
    built_with=$(cat "${data}/synthetic_settings" 2>/dev/null || true)
    built=false
    [ -s "${data}/wav.scp" ] && [ -s "${data}/ref.rttm" ] && built=true
    if ${built} && [ ! -f "${data}/synthetic_settings" ]; then
      echo "${data} exists and has no synthetic_settings: kept as given (remove it to rebuild)"
    elif ${built} && [ "${built_with}" = "${settings}" ]; then
      echo "${data} exists"
    else
      if [ -n "${built_with}" ]; then
        echo "${data} was built with other settings (${built_with}); rebuilding"
        rm -rf "${data}/wav" "${data}/wav.scp" "${data}/ref.rttm" "${data}/synthetic_settings"
      fi
      python tools/make_synthetic_conversations.py --corpus_dir "${corpus_dir}" \
        --speakers "${speakers}" --count "${num_conversations}" \
        --min_speakers "${min_conv_speakers}" --max_speakers "${max_conv_speakers}" \
        --duration "${conversation_seconds}" --seed "${seed}" \
        $([ "${read_once}" = true ] && echo --read_once) "${data}"
      echo "${settings}" > "${data}/synthetic_settings"
    fi
  fi
fi

if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 2 ] && [ -z "${model}" ]; then
  echo "$0: give --model (e.g. ../mini/exp/ecapa_tdnn-librispeech_tc100 after" \
       "'cd ../mini && bash run.sh')" >&2
  exit 1
fi

if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 2 ]; then
  echo "Stage 2: diarize ${data}/wav.scp with ${model}"
  mkdir -p "${exp}"
  # a count given comes without the bounds of an estimated one
  count_flags=(--min_speakers "${min_speakers}" --max_speakers "${max_speakers}")
  if [ -n "${num_speakers}" ]; then count_flags=(--num_speakers "${num_speakers}"); fi
  python -m wespeaker_py.cli.main diarize --model "${model}" --wav_scp "${data}/wav.scp" \
    --output "${exp}/sys.rttm" --vad "${vad}" --cluster_method "${cluster_method}" \
    "${count_flags[@]}" ${device:+--device "${device}"}
fi

if [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ]; then
  echo "Stage 3: score ${exp}/sys.rttm against ${data}/ref.rttm"
  uem=()
  if [ -s "${data}/all.uem" ]; then uem=(--uem "${data}/all.uem"); fi
  # ${collars} is a list of numbers, meant to split
  python -m wespeaker_py.bin.score_diarization --ref_rttm "${data}/ref.rttm" \
    --sys_rttm "${exp}/sys.rttm" --collars ${collars} --output "${exp}/der.md" \
    --plot_dir "${exp}/plots" "${uem[@]}"
  echo "Table: ${exp}/der.md; time lines: ${exp}/plots/<recording>.png"
fi

if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 4 ]; then
  echo "Stage 4: clustering methods on ${data}: ${compare_methods}, and the true count"
  systems=()
  for method in ${compare_methods} true_count; do
    mkdir -p "${exp}/methods/${method}"
    if [ "${method}" = true_count ]; then
      count_flags=(--cluster_method "${cluster_method}" --reco2num_spk "${data}/ref.rttm")
      label="${cluster_method}+true_count"   # the reference row
    else
      count_flags=(--cluster_method "${method}" --min_speakers "${min_speakers}"
                   --max_speakers "${max_speakers}")
      label=${method}
    fi
    python -m wespeaker_py.cli.main diarize --model "${model}" --wav_scp "${data}/wav.scp" \
      --output "${exp}/methods/${method}/sys.rttm" --vad "${vad}" "${count_flags[@]}" \
      ${device:+--device "${device}"}
    systems+=("${label}=${exp}/methods/${method}/sys.rttm")
  done
  uem=()
  if [ -s "${data}/all.uem" ]; then uem=(--uem "${data}/all.uem"); fi
  python -m wespeaker_py.bin.score_diarization --ref_rttm "${data}/ref.rttm" \
    --systems "${systems[@]}" --collars ${collars} --output "${exp}/methods.md" "${uem[@]}"
  echo "Table: ${exp}/methods.md"
fi
