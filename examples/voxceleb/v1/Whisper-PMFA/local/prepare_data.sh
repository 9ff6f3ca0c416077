#!/usr/bin/env bash
# VoxCeleb1 (dev and test as two sets), MUSAN and RIRS_NOISES for the v1 recipes:
# the v2 recipe's data preparation without VoxCeleb2. Writes ${data}/vox1_dev,
# ${data}/vox1_test (with trials/vox1_O_cleaned.kaldi), ${data}/musan, ${data}/rirs.
#
#   local/prepare_data.sh --stage 1 --stop_stage 4 --data data [--vox_url URL]
#
# Every option of ../../v2/local/prepare_data.sh is taken (stages, download and
# unpack folders, --vox_url); VoxCeleb1's archives are vox1_dev_wav.zip (or its
# parts vox1_dev_wav_partaa..ad) and vox1_test_wav.zip.

exec ../../v2/local/prepare_data.sh --corpora vox1 --vox1_split true "$@"
