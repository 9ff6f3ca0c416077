"""The recipes: script syntax and options, data preparation and its skip logic, the
results table, and the mini recipe end to end (2 epochs) against an untrained baseline."""
import glob
import io
import json
import os
import pathlib
import shutil
import subprocess
import tarfile

import numpy as np
import pytest
import soundfile as sf
import yaml
import torch

from recipe_helpers import (CNCELEB_DIR, MINI_DIR, REPO, V2_DIR, WHISPER_DIR, fbank_stats_baseline,
                            install_fake_ffmpeg, make_fake_voxceleb_data, make_kaldi_dir,
                            mtimes, read_table, run_script, write_tone)
from scoring_helpers import parse_table
from wespeaker_py.scoring.plda import TwoCovPLDA
from wespeaker_py.scoring.report import find_score_files, format_table, write_report

RECIPE_SCRIPTS = sorted(
    glob.glob(os.path.join(V2_DIR, "*.sh")) + glob.glob(os.path.join(V2_DIR, "local", "*.sh"))
    + glob.glob(os.path.join(MINI_DIR, "*.sh")) + glob.glob(os.path.join(MINI_DIR, "local", "*.sh"))
    + glob.glob(os.path.join(WHISPER_DIR, "*.sh"))
    + glob.glob(os.path.join(WHISPER_DIR, "local", "*.sh"))
    + glob.glob(os.path.join(CNCELEB_DIR, "*.sh"))
    + glob.glob(os.path.join(CNCELEB_DIR, "local", "*.sh"))
    + glob.glob(os.path.join(REPO, "examples", "diarization", "*.sh"))
    + glob.glob(os.path.join(REPO, "examples", "diarization", "local", "*.sh"))
    + glob.glob(os.path.join(REPO, "examples", "finetune", "*.sh"))
    + glob.glob(os.path.join(REPO, "tools", "*.sh"))
    + glob.glob(os.path.join(REPO, "tools", "recipe", "*.sh")))
RECIPES = [(V2_DIR, "run.sh"), (V2_DIR, "run_wavlm.sh"), (V2_DIR, "run_w2v.sh"),
           (WHISPER_DIR, "run.sh"), (CNCELEB_DIR, "run.sh"), (MINI_DIR, "run.sh")]
# WeSpeaker's v2 local/ scripts -> the shared stage script of the same flags
WESPEAKER_LOCAL = {"extract_vox.sh": "extract_sets.sh", "score.sh": "score.sh",
                   "score_norm.sh": "score_norm.sh", "score_calibration.sh": "score_calibration.sh",
                   "score_plda.sh": "score_plda.sh"}
# WeSpeaker's v2 conf names -> ours, where ours is the same model and settings
# (its other names are ours already: campplus, redimnet*, xi_vector, ecapa_tdnn_WavLM_*)
WESPEAKER_CONF = {"resnet": "resnet34", "resnet_lm": "resnet34_lm",
                  "ecapa_tdnn": "ecapa_tdnn_c512", "ecapa_tdnn_lm": "ecapa_tdnn_c512_lm",
                  "xvec": "xvector", "xvec_lm": "xvector_lm", "repvgg": "repvgg_tiny_a0",
                  "res2net": "res2net34_base", "eres2net": "eres2net34_base",
                  "eres2net_lm": "eres2net34_base_lm", "gemini_dfresnet_adam": "gemini_dfresnet114",
                  "gemini_dfresnet_sgd_lm": "gemini_dfresnet114_lm"}
SHARED_STAGES = ("train_stage.sh", "make_lists.sh", "extract_sets.sh", "score.sh",
                 "score_norm.sh", "score_calibration.sh", "score_plda.sh", "export_model.sh",
                 "results_table.sh")


def test_every_recipe_script_parses():
    names = {os.path.relpath(path, REPO) for path in RECIPE_SCRIPTS}
    assert {"examples/voxceleb/v2/run.sh", "examples/voxceleb/v2/run_wavlm.sh",
            "examples/voxceleb/v2/run_w2v.sh", "examples/voxceleb/v1/Whisper-PMFA/run.sh",
            "examples/voxceleb/v1/Whisper-PMFA/local/prepare_data.sh",
            "tools/recipe/score_plda.sh",
            "tools/recipe/train_stage.sh", "examples/mini/run.sh",
            "tools/extract_embedding.sh"} <= names
    for path in RECIPE_SCRIPTS:
        result = subprocess.run(["bash", "-n", path], capture_output=True, text=True)
        assert result.returncode == 0, f"{path}: {result.stderr}"


def test_recipe_scripts_quote_the_values_they_pass_on():
    """An unquoted "--gpus ${gpus}" globs ([0,1] matches a file named 0 or 1) and an
    unquoted path splits at a space; ${train_args} (trainer options) and ${collars} (a
    list of numbers) are the values meant to split."""
    import re
    unquoted = re.compile(r"--[A-Za-z_-]+ \$\{?([A-Za-z_]+)\}?(\s|$)")
    for path in RECIPE_SCRIPTS:
        for line in _code_lines(path):
            if line.strip().startswith("echo"):
                continue
            for match in unquoted.finditer(line):
                assert match.group(1) in ("train_args", "collars"), f"{path}: {line.strip()}"


def _code_lines(path):
    with open(path) as handle:
        return [line.split("#")[0] for line in handle if not line.lstrip().startswith("#")]


@pytest.mark.parametrize("recipe_dir,script", RECIPES)
def test_every_recipe_sources_the_one_shared_training_stage(recipe_dir, script):
    code = _code_lines(os.path.join(recipe_dir, script))
    assert any(line.strip() == ". tools/recipe/train_stage.sh" for line in code)
    assert any(line.strip().startswith("train_stage ") or " train_stage " in line
               for line in code)
    # no recipe launches the trainer or decides "finished" by itself
    for line in code:
        assert "wespeaker_py.bin.train" not in line and "torchrun" not in line, line
        assert "final_model" not in line, line


def test_the_recipes_share_one_set_of_stage_scripts_under_neutral_names():
    # only the corpus-specific preparation (and Whisper's weights, CN-Celeb's enrollment
    # means) is a recipe's own; anything else in local/ is a link to a shared script (v2
    # keeps WeSpeaker's names)
    own = {V2_DIR: {"prepare_data.sh"}, MINI_DIR: {"prepare_data.sh"},
           WHISPER_DIR: {"prepare_data.sh", "download_whisper.sh"},
           CNCELEB_DIR: {"prepare_data.sh", "extract_cnc.sh"}}
    for recipe, scripts in own.items():
        assert os.path.realpath(os.path.join(recipe, "tools")) == os.path.join(REPO, "tools")
        local = os.path.join(recipe, "local")
        assert scripts <= set(os.listdir(local))
        for name in set(os.listdir(local)) - scripts:
            assert os.path.islink(os.path.join(local, name))
            assert not os.path.isabs(os.readlink(os.path.join(local, name)))
            assert os.path.realpath(os.path.join(local, name)) == os.path.join(
                REPO, "tools", "recipe", WESPEAKER_LOCAL.get(name, name))
    for name in WESPEAKER_LOCAL:
        assert os.path.islink(os.path.join(V2_DIR, "local", name)), name
    assert os.path.realpath(os.path.join(V2_DIR, "conf")) == os.path.join(REPO, "conf")
    used = {name: [] for name in SHARED_STAGES}
    for recipe_dir, script in RECIPES:
        text = "".join(_code_lines(os.path.join(recipe_dir, script)))
        for name in SHARED_STAGES:
            if f"tools/recipe/{name}" in text:
                used[name].append(script)
    # run_wavlm.sh reaches extraction and scoring through run.sh's stages 4-7
    assert all(used[name] for name in SHARED_STAGES), used
    assert "tools/recipe/extract_sets.sh" in "".join(_code_lines(os.path.join(MINI_DIR,
                                                                              "run.sh")))
    assert "tools/recipe/extract_sets.sh" in "".join(
        _code_lines(os.path.join(CNCELEB_DIR, "local", "extract_cnc.sh")))
    assert os.path.realpath(os.path.join(CNCELEB_DIR, "conf")) == os.path.join(REPO, "conf")


def test_wespeakers_conf_names_link_to_ours():
    conf = os.path.join(V2_DIR, "conf")
    links = {name[:-len(".yaml")] for name in os.listdir(conf)
             if os.path.islink(os.path.join(conf, name))}
    assert links == set(WESPEAKER_CONF)
    for alias, ours in WESPEAKER_CONF.items():
        assert os.readlink(os.path.join(conf, alias + ".yaml")) == ours + ".yaml"  # relative
        assert yaml.safe_load(open(os.path.join(conf, alias + ".yaml")))["model"] == \
            yaml.safe_load(open(os.path.join(conf, ours + ".yaml")))["model"]
    # v2's default large-margin config (config with _lm) exists for WeSpeaker's names
    for alias in ("resnet", "ecapa_tdnn", "xvec", "eres2net"):
        assert os.path.isfile(os.path.join(conf, alias + "_lm.yaml"))


FAKE_LAUNCHER = """#!/usr/bin/env bash
# test stand-in: logs its command line; as python it runs everything but the trainer
if [ "$(basename "$0")" == "python" ] && [ "$2" != "wespeaker_py.bin.train" ]; then
  exec {python} "$@"
fi
echo "$(basename "$0") $*" >> "{log}"
"""


def _train_stage(tmp_path, variables, checkpoints=(), final=None, config_text="num_epochs: 3\n",
                 args="--extra_flag 1", check=True):
    """Source tools/recipe/train_stage.sh in a mini recipe dir with fake launchers."""
    import sys
    models = tmp_path / "exp" / "models"
    os.makedirs(models, exist_ok=True)
    for epoch in checkpoints:
        (models / f"model_{epoch}.pt").write_text("x")
    if final is not None and not os.path.lexists(models / "final_model.pt"):
        os.symlink(f"model_{final}.pt", models / "final_model.pt")
    bin_dir, log = tmp_path / "bin", tmp_path / "launch.log"
    os.makedirs(bin_dir, exist_ok=True)
    for name in ("python", "torchrun"):
        path = bin_dir / name
        path.write_text(FAKE_LAUNCHER.replace("{python}", sys.executable)
                        .replace("{log}", str(log)))
        os.chmod(path, 0o755)
    config = tmp_path / "conf.yaml"
    config.write_text(config_text)
    settings = {"config": str(config), "exp_dir": str(tmp_path / "exp"), "data": "D",
                "data_type": "raw", "gpus": "[0]", "num_avg": "2", "checkpoint": "",
                **variables}
    script = "; ".join(["set -eo pipefail", ". ./path.sh", ". tools/recipe_helpers.sh",
                        ". tools/recipe/train_stage.sh"]
                       + [f"{key}='{value}'" for key, value in settings.items()]
                       + [f"train_stage D/train {args}"])
    result = subprocess.run(["bash", "-c", script], cwd=MINI_DIR, capture_output=True,
                            text=True, env={**os.environ,
                                            "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    if not check:
        return result
    assert result.returncode == 0, result.stderr
    calls = open(log).read().splitlines() if os.path.exists(log) else []
    return result.stdout, calls


def test_train_stage_resumes_from_the_newest_checkpoint_with_one_process(tmp_path):
    out, calls = _train_stage(tmp_path, {}, checkpoints=(1, 2), final=None)
    assert "resuming from" in out
    assert len(calls) == 1 and calls[0].startswith("python -m wespeaker_py.bin.train ")
    args = calls[0].split()
    assert args[args.index("--checkpoint") + 1].endswith("exp/models/model_2.pt")
    assert args[args.index("--train_data") + 1] == "D/train/raw.list"
    assert args[-2:] == ["--extra_flag", "1"] and "--num_epochs" not in args


def test_train_stage_honours_an_explicit_checkpoint_over_the_newest(tmp_path):
    pretrained = str(tmp_path / "pretrained.pt")
    out, calls = _train_stage(tmp_path / "a", {"checkpoint": pretrained}, checkpoints=(1, 2))
    args = calls[0].split()
    assert args[args.index("--checkpoint") + 1] == pretrained
    assert "not resuming from" in out and "model_2.pt" in out
    # the run's own model_0.pt (a fine-tuning step's start) still resumes from the newest
    own = str(tmp_path / "b" / "exp" / "models" / "model_0.pt")
    out, calls = _train_stage(tmp_path / "b", {"checkpoint": own}, checkpoints=(0, 1, 2))
    args = calls[0].split()
    assert args[args.index("--checkpoint") + 1].endswith("exp/models/model_2.pt")
    assert "resuming from" in out
    out, calls = _train_stage(tmp_path / "c", {"checkpoint": own}, checkpoints=(0,))
    args = calls[0].split()
    assert args[args.index("--checkpoint") + 1].endswith("exp/models/model_0.pt")


def test_train_stage_takes_an_explicit_checkpoint_once_then_resumes(tmp_path):
    import time
    models = tmp_path / "exp" / "models"
    rollback = str(models / "model_1.pt")
    out, calls = _train_stage(tmp_path, {"checkpoint": rollback}, checkpoints=(1, 2, 3))
    args = calls[0].split()
    assert args[args.index("--checkpoint") + 1] == rollback and "not resuming" in out
    # the run died before writing a checkpoint: model_2/3 are still the rolled-back ones
    out, calls = _train_stage(tmp_path, {"checkpoint": rollback})
    args = calls[-1].split()
    assert args[args.index("--checkpoint") + 1] == rollback
    # it trained epoch 2 again and crashed in epoch 3: the same command resumes from the
    # new model_2, not the old model_3
    time.sleep(0.01)
    (models / "model_2.pt").write_text("retrained")
    out, calls = _train_stage(tmp_path, {"checkpoint": rollback})
    args = calls[-1].split()
    assert args[args.index("--checkpoint") + 1].endswith("exp/models/model_2.pt")
    assert "resuming from" in out
    # another explicit checkpoint is taken again, once
    other = str(tmp_path / "pretrained.pt")
    out, calls = _train_stage(tmp_path, {"checkpoint": other}, checkpoints=(1, 2))
    args = calls[-1].split()
    assert args[args.index("--checkpoint") + 1] == other


def test_train_stage_launches_torchrun_for_several_processes_and_nodes(tmp_path):
    _, calls = _train_stage(tmp_path / "a", {"gpus": "[0,1,2]"})
    assert calls[0].startswith("torchrun --standalone --nnodes=1 --nproc_per_node=3 -m ")
    assert "--checkpoint" not in calls[0].split()  # nothing to resume
    _, calls = _train_stage(tmp_path / "b", {"gpus": "[0,1]", "num_nodes": "2",
                                             "HOST_NODE_ADDR": "10.0.0.1:29400",
                                             "job_id": "7"})
    assert calls[0].startswith("torchrun --nnodes=2 --nproc_per_node=2 --rdzv_id=7 "
                               "--rdzv_backend=c10d --rdzv_endpoint=10.0.0.1:29400 -m ")
    _, calls = _train_stage(tmp_path / "c", {"num_procs": "2", "gpus": "[]"})
    assert calls[0].startswith("torchrun --standalone --nnodes=1 --nproc_per_node=2 ")


def test_train_stage_is_finished_only_when_final_model_names_the_last_epoch(tmp_path):
    out, calls = _train_stage(tmp_path / "done", {}, checkpoints=(1, 2, 3), final=3)
    assert "training is finished" in out and calls == []
    # a run asked for more epochs than the earlier one finished goes on from there
    out, calls = _train_stage(tmp_path / "more", {"num_epochs": "5"}, checkpoints=(1, 2, 3),
                              final=3)
    assert "training is finished" not in out
    args = calls[0].split()
    assert args[args.index("--num_epochs") + 1] == "5"
    assert args[args.index("--checkpoint") + 1].endswith("model_3.pt")


# A dry run of the recipes' stages: python is real for "-c" snippets, the listed
# modules and the scripts named in $FAKE_REAL_SCRIPTS, and logs and skips everything
# else (extraction, scoring, export); its
# trainer writes checkpoints model_1..N.pt, copies of --checkpoint (or of a fresh
# tiny state_dict), and final_model.pt as the real one does.
FAKE_RECIPE_PYTHON = """#!/usr/bin/env bash
echo "python $*" >> "{log}"
if [ "$1" == "-c" ] || [ "$2" == "wespeaker_py.bin.average_model" ] ||
   [[ " ${FAKE_REAL_SCRIPTS:-} " == *" $1 "* ]]; then
  exec {python} "$@"
fi
if [[ " $* " == *" -m wespeaker_py.bin.extract "* ]]; then
  # the embeddings FAKE_EMBEDDINGS (a JSON file: set -> key -> vector) gives the set;
  # without it, none (empty ark and scp, as when every utterance was skipped)
  {python} - "$FAKE_EMBEDDINGS" "$@" <<'EMBED'
import json, os, sys
import numpy as np
from wespeaker_py.io.ark import write_embeddings
args = sys.argv[2:]
ark = args[args.index("--embed_ark") + 1]
vectors = {}
if sys.argv[1]:
    vectors = json.load(open(sys.argv[1])).get(os.path.basename(os.path.dirname(ark))) or {}
if vectors:
    keys = sorted(vectors)
    write_embeddings(ark, keys, np.array([vectors[key] for key in keys], dtype=np.float32))
else:
    for path in (ark, ark[:-len(".ark")] + ".scp"):
        open(path, "w").close()
EMBED
  exit $?
fi
if [ "$1" == "tools/vector_mean.py" ]; then
  # speaker means, as empty as the fake embeddings
  while [ $# -gt 0 ]; do
    [ "$1" == "--spk_xvector_ark" ] && : > "$2" && : > "${2%.ark}.scp"
    shift
  done
  exit 0
fi
if [ "$2" == "wespeaker_py.bin.train" ] && [ -z "$FAKE_NO_TRAIN" ]; then
  shift 2
  epochs= checkpoint= config= exp_dir=
  while [ $# -gt 0 ]; do
    case "$1" in
      --num_epochs) epochs=$2 ;;
      --checkpoint) checkpoint=$2 ;;
      --config) config=$2 ;;
      --exp_dir) exp_dir=$2 ;;
    esac
    shift
  done
  [ -n "$epochs" ] || epochs=$({python} -c 'import sys, yaml
print(yaml.safe_load(open(sys.argv[1]))["num_epochs"])' "$config")
  mkdir -p "$exp_dir/models"
  cp "$config" "$exp_dir/config.yaml"
  for epoch in $(seq 1 "$epochs"); do
    if [ -n "$checkpoint" ]; then
      cp "$checkpoint" "$exp_dir/models/model_$epoch.pt"
    else
      {python} -c 'import sys, torch
torch.save({{"w": torch.full((2,), float(sys.argv[2]))}}, sys.argv[1])' \
        "$exp_dir/models/model_$epoch.pt" "$epoch"
    fi
  done
  ln -sfn "model_$epochs.pt" "$exp_dir/models/final_model.pt"
fi
exit 0
"""


def _dry_run_env(tmp_path):
    """PATH with the fake python; returns (env, log path)."""
    import sys
    bin_dir, log = tmp_path / "fakebin", tmp_path / "python.log"
    os.makedirs(bin_dir, exist_ok=True)
    path = bin_dir / "python"
    path.write_text(FAKE_RECIPE_PYTHON.replace("{log}", str(log))
                    .replace("{python}", sys.executable).replace("{{", "{").replace("}}", "}"))
    os.chmod(path, 0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}, log


def _save_weights(path, value):
    import torch
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save({"w": torch.full((2,), float(value))}, path)


def _weight(path):
    import torch
    return torch.load(path)["w"].tolist()


def _fake_sets(data, names):
    for name in names:
        os.makedirs(data / name, exist_ok=True)
        (data / name / "wav.scp").write_text("u1 /nowhere/u1.wav\n")


def test_stage4_averages_again_when_num_avg_changes(tmp_path):
    env, _ = _dry_run_env(tmp_path)
    cases = ((V2_DIR, "v2", ("--data_type", "raw", "--num_epochs", "3"), ("vox2_dev", "vox1")),
             (MINI_DIR, "mini", ("--epochs", "3"), ("backend", "test")))
    for recipe_dir, name, extra, sets in cases:
        exp, data = tmp_path / name / "exp", tmp_path / name / "data"
        _fake_sets(data, sets)
        for epoch in (1, 2, 3):
            _save_weights(str(exp / "models" / f"model_{epoch}.pt"), epoch)
        avg = str(exp / "models" / "avg_model.pt")

        def stage4(num_avg):
            return run_script(recipe_dir, "run.sh", "--stage", "4", "--stop_stage", "4",
                              "--exp_dir", str(exp), "--data", str(data), "--gpus", "[]",
                              "--num_avg", num_avg, *extra, env=env)

        stage4("1")
        assert _weight(avg) == [3.0, 3.0], name
        assert "avg_model.pt is up to date" in stage4("1").stdout
        stage4("2")
        assert _weight(avg) == [2.5, 2.5], name  # not the stale average of one
    # v2 with --num_epochs: the last num_avg of epochs 1..num_epochs
    exp, data = tmp_path / "v2" / "exp", tmp_path / "v2" / "data"
    run_script(V2_DIR, "run.sh", "--stage", "4", "--stop_stage", "4", "--exp_dir", str(exp),
               "--data", str(data), "--gpus", "[]", "--data_type", "raw", "--num_avg", "1",
               "--num_epochs", "2", env=env)
    assert _weight(str(exp / "models" / "avg_model.pt")) == [2.0, 2.0]


def test_stage4_averages_an_average_without_a_note_again_while_its_checkpoints_are_there(
        tmp_path):
    """WeSpeaker's avg_model.pt (no settings note, newer than the checkpoints) is not taken
    as the average --num_avg asks for: it is made again from the checkpoints (an identical
    result keeps the file and its time), and used as it is, with no note claiming
    settings, only when a checkpoint it would be made from is gone."""
    env, _ = _dry_run_env(tmp_path)
    exp, data = tmp_path / "exp", tmp_path / "data"
    _fake_sets(data, ("vox2_dev", "vox1"))
    for epoch in (1, 2, 3):
        _save_weights(str(exp / "models" / f"model_{epoch}.pt"), epoch)
    avg = str(exp / "models" / "avg_model.pt")
    _save_weights(avg, 2.5)   # WeSpeaker's average of epochs 2 and 3
    note = f"{avg}.settings"

    def stage4(num_avg):
        return run_script(V2_DIR, "run.sh", "--stage", "4", "--stop_stage", "4", "--exp_dir",
                          str(exp), "--data", str(data), "--gpus", "[]", "--data_type", "raw",
                          "--num_avg", num_avg, "--num_epochs", "3", env=env).stdout

    assert "avg_model.pt is up to date" not in stage4("1")
    assert _weight(avg) == [3.0, 3.0]
    assert open(note).read() == "num_avg=1 min_epoch=1 max_epoch=3\n"
    os.remove(note)
    os.utime(avg, (2e9, 2e9))
    stage4("1")
    assert os.path.getmtime(avg) == 2e9 and open(note).read().startswith("num_avg=1 ")
    os.remove(note)
    os.remove(exp / "models" / "model_2.pt")   # pruned: the average of 2 cannot be made
    out = stage4("2")
    assert f"{exp}/models/model_2.pt, which it would be made from, is missing: it is used " \
        f"as it is" in out
    assert _weight(avg) == [3.0, 3.0] and not os.path.exists(note)


def test_stage4_takes_an_average_it_found_unchanged_as_up_to_date_on_the_next_run(tmp_path):
    """Checkpoints written again unchanged (copied back, say) are newer than the average:
    stage 4 averages them again, and the identical average keeps the file and its time (so
    the embeddings made from it stay up to date). The next run takes it as up to date
    rather than averaging again on every run."""
    env, log = _dry_run_env(tmp_path)
    exp, data = tmp_path / "exp", tmp_path / "data"
    _fake_sets(data, ("vox2_dev", "vox1"))
    for epoch in (1, 2, 3):
        _save_weights(str(exp / "models" / f"model_{epoch}.pt"), epoch)
    avg = exp / "models" / "avg_model.pt"

    def stage4():
        out = run_script(V2_DIR, "run.sh", "--stage", "4", "--stop_stage", "4", "--exp_dir",
                         str(exp), "--data", str(data), "--gpus", "[]", "--data_type", "raw",
                         "--num_avg", "2", "--num_epochs", "3", env=env).stdout
        return out, log.read_text().count("wespeaker_py.bin.average_model")

    assert stage4()[1] == 1
    for path in (avg, f"{avg}.settings"):
        os.utime(path, (1e9, 1e9))
    for epoch in (1, 2, 3):
        os.utime(exp / "models" / f"model_{epoch}.pt", (1.5e9, 1.5e9))
    out, averaged = stage4()
    assert averaged == 2 and "avg_model.pt is up to date" not in out
    assert os.path.getmtime(avg) == 1e9 and _weight(str(avg)) == [2.5, 2.5]
    out, averaged = stage4()
    assert averaged == 2 and "avg_model.pt is up to date" in out
    assert os.path.getmtime(avg) == 1e9


def _made_with(out, settings, *inputs, flags=()):
    """recipe_helpers.sh's ``made_with FLAGS OUT SETTINGS INPUTS``: the lines it says, then
    "kept" when it is true, else "remake"."""
    words = " ".join(f"'{word}'" for word in (*flags, out, settings, *inputs))
    script = f". tools/recipe_helpers.sh; made_with {words} && echo kept || echo remake"
    return subprocess.run(["bash", "-c", script], cwd=MINI_DIR, capture_output=True,
                          text=True, check=True).stdout.splitlines()


def test_an_output_wespeaker_writes_too_is_made_again_without_a_note_while_it_can_be(
        tmp_path):
    source, out = tmp_path / "in", tmp_path / "out"
    source.write_text("in")
    out.write_text("made by WeSpeaker")

    def made_here_with(settings):
        return _made_with(out, settings, source, flags=("--wespeaker_path",))

    assert made_here_with("a") == ["remake"]
    assert made_here_with("a") == ["remake"]   # its remake failed: still not taken for a
    os.remove(f"{out}.settings")
    source.unlink()
    assert made_here_with("a") == [
        f"{out} has no settings note (WeSpeaker made it, or it was put there) and {source}, "
        f"which it would be made from, is missing: it is used as it is", "kept"]
    assert not os.path.exists(f"{out}.settings")


def test_an_output_is_up_to_date_from_its_note_s_time_not_its_own(tmp_path):
    """A remake that gives the same bytes may keep the output and its time (stage 4's
    average): the note written after it says when it was made, so an input newer than the
    output but older than the note does not make it again; one newer than the note does."""
    source, out, note = tmp_path / "in", tmp_path / "out", tmp_path / "out.settings"
    source.write_text("in")
    out.write_text("made with a")
    note.write_text("a\n")
    for path, when in ((out, 1e9), (source, 1.5e9), (note, 1.6e9)):
        os.utime(path, (when, when))
    assert _made_with(out, "a", source) == ["kept"]
    os.utime(source, (1.7e9, 1.7e9))
    assert _made_with(out, "a", source) == ["remake"]


# each recipe's averaging: script, stage, config flag, the flag of its last epoch, data sets
AVERAGING_STAGES = {
    "v2": (V2_DIR, "run.sh", "4", "--config", "--num_epochs", ("vox2_dev", "vox1")),
    # run.sh's stage 4, given run_wavlm.sh's --num_epochs
    "wavlm": (V2_DIR, "run_wavlm.sh", "4", "--config", "--num_epochs", ("vox2_dev", "vox1")),
    "cnceleb": (CNCELEB_DIR, "run.sh", "4", "--config", "--num_epochs",
                ("cnceleb_train", "eval")),
    # averages the whole-model step, config_s1's epochs
    "whisper_pmfa": (WHISPER_DIR, "run.sh", "5", "--config_s1", "--last_epoch",
                     ("vox1_dev", "vox1_test")),
    "mini": (MINI_DIR, "run.sh", "4", "--config", "--epochs", ("backend", "test"))}


def _unfinished_averaging(tmp_path, recipe):
    """A 5-epoch run of ``recipe`` (AVERAGING_STAGES) that saved epochs 1-3: its experiment
    folder, the average's path, the dry run's log and a function running the averaging
    stage with ``--num_avg 2`` and more options."""
    recipe_dir, script, stage, config_flag, _, sets = AVERAGING_STAGES[recipe]
    env, log = _dry_run_env(tmp_path)
    exp, data, config = tmp_path / "exp", tmp_path / "data", tmp_path / "conf.yaml"
    _fake_sets(data, sets)
    config.write_text("num_epochs: 5\n")
    for epoch in (1, 2, 3):
        _save_weights(str(exp / "models" / f"model_{epoch}.pt"), epoch)

    def average(*extra):
        return run_script(recipe_dir, script, "--stage", stage, "--stop_stage", stage,
                          config_flag, str(config), "--exp_dir", str(exp), "--data", str(data),
                          "--gpus", "[]", "--data_type", "raw", "--num_avg", "2", *extra,
                          env=env, check=False)

    return exp, exp / "models" / "avg_model.pt", log, average


@pytest.mark.parametrize("recipe", sorted(AVERAGING_STAGES))
def test_averaging_refuses_an_unfinished_run_unless_its_epoch_flag_is_given(tmp_path, recipe):
    epoch_flag = AVERAGING_STAGES[recipe][4]
    exp, avg, log, average = _unfinished_averaging(tmp_path, recipe)

    result = average()
    assert result.returncode != 0
    assert (f"averages up to epoch 5 ({epoch_flag}, else the config's num_epochs), but "
            f"{exp}/models/model_5.pt is missing: the training has not finished (its latest "
            f"checkpoint is model_3.pt)") in result.stderr
    # the options that average it anyway, with this call's --num_avg and --exp_dir
    assert f"with {epoch_flag} N --num_avg 2 --exp_dir {exp} (the values of this call" \
        in result.stderr
    assert not avg.exists() and "average_model" not in log.read_text()
    # on purpose: the last 2 of epochs 1..3 (the dry run's extraction that follows may fail:
    # CN-Celeb's enrollment means need embeddings it does not write)
    assert "has not finished" not in average(epoch_flag, "3").stderr
    assert _weight(str(avg)) == [2.5, 2.5]


def test_averaging_refusal_under_run_w2v_names_run_sh_and_the_step_s_num_avg(tmp_path):
    """run_w2v.sh has no --num_epochs and averages 1 checkpoint: the refusal, run.sh's,
    names run.sh and the --num_avg 1 and --exp_dir of the step, not run.sh's default 10."""
    env, log = _dry_run_env(tmp_path)
    exp, data, config = tmp_path / "exp_s1", tmp_path / "data", tmp_path / "s1.yaml"
    _fake_sets(data, ("vox2_dev", "vox1"))
    config.write_text("num_epochs: 5\n")
    for epoch in (1, 2, 3):
        _save_weights(str(exp / "models" / f"model_{epoch}.pt"), epoch)
    result = run_script(V2_DIR, "run_w2v.sh", "--stage", "4", "--stop_stage", "4",
                        "--config_s1", str(config), "--exp_dir_s1", str(exp), "--data",
                        str(data), "--gpus", "[]", "--data_type", "raw", env=env, check=False)
    assert result.returncode != 0
    assert ("run.sh: the averaging stage averages up to epoch 5 (--num_epochs, else the "
            "config's num_epochs)") in result.stderr
    assert (f"run the averaging stage of run.sh again with --num_epochs N --num_avg 1 "
            f"--exp_dir {exp} (the values of this call; when another script ran run.sh for "
            f"one of its steps, run run.sh by hand with them)") in result.stderr
    assert "average_model" not in log.read_text()


@pytest.mark.parametrize("recipe", ["v2", "cnceleb"])
def test_averaging_bounds_by_the_run_s_config_and_a_refusal_keeps_the_note(tmp_path, recipe):
    """The bound is the num_epochs the run trained for (its config.yaml: a --num_epochs
    override, or another model's config than --config); a refused bound leaves the note
    of the average there, which stays up to date once its checkpoints are deleted."""
    exp, avg, _, average = _unfinished_averaging(tmp_path, recipe)
    (exp / "config.yaml").write_text("num_epochs: 3\n")   # trained with --num_epochs 3
    assert "has not finished" not in average().stderr
    assert _weight(str(avg)) == [2.5, 2.5]
    note = open(f"{avg}.settings").read()
    for epoch in (1, 2, 3):   # checkpoints deleted to save disk
        os.remove(exp / "models" / f"model_{epoch}.pt")
    assert f"{avg} is up to date" in average().stdout
    refused = average("--num_epochs", "4")   # a mistyped bound
    assert refused.returncode != 0 and "has not finished" in refused.stderr
    assert open(f"{avg}.settings").read() == note
    assert f"{avg} is up to date" in average().stdout
    # an average without a note (WeSpeaker's, or a released model put there) is used as it
    # is, its checkpoints gone, and noted as made with nothing
    os.remove(f"{avg}.settings")
    assert (f"{avg} has no settings note (WeSpeaker made it, or it was put there) and "
            f"{exp}/models/model_2.pt, which it would be made from, is missing: it is used as "
            f"it is") in average().stdout
    assert not os.path.exists(f"{avg}.settings")


def test_lm_stage_starts_from_the_current_average_or_refuses_a_trained_step(tmp_path):
    env, _ = _dry_run_env(tmp_path)
    exp, data = tmp_path / "exp" / "base", tmp_path / "data"
    _fake_sets(data, ("vox2_dev", "vox1"))
    for name in ("vox2_dev", "vox1"):
        (data / name / "utt2dur").write_text("")
    lm_config = tmp_path / "lm.yaml"
    lm_config.write_text("num_epochs: 1\n")
    lm_models = tmp_path / "exp" / "base-LM" / "models"
    avg, start = str(exp / "models" / "avg_model.pt"), str(lm_models / "model_0.pt")
    _save_weights(avg, 1)
    _save_weights(start, 7)  # a copy of an earlier average; no epoch trained from it
    args = ("--stage", "9", "--stop_stage", "9", "--exp_dir", str(exp), "--data", str(data),
            "--data_type", "raw", "--gpus", "[]", "--lm_config", str(lm_config))
    run_script(V2_DIR, "run.sh", *args, env=env)
    assert _weight(start) == [1.0, 1.0] and _weight(str(lm_models / "model_1.pt")) == [1.0, 1.0]
    assert not glob.glob(str(lm_models / "*.tmp"))
    # the base model changes after the LM step trained from the old one
    _save_weights(avg, 2)
    result = run_script(V2_DIR, "run.sh", *args, env=env, check=False)
    assert result.returncode != 0
    assert f"remove {lm_models.parent}" in result.stderr
    assert _weight(start) == [1.0, 1.0]

    # the mini recipe's LM stage and WavLM's next steps refuse the same way
    mini_exp = tmp_path / "mini" / "exp"
    _save_weights(str(mini_exp / "models" / "avg_model.pt"), 3)
    for epoch, value in ((0, 1), (1, 1)):
        _save_weights(str(tmp_path / "mini" / "exp-LM" / "models" / f"model_{epoch}.pt"), value)
    result = run_script(MINI_DIR, "run.sh", "--stage", "9", "--stop_stage", "9",
                        "--exp_dir", str(mini_exp), "--data", str(data), "--lm_config",
                        str(lm_config), env=env, check=False)
    assert result.returncode != 0 and f"remove {mini_exp}-LM" in result.stderr
    joint = tmp_path / "wavlm" / "joint_ft"
    _save_weights(str(tmp_path / "wavlm" / "frozen" / "models" / "avg_model.pt"), 3)
    for epoch, value in ((0, 1), (1, 1)):
        _save_weights(str(joint / "models" / f"model_{epoch}.pt"), value)
    result = run_script(V2_DIR, "run_wavlm.sh", "--stage", "8", "--stop_stage", "8",
                        "--exp_dir", str(tmp_path / "wavlm" / "frozen"),
                        "--joint_ft_exp_dir", str(joint), "--data", str(data), env=env,
                        check=False)
    assert result.returncode != 0 and f"remove {joint}" in result.stderr


def test_run_w2v_chains_lora_merge_joint_and_large_margin_steps(tmp_path):
    env, log = _dry_run_env(tmp_path)
    data = tmp_path / "data"
    _fake_sets(data, ("vox2_dev", "vox1"))
    for name in ("vox2_dev", "vox1"):
        (data / name / "utt2dur").write_text("")
    steps = {step: tmp_path / "exp" / step for step in ("s1", "s2", "s3")}
    configs = {step: tmp_path / f"{step}.yaml" for step in steps}
    for config in configs.values():  # one epoch a step keeps the dry run short
        config.write_text("num_epochs: 1\n")
    args = ["--data", str(data), "--data_type", "raw", "--gpus", "[]",
            "--w2vbert_path", "/models/w2v-bert-2.0",
            *[item for step in steps for item in (f"--exp_dir_{step}", str(steps[step]),
                                                  f"--config_{step}", str(configs[step]))]]

    def trainer_calls():
        calls = [line.split() for line in open(log).read().splitlines()
                 if "wespeaker_py.bin.train" in line]
        return {call[call.index("--exp_dir") + 1]: call for call in calls}

    run_script(V2_DIR, "run_w2v.sh", "--stage", "3", "--stop_stage", "5", *args, env=env)
    s1 = trainer_calls()[str(steps["s1"])]
    assert s1[s1.index("--config") + 1] == str(configs["s1"])
    assert s1[s1.index("--dataset_args.w2vbert_args.model_name") + 1] == "/models/w2v-bert-2.0"
    assert "--checkpoint" not in s1
    assert os.path.isfile(steps["s1"] / "models" / "avg_model.pt")  # stage 4 averaged
    merge = [line.split() for line in open(log).read().splitlines()
             if "wespeaker_py.bin.merge_lora" in line][0]
    merged = str(steps["s1"] / "models" / "merged_avg_model.pt")
    assert merge[merge.index("--checkpoint_in") + 1] == str(steps["s1"] / "models" /
                                                            "avg_model.pt")
    assert merge[merge.index("--checkpoint_out") + 1] == merged
    assert merge[merge.index("--config") + 1] == str(steps["s1"] / "config.yaml")

    _save_weights(merged, 5)  # what the (skipped) merge writes
    run_script(V2_DIR, "run_w2v.sh", "--stage", "6", "--stop_stage", "9", *args, env=env)
    calls = trainer_calls()
    for step, start in (("s2", merged), ("s3", str(steps["s2"] / "models" / "avg_model.pt"))):
        call = calls[str(steps[step])]
        assert call[call.index("--config") + 1] == str(configs[step])
        model_0 = str(steps[step] / "models" / "model_0.pt")
        assert call[call.index("--checkpoint") + 1] == model_0
        assert _weight(model_0) == _weight(start)  # each step starts from the one before
        assert "/models/w2v-bert-2.0" in call
    assert _weight(str(steps["s3"] / "models" / "avg_model.pt")) == [5.0, 5.0]


def test_whisper_pmfa_trains_frozen_then_whole_in_one_folder_and_scores_vox1_o(tmp_path):
    env, log = _dry_run_env(tmp_path)
    data, exp = tmp_path / "data", tmp_path / "exp" / "whisper"
    _fake_sets(data, ("vox1_dev", "vox1_test"))
    for name in ("vox1_dev", "vox1_test"):
        (data / name / "utt2dur").write_text("")
    args = ("--data", str(data), "--exp_dir", str(exp), "--gpus", "[]",
            "--whisper_path", "/models/whisper/large-v2.pt")

    def calls(module):
        with open(log) as handle:
            return [line.split() for line in handle
                    if f"wespeaker_py.bin.{module} " in line]

    def value(call, flag):
        return call[call.index(flag) + 1]

    # stage 4 before stage 3 finished: refused, nothing renamed
    result = run_script(WHISPER_DIR, "run.sh", "--stage", "4", "--stop_stage", "4", *args,
                        env=env, check=False)
    assert result.returncode != 0 and "finish stage 3 (the frozen step) first" in result.stderr
    run_script(WHISPER_DIR, "run.sh", "--stage", "3", "--stop_stage", "3", *args, env=env)
    frozen = calls("train")[0]
    assert value(frozen, "--config") == "conf/whisper_PMFA_stage0.yaml"
    assert value(frozen, "--model") == "whisper_PMFA_large_v2"
    assert value(frozen, "--dataset_args.whisper_encoder_args.model_path") == \
        "/models/whisper/large-v2.pt"
    assert value(frozen, "--train_data") == f"{data}/vox1_dev/raw.list"
    assert "--checkpoint" not in frozen
    assert os.readlink(exp / "models" / "final_model.pt") == "model_4.pt"

    stage4 = run_script(WHISPER_DIR, "run.sh", "--stage", "4", "--stop_stage", "7", *args,
                        env=env)
    assert f"continuing from {exp}/models/model_4.pt" in stage4.stdout
    assert "as asked" not in stage4.stdout
    whole = calls("train")[1]
    assert value(whole, "--config") == "conf/whisper_PMFA_stage1.yaml"
    assert value(whole, "--checkpoint") == f"{exp}/models/model_4.pt"
    assert "--dataset_args.whisper_encoder_args.model_path" not in whole  # weights: model_4.pt
    # stage 3's results keep their names as in WeSpeaker's recipe; stage 4's are the run's
    assert os.readlink(exp / "models" / "final_model_stage0.pt") == "model_4.pt"
    assert os.readlink(exp / "models" / "final_model.pt") == "model_8.pt"
    assert yaml.safe_load(open(exp / "config_stage0.yaml"))["num_epochs"] == 4
    assert yaml.safe_load(open(exp / "config.yaml"))["num_epochs"] == 8
    extractions = calls("extract")
    assert {os.path.basename(os.path.dirname(value(call, "--data_list")))
            for call in extractions} == {"vox1_dev", "vox1_test"}
    assert all(value(call, "--model_path") == f"{exp}/models/avg_model.pt"
               for call in extractions)
    # vox1_dev (mean, cohort) from one random chunk per utterance, vox1_test whole, as
    # WeSpeaker's extraction with batch sizes 16 and 1
    chunked = {os.path.basename(os.path.dirname(value(call, "--data_list"))):
               "--random_chunk" in call for call in extractions}
    assert chunked == {"vox1_dev": True, "vox1_test": False}
    scores = calls("score")
    assert scores and all(value(call, "--eval_scp_path").endswith("vox1_test/xvector.scp")
                          for call in scores)
    norm = calls("score_norm")
    assert norm and all(value(call, "--cohort_emb_scp").endswith("vox1_dev/spk_xvector.scp")
                        and value(call, "--top_n") == "300" for call in norm)
    # the scoring stages 6 and 7 are followed by one results table of Vox1-O
    with open(log) as handle:
        tables = [line.split() for line in handle if "tools/results_table.py" in line]
    assert [(value(call, "--trials"), value(call, "--output")) for call in tables] == \
        [("vox1_O_cleaned.kaldi", f"{exp}/results.md")]

    # run again: each training step is finished, nothing is trained or renamed again
    rerun = run_script(WHISPER_DIR, "run.sh", "--stage", "3", "--stop_stage", "4", *args,
                       env=env)
    assert len(calls("train")) == 2
    assert "the frozen step is finished" in rerun.stdout
    assert "training is finished" in rerun.stdout
    assert "is not used" not in rerun.stdout  # model_4.pt is the run's own checkpoint
    assert yaml.safe_load(open(exp / "config_stage0.yaml"))["num_epochs"] == 4

    # the table lists the scores stage 6 left (config.yaml with feat_dim as the trainer fills it)
    config = yaml.safe_load(open(exp / "config.yaml"))
    config["model_args"]["feat_dim"] = 8 * 1280
    (exp / "config.yaml").write_text(yaml.safe_dump(config))
    _write_scores(exp / "scores" / "vox1_O_cleaned.kaldi.score", 1.0, 0)
    scored = run_script(WHISPER_DIR, "run.sh", "--stage", "6", "--stop_stage", "6", *args,
                        env=dict(env, FAKE_REAL_SCRIPTS="tools/results_table.py"))
    assert f"Table: {exp}/results.md" in scored.stdout
    rows = parse_table(open(exp / "results.md").read())
    assert [(row["Model"], row["Scoring"]) for row in rows] == [
        ("Whisper_PMFA_large_v2-emb192", "cosine")]
    assert os.path.getsize(exp / "det_vox1_O_cleaned.kaldi.png") > 0


def test_cnceleb_run_adds_enrollment_means_once_and_scores_both_trial_lists(tmp_path):
    from wespeaker_py.io.ark import load_embeddings
    env, log = _dry_run_env(tmp_path)
    env["FAKE_REAL_SCRIPTS"] = "tools/vector_mean.py"
    data, exp = tmp_path / "data", tmp_path / "exp" / "resnet"
    _fake_sets(data, ("cnceleb_train", "eval"))
    (data / "eval" / "enroll.map").write_text(
        "id00800-enroll id00800/a.wav id00800/b.wav\nid00801-enroll id00801/c.wav\n")
    for name in ("cnceleb_train", "eval"):
        (data / name / "utt2dur").write_text("")
    utterances = {"id00800/a.wav": [1.0, 0.0], "id00800/b.wav": [0.0, 3.0],
                  "id00801/c.wav": [2.0, 2.0], "test/id00800-singing-01-001.wav": [1.0, 1.0],
                  "enroll/id00800-enroll.wav": [0.5, 0.5]}
    (data / "eval" / "wav.scp").write_text("".join(f"{key} /nowhere/{key}\n"
                                                   for key in sorted(utterances)))
    (data / "cnceleb_train" / "spk2utt").write_text("id00000 u1\n")
    # what the (fake) extraction writes
    eval_scp = exp / "embeddings" / "eval" / "xvector.scp"
    (tmp_path / "embeddings.json").write_text(json.dumps(
        {"eval": utterances, "cnceleb_train": {"u1": [1, 2]}}))
    env["FAKE_EMBEDDINGS"] = str(tmp_path / "embeddings.json")
    args = ("--data", str(data), "--exp_dir", str(exp), "--gpus", "[]", "--data_type", "raw",
            "--num_epochs", "2", "--num_avg", "2", "--nj", "1")

    def calls(module):
        with open(log) as handle:
            return [line.split() for line in handle if f" {module} " in line]

    def value(call, flag):
        return call[call.index(flag) + 1]

    run_script(CNCELEB_DIR, "run.sh", "--stage", "3", "--stop_stage", "8", *args, env=env)
    train = calls("wespeaker_py.bin.train")[0]
    assert value(train, "--config") == "conf/resnet.yaml"
    assert value(train, "--train_data") == f"{data}/cnceleb_train/raw.list"
    assert _weight(str(exp / "models" / "avg_model.pt")) == [1.5, 1.5]
    extractions = calls("wespeaker_py.bin.extract")
    # cnceleb_train (mean, cohort, calibration trials) from random chunks, eval whole
    assert {os.path.basename(os.path.dirname(value(call, "--data_list"))):
            "--random_chunk" in call for call in extractions} == \
        {"cnceleb_train": True, "eval": False}
    assert all(value(call, "--nj") == "1" for call in extractions)
    # CNC-Eval-Avg's enroll side: each enrollment speaker's mean embedding
    table = load_embeddings(str(eval_scp))
    assert sorted(table.keys) == sorted([*utterances, "id00800-enroll", "id00801-enroll"])
    assert table.matrix[table.index["id00800-enroll"]].tolist() == [0.5, 1.5]
    assert table.matrix[table.index["id00801-enroll"]].tolist() == [2.0, 2.0]
    trials = {f"{data}/eval/trials/CNC-Eval-Concat.lst", f"{data}/eval/trials/CNC-Eval-Avg.lst"}
    cosine = [call for call in calls("wespeaker_py.bin.score")
              if value(call, "--eval_scp_path") == str(eval_scp)]
    assert len(cosine) == 1 and set(cosine[0][-2:]) == trials
    assert value(cosine[0], "--cal_mean_dir") == f"{exp}/embeddings/cnceleb_train"
    norm = calls("wespeaker_py.bin.score_norm")
    assert {os.path.basename(value(call, "--trial_score_file")) for call in norm} == \
        {"CNC-Eval-Concat.lst.score", "CNC-Eval-Avg.lst.score", "cn_dev_cali.kaldi.score"}
    assert all(value(call, "--cohort_emb_scp") ==
               f"{exp}/embeddings/cnceleb_train/spk_xvector.scp" for call in norm)
    # QMF as WeSpeaker's CN-Celeb recipe: more calibration trials, no duration measures
    (generate,) = [line for line in calls("tools/generate_calibration_trial.py")]
    assert value(generate, "--each_trial_num") == "20000"
    assert value(generate, "--trial_path") == f"{data}/eval/trials/cn_dev_cali.kaldi"
    gathered = calls("gather_calibration_factors")
    assert len(gathered) == 3 and all(value(call, "--drop_duration") == "true"
                                      and "--wav_dur_scp" not in call for call in gathered)
    # without the duration measures the eval set's durations are not read
    assert [call[2] for call in calls("tools/wav2dur.py")] == \
        [f"{data}/cnceleb_train/wav.scp"]
    assert value(calls("wespeaker_py.bin.export_jit")[0], "--checkpoint") == \
        f"{exp}/models/avg_model.pt"

    # run again: the means are up to date and in the list once; the calibration list is
    # drawn again only when the training set's lists change
    cali = data / "eval" / "trials" / "cn_dev_cali.kaldi"
    os.makedirs(cali.parent, exist_ok=True)
    cali.write_text("u1 u1 target\n")   # what the (fake) generator would have written
    rerun = run_script(CNCELEB_DIR, "run.sh", "--stage", "4", "--stop_stage", "7", *args,
                       env=env)
    assert "enrollment means are up to date" in rerun.stdout
    assert sorted(load_embeddings(str(eval_scp)).keys) == sorted(
        [*utterances, "id00800-enroll", "id00801-enroll"])
    assert "cn_dev_cali.kaldi: the generated list is up to date" in rerun.stdout
    assert len(calls("tools/generate_calibration_trial.py")) == 1
    (data / "cnceleb_train" / "utt2dur").write_text("u1 3.0\n")   # e.g. prepared again
    run_script(CNCELEB_DIR, "run.sh", "--stage", "7", "--stop_stage", "7", *args, env=env)
    assert len(calls("tools/generate_calibration_trial.py")) == 2
    measured = len(calls("tools/wav2dur.py"))   # utt2dur is up to date: not measured again
    later = os.path.getmtime(data / "cnceleb_train" / "utt2dur") + 10
    os.utime(data / "cnceleb_train" / "wav.scp", (later, later))   # the set prepared again
    run_script(CNCELEB_DIR, "run.sh", "--stage", "7", "--stop_stage", "7", *args, env=env)
    assert len(calls("tools/wav2dur.py")) == measured + 1
    # a map naming an utterance with no embedding stops the stage; once mended, the
    # stage is done again (not taken as done) and each mean is in the list once
    (data / "eval" / "enroll.map").write_text("id00800-enroll id00800/missing.wav\n")
    failed = run_script(CNCELEB_DIR, "run.sh", "--stage", "4", "--stop_stage", "4", *args,
                        env=env, check=False)
    assert failed.returncode != 0 and "id00800/missing.wav" in failed.stderr
    (data / "eval" / "enroll.map").write_text("id00800-enroll id00800/b.wav\n")
    run_script(CNCELEB_DIR, "run.sh", "--stage", "4", "--stop_stage", "4", *args, env=env)
    table = load_embeddings(str(eval_scp))
    assert sorted(table.keys) == sorted([*utterances, "id00800-enroll"])
    assert table.matrix[table.index["id00800-enroll"]].tolist() == [0.0, 3.0]


def test_download_whisper_verifies_the_checkpoint_and_fetches_it_once(tmp_path):
    import hashlib
    bin_dir, log = tmp_path / "bin", tmp_path / "wget.log"
    os.makedirs(bin_dir)
    (bin_dir / "wget").write_text(  # a stand-in: writes fixed bytes to -O, logs the call
        f'#!/usr/bin/env bash\necho "$*" >> "{log}"\n'
        'while [ $# -gt 0 ]; do [ "$1" == "-O" ] && out=$2; shift; done\n'
        'printf "weights" > "$out"\n')
    os.chmod(bin_dir / "wget", 0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    target = tmp_path / "hub"
    args = ("local/download_whisper.sh", "--download_dir", str(target))
    bad = run_script(WHISPER_DIR, *args, env=env, check=False)  # the official md5
    assert bad.returncode != 0 and "expected 668764447eeda98eeba5ef7bfcb4cc3d" in bad.stderr
    assert not (target / "large-v2.pt").exists()
    good = hashlib.md5(b"weights").hexdigest()
    run_script(WHISPER_DIR, *args, "--md5", good, env=env)
    assert (target / "large-v2.pt").read_bytes() == b"weights"
    again = run_script(WHISPER_DIR, *args, "--md5", good, env=env)
    assert "present and verified" in again.stdout
    assert len(log.read_text().splitlines()) == 2  # not fetched a third time


def test_v1_prepare_data_writes_vox1_dev_and_test_without_voxceleb2(tmp_path):
    data = pathlib.Path(make_fake_voxceleb_data(tmp_path))
    download_dir = data / "download_data"
    for name in ("vox2_aac.zip", "vox2_aac.zip.md5_ok"):  # VoxCeleb2 is not needed
        os.remove(download_dir / name)
    trials = data / "vox1_test" / "trials"
    os.makedirs(trials)
    (trials / "vox1_O_cleaned.txt").write_text(
        "1 id10270/vida/00001.wav id10270/vidb/00002.wav\n")
    result = run_script(WHISPER_DIR, "local/prepare_data.sh", "--stage", "1", "--stop_stage",
                        "4", "--data", str(data), check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "nothing to convert (no vox2 in --corpora)" in result.stdout
    assert sorted(read_table(data / "vox1_dev" / "spk2utt")) == ["id10001", "id10002"]
    assert sorted(read_table(data / "vox1_test" / "wav.scp")) == [
        f"id10270/vid{v}/0000{i}.wav" for v in "ab" for i in (1, 2)]
    assert (trials / "vox1_O_cleaned.kaldi").read_text() == \
        "id10270/vida/00001.wav id10270/vidb/00002.wav target\n"
    assert not (data / "vox1").exists() and not (data / "vox2_dev").exists()
    assert "voxceleb2" not in " ".join(os.listdir(data / "raw_data"))
    bad = run_script(WHISPER_DIR, "local/prepare_data.sh", "--data", str(data), "--corpora",
                     "vox3", check=False)
    assert bad.returncode != 0 and "--corpora takes vox1 and/or vox2, got 'vox3'" in bad.stderr
    bad = run_script(V2_DIR, "local/prepare_data.sh", "--data", str(data), "--corpora", "vox2",
                     "--vox1_split", "true", check=False)
    assert bad.returncode != 0 and "--vox1_split true needs vox1 in --corpora" in bad.stderr


def _fake_extraction(tmp_path, *names):
    """An experiment folder, files ``names`` (models, lists) beside it, and a runner of
    tools/extract_embedding.sh with the fake python; returns (exp, log, extract, count)."""
    env, log = _dry_run_env(tmp_path)
    exp = tmp_path / "exp"
    os.makedirs(exp)
    (exp / "config.yaml").write_text("num_epochs: 1\n")
    for name in names:
        (tmp_path / name).write_text(name)

    def extract(model, data_list, *extra, check=True):
        return run_script(MINI_DIR, "tools/extract_embedding.sh", "--exp_dir", str(exp),
                          "--model_path", str(tmp_path / model), "--data_type", "raw",
                          "--data_list", str(tmp_path / data_list), "--store_dir", "test",
                          "--nj", "1", "--gpus", "[]", *extra, env=env, check=check)

    def extractions():
        with open(log) as handle:
            return sum("wespeaker_py.bin.extract" in line for line in handle)

    return exp, log, extract, extractions


def test_extraction_is_done_again_for_another_model_or_list_even_an_older_one(tmp_path):
    _, _, extract, extractions = _fake_extraction(tmp_path, "new.pt", "old.pt", "new.list",
                                                  "old.list")
    for name in ("old.pt", "old.list"):  # older than the config and any result
        os.utime(tmp_path / name, (1e9, 1e9))

    extract("new.pt", "new.list")
    assert "up to date" in extract("new.pt", "new.list").stdout and extractions() == 1
    extract("old.pt", "new.list")  # an older model is no reason to keep the result
    assert extractions() == 2
    extract("old.pt", "old.list")
    assert extractions() == 3
    assert "up to date" in extract("old.pt", "old.list").stdout and extractions() == 3
    extract("old.pt", "old.list", "--random_chunk", "true")
    assert extractions() == 4


def test_a_model_copied_in_with_its_old_time_kept_is_extracted_again(tmp_path):
    _, _, extract, extractions = _fake_extraction(tmp_path, "model.pt", "other.pt",
                                                  "data.list")
    extract("model.pt", "data.list")
    assert "up to date" in extract("model.pt", "data.list").stdout and extractions() == 1
    # cp -p other.pt model.pt: other contents, a time older than the result
    (tmp_path / "model.pt").write_bytes((tmp_path / "other.pt").read_bytes())
    os.utime(tmp_path / "model.pt", (1e9, 1e9))
    extract("model.pt", "data.list")
    assert extractions() == 2
    assert "up to date" in extract("model.pt", "data.list").stdout and extractions() == 2
    missing = extract("gone.pt", "data.list", check=False)
    assert missing.returncode != 0 and "gone.pt: no such file" in missing.stderr
    assert extractions() == 2


def test_a_band_fill_added_replaced_or_removed_beside_the_config_extracts_again(tmp_path):
    exp, _, extract, extractions = _fake_extraction(tmp_path, "model.pt", "data.list")
    extract("model.pt", "data.list")
    assert "up to date" in extract("model.pt", "data.list").stdout and extractions() == 1
    fill = exp / "band_fill_8000hz.npz"
    fill.write_bytes(b"fill")           # wespeaker-py band-fill after the extraction
    extract("model.pt", "data.list")
    assert extractions() == 2
    assert "up to date" in extract("model.pt", "data.list").stdout and extractions() == 2
    fill.write_bytes(b"learnt again")   # newer than the result
    extract("model.pt", "data.list")
    assert extractions() == 3
    os.remove(fill)
    extract("model.pt", "data.list")
    assert extractions() == 4


def test_a_redone_extraction_removes_the_earlier_embeddings_before_it_runs(
        tmp_path, monkeypatch):
    exp, _, extract, extractions = _fake_extraction(tmp_path, "old.pt", "new.pt", "data.list")
    extract("old.pt", "data.list")
    embeddings = exp / "embeddings" / "test"
    for name in ("xvector.ark", "xvector.scp"):
        (embeddings / name).write_text("of old.pt")
    assert "up to date" in extract("old.pt", "data.list").stdout
    assert (embeddings / "xvector.scp").read_text() == "of old.pt"
    # the extraction with new.pt fails (the fake python finds no FAKE_EMBEDDINGS file): a
    # scoring stage finds no embeddings rather than old.pt's
    monkeypatch.setenv("FAKE_EMBEDDINGS", str(tmp_path / "absent.json"))
    assert extract("new.pt", "data.list", check=False).returncode != 0
    assert extractions() == 2
    assert not (embeddings / "xvector.scp").exists() and not (embeddings / "xvector.ark").exists()


def test_outputs_of_the_version_before_settings_notes_are_taken_as_done(tmp_path):
    """An up-to-date output with no settings note (written before notes were kept) is
    taken as made with today's settings, as the version that wrote it would have taken it:
    no hours of extraction again. An average whose checkpoints are gone is used as it is,
    not noted as made with settings nobody knows."""
    exp, _, extract, extractions = _fake_extraction(tmp_path, "model.pt", "data.list")
    extract("model.pt", "data.list")
    result = exp / "embeddings" / "test" / "extract.result"
    os.remove(str(result) + ".settings")   # as the previous version left it
    assert "up to date" in extract("model.pt", "data.list").stdout
    assert extractions() == 1
    assert "model=" in open(str(result) + ".settings").read()
    # a pretrained avg_model.pt put in place without its checkpoints
    env, _ = _dry_run_env(tmp_path)
    models = tmp_path / "mini" / "exp" / "models"
    _save_weights(str(models / "avg_model.pt"), 5)
    data = tmp_path / "mini" / "data"
    _fake_sets(data, ("backend", "test"))
    out = run_script(MINI_DIR, "run.sh", "--stage", "4", "--stop_stage", "4", "--exp_dir",
                     str(models.parent), "--data", str(data), "--gpus", "[]", env=env).stdout
    assert "model_5.pt, which it would be made from, is missing: it is used as it is" in out
    assert _weight(str(models / "avg_model.pt")) == [5, 5]
    assert not os.path.exists(str(models / "avg_model.pt.settings"))


def test_an_output_whose_remake_failed_is_not_taken_for_the_new_settings(tmp_path):
    out = tmp_path / "out"
    out.write_text("made with a")
    (tmp_path / "out.settings").write_text("a\n")
    assert _made_with(out, "a") == ["kept"]
    assert _made_with(out, "b") == ["remake"]  # ... and the remake fails, leaving out as it was
    assert _made_with(out, "b") == ["remake"]  # not taken as made with b
    assert _made_with(out, "a") == ["remake"]  # nor with a


# the scoring stages that read embeddings: script, stage, options, the outputs they make
# (with their settings notes), and the files they are made from
SCORING_FROM_EMBEDDINGS = {
    "score.sh": ("1", (), {"scores/T.score": "train_set=vox2_dev eval_set=vox1"},
                 ("embeddings/vox1/xvector.scp", "embeddings/vox2_dev/xvector.scp")),
    "score_norm.sh": ("2", (), {"scores/vox2_dev_asnorm100_T.score":
                                "train_set=vox2_dev eval_set=vox1"},
                      ("embeddings/vox1/xvector.scp", "embeddings/vox2_dev/xvector.scp",
                       "embeddings/vox2_dev/spk_xvector.scp", "embeddings/vox2_dev/mean_vec.npy",
                       "scores/T.score")),
    "score_calibration.sh": ("2", ("--drop_duration", "true"),
                             {f"scores/calibration/vox2_dev_asnorm100_{x}.calibration":
                              "drop_duration=true" for x in ("vox2_cali.kaldi", "T")},
                             ("embeddings/vox1/xvector.scp", "embeddings/vox2_dev/xvector.scp",
                              "embeddings/vox2_dev/spk_xvector.scp",
                              "scores/vox2_dev_asnorm100_vox2_cali.kaldi.score",
                              "scores/vox2_dev_asnorm100_T.score"))}


@pytest.mark.parametrize("script, gone, trials", [
    ("score.sh", "vox1", "T"), ("score.sh", "vox2_dev", "T"), ("score_norm.sh", "vox1", "T"),
    ("score_calibration.sh", "vox1", "T"),
    ("score_calibration.sh", "vox2_dev", "vox2_cali.kaldi")])
def test_a_scoring_stage_refuses_when_the_embeddings_it_reads_are_gone(
        tmp_path, script, gone, trials):
    """Embeddings being extracted again (or whose extraction failed) are missing: scores
    made from the earlier ones (those of the trial list ``trials``) are not taken as up to
    date, the stage stops naming the missing file and the extraction stage."""
    stage, options, outputs, inputs = SCORING_FROM_EMBEDDINGS[script]
    env, _ = _dry_run_env(tmp_path)
    exp, data = tmp_path / "exp", tmp_path / "data"
    trial_lists = [data / "vox1" / "trials" / name for name in ("T", "vox2_cali.kaldi")]
    for path in [exp / name for name in inputs] + trial_lists:
        os.makedirs(path.parent, exist_ok=True)
        path.write_text("x")
        os.utime(path, (1e9, 1e9))
    for name, settings in outputs.items():
        os.makedirs((exp / name).parent, exist_ok=True)
        (exp / name).write_text("x")
        (exp / f"{name}.settings").write_text(settings + "\n")

    def score():
        return run_script(V2_DIR, f"local/{script}", "--stage", stage, "--stop_stage", stage,
                          "--exp_dir", str(exp), "--data", str(data), "--trials", "T",
                          *options, env=env, check=False)

    def up_to_date(out):
        return [line for line in out.splitlines()
                if line.startswith(f"{trials}: ") and line.endswith(" up to date")]

    assert up_to_date(score().stdout)
    missing = exp / "embeddings" / gone / "xvector.scp"
    os.remove(missing)
    result = score()
    assert result.returncode != 0
    assert f"{missing} is missing: run the extraction stage (stage 4) first" in result.stderr
    assert not up_to_date(result.stdout)


def test_a_failed_metrics_report_leaves_the_last_result_whole(tmp_path):
    good, bad, result = tmp_path / "good.score", tmp_path / "bad.score", tmp_path / "r_result"
    good.write_text("a b 0.9 target\na c 0.1 nontarget\nd e 0.8 target\nd f 0.3 nontarget\n")
    other = tmp_path / "other.score"
    other.write_text("a b 0.9 target\na c 0.95 nontarget\n")
    bad.write_text("a b 0.9 target\na c x nontarget\n")

    def report(*scores):
        script = (f". ./path.sh; . tools/recipe_helpers.sh; report_metrics '{result}' "
                  + " ".join(f"'{path}'" for path in scores))
        return subprocess.run(["bash", "-c", script], cwd=MINI_DIR, capture_output=True,
                              text=True)

    assert report(good, other).returncode == 0
    first = result.read_text()
    assert "EER = 0.000" in first and "EER = 100.000" in first
    assert (tmp_path / "good.score.det.png").is_file()
    failed = report(good, bad)   # good's lines are printed before bad fails
    assert failed.returncode != 0 and "bad.score:2" in failed.stderr
    assert result.read_text() == first
    assert not [name for name in os.listdir(tmp_path)
                if name.startswith(".tmp") or name.endswith(".tmp")]


def test_export_without_onnx_removes_an_onnx_of_an_earlier_model(tmp_path):
    """final.onnx not exported this time (--onnx false) is removed, said in one line, when
    it is older than the checkpoint (the earlier model's); one newer than it is kept."""
    env, _ = _dry_run_env(tmp_path)
    models = tmp_path / "exp" / "models"
    os.makedirs(models)
    checkpoint, onnx = models / "avg_model.pt", models / "final.onnx"
    checkpoint.write_text("model")
    onnx.write_text("earlier model")
    os.utime(onnx, (1e9, 1e9))

    def export():
        return run_script(MINI_DIR, "tools/recipe/export_model.sh", "--exp_dir",
                          str(tmp_path / "exp"), "--checkpoint", str(checkpoint),
                          "--onnx", "false", env=env).stdout

    assert f"removed {onnx}: it was exported from an earlier model" in export()
    assert not onnx.exists()
    onnx.write_text("this model")
    assert "removed" not in export() and onnx.read_text() == "this model"


def test_extract_embedding_takes_wespeakers_augmentation_flags_with_aug_prob_0(tmp_path):
    _, log, extract_with, extractions = _fake_extraction(tmp_path, "new.pt", "new.list")

    def extract(*extra, check=True):
        return extract_with("new.pt", "new.list", *extra, check=check)

    extract("--reverb_data", str(tmp_path / "rirs dir" / "wav.scp"),
            "--noise_data", "data/musan/lmdb", "--aug_prob", "0.0")
    with open(log) as handle:
        call = [line for line in handle if "wespeaker_py.bin.extract" in line][-1]
    assert f"--reverb_data {tmp_path}/rirs dir/wav.scp --noise_data data/musan/lmdb" in call
    assert "--aug_prob 0.0" in call
    result = extract("--aug_prob", "0.6", check=False)
    assert result.returncode != 0
    assert "--aug_prob 0.6: augmenting utterances at extraction is not supported" in result.stderr
    assert extractions() == 1


def test_an_up_to_date_result_with_skipped_utterances_says_how_to_retry_them(
        tmp_path, monkeypatch):
    exp, _, extract, extractions = _fake_extraction(tmp_path, "new.pt", "new.list")
    embeddings = tmp_path / "embeddings.json"
    embeddings.write_text(json.dumps({"test": {"u1": [1.0, 0.0]}}))
    monkeypatch.setenv("FAKE_EMBEDDINGS", str(embeddings))
    assert "1 of 2 utterances were skipped" in extract("new.pt", "new.list", "--wavs_num",
                                                       "2").stderr
    again = extract("new.pt", "new.list", "--wavs_num", "2").stdout
    assert extractions() == 1 and "up to date" in again
    assert (f"after fixing the audio, remove {exp}/embeddings/test/extract.result and run the"
            " stage again to retry them") in again


def test_extract_embedding_passes_a_shard_lists_utterance_count_on(tmp_path):
    _, log, extract, _ = _fake_extraction(tmp_path, "new.pt", "new.list")

    def last_call():
        with open(log) as handle:
            return [line for line in handle if "wespeaker_py.bin.extract" in line][-1]

    extract("new.pt", "new.list", "--data_type", "shard", "--wavs_num", "122")
    assert "--expected_utterances 122" in last_call()
    # a raw list names its utterances: bin.extract counts them itself
    (tmp_path / "new.list").write_text("another list")
    extract("new.pt", "new.list", "--wavs_num", "122")
    assert "--expected_utterances" not in last_call()


def test_a_finished_run_of_other_settings_is_refused_not_taken_as_done(tmp_path):
    config = "num_epochs: 3\nseed: 42\noptimizer_args:\n  lr: 0.1\n"
    done = dict(checkpoints=(1, 2, 3), final=3, config_text=config)
    out, calls = _train_stage(tmp_path, {}, **done)
    assert "training is finished" in out and calls == []
    note = tmp_path / "exp" / "models" / "final_model.pt.settings"
    assert "seed=42" in note.read_text() and "train_args=--extra_flag 1" in note.read_text()
    # the same settings, the config's comments and layout aside: still finished
    out, _ = _train_stage(tmp_path, {}, **{**done, "config_text": "# note\n" + config})
    assert "training is finished" in out
    for changed in (dict(args="--extra_flag 2"), dict(args="--extra_flag 1 --seed 7"),
                    dict(config_text=config.replace("0.1", "0.2")),
                    dict(variables={"data_type": "shard"})):
        variables = changed.pop("variables", {})
        result = _train_stage(tmp_path, variables, **{**done, **changed}, check=False)
        assert result.returncode != 0, changed
        assert "finished training with other settings" in result.stderr
        assert "then:" in result.stderr and "now:" in result.stderr
        assert f"remove {tmp_path / 'exp'}" in result.stderr
        assert f"accept it: rm {note}" in result.stderr  # printed under set -e too
    assert "seed=42" in note.read_text()  # the note of the finished run is kept
    result = _train_stage(tmp_path, {}, **{**done, "args": "--extra_flag 1 --seed 7"},
                          check=False)
    assert "then: seed=42" in result.stderr and "now:  seed=7" in result.stderr


def test_mini_default_exp_dir_names_the_seed_when_one_is_given(tmp_path):
    env, log = _dry_run_env(tmp_path)
    env["FAKE_NO_TRAIN"] = "1"
    data = tmp_path / "data"
    out = run_script(MINI_DIR, "run.sh", "--stage", "3", "--stop_stage", "3", "--data", str(data),
                     "--seed", "7", env=env).stdout
    assert "in exp/ecapa_tdnn-librispeech_tc100-seed7" in out
    out = run_script(MINI_DIR, "run.sh", "--stage", "3", "--stop_stage", "3", "--data", str(data),
                     env=env).stdout
    assert "in exp/ecapa_tdnn-librispeech_tc100\n" in out
    with open(log) as handle:
        trains = [line.split() for line in handle if "wespeaker_py.bin.train" in line]
    assert trains[0][trains[0].index("--seed") + 1] == "7" and "--seed" not in trains[1]


@pytest.mark.parametrize("recipe_dir,script", RECIPES)
def test_a_mistyped_option_stops_the_recipe(recipe_dir, script):
    result = run_script(recipe_dir, script, "--stop_stag", "3", check=False)
    assert result.returncode != 0
    assert "--stop_stag" in result.stderr


def test_run_wavlm_stops_with_a_message_when_the_weights_are_missing(tmp_path):
    missing = str(tmp_path / "wavlm-large")
    result = run_script(V2_DIR, "run_wavlm.sh", "--stage", "3", "--stop_stage", "3",
                        "--ssl_path", missing, check=False)
    assert result.returncode != 0
    assert f"WavLM weights not found at {missing}" in result.stderr


def test_v2_stage2_writes_lists_and_skips_them_when_up_to_date(tmp_path):
    data = tmp_path / "data"
    for dset, speakers in (("vox2_dev", ("id00012", "id00013")), ("vox1", ("id10270",))):
        os.makedirs(data / dset)
        with open(data / dset / "wav.scp", "w") as scp, open(data / dset / "utt2spk", "w") as u2s:
            for spk in speakers:
                path = str(tmp_path / "wav" / f"{spk}.wav")
                write_tone(path, 1.0, 16000, 200)
                scp.write(f"{spk}/v/00001.wav {path}\n")
                u2s.write(f"{spk}/v/00001.wav {spk}\n")
    args = ("--stage", "2", "--stop_stage", "2", "--data", str(data), "--data_type", "raw")
    run_script(V2_DIR, "run.sh", *args)
    lists = [str(data / dset / "raw.list") for dset in ("vox2_dev", "vox1")]
    assert [sum(1 for _ in open(path)) for path in lists] == [2, 1]
    before = mtimes(lists)
    second = run_script(V2_DIR, "run.sh", *args)
    assert second.stdout.count("is up to date") == 2
    assert mtimes(lists) == before


def test_make_lists_makes_shards_again_for_another_size_a_shard_gone_or_audio_rewritten(
        tmp_path):
    data = tmp_path / "data"
    os.makedirs(data / "s1")
    wavs = [str(tmp_path / "wav" / f"u{i}.wav") for i in range(4)]
    with open(data / "s1" / "wav.scp", "w") as scp, open(data / "s1" / "utt2spk", "w") as u2s:
        for i, path in enumerate(wavs):
            write_tone(path, 0.5, 16000, 200 + 20 * i)
            scp.write(f"u{i} {path}\n")
            u2s.write(f"u{i} spk{i % 2}\n")
    shard_list = data / "s1" / "shard.list"

    def make(per_shard):
        result = run_script(V2_DIR, "tools/recipe/make_lists.sh", "--data", str(data), "--sets",
                            "s1", "--num_threads", "1", "--num_utts_per_shard", per_shard)
        return result.stdout + result.stderr

    def shard_of_u1():
        for shard in shard_list.read_text().split():
            with tarfile.open(shard) as tar:
                if "u1.wav" in tar.getnames():
                    return shard, sf.info(io.BytesIO(tar.extractfile("u1.wav").read())).frames
        raise AssertionError("u1 is in no shard")

    make("2")
    shards = shard_list.read_text().split()
    assert len(shards) == 2
    before = mtimes(shards + [str(shard_list)])
    assert f"{shard_list} is up to date" in make("2")
    assert mtimes(shards + [str(shard_list)]) == before

    # audio converted again in place (same path, so wav.scp is unchanged): its shard is
    # made again, the other kept
    write_tone(wavs[1], 0.75, 16000, 300)
    rewritten = make("2")
    assert "is up to date" not in rewritten and "(1 written, 1 kept" in rewritten
    assert shard_of_u1()[1] == 12000

    assert "is up to date" not in make("1")
    shards = shard_list.read_text().split()
    assert len(shards) == 4
    os.remove(shards[3])
    again = make("1")
    assert "is up to date" not in again and "(1 written, 3 kept" in again
    assert shard_list.read_text().split() == shards and os.path.isfile(shards[3])
    assert "is up to date" in make("1")


def test_scp_of_refuses_a_path_whose_key_would_hold_a_space(tmp_path):
    top = tmp_path / "sp ace"
    for rel in ("room a/x/1.wav", "ok/x/2.wav"):
        os.makedirs(os.path.dirname(top / rel), exist_ok=True)
        (top / rel).write_bytes(b"")
    out = tmp_path / "wav.scp"
    script = f". tools/recipe_helpers.sh; write_list '{out}' scp_of '{top}'"
    result = subprocess.run(["bash", "-c", script], cwd=MINI_DIR, capture_output=True, text=True)
    assert result.returncode != 0
    assert f"{top}/room a/x/1.wav: a space in its last three path components" in result.stderr
    assert not out.exists()
    # a space further up the path is no part of the key
    script = f". tools/recipe_helpers.sh; scp_of '{top}/ok'"
    listed = subprocess.run(["bash", "-c", script], cwd=MINI_DIR, capture_output=True, text=True,
                            check=True).stdout
    assert listed == f"ok/x/2.wav {top}/ok/x/2.wav\n"


def _prepare_v2(data, env):
    return run_script(V2_DIR, "local/prepare_data.sh", "--stage", "1", "--stop_stage", "4",
                      "--data", str(data), "--nj", "2", env=env, check=False)


@pytest.mark.parametrize("folder", ["plain", "sp ace"])
def test_v2_prepare_data_unpacks_converts_lists_and_skips_finished_steps(tmp_path, folder):
    tmp_path = tmp_path / folder
    data = pathlib.Path(make_fake_voxceleb_data(tmp_path))
    trials_dir = data / "vox1" / "trials"
    os.makedirs(trials_dir)
    for name in ("vox1_O_cleaned", "vox1_E_cleaned", "vox1_H_cleaned"):
        with open(trials_dir / f"{name}.txt", "w") as out:
            out.write("1 id10270/vida/00001.wav id10270/vidb/00002.wav\n"
                      "0 id10270/vida/00001.wav id10001/vidc/00001.wav\n")
    ffmpeg_log = str(tmp_path / "ffmpeg.log")
    install_fake_ffmpeg(str(tmp_path / "bin"), ffmpeg_log)
    env = {"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}

    first = _prepare_v2(data, env)
    assert first.returncode == 0, first.stdout + first.stderr
    vox1 = read_table(data / "vox1" / "wav.scp")
    assert sorted(vox1) == ["id10001/vidc/00001.wav", "id10002/vidc/00001.wav",
                            "id10270/vida/00001.wav", "id10270/vida/00002.wav",
                            "id10270/vidb/00001.wav", "id10270/vidb/00002.wav"]
    assert read_table(data / "vox1" / "utt2spk")["id10270/vidb/00002.wav"] == ["id10270"]
    assert read_table(data / "vox1" / "spk2utt")["id10270"] == sorted(
        key for key in vox1 if key.startswith("id10270"))
    with open(data / "vox2_dev" / "wav.scp") as handle:  # a path is the rest of its line
        vox2 = dict(line.rstrip("\n").split(" ", 1) for line in handle)
    assert len(vox2) == 6 and all(path.endswith(".wav") and os.path.isfile(path)
                                  for path in vox2.values())
    assert sorted(read_table(data / "vox2_dev" / "spk2utt")) == ["id00012", "id00013"]
    assert sorted(read_table(data / "musan" / "wav.scp")) == [
        "music/fma/music-fma-0000.wav", "noise/free-sound/noise-free-sound-0000.wav",
        "speech/librivox/speech-librivox-0000.wav"]
    assert list(read_table(data / "rirs" / "wav.scp")) == ["smallroom/Room001/Room001-00001.wav"]
    with open(trials_dir / "vox1_O_cleaned.kaldi") as handle:
        assert handle.read().split("\n")[:2] == [
            "id10270/vida/00001.wav id10270/vidb/00002.wav target",
            "id10270/vida/00001.wav id10001/vidc/00001.wav nontarget"]
    with open(ffmpeg_log) as handle:
        assert len(handle.read().splitlines()) == 6

    outputs = [str(data / dset / name) for dset in ("vox1", "vox2_dev")
               for name in ("wav.scp", "utt2spk", "spk2utt")]
    before = mtimes(outputs)
    second = _prepare_v2(data, env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert second.stdout.count("present and verified") == 5
    assert second.stdout.count("already unpacked") == 5
    assert "already converted" in second.stdout
    with open(ffmpeg_log) as handle:
        assert len(handle.read().splitlines()) == 6  # nothing converted twice
    assert mtimes(outputs) == before


def test_v2_prepare_data_leaves_no_half_written_list_behind(tmp_path):
    data = pathlib.Path(make_fake_voxceleb_data(tmp_path))
    install_fake_ffmpeg(str(tmp_path / "bin"), str(tmp_path / "ffmpeg.log"))
    env = {"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
    run_script(V2_DIR, "local/prepare_data.sh", "--stage", "1", "--stop_stage", "3",
               "--data", str(data), env=env)
    # stage 4 cut short while it writes the MUSAN list: a sort that dies after one line
    broken = tmp_path / "broken"
    os.makedirs(broken)
    (broken / "sort").write_text("#!/usr/bin/env bash\nhead -n 1\nexit 1\n")
    os.chmod(broken / "sort", 0o755)
    result = run_script(V2_DIR, "local/prepare_data.sh", "--stage", "4", "--stop_stage", "4",
                        "--data", str(data), env={"PATH": f"{broken}:{env['PATH']}"},
                        check=False)
    assert result.returncode != 0
    assert not (data / "musan" / "wav.scp").exists()
    # the next run writes the whole list, not skipping a truncated one as up to date
    (data / "vox1" / "trials").mkdir(parents=True, exist_ok=True)
    for name in ("vox1_O_cleaned", "vox1_E_cleaned", "vox1_H_cleaned"):
        (data / "vox1" / "trials" / f"{name}.txt").write_text(
            "1 id10270/vida/00001.wav id10270/vidb/00002.wav\n")
    run_script(V2_DIR, "local/prepare_data.sh", "--stage", "4", "--stop_stage", "4",
               "--data", str(data), env=env)
    assert len(read_table(data / "musan" / "wav.scp")) == 3
    assert not glob.glob(str(data / "*" / "*.tmp"))


def test_v2_stage3_lists_failed_conversions_and_converts_files_unpacked_later(tmp_path):
    data = pathlib.Path(make_fake_voxceleb_data(tmp_path))
    bin_dir, log = tmp_path / "bin", tmp_path / "ffmpeg.log"
    install_fake_ffmpeg(str(bin_dir), str(log))
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}

    def stage(first, last):
        return run_script(V2_DIR, "local/prepare_data.sh", "--stage", str(first), "--stop_stage",
                          str(last), "--data", str(data), "--corpora", "vox2", "--nj", "2",
                          env=env, check=False)

    assert stage(1, 2).returncode == 0
    raw = data / "raw_data"
    m4a_dir = raw / "voxceleb2_m4a" / "dev" / "aac" / "id00012" / "vidd"
    shutil.copy(m4a_dir / "00001.m4a", m4a_dir / "bad.m4a")
    failed = stage(3, 3)
    assert failed.returncode != 0
    assert (f"1 of 7 conversions failed (the m4a files are listed in "
            f"{raw}/voxceleb2_m4a.failed)") in failed.stderr
    assert (raw / "voxceleb2_m4a.failed").read_text() == f"{m4a_dir}/bad.m4a\n"
    assert not glob.glob(str(raw / "voxceleb2_wav" / "**" / "*.tmp"), recursive=True)

    os.remove(m4a_dir / "bad.m4a")
    assert stage(3, 3).returncode == 0
    assert "already converted" in stage(3, 3).stdout
    # a file unpacked after the conversion (a newer .vox2_aac.zip.unpacked) is converted too
    shutil.copy(m4a_dir / "00001.m4a", m4a_dir / "00009.m4a")
    later = os.stat(raw / ".voxceleb2_wav.converted").st_mtime + 10
    os.utime(raw / ".vox2_aac.zip.unpacked", (later, later))
    again = stage(3, 3)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already converted" not in again.stdout
    assert (raw / "voxceleb2_wav" / "dev" / "aac" / "id00012" / "vidd" / "00009.wav").is_file()


def test_v2_prepare_data_rejects_a_corrupt_download_and_names_missing_archives(tmp_path):
    data = pathlib.Path(make_fake_voxceleb_data(tmp_path))
    download_dir = data / "download_data"
    os.remove(download_dir / "vox1_test_wav.zip.md5_ok")  # present but not verified
    result = _prepare_v2(data, {})
    assert result.returncode != 0
    assert "vox1_test_wav.zip has md5" in result.stderr

    os.remove(download_dir / "vox1_test_wav.zip")
    result = _prepare_v2(data, {})
    assert result.returncode != 0
    assert "missing archives: vox1_test_wav.zip" in result.stderr


@pytest.mark.parametrize("recipe_dir", [V2_DIR, WHISPER_DIR])
def test_run_passes_vox_url_to_the_data_preparation(tmp_path, recipe_dir):
    data = pathlib.Path(make_fake_voxceleb_data(tmp_path))
    os.remove(data / "download_data" / "vox1_test_wav.zip")
    bin_dir, log = tmp_path / "bin", tmp_path / "wget.log"
    os.makedirs(bin_dir)
    (bin_dir / "wget").write_text(f'#!/usr/bin/env bash\necho "$@" >> "{log}"\nexit 1\n')
    os.chmod(bin_dir / "wget", 0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    args = ("--stage", "1", "--stop_stage", "1", "--data", str(data))

    result = run_script(recipe_dir, "run.sh", *args, env=env, check=False)
    assert result.returncode != 0
    assert "missing archives: vox1_test_wav.zip" in result.stderr
    assert not log.exists()

    result = run_script(recipe_dir, "run.sh", *args, "--vox_url", "https://vox.example/files",
                        env=env, check=False)
    assert result.returncode != 0
    assert "https://vox.example/files/vox1_test_wav.zip" in log.read_text()


SPEAKERS = ["anna", "bert", "cleo", "dave", "emma", "finn"]


def test_mini_prepare_splits_by_trials_and_skips_when_done(tmp_path):
    corpus = tmp_path / "corpus"
    utts = make_kaldi_dir(str(corpus), SPEAKERS, 4, 8000, trial_speakers=SPEAKERS)
    data = tmp_path / "prepared"
    args = ("--data_dir", str(corpus), "--data", str(data))
    first = run_script(MINI_DIR, "local/prepare_data.sh", *args)
    test_utts = {f"{spk}-{i:03d}" for spk in SPEAKERS for i in (0, 1)}
    assert set(read_table(data / "test" / "wav.scp")) == test_utts
    train = read_table(data / "train" / "wav.scp")
    assert set(train) == set(utts) - test_utts  # utterances of no trial
    assert all(os.path.isabs(path) and os.path.isfile(path) for (path,) in train.values())
    assert "(8000 Hz)" in first.stdout
    # too few speakers to hold some out: the back-end uses the training set
    assert "the back-end uses the training set" in first.stdout
    assert read_table(data / "backend" / "wav.scp") == train
    assert read_table(data / "train" / "spk2utt")["anna"] == ["anna-002", "anna-003"]
    cali = [line.split() for line in open(data / "test" / "trials" / "backend_cali.kaldi")]
    assert {label for _, _, label in cali} == {"target", "nontarget"}
    assert all(e in train and t in train and e != t for e, t, _ in cali)
    assert os.path.getsize(data / "test" / "trials" / "trials") > 0
    for aug in ("musan", "rirs"):
        assert len(read_table(data / aug / "wav.scp")) > 0

    second = run_script(MINI_DIR, "local/prepare_data.sh", *args)
    assert "up to date" in second.stdout
    with open(corpus / "train_spk", "w") as out:  # a new input invalidates the sets
        out.write("anna\nbert\ncleo\n")
    run_script(MINI_DIR, "local/prepare_data.sh", *args)
    assert set(read_table(data / "train" / "spk2utt")) == {"anna", "bert", "cleo"}


def test_mini_prepare_and_lists_take_paths_with_spaces(tmp_path):
    root = tmp_path / "sp ace"
    corpus = root / "corpus"
    make_kaldi_dir(str(corpus), SPEAKERS, 4, 16000, trial_speakers=SPEAKERS)
    # a wav file whose own name holds a space too
    os.rename(corpus / "wav" / "anna" / "anna-002.flac", corpus / "wav" / "anna" / "anna 002.flac")
    scp = (corpus / "wav.scp").read_text().replace("wav/anna/anna-002.flac",
                                                   "wav/anna/anna 002.flac")
    (corpus / "wav.scp").write_text(scp)
    data = root / "prepared"
    run_script(MINI_DIR, "run.sh", "--stage", "1", "--stop_stage", "2", "--data_dir", str(corpus),
               "--data", str(data), "--exp_dir", str(root / "exp"))
    for dset in ("train", "backend", "test", "musan", "rirs"):
        with open(data / dset / "wav.scp") as handle:
            for line in handle:
                path = line.rstrip("\n").split(" ", 1)[1]
                assert os.path.isfile(path), (dset, line)
    with open(data / "train" / "wav.scp") as handle:
        assert f"anna-002 {corpus}/wav/anna/anna 002.flac\n" in handle.read()
    with open(data / "train" / "raw.list") as handle:
        assert f'"{corpus}/wav/anna/anna 002.flac"' in handle.read()


def test_mini_prepare_holds_every_third_speaker_out_for_the_back_end(tmp_path):
    corpus = tmp_path / "corpus"
    make_kaldi_dir(str(corpus), SPEAKERS, 4, 16000, trial_speakers=SPEAKERS)
    data = tmp_path / "prepared"
    run_script(MINI_DIR, "local/prepare_data.sh", "--data_dir", str(corpus), "--data",
               str(data), "--min_backend_speakers", "6")
    assert list(read_table(data / "backend" / "spk2utt")) == ["cleo", "finn"]
    assert list(read_table(data / "train" / "spk2utt")) == ["anna", "bert", "dave", "emma"]
    backend = read_table(data / "backend" / "utt2spk")
    assert len(backend) == 4  # the utterances of cleo and finn in no trial
    cali = [line.split() for line in open(data / "test" / "trials" / "backend_cali.kaldi")]
    assert all(e in backend and t in backend for e, t, _ in cali)


def test_mini_prepare_refuses_a_corpus_with_nothing_left_to_train_on(tmp_path):
    corpus = tmp_path / "corpus"
    make_kaldi_dir(str(corpus), ["anna", "bert"], 2, 16000, trial_speakers=["anna", "bert"])
    result = run_script(MINI_DIR, "local/prepare_data.sh", "--data_dir", str(corpus),
                        "--data", str(tmp_path / "prepared"), check=False)
    assert result.returncode != 0
    assert "nothing is left to train on" in result.stderr


def _prepare_mini(corpus, data, *extra, check=True):
    return run_script(MINI_DIR, "local/prepare_data.sh", "--data_dir", str(corpus), "--data",
                      str(data), *extra, check=check)


def test_mini_prepare_reads_voxceleb1s_label_first_trials(tmp_path):
    corpus = tmp_path / "corpus"
    utts = make_kaldi_dir(str(corpus), SPEAKERS, 4, 8000, trial_speakers=SPEAKERS)
    kaldi = [line.split() for line in open(corpus / "trials")]
    (corpus / "trials").write_text("".join(f"{1 if label == 'target' else 0} {e} {t}\n"
                                           for e, t, label in kaldi))
    data = tmp_path / "prepared"
    _prepare_mini(corpus, data)
    test_utts = {f"{spk}-{i:03d}" for spk in SPEAKERS for i in (0, 1)}
    assert set(read_table(data / "test" / "wav.scp")) == test_utts
    assert set(read_table(data / "train" / "wav.scp")) == set(utts) - test_utts

    with open(corpus / "trials", "a") as out:
        out.write("2 anna-000 bert-001\n")
    result = _prepare_mini(corpus, tmp_path / "prepared2", check=False)
    assert result.returncode != 0
    assert f"{corpus}/trials:13: expected" in result.stderr


@pytest.mark.parametrize("crlf", [("train_spk",), ("train_spk", "utt2spk", "trials")])
def test_mini_prepare_takes_tables_with_windows_line_ends(tmp_path, crlf):
    corpus = tmp_path / "corpus"
    make_kaldi_dir(str(corpus), SPEAKERS, 4, 8000, trial_speakers=SPEAKERS)
    (corpus / "train_spk").write_text("anna\nbert\ncleo\n")
    for name in crlf:
        text = (corpus / name).read_text()
        (corpus / name).write_bytes(text.replace("\n", "\r\n").encode())
    data = tmp_path / "prepared"
    _prepare_mini(corpus, data)
    assert list(read_table(data / "train" / "spk2utt")) == ["anna", "bert", "cleo"]
    for dset in ("train", "backend", "test"):
        for name in ("wav.scp", "utt2spk", "spk2utt"):
            assert "\r" not in (data / dset / name).read_text(), (dset, name)


def test_mini_prepare_keeps_pipe_commands_of_wav_scp_as_they_are(tmp_path):
    corpus = tmp_path / "corpus"
    make_kaldi_dir(str(corpus), SPEAKERS, 4, 8000, trial_speakers=SPEAKERS)
    pipe = f"cat {corpus}/wav/anna/anna-000.flac |"
    scp = (corpus / "wav.scp").read_text()
    (corpus / "wav.scp").write_text(scp.replace("wav/anna/anna-000.flac", pipe))
    data = tmp_path / "prepared"
    _prepare_mini(corpus, data)
    with open(data / "test" / "wav.scp") as handle:
        lines = handle.read().splitlines()
    assert f"anna-000 {pipe}" in lines
    assert f"anna-001 {corpus}/wav/anna/anna-001.flac" in lines


def test_mini_prepare_is_done_again_when_an_option_changes(tmp_path):
    corpus = tmp_path / "corpus"
    make_kaldi_dir(str(corpus), SPEAKERS, 4, 8000, trial_speakers=SPEAKERS)
    data = tmp_path / "prepared"
    _prepare_mini(corpus, data, "--num_cali_trials", "20")
    cali = data / "test" / "trials" / "backend_cali.kaldi"
    assert len(cali.read_text().splitlines()) == 20
    assert "up to date" in _prepare_mini(corpus, data, "--num_cali_trials", "20").stdout
    again = _prepare_mini(corpus, data, "--num_cali_trials", "10")
    assert "up to date" not in again.stdout
    assert len(cali.read_text().splitlines()) == 10
    renamed = _prepare_mini(corpus, data, "--num_cali_trials", "10", "--trials_name", "mine")
    assert "up to date" not in renamed.stdout
    assert (data / "test" / "trials" / "mine").read_text() == (corpus / "trials").read_text()


def test_make_trials_draws_balanced_trials_of_distinct_utterances(tmp_path):
    utt2spk = tmp_path / "utt2spk"
    with open(utt2spk, "w") as out:
        for spk in "abc":   # 132 target pairs, 168 nontarget ones
            for i in range(12 if spk != "c" else 1):
                out.write(f"{spk}{i} {spk}\n")
    out_path = tmp_path / "cali.kaldi"
    subprocess.run(["python", os.path.join(REPO, "tools", "make_trials.py"), "--utt2spk",
                    str(utt2spk), "--num_trials", "200", str(out_path)], check=True,
                   capture_output=True)
    trials = [line.split() for line in open(out_path)]
    assert len(trials) == 200 and len({frozenset(t[:2]) for t in trials}) == 200
    assert sum(label == "target" for _, _, label in trials) == 100
    for enroll, test, label in trials:
        assert enroll != test
        assert (enroll[0] == test[0]) == (label == "target")


def test_make_trials_all_pairs_lists_every_pair_once(tmp_path):
    utt2spk = tmp_path / "utt2spk"
    utt2spk.write_text("a1 a\na2 a\na3 a\nb1 b\nc1 c\n")
    out_path = tmp_path / "trials"
    subprocess.run(["python", os.path.join(REPO, "tools", "make_trials.py"), "--utt2spk",
                    str(utt2spk), "--all_pairs", str(out_path)], check=True,
                   capture_output=True)
    trials = [tuple(line.split()) for line in open(out_path)]
    assert len(trials) == 10 and len({frozenset(t[:2]) for t in trials}) == 10
    assert sorted(t[:2] for t in trials if t[2] == "target") == [
        ("a1", "a2"), ("a1", "a3"), ("a2", "a3")]


def test_the_mini_corpus_trials_use_every_target_pair_of_the_test_speakers():
    corpus = os.path.join(MINI_DIR, "data", "librispeech_tc100")
    utt2spk = {utt: spk for utt, (spk,) in read_table(os.path.join(corpus, "utt2spk")).items()}
    trials = [line.split() for line in open(os.path.join(corpus, "trials"))]
    utts = {utt for enroll, test, _ in trials for utt in (enroll, test)}
    targets = {frozenset((e, t)) for e, t, label in trials if label == "target"}
    possible = {frozenset((a, b)) for a in utts for b in utts
                if a < b and utt2spk[a] == utt2spk[b]}
    assert targets == possible and len(targets) == 199
    assert all((utt2spk[e] == utt2spk[t]) == (label == "target") for e, t, label in trials)


def _write_scores(path, target_shift, seed, extra=""):
    rng = np.random.default_rng(seed)
    with open(path, "w") as out:
        for index in range(200):
            target = index % 2 == 0
            score = rng.normal(target_shift if target else 0.0, 1.0)
            out.write(f"e{index} t{index} {score:.5f} {'target' if target else 'nontarget'}"
                      f"{extra}\n")


def test_results_table_lists_each_backend_and_parses_back(tmp_path):
    exp = tmp_path / "exp"
    scores = exp / "scores"
    os.makedirs(scores)
    with open(exp / "config.yaml", "w") as out:
        out.write("model: ResNet18\nmodel_args:\n  feat_dim: 80\n  embed_dim: 64\n"
                  "  pooling_func: TSTP\n")
    _write_scores(scores / "trials.score", 1.0, 0)
    _write_scores(scores / "train_asnorm30_trials.score", 2.0, 1, " 1.0 1.0 0.1 0.1")
    _write_scores(scores / "cali_train_asnorm30_trials.score", 3.0, 2)
    _write_scores(scores / "trials.pldascore", 4.0, 3)
    _write_scores(scores / "train_asnorm30_train_cali.kaldi.score", 0.0, 4)  # other trials
    labels = [label for label, _ in find_score_files(str(scores), "trials")]
    assert labels == ["cosine", "AS-Norm (top 30)", "AS-Norm (top 30) + QMF", "PLDA"]
    # a second cohort with the same method and top_n: each row names its cohort
    other = tmp_path / "other"
    shutil.copytree(scores, other)
    _write_scores(other / "vox2_asnorm30_trials.score", 2.0, 5, " 1.0 1.0 0.1 0.1")
    assert [label for label, _ in find_score_files(str(other), "trials")] == [
        "cosine", "AS-Norm (top 30), cohort train", "AS-Norm (top 30), cohort vox2",
        "AS-Norm (top 30) + QMF", "PLDA"]

    table = write_report([str(exp)], ["trials"], str(exp / "results.md"), str(exp))
    assert open(exp / "results.md").read() == table
    assert os.path.getsize(exp / "det_trials.png") > 0
    rows = parse_table(table)
    assert [row["Scoring"] for row in rows] == labels
    assert all(row["Model"] == "ResNet18-TSTP-emb64" for row in rows)
    assert rows[0]["Params"].endswith("M") and float(rows[0]["Params"][:-1]) > 1
    eers = [float(row["trials EER (%)"]) for row in rows]
    assert eers == sorted(eers, reverse=True)  # better separated scores, lower EER
    assert all(0 <= float(row["trials minDCF"]) <= 1 for row in rows)


def test_a_score_file_of_a_backend_not_in_the_table_gets_a_row_of_its_own(tmp_path, caplog):
    exp = tmp_path / "exp"
    scores = exp / "scores"
    os.makedirs(scores / "calibration")
    with open(exp / "config.yaml", "w") as out:
        out.write("model: ResNet18\nmodel_args:\n  feat_dim: 80\n  embed_dim: 64\n"
                  "  pooling_func: TSTP\n")
    for trials_name in ("a.kaldi", "b.kaldi"):
        _write_scores(scores / f"{trials_name}.score", 1.0, 0)
        _write_scores(scores / f"{trials_name}.toyscore", 3.0, 1)
    _write_scores(scores / "a.kaldi.ldascore", 2.0, 2)
    # not score files of a.kaldi: what the recipe writes beside them, another list's scores
    for name in ("a.kaldi.score.settings", "a.kaldi.score.det.png", "a.kaldi.toyscore.settings",
                 "test_cos_result", "a.kaldi.log", "c.kaldi.toyscore", "x_a.kaldi.toyscore"):
        (scores / name).write_text("e0 t0 1.0 target\n")
    found = find_score_files(str(scores), "a.kaldi")
    assert found == [("cosine", str(scores / "a.kaldi.score")),
                     ("*.ldascore", str(scores / "a.kaldi.ldascore")),
                     ("*.toyscore", str(scores / "a.kaldi.toyscore"))]

    # a fine-tuning of itself, so write_report looks at the same folder twice: once to see
    # that it has score files, once to measure them; each unnamed file is said once
    with caplog.at_level("INFO", logger="wespeaker_py.scoring.report"):
        rows = parse_table(write_report([str(exp)], ["a.kaldi", "b.kaldi"], None, None))
        caplog.clear()
        write_report([str(exp), str(exp)], ["a.kaldi"], None, None)
    told = [record.getMessage() for record in caplog.records
            if "no back-end of BACKENDS" in record.getMessage()]
    assert sorted(told) == sorted(
        f"{scores / name}: no back-end of BACKENDS (wespeaker_py/scoring/report.py) names "
        f"this score file; its row is labelled {label}"
        for name, label in [("a.kaldi.ldascore", "*.ldascore"),
                            ("a.kaldi.toyscore", "*.toyscore")] * 2)
    assert not [record for record in caplog.records if record.levelname != "INFO"]
    assert [row["Scoring"] for row in rows] == ["cosine", "*.ldascore", "*.toyscore"]
    toy = rows[2]
    assert float(toy["a.kaldi EER (%)"]) < float(rows[0]["a.kaldi EER (%)"])
    assert toy["b.kaldi EER (%)"] == toy["a.kaldi EER (%)"]  # one row for both lists
    assert rows[1]["b.kaldi EER (%)"] == "-"


def test_format_table_marks_missing_trials():
    from wespeaker_py.scoring.report import BackendResult, ExperimentResults

    table = format_table([ExperimentResults("X", None, [BackendResult("cosine")])], ["a"])
    rows = parse_table(table)
    assert rows == [{"Model": "X", "Params": "n/a", "Scoring": "cosine", "a EER (%)": "-",
                     "a minDCF": "-"}]


@pytest.mark.parametrize("recipe_dir,trials,cohort,eval_set", [
    (V2_DIR, ("vox1_O_cleaned.kaldi", "vox1_E_cleaned.kaldi", "vox1_H_cleaned.kaldi"),
     "vox2_dev", "vox1"),
    (CNCELEB_DIR, ("CNC-Eval-Concat.lst", "CNC-Eval-Avg.lst"), "cnceleb_train", "eval")])
def test_scoring_stages_write_the_results_table_of_every_score_file(tmp_path, recipe_dir,
                                                                    trials, cohort, eval_set):
    env, _ = _dry_run_env(tmp_path)
    env["FAKE_REAL_SCRIPTS"] = "tools/results_table.py"
    exp, data = tmp_path / "exp" / "base", tmp_path / "data"
    config = "model: ResNet18\nmodel_args:\n  feat_dim: 80\n  embed_dim: 64\n"
    scores = exp / "scores"
    os.makedirs(scores)
    (exp / "config.yaml").write_text(config)
    _write_scores(scores / f"{trials[0]}.score", 1.0, 0)   # what stage 5 scored
    # the large-margin fine-tuning, scoring but with no score file yet: left out
    lm = tmp_path / "exp" / "base-LM"
    os.makedirs(lm / "scores")
    (lm / "config.yaml").write_text(config + "do_lm: true\n")
    for name in (cohort, eval_set):   # the embeddings (the cohort's the training set's),
        os.makedirs(exp / "embeddings" / name)   # older than the scores
        (exp / "embeddings" / name / "xvector.scp").write_text("")
        os.utime(exp / "embeddings" / name / "xvector.scp", (1e9, 1e9))
    args = ("--exp_dir", str(exp), "--data", str(data), "--data_type", "raw", "--gpus", "[]")

    out = run_script(recipe_dir, "run.sh", "--stage", "5", "--stop_stage", "5", *args,
                     env=env).stdout
    assert f"Table: {exp}/results.md" in out
    rows = parse_table(open(exp / "results.md").read())
    assert [row["Scoring"] for row in rows] == ["cosine"]
    # a column pair for every list the recipe scores; a list without scores yet reads "-"
    assert list(rows[0]) == ["Model", "Params", "Scoring"] + [
        f"{name} {metric}" for name in trials for metric in ("EER (%)", "minDCF")]
    assert float(rows[0][f"{trials[0]} EER (%)"]) > 0 and rows[0][f"{trials[1]} EER (%)"] == "-"
    assert os.path.getsize(exp / f"det_{trials[0]}.png") > 0
    assert f"DET plot: {exp}/det_{trials[0]}.png" in out

    # AS-Norm's scores (stage 6), PLDA's (score_plda.sh run by hand) and the large-margin
    # fine-tuning's: the next scoring stage lists them all
    _write_scores(scores / f"{cohort}_asnorm300_{trials[0]}.score", 2.0, 1, " 1.0 1.0 0.1 0.1")
    _write_scores(scores / f"{trials[0]}.pldascore", 3.0, 2)
    _write_scores(lm / "scores" / f"{trials[0]}.score", 1.5, 3)
    out = run_script(recipe_dir, "run.sh", "--stage", "5", "--stop_stage", "6", *args,
                     env=env).stdout
    assert out.count("Table: ") == 1   # once, after the scoring stages that ran
    rows = parse_table(open(exp / "results.md").read())
    assert [(row["Model"], row["Scoring"]) for row in rows] == [
        ("ResNet18-emb64", "cosine"), ("ResNet18-emb64", "AS-Norm (top 300)"),
        ("ResNet18-emb64", "PLDA"), ("ResNet18-emb64-LM", "cosine")]


# ---------------------------------------------------------------------------
# The mini recipe reduced to 2 epochs, through stage 11 (about 2 minutes on 2 cores). Its
# stage 12 (diarization) is the CI's: the README's main command runs the whole recipe and
# fails without its DER table; examples/diarization/run.sh is tested in
# test_diarization_recipe.py.

TRIALS = "trials"
NORM = "backend_asnorm10"


@pytest.fixture(scope="module")
def mini_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("mini")
    data, exp = root / "data", root / "exp"
    result = run_script(MINI_DIR, "run.sh", "--epochs", "2", "--data", str(data),
                        "--exp_dir", str(exp), "--stop_stage", "11")
    return data, exp, result


def _lines(path):
    with open(path) as handle:
        return sum(1 for line in handle if line.strip())


def test_mini_recipe_stages_leave_their_outputs(mini_run):
    data, exp, _ = mini_run
    for dset in ("train", "backend", "test"):  # stages 1-2
        for name in ("wav.scp", "utt2spk", "spk2utt", "raw.list"):
            assert _lines(data / dset / name) > 0, (dset, name)
    assert not set(read_table(data / "train" / "spk2utt")) & set(
        read_table(data / "backend" / "spk2utt"))
    for name in (f"test/trials/{TRIALS}", "test/trials/backend_cali.kaldi", "musan/wav.scp",
                 "rirs/wav.scp"):
        assert _lines(data / name) > 0, name
    models = exp / "models"  # stages 3-4
    for name in ("model_1.pt", "model_2.pt", "avg_model.pt", "final.zip"):
        assert os.path.getsize(models / name) > 0, name
    assert (exp / "config.yaml").is_file() and (exp / "train.log").is_file()
    assert "seed=42" in (models / "final_model.pt.settings").read_text()
    assert (models / "avg_model.pt.settings").read_text() == "num_avg=2 min_epoch=1 max_epoch=2\n"
    for dset in ("backend", "test"):
        assert _lines(exp / "embeddings" / dset / "xvector.scp") == _lines(data / dset / "wav.scp")
    # the back-end set is embedded from random num_frms chunks, the test set whole
    num_frms = yaml.safe_load(open(exp / "config.yaml"))["dataset_args"]["num_frms"]
    assert "(random chunks of num_frms frames, seed 42)" in open(
        exp / "embeddings" / "backend" / "extract.result").read()
    assert f"one random chunk of {num_frms} frames" in open(
        exp / "embeddings" / "backend" / "log" / "extract.log").read()
    assert "(whole utterances)" in open(exp / "embeddings" / "test" / "extract.result").read()
    scores = exp / "scores"  # stages 5-7 and 10, each with its metrics and DET curve
    num_trials = _lines(data / "test" / "trials" / TRIALS)
    for name in (f"{TRIALS}.score", f"{NORM}_{TRIALS}.score", f"cali_{NORM}_{TRIALS}.score",
                 f"{TRIALS}.pldascore"):
        assert _lines(scores / name) == num_trials, name
        assert os.path.getsize(scores / f"{name}.det.png") > 0, name
    for name in ("test_cos_result", "test_asnorm10_result", "test_cali_asnorm10_result",
                 "test_plda_result"):
        assert "EER" in open(scores / name).read(), name
    assert (exp / "embeddings" / "backend" / "spk_xvector.scp").is_file()
    assert (scores / "calibration" / f"{NORM}_backend_cali.kaldi.model.pt").is_file()
    assert (exp / "plda").is_file()
    assert os.path.getsize(exp / f"det_{TRIALS}.png") > 0  # stage 11
    assert os.path.getsize(exp / f"hist_{TRIALS}.png") > 0


def test_mini_results_table_parses_and_cosine_beats_the_untrained_baseline(mini_run):
    from wespeaker_py.scoring.metrics import compute_eer
    from wespeaker_py.scoring.trials import read_labelled_scores

    data, exp, result = mini_run
    table = open(exp / "results.md").read()
    assert table in result.stdout  # the run ends by printing it
    rows = parse_table(table)
    assert [row["Scoring"] for row in rows] == ["cosine", "AS-Norm (top 10)",
                                                "AS-Norm (top 10) + QMF", "PLDA"]
    assert rows[0]["Model"] == "ECAPA_TDNN_c512-ASTP-emb192"
    assert rows[0]["Params"] == "5.80M"
    cosine_eer = float(rows[0][f"{TRIALS} EER (%)"])
    scores, labels = read_labelled_scores(str(exp / "scores" / f"{TRIALS}.score"))
    assert cosine_eer == pytest.approx(100 * compute_eer(scores, labels), abs=5e-4)
    for row in rows:
        assert 0 <= float(row[f"{TRIALS} EER (%)"]) < 50
        assert 0 <= float(row[f"{TRIALS} minDCF"]) <= 1.0001

    baseline_eer, _ = fbank_stats_baseline(str(data / "test" / "wav.scp"),
                                           str(data / "test" / "trials" / TRIALS))
    assert 10 < baseline_eer < 30  # the untrained baseline is no straw man
    assert cosine_eer < baseline_eer - 3, (cosine_eer, baseline_eer)


def test_mini_snorm_variant_runs_on_the_recipe_outputs(mini_run):
    data, exp, _ = mini_run
    run_script(MINI_DIR, "tools/recipe/score_norm.sh", "--stage", "1", "--stop-stage", "3",
               "--score_norm_method", "snorm", "--cohort_set", "backend", "--data", str(data),
               "--exp_dir", str(exp), "--trials", TRIALS, "--train_set", "backend",
               "--eval_set", "test")
    out = exp / "scores" / f"backend_snorm_{TRIALS}.score"
    assert _lines(out) == _lines(data / "test" / "trials" / TRIALS)
    labels = [label for label, _ in find_score_files(str(exp / "scores"), TRIALS)]
    assert "S-Norm" in labels


def test_mini_recipe_started_again_skips_finished_work(mini_run):
    data, exp, _ = mini_run
    kept = [str(exp / "models" / name) for name in ("model_2.pt", "avg_model.pt", "final.zip")]
    kept += [str(exp / "embeddings" / dset / "xvector.ark") for dset in ("backend", "test")]
    kept += [str(exp / "scores" / name) for name in (
        f"{TRIALS}.score", f"{NORM}_{TRIALS}.score", f"cali_{NORM}_{TRIALS}.score",
        f"{TRIALS}.pldascore")]
    kept += [str(exp / "plda"), str(data / "train" / "raw.list"), str(data / "source")]
    before = mtimes(kept)
    again = run_script(MINI_DIR, "run.sh", "--epochs", "2", "--data", str(data),
                       "--exp_dir", str(exp), "--stop_stage", "10")
    assert mtimes(kept) == before
    for message in ("is up to date with", "training is finished", "avg_model.pt is up to date",
                    "embeddings of backend are up to date", "scores are up to date",
                    "normalised scores are up to date", "calibrated scores are up to date",
                    "the PLDA model is up to date", "final.zip is up to date"):
        assert message in again.stdout, message


def test_mini_seed_summary_gives_each_run_and_the_mean_and_spread(tmp_path):
    from wespeaker_py.scoring.report import measure

    data = tmp_path / "data"
    make_kaldi_dir(str(data / "test"), ["anna", "bert", "cleo"], 2, 16000,
                   trial_speakers=["anna", "bert", "cleo"])
    with open(data / "test" / "wav.scp") as handle:
        absolute = [f"{key} {data / 'test' / path}\n" for key, path in
                    (line.split() for line in handle)]
    (data / "test" / "wav.scp").write_text("".join(absolute))
    os.rename(data / "test" / "trials", tmp_path / "trials")  # where the recipe puts it
    os.makedirs(data / "test" / "trials")
    os.rename(tmp_path / "trials", data / "test" / "trials" / "trials")
    runs = []
    for seed, shift in (("1", 1.0), ("2", 2.0)):
        exp = tmp_path / f"exp_seed{seed}"
        os.makedirs(exp / "scores")
        (exp / "config.yaml").write_text("model: XVEC\nmodel_args:\n  feat_dim: 80\n"
                                         "  embed_dim: 64\n")
        _write_scores(exp / "scores" / "trials.score", shift, int(seed))
        _write_scores(exp / "scores" / "trials.pldascore", shift + 1, int(seed) + 10)
        runs.append(f"{seed}\t{exp}\t{200 + int(seed)}\t1.50\t2.00\n")
    (tmp_path / "runs.tsv").write_text("".join(runs))
    output = tmp_path / "results_mini.md"
    subprocess.run(["python", os.path.join(REPO, "bench", "summarise_mini_seeds.py"), "--runs",
                    str(tmp_path / "runs.tsv"), "--data", str(data), "--command", "CMD",
                    "--output", str(output)], check=True, capture_output=True, text=True)
    text = output.read_text()
    eers = [measure(str(tmp_path / f"exp_seed{s}" / "scores" / "trials.score")).eer_percent
            for s in "12"]
    mean, std = np.mean(eers), np.std(eers, ddof=1)
    assert f"| cosine | {mean:.3f} ± {std:.3f} ({min(eers):.3f}-{max(eers):.3f}) |" in text
    assert "| PLDA |" in text and "flock -x /tmp/wsp_cpu.lock CMD" in text
    assert f"| 1 | {eers[0]:.3f} / " in text and "3 min 21 s | 1.50 / 2.00 |" in text


def test_score_norm_is_done_again_when_its_eval_embeddings_or_mean_vector_change(tmp_path):
    env, log = _dry_run_env(tmp_path)
    exp, data = tmp_path / "exp", tmp_path / "data"
    inputs = [exp / "scores" / "trials.score", exp / "embeddings" / "test" / "xvector.scp",
              exp / "embeddings" / "backend" / "xvector.scp",
              exp / "embeddings" / "backend" / "spk_xvector.scp",
              exp / "embeddings" / "backend" / "mean_vec.npy"]
    for path in inputs:
        os.makedirs(path.parent, exist_ok=True)
        path.write_text("made earlier\n")
        os.utime(path, (1e9, 1e9))
    out = exp / "scores" / "backend_asnorm100_trials.score"

    def made_at(when):  # a normalised score file of these settings, made at ``when``
        note = exp / "scores" / (out.name + ".settings")
        out.write_text("u1 u2 0.5\n")
        note.write_text("train_set=backend eval_set=test\n")
        for path in (out, note):
            os.utime(path, (when, when))

    def stage2():
        result = run_script(MINI_DIR, "tools/recipe/score_norm.sh", "--stage", "2",
                            "--stop-stage", "2", "--cohort_set", "backend", "--train_set",
                            "backend", "--eval_set", "test", "--exp_dir", str(exp), "--data",
                            str(data), "--trials", "trials", env=env, check=False)
        calls = log.read_text() if log.exists() else ""
        return result, calls.count("wespeaker_py.bin.score_norm")

    made_at(2e9)
    assert stage2()[1] == 0  # up to date
    # re-extracted eval embeddings; a new mean vector: the cosine scores are older than
    # them, so refused (naming score.sh) until they are made again, then normalised again
    for when, changed in ((3e9, inputs[1]), (5e9, inputs[4])):
        os.utime(changed, (when, when))
        result, calls = stage2()
        assert result.returncode != 0 and calls == 0, changed
        assert "trials.score is older than" in result.stderr
        assert "score the trials again (score.sh) first" in result.stderr
        os.utime(inputs[0], (when + 1, when + 1))
        assert stage2()[1] == 1, changed
        made_at(when + 1e9)
        assert stage2()[1] == 1
        log.unlink()


def test_average_stage_with_fewer_checkpoints_than_num_avg_names_the_flag(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    for epoch in (0, 1):   # model_0.pt is an initialisation, not a trained epoch
        torch.save({"model": {"w": torch.zeros(2)}, "optimizer": {}, "epoch": epoch},
                   models / f"model_{epoch}.pt")
    script = (f". ./path.sh; . tools/recipe_helpers.sh; "
              f"average_stage '{models}/avg_model.pt' 3 1")
    result = subprocess.run(["bash", "-c", script], cwd=V2_DIR, capture_output=True,
                            text=True)
    assert result.returncode == 1
    assert f"could not average the last 3 checkpoints of {models} (the recipe's --num_avg" \
        in result.stderr
    assert "1 checkpoint" in result.stderr   # average_model's own count, above it
    assert not (models / "avg_model.pt").exists()


def test_config_value_names_the_flag_that_gave_the_config(tmp_path):
    missing = tmp_path / "nope.yaml"
    script = (f". tools/recipe_helpers.sh; config_value '{missing}' num_epochs; "
              f"config_value '{missing}' num_epochs --config_s1")
    result = subprocess.run(["bash", "-c", script], cwd=V2_DIR, capture_output=True, text=True)
    assert result.stderr.splitlines() == [f"bash: config {missing} does not exist (--config)",
                                          f"bash: config {missing} does not exist (--config_s1)"]


# the first stage that reads the config each flag gives (Whisper-PMFA reads config_s0's
# epochs before any stage; run_w2v.sh's later steps first check the step before them)
@pytest.mark.parametrize("recipe_dir,script,flag,stage", [
    (WHISPER_DIR, "run.sh", "--config_s0", "3"), (WHISPER_DIR, "run.sh", "--config_s1", "5"),
    (V2_DIR, "run_w2v.sh", "--config_s1", "3")])
def test_a_missing_step_config_is_named_by_the_recipe_s_own_flag(tmp_path, recipe_dir, script,
                                                                 flag, stage):
    env, _ = _dry_run_env(tmp_path)
    missing = tmp_path / "nope.yaml"
    result = run_script(recipe_dir, script, "--stage", stage, "--stop_stage", stage, flag,
                        str(missing), "--data", str(tmp_path / "data"), env=env, check=False)
    assert result.returncode != 0
    assert f"config {missing} does not exist ({flag})" in result.stderr
    assert "(--config)" not in result.stderr


def test_train_stage_names_the_recipe_s_flags_when_no_epochs_are_set(tmp_path):
    def refusal(name, variables):
        result = _train_stage(tmp_path / name, variables, config_text="seed: 1\n",
                              check=False)
        assert result.returncode != 0
        return result.stderr.strip().splitlines()[-1]

    assert refusal("v2", {}) == (f"bash: {tmp_path}/v2/conf.yaml (--config) sets no "
                                 "num_epochs (and no --num_epochs was given)")
    # Whisper-PMFA's and run_w2v.sh's steps: a config option of their own, no epoch option
    assert refusal("whisper", {"config_flag": "--config_s0", "num_epochs_flag": ""}) == (
        f"bash: {tmp_path}/whisper/conf.yaml (--config_s0) sets no num_epochs")


def test_whisper_pmfa_s_frozen_step_without_epochs_names_its_config_flag_only(tmp_path):
    env, log = _dry_run_env(tmp_path)
    config = tmp_path / "s0.yaml"
    config.write_text("seed: 1\n")
    result = run_script(WHISPER_DIR, "run.sh", "--stage", "3", "--stop_stage", "3",
                        "--config_s0", str(config), "--exp_dir", str(tmp_path / "exp"),
                        "--data", str(tmp_path / "data"), env=env, check=False)
    assert result.returncode != 0
    assert f"run.sh: {config} (--config_s0) sets no num_epochs\n" in result.stderr
    assert "wespeaker_py.bin.train" not in (log.read_text() if log.exists() else "")


def test_score_plda_passes_lda_dim_to_train_plda_and_notes_it(tmp_path):
    """--lda_dim reaches train_plda only when given; a model trained with another
    --lda_dim (or without) is trained again, and a note of an earlier version (no
    lda_dim in it) still matches a run without the option."""
    env, log = _dry_run_env(tmp_path)
    exp, data = tmp_path / "exp", tmp_path / "data"
    os.makedirs(exp / "embeddings" / "backend")
    (exp / "embeddings" / "backend" / "xvector.scp").write_text("u1 a.ark:1\n")
    _fake_sets(data, ("backend",))
    (data / "backend" / "utt2spk").write_text("u1 s1\n")
    plda = exp / "plda"
    TwoCovPLDA(np.zeros(2), np.eye(2), np.ones(2)).save(str(plda))
    os.utime(plda, (2e9, 2e9))
    (exp / "plda.settings").write_text("train_set=backend iter=5 indim=\n")

    def train(*extra):
        if log.exists():
            log.unlink()
        result = run_script(MINI_DIR, "tools/recipe/score_plda.sh", "--stage", "1",
                            "--stop-stage", "1", "--exp_dir", str(exp), "--data", str(data),
                            "--train_set", "backend", *extra, env=env)
        calls = [line for line in (log.read_text() if log.exists() else "").splitlines()
                 if "wespeaker_py.bin.train_plda" in line]
        return result.stdout, calls

    out, calls = train()
    assert "the PLDA model is up to date" in out and calls == []
    _, calls = train("--lda_dim", "30")
    assert len(calls) == 1 and " --lda_dim 30 " in calls[0]
    out, calls = train("--lda_dim", "30")
    assert "the PLDA model is up to date" in out and calls == []
    _, calls = train()
    assert len(calls) == 1 and "--lda_dim" not in calls[0]


def test_mini_recipe_passes_lda_dim_to_its_plda_stage(tmp_path):
    env, log = _dry_run_env(tmp_path)
    exp, data = tmp_path / "exp", tmp_path / "data"
    for name in ("backend", "test"):   # the embeddings, as the fake python extracts them
        os.makedirs(exp / "embeddings" / name)
        (exp / "embeddings" / name / "xvector.scp").write_text("")
    for lda_dim, expected in (("", None), ("30", "--lda_dim 30")):
        run_script(MINI_DIR, "run.sh", "--stage", "10", "--stop_stage", "10", "--exp_dir",
                   str(exp), "--data", str(data), "--lda_dim", lda_dim, env=env)
        call = [line for line in log.read_text().splitlines()
                if "wespeaker_py.bin.train_plda" in line][-1]
        assert ("--lda_dim" not in call) if expected is None else (f" {expected} " in call)


def test_score_plda_without_exp_dir_names_the_flag(tmp_path):
    result = run_script(V2_DIR, "local/score_plda.sh", "--stage", "1", "--stop-stage", "3",
                        "--data", str(tmp_path), check=False)
    assert result.returncode == 1 and "give --exp_dir" in result.stderr


def test_cohort_top_n_is_lowered_to_the_cohort_and_says_so(tmp_path):
    spk2utt = tmp_path / "spk2utt"
    spk2utt.write_text("".join(f"s{index} u{index}\n" for index in range(4)))
    script = (f". tools/recipe_helpers.sh; cohort_top_n 300 '{spk2utt}'; "
              f"cohort_top_n 3 '{spk2utt}'; cohort_top_n 300 '{tmp_path}/missing'")
    result = subprocess.run(["bash", "-c", script], cwd=V2_DIR, capture_output=True,
                            text=True, check=True)
    assert result.stdout.split() == ["4", "3", "300"]
    assert result.stderr == f"top_n lowered from 300 to the 4 cohort speakers of {spk2utt}\n"


def _declared_stages(path):
    """``(FIRST, LAST)`` of the script's ``require_stages FIRST LAST``, or None."""
    import re
    found = re.search(r"^require_stages (-?\d+) (-?\d+)$", open(path).read(), re.M)
    return (int(found.group(1)), int(found.group(2))) if found else None


def test_each_recipe_declares_the_stages_it_has():
    """require_stages FIRST LAST matches the script's own stage tests: FIRST the lowest
    ``stop_stage -ge N``, LAST the highest ``stage -le N``."""
    import re
    declared = {}
    for path in RECIPE_SCRIPTS:
        stages = _declared_stages(path)
        if stages:
            declared[path] = stages
            text = open(path).read()
            lows = [int(n) for n in re.findall(r"\$\{stop_stage\} -ge (-?\d+)", text)]
            highs = [int(n) for n in re.findall(r"\$\{stage\} -le (-?\d+)", text)]
            assert declared[path] == (min(lows), max(highs)), path
    assert len(declared) >= 14


# 90-99: far beyond the recipe's stages, so a stage added to it is not selected
@pytest.mark.parametrize("args", [[], ["--stage", "90", "--stop_stage", "99"]])
def test_a_stage_range_that_selects_no_stage_of_the_recipe_is_an_error(args):
    first, last = _declared_stages(os.path.join(V2_DIR, "run.sh"))
    assert last < 90
    result = run_script(V2_DIR, "run.sh", *args, check=False)
    assert result.returncode == 1
    assert f"its stages are {first} to {last}" in result.stderr
    assert "selects none of them" in result.stderr
