#!/usr/bin/env bash
# The training stage of every recipe (sourced, after path.sh and recipe_helpers.sh):
#
#   . tools/recipe/train_stage.sh
#   train_stage TRAIN_DIR [more trainer options ...]
#
# trains ${config} in ${exp_dir} on TRAIN_DIR/${data_type}.list and
# TRAIN_DIR/utt2spk, with ${data}/rirs/wav.scp and ${data}/musan/wav.scp as
# augmentation data. It reads these variables of the recipe:
#   config exp_dir data data_type gpus num_avg checkpoint
#   num_epochs      epochs of the run (empty: the config's num_epochs); passed on when set
#   config_flag     the recipe's option that sets ${config}, named in errors (default --config)
#   num_epochs_flag the recipe's option that sets ${num_epochs}, named in errors (unset:
#                   --num_epochs; empty: the recipe has none)
#   num_procs       processes on this node (empty: one per entry of ${gpus})
#   num_nodes HOST_NODE_ADDR job_id   several machines: torchrun's c10d rendezvous
#
# Launcher: one process on one node is a plain python process; more processes on
# one node run under torchrun --standalone; several nodes under torchrun with the
# rendezvous at ${HOST_NODE_ADDR} (run the same command on every node).
# Stopping: torchrun passes SIGTERM (and here SIGUSR1) on to the ranks, which finish
# their batch, write models/interrupted.pt and exit; it kills them after its shutdown
# timeout, given here as TORCH_ELASTIC_SHUTDOWN_TIMEOUT (default 300 s, see
# torchrun_environment). torchrun versions without those settings ignore the variables.
# Start: from ${checkpoint} when it is given and is not the run's own
# models/model_0.pt (the starting point a fine-tuning step is given, see
# start_from in recipe_helpers.sh), the first time it is given: the run notes it
# (models/start.settings), so the same command after a crash resumes from the newest
# models/model_N.pt written since (none yet: from ${checkpoint} again) instead of going
# back to it. Otherwise resume from the newest
# models/model_N.pt of ${exp_dir}, else from ${checkpoint}.
# Finished: the one rule is that the trainer's models/final_model.pt names the
# checkpoint of the run's last epoch (model_${num_epochs}.pt); a run asked for more
# epochs than an earlier one finished resumes from there. A finished run notes the
# settings it was trained with (models/final_model.pt.settings: the config's contents
# as a digest, the seed, the trainer options and data_type); a later run of the same
# experiment with other settings stops with an error naming them instead of taking
# the old model as its own (removing the note accepts the new settings).

# training_finished MODEL_DIR NUM_EPOCHS: true when MODEL_DIR/final_model.pt names
# model_NUM_EPOCHS.pt and that checkpoint exists.
training_finished() {
  local link=$1/final_model.pt
  [ -L "${link}" ] && [ -s "${link}" ] && [ "$(readlink "${link}")" == "model_$2.pt" ]
}

# count_gpus "[0,1,2]" -> 3; "[]" or "" -> 1 (one process on the CPU)
count_gpus() {
  local ids
  ids=$(echo "$1" | tr -d '[] ' | awk -F ',' '{ n = 0; for (i = 1; i <= NF; i++) if ($i != "") n++; print n }')
  if [ -z "${ids}" ] || [ "${ids}" -eq 0 ]; then echo 1; else echo "${ids}"; fi
}

# train_settings TRAIN_DIR [trainer options ...]: the settings a finished run notes.
train_settings() {
  local train_dir=$1 seed= arg previous=
  shift
  for arg in "$@"; do  # the last --seed given wins, as in the trainer
    case "${previous}" in --seed) seed=${arg} ;; esac
    case "${arg}" in --seed=*) seed=${arg#--seed=} ;; esac
    previous=${arg}
  done
  # the config as parsed (comments and layout do not count) and its seed
  python -c 'import hashlib, json, sys, yaml
config = yaml.safe_load(open(sys.argv[1])) or {}
text = json.dumps(config, sort_keys=True, default=str)
print("config_sha256=" + hashlib.sha256(text.encode()).hexdigest())
print("seed=" + (sys.argv[2] or str(config.get("seed", ""))))' "${config}" "${seed}" || return 1
  echo "data_type=${data_type}"
  echo "train_args=$*"
}

# torchrun_environment: the variables torchrun reads that let ranks stop gracefully, one
# NAME=VALUE a line; a value already in the environment is kept.
#   TORCH_ELASTIC_SHUTDOWN_TIMEOUT  seconds between passing a stop signal on to the ranks
#     and killing them (torchrun's own default is 30): room for the batch under way, the
#     gathering of every rank's state and writing interrupted.pt, several GB for the large
#     SSL models on a network disk. torchrun returns as soon as the ranks exit, so a long
#     limit only delays killing ranks that hang.
#   PET_SIGNALS_TO_HANDLE  (torchrun's --signals-to-handle) SIGUSR1 too: torchrun passes it on
#     and waits for the ranks, rather than die of it, when a job script signals every
#     process of the training, torchrun included (docs/training.md, SLURM)
torchrun_environment() {
  echo "TORCH_ELASTIC_SHUTDOWN_TIMEOUT=${TORCH_ELASTIC_SHUTDOWN_TIMEOUT:-300}"
  echo "PET_SIGNALS_TO_HANDLE=${PET_SIGNALS_TO_HANDLE:-SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1}"
}

train_stage() {
  local train_dir=$1
  shift
  local epochs config_option=${config_flag:---config} epochs_option=${num_epochs_flag---num_epochs}
  epochs=${num_epochs:-$(config_value "${config}" num_epochs "${config_option}")} || return 1
  if [ -z "${epochs}" ]; then
    local given=${epochs_option:+ (and no ${epochs_option} was given)}
    echo "$0: ${config} (${config_option}) sets no num_epochs${given}" >&2
    return 1
  fi
  local explicit=false
  if [ -n "${checkpoint}" ] &&
     [ "$(realpath -m "${checkpoint}")" != "$(realpath -m "${exp_dir}/models/model_0.pt")" ]; then
    explicit=true
  fi
  local settings
  settings=$(train_settings "${train_dir}" "$@") || return 1
  if training_finished "${exp_dir}/models" "${epochs}"; then
    local note=${exp_dir}/models/final_model.pt.settings
    if [ ! -f "${note}" ]; then
      # a run finished before runs noted their settings: these are taken as its own
      record_settings "${exp_dir}/models/final_model.pt" "${settings}"
    elif [ "$(settings_note "${exp_dir}/models/final_model.pt")" != "${settings}" ]; then
      echo "$0: ${exp_dir} finished training with other settings than this run's:" >&2
      { diff <(cat "${note}") <(printf '%s\n' "${settings}") || true; } |
        sed -n 's/^< /  then: /p; s/^> /  now:  /p' >&2
      echo "Give another --exp_dir, or remove ${exp_dir} to train it again with these" \
           "settings; if the difference does not change the model (loader options, a" \
           "moved weights file), accept it: rm ${note}" >&2
      return 1
    fi
    echo "${exp_dir}/models/final_model.pt is model_${epochs}.pt: training is finished"
    # (a checkpoint of the run's own folder is where a second step went on from)
    if ${explicit} && [ "$(realpath -m "$(dirname "${checkpoint}")")" != \
                        "$(realpath -m "${exp_dir}/models")" ]; then
      echo "(--checkpoint ${checkpoint} is not used: remove ${exp_dir} or give another" \
           "--exp_dir to train from it)"
    fi
    return 0
  fi
  local start_checkpoint=${checkpoint} last_epoch start_note=${exp_dir}/models/start
  local started="checkpoint=$(realpath -m "${checkpoint:-none}")"
  last_epoch=$(latest_epoch "${exp_dir}/models")
  if ${explicit} && [ "$(settings_note "${start_note}")" == "${started}" ]; then
    # this run already started from it: resume from what it has written since, if any
    # (older checkpoints are those it was rolled back from)
    last_epoch=$(latest_epoch "${exp_dir}/models" "${start_note}.settings")
    if [ -n "${last_epoch}" ]; then explicit=false; fi
  fi
  if ${explicit}; then
    # an explicit --checkpoint wins over the run's own checkpoints, once
    if [ -n "${last_epoch}" ] && [ "$(realpath -m "${checkpoint}")" == \
                                    "$(realpath -m "${exp_dir}/models/model_${last_epoch}.pt")" ]; then
      echo "continuing from ${checkpoint}"
    elif [ -n "${last_epoch}" ]; then
      echo "starting from --checkpoint ${checkpoint}, as asked, not resuming from" \
           "${exp_dir}/models/model_${last_epoch}.pt"
    else
      echo "starting from --checkpoint ${checkpoint}"
    fi
    mkdir -p "${exp_dir}/models"
    record_settings "${start_note}" "${started}"
  elif [ -n "${last_epoch}" ]; then
    start_checkpoint=${exp_dir}/models/model_${last_epoch}.pt
    echo "resuming from ${start_checkpoint}"
  fi
  local procs=${num_procs:-$(count_gpus "${gpus}")}
  local nodes=${num_nodes:-1}
  local launcher=(python)
  if [ "${nodes}" -gt 1 ]; then
    launcher=(torchrun --nnodes="${nodes}" --nproc_per_node="${procs}" --rdzv_id="${job_id}"
              --rdzv_backend=c10d --rdzv_endpoint="${HOST_NODE_ADDR}")
  elif [ "${procs}" -gt 1 ]; then
    launcher=(torchrun --standalone --nnodes=1 --nproc_per_node="${procs}")
  fi
  if [ "${launcher[0]}" == torchrun ]; then
    local variables
    mapfile -t variables < <(torchrun_environment)
    launcher=(env "${variables[@]}" "${launcher[@]}")
  fi
  echo "$0: ${nodes} node(s), ${procs} process(es) per node: ${launcher[*]}"
  "${launcher[@]}" -m wespeaker_py.bin.train --config "${config}" \
    --exp_dir "${exp_dir}" \
    --gpus "${gpus}" \
    --num_avg "${num_avg}" \
    ${num_epochs:+--num_epochs "${num_epochs}"} \
    --data_type "${data_type}" \
    --train_data "${train_dir}/${data_type}.list" \
    --train_label "${train_dir}/utt2spk" \
    --reverb_data "${data}/rirs/wav.scp" \
    --noise_data "${data}/musan/wav.scp" \
    ${start_checkpoint:+--checkpoint "${start_checkpoint}"} \
    "$@" ||
    { echo "$0: training ${config} in ${exp_dir} failed (see the error above)" >&2; return 1; }
  if training_finished "${exp_dir}/models" "${epochs}"; then
    record_settings "${exp_dir}/models/final_model.pt" "${settings}"
  fi
}

# set_aside_step EXP_DIR EPOCHS TAG STEP: before a second training step continues a finished
# step in the same folder (WeSpeaker's Whisper-PMFA: a frozen step, then the whole
# model from its last checkpoint), keep the first step's results under their own
# names: models/final_model.pt (naming model_EPOCHS.pt) and its settings note become
# models/final_model_TAG.pt, config.yaml becomes config_TAG.yaml. Done once; fails,
# naming STEP (the first step, in the recipe's words), when that has not finished.
set_aside_step() {
  local exp_dir=$1 epochs=$2 tag=$3 step=$4 models=$1/models
  if step_set_aside "${exp_dir}" "${tag}"; then
    return 0
  fi
  if ! training_finished "${models}" "${epochs}"; then
    echo "$0: ${models}/final_model.pt does not name model_${epochs}.pt: finish ${step}" \
         "first" >&2
    return 1
  fi
  if [ -f "${models}/final_model.pt.settings" ]; then
    mv -f "${models}/final_model.pt.settings" "${models}/final_model_${tag}.pt.settings"
  fi
  if [ -f "${exp_dir}/config.yaml" ]; then
    mv -f "${exp_dir}/config.yaml" "${exp_dir}/config_${tag}.yaml"
  fi
  mv -f "${models}/final_model.pt" "${models}/final_model_${tag}.pt"
  echo "${exp_dir}: the finished step's results are kept as models/final_model_${tag}.pt" \
       "and config_${tag}.yaml"
}

# step_set_aside EXP_DIR TAG: true when set_aside_step EXP_DIR ... TAG was done.
step_set_aside() {
  [ -L "$1/models/final_model_$2.pt" ] || [ -e "$1/models/final_model_$2.pt" ]
}
