#!/usr/bin/env bash
# Make a diarization set: DATA/wav.scp ("<recording> <audio path>"), DATA/ref.rttm
# and, when scoring regions are given, DATA/all.uem.
#
#   local/prepare_data.sh --data_dir DIR --data data/NAME
#       DIR holds wav.scp and ref.rttm (or rttm), maybe all.uem: copied, but
#       only the recordings both wav.scp and the reference have (each side's
#       others are dropped with a count)
#   local/prepare_data.sh --audio_dir AUDIO --rttm_dir RTTMS --data data/NAME
#       one recording per RTTMS/<id>.rttm, its audio below AUDIO: <id>.wav
#       (VoxConverse), else <id>.Mix-Headset.wav (AMI), else the first
#       <id>.<anything>.wav by name, with a warning naming the choice when
#       several files match; RTTMs without audio are reported and left out;
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
  if [ ! -f "${data_dir}/wav.scp" ]; then
    echo "$0: ${data_dir}/wav.scp does not exist" >&2; exit 1
  fi
  ref=${data_dir}/ref.rttm
  [ -f "${ref}" ] || ref=${data_dir}/rttm
  if [ ! -f "${ref}" ]; then
    echo "$0: ${data_dir}/ref.rttm does not exist (nor its fallback ${data_dir}/rttm)" >&2
    exit 1
  fi
  awk 'toupper($1) == "SPEAKER" { print $2 }' "${ref}" | sort -u > "${tmp}/ids"
  awk 'NR == FNR { keep[$1] = 1; next } ($1 in keep)' "${tmp}/ids" "${data_dir}/wav.scp" \
    > "${tmp}/wav.scp"
  # the reference's (and UEM's) lines of the recordings kept: a reference recording
  # without audio would be scored as all missed
  kept_lines() {  # FIELD FILE: the lines of FILE whose FIELD-th field names a kept recording
    awk -v field="$1" 'NR == FNR { keep[$1] = 1; next } $1 ~ /^;;/ || (($field) in keep)' \
      "${tmp}/wav.scp" "$2"
  }
  kept_lines 2 "${ref}" > "${tmp}/ref.rttm"
  if [ -f "${data_dir}/all.uem" ]; then kept_lines 1 "${data_dir}/all.uem" > "${tmp}/all.uem"; fi
  dropped=$(( $(wc -l < "${data_dir}/wav.scp") - $(wc -l < "${tmp}/wav.scp") ))
  if [ "${dropped}" -gt 0 ]; then
    echo "$0: ${dropped} recordings of wav.scp have no reference turns"
  fi
  unheard=$(awk 'NR == FNR { heard[$1] = 1; next } !($1 in heard)' "${tmp}/wav.scp" \
    "${tmp}/ids" | wc -l)
  if [ "${unheard}" -gt 0 ]; then
    echo "$0: ${unheard} recordings of ${ref} have no audio in wav.scp: left out"
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
    mapfile -t found < <(find -L "${audio_dir}" -type f \
                           \( -name "${id}.wav" -o -name "${id}.*.wav" \) | sort)
    if [ "${#found[@]}" -eq 0 ]; then
      missing=$((missing + 1)); echo "$0: no audio for ${id} below ${audio_dir}" >&2; continue
    fi
    wav=
    for name in "${id}.wav" "${id}.Mix-Headset.wav"; do
      for file in "${found[@]}"; do
        if [ -z "${wav}" ] && [ "$(basename "${file}")" = "${name}" ]; then wav=${file}; fi
      done
    done
    wav=${wav:-${found[0]}}
    if [ "${#found[@]}" -gt 1 ]; then
      echo "$0: ${#found[@]} audio files for ${id} below ${audio_dir}; using ${wav}" >&2
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
