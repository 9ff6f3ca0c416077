#!/usr/bin/env bash
# Prepare VoxCeleb1, VoxCeleb2 dev, MUSAN and RIRS_NOISES as Kaldi-style data
# directories under ${data}: vox1, vox2_dev, musan, rirs (wav.scp; utt2spk and
# spk2utt for the speech sets) and vox1/trials/vox1_{O,E,H}_cleaned.kaldi.
# --corpora vox1 leaves VoxCeleb2 out (no download, unpacking or conversion);
# --vox1_split true writes VoxCeleb1's dev and test parts as two sets, vox1_dev and
# vox1_test, with vox1_test/trials/vox1_O_cleaned.kaldi (the E and H lists pair dev
# utterances, so they belong to the whole vox1 set only), as the v1 recipes use them.
#
# Stages (each skips what an earlier run finished):
#   1  download the missing archives into ${download_dir}, checking their md5
#      sums. MUSAN and RIRS_NOISES come from OpenSLR. VoxCeleb needs a
#      registration with its authors: place vox1_dev_wav.zip, vox1_test_wav.zip
#      and vox2_aac.zip (or their parts, e.g. vox2_dev_aac_partaa..ah) there
#      yourself, or give --vox_url with the base URL you were sent.
#   2  unpack every archive not unpacked yet into ${rawdata_dir}
#   3  convert the VoxCeleb2 m4a files to 16 kHz wav with ffmpeg, ${nj} at a time
#   4  write the data lists and the cleaned Vox1-O/E/H trial lists
#
#   local/prepare_data.sh --stage 1 --stop_stage 4 --data data [--vox_url URL] [--nj 8]
#   local/prepare_data.sh --stage 1 --stop_stage 4 --data data --corpora vox1 --vox1_split true

stage=1
stop_stage=4
data=data
download_dir=  # default: ${data}/download_data
rawdata_dir=   # default: ${data}/raw_data
vox_url=       # base URL of the VoxCeleb archives (empty: they must be in ${download_dir})
openslr_url=https://openslr.elda.org/resources
trials_url=https://www.robots.ox.ac.uk/~vgg/data/voxceleb/meta
nj=8
corpora="vox1 vox2"  # the VoxCeleb releases to prepare (MUSAN and RIRS_NOISES always)
vox1_split=false     # true: vox1_dev and vox1_test instead of one vox1 set

. tools/parse_options.sh || exit 1
require_stages 1 4
. tools/recipe_helpers.sh
. tools/recipe/archives.sh
set -euo pipefail

mkdir -p "${data}"
data=$(realpath "${data}")
download_dir=$(realpath -m "${download_dir:-${data}/download_data}")
rawdata_dir=$(realpath -m "${rawdata_dir:-${data}/raw_data}")

# archive name -> md5 sum, parts (downloaded and concatenated in this order) and where it unpacks
declare -A md5=(
  [musan.tar.gz]=0c472d4fc0c5141eca47ad1ffeb2a7df
  [rirs_noises.zip]=e6f48e257286e05de56413b4779d8ffb
  [vox1_test_wav.zip]=185fdc63c3c739954633d50379a3d102
  [vox1_dev_wav.zip]=ae63e55b951748cc486645f532ba230b
  [vox2_aac.zip]=bbc063c46078a602ca71605645c2a402
)
declare -A parts=(
  [vox1_dev_wav.zip]="vox1_dev_wav_partaa vox1_dev_wav_partab vox1_dev_wav_partac vox1_dev_wav_partad"
  [vox2_aac.zip]="vox2_dev_aac_partaa vox2_dev_aac_partab vox2_dev_aac_partac vox2_dev_aac_partad vox2_dev_aac_partae vox2_dev_aac_partaf vox2_dev_aac_partag vox2_dev_aac_partah"
)
declare -A unpack_dir=(
  [musan.tar.gz]=.
  [rirs_noises.zip]=.
  [vox1_test_wav.zip]=voxceleb1/test
  [vox1_dev_wav.zip]=voxceleb1/dev
  [vox2_aac.zip]=voxceleb2_m4a
)
archives="musan.tar.gz rirs_noises.zip"
for corpus in ${corpora}; do
  case ${corpus} in
    vox1) archives="${archives} vox1_test_wav.zip vox1_dev_wav.zip" ;;
    vox2) archives="${archives} vox2_aac.zip" ;;
    *) echo "$0: --corpora takes vox1 and/or vox2, got '${corpus}'" >&2; exit 1 ;;
  esac
done
case "${vox1_split}" in
  true|false) ;;
  *) echo "$0: --vox1_split must be true or false, got '${vox1_split}'" >&2; exit 1 ;;
esac
# has_corpus NAME: true when --corpora names NAME
has_corpus() {
  [[ " ${corpora} " == *" $1 "* ]]
}
if ${vox1_split} && ! has_corpus vox1; then
  echo "$0: --vox1_split true needs vox1 in --corpora (got '${corpora}')" >&2
  exit 1
fi

source_url() {
  case $1 in
    musan.tar.gz) echo "${openslr_url}/17" ;;
    rirs_noises.zip) echo "${openslr_url}/28" ;;
    *) echo "${vox_url}" ;;
  esac
}

if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ]; then
  echo "Stage 1: download archives into ${download_dir}"
  download_archives "${download_dir}" source_url md5 parts \
    "VoxCeleb is distributed to registered users: put the archives (or their parts) in ${download_dir}, or pass --vox_url with the base URL you were given." \
    ${archives}
fi

if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 2 ]; then
  echo "Stage 2: unpack archives into ${rawdata_dir}"
  mkdir -p "${rawdata_dir}"
  for name in ${archives}; do
    unpack_archive "${download_dir}" "${name}" "${rawdata_dir}" "${unpack_dir[$name]}"
  done
fi

m4a_root=${rawdata_dir}/voxceleb2_m4a/dev/aac
wav_root=${rawdata_dir}/voxceleb2_wav/dev/aac

# convert_m4a M4A WAV: one file, written under a temporary name so that an
# interrupted run never leaves a truncated wav behind. A failed conversion removes its
# partial output and adds M4A to the file ${m4a_failed}.
convert_m4a() {
  [ -s "$2" ] && return 0
  mkdir -p "$(dirname "$2")"
  if ffmpeg -nostdin -v error -y -i "$1" -ac 1 -ar 16000 -acodec pcm_s16le -f wav "$2.tmp" &&
     mv "$2.tmp" "$2"; then
    return 0
  fi
  rm -f "$2.tmp"
  echo "$1" >> "${m4a_failed}"
  return 1
}
export -f convert_m4a

if [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ] && ! has_corpus vox2; then
  echo "Stage 3: nothing to convert (no vox2 in --corpora)"
elif [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ]; then
  echo "Stage 3: convert VoxCeleb2 m4a to wav (${nj} jobs)"
  if [ ! -d "${m4a_root}" ]; then
    echo "$0: ${m4a_root} not found; run stage 2 first" >&2
    exit 1
  fi
  # the marker holds the number of files converted; files unpacked since are converted too
  marker=${rawdata_dir}/.voxceleb2_wav.converted
  if up_to_date "${marker}" "${rawdata_dir}/.vox2_aac.zip.unpacked"; then
    echo "VoxCeleb2 already converted"
  else
    command -v ffmpeg >/dev/null || { echo "$0: ffmpeg is not installed" >&2; exit 1; }
    m4a_list=${rawdata_dir}/voxceleb2_m4a.list
    export m4a_failed=${rawdata_dir}/voxceleb2_m4a.failed
    rm -f "${marker}" "${m4a_failed}"
    find "${m4a_root}" -name '*.m4a' | LC_ALL=C sort > "${m4a_list}"
    num_m4a=$(count_lines "${m4a_list}")
    # one path a line (paths may hold spaces), two lines a conversion
    if ! awk -v src="${m4a_root}" -v dst="${wav_root}" \
        '{ wav = dst substr($0, length(src) + 1); sub(/\.m4a$/, ".wav", wav); print $0; print wav }' \
        "${m4a_list}" | xargs -d '\n' -P "${nj}" -n 2 bash -c 'convert_m4a "$0" "$1"'; then
      echo "$0: $(count_lines "${m4a_failed}") of ${num_m4a} conversions failed (the m4a files" \
           "are listed in ${m4a_failed}); run stage 3 again to retry them" >&2
      exit 1
    fi
    num_wav=$(find "${wav_root}" -name '*.wav' | wc -l)
    if [ "${num_wav}" -ne "${num_m4a}" ]; then
      echo "$0: ${num_m4a} m4a files but ${num_wav} wav files; run stage 3 again" >&2
      exit 1
    fi
    echo "${num_m4a}" > "${marker}"
    echo "converted ${num_m4a} files"
  fi
fi

# speech_set NAME DIR: wav.scp, utt2spk (speaker = first key component), spk2utt.
speech_set() {
  local dir=${data}/$1
  mkdir -p "${dir}"
  write_list "${dir}/wav.scp" scp_of "$2"
  write_list "${dir}/utt2spk" awk '{ split($1, part, "/"); print $1, part[1] }' "${dir}/wav.scp"
  write_list "${dir}/spk2utt" utt2spk_to_spk2utt "${dir}/utt2spk"
  echo "$1: $(count_lines "${dir}/wav.scp") utterances of $(count_lines "${dir}/spk2utt") speakers"
}

# vox_trials SET NAME URL: a VoxCeleb "label enroll test" list as the Kaldi trial list
# ${data}/SET/trials/NAME.kaldi.
vox_trials() {
  local dir=${data}/$1/trials raw
  shift
  mkdir -p "${dir}"
  raw=${dir}/$1.txt
  if [ ! -s "${raw}" ]; then
    fetch "$2" "${raw}"
  fi
  write_list "${dir}/$1.kaldi" awk -v f="${raw}" 'NF != 3 || ($1 != 0 && $1 != 1) {
         printf "%s:%d: expected \"0|1 enroll test\", got: %s\n", f, NR, $0 > "/dev/stderr"; bad = 1; exit }
       { print $2, $3, ($1 == 1 ? "target" : "nontarget") }
       END { exit bad }' "${raw}"
}

if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 4 ]; then
  echo "Stage 4: data lists"
  export LC_ALL=C
  noise_lists "${data}" "${rawdata_dir}"
  speech_sets="musan rirs"
  if has_corpus vox1 && ${vox1_split}; then
    for part in dev test; do
      if ! up_to_date "${data}/vox1_${part}/spk2utt" "${rawdata_dir}/.vox1_${part}_wav.zip.unpacked"; then
        speech_set "vox1_${part}" "${rawdata_dir}/voxceleb1/${part}"
      fi
    done
    vox_trials vox1_test vox1_O_cleaned "${trials_url}/veri_test2.txt"
    speech_sets="${speech_sets} vox1_dev vox1_test"
  elif has_corpus vox1; then
    if ! up_to_date "${data}/vox1/spk2utt" "${rawdata_dir}/.vox1_dev_wav.zip.unpacked" \
                    "${rawdata_dir}/.vox1_test_wav.zip.unpacked"; then
      speech_set vox1 "${rawdata_dir}/voxceleb1"
    fi
    vox_trials vox1 vox1_O_cleaned "${trials_url}/veri_test2.txt"
    vox_trials vox1 vox1_E_cleaned "${trials_url}/list_test_all2.txt"
    vox_trials vox1 vox1_H_cleaned "${trials_url}/list_test_hard2.txt"
    speech_sets="${speech_sets} vox1"
  fi
  if has_corpus vox2; then
    if ! up_to_date "${data}/vox2_dev/spk2utt" "${rawdata_dir}/.voxceleb2_wav.converted"; then
      speech_set vox2_dev "${wav_root}"
    fi
    speech_sets="${speech_sets} vox2_dev"
  fi
  for set in ${speech_sets}; do
    if [ ! -s "${data}/${set}/wav.scp" ]; then
      echo "$0: ${data}/${set}/wav.scp is empty: did stages 2-3 finish?" >&2
      exit 1
    fi
  done
  echo "musan: $(count_lines "${data}/musan/wav.scp") files, rirs: $(count_lines "${data}/rirs/wav.scp") files"
  # Full releases: VoxCeleb1 153516 utterances of 1251 speakers, VoxCeleb2 dev 1092009 of 5994.
  echo "Data lists are in ${data}"
fi
