#!/usr/bin/env bash
# Source this from a recipe script after setting defaults:
#   stage=-1; exp_dir=exp/x
#   . tools/parse_options.sh
# Every "--name value" (or "--name=value") on the command line overwrites the
# shell variable "name" ("--stop-stage" and "--stop_stage" both set stop_stage).
# An option naming a variable the script did not define is an error, so a typo
# never runs a long job with a default. So is a word that is no option's value (the
# recipes take no positional arguments): a value with spaces given unquoted
# ("--trials a b") would otherwise lose its tail without a word.

while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h)
      # the variables set before this file is sourced are the options; later
      # assignments are the script's own and would be rejected as options
      echo "Options of $0 (defaults as set in the script):" >&2
      awk '/^[[:space:]]*(\.|source)[[:space:]].*parse_options\.sh/ {exit}
           /^[A-Za-z_][A-Za-z0-9_]*=/ {print "  --" $0}' "$0" >&2
      exit 0
      ;;
    --*=*)
      __ws_name="${1%%=*}"; __ws_value="${1#*=}"; shift
      ;;
    --*)
      __ws_name="$1"
      if [ $# -lt 2 ]; then
        echo "$0: option $1 needs a value" >&2; exit 1
      fi
      __ws_value="$2"; shift 2
      ;;
    *)
      echo "$0: unexpected argument '$1': options are given as --name value" \
           "(quote a value that holds spaces: --trials \"a b\")" >&2
      exit 1
      ;;
  esac
  __ws_name="${__ws_name#--}"
  __ws_name="${__ws_name//-/_}"
  if ! [[ "$__ws_name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then
    echo "$0: invalid option name --$__ws_name" >&2; exit 1
  fi
  if [ -z "${!__ws_name+set}" ]; then
    echo "$0: unknown option --$__ws_name (no such variable in the script)" >&2; exit 1
  fi
  printf -v "$__ws_name" '%s' "$__ws_value"
done
# stages are whole numbers, and a range that runs nothing is a mistake, not a success
for __ws_name in stage stop_stage; do
  if [ -n "${!__ws_name+set}" ] && ! [[ "${!__ws_name}" =~ ^-?[0-9]+$ ]]; then
    echo "$0: --${__ws_name} must be a whole number, got '${!__ws_name}'" >&2; exit 1
  fi
done
if [ -n "${stage+set}" ] && [ -n "${stop_stage+set}" ] && [ "${stage}" -gt "${stop_stage}" ]; then
  echo "$0: --stage ${stage} comes after --stop_stage ${stop_stage}: no stage would run" >&2
  exit 1
fi
unset __ws_name __ws_value

# require_stages FIRST LAST: called by a script after this file, whose stages are FIRST to
# LAST; a --stage/--stop_stage range that selects none of them stops it (bash run.sh
# without flags, or stages another recipe has, ran nothing and exited 0)
require_stages() {
  if [ "${stage}" -gt "$2" ] || [ "${stop_stage}" -lt "$1" ]; then
    echo "$0: its stages are $1 to $2, and --stage ${stage} --stop_stage ${stop_stage}" \
         "selects none of them" >&2
    exit 1
  fi
}
