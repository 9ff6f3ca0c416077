#!/usr/bin/env bash
# Prepare CN-Celeb1, CN-Celeb2, MUSAN and RIRS_NOISES as Kaldi-style data directories
# under ${data}, with WeSpeaker's keys:
#   cnceleb_train  CN-Celeb1 dev (the speakers of CN-Celeb_flac/dev/dev.lst) and all of
#                  CN-Celeb2 (CN-Celeb2_flac/spk.lst): wav.scp, utt2spk, spk2utt, utt2dur
#                  and utt2utts (the utterances each one is made of); keys
#                  id00000/interview-01-001.wav, id00000/interview-01-002-comb3.wav
#   eval           CN-Celeb1 eval: wav.scp and utt2spk of enroll/id00800-enroll.wav,
#                  test/id00800-singing-01-001.wav (speaker id00800) and of the
#                  enrollment utterances of enroll.map, id00800/singing-01-002.wav
#                  (speaker id00800-enroll); enroll.map; trials/CNC-Eval-Avg.lst (the
#                  enrollment id against each test utterance) and
#                  trials/CNC-Eval-Concat.lst (the enrollment file instead)
#   musan, rirs    wav.scp
# The audio is read as released (FLAC): nothing is converted to wav, but the combined
# training utterances are written as wav. The CN-Celeb lists name their files .wav;
# each resolves to the file there (.wav, else .flac).
#
# Stages (WeSpeaker's numbering; each skips what an earlier run finished):
#   1  download the missing archives from OpenSLR (${openslr_url}: resources 17, 28
#      and 82; cn-celeb2_v2.tar.gz as its parts cn-celeb2_v2.tar.gzaa..ac) into
#      ${download_dir}, checking their md5 sums; archives put there beforehand are
#      only checked
#   2  unpack them into ${rawdata_dir}: CN-Celeb_flac, CN-Celeb2_flac, musan, RIRS_NOISES
#   3  list the training utterances; with --combine_short_audio 1 the short ones of
#      a speaker and genre are joined into pieces of at least ${min_duration} s
#      (tools/combine_short_utts.py, ${nj} processes, written to
#      ${rawdata_dir}/cnceleb_train_combined), with 0 they are listed as they are
#   4  write the data lists and the trial lists
#
#   local/prepare_data.sh --stage 1 --stop_stage 4 --data data [--nj 8] [--combine_short_audio 0]

stage=1
stop_stage=4
data=data
download_dir=  # default: ${data}/download_data
rawdata_dir=   # default: ${data}/raw_data
openslr_url=https://www.openslr.org/resources  # empty: the archives must be in ${download_dir}
combine_short_audio=1  # 1: join short training utterances (as WeSpeaker); 0: list them as they are
min_duration=5         # seconds each joined training utterance lasts at least
nj=8                   # processes reading and writing audio in stage 3

. tools/parse_options.sh || exit 1
require_stages 1 4
. ./path.sh || exit 1
. tools/recipe_helpers.sh
. tools/recipe/archives.sh
set -euo pipefail

case "${combine_short_audio}" in
  0) min_seconds=0 ;;
  1) min_seconds=${min_duration} ;;
  *) echo "$0: --combine_short_audio must be 0 or 1, got '${combine_short_audio}'" >&2; exit 1 ;;
esac

mkdir -p "${data}"
data=$(realpath "${data}")
download_dir=$(realpath -m "${download_dir:-${data}/download_data}")
rawdata_dir=$(realpath -m "${rawdata_dir:-${data}/raw_data}")

archives="musan.tar.gz rirs_noises.zip cn-celeb_v2.tar.gz cn-celeb2_v2.tar.gz"
# archive name -> md5 sum, OpenSLR resource and parts (downloaded and joined in this order)
declare -A md5=(
  [musan.tar.gz]=0c472d4fc0c5141eca47ad1ffeb2a7df
  [rirs_noises.zip]=e6f48e257286e05de56413b4779d8ffb
  [cn-celeb_v2.tar.gz]=7ab1b214028a7439e26608b2d5a0336c
  [cn-celeb2_v2.tar.gz]=55c47cf0b6d0bf793e88bf79d5dfc660
)
declare -A resource=(
  [musan.tar.gz]=17
  [rirs_noises.zip]=28
  [cn-celeb_v2.tar.gz]=82
  [cn-celeb2_v2.tar.gz]=82
)
declare -A unpacks_to=(
  [musan.tar.gz]=musan
  [rirs_noises.zip]=RIRS_NOISES
  [cn-celeb_v2.tar.gz]=CN-Celeb_flac
  [cn-celeb2_v2.tar.gz]=CN-Celeb2_flac
)
declare -A parts=(
  [cn-celeb2_v2.tar.gz]="cn-celeb2_v2.tar.gzaa cn-celeb2_v2.tar.gzab cn-celeb2_v2.tar.gzac"
)

cn1=${rawdata_dir}/CN-Celeb_flac
cn2=${rawdata_dir}/CN-Celeb2_flac
train_dir=${data}/cnceleb_train
train_flac=${data}/statistics/cnceleb_train_flac.scp
eval_dir=${data}/eval

# need FILE STAGE: stop, naming FILE and the stage that makes it, unless FILE is there.
need() {
  if [ ! -e "$1" ]; then
    echo "$0: $1 not found; run stage $2 first" >&2
    exit 1
  fi
}

# openslr_source NAME: where NAME (or its parts) can be downloaded; nothing without a URL.
openslr_source() {
  if [ -n "${openslr_url}" ]; then echo "${openslr_url}/${resource[$1]}"; fi
}

if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ]; then
  echo "Stage 1: download archives into ${download_dir}"
  download_archives "${download_dir}" openslr_source md5 parts \
    "Put them (cn-celeb2_v2.tar.gz or its parts cn-celeb2_v2.tar.gzaa..ac) in ${download_dir}, or pass --openslr_url (e.g. https://www.openslr.org/resources)." \
    ${archives}
fi

if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 2 ]; then
  echo "Stage 2: unpack archives into ${rawdata_dir}"
  mkdir -p "${rawdata_dir}"
  for name in ${archives}; do
    unpack_archive "${download_dir}" "${name}" "${rawdata_dir}" . "${unpacks_to[$name]}"
  done
fi

# speaker_flacs SPK_LIST CORPUS: "<spk>/<name> <file>" for each FLAC file of the speakers
# of SPK_LIST (an id a line) under CORPUS/data/<spk>.
speaker_flacs() {
  local list=$1 root=$2/data line_no=0 spk extra
  while read -r spk extra || [ -n "${spk}" ]; do
    line_no=$((line_no + 1))
    spk=${spk%$'\r'}
    [ -n "${spk}" ] || continue
    if [ -n "${extra%$'\r'}" ]; then
      echo "$0: ${list}:${line_no}: expected one speaker id, got '${spk} ${extra}'" >&2
      return 1
    fi
    if [ ! -d "${root}/${spk}" ]; then
      echo "$0: ${list}:${line_no}: speaker ${spk} has no folder ${root}/${spk}" >&2
      return 1
    fi
    find "${root}/${spk}" -name '*.flac'
  done < "${list}" | awk -F/ '{ name = $NF; sub(/\.flac$/, "", name); print $(NF-1) "/" name, $0 }'
}

# training_flacs: the training utterances, CN-Celeb1 dev then CN-Celeb2, sorted by key.
training_flacs() {
  { speaker_flacs "${cn1}/dev/dev.lst" "${cn1}" && speaker_flacs "${cn2}/spk.lst" "${cn2}"; } |
    LC_ALL=C sort
}

if [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ]; then
  echo "Stage 3: training utterances (combine_short_audio=${combine_short_audio})"
  need "${cn1}/dev/dev.lst" 2
  need "${cn2}/spk.lst" 2
  mkdir -p "$(dirname "${train_flac}")"
  if ! up_to_date "${train_flac}" "${rawdata_dir}/.cn-celeb_v2.tar.gz.unpacked" \
                  "${rawdata_dir}/.cn-celeb2_v2.tar.gz.unpacked" "${cn1}/dev/dev.lst" \
                  "${cn2}/spk.lst"; then
    write_list "${train_flac}" training_flacs
  fi
  if [ ! -s "${train_flac}" ]; then
    echo "$0: no FLAC file of a training speaker under ${cn1}/data or ${cn2}/data" >&2
    exit 1
  fi
  settings="min_duration=${min_seconds}"
  if made_with "${train_dir}/utt2utts" "${settings}" "${train_flac}"; then
    echo "cnceleb_train is up to date (${settings})"
  else
    python tools/combine_short_utts.py --min_duration "${min_seconds}" --nj "${nj}" \
      --key_suffix .wav "${train_flac}" "${rawdata_dir}/cnceleb_train_combined" "${train_dir}"
    record_settings "${train_dir}/utt2utts" "${settings}"
  fi
fi

# eval_files: "<key> <speaker> <file>" for the audio of CN-Celeb1's eval/enroll and
# eval/test: keys enroll/id00800-enroll.wav, test/id00800-singing-01-001.wav (a FLAC
# keyed .wav; a .wav beside it wins), the speaker the name up to its first "-".
eval_files() {
  find "${cn1}/eval/enroll" "${cn1}/eval/test" \( -name '*.flac' -o -name '*.wav' \) |
    awk -F/ '{ name = $NF; sub(/\.(flac|wav)$/, ".wav", name); key = $(NF-1) "/" name
               if (!(key in file) || $0 ~ /\.wav$/) file[key] = $0 }
             END { for (key in file) { split(key, part, "[/-]"); print key, part[2], file[key] } }'
}

# enroll_files MAP: "<utterance> <enroll id> <file>" for every utterance of the enrollment
# map (lines "<enroll id> <utterance> ...", utterances like id00800/singing-01-002.wav,
# files of CN-Celeb_flac/data as .wav or else .flac).
enroll_files() {
  local map=$1 line line_no=0 utt stem
  local -a fields
  local -A seen
  while IFS= read -r line || [ -n "${line}" ]; do
    line_no=$((line_no + 1))
    read -r -a fields <<< "${line%$'\r'}"
    [ ${#fields[@]} -gt 0 ] || continue
    if [ ${#fields[@]} -lt 2 ]; then
      echo "$0: ${map}:${line_no}: expected '<enroll id> <utterance> ...', got '${line}'" >&2
      return 1
    fi
    for utt in "${fields[@]:1}"; do
      if [ -n "${seen[$utt]:-}" ]; then
        echo "$0: ${map}:${line_no}: ${utt} is listed already on line ${seen[$utt]}" >&2
        return 1
      fi
      seen[$utt]=${line_no}
      stem=${cn1}/data/${utt%.wav}
      stem=${stem%.flac}
      if [ -f "${stem}.wav" ]; then
        echo "${utt} ${fields[0]} ${stem}.wav"
      elif [ -f "${stem}.flac" ]; then
        echo "${utt} ${fields[0]} ${stem}.flac"
      else
        echo "$0: ${map}:${line_no}: ${utt}: neither ${stem}.wav nor ${stem}.flac exists" >&2
        return 1
      fi
    done
  done < "${map}"
}

# eval_utts: "<key> <speaker> <file>" of every eval utterance, sorted.
eval_utts() {
  { eval_files && enroll_files "${cn1}/eval/lists/enroll.map"; } | LC_ALL=C sort
}

# eval_trials AVG CONCAT: both trial lists from eval/lists/trials.lst ("<enroll id>
# <test utterance> 1|0"); CONCAT has the enrollment ids replaced by their file of
# eval/lists/enroll.lst. Every utterance must be in eval/wav.scp, every id in enroll.map.
eval_trials() {
  local lists=${cn1}/eval/lists
  awk -v scp="${eval_dir}/wav.scp" -v map="${eval_dir}/enroll.map" \
      -v enroll="${lists}/enroll.lst" -v avg="$1" -v concat="$2" '
    function fail(where, message) {
      printf "%s: %s\n", where, message > "/dev/stderr"; bad = 1; exit
    }
    BEGIN {
      while ((getline line < scp) > 0) { split(line, f, " "); have[f[1]] = 1 }
      while ((getline line < map) > 0) { split(line, f, " "); model[f[1]] = 1 }
      while ((getline line < enroll) > 0) {
        line_no++; sub(/\r$/, "", line); n = split(line, f, " ")
        if (n == 0) continue
        if (n != 2) fail(enroll ":" line_no, "expected \"<enroll id> <file>\", got: " line)
        if (!(f[2] in have)) fail(enroll ":" line_no, f[2] " is not in " scp)
        file[f[1]] = f[2]
      }
    }
    { sub(/\r$/, "") }
    NF == 0 { next }
    NF != 3 || ($3 != 0 && $3 != 1) {
      fail(FILENAME ":" FNR, "expected \"<enroll id> <test utterance> 1|0\", got: " $0)
    }
    !($1 in model) { fail(FILENAME ":" FNR, $1 " is no enrollment id of " map) }
    !($1 in file) { fail(FILENAME ":" FNR, $1 " is not in " enroll) }
    !($2 in have) { fail(FILENAME ":" FNR, $2 " is not in " scp) }
    {
      label = $3 == 1 ? "target" : "nontarget"
      print $1, $2, label > avg
      print file[$1], $2, label > concat
    }
    END { exit bad }' "${lists}/trials.lst"
}

# eval_set: eval/wav.scp, utt2spk and enroll.map (written last: it marks the set done).
eval_set() {
  local utts=${data}/statistics/eval_utts
  mkdir -p "${eval_dir}" "$(dirname "${utts}")"
  write_list "${utts}" eval_utts
  write_list "${eval_dir}/wav.scp" awk '{ key = $1; sub(/^[^ ]+ [^ ]+ /, ""); print key, $0 }' \
    "${utts}"
  write_list "${eval_dir}/utt2spk" awk '{ print $1, $2 }' "${utts}"
  write_list "${eval_dir}/enroll.map" sed 's/\r$//' "${cn1}/eval/lists/enroll.map"
}

# trial_lists: eval/trials/CNC-Eval-Avg.lst and CNC-Eval-Concat.lst, both or neither.
trial_lists() {
  local dir=${eval_dir}/trials
  mkdir -p "${dir}"
  if ! eval_trials "${dir}/CNC-Eval-Avg.lst.tmp" "${dir}/CNC-Eval-Concat.lst.tmp"; then
    rm -f "${dir}/CNC-Eval-Avg.lst.tmp" "${dir}/CNC-Eval-Concat.lst.tmp"
    return 1
  fi
  mv "${dir}/CNC-Eval-Avg.lst.tmp" "${dir}/CNC-Eval-Avg.lst"
  mv "${dir}/CNC-Eval-Concat.lst.tmp" "${dir}/CNC-Eval-Concat.lst"
}

if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 4 ]; then
  echo "Stage 4: data lists"
  export LC_ALL=C
  noise_lists "${data}" "${rawdata_dir}"

  need "${train_dir}/utt2utts" 3
  if ! up_to_date "${train_dir}/spk2utt" "${train_dir}/utt2spk"; then
    write_list "${train_dir}/spk2utt" utt2spk_to_spk2utt "${train_dir}/utt2spk"
  fi

  for name in eval/enroll eval/test eval/lists/enroll.map eval/lists/enroll.lst \
              eval/lists/trials.lst; do
    need "${cn1}/${name}" 2
  done
  unpacked=${rawdata_dir}/.cn-celeb_v2.tar.gz.unpacked
  lists=${cn1}/eval/lists
  if ! up_to_date "${eval_dir}/enroll.map" "${unpacked}" "${lists}/enroll.map"; then
    eval_set
  fi
  trials=${eval_dir}/trials
  if ! up_to_date "${trials}/CNC-Eval-Concat.lst" "${unpacked}" "${eval_dir}/enroll.map" \
                  "${lists}/enroll.lst" "${lists}/trials.lst" ||
     [ ! -s "${trials}/CNC-Eval-Avg.lst" ]; then
    trial_lists
  fi

  echo "cnceleb_train: $(count_lines "${train_dir}/wav.scp") utterances of" \
       "$(count_lines "${train_dir}/spk2utt") speakers"
  echo "eval: $(count_lines "${eval_dir}/wav.scp") utterances," \
       "$(count_lines "${eval_dir}/enroll.map") enrollment ids," \
       "$(count_lines "${trials}/CNC-Eval-Avg.lst") trials"
  echo "musan: $(count_lines "${data}/musan/wav.scp") files," \
       "rirs: $(count_lines "${data}/rirs/wav.scp") files"
  # Full releases, as published: 800 CN-Celeb1 dev and 2000 CN-Celeb2 speakers train;
  # CNC-Eval has 196 enrollment ids, 17777 test utterances and 3484292 trials.
  echo "Data lists are in ${data}"
fi
