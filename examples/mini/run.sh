#!/usr/bin/env bash
# The VoxCeleb v2 recipe in miniature: the shared stage scripts (tools/recipe/) and Python modules
# on a small corpus, offline, on the CPU (a GPU is used when there is one).
# The default corpus ships in data/librispeech_tc100 (LibriSpeech speakers,
# CC BY 4.0); --data_dir takes any Kaldi-style directory with wav.scp, utt2spk
# and trials (e.g. ../../../shared/data/fsdd, 8 kHz: resampled to 16 kHz).
#
#   bash run.sh                                  # everything, stages 1-12
#   bash run.sh --config conf/resnet34.yaml      # a narrow ResNet34 instead of ECAPA-TDNN
#   bash run.sh --data_dir ../../../shared/data/fsdd --epochs 3
#   bash run.sh --stage 5 --stop_stage 11        # score again and write results.md (stage 11)
#
# Stages (v2's numbers where they exist; each skips what an earlier run finished):
#   1  data sets: train (train_spk, or the utterances in no trial) less a third of
#      its speakers held out as back-end data (mean, cohort, QMF, PLDA), test (the
#      trial utterances), synthetic noise/music/babble and room responses
#   2  raw or shard data lists
#   3  train (resumes from the newest checkpoint of ${exp_dir}) tools/recipe/train_stage.sh
#   4  average the last --num_avg checkpoints up to epoch --epochs (a run without that
#      checkpoint, unfinished, is refused: --epochs N averages up to epoch N), extract
#      back-end embeddings (one random num_frms chunk per utterance; --backend_chunks
#      false: whole) and test embeddings (whole utterances)  tools/recipe/extract_sets.sh
#   5  cosine scoring (minus the back-end mean)   tools/recipe/score.sh
#   6  AS-Norm against the back-end speakers      tools/recipe/score_norm.sh
#   7  QMF calibration on back-end trials         tools/recipe/score_calibration.sh
#   8  TorchScript export
#   9  large-margin fine-tuning when --lm_config is given: 3-8 and 10 again in ${exp_dir}-LM
#  10  PLDA (--lda_dim N: an LDA to N dimensions first)  tools/recipe/score_plda.sh
#  11  results table (model, params, scoring, EER %, minDCF) and DET plot; only this
#      stage writes it, so a rescore without it leaves the old results.md
#  12  diarization demo: a window LDA learnt from the training and back-end speakers
#      (wespeaker-py window-lda), then synthetic conversations of the test speakers
#      (read once: no stretch of audio heard twice) diarized with the trained model,
#      DER/JER table, a time-line plot per conversation and the clustering methods
#      compared (../diarization/run.sh stages 1-4)
#
# Stage numbers are called from elsewhere: stage 9 runs stages 3-10 again in
# ${exp_dir}-LM, and the docs and bench/ call --stop_stage 11 and stage 12 by number. So
# a new scoring back-end goes at the end, as stage 13: update require_stages, stop_stage
# and the list above (stage 11 then no longer writes results.md alone), give stage 9 a
# second call, --stage 13 --stop_stage 13 with the same flags (a range 3-13 would also
# run stages 11 and 12 for the -LM model), and end the stage with write_results_table,
# as stage 11 does: a full run writes results.md at stage 11, before stage 13 has scored.
# Its score files, scores/<trials>.<name>score, are listed by tools/results_table.py
# (see docs/extending.md).

. ./path.sh || exit 1
# A recipe run has the machine to itself: compute with every core (the commands'
# own default, half the cores, is for shared machines). OMP_NUM_THREADS set by the
# caller wins.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc)}"

stage=1
stop_stage=12

data_dir=data/librispeech_tc100
data=          # prepared sets; default data/prepared/<corpus name>
exp_dir=       # default exp/<config name>-<corpus name>, -seed<N> appended with --seed N
config=conf/ecapa_tdnn.yaml
lm_config=     # e.g. conf/resnet34_lm.yaml; empty: no stage 9
epochs=        # training epochs and the last epoch stage 4 averages up to; empty: the config's num_epochs
num_avg=       # checkpoints averaged; empty: the config's num_avg
checkpoint=    # start training from this checkpoint
seed=          # training seed; empty: the config's seed
data_type=raw  # raw/shard
num_procs=1    # training processes (more than 1: torchrun, gloo on the CPU)
gpus="[0]"     # extraction device(s); the CPU when CUDA is absent
nj=1           # extraction jobs
trials=trials
score_norm_method=asnorm  # asnorm/snorm
top_n=10       # AS-Norm cohort size (the scoring lowers it to the back-end speakers)
diar_conversations=4  # stage 12: read-once synthetic conversations of up to 60 s, 2-3 speakers
backend_chunks=true  # back-end set embedded from random num_frms chunks; false: whole utterances
chunk_seed=42
lda_dim=       # stage 10: LDA to this dimension before PLDA (below the back-end speakers); empty: none

. tools/parse_options.sh || exit 1
require_stages 1 12
. tools/recipe_helpers.sh
. tools/recipe/train_stage.sh
. tools/recipe/results_table.sh
set -eo pipefail

corpus=$(basename "$(realpath "${data_dir}")")
data=${data:-data/prepared/${corpus}}
config_name=$(basename "${config}" .yaml)
exp_dir=${exp_dir:-exp/${config_name}-${corpus}${seed:+-seed${seed}}}
epochs=${epochs:-$(config_value "${config}" num_epochs)}
num_avg=${num_avg:-$(config_value "${config}" num_avg)}
num_avg=${num_avg:-1}
if ! [[ "${epochs}" =~ ^[0-9]+$ ]] || [ "${epochs}" -lt 1 ]; then
  echo "$0: --epochs (the config's num_epochs) must be a whole number of at least 1," \
       "got '${epochs}'" >&2
  exit 1
fi
[ "${num_avg}" -gt "${epochs}" ] && num_avg=${epochs}
calibration_trial=backend_cali.kaldi
# back-end data: held-out training speakers (see local/prepare_data.sh)
sets="--train_set backend --eval_set test"

if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ]; then
  echo "Stage 1: prepare ${data} from ${data_dir}"
  local/prepare_data.sh --data_dir "${data_dir}" --data "${data}" \
    --trials_name "${trials}" --calibration_trial "${calibration_trial}"
fi

if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 2 ]; then
  echo "Stage 2: ${data_type} lists"
  tools/recipe/make_lists.sh --data "${data}" --data_type "${data_type}" \
    --num_utts_per_shard 100 --num_threads 2 --sets "train backend test"
fi

if [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ]; then
  echo "Stage 3: train ${config} for ${epochs} epochs in ${exp_dir}"
  num_epochs=${epochs} train_stage "${data}/train" ${seed:+--seed "${seed}"}
fi

avg_model=${exp_dir}/models/avg_model.pt
if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 4 ]; then
  echo "Stage 4: average ${num_avg} checkpoints, extract embeddings"
  average_stage "${avg_model}" "${num_avg}" "${epochs}" --epochs  # again when either changes
  tools/recipe/extract_sets.sh --exp_dir "${exp_dir}" --model_path "${avg_model}" \
    --nj "${nj}" --gpus "${gpus}" --data_type "${data_type}" --data "${data}" \
    --num_workers 1 --backend_chunks "${backend_chunks}" --chunk_seed "${chunk_seed}" ${sets}
fi

if [ ${stage} -le 5 ] && [ ${stop_stage} -ge 5 ]; then
  echo "Stage 5: cosine scoring"
  tools/recipe/score.sh --stage 1 --stop-stage 2 --data "${data}" --exp_dir "${exp_dir}" \
    --trials "${trials}" ${sets}
fi

if [ ${stage} -le 6 ] && [ ${stop_stage} -ge 6 ]; then
  echo "Stage 6: score normalisation (${score_norm_method})"
  tools/recipe/score_norm.sh --stage 1 --stop-stage 3 --score_norm_method "${score_norm_method}" \
    --cohort_set backend --top_n "${top_n}" --data "${data}" --exp_dir "${exp_dir}" \
    --trials "${trials}" ${sets}
fi

if [ ${stage} -le 7 ] && [ ${stop_stage} -ge 7 ]; then
  echo "Stage 7: QMF score calibration"
  tools/recipe/score_calibration.sh --stage 1 --stop-stage 5 --score_norm_method "${score_norm_method}" \
    --calibration_trial "${calibration_trial}" --cohort_set backend --top_n "${top_n}" \
    --data "${data}" --exp_dir "${exp_dir}" --trials "${trials}" ${sets}
fi

if [ ${stage} -le 8 ] && [ ${stop_stage} -ge 8 ]; then
  echo "Stage 8: export"
  tools/recipe/export_model.sh --exp_dir "${exp_dir}" --checkpoint "${avg_model}" --onnx false
fi

lm_exp_dir=${exp_dir}-LM
if [ ${stage} -le 9 ] && [ ${stop_stage} -ge 9 ]; then
  if [ -z "${lm_config}" ]; then
    echo "Stage 9: no --lm_config, no large-margin fine-tuning"
  else
    echo "Stage 9: large-margin fine-tuning with ${lm_config} in ${lm_exp_dir}"
    # The averaged model of the first run initialises LM training (as epoch 0).
    start_from "${avg_model}" "${lm_exp_dir}"
    bash "$0" --stage 3 --stop_stage 10 --config "${lm_config}" --exp_dir "${lm_exp_dir}" \
      --data_dir "${data_dir}" --data "${data}" --data_type "${data_type}" \
      --checkpoint "${lm_exp_dir}/models/model_0.pt" --num_procs "${num_procs}" \
      --gpus "${gpus}" --nj "${nj}" --trials "${trials}" \
      --score_norm_method "${score_norm_method}" --top_n "${top_n}" \
      --backend_chunks "${backend_chunks}" --chunk_seed "${chunk_seed}" --seed "${seed}" \
      --lda_dim "${lda_dim}"
  fi
fi

if [ ${stage} -le 10 ] && [ ${stop_stage} -ge 10 ]; then
  echo "Stage 10: PLDA scoring"
  tools/recipe/score_plda.sh --stage 1 --stop-stage 3 --data "${data}" --exp_dir "${exp_dir}" \
    --trials "${trials}" ${lda_dim:+--lda_dim "${lda_dim}"} ${sets}
fi

if [ ${stage} -le 11 ] && [ ${stop_stage} -ge 11 ]; then
  echo "Stage 11: results"
  write_results_table "${trials}" "${exp_dir}" ${lm_config:+"${lm_exp_dir}"}
  # training draws it after each epoch; it is missing when drawing failed (see train.log)
  if [ -f "${exp_dir}/train_curves.png" ]; then
    echo "Training curves: ${exp_dir}/train_curves.png"
  fi
fi

if [ ${stage} -le 12 ] && [ ${stop_stage} -ge 12 ]; then
  echo "Stage 12: diarization of ${diar_conversations} synthetic conversations of the test speakers"
  # resolve every path before the cd below: they are relative to this recipe
  model_dir=$(realpath "${exp_dir}")
  test_dir=$(realpath "${data}/test")
  diar_exp=${model_dir}/diarization
  if up_to_date "${model_dir}/window_lda.npz" "${model_dir}/models/avg_model.pt"; then
    echo "${model_dir}/window_lda.npz is up to date"
  else
    python -m wespeaker_py.cli.main window-lda --model "${model_dir}" \
      --data "${data}/train" "${data}/backend"
  fi
  (cd ../diarization && bash run.sh --model "${model_dir}" \
    --corpus_dir "${test_dir}" --speakers "" \
    --num_conversations "${diar_conversations}" --conversation_seconds 60 --read_once true \
    --min_conv_speakers 2 --max_conv_speakers 3 \
    --data "${diar_exp}/data" --exp "${diar_exp}" --stop_stage 4)
  cat "${diar_exp}/der.md" "${diar_exp}/methods.md"
fi
