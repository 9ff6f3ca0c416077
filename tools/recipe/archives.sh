#!/usr/bin/env bash
# Getting a corpus's archives for a recipe's data preparation: download (resumed),
# md5 check, joining of parts, unpacking; and the MUSAN and RIRS_NOISES lists every
# recipe makes of its noise archives. Source it after tools/recipe_helpers.sh:
#   . tools/recipe/archives.sh
# The marks a later run trusts, so that it neither hashes nor unpacks twice:
#   DOWNLOAD_DIR/NAME.md5_ok      NAME is whole: its md5 sum matched
#   RAWDATA_DIR/.NAME.unpacked    NAME was unpacked to the end
# Each function returns non-zero on failure, having said why on stderr.

# fetch URL FILE: download URL to FILE.part (continuing what an earlier try left
# there), then rename it FILE.
fetch() {
  if ! wget --continue --tries=3 -O "$2.part" "$1"; then
    echo "$0: downloading $1 failed; run again to continue it" >&2
    return 1
  fi
  mv "$2.part" "$2"
}

# verify_archive DIR NAME MD5: mark DIR/NAME verified when its md5 sum is MD5.
verify_archive() {
  local file=$1/$2 sum
  echo "checking the md5 sum of $2 ..."
  sum=$(md5sum "${file}" | awk '{print $1}') || return 1
  if [ "${sum}" != "$3" ]; then
    echo "$0: ${file} has md5 ${sum}, expected $3:" \
         "the file is incomplete or corrupt; delete it and run stage 1 again" >&2
    return 1
  fi
  touch "${file}.md5_ok"
}

# archive_obtainable DIR NAME URL [PART ...]: true when DIR/NAME is there or can be
# made: URL (where NAME or its parts are) is set, or every PART is in DIR already.
archive_obtainable() {
  local dir=$1 name=$2 url=$3 part
  shift 3
  if [ -f "${dir}/${name}" ] || [ -n "${url}" ]; then
    return 0
  fi
  [ $# -gt 0 ] || return 1
  for part in "$@"; do
    [ -f "${dir}/${part}" ] || return 1
  done
}

# get_archive DIR NAME MD5 URL [PART ...]: DIR/NAME present and verified. A missing
# NAME is downloaded from URL/NAME or, given PARTs, made of them in their order (each
# missing one downloaded from URL/PART); the parts are removed once NAME is verified.
get_archive() {
  local dir=$1 name=$2 md5=$3 url=$4 part
  shift 4
  if [ -f "${dir}/${name}.md5_ok" ] && [ -f "${dir}/${name}" ]; then
    echo "${name}: present and verified"
    return 0
  fi
  if [ ! -f "${dir}/${name}" ] && [ $# -eq 0 ]; then
    echo "downloading ${name} ..."
    fetch "${url}/${name}" "${dir}/${name}" || return 1
  elif [ ! -f "${dir}/${name}" ]; then
    for part in "$@"; do
      if [ ! -f "${dir}/${part}" ]; then
        echo "downloading ${part} ..."
        fetch "${url}/${part}" "${dir}/${part}" || return 1
      fi
    done
    echo "joining the parts of ${name} ..."
    (cd "${dir}" && cat "$@" > "${name}.part") || return 1
    mv "${dir}/${name}.part" "${dir}/${name}" || return 1
  fi
  if ! verify_archive "${dir}" "${name}" "${md5}"; then
    # joining the same parts again would make the same file
    [ $# -eq 0 ] || echo "$0: it was joined from ${*}: delete those in ${dir} too" >&2
    return 1
  fi
  for part in "$@"; do
    rm -f "${dir}/${part}"
  done
}

# download_archives DIR URL_OF MD5S PARTS HINT NAME ...: every NAME present and verified
# in DIR (get_archive). MD5S and PARTS name the caller's associative arrays of md5 sums
# and of parts (absent: NAME is one file); the function URL_OF NAME prints where NAME or
# its parts can be downloaded (nothing when nowhere). The archives neither there nor
# downloadable are named, followed by HINT, and the function fails.
download_archives() {
  local dir=$1 url_of=$2 hint=$5 name url missing=""
  local -n sums=$3 pieces=$4
  shift 5
  mkdir -p "${dir}" || return 1
  for name in "$@"; do
    url=$("${url_of}" "${name}")
    if archive_obtainable "${dir}" "${name}" "${url}" ${pieces[$name]:-}; then
      get_archive "${dir}" "${name}" "${sums[$name]}" "${url}" ${pieces[$name]:-} || return 1
    else
      missing="${missing} ${name}"
    fi
  done
  if [ -n "${missing}" ]; then
    echo "$0: missing archives:${missing}." >&2
    echo "${hint}" >&2
    return 1
  fi
}

# unpack_archive DIR NAME RAWDATA_DIR SUBDIR [MADE]: unpack the verified DIR/NAME
# (.tar.gz or .zip) into RAWDATA_DIR/SUBDIR, unless RAWDATA_DIR/.NAME.unpacked says it
# was and the folder MADE (relative to RAWDATA_DIR/SUBDIR), when given, is still there.
unpack_archive() {
  local dir=$1 name=$2 marker=$3/.$2.unpacked target=$3/$4 made=${5:-}
  if [ -f "${marker}" ] && { [ -z "${made}" ] || [ -d "${target}/${made}" ]; }; then
    echo "${name}: already unpacked"
    return 0
  fi
  if [ -f "${marker}" ]; then
    echo "${name} was unpacked, but ${target}/${made} is gone: unpacking it again"
    rm -f "${marker}"
  fi
  if [ ! -f "${dir}/${name}.md5_ok" ]; then
    echo "$0: ${dir}/${name} is missing or unverified; run stage 1 first" >&2
    return 1
  fi
  mkdir -p "${target}" || return 1
  echo "unpacking ${name} into ${target} ..."
  case ${name} in
    *.tar.gz) tar -xzf "${dir}/${name}" -C "${target}" ;;
    *.zip) unzip -q -o "${dir}/${name}" -d "${target}" ;;
    *) echo "$0: cannot unpack ${name}: not a .tar.gz or .zip" >&2; false ;;
  esac || return 1
  touch "${marker}"
}

# noise_lists DATA RAWDATA_DIR: DATA/musan/wav.scp and DATA/rirs/wav.scp (RIRS_NOISES'
# simulated RIRs) of the unpacked musan.tar.gz and rirs_noises.zip, keyed by the last
# three path components; each is made again only when its archive was unpacked since.
noise_lists() {
  local data=$1 raw=$2 dir
  for dir in "${raw}/musan" "${raw}/RIRS_NOISES/simulated_rirs"; do
    if [ ! -d "${dir}" ]; then
      echo "$0: ${dir} not found; unpack musan.tar.gz and rirs_noises.zip (stage 2) first" >&2
      return 1
    fi
  done
  mkdir -p "${data}/musan" "${data}/rirs"
  if ! up_to_date "${data}/musan/wav.scp" "${raw}/.musan.tar.gz.unpacked"; then
    write_list "${data}/musan/wav.scp" scp_of "${raw}/musan" || return 1
  fi
  if ! up_to_date "${data}/rirs/wav.scp" "${raw}/.rirs_noises.zip.unpacked"; then
    write_list "${data}/rirs/wav.scp" scp_of "${raw}/RIRS_NOISES/simulated_rirs" || return 1
  fi
}
