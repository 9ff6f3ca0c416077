#!/usr/bin/env bash
# Stage 2 of the recipes: the raw or shard data list of each set, from its wav.scp and
# utt2spk; a list newer than both, made with the same settings (data type, shard size
# and shuffle, noted in LIST.settings) and whose shards are all still there, is kept.
#
#   tools/recipe/make_lists.sh --data data --data_type shard --sets "vox2_dev vox1"
#     [--num_utts_per_shard 1000] [--num_threads 16]
#
# raw: ${data}/SET/raw.list (one JSON line an utterance); shard: tar shards of
# --num_utts_per_shard utterances in ${data}/SET/shards, shuffled, listed in
# ${data}/SET/shard.list (a rerun keeps the shards already complete).

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

# listed_shards_exist LIST: every local shard LIST names is a file (URLs and pipe:
# commands are not checked).
listed_shards_exist() {
  local shard
  while IFS= read -r shard || [ -n "${shard}" ]; do
    case "${shard}" in
      ""|pipe:*|*://*) ;;
      *) [ -f "${shard}" ] || { echo "${shard}, named in $1, is gone"; return 1; } ;;
    esac
  done < "$1"
}

for dset in ${sets}; do
  list=${data}/${dset}/${data_type}.list
  settings="data_type=${data_type}"
  if [ "${data_type}" == "shard" ]; then
    settings="${settings} num_utts_per_shard=${num_utts_per_shard} shuffle=true seed=${shuffle_seed}"
  fi
  if made_with "${list}" "${settings}" "${data}/${dset}/wav.scp" "${data}/${dset}/utt2spk" &&
     { [ "${data_type}" == "raw" ] || listed_shards_exist "${list}"; }; then
    echo "${list} is up to date"
    continue
  fi
  if [ "${data_type}" == "shard" ]; then
    python tools/make_shard_list.py --num_utts_per_shard "${num_utts_per_shard}" \
      --num_threads "${num_threads}" --prefix shards --shuffle --seed "${shuffle_seed}" \
      "${data}/${dset}/wav.scp" "${data}/${dset}/utt2spk" "${data}/${dset}/shards" "${list}"
  else
    python tools/make_raw_list.py "${data}/${dset}/wav.scp" "${data}/${dset}/utt2spk" "${list}"
  fi
  record_settings "${list}" "${settings}"
done
