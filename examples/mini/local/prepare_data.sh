#!/usr/bin/env bash
# Turn a Kaldi-style corpus directory (wav.scp, utt2spk, trials; optionally
# train_spk, utt2dur and segments) into the sets the recipe scripts read:
#   ${data}/train    model training: the utterances of the speakers in train_spk
#                    (without that file: every utterance that appears in no trial),
#                    less the back-end speakers
#   ${data}/backend  back-end data (mean embedding, AS-Norm cohort, QMF and PLDA
#                    training): every ${backend_every}th of those speakers, kept
#                    away from the model; with fewer than ${min_backend_speakers}
#                    speakers in all, the training set itself, as in the VoxCeleb
#                    recipe (where the training set is large enough not to be
#                    memorised, which a few hundred utterances are)
#   ${data}/test     the utterances of the trials, with test/trials/${trials_name}
#                    and test/trials/${calibration_trial} (random back-end trials)
#   ${data}/musan, ${data}/rirs   synthetic noise, music, babble and room responses
# Each set has wav.scp (absolute paths; a "command |" entry is kept as it is), utt2spk,
# spk2utt and, where the corpus gives it, utt2dur. A corpus with a Kaldi segments file
# (utt recording start end; its wav.scp lists recordings) gives each set the segments of
# its utterances and the wav.scp lines of their recordings, which the list, extraction
# and calibration stages (2, 4, 7) read. The trials may be
# "enroll test target|nontarget", "1|0 enroll test" or "enroll test"; Windows line ends
# are taken. A second run with the same corpus and options finds the sets up to date and
# skips.
# ${data}/source names the corpus on its first line. When trial speakers also train the
# model or are in the back-end set (as without train_spk, where every speaker with an
# utterance in no trial trains), the lines trial_speakers=N, closed_set_speakers=N (those
# that train the model) and backend_trial_speakers=N follow, and every run warns that the
# EER is closed-set.
#
#   local/prepare_data.sh --data_dir data/librispeech_tc100 --data data/prepared/librispeech_tc100

data_dir=data/librispeech_tc100
data=data/prepared
trials_name=trials
calibration_trial=backend_cali.kaldi
# QMF's calibration trials, half target: the back-end speakers of the corpus give 224
# distinct target pairs, and no pair is drawn twice
num_cali_trials=448
backend_every=3
min_backend_speakers=30

. tools/parse_options.sh || exit 1
. path.sh
. tools/recipe_helpers.sh
set -eo pipefail

for f in wav.scp utt2spk trials; do
  if [ ! -s "${data_dir}/${f}" ]; then
    echo "$0: ${data_dir}/${f} is missing or empty (a data dir needs wav.scp, utt2spk, trials)" >&2
    exit 1
  fi
done
data_dir=$(realpath "${data_dir}")
mkdir -p "${data}"
data=$(realpath "${data}")

segments=${data_dir}/segments
segments_file=()   # the corpus' segments file, when it has one
if [ -f "${segments}" ]; then
  segments_file=("${segments}")
fi
inputs=("${data_dir}/wav.scp" "${data_dir}/utt2spk" "${data_dir}/trials" "${data_dir}/train_spk"
        "${data_dir}/utt2dur" "${segments}")
settings="trials_name=${trials_name} calibration_trial=${calibration_trial}"
settings+=" num_cali_trials=${num_cali_trials} backend_every=${backend_every}"
settings+=" min_backend_speakers=${min_backend_speakers}"
# warn_closed_set: the warning for the trial speakers that ${data}/source records as seen
# in training or in the back-end set (none recorded: no warning).
warn_closed_set() {
  local trial model backend
  trial=$(sed -n 's/^trial_speakers=//p' "${data}/source")
  model=$(sed -n 's/^closed_set_speakers=//p' "${data}/source")
  backend=$(sed -n 's/^backend_trial_speakers=//p' "${data}/source")
  [ -n "${trial}" ] || return 0
  echo "$0: WARNING: ${model} of the ${trial} trial speakers of ${data_dir} also train the" \
       "model and ${backend} of them are in the back-end set (mean, AS-Norm cohort, QMF," \
       "PLDA): its EER is closed-set, on speakers the recipe has seen, and not comparable to" \
       "a held-out test. To hold them out, give ${data_dir} a train_spk file (one utt2spk" \
       "speaker id a line) that lists none of the trial speakers." >&2
}
# warn_segments: the warning for a corpus with segments, which stage 12 cannot take
warn_segments() {
  [ -f "${segments}" ] || return 0
  echo "$0: WARNING: ${segments} cuts the utterances from the recordings of wav.scp:" \
       "stages 2-11 follow it, but stage 12's window LDA and synthetic conversations read" \
       "wav.scp as utterances; run the recipe with --stop_stage 11" >&2
}

if made_with "${data}/source" "${settings}" "${inputs[@]}" &&
   [ "$(head -n 1 "${data}/source")" == "${data_dir}" ] && [ -s "${data}/rirs/wav.scp" ] &&
   [ -s "${data}/test/trials/${trials_name}" ] && [ -s "${data}/test/trials/${calibration_trial}" ]
then
  echo "${data} is up to date with ${data_dir}, skipping"
  warn_closed_set
  warn_segments
  exit 0
fi
rm -f "${data}/source"
# the corpus' tables read as the tools read them: a line without a value, or an utterance
# given twice, is an error naming the file and the line(s); so is, with segments, a bad
# span, a recording not in wav.scp or an utterance of utt2spk without a segment
python -c 'import sys
from wespeaker_py.utils.tables import DataFormatError, read_key_value
try:
    read_key_value(sys.argv[2])
    read_key_value(sys.argv[3], allow_spaces_in_value=False)
    if len(sys.argv) > 4:  # (the dataset package loads torch: only then)
        from wespeaker_py.dataset.lists import read_segment_table
        read_segment_table(*sys.argv[2:5])
except DataFormatError as error:
    sys.exit(f"{sys.argv[1]}: {error}")' "$0" "${data_dir}/wav.scp" "${data_dir}/utt2spk" \
  "${segments_file[@]}"
export LC_ALL=C
# the first rule of every awk program reading the corpus' tables: no '\r' of Windows
# line ends in their keys
strip_cr='{ sub(/\r$/, "") }'

# subset NAME UTTS: the set of the utterances listed in UTTS (one per line).
subset() {
  local dir=${data}/$1 wav_keys=$2 tables=(wav.scp utt2spk)
  mkdir -p "${dir}"
  if [ -f "${segments}" ]; then
    # wav.scp lists recordings: those the utterances' segments cut from
    awk "${strip_cr}"'NR == FNR { keep[$1]; next } ($1 in keep)' "$2" "${segments}" |
      sort > "${dir}/segments"
    wav_keys=${tmp}/$1_recordings
    awk '{ print $2 }' "${dir}/segments" | sort -u > "${wav_keys}"
    tables=(segments utt2spk)
  else
    rm -f "${dir}/segments"  # of a corpus prepared here before
  fi
  # wav paths relative to the corpus directory become absolute (a pipe command, ending
  # in '|', is left as it is); a path is the rest of its line (it may hold spaces)
  awk -v d="${data_dir}" 'NR == FNR { keep[$1]; next }
       ($1 in keep) { p = $0; sub(/^[ \t]*[^ \t]+[ \t]+/, "", p); sub(/[ \t\r]+$/, "", p)
                      if (p !~ /^\// && p !~ /\|$/) p = d "/" p; print $1, p }' \
       "${wav_keys}" "${data_dir}/wav.scp" | sort > "${dir}/wav.scp"
  awk "${strip_cr}"'NR == FNR { keep[$1]; next } ($1 in keep)' "$2" "${data_dir}/utt2spk" |
    sort > "${dir}/utt2spk"
  utt2spk_to_spk2utt "${dir}/utt2spk" > "${dir}/spk2utt"
  if [ -f "${data_dir}/utt2dur" ]; then
    awk "${strip_cr}"'NR == FNR { keep[$1]; next } ($1 in keep)' "$2" "${data_dir}/utt2dur" |
      sort > "${dir}/utt2dur"
  else
    rm -f "${dir}/utt2dur"  # score_calibration.sh measures the durations
  fi
  # each key is once in the corpus' tables (checked above): what is short is missing
  local table missing count
  for table in "${tables[@]}"; do
    missing=$(sort -u "$2" | comm -23 - <(awk '{ print $1 }' "${dir}/${table}" | sort))
    if [ -n "${missing}" ]; then
      count=$(wc -l <<< "${missing}")
      echo "$0: ${count} utterances of the $1 set are not in ${data_dir}/${table}:" \
           "$(head -n 5 <<< "${missing}" | paste -sd ' ')$([ "${count}" -le 5 ] ||
           echo " and $((count - 5)) more")" >&2
      exit 1
    fi
  done
  echo "$1: $(count_lines "${dir}/utt2spk") utterances of $(count_lines "${dir}/spk2utt") speakers"
}

# speakers_of UTTS: the speakers (sorted, once each) of the utterances listed in UTTS.
speakers_of() {
  awk "${strip_cr}"'NR == FNR { keep[$1]; next } ($1 in keep) { print $2 }' "$1" \
    "${data_dir}/utt2spk" | sort -u
}

tmp=$(mktemp -d)
trap 'rm -rf "${tmp}"' EXIT
# the utterances of the trials, in any of their forms (as the scoring reads them)
awk -v f="${data_dir}/trials" "${strip_cr}"'
    NF == 3 && tolower($3) ~ /^(target|tgt|nontarget|nontgt|imp)$/ { print $1; print $2; next }
    NF == 3 && ($1 == "0" || $1 == "1") { print $2; print $3; next }
    NF == 2 { print $1; print $2; next }
    NF { printf "%s:%d: expected \"enroll test target|nontarget\", \"1|0 enroll test\" or " \
                "\"enroll test\", got: %s\n", f, FNR, $0 > "/dev/stderr"; bad = 1; exit }
    END { exit bad }' "${data_dir}/trials" | sort -u > "${tmp}/test_utts"
if [ -f "${data_dir}/train_spk" ]; then
  awk "${strip_cr}"'NR == FNR { spk[$1]; next } ($2 in spk) { print $1 }' \
      "${data_dir}/train_spk" "${data_dir}/utt2spk" > "${tmp}/candidates"
else
  awk "${strip_cr}"'{ print $1 }' "${data_dir}/utt2spk" > "${tmp}/candidates"
fi
awk 'NR == FNR { test[$1]; next } !($1 in test)' "${tmp}/test_utts" "${tmp}/candidates" \
  > "${tmp}/train_utts"
if [ ! -s "${tmp}/train_utts" ]; then
  echo "$0: every utterance of ${data_dir} is in a trial: nothing is left to train on" >&2
  exit 1
fi
speakers_of "${tmp}/train_utts" > "${tmp}/train_spks"
if [ "$(count_lines "${tmp}/train_spks")" -ge "${min_backend_speakers}" ]; then
  awk -v n="${backend_every}" 'NR % n == 0' "${tmp}/train_spks" > "${tmp}/backend_spks"
  awk "${strip_cr}"'NR == FNR { spk[$1]; next } ($2 in spk) { print $1 }' "${tmp}/backend_spks" \
    "${data_dir}/utt2spk" | sort > "${tmp}/backend_all"
  # back-end: the held-out speakers' utterances; train: the rest
  comm -12 "${tmp}/backend_all" <(sort "${tmp}/train_utts") > "${tmp}/backend_utts"
  comm -23 <(sort "${tmp}/train_utts") "${tmp}/backend_all" > "${tmp}/model_utts"
  mv "${tmp}/model_utts" "${tmp}/train_utts"
else
  echo "fewer than ${min_backend_speakers} training speakers: the back-end uses the training set"
  cp "${tmp}/train_utts" "${tmp}/backend_utts"
fi
# trial speakers seen in training or in the back-end set make the EER closed-set
speakers_of "${tmp}/test_utts" > "${tmp}/trial_spks"
comm -12 "${tmp}/trial_spks" <(speakers_of "${tmp}/train_utts") > "${tmp}/closed_set_spks"
comm -12 "${tmp}/trial_spks" <(speakers_of "${tmp}/backend_utts") > "${tmp}/backend_trial_spks"

subset train "${tmp}/train_utts"
subset backend "${tmp}/backend_utts"
subset test "${tmp}/test_utts"
mkdir -p "${data}/test/trials"
cp "${data_dir}/trials" "${data}/test/trials/${trials_name}"
python tools/make_trials.py --utt2spk "${data}/backend/utt2spk" --num_trials "${num_cali_trials}" \
  "${data}/test/trials/${calibration_trial}"

# Noise and room responses at the corpus' own rate, that of its first training utterance that
# opens (training resamples them with the speech; babble resamples utterances at other rates
# and skips unusable ones)
python tools/make_synthetic_aug.py "${data}/train/wav.scp" "${data}"

{
  echo "${data_dir}"
  if [ -s "${tmp}/closed_set_spks" ] || [ -s "${tmp}/backend_trial_spks" ]; then
    echo "trial_speakers=$(count_lines "${tmp}/trial_spks")"
    echo "closed_set_speakers=$(count_lines "${tmp}/closed_set_spks")"
    echo "backend_trial_speakers=$(count_lines "${tmp}/backend_trial_spks")"
  fi
} > "${data}/source"
record_settings "${data}/source" "${settings}"
echo "prepared ${data} from ${data_dir}"
warn_closed_set
warn_segments
