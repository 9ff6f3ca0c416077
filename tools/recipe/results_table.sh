#!/usr/bin/env bash
# The results table a recipe's scoring stages leave (sourced, after path.sh):
#
#   . tools/recipe/results_table.sh
#   write_results_table TRIALS EXP_DIR [MORE_EXP_DIR ...]
#
# writes EXP_DIR/results.md with tools/results_table.py: model, params, scoring back-end,
# then EER (%) and minDCF on each trial list of TRIALS (the recipe's --trials, names
# separated by spaces), one row for every score file of those lists in EXP_DIR/scores
# (cosine, AS-Norm/S-Norm, QMF, PLDA: whichever exist), then the rows of each
# MORE_EXP_DIR with a config.yaml and a score file of those lists (the large-margin
# fine-tuning of EXP_DIR; one not scored yet, or still scoring, is left out, with a
# warning once it has a scores/ folder). For each
# trial list it also draws the DET curves of all those back-ends (EXP_DIR/det_<list>.png)
# and the first one's score histogram (EXP_DIR/hist_<list>.png). The recipes call it
# after their scoring stages, so the table lists every back-end scored so far, by this
# run or an earlier one; a row scored before the last extraction (stale), rows of one
# list over different numbers of trials and a MORE_EXP_DIR not fine-tuned from
# EXP_DIR's current avg_model.pt are marked, with a footnote and a warning.

write_results_table() {
  local trials=$1 exp_dir=$2 more list
  local exp_dirs=("${exp_dir}")
  shift 2
  for more in "$@"; do
    if [ -d "${more}/scores" ]; then
      exp_dirs+=("${more}")   # left out by results_table.py while it has no score file
    fi
  done
  python tools/results_table.py --trials "${trials}" --output "${exp_dir}/results.md" \
    --det_dir "${exp_dir}" "${exp_dirs[@]}"
  echo "Table: ${exp_dir}/results.md"
  for list in ${trials}; do
    echo "DET plot: ${exp_dir}/det_${list}.png; score histogram: ${exp_dir}/hist_${list}.png"
  done
}
