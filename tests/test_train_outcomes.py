"""No fake success: runs that train nothing fail, and final_model.pt follows the last checkpoint."""
import errno
import json
import logging
import os
import re

import numpy as np
import pytest
import soundfile as sf
import torch

from train_helpers import RATE, make_speaker_corpus, run_training, tiny_config, write_config
from train_helpers import single_torch_thread  # noqa: F401  (autouse fixture)
from wespeaker_py.bin import train as train_cli
from wespeaker_py.train.checkpoint import checkpoints_by_epoch
from wespeaker_py.train.trainer import TrainingDataError
from wespeaker_py.utils import atomic_files
from wespeaker_py.cli.common import run_main
from wespeaker_py.config import ConfigError, TrainConfig


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_speaker_corpus(str(tmp_path_factory.mktemp("corpus")), num_spks=4,
                               utts_per_spk=4)


def _too_short_corpus(root):
    """A list whose every utterance is shorter than the filter's minimum."""
    os.makedirs(os.path.join(root, "wav"))
    raw_list, utt2spk = os.path.join(root, "raw.list"), os.path.join(root, "utt2spk")
    with open(raw_list, "w") as raw, open(utt2spk, "w") as u2s:
        for index in range(16):
            key, spk = f"short{index}", f"spk{index % 4}"
            path = os.path.join(root, "wav", key + ".wav")
            sf.write(path, np.zeros(RATE // 4, dtype=np.int16), RATE, subtype="PCM_16")
            raw.write(json.dumps({"key": key, "wav": path, "spk": spk}) + "\n")
            u2s.write(f"{key} {spk}\n")
    return {"raw_list": raw_list, "utt2spk": utt2spk}


def _cli_args(config, tmp_path):
    exp_dir = config.pop("exp_dir")
    data = ["--exp_dir", exp_dir, "--data_type", "raw", "--train_data", config.pop("train_data"),
            "--train_label", config.pop("train_label")]
    config.pop("data_type")
    return ["--config", write_config(str(tmp_path / "tiny.yaml"), config)] + data


def test_an_epoch_without_any_batch_fails_with_a_message(tmp_path, capsys):
    corpus = _too_short_corpus(str(tmp_path / "data"))
    exp_dir = str(tmp_path / "exp")
    with pytest.raises(TrainingDataError, match=r"epoch 1: rank 0's training data gave no batch"):
        run_training(tiny_config(exp_dir, corpus, num_epochs=2))
    assert checkpoints_by_epoch(os.path.join(exp_dir, "models")) == []
    assert not os.path.lexists(os.path.join(exp_dir, "models", "final_model.pt"))
    code = run_main(train_cli.main, _cli_args(tiny_config(str(tmp_path / "cli"), corpus),
                                              tmp_path))
    assert code == 1
    err = capsys.readouterr().err
    assert "training data gave no batch" in err
    # train.log ends with the line the command printed, as an ERROR record
    printed = [line for line in err.splitlines() if ": error: " in line][-1]
    reason = printed.split(": error: ", 1)[1].split(" (run with --debug")[0]
    last = open(str(tmp_path / "cli" / "train.log")).read().splitlines()[-1]
    assert last.endswith(f" ERROR [wespeaker_py.train.trainer] training stopped: {reason}")


def _mostly_missing(corpus, root):
    """``corpus`` with 12 of its 16 utterances under a folder that is not mounted."""
    raw_list = os.path.join(root, "raw.list")
    with open(corpus["raw_list"]) as source, open(raw_list, "w") as listed:
        for index, line in enumerate(source):
            row = json.loads(line)
            if index % 4:
                row["wav"] = os.path.join("/mnt/not_mounted", os.path.basename(row["wav"]))
            listed.write(json.dumps(row) + "\n")
    return {"raw_list": raw_list, "utt2spk": corpus["utt2spk"]}


def test_an_epoch_that_skipped_most_utterances_fails_once_saved(corpus, tmp_path, capsys,
                                                                caplog):
    data = _mostly_missing(corpus, str(tmp_path))
    exp_dir = str(tmp_path / "exp")
    models = os.path.join(exp_dir, "models")
    code = run_main(train_cli.main, _cli_args(tiny_config(exp_dir, data, num_epochs=2),
                                              tmp_path))
    assert code == 1
    error = capsys.readouterr().err
    assert re.search(r"epoch 1 skipped 12 of the 16 utterances read \(75%\), more than "
                     r"max_fail_fraction 0.5: missing_file=12 \(e.g. spk\d-utt[123], ", error)
    assert (f"{models}/model_1.pt is saved; once the data is fixed, run the same command "
            f"with --checkpoint {models}/model_1.pt") in error
    assert checkpoints_by_epoch(models) == ["model_1.pt"]
    # a key that may change as the run goes on: the run continues from model_1.pt
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="wespeaker_py"):
        results = run_training(tiny_config(exp_dir, data, num_epochs=2, max_fail_fraction=1.0,
                                           checkpoint=os.path.join(models, "model_1.pt")))
    assert [result.epoch for result in results] == [2]
    assert "max_fail_fraction" not in caplog.text


def test_a_last_epoch_that_skipped_most_utterances_says_how_to_train_it_again(corpus, tmp_path):
    data = _mostly_missing(corpus, str(tmp_path))
    exp_dir = str(tmp_path / "exp")
    models = os.path.join(exp_dir, "models")
    with pytest.raises(TrainingDataError) as stopped:
        run_training(tiny_config(exp_dir, data, num_epochs=1))
    last = os.path.join(models, "model_1.pt")
    assert (f"{last} is saved; this was the run's last epoch: to train it again once the data "
            f"is fixed, remove it (final_model.pt points at it) and run the same command from "
            f"the checkpoint before it") in str(stopped.value)
    # the advice, followed: with the data back and the epoch removed, the run trains it again
    os.remove(last)
    results = run_training(tiny_config(exp_dir, corpus, num_epochs=1))
    assert [result.epoch for result in results] == [1]
    assert os.readlink(os.path.join(models, "final_model.pt")) == "model_1.pt"
    assert os.path.isfile(last)


def test_an_unsaved_epoch_that_skipped_too_much_is_kept_in_interrupted_pt(
        corpus, tmp_path, caplog):
    data = _mostly_missing(corpus, str(tmp_path))
    exp_dir = str(tmp_path / "exp")
    models = os.path.join(exp_dir, "models")
    # save_epoch_interval 2 and num_avg 1 keep no model_1.pt
    settings = {"num_epochs": 2, "save_epoch_interval": 2, "num_avg": 1}
    with pytest.raises(TrainingDataError, match=r"epoch 1 skipped 12 of the 16 utterances read"
                                                r".*/interrupted.pt is saved; once the data is "
                                                r"fixed, run the same command to continue"):
        run_training(tiny_config(exp_dir, data, **settings))
    assert checkpoints_by_epoch(models) == []
    with caplog.at_level(logging.INFO, logger="wespeaker_py"):
        results = run_training(tiny_config(exp_dir, data, max_fail_fraction=1.0, **settings))
    assert "continuing from" in caplog.text and "interrupted.pt" in caplog.text
    assert [result.epoch for result in results] == [2]


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_max_fail_fraction_is_a_fraction(corpus, tmp_path, value):
    assert TrainConfig.from_dict(tiny_config(str(tmp_path), corpus)).max_fail_fraction == 0.5
    with pytest.raises(ConfigError, match=r"config key 'max_fail_fraction' must be"):
        TrainConfig.from_dict(tiny_config(str(tmp_path), corpus, max_fail_fraction=value))


@pytest.mark.parametrize("num_epochs", [0, -1])
def test_a_config_that_trains_no_epoch_fails(corpus, tmp_path, capsys, num_epochs):
    exp_dir = str(tmp_path / "exp")
    with pytest.raises(ConfigError, match=r"config key 'num_epochs' must be >= 1"):
        run_training(tiny_config(exp_dir, corpus, num_epochs=num_epochs))
    assert not os.path.exists(os.path.join(exp_dir, "models"))
    assert run_main(train_cli.main, _cli_args(tiny_config(exp_dir, corpus,
                                                          num_epochs=num_epochs), tmp_path)) == 2
    assert "num_epochs" in capsys.readouterr().err


def test_final_model_exists_as_soon_as_the_last_checkpoint_does(corpus, tmp_path, monkeypatch):
    """A run killed right after renaming the last checkpoint into place has final_model.pt."""
    exp_dir = str(tmp_path / "exp")
    last = os.path.join(exp_dir, "models", "model_2.pt")
    real_replace = os.replace

    def replace_then_die(src, dst):
        real_replace(src, dst)
        if os.path.abspath(dst) == os.path.abspath(last):
            raise SystemExit("killed")

    monkeypatch.setattr(atomic_files.os, "replace", replace_then_die)
    with pytest.raises(SystemExit, match="killed"):
        run_training(tiny_config(exp_dir, corpus, num_epochs=2))
    final = os.path.join(exp_dir, "models", "final_model.pt")
    assert os.path.isfile(final) and os.path.samefile(final, last)


@pytest.mark.parametrize("code, expected", [
    (errno.EACCES, r"^cannot write {path}: Permission denied \(in {folder}\)$"),
    (errno.ENOSPC, r"^no space left on device while writing {path}; free space there, then "
                   r"run the same command with --checkpoint {folder}/model_1\.pt .*$")])
def test_a_models_folder_that_takes_no_new_file_is_named_not_the_temporary_file(
        corpus, tmp_path, monkeypatch, code, expected):
    """A folder made unwritable mid-run (chattr +i, a remount read-only) or full."""
    exp_dir = str(tmp_path / "exp")
    checkpoint = os.path.join(exp_dir, "models", "model_2.pt")
    os_open = os.open

    def open_refusing_the_checkpoint(file, flags, *args, **kwargs):
        if flags & os.O_CREAT and os.path.basename(file).startswith(".tmp_model_2.pt."):
            raise OSError(code, os.strerror(code), file)
        return os_open(file, flags, *args, **kwargs)

    monkeypatch.setattr(atomic_files.os, "open", open_refusing_the_checkpoint)
    with pytest.raises(OSError) as raised:
        run_training(tiny_config(exp_dir, corpus, num_epochs=2))
    monkeypatch.undo()
    message = expected.format(path=re.escape(checkpoint),
                              folder=re.escape(os.path.dirname(checkpoint)))
    assert re.match(message, str(raised.value)), str(raised.value)
    assert ".tmp_" not in open(os.path.join(exp_dir, "train.log")).read().splitlines()[-1]


def test_a_resume_with_nothing_left_makes_final_model(corpus, tmp_path):
    exp_dir = str(tmp_path / "exp")
    run_training(tiny_config(exp_dir, corpus, num_epochs=2))
    models = os.path.join(exp_dir, "models")
    os.remove(os.path.join(models, "final_model.pt"))  # as a folder of an older version
    last = os.path.join(models, "model_2.pt")
    before = torch.load(last, weights_only=False)["model"]
    assert run_training(tiny_config(exp_dir, corpus, num_epochs=2, checkpoint=last)) == []
    assert os.readlink(os.path.join(models, "final_model.pt")) == "model_2.pt"
    after = torch.load(last, weights_only=False)["model"]
    assert all(torch.equal(value, after[key]) for key, value in before.items())
    # a checkpoint past num_epochs without model_<num_epochs>.pt: nothing to link, an error
    os.rename(last, os.path.join(models, "model_5.pt"))
    with pytest.raises(ConfigError, match=r"nothing to train: .* num_epochs is 2, and .*"
                                          r"model_2.pt does not exist"):
        run_training(tiny_config(exp_dir, corpus, num_epochs=2,
                                 checkpoint=os.path.join(models, "model_5.pt")))


def test_gpus_the_machine_lacks_are_named_in_the_run_log(corpus, tmp_path, monkeypatch):
    # the console warning comes before train.log starts; the log itself must say why
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    exp_dir = str(tmp_path / "exp")
    run_training(dict(tiny_config(exp_dir, corpus, num_epochs=1), gpus=[3]))
    with open(os.path.join(exp_dir, "train.log")) as log:
        text = log.read()
    assert ("trains on cpu (gpus [3] asked for, but no CUDA device is available)" in text)
