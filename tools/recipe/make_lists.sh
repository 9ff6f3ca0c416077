#!/usr/bin/env bash
# Stage 2 of the recipes: the raw or shard data list of each set, from its wav.scp and
# utt2spk; a list newer than both is kept.
#
#   tools/recipe/make_lists.sh --data data --data_type shard --sets "vox2_dev vox1"
#     [--num_utts_per_shard 1000] [--num_threads 16]
#
# raw: ${data}/SET/raw.list (one JSON line an utterance); shard: tar shards of
# --num_utts_per_shard utterances in ${data}/SET/shards, shuffled, listed in
# ${data}/SET/shard.list.

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

for dset in ${sets}; do
  list=${data}/${dset}/${data_type}.list
  if up_to_date "${list}" "${data}/${dset}/wav.scp" "${data}/${dset}/utt2spk"; then
    echo "${list} is up to date"
  elif [ "${data_type}" == "shard" ]; then
    python tools/make_shard_list.py --num_utts_per_shard "${num_utts_per_shard}" \
      --num_threads "${num_threads}" --prefix shards --shuffle \
      "${data}/${dset}/wav.scp" "${data}/${dset}/utt2spk" "${data}/${dset}/shards" "${list}"
  else
    python tools/make_raw_list.py "${data}/${dset}/wav.scp" "${data}/${dset}/utt2spk" "${list}"
  fi
done
