#!/usr/bin/env bash
# Small shell functions shared by the recipe scripts (source it after path.sh):
#   . tools/recipe_helpers.sh
# They decide what a re-run may skip, so each is strict about what "done" means.

# up_to_date OUT [IN ...]: true when OUT is a non-empty file that no existing IN
# is newer than (so a retrained model or new embeddings invalidate it).
up_to_date() {
  local out=$1 input
  shift
  [ -s "$out" ] || return 1
  for input in "$@"; do
    if [ -e "$input" ] && [ "$input" -nt "$out" ]; then
      return 1
    fi
  done
  return 0
}

# made_with OUT SETTINGS: true when OUT was made with SETTINGS, as record_settings
# noted beside it (OUT.settings). For outputs whose name does not carry every option
# that shapes them: without it a newer output of other options passes up_to_date.
# A note of other settings is removed, so an OUT remade but cut short before its
# record_settings is never taken for one of the settings it replaced.
made_with() {
  if [ -f "$1.settings" ] && [ "$(cat "$1.settings")" == "$2" ]; then
    return 0
  fi
  rm -f "$1.settings"
  return 1
}

# record_settings OUT SETTINGS: note that OUT was just made with SETTINGS.
record_settings() {
  printf '%s\n' "$2" > "$1.settings.tmp"
  mv -f "$1.settings.tmp" "$1.settings"
}

# latest_epoch DIR: the largest N of DIR/model_N.pt (empty when there is none).
latest_epoch() {
  [ -d "$1" ] || return 0
  ls "$1" | sed -n 's/^model_\([0-9][0-9]*\)\.pt$/\1/p' | sort -n | tail -n 1
}

# config_value YAML KEY: a top-level value of a YAML config (empty if absent).
config_value() {
  python -c 'import sys, yaml
value = (yaml.safe_load(open(sys.argv[1])) or {}).get(sys.argv[2])
print("" if value is None else value)' "$1" "$2"
}

# utt2spk_to_spk2utt UTT2SPK > SPK2UTT: speakers sorted, utterances in input order.
utt2spk_to_spk2utt() {
  awk '{ if (!($2 in utts)) order[n++] = $2; utts[$2] = utts[$2] " " $1 }
       END { for (i = 0; i < n; i++) print order[i] utts[order[i]] }' "$1" | LC_ALL=C sort
}

# count_lines FILE: number of lines (0 when the file is missing).
count_lines() {
  if [ -f "$1" ]; then wc -l < "$1" | tr -d ' '; else echo 0; fi
}


# report_metrics RESULT_FILE SCORE_FILE...: EER/minDCF (p_target 0.01) of each score
# file, printed and saved to RESULT_FILE, then their DET curves.
report_metrics() {
  local result=$1; shift
  python -m wespeaker_py.bin.compute_metrics --p_target 0.01 --c_fa 1 --c_miss 1 \
    "$@" | tee "${result}"
  python -m wespeaker_py.bin.compute_det "$@"
}
