#!/usr/bin/env bash
# Make a diarization set: DATA/wav.scp ("<recording> <audio path>"), DATA/ref.rttm
# and, when scoring regions are given, DATA/all.uem.
#
#   local/prepare_data.sh --data_dir DIR --data data/NAME
#       DIR holds wav.scp and ref.rttm (or rttm), maybe all.uem: copied,
#       recordings without a reference are dropped with a count
#   local/prepare_data.sh --audio_dir AUDIO --rttm_dir RTTMS --data data/NAME
#       one recording per RTTMS/<id>.rttm, its audio the first <id>.wav or
#       <id>.<anything>.wav below AUDIO (VoxConverse: <id>.wav; AMI:
#       <id>.Mix-Headset.wav); RTTMs without audio are reported and left out;
#       --uem_dir UEMS adds UEMS/<id>.uem to all.uem

data_dir=
audio_dir=
rttm_dir=
uem_dir=
data=

. tools/parse_options.sh || exit 1
set -eo pipefail

if [ -z "${data}" ]; then echo "$0: give --data" >&2; exit 1; fi
mkdir -p "${data}"
tmp=$(mktemp -d "${data}/.prepare.XXXXXX")
trap 'rm -rf "${tmp}"' EXIT

if [ -n "${data_dir}" ]; then
  ref=${data_dir}/ref.rttm
  [ -f "${ref}" ] || ref=${data_dir}/rttm
  for file in "${data_dir}/wav.scp" "${ref}"; do
    if [ ! -f "${file}" ]; then echo "$0: ${file} does not exist" >&2; exit 1; fi
  done
  awk '$1 == "SPEAKER" { print $2 }' "${ref}" | sort -u > "${tmp}/ids"
  awk 'NR == FNR { keep[$1] = 1; next } ($1 in keep)' "${tmp}/ids" "${data_dir}/wav.scp" \
    > "${tmp}/wav.scp"
  cp "${ref}" "${tmp}/ref.rttm"
  if [ -f "${data_dir}/all.uem" ]; then cp "${data_dir}/all.uem" "${tmp}/all.uem"; fi
  dropped=$(( $(wc -l < "${data_dir}/wav.scp") - $(wc -l < "${tmp}/wav.scp") ))
  if [ "${dropped}" -gt 0 ]; then
    echo "$0: ${dropped} recordings of wav.scp have no reference turns"
  fi
else
  if [ -z "${rttm_dir}" ] || [ ! -d "${rttm_dir}" ] || [ ! -d "${audio_dir}" ]; then
    echo "$0: give --data_dir, or --audio_dir and --rttm_dir (existing directories)" >&2
    exit 1
  fi
  : > "${tmp}/wav.scp"; : > "${tmp}/ref.rttm"; missing=0
  for rttm in "${rttm_dir}"/*.rttm; do
    [ -e "${rttm}" ] || { echo "$0: no .rttm files in ${rttm_dir}" >&2; exit 1; }
    id=$(basename "${rttm}" .rttm)
    wav=$(find -L "${audio_dir}" -type f \( -name "${id}.wav" -o -name "${id}.*.wav" \) \
          | sort | head -n 1)
    if [ -z "${wav}" ]; then
      missing=$((missing + 1)); echo "$0: no audio for ${id} below ${audio_dir}" >&2; continue
    fi
    echo "${id} $(realpath "${wav}")" >> "${tmp}/wav.scp"
    cat "${rttm}" >> "${tmp}/ref.rttm"
    if [ -n "${uem_dir}" ]; then
      if [ -f "${uem_dir}/${id}.uem" ]; then cat "${uem_dir}/${id}.uem" >> "${tmp}/all.uem"
      else echo "$0: no ${uem_dir}/${id}.uem: ${id} is scored from its first to last turn" >&2
      fi
    fi
  done
  if [ "${missing}" -gt 0 ]; then echo "$0: ${missing} references without audio left out"; fi
fi
if [ ! -s "${tmp}/wav.scp" ]; then echo "$0: no recordings with references" >&2; exit 1; fi
rm -f "${data}/all.uem"
mv "${tmp}/wav.scp" "${tmp}/ref.rttm" "${data}/"
if [ -s "${tmp}/all.uem" ]; then mv "${tmp}/all.uem" "${data}/"; fi
echo "$0: $(wc -l < "${data}/wav.scp") recordings in ${data}"
