#!/usr/bin/env bash
# Fetch OpenAI's Whisper large-v2 checkpoint (large-v2.pt, 2.9 GB) once, on a machine
# with a network, and check its md5 sum. Training never downloads it; by default it
# lands where conf/whisper_PMFA_stage0.yaml looks (whisper_hub/large-v2.pt), else give
# run.sh --whisper_path DIR/large-v2.pt.
#
#   local/download_whisper.sh [--download_dir whisper_hub]
#
# An interrupted download continues where it stopped; a verified file is not fetched or
# hashed again (DIR/large-v2.pt.md5_ok marks it).

download_dir=whisper_hub
url=https://openaipublic.azureedge.net/main/whisper/models/81f7c96c852ee8fc832187b0132e569d6c3065a3252ed18e56effd0b6a73e524/large-v2.pt
md5=668764447eeda98eeba5ef7bfcb4cc3d

. tools/parse_options.sh || exit 1
set -euo pipefail

file=${download_dir}/large-v2.pt
if [ -f "${file}" ] && [ -f "${file}.md5_ok" ]; then
  echo "${file}: present and verified"
  exit 0
fi
mkdir -p "${download_dir}"
if [ ! -f "${file}" ]; then
  echo "downloading ${url} ..."
  wget --continue --tries=3 -O "${file}.part" "${url}"
  mv "${file}.part" "${file}"
fi
echo "checking the md5 sum of ${file} ..."
sum=$(md5sum "${file}" | awk '{print $1}')
if [ "${sum}" != "${md5}" ]; then
  rm -f "${file}"
  echo "$0: the download has md5 ${sum}, expected ${md5}: removed; run again" >&2
  exit 1
fi
touch "${file}.md5_ok"
echo "${file} is ready"
