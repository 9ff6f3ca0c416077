#!/usr/bin/env bash
# Stage 2 of the recipes: the raw or shard data list of each set, from its wav.scp and
# utt2spk. A set with a Kaldi segments file (${data}/SET/segments) has a wav.scp of
# recordings: it is given to the list tools as --segments, and each utterance is its
# segment of a recording.
#
#   tools/recipe/make_lists.sh --data data --data_type shard --sets "vox2_dev vox1"
#     [--num_utts_per_shard 1000] [--num_threads 16]
#
# raw: ${data}/SET/raw.list (one JSON line an utterance); one newer than its tables, made
# with the same data type and use of segments (noted in raw.list.settings), is kept.
# shard: tar shards of
# --num_utts_per_shard utterances in ${data}/SET/shards, shuffled, listed in
# ${data}/SET/shard.list. make_shard_list.py runs each time: it keeps each shard whose
# digest note matches its utterances and their audio files as they are now (a file
# rewritten in place is packed again), and says "up to date" when it rewrote nothing.

data=data
data_type=shard  # shard/raw
sets=            # the sets under ${data} to list, e.g. "vox2_dev vox1"
num_utts_per_shard=1000
num_threads=16

. tools/parse_options.sh || exit 1
. path.sh
. tools/recipe_helpers.sh
set -eo pipefail

if [ -z "${sets}" ]; then
  echo "$0: --sets names the sets to list (e.g. --sets \"vox2_dev vox1\")" >&2
  exit 1
fi
case "${data_type}" in
  raw|shard) ;;
  *) echo "$0: --data_type must be raw or shard, got '${data_type}'" >&2; exit 1 ;;
esac

shuffle_seed=42

for dset in ${sets}; do
  list=${data}/${dset}/${data_type}.list
  segments=${data}/${dset}/segments
  segments_opts=()
  settings="data_type=${data_type}"
  if [ -f "${segments}" ]; then
    segments_opts=(--segments "${segments}")
    settings="${settings} segments=true"
  fi
  if [ "${data_type}" == "shard" ]; then
    python tools/make_shard_list.py --num_utts_per_shard "${num_utts_per_shard}" \
      --num_threads "${num_threads}" --prefix shards --shuffle --seed "${shuffle_seed}" \
      "${segments_opts[@]}" \
      "${data}/${dset}/wav.scp" "${data}/${dset}/utt2spk" "${data}/${dset}/shards" "${list}"
    continue
  fi
  if made_with "${list}" "${settings}" "${data}/${dset}/wav.scp" "${data}/${dset}/utt2spk" \
       "${segments}"; then
    echo "${list} is up to date"
    continue
  fi
  python tools/make_raw_list.py "${segments_opts[@]}" \
    "${data}/${dset}/wav.scp" "${data}/${dset}/utt2spk" "${list}"
  record_settings "${list}" "${settings}"
done
